// HTTP/2 and gRPC requests between two nodes on pooled CONNECT streams (mesh.ts): a request
// whose whole body is here goes to a peer that says it takes them (tunnel.ts
// POOLED_H2_SETTING) as HTTP/1.1 on a stream the source keeps for the next request, and the
// destination sends it on to the pod as the HTTP/2 request it was. What a client sees must
// not change: messages, trailers, a trailers-only status, streaming answers message by
// message, a call the client cancels is cancelled at the pod (RST_STREAM CANCEL), and a
// request body that streams still arrives (on a stream of its own). A peer from before
// gets every HTTP/2 request on a request stream, as before (rolling upgrade).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import {
  connect as h2connect, constants as h2c, createServer as h2server, type ClientHttp2Session, type Http2Server, type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2';
import { after, before, describe, it } from 'node:test';
import { POOLED_H2_SETTING } from '../../agent/proxy/tunnel.ts';
import { closeServer, listen, startTwoNodes, type TwoNodes } from '../helpers/two-nodes.ts';

// 127.0.100.0–127.0.111.255: this file's own (two-nodes.ts takes four /24s per block)
const BLOCK = 100;
const OLDER_PEER_BLOCK = 104;
const PEER_BLOCK = 108;

/** a gRPC message: the 5-byte frame header and its bytes */
function grpcFrame(text: string): Buffer {
  const msg = Buffer.from(text);
  const out = Buffer.alloc(5 + msg.length);
  out.writeUInt32BE(msg.length, 1);
  msg.copy(out, 5);
  return out;
}

/** the messages in a gRPC body */
function grpcMessages(body: Buffer): string[] {
  const out: string[] = [];
  for (let at = 0; at + 5 <= body.length;) {
    const n = body.readUInt32BE(at + 1);
    out.push(body.subarray(at + 5, at + 5 + n).toString());
    at += 5 + n;
  }
  return out;
}

const GRPC_REQUEST = { ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers' };

interface Seen { path: string; method: string; headers: IncomingHttpHeaders; body: string }

/**
 * An h2c pod: gRPC methods /demo.Greeter/{Hello,Count,Join,Slow,Missing}, and plain HTTP/2
 * on /echo. `seen` has every request as the pod got it. Count answers one message, then the
 * rest once `more` resolves, so a test can tell messages come one by one. Slow never ends
 * its answer; `cancelled` gets the RST_STREAM code each Slow stream closed with.
 */
function pod(seen: Seen[], more: () => Promise<void>, cancelled: number[] = []): Http2Server {
  const server = h2server();
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => {});
    stream.on('end', () => {
      const body = Buffer.concat(chunks);
      const path = String(headers[':path']);
      seen.push({ path, method: String(headers[':method']), headers, body: body.toString('latin1') });
      const grpc = { ':status': 200, 'content-type': 'application/grpc' };
      if (path === '/demo.Greeter/Hello') {
        stream.respond(grpc, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-served-by': 'far' }));
        stream.end(grpcFrame(`hello ${grpcMessages(body)[0]}`));
      } else if (path === '/demo.Greeter/Join') {
        stream.respond(grpc, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(grpcFrame(grpcMessages(body).join('+')));
      } else if (path === '/demo.Greeter/Count') {
        stream.respond(grpc, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-count': '3' }));
        stream.write(grpcFrame('one'));
        void more().then(() => {
          stream.write(grpcFrame('two'));
          stream.end(grpcFrame('three'));
        });
      } else if (path === '/demo.Greeter/Slow') {
        // never answers: the client gives up first, and the pod is told (RST_STREAM)
        stream.respond(grpc);
        stream.write(grpcFrame('working'));
        stream.once('close', () => cancelled.push(stream.rstCode ?? -1));
      } else if (path === '/demo.Greeter/Missing') {
        // trailers-only: the status in the one HEADERS frame, which ends the stream
        stream.respond({ ...grpc, 'grpc-status': '5', 'grpc-message': 'no such greeting' }, { endStream: true });
      } else {
        stream.respond({ ':status': 200, 'content-type': 'text/plain', 'x-method': String(headers[':method']) });
        stream.end(`echo ${body.toString()}`);
      }
    });
  });
  return server;
}

interface Answer { status: number; headers: IncomingHttpHeaders; flags: number; messages: string[]; body: string; trailers: IncomingHttpHeaders }

/** one request on `session`; `write` sends its body (ends it with none) */
function call(session: ClientHttp2Session, headers: Record<string, string>, write: (s: NodeJS.WritableStream & { end(b?: Buffer | string): void }) => void,
  onMessage?: (m: string) => void): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers);
    let answer: Omit<Answer, 'messages' | 'body' | 'trailers'> | undefined;
    let trailers: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h, flags) => { answer = { status: Number(h[':status']), headers: h, flags }; });
    stream.on('trailers', (t) => { trailers = t; });
    stream.on('data', (c: Buffer) => {
      chunks.push(c);
      if (onMessage) for (const m of grpcMessages(c)) onMessage(m);
    });
    stream.on('error', reject);
    stream.on('end', () => {
      const body = Buffer.concat(chunks);
      resolve({ ...answer!, messages: grpcMessages(body), body: body.toString(), trailers });
    });
    write(stream);
  });
}

/** the client pod's connection to the pod `far` through node-a, h2c with prior knowledge, as a gRPC client keeps one */
function clientSession(mesh: TwoNodes): ClientHttp2Session {
  const session = h2connect(`http://far:${mesh.port}`, { createConnection: () => mesh.dial(mesh.ip.far!) });
  session.on('error', () => {});
  return session;
}

/** a stand-in peer's answer on a request stream: one gRPC message, grpc-status 0 */
function answerRequestStream(stream: ServerHttp2Stream, text: string): void {
  stream.on('error', () => {});
  stream.resume();
  stream.on('end', () => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end(grpcFrame(text));
  });
}

interface StandIn { mesh: TwoNodes; peer: Http2Server }

/**
 * Two nodes whose node-b proxy has given way to a stand-in tunnel server on its address,
 * `onStream` serving its streams: what node-a sends is then seen as it is on the wire
 */
async function standInPeer(block: number, onStream: (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void,
  options?: Parameters<typeof h2server>[0]): Promise<StandIn> {
  const mesh = await startTwoNodes(block, [{ name: 'far', node: 'node-b', server: pod([], () => Promise.resolve()) }], {});
  await mesh.b.close();
  const peer = h2server(options ?? {});
  peer.on('stream', onStream);
  await listen(peer, mesh.tunnelB, mesh.tunnelPort);
  return { mesh, peer };
}

/** node-a first: a server closes once its sessions have */
async function closeStandIn(s: StandIn | undefined): Promise<void> {
  await s?.mesh.close();
  if (s) await closeServer(s.peer);
}

describe('proxy: HTTP/2 and gRPC between two nodes on pooled streams', { timeout: 30_000 }, () => {
  let mesh: TwoNodes;
  let session: ClientHttp2Session;
  const seen: Seen[] = [];
  const cancelled: number[] = [];
  let release: () => void = () => {};
  let gate = new Promise<void>((r) => { release = r; });

  /** node-b's inbound connections and streams, opened so far */
  const openedB = async (): Promise<number> => {
    const m = (await mesh.registryB.getMetricsAsJSON()).find((x) => x.name === 'nodal_proxy_connections_total');
    return m?.values.find((v) => v.labels.direction === 'inbound')?.value ?? 0;
  };

  before(async () => {
    mesh = await startTwoNodes(BLOCK, [{ name: 'far', node: 'node-b', server: pod(seen, () => gate, cancelled) }], {});
    session = clientSession(mesh);
  });

  after(async () => {
    session?.destroy();
    await mesh?.close();
  });

  it('unary calls: each answers its own message with its trailers; after the first, all ride one pooled stream, and the pod gets HTTP/2 without x-nodal headers', async () => {
    const first = seen.length;
    const before = await openedB();
    const answers: Answer[] = [];
    for (let i = 0; i < 20; i++) {
      answers.push(await call(session, { ...GRPC_REQUEST, ':path': '/demo.Greeter/Hello' }, (s) => s.end(grpcFrame(`n${i}`))));
    }
    assert.deepEqual(answers.map((a) => a.messages[0]), Array.from({ length: 20 }, (_, i) => `hello n${i}`));
    for (const a of answers) {
      assert.equal(a.status, 200);
      assert.equal(a.headers['content-type'], 'application/grpc');
      assert.equal(a.trailers['grpc-status'], '0');
      assert.equal(a.trailers['x-served-by'], 'far');
    }
    // one pooled stream (node-b counts it as a connection; a request stream, as the first
    // call goes before node-a has node-b's SETTINGS, it does not)
    assert.equal(await openedB() - before, 1, '20 calls one after another: one pooled stream');
    const got = seen.slice(first);
    assert.equal(got.length, 20);
    for (const g of got) {
      assert.equal(g.method, 'POST');
      assert.equal(g.headers.te, 'trailers');
      assert.deepEqual(Object.keys(g.headers).filter((k) => k.startsWith('x-nodal-')), [], g.path);
    }
  });

  it('a trailers-only answer stays one: the client gets the pod\'s status and message in HEADERS that end the stream', async () => {
    const a = await call(session, { ...GRPC_REQUEST, ':path': '/demo.Greeter/Missing' }, (s) => s.end(grpcFrame('x')));
    assert.equal(a.headers['grpc-status'], '5');
    assert.equal(a.headers['grpc-message'], 'no such greeting');
    assert.ok((a.flags & h2c.NGHTTP2_FLAG_END_STREAM) !== 0, 'END_STREAM on the answer\'s HEADERS');
    assert.deepEqual(a.messages, []);
  });

  it('a server-streaming answer arrives message by message, then its trailers', async () => {
    const before = await openedB();
    gate = new Promise<void>((r) => { release = r; });
    // the pod sends the rest only once the client has its first message
    const a = await call(session, { ...GRPC_REQUEST, ':path': '/demo.Greeter/Count' }, (s) => s.end(grpcFrame('go')), (m) => { if (m === 'one') release(); });
    assert.deepEqual(a.messages, ['one', 'two', 'three']);
    assert.equal(a.trailers['grpc-status'], '0');
    assert.equal(a.trailers['x-count'], '3');
    assert.equal(await openedB() - before, 0, 'carried on the idle pooled stream');
  });

  it('a call the client cancels mid-answer is cancelled at the pod too, and the next call still goes through', async () => {
    const stream = session.request({ ...GRPC_REQUEST, ':path': '/demo.Greeter/Slow' });
    stream.on('error', () => {});
    stream.end(grpcFrame('x'));
    // the answer has begun: the call is in flight on the pooled stream
    await once(stream, 'data');
    stream.close(h2c.NGHTTP2_CANCEL);
    for (let i = 0; i < 200 && cancelled.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(cancelled.length, 1, 'the pod\'s stream closed');
    assert.equal(cancelled[0], h2c.NGHTTP2_CANCEL);
    const a = await call(session, { ...GRPC_REQUEST, ':path': '/demo.Greeter/Hello' }, (s) => s.end(grpcFrame('after')));
    assert.deepEqual(a.messages, ['hello after']);
  });

  it('a call whose request body streams still gets all of it to the pod', async () => {
    const before = await openedB();
    const a = await call(session, { ...GRPC_REQUEST, ':path': '/demo.Greeter/Join' }, (s) => {
      s.write(grpcFrame('a'));
      setTimeout(() => { s.write(grpcFrame('b')); s.end(grpcFrame('c')); }, 50);
    });
    assert.deepEqual(a.messages, ['a+b+c']);
    assert.equal(a.trailers['grpc-status'], '0');
    assert.equal(await openedB() - before, 0);
  });

  it('plain HTTP/2: a GET and a small POST reach the pod as HTTP/2 requests, and their answers come back', async () => {
    const first = seen.length;
    const get = await call(session, { ':method': 'GET', ':path': '/echo?q=1' }, (s) => s.end());
    assert.equal(get.status, 200);
    assert.equal(get.body, 'echo ');
    assert.equal(get.headers['x-method'], 'GET');
    const post = await call(session, { ':method': 'POST', ':path': '/echo', 'content-type': 'text/plain' }, (s) => s.end('a body'));
    assert.equal(post.body, 'echo a body');
    assert.deepEqual(seen.slice(first).map((g) => [g.method, g.path, g.body]), [['GET', '/echo?q=1', ''], ['POST', '/echo', 'a body']]);
  });
});

describe('proxy: HTTP/2 to a peer from before pooled HTTP/2 (rolling upgrade)', { timeout: 30_000 }, () => {
  let standIn: StandIn | undefined;
  let mesh: TwoNodes;
  const streams: IncomingHttpHeaders[] = [];

  before(async () => {
    // a peer that speaks the tunnel as a release from before did: request streams, and no
    // POOLED_H2_SETTING in its SETTINGS
    standIn = await standInPeer(OLDER_PEER_BLOCK, (stream, headers) => {
      streams.push(headers);
      answerRequestStream(stream, 'from an older peer');
    });
    mesh = standIn.mesh;
  });

  after(() => closeStandIn(standIn));

  it('sends every call as a request stream naming the pod and the protocol, and the client gets its answer', async () => {
    const session = clientSession(mesh);
    try {
      for (let i = 0; i < 3; i++) {
        const a = await call(session, { ...GRPC_REQUEST, ':path': '/demo.Greeter/Hello' }, (s) => s.end(grpcFrame(`n${i}`)));
        assert.deepEqual(a.messages, ['from an older peer']);
        assert.equal(a.trailers['grpc-status'], '0');
      }
    } finally {
      session.destroy();
    }
    assert.equal(streams.length, 3);
    for (const h of streams) {
      assert.equal(h[':method'], 'POST');
      assert.equal(h[':path'], '/demo.Greeter/Hello');
      assert.equal(h['x-nodal-protocol'], 'h2');
      assert.equal(h['x-nodal-destination'], `${mesh.ip.far}:${mesh.port}`);
    }
  });
});

describe('proxy: what node-a sends a peer that takes HTTP/2 on pooled streams', { timeout: 30_000 }, () => {
  let standIn: StandIn | undefined;
  let mesh: TwoNodes;
  /** request streams the stand-in got (their headers), and the HTTP/1.1 heads on its CONNECT streams */
  const requestStreams: IncomingHttpHeaders[] = [];
  const connects: IncomingHttpHeaders[] = [];
  const heads: string[] = [];
  const bodies: string[] = [];

  before(async () => {
    standIn = await standInPeer(PEER_BLOCK, (stream, headers) => {
      stream.on('error', () => {});
      if (headers[':method'] === 'CONNECT') {
        connects.push(headers);
        stream.respond({ ':status': 200 });
        // one request at a time, each with a Content-Length: answered as HTTP/1.1, chunked with trailers
        let buf = Buffer.alloc(0);
        stream.on('data', (c: Buffer) => {
          buf = Buffer.concat([buf, c]);
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const head = buf.subarray(0, end).toString('latin1');
          const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0);
          if (buf.length < end + 4 + length) return;
          heads.push(head);
          bodies.push(buf.subarray(end + 4, end + 4 + length).toString('latin1'));
          buf = buf.subarray(end + 4 + length);
          const msg = grpcFrame('pooled');
          stream.write(`HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n${msg.length.toString(16)}\r\n`);
          stream.write(msg);
          stream.write('\r\n0\r\ngrpc-status: 0\r\n\r\n');
        });
        return;
      }
      requestStreams.push(headers);
      answerRequestStream(stream, 'own stream');
    }, { settings: { customSettings: { [POOLED_H2_SETTING]: 1 } } as never });
    mesh = standIn.mesh;
  });

  after(() => closeStandIn(standIn));

  it('a unary call goes as HTTP/1.1 on a CONNECT stream, marked h2 and sized; a streamed request body gets a request stream', async () => {
    const session = clientSession(mesh);
    try {
      // before node-a has the peer's SETTINGS: a request stream
      const first = await call(session, { ...GRPC_REQUEST, ':path': '/demo.Greeter/Hello' }, (s) => s.end(grpcFrame('first')));
      assert.deepEqual(first.messages, ['own stream']);
      const pooled = await call(session, { ...GRPC_REQUEST, ':path': '/demo.Greeter/Hello' }, (s) => s.end(grpcFrame('second')));
      assert.deepEqual(pooled.messages, ['pooled']);
      assert.equal(pooled.trailers['grpc-status'], '0');
      const streamed = await call(session, { ...GRPC_REQUEST, ':path': '/demo.Greeter/Join' }, (s) => {
        s.write(grpcFrame('a'));
        setTimeout(() => s.end(grpcFrame('b')), 50);
      });
      assert.deepEqual(streamed.messages, ['own stream']);
    } finally {
      session.destroy();
    }
    assert.deepEqual(requestStreams.map((h) => [h[':method'], h[':path'], h['x-nodal-protocol']]),
      [['POST', '/demo.Greeter/Hello', 'h2'], ['POST', '/demo.Greeter/Join', 'h2']]);
    assert.equal(connects.length, 1);
    assert.equal(connects[0]!['x-nodal-protocol'], 'http1-requests');
    assert.equal(connects[0]![':authority'], `${mesh.ip.far}:${mesh.port}`);
    assert.equal(heads.length, 1);
    const lines = heads[0]!.split('\r\n');
    assert.equal(lines[0], 'POST /demo.Greeter/Hello HTTP/1.1');
    for (const want of ['x-nodal-protocol: h2', `content-length: ${grpcFrame('second').length}`, 'content-type: application/grpc', 'te: trailers']) {
      assert.ok(lines.includes(want), `${want} in ${JSON.stringify(lines)}`);
    }
    assert.equal(bodies[0], grpcFrame('second').toString('latin1'));
  });
});
