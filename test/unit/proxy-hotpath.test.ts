// The shortcuts the HTTP/1.1 request path takes for speed, each against the slow path it
// replaces: an answer buffered whole is written in one go (body and trailers intact, the
// pod connection back in its pool), a body that arrived empty is not piped, the upstream
// gets one host and one traceparent from a flat header list, a client that goes away
// still cancels upstream, trace ids from the pooled buffer, and per-source policies.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Agent, createServer as httpServer, request, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as netServer, Socket, type AddressInfo, type Server } from 'node:net';
import { Readable } from 'node:stream';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { CompiledPolicy, Snapshot } from '../../control/api/types.ts';
import type { Flow } from '../../agent/flows/flow.ts';
import type { InboundConn, ProxyContext } from '../../agent/proxy/context.ts';
import { Destination } from '../../agent/proxy/destination.ts';
import { PodPool, UpstreamError } from '../../agent/proxy/pods.ts';
import { connectionClosed } from '../../agent/proxy/exchange.ts';
import { HttpIngress } from '../../agent/proxy/http.ts';
import { resolveLimits } from '../../agent/proxy/limits.ts';
import { ProxyMetrics } from '../../agent/proxy/metrics.ts';
import { newTrace, parseTraceparent } from '../../agent/proxy/trace.ts';
import { MeshView } from '../../agent/proxy/view.ts';
import { randomSpanId, randomTraceId, Tracer } from '../../agent/telemetry/index.ts';

const POD = '127.0.32.1';
const BIND = '127.0.32.2';
const PROXY = '127.0.32.3';
const BIG = 256 * 1024;

interface Seen { method: string; url: string; headers: IncomingMessage['headers']; rawHeaders: string[]; body: string; remotePort: number }

describe('proxy hot path: HTTP/1.1 through the destination side', () => {
  const seen: Seen[] = [];
  const flows: Flow[] = [];
  let upstreamClosed: Promise<void> | undefined;
  let markClosed: () => void = () => {};
  let pod: HttpServer;
  let front: Server;
  let dest: Destination;
  let frontPort = 0;
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });

  before(async () => {
    pod = httpServer((req, res) => {
      let body = '';
      req.setEncoding('latin1');
      req.on('data', (c: string) => { body += c; });
      req.on('end', () => {
        seen.push({ method: req.method!, url: req.url!, headers: req.headers, rawHeaders: req.rawHeaders, body, remotePort: req.socket.remotePort! });
        if (req.url === '/small') {
          res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 5 });
          res.end('small');
        } else if (req.url === '/trailers') {
          res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-digest' });
          res.write('part one, ');
          res.addTrailers({ 'x-digest': 'abc123' });
          res.end('part two');
        } else if (req.url === '/big') {
          res.writeHead(200, { 'content-length': BIG });
          res.end(Buffer.alloc(BIG, 'b'));
        } else if (req.url === '/echo') {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end(`${body.length}:${body.slice(0, 8)}`);
        } else if (req.url === '/hang') {
          res.writeHead(200); // headers only: the body never ends
          res.write('x');
          res.on('close', () => markClosed());
        } else if (req.url === '/stall') {
          req.socket.on('close', () => markClosed()); // no answer at all
        } else {
          res.writeHead(404).end();
        }
      });
    });
    await new Promise<void>((r) => pod.listen(0, POD, r));
    const podPort = (pod.address() as AddressInfo).port;
    const snapshot: Snapshot = {
      version: 1, node: 'n1', trustDomain: 'cluster.local', nodes: [], identities: [], services: [], policies: [], l4: [],
      endpoints: [{ namespace: 'app', name: 'up', uid: 'u', node: 'n1', ip: POD, identity: 300, labels: {}, serviceAccount: 'up', enrolled: true }],
    };
    const view = new MeshView(snapshot);
    const ctx: ProxyContext = {
      node: 'n1', upstreamBindIp: BIND, view: () => view, emit: (f) => flows.push(f),
      metrics: new ProxyMetrics(new Registry()), log: pino({ level: 'silent' }), track: () => {}, countBytes: () => {},
      tracer: new Tracer(), accessLog: undefined, limits: resolveLimits(undefined),
    };
    dest = new Destination(ctx);
    const ingress = new HttpIngress(ctx, dest);
    front = netServer((s) => {
      const conn: InboundConn = {
        src: { identity: 256, endpoint: undefined, flow: { identity: 256 }, ip: '127.0.32.9', port: s.remotePort ?? 0, principal: undefined, namespace: undefined },
        dst: snapshot.endpoints[0]!, port: podPort, appProtocol: 'http', trace: newTrace(), via: 'local', peer: undefined,
      };
      ingress.attach(s, conn);
    });
    await new Promise<void>((r) => front.listen(0, PROXY, r));
    frontPort = (front.address() as AddressInfo).port;
  });

  after(() => {
    agent.destroy();
    dest.close();
    front.close();
    pod.closeAllConnections();
    pod.close();
  });

  function call(path: string, opts: { method?: string; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<{ res: IncomingMessage; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const req = request({ host: PROXY, port: frontPort, path, method: opts.method ?? 'GET', agent, headers: opts.headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ res, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(opts.body);
    });
  }

  it('writes an answer that arrived whole in one go, and the pod connection goes back to its pool', async () => {
    seen.length = 0;
    for (let i = 0; i < 5; i++) {
      const { res, body } = await call('/small');
      assert.equal(res.statusCode, 200);
      assert.equal(res.headers['content-length'], '5');
      assert.equal(body.toString(), 'small');
    }
    assert.equal(new Set(seen.map((s) => s.remotePort)).size, 1, 'five requests in a row, one pod connection');
    assert.equal(flows.at(-1)?.l7?.http?.code, 200);
  });

  it('keeps the trailers of a chunked answer', async () => {
    const { res, body } = await call('/trailers');
    assert.equal(body.toString(), 'part one, part two');
    assert.equal(res.trailers['x-digest'], 'abc123');
  });

  it('pipes an answer larger than one write, byte for byte', async () => {
    const { body } = await call('/big');
    assert.equal(body.length, BIG);
    assert.ok(body.every((b) => b === 0x62));
  });

  it('sends a GET without a body and the pod one host and one traceparent of this hop', async () => {
    seen.length = 0;
    const caller = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await call('/small', { headers: { host: 'up.app:8080', traceparent: caller, 'x-nodal-source-identity': '1' } });
    const s = seen[0]!;
    assert.equal(s.body, '');
    assert.equal(s.headers['content-length'], undefined);
    assert.equal(s.headers['transfer-encoding'], undefined);
    const names = s.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    assert.equal(names.filter((n) => n === 'host').length, 1);
    assert.equal(names.filter((n) => n === 'traceparent').length, 1);
    assert.ok(!names.some((n) => n.startsWith('x-nodal-')));
    assert.equal(s.headers.host, 'up.app:8080');
    const tp = parseTraceparent(s.headers.traceparent);
    assert.equal(tp?.traceId, '0af7651916cd43dd8448eb211c80319c', 'the caller\'s trace goes on');
    assert.notEqual(tp?.spanId, 'b7ad6b7169203331', 'with this hop\'s span as the parent');
  });

  it('streams request bodies: chunked without a length, and with one', async () => {
    seen.length = 0;
    const chunked = await call('/echo', { method: 'POST', body: 'x'.repeat(70_000), headers: { 'transfer-encoding': 'chunked' } });
    assert.equal(chunked.body.toString(), '70000:xxxxxxxx');
    const sized = await call('/echo', { method: 'PUT', body: 'hello', headers: { 'content-length': '5' } });
    assert.equal(sized.body.toString(), '5:hello');
    // the pod answered chunked; the answer was here whole, so it goes on sized, in one write
    assert.equal(sized.res.headers['content-length'], '7');
    assert.equal(sized.res.headers['transfer-encoding'], undefined);
  });

  it('cancels upstream when the client goes away before the answer ends', async () => {
    upstreamClosed = new Promise<void>((r) => { markClosed = r; });
    const s = new Socket();
    s.connect(frontPort, PROXY);
    await once(s, 'connect');
    s.write('GET /hang HTTP/1.1\r\nhost: up\r\n\r\n');
    await once(s, 'data'); // the head and the first byte: the exchange is under way
    s.destroy();
    await upstreamClosed;
  });

  it('cancels upstream when the client goes away before any answer', async () => {
    upstreamClosed = new Promise<void>((r) => { markClosed = r; });
    const s = new Socket();
    s.connect(frontPort, PROXY);
    await once(s, 'connect');
    s.write('GET /stall HTTP/1.1\r\nhost: up\r\n\r\n');
    while (!seen.some((x) => x.url === '/stall')) await new Promise((r) => setTimeout(r, 5));
    s.destroy();
    await upstreamClosed;
  });
});

describe('proxy hot path: the lean pod client against odd answers', () => {
  // a pod that answers each request with what the test scripted for its path, byte for byte
  const RAW_POD = '127.0.32.5';
  const script = new Map<string, string | ((s: Socket) => void)>();
  const podConns = new Set<Socket>();
  let opened = 0;
  let pods: PodPool;
  let rawPort = 0;
  let rawPod: Server;

  before(async () => {
    rawPod = netServer((s) => {
      opened++;
      podConns.add(s);
      s.on('close', () => podConns.delete(s));
      let buf = '';
      s.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
          const head = buf.slice(0, end);
          buf = buf.slice(end + 4);
          const path = head.split(' ')[1]!;
          const answer = script.get(path) ?? 'HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n';
          if (typeof answer === 'function') answer(s);
          else s.write(answer, 'latin1');
        }
      });
    });
    await new Promise<void>((r) => rawPod.listen(0, RAW_POD, r));
    rawPort = (rawPod.address() as AddressInfo).port;
    pods = new PodPool(BIND, () => {});
  });

  after(() => {
    pods.close();
    for (const s of podConns) s.destroy();
    rawPod.close();
  });

  /** a body that has ended: what pods.ts sends on the lean client */
  async function none(): Promise<Readable> {
    const b = Readable.from([]);
    b.resume();
    await once(b, 'end');
    return b;
  }

  async function send(path: string, method = 'GET'): Promise<{ status: number; body: string; headers: Record<string, string | string[]>; trailers: Record<string, string | string[]> | undefined }> {
    const head = { method, path, authority: 'pod', headers: {}, protocol: 'http1' as const };
    const res = await pods.send(RAW_POD, rawPort, head, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', await none(), new AbortController().signal);
    let text = '';
    for await (const c of res.body) text += (c as Buffer).toString('latin1');
    return { status: res.status, body: text, headers: res.headers, trailers: res.trailers() };
  }

  it('reuses the connection for keep-alive answers and leaves it after connection: close', async () => {
    script.set('/ka', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    script.set('/bye', 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbye');
    const before = opened;
    assert.equal((await send('/ka')).body, 'ok');
    assert.equal((await send('/ka')).body, 'ok');
    assert.equal(opened - before, 1, 'one connection for two requests');
    assert.equal((await send('/bye')).body, 'bye');
    assert.equal((await send('/ka')).body, 'ok');
    assert.equal(opened - before, 2, 'a new connection after the pod said close');
  });

  it('an answer whole in one read is handed on whole, its connection already back in the pool; a body still coming streams', async () => {
    script.set('/whole', 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nwhole');
    script.set('/later', (s) => {
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nfirst');
      setTimeout(() => s.write('-last'), 10);
    });
    await send('/whole'); // a connection to reuse
    const before = opened;
    const head = { method: 'GET', path: '/whole', authority: 'pod', headers: {}, protocol: 'http1' as const };
    const trace = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const first = await pods.send(RAW_POD, rawPort, head, trace, await none(), new AbortController().signal);
    assert.equal(first.whole?.toString(), 'whole');
    // the first answer is not read yet, and its connection carries the next request
    const second = await pods.send(RAW_POD, rawPort, head, trace, await none(), new AbortController().signal);
    assert.equal(second.whole?.toString(), 'whole');
    assert.equal(opened, before, 'no new connection');
    let text = '';
    for await (const c of first.body) text += (c as Buffer).toString('latin1');
    assert.equal(text, 'whole', 'the body stream of a whole answer, for whoever asks');
    const later = await pods.send(RAW_POD, rawPort, { ...head, path: '/later' }, trace, await none(), new AbortController().signal);
    assert.equal(later.whole, undefined);
    text = '';
    for await (const c of later.body) text += (c as Buffer).toString('latin1');
    assert.equal(text, 'first-last');
  });

  it('skips informational answers, reads a body that runs to the close, and no body for HEAD, 204 and 304', async () => {
    script.set('/early', 'HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal');
    const early = await send('/early');
    assert.equal(early.status, 200);
    assert.equal(early.body, 'real');
    script.set('/eof', (s) => s.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nuntil the end', 'latin1'));
    assert.equal((await send('/eof')).body, 'until the end');
    script.set('/head', 'HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n');
    const head = await send('/head', 'HEAD');
    assert.equal(head.body, '');
    assert.equal(head.headers['content-length'], '1000');
    script.set('/none', 'HTTP/1.1 204 No Content\r\n\r\n');
    script.set('/same', 'HTTP/1.1 304 Not Modified\r\netag: "x"\r\n\r\n');
    assert.equal((await send('/none')).status, 204);
    assert.equal((await send('/same')).status, 304);
    assert.equal((await send('/head', 'HEAD')).status, 200, 'the connection is still in step after the bodiless answers');
  });

  it('ends length-framed and chunked answers alike on one connection, whichever came before', async () => {
    // a length-framed answer ends when its bytes have come (no message-complete call from
    // llhttp); a chunked one when llhttp says so: the two take turns on one pooled connection
    script.set('/sized', (s) => {
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsi');
      setTimeout(() => s.write('zed!'), 5);
    });
    script.set('/chunks', 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 3\r\n\r\n');
    script.set('/empty', 'HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
    await send('/empty'); // a connection to reuse
    const before = opened;
    for (let i = 0; i < 2; i++) {
      assert.equal((await send('/sized')).body, 'sized!');
      const chunked = await send('/chunks');
      assert.equal(chunked.body, 'abc');
      assert.deepEqual(chunked.trailers, { 'x-sum': '3' });
      assert.equal((await send('/empty')).body, '');
    }
    assert.equal(opened, before, 'every answer ended where it ended: the one connection stayed in step');
  });

  it('keeps a long head and joins duplicate headers as node:http does', async () => {
    let many = 'HTTP/1.1 200 OK\r\n';
    for (let i = 0; i < 60; i++) many += `x-h${i}: v${i}\r\n`;
    many += 'set-cookie: a=1\r\nset-cookie: b=2\r\nx-dup: one\r\nx-dup: two\r\ncontent-length: 1\r\n\r\n!';
    script.set('/many', many);
    const r = await send('/many');
    assert.equal(r.headers['x-h59'], 'v59');
    assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2']);
    assert.equal(r.headers['x-dup'], 'one, two');
    assert.equal(r.body, '!');
  });

  it('reads a head split over segments and trailers after a chunked body', async () => {
    script.set('/split', (s) => {
      s.write('HTTP/1.1 200 OK\r\ntransfer-enc');
      setTimeout(() => s.write('oding: chunked\r\n\r\n5\r\nhello\r\n'), 10);
      setTimeout(() => s.write('0\r\nx-sum: 42\r\n\r\n'), 20);
    });
    const r = await send('/split');
    assert.equal(r.body, 'hello');
    assert.deepEqual(r.trailers, { 'x-sum': '42' });
  });

  it('a garbled answer, a reset and a refused connection are upstream errors of the right kind', async () => {
    script.set('/garbage', 'NOT HTTP AT ALL\r\n\r\n');
    await assert.rejects(send('/garbage'), (e: UpstreamError) => e instanceof UpstreamError && e.kind === 'reset');
    script.set('/reset', (s) => s.destroy());
    await assert.rejects(send('/reset'), (e: UpstreamError) => e instanceof UpstreamError && e.kind === 'reset');
    script.set('/cut', (s) => s.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly some'));
    await assert.rejects(send('/cut'), 'a body cut short fails the stream');
    const closed = netServer();
    await new Promise<void>((r) => closed.listen(0, RAW_POD, r));
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    const head = { method: 'GET', path: '/', authority: '', headers: {}, protocol: 'http1' as const };
    await assert.rejects(pods.send(RAW_POD, port, head, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', await none(), new AbortController().signal),
      (e: UpstreamError) => e instanceof UpstreamError && e.kind === 'connect-failure');
  });

  it('a pod that closes an idle connection: the next request opens a new one', async () => {
    script.set('/ka', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    assert.equal((await send('/ka')).body, 'ok');
    for (const s of podConns) s.end();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal((await send('/ka')).body, 'ok');
  });

  it('refuses what node:http refuses to send: a bad header value, an unescaped path', async () => {
    const sig = new AbortController().signal;
    const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await assert.rejects(pods.send(RAW_POD, rawPort, { method: 'GET', path: '/', authority: '', headers: { 'x-bad': 'a\r\nb' }, protocol: 'http1' }, tp, await none(), sig),
      { code: 'ERR_INVALID_CHAR' });
    await assert.rejects(pods.send(RAW_POD, rawPort, { method: 'GET', path: '/a b', authority: '', headers: {}, protocol: 'http1' }, tp, await none(), sig),
      { code: 'ERR_UNESCAPED_CHARACTERS' });
  });
});

describe('proxy hot path: small parts', () => {
  it('one closed-signal per client connection, fired when it closes', async () => {
    const server = netServer(() => {});
    await new Promise<void>((r) => server.listen(0, '127.0.32.4', r));
    const s = new Socket();
    s.connect((server.address() as AddressInfo).port, '127.0.32.4');
    await once(s, 'connect');
    const signal = connectionClosed(s);
    assert.equal(connectionClosed(s), signal);
    assert.equal(signal.aborted, false);
    s.destroy();
    await once(signal, 'abort');
    server.close();
  });

  it('trace and span ids from the pooled buffer: hex of the right length, never repeated', () => {
    const ids = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const t = randomTraceId();
      const sp = randomSpanId();
      assert.match(t, /^[0-9a-f]{32}$/);
      assert.match(sp, /^[0-9a-f]{16}$/);
      ids.add(t);
      ids.add(sp);
    }
    assert.equal(ids.size, 4000);
  });

  it('keeps the policies per source and destination for the life of a view', () => {
    const policy: CompiledPolicy = {
      id: 1, namespace: 'app', name: 'p', action: 'ALLOW', selects: [300],
      rules: [{ index: 0, from: [{ identities: [256] }], to: [], when: [] }, { index: 1, from: [{ namespaces: ['ops'] }], to: [], when: [] }],
    };
    const view = new MeshView({
      version: 1, node: 'n1', trustDomain: 'cluster.local', nodes: [], identities: [], services: [], policies: [policy], l4: [], endpoints: [],
    });
    const src = { identity: 256, namespace: 'app', principal: 'cluster.local/ns/app/sa/a' };
    const first = view.policiesForSource(300, src);
    assert.deepEqual(first[0]!.rules.map((r) => r.index), [0]);
    assert.equal(view.policiesForSource(300, { ...src }), first, 'the same source gets the kept result');
    const ops = view.policiesForSource(300, { identity: 256, namespace: 'ops', principal: undefined });
    assert.deepEqual(ops[0]!.rules.map((r) => r.index), [0, 1], 'another form of the identity is worked out, not served the kept one');
    assert.equal(view.policiesForSource(301, src).length, 0);
  });
});
