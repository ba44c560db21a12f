// Hostile input over HTTP/2 (issue 4 item 7): what a misbehaving peer node sends to the
// tunnel listener, and what a client pod sends as h2c (prior knowledge) to the source side
// (egress.ts), and what the proxy answers. Two NodeProxy instances stand in for two nodes
// (test/helpers/two-nodes.ts, block 127.0.74-77.x). Frames are written raw
// (test/helpers/h2-frames.ts): no client library sends these. Each attack must end the
// offender's session (GOAWAY) or stream (RST_STREAM), keep memory bounded, and leave a
// well-behaved session opened before it working. HTTP/1.1 is in proxy-hostile.test.ts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer as httpServer, type Server as HttpServer } from 'node:http';
import { connect as h2connect, createServer as h2server, type ClientHttp2Session, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import { connect, type Socket } from 'node:net';
import { DEFAULT_LIMITS, h2cServerOptions, resolveLimits } from '../../agent/proxy/limits.ts';
import { Flag, FrameReader, FrameType, PREFACE, drained, frame, headerBlock, rstStream, settings } from '../helpers/h2-frames.ts';
import { CLIENT_IDENTITY, closeServer, httpGet, listen, startTwoNodes, type TwoNodes } from '../helpers/two-nodes.ts';

const BLOCK = 74;
const MiB = 1024 * 1024;

function heapAndBuffers(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

function noop(): void {}

/**
 * CONTINUATION frames of 4 KiB header fields, never an END_HEADERS, after a HEADERS frame
 * already sent on stream 1 (CVE-2024-27316 style), until the proxy closes the session or
 * 64 MiB went out. Asserts it closed before that and heap + buffers stayed bounded.
 */
async function continuationFlood(t: { diagnostic(m: string): void }, s: Socket, reader: FrameReader): Promise<void> {
  const base = heapAndBuffers();
  let peak = base;
  let sent = 0;
  const limit = 64 * MiB;
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
}

/** SETTINGS parameters of a frame's payload, by id */
function settingsOf(payload: Buffer | undefined): Map<number, number> {
  const out = new Map<number, number>();
  for (let off = 0; payload && off + 6 <= payload.length; off += 6) out.set(payload.readUInt16BE(off), payload.readUInt32BE(off + 2));
  return out;
}

describe('h2c listener options for client pods', () => {
  it('advertise the stream and header bounds, and close a rapid-reset session', async () => {
    const server = h2server(h2cServerOptions(resolveLimits(undefined)));
    server.on('stream', (stream) => {
      stream.on('error', noop);
      stream.respond({ ':status': 200 }, { endStream: true });
    });
    const port = await listen(server, '127.0.64.1');
    const s = connect({ host: '127.0.64.1', port });
    try {
      const reader = new FrameReader(s);
      s.write(Buffer.concat([PREFACE, settings()]));
      const first = await reader.waitFor((f) => f.type === FrameType.SETTINGS && (f.flags & Flag.ACK) === 0);
      const advertised = settingsOf(first?.payload);
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

describe('node proxy: hostile HTTP/2', { timeout: 180_000 }, () => {
  const sessions = new Set<ClientHttp2Session>();
  /** raw connections, closed in after() whatever a test left */
  const raw = new Set<Socket>();
  /** requests the pods got: `pod path` */
  const seen: string[] = [];
  /** how each request body the h2c pods got ended, by `pod path` */
  const bodies = new Map<string, 'complete' | 'cut off'>();
  let mesh: TwoNodes;

  function recorder(pod: string): HttpServer {
    return httpServer((req, res) => {
      seen.push(`${pod} ${req.url}`);
      req.resume();
      req.on('error', noop);
      req.on('end', () => res.end(pod));
    });
  }

  /** an h2c pod: answers 200 once a request's body ended */
  function h2pod(pod: string): Http2Server {
    const srv = h2server();
    srv.on('session', (s) => s.on('error', noop));
    srv.on('stream', (stream: ServerHttp2Stream, headers) => {
      stream.on('error', noop);
      const key = `${pod} ${String(headers[':path'])}`;
      seen.push(key);
      stream.resume();
      // node:http2 ends the readable side of a reset stream too: only rstCode tells
      stream.on('end', () => bodies.set(key, stream.aborted || stream.rstCode !== 0 ? 'cut off' : 'complete'));
      stream.on('close', () => { if (!bodies.has(key)) bodies.set(key, 'cut off'); });
      stream.on('end', () => {
        if (stream.closed || stream.headersSent || stream.rstCode !== 0) return;
        stream.respond({ ':status': 200, 'content-type': 'text/plain' });
        stream.end(pod);
      });
    });
    return srv;
  }

  before(async () => {
    mesh = await startTwoNodes(BLOCK, [
      { name: 'remote', node: 'node-b', server: recorder('remote') },
      { name: 'h2-local', node: 'node-a', server: h2pod('h2-local') },
      { name: 'h2-remote', node: 'node-b', server: h2pod('h2-remote') },
    ], {});
  });

  after(async () => {
    for (const s of sessions) s.destroy();
    for (const s of raw) s.destroy();
    await mesh?.close();
  });

  /** node-a (its pooled tunnel session included) still carries a client pod's request to node-b */
  async function stillServes(pod: string, tag: string): Promise<void> {
    const r = await httpGet(() => mesh.dial(mesh.ip[pod]!), `/ok/${tag}`);
    assert.equal(r.status, 200, `a good request after ${tag}`);
    assert.ok(seen.includes(`${pod} /ok/${tag}`));
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
      await continuationFlood(t, s, reader);
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

  for (const where of ['local', 'remote'] as const) {
    describe(`h2c from a client pod, source side, ${where === 'local' ? 'same node' : 'cross node'}`, () => {
      const pod = `h2-${where}`;

      /** a raw h2c connection from the client pod through node-a's outbound listener */
      function rawClient(): { s: Socket; reader: FrameReader } {
        const s = mesh.dial(mesh.ip[pod]!);
        raw.add(s);
        s.once('close', () => raw.delete(s));
        return { s, reader: new FrameReader(s) };
      }

      function requestHeaders(path: string, extra: Array<[string, string]> = []): Buffer {
        return headerBlock([[':method', 'GET'], [':scheme', 'http'], [':path', path], [':authority', 'backend'], ...extra]);
      }

      /** a session of a well-behaved client pod, opened before an attack */
      async function goodClient(): Promise<ClientHttp2Session> {
        const session = h2connect('http://backend', { createConnection: () => mesh.dial(mesh.ip[pod]!) });
        session.on('error', noop);
        sessions.add(session);
        await once(session, 'remoteSettings');
        return session;
      }

      /** the well-behaved session still gets its requests answered by the pod, and so does a new one */
      async function clientStillServed(session: ClientHttp2Session, tag: string): Promise<void> {
        for (const s of [session, await goodClient()]) {
          const stream = s.request({ ':path': `/ok/${tag}` });
          stream.on('error', noop);
          const [headers] = await once(stream, 'response');
          stream.resume();
          await once(stream, 'end');
          assert.equal(headers[':status'], 200, `a well-behaved client after ${tag}`);
          s.close();
          sessions.delete(s);
        }
        assert.ok(seen.includes(`${pod} /ok/${tag}`));
      }

      it('advertises the h2c bounds, and closes a rapid-reset session (CVE-2023-44487) with GOAWAY', async (t) => {
        const good = await goodClient();
        const { s, reader } = rawClient();
        s.write(Buffer.concat([PREFACE, settings()]));
        const first = await reader.waitFor((f) => f.type === FrameType.SETTINGS && (f.flags & Flag.ACK) === 0);
        const advertised = settingsOf(first?.payload);
        assert.equal(advertised.get(0x3), DEFAULT_LIMITS.h2cMaxStreams, 'SETTINGS_MAX_CONCURRENT_STREAMS');
        assert.equal(advertised.get(0x6), DEFAULT_LIMITS.maxHeaderBytes, 'SETTINGS_MAX_HEADER_LIST_SIZE');
        const block = requestHeaders('/reset');
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
        const last = reader.goawayLastStream ?? 0;
        t.diagnostic(`rapid reset: ${reader.describe()} at stream ${last} of ${2 * sent - 1}`);
        assert.ok(last < 2 * sent - 1, `GOAWAY last stream ${last}, attack sent up to ${2 * sent - 1}`);
        await clientStillServed(good, 'rapid-reset');
      });

      it('refuses streams beyond the concurrency limit', async () => {
        const good = await goodClient();
        const { s, reader } = rawClient();
        s.write(Buffer.concat([PREFACE, settings()]));
        await reader.waitFor((f) => f.type === FrameType.SETTINGS && (f.flags & Flag.ACK) === 0);
        s.write(frame(FrameType.SETTINGS, Flag.ACK, 0));
        // requests whose bodies never end: each holds its stream open
        const block = requestHeaders('/held');
        const n = DEFAULT_LIMITS.h2cMaxStreams + 20;
        s.write(Buffer.concat(Array.from({ length: n }, (_, i) => frame(FrameType.HEADERS, Flag.END_HEADERS, 1 + 2 * i, block))));
        const over = 1 + 2 * DEFAULT_LIMITS.h2cMaxStreams;
        const refused = await reader.waitFor((f) => (f.type === FrameType.RST_STREAM && f.stream >= over) || f.type === FrameType.GOAWAY);
        assert.ok(refused, `no refusal: ${reader.describe()}`);
        if (refused.type === FrameType.RST_STREAM) {
          const code = refused.payload.readUInt32BE(0);
          assert.ok(code === 7 || code === 1, `RST_STREAM code ${code}, want REFUSED_STREAM or PROTOCOL_ERROR`);
        }
        assert.equal(reader.frames.some((f) => f.type === FrameType.RST_STREAM && f.stream < over), false, 'a stream within the limit was reset');
        s.destroy();
        await clientStillServed(good, 'too-many-streams');
      });

      it('regression: a request body the client reset reaches the pod cut off, never as a complete one', async () => {
        const { s, reader } = rawClient();
        const block = headerBlock([[':method', 'POST'], [':scheme', 'http'], [':path', '/reset-body'], [':authority', 'backend']]);
        s.write(Buffer.concat([PREFACE, settings(), frame(FrameType.HEADERS, Flag.END_HEADERS, 1, block), frame(FrameType.DATA, 0, 1, Buffer.from('partial'))]));
        for (let i = 0; i < 200 && !seen.includes(`${pod} /reset-body`); i++) await new Promise((r) => setTimeout(r, 10));
        assert.ok(seen.includes(`${pod} /reset-body`), `the request did not reach the pod: ${reader.describe()}`);
        s.write(rstStream(1, 8));
        for (let i = 0; i < 200 && !bodies.has(`${pod} /reset-body`); i++) await new Promise((r) => setTimeout(r, 10));
        assert.equal(bodies.get(`${pod} /reset-body`), 'cut off');
        s.destroy();
      });

      const INVALID: Array<{ name: string; bytes: () => Buffer; want: string[] }> = [
        { name: 'garbage after the preface', bytes: () => Buffer.concat([PREFACE, Buffer.from('\xff\xfe garbage that is not a frame \x00\x01'.repeat(20), 'latin1')]), want: ['PROTOCOL_ERROR', 'FRAME_SIZE_ERROR'] },
        { name: 'a DATA frame on stream 0', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.DATA, 0, 0, Buffer.from('x'))]), want: ['PROTOCOL_ERROR'] },
        { name: 'a HEADERS frame on stream 0', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.HEADERS, Flag.END_HEADERS, 0, requestHeaders('/zero'))]), want: ['PROTOCOL_ERROR'] },
        { name: 'a SETTINGS frame of a bad length', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(5))]), want: ['FRAME_SIZE_ERROR'] },
        { name: 'a frame larger than SETTINGS_MAX_FRAME_SIZE', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.alloc(20_000))]), want: ['FRAME_SIZE_ERROR'] },
        { name: 'a WINDOW_UPDATE of 0 on stream 0', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.WINDOW_UPDATE, 0, 0, Buffer.alloc(4))]), want: ['PROTOCOL_ERROR'] },
        { name: 'a PUSH_PROMISE from the client', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.PUSH_PROMISE, Flag.END_HEADERS, 1, Buffer.concat([Buffer.from([0, 0, 0, 2]), requestHeaders('/push')]))]), want: ['PROTOCOL_ERROR'] },
        { name: 'a header block that is not HPACK', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]))]), want: ['COMPRESSION_ERROR'] },
        { name: 'a CONTINUATION without HEADERS', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, requestHeaders('/cont'))]), want: ['PROTOCOL_ERROR'] },
        { name: 'an even (server-initiated) stream id', bytes: () => Buffer.concat([PREFACE, settings(), frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, 2, requestHeaders('/even'))]), want: ['PROTOCOL_ERROR'] },
      ];
      for (const c of INVALID) {
        it(`closes the session on ${c.name}`, async () => {
          const good = await goodClient();
          const { s, reader } = rawClient();
          s.write(c.bytes());
          await reader.done;
          assert.ok(c.want.some((w) => reader.describe() === `GOAWAY ${w}`), `got ${reader.describe()}, want GOAWAY ${c.want.join(' or ')}`);
          await clientStillServed(good, `after-h2c-${c.name.replace(/\W+/g, '-')}`);
        });
      }

      it('closes a CONTINUATION flood (CVE-2024-27316 style) with memory bounded', async (t) => {
        const good = await goodClient();
        const { s, reader } = rawClient();
        s.write(Buffer.concat([PREFACE, settings(), frame(FrameType.HEADERS, 0, 1, requestHeaders('/flood'))]));
        await continuationFlood(t, s, reader);
        assert.equal(seen.includes(`${pod} /flood`), false);
        await clientStillServed(good, 'continuation-flood');
      });

      const OVERSIZED: Array<{ name: string; path: string; extra: Array<[string, string]> }> = [
        { name: 'a header block over the byte limit', path: '/big', extra: Array.from({ length: 20 }, (_, i): [string, string] => [`x-big-${i}`, 'b'.repeat(4000)]) },
        { name: 'more header fields than the count limit', path: '/many', extra: Array.from({ length: DEFAULT_LIMITS.maxHeaderCount + 100 }, (_, i): [string, string] => [`x-${i}`, 'v']) },
      ];
      for (const c of OVERSIZED) {
        it(`refuses ${c.name}, and the pod never sees it`, async () => {
          const good = await goodClient();
          const { s, reader } = rawClient();
          s.write(Buffer.concat([PREFACE, settings()]));
          // acknowledged, the proxy's own SETTINGS_MAX_HEADER_LIST_SIZE applies (not nghttp2's default)
          await reader.waitFor((f) => f.type === FrameType.SETTINGS && (f.flags & Flag.ACK) === 0);
          s.write(frame(FrameType.SETTINGS, Flag.ACK, 0));
          const block = requestHeaders(c.path, c.extra);
          const frames: Buffer[] = [];
          for (let off = 0; off < block.length; off += 16_384) {
            const end = off + 16_384 >= block.length;
            frames.push(frame(off === 0 ? FrameType.HEADERS : FrameType.CONTINUATION, end ? Flag.END_HEADERS | Flag.END_STREAM : 0, 1, block.subarray(off, off + 16_384)));
          }
          s.write(Buffer.concat(frames));
          // the stream is reset or the session closed; either way it is never answered
          const f = await reader.waitFor((x) => x.stream === 1 && (x.type === FrameType.RST_STREAM || x.type === FrameType.HEADERS));
          assert.notEqual(f?.type, FrameType.HEADERS, 'the oversized stream was answered');
          s.destroy();
          assert.equal(seen.includes(`${pod} ${c.path}`), false, 'the pod got the oversized request');
          await clientStillServed(good, `oversized-${c.name.replace(/\W+/g, '-')}`);
        });
      }
    });
  }
});
