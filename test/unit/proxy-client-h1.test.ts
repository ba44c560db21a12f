// The lean client-facing HTTP/1.1 path (agent/proxy/client-h1.ts) on its own: real
// sockets on loopback, a stand-in for the proxy's request handling, and the hardened
// node:http Server it hands connections to. Plain requests are answered here, in order
// and correctly framed; the first request that is anything else, and everything after it,
// is node:http's, and nothing is lost or answered twice on the way.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Agent, createServer as httpServer, request, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { connect, createServer as netServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { leanServerAvailable, serveLean, type LeanServerLimits } from '../../agent/proxy/client-h1.ts';
import { WholeBody, type Headers, type L7Response, type RequestHead } from '../../agent/proxy/exchange.ts';
import { guardRequest, hardenHttpServer, http1ServerOptions, resolveLimits } from '../../agent/proxy/limits.ts';

const ADDR = '127.0.33.1';

type Answer = (head: RequestHead, signal: AbortSignal) => L7Response | Promise<L7Response>;

/** a body received whole, as pod-h1.ts hands one over (complete before it is read) */
function whole(text: string): Readable {
  const r = new Readable({ read() {} });
  if (text.length > 0) r.push(Buffer.from(text));
  r.push(null);
  (r as Readable & { complete: boolean }).complete = true;
  return r;
}

function answer(status: number, headers: Headers, body: Readable, trailers?: Headers): L7Response {
  return { status, headers, body, trailers: () => trailers };
}

function text(body: string): L7Response {
  return answer(200, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) }, whole(body));
}

class Harness {
  served: string[] = [];
  /** each served request's body as it was handed on: '' for none, or `whole:` and its bytes */
  bodies: string[] = [];
  signals: AbortSignal[] = [];
  handedOver = 0;
  answerWith: Answer = (head) => text(`lean ${head.method} ${head.path}`);
  port = 0;
  private readonly front: Server;
  private readonly nodeHttp: HttpServer;
  private readonly sockets = new Set<Socket>();

  constructor(limits: LeanServerLimits & ReturnType<typeof resolveLimits>) {
    this.nodeHttp = hardenHttpServer(httpServer({ ...http1ServerOptions(limits), requireHostHeader: false }, guardRequest(limits, (req, res) => {
      let body = '';
      req.setEncoding('latin1');
      req.on('data', (c: string) => { body += c; });
      req.on('end', () => res.end(`node:http ${req.method} ${req.url} ${body}`));
    })), limits);
    // as the proxy's egress answers CONNECT
    this.nodeHttp.on('connect', (_req: IncomingMessage, s: Socket) => s.end('HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'));
    this.front = netServer({ allowHalfOpen: true, noDelay: true }, (s) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
      s.on('error', () => {});
      serveLean(s, limits, async (head, body, signal) => {
        this.served.push(`${head.method} ${head.path}`);
        this.bodies.push(body instanceof WholeBody ? `whole:${body.whole.toString('latin1')}` : body.readableEnded || body.readableLength === 0 ? '' : '?');
        this.signals.push(signal);
        return this.answerWith(head, signal);
      }, (sock) => {
        this.handedOver++;
        this.nodeHttp.emit('connection', sock);
        sock.resume();
      });
    });
  }

  async listen(): Promise<void> {
    this.front.listen(0, ADDR);
    await once(this.front, 'listening');
    this.port = (this.front.address() as AddressInfo).port;
  }

  /** answers wait until the returned function is called */
  gated(): () => void {
    this.reset();
    let open: () => void = () => {};
    const gate = new Promise<void>((r) => { open = r; });
    this.answerWith = async (head) => {
      await gate;
      return text(`lean ${head.path}`);
    };
    return () => open();
  }

  reset(): void {
    this.served = [];
    this.bodies = [];
    this.signals = [];
    this.handedOver = 0;
    this.answerWith = (head) => text(`lean ${head.method} ${head.path}`);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.nodeHttp.close();
    this.front.close();
    await once(this.front, 'close');
  }
}

/** writes the parts (a pause between them), then reads until `done` says so or the connection ends */
async function raw(port: number, parts: string[], done: (text: string) => boolean, opts: { end?: boolean } = {}): Promise<{ text: string; ended: boolean }> {
  const s = connect({ host: ADDR, port });
  await once(s, 'connect');
  let got = '';
  let ended = false;
  s.setEncoding('latin1');
  let timer: NodeJS.Timeout | undefined;
  const finished = new Promise<void>((resolve, reject) => {
    // neither what the test waits for nor a close: fail instead of hanging
    timer = setTimeout(() => reject(new Error(`no expected answer and no close within 10 s; got ${JSON.stringify(got.slice(0, 200))}`)), 10_000);
    s.on('data', (c: string) => {
      got += c;
      if (done(got)) resolve();
    });
    s.once('close', () => {
      ended = true;
      resolve();
    });
  }).finally(() => clearTimeout(timer));
  s.on('error', () => {});
  for (const [i, p] of parts.entries()) {
    if (i > 0) await sleep(40);
    s.write(p, 'latin1');
  }
  if (opts.end) s.end();
  try {
    await finished;
  } finally {
    s.destroy();
  }
  return { text: got, ended };
}

/** the status lines and bodies of HTTP/1.1 answers with a content-length, in order */
function answers(t: string): Array<{ status: number; headers: Record<string, string>; body: string }> {
  const out: Array<{ status: number; headers: Record<string, string>; body: string }> = [];
  let rest = t;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const [line, ...lines] = rest.slice(0, end).split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines) {
      const c = l.indexOf(':');
      headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
    }
    const len = Number(headers['content-length'] ?? 0);
    out.push({ status: Number(line!.split(' ')[1]), headers, body: rest.slice(end + 4, end + 4 + len) });
    rest = rest.slice(end + 4 + len);
  }
  return out;
}

/** wait until `cond` holds; a test that would hang fails after 10 s, naming what it waited for */
async function waitFor(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const count = (n: number) => (t: string): boolean => answers(t).length >= n && answers(t).every((a) => a.body.length === Number(a.headers['content-length'] ?? 0));

describe('lean client-facing HTTP/1.1 (client-h1.ts)', () => {
  const limits = { ...resolveLimits({ errorLingerMs: 200 }) };
  const h = new Harness(limits);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });

  before(async () => {
    assert.equal(leanServerAvailable, true, 'node\'s HTTP parser must be reachable on the Node this project runs on');
    await h.listen();
  });
  after(async () => {
    agent.destroy();
    await h.close();
  });

  it('answers plain requests itself, pipelined ones in request order whatever order their answers come in', async () => {
    h.reset();
    const delays: Record<string, number> = { '/a': 60, '/b': 30, '/c': 0 };
    h.answerWith = async (head) => {
      await sleep(delays[head.path] ?? 0);
      return text(`lean ${head.path}`);
    };
    const req = (p: string): string => `GET ${p} HTTP/1.1\r\nHost: svc\r\n\r\n`;
    const { text: t } = await raw(h.port, [req('/a') + req('/b') + req('/c')], count(3));
    const got = answers(t);
    assert.deepEqual(got.map((a) => a.body), ['lean /a', 'lean /b', 'lean /c']);
    for (const a of got) {
      assert.equal(a.status, 200);
      assert.equal(a.headers.connection, 'keep-alive');
      assert.ok(a.headers.date, 'a Date header, as node:http adds one');
    }
    assert.deepEqual(h.served, ['GET /a', 'GET /b', 'GET /c']);
    assert.equal(h.handedOver, 0);
  });

  it('a whole answer goes out byte for byte, every byte value, small (one string with its head) or larger (one buffer)', async () => {
    h.reset();
    const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + 3) % 256));
    const bodies: Record<string, Buffer> = { '/small': bytes(256), '/larger': bytes(5000) };
    h.answerWith = (head) => {
      const b = bodies[head.path]!;
      const r = new Readable({ read() {} });
      r.push(b);
      r.push(null);
      (r as Readable & { complete: boolean }).complete = true;
      return answer(200, { 'content-type': 'application/octet-stream', 'content-length': String(b.length) }, r);
    };
    const req = (p: string): string => `GET ${p} HTTP/1.1\r\nHost: svc\r\n\r\n`;
    const { text: t } = await raw(h.port, [req('/small') + req('/larger')], count(2));
    const got = answers(t);
    assert.equal(got.length, 2);
    assert.ok(Buffer.from(got[0]!.body, 'latin1').equals(bodies['/small']!), 'the small body, byte for byte');
    assert.ok(Buffer.from(got[1]!.body, 'latin1').equals(bodies['/larger']!), 'the larger body, byte for byte');
  });

  it('a client pipelining more than 64 requests: the rest waits unread until answers are out, then every one is answered in order', async () => {
    const open = h.gated();
    let burst = '';
    for (let i = 0; i < 200; i++) burst += `GET /p${i} HTTP/1.1\r\nHost: svc\r\n\r\n`;
    const done = raw(h.port, [burst], count(200));
    await waitFor(() => h.served.length >= 64, '64 requests served');
    await sleep(50);
    assert.equal(h.served.length, 64, 'no more requests in flight than the bound while none is answered');
    open();
    const t = await done;
    assert.deepEqual(answers(t.text).map((a) => a.body), Array.from({ length: 200 }, (_, i) => `lean /p${i}`));
    assert.equal(h.served.length, 200);
  });

  it('the same, one request per read: reading stops at 64 outstanding and starts again as answers go out', async () => {
    const open = h.gated();
    const s = connect({ host: ADDR, port: h.port, noDelay: true });
    await once(s, 'connect');
    let got = '';
    s.setEncoding('latin1');
    s.on('data', (c: string) => { got += c; });
    s.on('error', () => {});
    for (let i = 0; i < 70; i++) {
      s.write(`GET /q${i} HTTP/1.1\r\nHost: svc\r\n\r\n`);
      await sleep(2);
    }
    await waitFor(() => h.served.length >= 64, '64 requests served');
    await sleep(50);
    assert.equal(h.served.length, 64, 'no more requests in flight than the bound while none is answered');
    open();
    await waitFor(() => answers(got).length >= 70, 'all 70 answers');
    s.destroy();
    assert.deepEqual(answers(got).map((a) => a.body), Array.from({ length: 70 }, (_, i) => `lean /q${i}`));
  });

  it('a POST whose body came with its head in one read is served here, body and all, and so are the requests behind it', async () => {
    h.reset();
    const t = await raw(h.port, [
      'GET /first HTTP/1.1\r\nHost: svc\r\n\r\nPOST /upload HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhelloGET /after HTTP/1.1\r\nHost: svc\r\n\r\n',
    ], count(3));
    assert.deepEqual(answers(t.text).map((a) => a.body), ['lean GET /first', 'lean POST /upload', 'lean GET /after']);
    assert.deepEqual(h.served, ['GET /first', 'POST /upload', 'GET /after']);
    assert.deepEqual(h.bodies, ['', 'whole:hello', ''], 'the body is exactly its Content-Length, the next request is not part of it');
    assert.equal(h.handedOver, 0);
  });

  it('a body that does not come with its head, or comes chunked, goes to node:http from that request on, once the answers before it are out', async () => {
    for (const parts of [
      // the body's last bytes come in a later read
      ['GET /first HTTP/1.1\r\nHost: svc\r\n\r\nPOST /upload HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhe', 'lloGET /after HTTP/1.1\r\nHost: svc\r\n\r\n'],
      ['GET /first HTTP/1.1\r\nHost: svc\r\n\r\nPOST /upload HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: svc\r\n\r\n'],
    ]) {
      h.reset();
      h.answerWith = async (head) => {
        await sleep(50);
        return text(`lean ${head.path}`);
      };
      const t = await raw(h.port, parts, (x) => x.includes('node:http GET /after'));
      assert.deepEqual(answers(t.text).map((a) => a.body), ['lean /first', 'node:http POST /upload hello', 'node:http GET /after '], parts.join('|'));
      assert.deepEqual(h.served, ['GET /first']);
      assert.equal(h.handedOver, 1);
    }
  });

  it('two Content-Length headers, or one past the lean limit, are not read here', async () => {
    h.reset();
    const two = await raw(h.port, ['POST /two HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello'], count(1));
    assert.equal(answers(two.text)[0]?.status, 400, 'llhttp refuses it, and node:http says so');
    assert.deepEqual(h.served, []);
    h.reset();
    const big = 'x'.repeat(70_000);
    const t = await raw(h.port, [`POST /big HTTP/1.1\r\nHost: svc\r\nContent-Length: ${big.length}\r\n\r\n${big}`], count(1));
    assert.equal(answers(t.text)[0]?.body, `node:http POST /big ${big}`);
    assert.deepEqual(h.served, []);
  });

  it('a head split over two reads, an upgrade, HTTP/1.0, Connection: close, Expect and CONNECT are node:http\'s', async () => {
    for (const parts of [
      ['GET /split HTTP/1.1\r\nHo', 'st: svc\r\n\r\n'],
      ['GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n'],
      ['GET /old HTTP/1.0\r\nHost: svc\r\n\r\n'],
      ['GET /close HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n'],
      ['GET /expect HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n'],
      ['CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n'],
    ]) {
      h.reset();
      const t = await raw(h.port, parts, (x) => x.includes('\r\n\r\n') && /node:http|^HTTP\/1\.1 [45]/.test(x.slice(x.indexOf('\r\n\r\n'))) || x.startsWith('HTTP/1.1 4'));
      assert.deepEqual(h.served, [], `${JSON.stringify(parts)} must not be served by the lean path`);
      assert.equal(h.handedOver, 1, JSON.stringify(parts));
      assert.ok(t.text.length > 0, `${JSON.stringify(parts)} got an answer`);
    }
  });

  it('a request with more than 32 header lines is node:http\'s and arrives with all of them', async () => {
    h.reset();
    let head = 'GET /many HTTP/1.1\r\nHost: svc\r\n';
    for (let i = 0; i < 40; i++) head += `x-h${i}: ${i}\r\n`;
    const t = await raw(h.port, [`${head}\r\n`], count(1));
    assert.equal(answers(t.text)[0]!.body, 'node:http GET /many ');
    assert.deepEqual(h.served, []);
  });

  it('what llhttp or the guards refuse is answered by node:http (400), and never served', async () => {
    for (const bad of [
      'GET / HTTP/1.1\r\nHost: svc\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
      'GET / HTTP/1.1\r\nHost: svc\r\nX-Folded: a\r\n  b\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n',
    ]) {
      h.reset();
      const t = await raw(h.port, [bad], (x) => x.startsWith('HTTP/1.1 400'));
      assert.match(t.text, /^HTTP\/1\.1 400 /, JSON.stringify(bad));
      assert.deepEqual(h.served, [], JSON.stringify(bad));
    }
  });

  it('a smuggled second request behind a Content-Length: 0 is a request of its own, read once', async () => {
    h.reset();
    const t = await raw(h.port, ['GET /a HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\r\n\r\nGET /b HTTP/1.1\r\nHost: svc\r\n\r\n'], count(2));
    assert.deepEqual(answers(t.text).map((a) => a.body), ['lean GET /a', 'lean GET /b']);
    assert.deepEqual(h.served, ['GET /a', 'GET /b']);
  });

  it('a streamed answer without a length goes out chunked with its trailers, and the connection stays usable', async () => {
    h.reset();
    h.answerWith = (head) => {
      if (head.path !== '/stream') return text('next');
      const body = new Readable({ read() {} });
      body.push('one, ');
      setTimeout(() => {
        body.push('two');
        body.push(null);
      }, 30);
      return answer(200, { 'content-type': 'text/plain' }, body, { 'x-digest': 'abc123' });
    };
    const res = await get('/stream');
    assert.equal(res.headers['transfer-encoding'], 'chunked');
    assert.equal(res.body, 'one, two');
    assert.deepEqual(res.trailers, { 'x-digest': 'abc123' });
    assert.equal((await get('/next')).body, 'next');
    assert.equal(h.handedOver, 0);
  });

  it('an answer that arrived whole with trailers keeps them (chunked); without, it gets a Content-Length', async () => {
    h.reset();
    h.answerWith = (head) => head.path === '/t'
      ? answer(200, { 'content-type': 'application/grpc' }, whole('payload'), { 'grpc-status': '0' })
      : answer(200, { 'content-type': 'text/plain' }, whole('no length given'));
    const t = await get('/t');
    assert.equal(t.body, 'payload');
    assert.deepEqual(t.trailers, { 'grpc-status': '0' });
    const l = await get('/l');
    assert.equal(l.headers['content-length'], String('no length given'.length));
    assert.equal(l.body, 'no length given');
  });

  it('HEAD, 204 and 304 answers carry no body and leave the connection in step', async () => {
    h.reset();
    h.answerWith = (head) => {
      if (head.method === 'HEAD') return answer(200, { 'content-length': '10' }, whole(''));
      if (head.path === '/204') return answer(204, {}, whole(''));
      if (head.path === '/304') return answer(304, { etag: '"x"' }, whole(''));
      return text('after');
    };
    const t = await raw(h.port, [
      'HEAD /h HTTP/1.1\r\nHost: svc\r\n\r\nGET /204 HTTP/1.1\r\nHost: svc\r\n\r\nGET /304 HTTP/1.1\r\nHost: svc\r\n\r\nGET /after HTTP/1.1\r\nHost: svc\r\n\r\n',
    ], (x) => x.endsWith('after'));
    const parts = t.text.split('\r\n\r\n');
    assert.match(parts[0]!, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(parts[0]!, /content-length: 10/);
    assert.match(parts[1]!, /^HTTP\/1\.1 204 No Content\r\n/);
    assert.doesNotMatch(parts[1]!, /content-length|transfer-encoding/);
    assert.match(parts[2]!, /^HTTP\/1\.1 304 Not Modified\r\n/);
    assert.match(parts[3]!, /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(parts[4], 'after');
  });

  it('an answer cut off midway closes the connection instead of ending the message', async () => {
    h.reset();
    h.answerWith = () => {
      const body = new Readable({ read() {} });
      body.push('partial');
      setTimeout(() => body.destroy(new Error('upstream reset')), 30);
      return answer(200, {}, body);
    };
    const t = await raw(h.port, ['GET /cut HTTP/1.1\r\nHost: svc\r\n\r\n'], () => false);
    assert.equal(t.ended, true);
    assert.match(t.text, /transfer-encoding: chunked\r\n\r\n7\r\npartial\r\n$/, 'no terminating 0-chunk: the client sees an incomplete message');
  });

  it('the client\'s FIN, as node:http reads it: the connection ends and the unanswered request is cancelled', async () => {
    h.reset();
    h.answerWith = (_head, signal) => new Promise((resolve) => {
      signal.addEventListener('abort', () => resolve(text('too late')), { once: true });
    });
    const t = await raw(h.port, ['GET /fin HTTP/1.1\r\nHost: svc\r\n\r\n'], () => false, { end: true });
    assert.equal(t.ended, true);
    assert.equal(t.text, '');
    assert.equal(h.signals[0]?.aborted, true);
  });

  it('an answer that is ready when the client\'s FIN comes is delivered before the connection ends', async () => {
    h.reset();
    // the request and the FIN in one write: answers wait for the end of the turn (turn.ts),
    // and one the FIN overtakes must still go out before the connection ends
    const t = await raw(h.port, ['GET /last HTTP/1.1\r\nHost: svc\r\n\r\n'], (x) => x.includes('lean GET /last'), { end: true });
    assert.match(t.text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(t.text, /lean GET \/last$/);
  });

  it('a client that goes away cancels the requests it left unanswered', async () => {
    h.reset();
    h.answerWith = (_head, signal) => new Promise((resolve) => {
      signal.addEventListener('abort', () => resolve(text('too late')), { once: true });
    });
    const s = connect({ host: ADDR, port: h.port });
    s.on('error', () => {});
    s.write('GET /slow HTTP/1.1\r\nHost: svc\r\n\r\n');
    await waitFor(() => h.signals.length > 0, 'the request');
    s.destroy();
    await waitFor(() => h.signals[0]!.aborted, 'the request to be cancelled');
  });

  it('an answer header node:http would refuse (CR LF in a value) closes the connection: nothing is split', async () => {
    h.reset();
    h.answerWith = () => answer(200, { 'x-evil': 'a\r\nset-cookie: pwned=1', 'content-length': '2' }, whole('ok'));
    const t = await raw(h.port, ['GET /evil HTTP/1.1\r\nHost: svc\r\n\r\n'], () => false);
    assert.equal(t.ended, true);
    assert.doesNotMatch(t.text, /pwned/);
  });

  it('an idle keep-alive connection is closed after keepAliveTimeoutMs (node:http\'s 1 s margin included)', async () => {
    const quick = new Harness({ ...resolveLimits({ keepAliveTimeoutMs: 100 }) });
    await quick.listen();
    try {
      const started = Date.now();
      const t = await raw(quick.port, ['GET /idle HTTP/1.1\r\nHost: svc\r\n\r\n'], () => false);
      assert.equal(answers(t.text)[0]?.body, 'lean GET /idle');
      assert.match(t.text, /keep-alive: timeout=0\r\n/);
      assert.equal(t.ended, true);
      assert.ok(Date.now() - started >= 1000, 'not before the timeout its answer announced, plus the margin');
    } finally {
      await quick.close();
    }
  });

  function get(path: string): Promise<{ headers: IncomingMessage['headers']; body: string; trailers: IncomingMessage['trailers'] }> {
    return new Promise((resolve, reject) => {
      const req = request({ host: ADDR, port: h.port, path, agent, headers: { host: 'svc' } }, (res) => {
        let body = '';
        res.setEncoding('latin1');
        res.on('data', (c: string) => { body += c; });
        res.on('end', () => resolve({ headers: res.headers, body, trailers: res.trailers }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
  }
});
