// Hostile input (issue 4 item 7): what a misbehaving client pod or peer node sends, and
// what the proxy answers. Two NodeProxy instances stand in for two nodes
// (test/helpers/two-nodes.ts, block 127.0.60-63.x), with short limits so that timeouts
// are waited for in milliseconds. Every HTTP/1.1 attack runs both ways a client reaches a
// pod: same node (outbound → inbound in-process) and cross node (outbound → tunnel → the
// peer's inbound), against real pod servers that record what they receive.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Agent, createServer as httpServer, request, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { connect as h2connect, createServer as h2server, type ClientHttp2Session } from 'node:http2';
import { connect, createServer as netServer, type Server, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { DEFAULT_LIMITS, h2cServerOptions, resolveLimits, type ProxyLimits } from '../../agent/proxy/limits.ts';
import { Flag, FrameReader, FrameType, PREFACE, drained, frame, headerBlock, rstStream, settings } from '../helpers/h2-frames.ts';
import { CLIENT_IDENTITY, closed, closeServer, httpGet, listen, startTwoNodes, type PodSpec, type TwoNodes } from '../helpers/two-nodes.ts';

/** short enough to wait for, long enough that a loaded machine still writes a head in time */
const LIMITS: Partial<ProxyLimits> = { headersTimeoutMs: 400, timeoutCheckMs: 50, errorLingerMs: 1_000, upgradeTimeoutMs: 500 };
const BLOCK = 60;
const MiB = 1024 * 1024;

/** one request as the backend pod got it */
interface Seen { pod: string; method: string; url: string; headers: number; bytes: number; complete: boolean }

/** what a raw client got before its connection closed */
interface Answer { text: string; status: number; error: string | undefined }

function heapAndBuffers(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

describe('proxy limits', () => {
  it('takes the defaults, with overrides', () => {
    assert.deepEqual(resolveLimits(undefined), DEFAULT_LIMITS);
    assert.equal(resolveLimits({ headersTimeoutMs: 300 }).headersTimeoutMs, 300);
    assert.equal(resolveLimits({ headersTimeoutMs: 300 }).maxHeaderBytes, DEFAULT_LIMITS.maxHeaderBytes);
  });

  it('refuses limits that cannot work, naming them', () => {
    const bad: Array<Partial<ProxyLimits>> = [
      { maxHeaderBytes: 0 }, { headersTimeoutMs: -1 }, { h2ResetRate: 1.5 }, { requestTimeoutMs: 1_000, headersTimeoutMs: 2_000 },
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

describe('h2c listener options for client pods', () => {
  it('advertise the stream and header bounds, and close a rapid-reset session', async () => {
    const server = h2server(h2cServerOptions(resolveLimits(undefined)));
    server.on('stream', (stream) => {
      stream.on('error', () => {});
      stream.respond({ ':status': 200 }, { endStream: true });
    });
    const port = await listen(server, '127.0.64.1');
    const s = connect({ host: '127.0.64.1', port });
    try {
      const reader = new FrameReader(s);
      s.write(Buffer.concat([PREFACE, settings()]));
      const first = await reader.waitFor((f) => f.type === FrameType.SETTINGS && (f.flags & Flag.ACK) === 0);
      const advertised = new Map<number, number>();
      for (let off = 0; off + 6 <= (first?.payload.length ?? 0); off += 6) advertised.set(first!.payload.readUInt16BE(off), first!.payload.readUInt32BE(off + 2));
      assert.equal(advertised.get(0x3), DEFAULT_LIMITS.h2cMaxStreams, 'SETTINGS_MAX_CONCURRENT_STREAMS');
      assert.equal(advertised.get(0x6), DEFAULT_LIMITS.maxHeaderBytes, 'SETTINGS_MAX_HEADER_LIST_SIZE');
      const block = headerBlock([[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'pod']]);
      const frames: Buffer[] = [];
      for (let i = 0; i < 3_000; i++) frames.push(frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, 1 + 2 * i, block), rstStream(1 + 2 * i, 8));
      s.write(Buffer.concat(frames));
      await reader.done;
      assert.ok(reader.goaway !== undefined && reader.goaway !== 0, `got ${reader.describe()}`);
    } finally {
      s.destroy();
      await closeServer(server);
    }
  });
});

describe('node proxy: hostile input', { timeout: 120_000 }, () => {
  const sessions = new Set<ClientHttp2Session>();
  /** raw connections to the tunnel listener, closed in after() whatever a test left */
  const raw = new Set<Socket>();
  /** the silent pods' connections: the proxy does not close an unanswered Upgrade's (see the todo test) */
  const held = new Set<Socket>();
  const seen: Seen[] = [];
  let mesh: TwoNodes;
  /** the slow readers' release: set by a test, called once the client is blocked */
  let slowRelease: Array<() => void> = [];
  let slowRead = 0;

  function recorder(pod: string): HttpServer {
    return httpServer((req, res) => {
      const rec: Seen = { pod, method: req.method ?? '', url: req.url ?? '', headers: req.rawHeaders.length / 2, bytes: 0, complete: false };
      seen.push(rec);
      req.on('data', (c: Buffer) => { rec.bytes += c.length; });
      req.on('error', () => {});
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

  /** upgrade requests a late pod holds, answered (101) when a test says so; resolves when the proxy closes the pod's side */
  const lateUpgrades: Array<{ answer: () => Promise<void> }> = [];
  let lateArrived: (() => void) | undefined;

  /** a pod that switches protocols only when a test tells it to */
  function lateUpgrade(pod: string): HttpServer {
    const srv = recorder(pod);
    srv.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
      socket.on('error', () => {});
      const gone = closed(socket);
      lateUpgrades.push({
        answer: async () => {
          socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: Upgrade\r\n\r\n');
          await gone;
        },
      });
      lateArrived?.();
    });
    return srv;
  }

  /** a pod that accepts connections and never answers */
  function silent(): Server {
    return netServer((c) => {
      c.on('error', () => {});
      c.resume();
      held.add(c);
      c.once('close', () => held.delete(c));
    });
  }

  /** a pod that does not read a request body until a test releases it */
  function slowReader(pod: string): HttpServer {
    return httpServer((req: IncomingMessage, res) => {
      let n = 0;
      req.pause();
      slowRelease.push(() => req.resume());
      req.on('data', (c: Buffer) => { n += c.length; slowRead += c.length; });
      req.on('error', () => {});
      req.on('end', () => res.end(JSON.stringify({ pod, bytes: n })));
    });
  }

  before(async () => {
    const pods: PodSpec[] = [
      { name: 'remote', node: 'node-b', server: recorder('remote') },
      { name: 'local', node: 'node-a', server: recorder('local') },
      { name: 'slow-remote', node: 'node-b', server: slowReader('slow-remote') },
      { name: 'slow-local', node: 'node-a', server: slowReader('slow-local') },
      { name: 'declines-remote', node: 'node-b', server: declinesUpgrade('declines-remote') },
      { name: 'declines-local', node: 'node-a', server: declinesUpgrade('declines-local') },
      { name: 'late-remote', node: 'node-b', server: lateUpgrade('late-remote') },
      { name: 'late-local', node: 'node-a', server: lateUpgrade('late-local') },
      { name: 'silent-remote', node: 'node-b', server: silent() },
      { name: 'silent-local', node: 'node-a', server: silent() },
    ];
    mesh = await startTwoNodes(BLOCK, pods, LIMITS);
  });

  after(async () => {
    for (const r of slowRelease) r();
    for (const s of sessions) s.destroy();
    for (const s of raw) s.destroy();
    for (const s of held) s.destroy();
    await mesh?.close();
  });

  function dial(pod: string): Socket {
    return mesh.dial(mesh.ip[pod]!);
  }

  /** write what a client sends (no FIN) and read what comes back until the proxy closes */
  async function attack(pod: string, payload: string | Buffer, drip?: { bytes: Buffer; everyMs: number }): Promise<Answer> {
    const s = dial(pod);
    let text = '';
    let error: string | undefined;
    s.setEncoding('latin1');
    s.on('data', (c: string) => { text += c; });
    s.on('error', (err: NodeJS.ErrnoException) => { error = err.code ?? err.message; });
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

  function get(pod: string, path: string): Promise<{ status: number; body: string }> {
    return httpGet(() => dial(pod), path);
  }

  /** the proxy still serves a well-behaved client after an attack */
  async function stillServes(pod: string, tag: string): Promise<void> {
    const r = await get(pod, `/ok/${tag}`);
    assert.equal(r.status, 200, `a good request after ${tag}`);
    assert.ok(seen.some((x) => x.url === `/ok/${tag}`));
  }

  const PATHS = [
    { via: 'same node', pod: 'local', slow: 'slow-local', declines: 'declines-local', silent: 'silent-local', late: 'late-local' },
    { via: 'cross node', pod: 'remote', slow: 'slow-remote', declines: 'declines-remote', silent: 'silent-remote', late: 'late-remote' },
  ] as const;

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

  for (const path of PATHS) {
    describe(`HTTP/1.1 ${path.via}`, () => {
      for (const c of SMUGGLING) {
        it(`answers 400 and closes: ${c.name}`, async () => {
          const before = seen.length;
          const r = await attack(path.pod, c.payload);
          assert.equal(r.status, 400, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
          assert.match(r.text, /connection: close/i);
          await stillServes(path.pod, `after-${c.name.replace(/\W+/g, '-')}`);
          const got = seen.slice(before).map((x) => x.url).filter((u) => !u.startsWith('/ok/'));
          assert.deepEqual(got, [], 'the pod got none of the attack');
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
          const r = await attack(path.pod, `POST /first HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\n\r\n${body}${GET_SMUGGLED}`);
          assert.equal(r.status, 400, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
          await stillServes(path.pod, `after-chunk-${name.replace(/\W+/g, '-')}`);
          // the head was valid, so the pod may have got /first; its body never completes
          const got = seen.slice(before).filter((x) => !x.url.startsWith('/ok/'));
          assert.ok(got.every((x) => x.url === '/first' && !x.complete), `pod got ${JSON.stringify(got)}`);
        });
      }

      // todo until HttpIngress.onUpgrade holds the client's bytes back until the pod answers 101
      it('never lets a request ride behind an Upgrade the pod declines', { todo: 'onUpgrade splices before the pod switches protocols' }, async () => {
        const before = seen.length;
        const s = dial(path.declines);
        s.on('error', () => {});
        let text = '';
        s.setEncoding('latin1');
        s.on('data', (c: string) => { text += c; });
        s.write('GET /upgrade HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'
          + 'GET /smuggled HTTP/1.1\r\nHost: backend\r\n\r\n');
        // the pod answers the upgrade request with 200; wait for that answer, then a little traffic
        while (!text.includes('ok') && !s.destroyed) await once(s, 'data').catch(() => undefined);
        await stillServes(path.pod, `after-declined-upgrade-${path.pod}`);
        s.destroy();
        const got = seen.slice(before).filter((x) => x.pod === path.declines).map((x) => x.url);
        assert.deepEqual(got, ['/upgrade'], 'the pod got only the request the proxy judged');
      });

      it('survives a client that leaves before the pod answers its Upgrade', async () => {
        const arrived = new Promise<void>((resolve) => { lateArrived = resolve; });
        const s = dial(path.late);
        s.on('error', () => {});
        s.write('GET /late HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
        await arrived;
        const late = lateUpgrades.shift()!;
        s.resetAndDestroy();
        await closed(s);
        // let the reset travel (through the tunnel: RST_STREAM) before the pod answers
        await new Promise((r) => setTimeout(r, 200));
        // the proxy must drop the pod's side, not fail on a client that is gone
        await late.answer();
        await stillServes(path.pod, `after-late-upgrade-${path.pod}`);
      });

      // todo until HttpIngress.onUpgrade bounds its wait for the pod's answer (upgradeTimeoutMs)
      it('answers 504 and closes when the pod never answers an Upgrade', { todo: 'onUpgrade waits for the pod without a bound', timeout: 5_000 }, async () => {
        const r = await attack(path.silent, 'GET /upgrade HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
        assert.equal(r.status, 504, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
      });

      it('answers 431 and closes for a header larger than the limit', async () => {
        const before = seen.length;
        const r = await attack(path.pod, `GET /big HTTP/1.1\r\nHost: backend\r\nX-Big: ${'a'.repeat(70 * 1024)}\r\n\r\n`);
        assert.equal(r.status, 431, `answer: ${JSON.stringify(r.text.slice(0, 200))} error: ${r.error}`);
        await stillServes(path.pod, 'after-big-header');
        assert.equal(seen.slice(before).some((x) => x.url === '/big'), false);
      });

      it('answers 431 and closes for a flood of small headers (beyond the byte limit)', async () => {
        let head = 'GET /flood HTTP/1.1\r\nHost: backend\r\n';
        for (let i = 0; i < 20_000; i++) head += `x-${i}: v\r\n`;
        const r = await attack(path.pod, `${head}\r\n`);
        assert.equal(r.status, 431, `answer: ${JSON.stringify(r.text.slice(0, 200))} error: ${r.error}`);
        await stillServes(path.pod, 'after-header-flood');
        assert.equal(seen.some((x) => x.url === '/flood'), false);
      });

      it('answers 431 for more header fields than the count limit, inside the byte limit', async () => {
        let head = 'GET /many HTTP/1.1\r\nHost: backend\r\n';
        for (let i = 0; i < 3_000; i++) head += `x${i % 10}:\r\n`;
        const r = await attack(path.pod, `${head}\r\n`);
        assert.equal(r.status, 431, `answer: ${JSON.stringify(r.text.slice(0, 200))} error: ${r.error}`);
        await stillServes(path.pod, 'after-header-count');
        assert.equal(seen.some((x) => x.url === '/many'), false);
      });

      it('closes a slowloris head with 408 after the header timeout, serving others meanwhile', async () => {
        const before = seen.length;
        const slow = attack(path.pod, 'GET /slowloris HTTP/1.1\r\nHost: backend\r\n', { bytes: Buffer.from('X-Slow: '.padEnd(400, 'z'), 'latin1'), everyMs: 100 });
        // served on another connection while the slow one is open
        const ok = await get(path.pod, '/ok/during-slowloris');
        assert.equal(ok.status, 200);
        const r = await slow;
        assert.equal(r.status, 408, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
        assert.equal(seen.slice(before).some((x) => x.url === '/slowloris'), false);
      });

      it('closes with 408 a connection whose head stops after the request line', async () => {
        const r = await attack(path.pod, 'GET /stalled HTTP/1.1\r\n');
        assert.equal(r.status, 408, `answer: ${JSON.stringify(r.text)} error: ${r.error}`);
        await stillServes(path.pod, 'after-stalled-head');
      });

      it('streams a 200 MB body to a pod that does not read, with backpressure and bounded memory', async (t) => {
        const pod = path.slow;
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
          (agent as unknown as { createConnection: () => Socket }).createConnection = () => dial(pod);
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
        await stillServes(path.pod, 'after-big-body');
      });
    });
  }

  describe('HTTP/2 tunnel listener, from the peer node address', () => {
    /** a raw connection to node-b's tunnel listener from node-a's tunnel address */
    async function rawPeer(): Promise<{ s: Socket; reader: FrameReader }> {
      const s = connect({ host: mesh.tunnelB, port: mesh.tunnelPort, localAddress: mesh.tunnelA });
      raw.add(s);
      s.once('close', () => raw.delete(s));
      const reader = new FrameReader(s);
      await once(s, 'connect');
      return { s, reader };
    }

    function tunnelHeaders(): Buffer {
      return headerBlock([
        [':method', 'CONNECT'], [':authority', `${mesh.ip.remote}:${mesh.port}`], ['x-nodal-source-identity', String(CLIENT_IDENTITY)],
      ]);
    }

    /** a session of a well-behaved peer (node-a's address), opened before an attack */
    async function goodPeer(): Promise<ClientHttp2Session> {
      const session = h2connect(`http://${mesh.tunnelB}:${mesh.tunnelPort}`, {
        createConnection: () => connect({ host: mesh.tunnelB, port: mesh.tunnelPort, localAddress: mesh.tunnelA }),
      });
      session.on('error', () => {});
      sessions.add(session);
      await once(session, 'remoteSettings');
      return session;
    }

    /** the well-behaved session still carries a request to the pod */
    async function peerStillServes(session: ClientHttp2Session, tag: string): Promise<void> {
      const stream = session.request({
        ':method': 'CONNECT', ':authority': `${mesh.ip.remote}:${mesh.port}`, 'x-nodal-source-identity': String(CLIENT_IDENTITY),
      });
      stream.on('error', () => {});
      const [headers] = await once(stream, 'response');
      assert.equal(headers[':status'], 200);
      // no end(): node:http answers a half-closed client by closing, before any response
      stream.write(`GET /ok/${tag} HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n`);
      let text = '';
      stream.setEncoding('latin1');
      stream.on('data', (c: string) => { text += c; });
      await once(stream, 'end');
      assert.match(text, /^HTTP\/1\.1 200 /, `the well-behaved peer session after ${tag}`);
      session.close();
      sessions.delete(session);
      // and so does node-a's own pooled session, carrying a client pod's request
      await stillServes('remote', `${tag}-via-node-a`);
    }

    it('closes a rapid-reset session (CVE-2023-44487) with GOAWAY, and a well-behaved peer keeps working', async (t) => {
      const good = await goodPeer();
      const { s, reader } = await rawPeer();
      s.write(Buffer.concat([PREFACE, settings()]));
      const block = tunnelHeaders();
      // HEADERS then RST_STREAM(CANCEL), thousands of times, in batches that honour backpressure
      let sent = 0;
      for (let batch = 0; batch < 50 && !reader.closed && s.writable; batch++) {
        const frames: Buffer[] = [];
        for (let i = 0; i < 200; i++) {
          const id = 1 + 2 * sent++;
          frames.push(frame(FrameType.HEADERS, Flag.END_HEADERS, id, block), rstStream(id, 8));
        }
        if (!s.write(Buffer.concat(frames))) await drained(s);
      }
      await reader.done;
      assert.ok(reader.goaway !== undefined && reader.goaway !== 0, `the offender got ${reader.describe()} after ${sent} resets`);
      // the session was cut short: streams after the GOAWAY's last one were never processed
      const last = reader.goawayLastStream ?? 0;
      t.diagnostic(`rapid reset: ${reader.describe()} at stream ${last} of ${2 * sent - 1}`);
      assert.ok(last < 2 * sent - 1, `GOAWAY last stream ${last}, attack sent up to ${2 * sent - 1}`);
      await peerStillServes(good, 'rapid-reset');
    });

    const INVALID: Array<{ name: string; bytes: () => Buffer; want: string[] }> = [
      { name: 'garbage after the preface', bytes: () => Buffer.concat([PREFACE, Buffer.from('\xff\xfe garbage that is not a frame \x00\x01'.repeat(20), 'latin1')]), want: ['PROTOCOL_ERROR', 'FRAME_SIZE_ERROR'] },
      { name: 'a DATA frame on stream 0', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.DATA, 0, 0, Buffer.from('x'))]), want: ['PROTOCOL_ERROR'] },
      { name: 'a HEADERS frame on stream 0', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.HEADERS, Flag.END_HEADERS, 0, tunnelHeaders())]), want: ['PROTOCOL_ERROR'] },
      { name: 'a SETTINGS frame on a stream', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.SETTINGS, 0, 1, Buffer.alloc(0))]), want: ['PROTOCOL_ERROR'] },
      { name: 'a SETTINGS frame of a bad length', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(5))]), want: ['FRAME_SIZE_ERROR'] },
      { name: 'a frame larger than SETTINGS_MAX_FRAME_SIZE', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.alloc(20_000))]), want: ['FRAME_SIZE_ERROR'] },
      { name: 'a WINDOW_UPDATE of 0 on stream 0', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.WINDOW_UPDATE, 0, 0, Buffer.alloc(4))]), want: ['PROTOCOL_ERROR'] },
      { name: 'a PUSH_PROMISE from the client side', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.PUSH_PROMISE, Flag.END_HEADERS, 1, Buffer.concat([Buffer.from([0, 0, 0, 2]), tunnelHeaders()]))]), want: ['PROTOCOL_ERROR'] },
      { name: 'a header block that is not HPACK', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]))]), want: ['COMPRESSION_ERROR'] },
      { name: 'a CONTINUATION without HEADERS', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, tunnelHeaders())]), want: ['PROTOCOL_ERROR'] },
      { name: 'an HTTP/1.1 request instead of the preface', bytes: () => Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), want: [] },
    ];
    for (const c of INVALID) {
      it(`closes the session on ${c.name}`, async () => {
        const { s, reader } = await rawPeer();
        s.write(c.bytes());
        await reader.done;
        if (c.want.length > 0) assert.ok(reader.describe().startsWith('GOAWAY ') && c.want.some((w) => reader.describe() === `GOAWAY ${w}`), `got ${reader.describe()}, want GOAWAY ${c.want.join(' or ')}`);
        await stillServes('remote', `after-h2-${c.name.replace(/\W+/g, '-')}`);
      });
    }

    it('closes a CONTINUATION flood (CVE-2024-27316 style) with memory bounded', async (t) => {
      const good = await goodPeer();
      const { s, reader } = await rawPeer();
      s.write(Buffer.concat([PREFACE, settings(), frame(FrameType.HEADERS, 0, 1, tunnelHeaders())]));
      const base = heapAndBuffers();
      let peak = base;
      let sent = 0;
      const limit = 64 * MiB;
      // header fields of 4 KiB each, never an END_HEADERS; bounded by `limit`
      const fragment = frame(FrameType.CONTINUATION, 0, 1, headerBlock([['x-flood', 'f'.repeat(4096)]]));
      while (sent < limit && !reader.closed && s.writable) {
        const frames = Array.from({ length: 64 }, () => fragment);
        sent += frames.length * fragment.length;
        const ok = s.write(Buffer.concat(frames));
        peak = Math.max(peak, heapAndBuffers());
        if (!ok) await drained(s);
      }
      await reader.done;
      t.diagnostic(`continuation flood: ${reader.describe()} after ${Math.round(sent / 1024)} KiB written, grew ${Math.round((peak - base) / MiB)} MiB`);
      assert.ok(sent < limit, `closed after ${Math.round(sent / 1024)} KiB of CONTINUATION, ${reader.describe()}`);
      assert.ok(peak - base < 64 * MiB, `heap + buffers grew by ${Math.round((peak - base) / MiB)} MiB`);
      await peerStillServes(good, 'continuation-flood');
    });

    /** open stream 1 with this header block, split in frames of the default max size */
    async function openWith(block: Buffer, ack: boolean): Promise<{ s: Socket; reader: FrameReader }> {
      const peer = await rawPeer();
      peer.s.write(Buffer.concat([PREFACE, settings()]));
      if (ack) {
        // acknowledged, the proxy's own SETTINGS_MAX_HEADER_LIST_SIZE applies (not nghttp2's default)
        await peer.reader.waitFor((f) => f.type === FrameType.SETTINGS && (f.flags & Flag.ACK) === 0);
        peer.s.write(frame(FrameType.SETTINGS, Flag.ACK, 0));
      }
      const frames: Buffer[] = [];
      for (let off = 0; off < block.length; off += 16_384) {
        const end = off + 16_384 >= block.length;
        frames.push(frame(off === 0 ? FrameType.HEADERS : FrameType.CONTINUATION, end ? Flag.END_HEADERS : 0, 1, block.subarray(off, off + 16_384)));
      }
      peer.s.write(Buffer.concat(frames));
      return peer;
    }

    const OVERSIZED: Array<{ name: string; extra: Array<[string, string]>; ack: boolean }> = [
      { name: 'a header block over the tunnel byte limit', extra: Array.from({ length: 6 }, (_, i): [string, string] => [`x-big-${i}`, 'b'.repeat(4000)]), ack: true },
      { name: 'more header fields than the tunnel pair limit', extra: Array.from({ length: 40 }, (_, i): [string, string] => [`x-${i}`, 'v']), ack: false },
    ];
    for (const c of OVERSIZED) {
      it(`refuses ${c.name}, and other sessions keep working`, async () => {
        const good = await goodPeer();
        const block = headerBlock([
          [':method', 'CONNECT'], [':authority', `${mesh.ip.remote}:${mesh.port}`], ['x-nodal-source-identity', String(CLIENT_IDENTITY)], ...c.extra,
        ]);
        const { s, reader } = await openWith(block, c.ack);
        // the stream is reset or the session closed; either way it is never answered
        const f = await reader.waitFor((x) => x.stream === 1 && (x.type === FrameType.RST_STREAM || x.type === FrameType.HEADERS));
        assert.notEqual(f?.type, FrameType.HEADERS, 'the oversized stream was answered');
        s.destroy();
        await peerStillServes(good, `oversized-${c.name.replace(/\W+/g, '-')}`);
      });
    }
  });
});
