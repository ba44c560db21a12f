// Hostile input over HTTP/1.1 (issue 4 item 7): what a misbehaving client pod, or a peer
// node speaking HTTP/1.1 inside a CONNECT stream, sends, and what the proxy answers. Two
// NodeProxy instances stand in for two nodes (test/helpers/two-nodes.ts, block
// 127.0.60-63.x), with short limits so that timeouts are waited for in milliseconds. Every
// attack runs the three ways HTTP/1.1 bytes meet a parser of the proxy, against real pod
// servers that record what they receive:
// - source side, same node: client pod → node-a's parser (egress.ts) → in-process to the pod;
// - source side, cross node: client pod → node-a's parser → a request stream on the tunnel
//   → node-b → the pod;
// - destination side: a CONNECT stream from node-a's tunnel address, read by node-b's
//   parser (http.ts), which is also the one that reads an Upgrade the source side passed on.
// HTTP/2 (the tunnel listener, h2c from client pods) is in proxy-hostile-h2.test.ts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, createServer as httpServer, request, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { connect as h2connect, constants as h2constants, type ClientHttp2Session } from 'node:http2';
import { connect, createServer as netServer, Socket, type Server } from 'node:net';
import { Readable, type Duplex } from 'node:stream';
import { DEFAULT_LIMITS, resolveLimits, type ProxyLimits } from '../../agent/proxy/limits.ts';
import { CLIENT_IDENTITY, closed, httpGet, startTwoNodes, type PodSpec, type TwoNodes } from '../helpers/two-nodes.ts';

/** short enough to wait for, long enough that a loaded machine still writes a head in time */
const LIMITS: Partial<ProxyLimits> = { headersTimeoutMs: 400, timeoutCheckMs: 50, errorLingerMs: 1_000, upgradeTimeoutMs: 500 };
const BLOCK = 60;
/** the mesh of the close() test, apart from the main one */
const CLOSE_BLOCK = 66;
const MiB = 1024 * 1024;

/** one request as the backend pod got it */
interface Seen { pod: string; method: string; url: string; headers: number; bytes: number; complete: boolean }

/** what a raw client got before its connection closed */
interface Answer { text: string; status: number; error: string | undefined }

/** one way HTTP/1.1 bytes reach a parser of the proxy; `node` names the pods it reaches ('local' → 'slow-local', ...) */
interface Path { via: string; node: 'local' | 'remote'; open(pod: string): Duplex }

const UPGRADE_HEAD = 'GET /upgrade HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n';

function heapAndBuffers(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

function noop(): void {}

/** what came in on `s` until `done` says so, or the stream closed */
async function readUntil(s: Duplex, done: (text: string) => boolean): Promise<string> {
  let text = '';
  s.setEncoding('latin1');
  return new Promise((resolve) => {
    const onData = (c: string): void => {
      text += c;
      if (done(text)) finish();
    };
    const finish = (): void => {
      s.off('data', onData);
      s.off('close', finish);
      resolve(text);
    };
    s.on('data', onData);
    s.once('close', finish);
  });
}

/** a reset, as a client that goes away sends it: RST on a socket, RST_STREAM(CANCEL) on an HTTP/2 stream */
function abortClient(s: Duplex): void {
  if (s instanceof Socket) s.resetAndDestroy();
  else (s as Duplex & { close(code: number): void }).close(h2constants.NGHTTP2_CANCEL);
}

describe('proxy limits', () => {
  it('takes the defaults, with overrides', () => {
    assert.deepEqual(resolveLimits(undefined), DEFAULT_LIMITS);
    assert.equal(resolveLimits({ headersTimeoutMs: 300 }).headersTimeoutMs, 300);
    assert.equal(resolveLimits({ headersTimeoutMs: 300 }).maxHeaderBytes, DEFAULT_LIMITS.maxHeaderBytes);
    // 0: pooled tunnel streams are not retired by age
    assert.equal(resolveLimits({ tunnelStreamMaxAgeMs: 0 }).tunnelStreamMaxAgeMs, 0);
  });

  it('refuses limits that cannot work, naming them', () => {
    const bad: Array<Partial<ProxyLimits>> = [
      { maxHeaderBytes: 0 }, { headersTimeoutMs: -1 }, { h2ResetRate: 1.5 }, { requestTimeoutMs: 1_000, headersTimeoutMs: 2_000 },
      { tunnelStreamMaxAgeMs: -1 },
    ];
    for (const over of bad) {
      assert.throws(() => resolveLimits(over), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'NODAL_ERR_PROXY_CONFIG');
        assert.match(err.message, new RegExp(`limits\\.${Object.keys(over)[0]}`));
        return true;
      });
    }
  });
});

describe('node proxy: hostile HTTP/1.1', { timeout: 180_000 }, () => {
  const sessions = new Set<ClientHttp2Session>();
  const seen: Seen[] = [];
  /** every connection the silent pods accepted, in order */
  const silentConns: Socket[] = [];
  /** bytes each echo pod got before it answered 101, one entry per upgrade */
  const beforeSwitch: number[] = [];
  let mesh: TwoNodes;
  /** the slow readers' release: set by a test, called once the client is blocked */
  let slowRelease: Array<() => void> = [];
  let slowRead = 0;
  /** the node-a → node-b session the destination-side path opens its CONNECT streams on */
  let peer: ClientHttp2Session | undefined;

  function recorder(pod: string): HttpServer {
    return httpServer((req, res) => {
      const rec: Seen = { pod, method: req.method ?? '', url: req.url ?? '', headers: req.rawHeaders.length / 2, bytes: 0, complete: false };
      seen.push(rec);
      req.on('data', (c: Buffer) => { rec.bytes += c.length; });
      req.on('error', noop);
      req.on('end', () => {
        rec.complete = true;
        const body = JSON.stringify({ pod, url: req.url, bytes: rec.bytes });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
    });
  }

  /**
   * A pod that ignores Upgrade, as RFC 9110 §7.8 lets a server do (Go, Python and nginx
   * handlers that are not WebSocket endpoints): it answers 200 and goes on reading
   * HTTP/1.1 requests on the same connection.
   */
  function declinesUpgrade(pod: string): HttpServer {
    const srv = recorder(pod);
    srv.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      seen.push({ pod, method: req.method ?? '', url: req.url ?? '', headers: 0, bytes: 0, complete: true });
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      if (head.length > 0) socket.unshift(head);
      srv.emit('connection', socket);
    });
    return srv;
  }

  /** called by the late pods with the connection of each upgrade they hold */
  let lateArrived: ((late: { answer(): void; gone: Promise<void> }) => void) | undefined;

  /** a pod that switches protocols only when a test tells it to, and notices when its connection ends */
  function lateUpgrade(pod: string): HttpServer {
    const srv = recorder(pod);
    srv.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
      socket.on('error', noop);
      socket.resume();
      socket.once('end', () => socket.destroy());
      lateArrived?.({
        answer: () => { if (socket.writable) socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: Upgrade\r\n\r\n'); },
        gone: closed(socket),
      });
    });
    return srv;
  }

  /**
   * A pod that switches to an echo protocol a moment after the upgrade request, counting
   * the bytes that reached it before its 101 (there must be none).
   */
  function echoes(pod: string): HttpServer {
    const srv = recorder(pod);
    srv.on('upgrade', (_req: IncomingMessage, socket: Socket, head: Buffer) => {
      socket.on('error', noop);
      const early: Buffer[] = head.length > 0 ? [head] : [];
      const collect = (c: Buffer): void => { early.push(c); };
      socket.on('data', collect);
      setTimeout(() => {
        socket.off('data', collect);
        beforeSwitch.push(early.reduce((n, b) => n + b.length, 0));
        socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: Upgrade\r\n\r\n');
        for (const b of early) socket.write(b);
        socket.pipe(socket);
      }, 100);
    });
    return srv;
  }

  /** a pod that starts a chunked answer and then drops the connection */
  function cutsAnswer(): HttpServer {
    return httpServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial', () => setTimeout(() => res.socket?.destroy(), 50));
    });
  }

  /** a pod that accepts connections and never answers */
  function silent(): Server {
    return netServer((c) => {
      c.on('error', noop);
      c.resume();
      silentConns.push(c);
    });
  }

  /** a pod that does not read a request body until a test releases it */
  function slowReader(pod: string): HttpServer {
    return httpServer((req: IncomingMessage, res) => {
      let n = 0;
      req.pause();
      slowRelease.push(() => req.resume());
      req.on('data', (c: Buffer) => { n += c.length; slowRead += c.length; });
      req.on('error', noop);
      req.on('end', () => res.end(JSON.stringify({ pod, bytes: n })));
    });
  }

  before(async () => {
    const pods: PodSpec[] = [];
    for (const [node, where] of [['node-b', 'remote'], ['node-a', 'local']] as const) {
      pods.push(
        { name: where, node, server: recorder(where) },
        { name: `slow-${where}`, node, server: slowReader(`slow-${where}`) },
        { name: `declines-${where}`, node, server: declinesUpgrade(`declines-${where}`) },
        { name: `late-${where}`, node, server: lateUpgrade(`late-${where}`) },
        { name: `echo-${where}`, node, server: echoes(`echo-${where}`) },
        { name: `silent-${where}`, node, server: silent() },
        { name: `cuts-${where}`, node, server: cutsAnswer() },
      );
    }
    mesh = await startTwoNodes(BLOCK, pods, LIMITS);
  });

  after(async () => {
    for (const r of slowRelease) r();
    for (const s of sessions) s.destroy();
    for (const c of silentConns) c.destroy();
    await mesh?.close();
  });

  function dial(pod: string): Socket {
    return mesh.dial(mesh.ip[pod]!);
  }

  /** a CONNECT stream to a pod on node-b, from node-a's tunnel address, as node-a's proxy opens one */
  function connectStream(pod: string): Duplex {
    if (!peer || peer.closed || peer.destroyed) {
      peer = h2connect(`http://${mesh.tunnelB}:${mesh.tunnelPort}`, {
        createConnection: () => connect({ host: mesh.tunnelB, port: mesh.tunnelPort, localAddress: mesh.tunnelA }),
      });
      peer.on('error', noop);
      sessions.add(peer);
    }
    const stream = peer.request({
      ':method': 'CONNECT', ':authority': `${mesh.ip[pod]}:${mesh.port}`, 'x-nodal-source-identity': String(CLIENT_IDENTITY),
    });
    stream.on('error', noop);
    return stream;
  }

  const PATHS: Path[] = [
    { via: 'source side, same node', node: 'local', open: (pod) => dial(pod) },
    { via: 'source side, cross node', node: 'remote', open: (pod) => dial(pod) },
    { via: 'destination side, in a CONNECT stream', node: 'remote', open: (pod) => connectStream(pod) },
  ];

  /** write what a client sends (no FIN) and read what comes back until the proxy closes */
  async function attack(path: Path, pod: string, payload: string | Buffer, drip?: { bytes: Buffer; everyMs: number }): Promise<Answer> {
    const s = path.open(pod);
    let text = '';
    let error: string | undefined;
    s.setEncoding('latin1');
    s.on('data', (c: string) => { text += c; });
    s.on('error', (err: NodeJS.ErrnoException) => { error = err.code ?? err.message; });
    // the proxy's FIN answered with ours: an HTTP/2 stream stays half open otherwise
    s.once('end', () => s.end());
    s.write(payload);
    let timer: NodeJS.Timeout | undefined;
    if (drip) {
      let i = 0;
      // one byte at a time, bounded by the drip's length: the proxy must close first
      timer = setInterval(() => {
        if (i < drip.bytes.length && s.writable) s.write(drip.bytes.subarray(i, ++i));
      }, drip.everyMs);
    }
    await closed(s);
    clearInterval(timer);
    const m = /^HTTP\/1\.1 (\d{3}) /.exec(text);
    return { text, status: m ? Number(m[1]) : 0, error };
  }

  function get(path: Path, pod: string, target: string): Promise<{ status: number; body: string }> {
    return httpGet(() => path.open(pod) as Socket, target);
  }

  /** the proxy still serves a well-behaved client on the same path after an attack */
  async function stillServes(path: Path, tag: string): Promise<void> {
    const r = await get(path, path.node, `/ok/${tag}`);
    assert.equal(r.status, 200, `a good request after ${tag}`);
    assert.ok(seen.some((x) => x.url === `/ok/${tag}`));
  }

  const GET_SMUGGLED = 'GET /smuggled HTTP/1.1\r\nHost: backend\r\n\r\n';
  /** request smuggling and framing attacks: each must be refused before anything reaches the pod */
  const SMUGGLING: Array<{ name: string; payload: string }> = [
    {
      name: 'Content-Length and Transfer-Encoding together (CL.TE)',
      payload: `POST /first HTTP/1.1\r\nHost: backend\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${GET_SMUGGLED}`,
    },
    {
      name: 'Transfer-Encoding before Content-Length (TE.CL)',
      payload: `POST /first HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\nContent-Length: 48\r\n\r\n0\r\n\r\n${GET_SMUGGLED}`,
    },
    {
      name: 'two Content-Length fields',
      payload: `POST /first HTTP/1.1\r\nHost: backend\r\nContent-Length: 0\r\nContent-Length: 41\r\n\r\n${GET_SMUGGLED}`,
    },
    {
      name: 'a Content-Length list',
      payload: `POST /first HTTP/1.1\r\nHost: backend\r\nContent-Length: 0, 41\r\n\r\n${GET_SMUGGLED}`,
    },
    {
      name: 'Transfer-Encoding other than chunked',
      payload: `POST /first HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: gzip\r\n\r\n${GET_SMUGGLED}`,
    },
    {
      name: 'Transfer-Encoding with chunked not last',
      payload: `POST /first HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${GET_SMUGGLED}`,
    },
    {
      name: 'Transfer-Encoding with a space before the colon',
      payload: `POST /first HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${GET_SMUGGLED}`,
    },
    {
      name: 'obs-fold (a header continued on the next line)',
      payload: `POST /first HTTP/1.1\r\nHost: backend\r\nX-Folded: a\r\n  Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${GET_SMUGGLED}`,
    },
    {
      name: 'obs-fold of Transfer-Encoding',
      payload: `POST /first HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n${GET_SMUGGLED}`,
    },
    {
      name: 'bare LF line endings',
      payload: `POST /first HTTP/1.1\nHost: backend\nContent-Length: 0\n\n${GET_SMUGGLED}`,
    },
    {
      name: 'a bare CR inside the head',
      payload: `GET /first HTTP/1.1\r\nHost: backend\rX-Hidden: 1\r\n\r\n${GET_SMUGGLED}`,
    },
    {
      name: 'a request line with a space in the target',
      payload: `GET /first /smuggled HTTP/1.1\r\nHost: backend\r\n\r\n`,
    },
    {
      name: 'two Host fields',
      payload: `GET /first HTTP/1.1\r\nHost: backend\r\nHost: evil\r\n\r\n`,
    },
  ];

  /** requests pipelined behind a refused one, with a good one ahead so that the connection stays open meanwhile */
  const BEHIND_A_REFUSAL: Array<{ name: string; behind: string }> = [
    { name: 'a request', behind: GET_SMUGGLED },
    { name: 'an Upgrade', behind: 'GET /smuggled HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n' },
  ];

  for (const path of PATHS) {
    describe(`HTTP/1.1 ${path.via}`, () => {
      const pod = path.node;
      for (const c of SMUGGLING) {
        it(`answers 400 and closes: ${c.name}`, async () => {
          const before = seen.length;
          const r = await attack(path, pod, c.payload);
          assert.equal(r.status, 400, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
          assert.match(r.text, /connection: close/i);
          await stillServes(path, `after-${c.name.replace(/\W+/g, '-')}`);
          const got = seen.slice(before).map((x) => x.url).filter((u) => !u.startsWith('/ok/'));
          assert.deepEqual(got, [], 'the pod got none of the attack');
        });
      }

      it('regression: a GET with a chunked body reaches the pod framed (node:http sent it bare, the pod read it as the next request)', async () => {
        const before = seen.length;
        const chunk = `${Buffer.byteLength(GET_SMUGGLED).toString(16)}\r\n${GET_SMUGGLED}\r\n0\r\n\r\n`;
        const r = await attack(path, pod, `GET /first HTTP/1.1\r\nHost: backend\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}`);
        assert.equal(r.status, 200, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
        const got = seen.slice(before);
        assert.deepEqual(got.map((x) => [x.url, x.bytes, x.complete]), [['/first', Buffer.byteLength(GET_SMUGGLED), true]], 'the pod got the GET with its body, and nothing else');
      });

      for (const c of BEHIND_A_REFUSAL) {
        it(`regression: serves none of ${c.name} pipelined behind a refused request`, async () => {
          const before = seen.length;
          const r = await attack(path, pod, `GET /first HTTP/1.1\r\nHost: backend\r\n\r\nGET /refused HTTP/1.1\r\nHost: backend\r\nHost: evil\r\n\r\n${c.behind}`);
          assert.match(r.text, /^HTTP\/1\.1 200 [^]*HTTP\/1\.1 400 /, `answers: ${JSON.stringify(r.text)} error: ${r.error}`);
          assert.deepEqual(seen.slice(before).map((x) => x.url), ['/first'], 'the pod got the request ahead of the refused one, and nothing else');
        });
      }

      const BAD_CHUNKS: Array<[string, string]> = [
        ['a chunk size that is not hex', 'zz\r\nhello\r\n0\r\n\r\n'],
        ['a chunk size that overflows 64 bits', 'fffffffffffffffff1\r\nhello\r\n0\r\n\r\n'],
        ['a negative chunk size', '-5\r\nhello\r\n0\r\n\r\n'],
        ['a chunk longer than its size', '2\r\nhello\r\n0\r\n\r\n'],
      ];
      for (const [name, body] of BAD_CHUNKS) {
        it(`answers 400 and closes: ${name}, and the pod never sees the request after it`, async () => {
          const before = seen.length;
          const r = await attack(path, pod, `POST /first HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\n\r\n${body}${GET_SMUGGLED}`);
          assert.equal(r.status, 400, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
          await stillServes(path, `after-chunk-${name.replace(/\W+/g, '-')}`);
          // the head was valid, so the pod may have got /first; its body never completes
          const got = seen.slice(before).filter((x) => !x.url.startsWith('/ok/'));
          assert.ok(got.every((x) => x.url === '/first' && !x.complete), `pod got ${JSON.stringify(got)}`);
        });
      }

      it('regression: never lets a request ride behind an Upgrade the pod declines (the pod\'s answer, then closed)', { timeout: 10_000 }, async () => {
        const declines = `declines-${path.node}`;
        const before = seen.length;
        const r = await attack(path, declines, UPGRADE_HEAD + GET_SMUGGLED);
        assert.equal(r.status, 200, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
        assert.match(r.text, /connection: close\r\n/i);
        assert.ok(r.text.endsWith('\r\n\r\nok'), `the pod's whole answer: ${JSON.stringify(r.text)}`);
        await stillServes(path, 'after-declined-upgrade');
        const got = seen.slice(before).filter((x) => x.pod === declines).map((x) => x.url);
        assert.deepEqual(got, ['/upgrade'], 'the pod got only the request the proxy judged');
      });

      it('regression: an Upgrade request with a body and a Trailer field (node:http refused to send it on, uncaught) gets the pod\'s answer', { timeout: 10_000 }, async () => {
        const r = await attack(path, `declines-${path.node}`,
          'GET /upgrade-trailer HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade\r\nContent-Length: 5\r\nUpgrade: websocket\r\nTrailer: X-T\r\n\r\nhello');
        assert.equal(r.status, 200, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
        await stillServes(path, 'after-upgrade-trailer');
      });

      it('sends the bytes that came with an Upgrade request only once the pod switched protocols', { timeout: 10_000 }, async () => {
        const s = path.open(`echo-${path.node}`);
        s.on('error', noop);
        const switched = beforeSwitch.length;
        s.write(`${UPGRADE_HEAD}early bytes`);
        const first = await readUntil(s, (t) => t.endsWith('early bytes'));
        assert.match(first, /^HTTP\/1\.1 101 /, `answer: ${JSON.stringify(first)}`);
        assert.ok(first.endsWith('\r\n\r\nearly bytes'), `answer: ${JSON.stringify(first)}`);
        assert.deepEqual(beforeSwitch.slice(switched), [0], 'bytes reached the pod before its 101');
        s.write('and after');
        assert.equal(await readUntil(s, (t) => t.endsWith('and after')), 'and after');
        s.destroy();
      });

      it('regression: closes the pod\'s side of an Upgrade whose client left before the pod answered', { timeout: 10_000 }, async () => {
        const arrived = new Promise<{ answer(): void; gone: Promise<void> }>((resolve) => { lateArrived = resolve; });
        const s = path.open(`late-${path.node}`);
        s.on('error', noop);
        s.write('GET /late HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
        const late = await arrived;
        abortClient(s);
        await closed(s);
        // let the reset travel (through the tunnel: RST_STREAM), then the pod answers anyway:
        // the proxy must have dropped the pod's side, and must not fail on a client that is gone
        await new Promise((r) => setTimeout(r, 200));
        late.answer();
        await late.gone;
        await stillServes(path, 'after-late-upgrade');
      });

      it('regression: answers 504 and closes when the pod never answers an Upgrade, and closes the pod\'s side', { timeout: 10_000 }, async () => {
        const from = silentConns.length;
        const started = Date.now();
        const r = await attack(path, `silent-${path.node}`, UPGRADE_HEAD + GET_SMUGGLED);
        assert.equal(r.status, 504, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
        assert.match(r.text, /connection: close\r\n/i);
        assert.ok(Date.now() - started >= LIMITS.upgradeTimeoutMs! - 50, 'answered before upgradeTimeoutMs');
        const conns = silentConns.slice(from);
        assert.equal(conns.length, 1, 'one connection to the pod');
        await Promise.all(conns.map(closed));
        await stillServes(path, 'after-unanswered-upgrade');
      });

      it('regression: an answer the pod cut off reaches the client cut off, never as a complete one', { timeout: 10_000 }, async () => {
        const r = await attack(path, `cuts-${path.node}`, 'GET /cut HTTP/1.1\r\nHost: backend\r\n\r\n');
        assert.equal(r.status, 200, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
        assert.match(r.text, /transfer-encoding: chunked/i);
        assert.doesNotMatch(r.text, /\r\n0\r\n\r\n$/, `the client got a complete answer: ${JSON.stringify(r.text)}`);
        await stillServes(path, 'after-cut-answer');
      });

      it('answers 431 and closes for a header larger than the limit', async () => {
        const before = seen.length;
        const r = await attack(path, pod, `GET /big HTTP/1.1\r\nHost: backend\r\nX-Big: ${'a'.repeat(70 * 1024)}\r\n\r\n`);
        assert.equal(r.status, 431, `answer: ${JSON.stringify(r.text.slice(0, 200))} error: ${r.error}`);
        await stillServes(path, 'after-big-header');
        assert.equal(seen.slice(before).some((x) => x.url === '/big'), false);
      });

      it('answers 431 and closes for a flood of small headers (beyond the byte limit)', async () => {
        let head = 'GET /flood HTTP/1.1\r\nHost: backend\r\n';
        for (let i = 0; i < 20_000; i++) head += `x-${i}: v\r\n`;
        const r = await attack(path, pod, `${head}\r\n`);
        assert.equal(r.status, 431, `answer: ${JSON.stringify(r.text.slice(0, 200))} error: ${r.error}`);
        await stillServes(path, 'after-header-flood');
        assert.equal(seen.some((x) => x.url === '/flood'), false);
      });

      it('answers 431 for more header fields than the count limit, inside the byte limit', async () => {
        let head = 'GET /many HTTP/1.1\r\nHost: backend\r\n';
        for (let i = 0; i < 3_000; i++) head += `x${i % 10}:\r\n`;
        const r = await attack(path, pod, `${head}\r\n`);
        assert.equal(r.status, 431, `answer: ${JSON.stringify(r.text.slice(0, 200))} error: ${r.error}`);
        await stillServes(path, 'after-header-count');
        assert.equal(seen.some((x) => x.url === '/many'), false);
      });

      it('closes a slowloris head with 408 after the header timeout, serving others meanwhile', async () => {
        const before = seen.length;
        const slow = attack(path, pod, 'GET /slowloris HTTP/1.1\r\nHost: backend\r\n', { bytes: Buffer.from('X-Slow: '.padEnd(400, 'z'), 'latin1'), everyMs: 100 });
        // served on another connection while the slow one is open
        const ok = await get(path, pod, '/ok/during-slowloris');
        assert.equal(ok.status, 200);
        const r = await slow;
        assert.equal(r.status, 408, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
        assert.equal(seen.slice(before).some((x) => x.url === '/slowloris'), false);
      });

      it('closes with 408 a connection whose head stops after the request line', async () => {
        const r = await attack(path, pod, 'GET /stalled HTTP/1.1\r\n');
        assert.equal(r.status, 408, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
        await stillServes(path, 'after-stalled-head');
      });

      it('streams a 200 MB body to a pod that does not read, with backpressure and bounded memory', async (t) => {
        const slowPod = `slow-${path.node}`;
        const total = 200 * MiB;
        const chunk = 64 * 1024;
        let produced = 0;
        const body = new Readable({
          read() {
            if (produced >= total) return void this.push(null);
            produced += chunk;
            // a fresh buffer each time: a proxy that kept them would grow by the body size
            this.push(Buffer.alloc(chunk, produced & 0xff));
          },
        });
        slowRelease = [];
        slowRead = 0;
        const base = heapAndBuffers();
        let peak = base;
        const sampler = setInterval(() => { peak = Math.max(peak, heapAndBuffers()); }, 20);
        try {
          const agent = new Agent({ keepAlive: false });
          (agent as unknown as { createConnection: () => Duplex }).createConnection = () => path.open(slowPod);
          const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
            const req = request({ agent, host: 'backend', path: '/upload', method: 'PUT', headers: { 'content-length': total } }, (res) => {
              let text = '';
              res.setEncoding('utf8');
              res.on('data', (c: string) => { text += c; });
              res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
            });
            req.on('error', reject);
            body.pipe(req);
          });
          // wait until the client is held back: nothing produced for a while (bounded)
          let last = -1;
          for (let i = 0; i < 200 && produced !== last; i++) {
            last = produced;
            await new Promise((r) => setTimeout(r, 150));
          }
          const heldAt = produced;
          t.diagnostic(`client held back after ${(heldAt / MiB).toFixed(1)} MiB`);
          assert.equal(slowRead, 0, 'the pod has read nothing yet');
          assert.ok(heldAt < 64 * MiB, `the client was held back after ${heldAt / MiB} MiB, not after the whole body`);
          for (const r of slowRelease) r();
          const r = await answer;
          assert.equal(r.status, 200);
          assert.equal(JSON.parse(r.body).bytes, total, 'the whole body arrived');
        } finally {
          clearInterval(sampler);
        }
        const grew = peak - base;
        t.diagnostic(`200 MiB upload: grew ${Math.round(grew / MiB)} MiB`);
        assert.ok(grew < 128 * MiB, `heap + buffers grew by ${Math.round(grew / MiB)} MiB for a ${total / MiB} MiB body`);
        await stillServes(path, 'after-big-body');
      });
    });
  }
});

describe('node proxy close() with Upgrades waiting on their pods', () => {
  it('closes the pods\' side of every Upgrade not yet answered', { timeout: 20_000 }, async () => {
    const opened: Socket[] = [];
    const silentPod = (): Server => netServer((c) => {
      c.on('error', noop);
      c.resume();
      opened.push(c);
    });
    const m = await startTwoNodes(CLOSE_BLOCK, [
      { name: 'silent-local', node: 'node-a', server: silentPod() },
      { name: 'silent-remote', node: 'node-b', server: silentPod() },
    ], { ...LIMITS, upgradeTimeoutMs: 60_000 });
    try {
      for (const pod of ['silent-local', 'silent-remote']) m.dial(m.ip[pod]!).write(UPGRADE_HEAD);
      for (let i = 0; i < 100 && opened.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(opened.length, 2, 'both upgrade requests reached their pods');
      await Promise.all([m.a.close(), m.b.close()]);
      // the pods' servers close only once these have (m.close() would hang otherwise)
      await Promise.all(opened.map(closed));
    } finally {
      for (const c of opened) c.destroy();
      await m.close();
    }
  });
});
