// Request bodies through the proxy, to a pod on the same node and to one on another: a small
// body read whole with its head goes on with it in one write (client-h1.ts WholeBody,
// pod-h1.ts, mesh.ts); larger or chunked bodies stream through node:http. Either way the
// pod gets exactly the body the client sent, framed as it was, and nothing behind it.
// HTTP/2 bodies, requests' and answers', stream through exchange.ts flow() with
// backpressure: a pod that does not read holds the client back, a client that does not read
// holds the pod back, and the proxy buffers no more than the windows on the way allow.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer as httpServer } from 'node:http';
import { connect as h2connect, createServer as h2server, type ClientHttp2Stream, type Http2Server, type Http2Stream, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startTwoNodes, type TwoNodes } from '../helpers/two-nodes.ts';

const BLOCK = 84;

/** what the pod saw of each request: method, path, framing headers and the body's length and first bytes */
interface Seen { method: string; url: string; cl: string | undefined; te: string | undefined; length: number; head: string }

/** the pods answer with what they saw, as JSON */
function pod(seen: Seen[]): ReturnType<typeof httpServer> {
  return httpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const s: Seen = {
        method: req.method!, url: req.url!, cl: req.headers['content-length'], te: req.headers['transfer-encoding'],
        length: body.length, head: body.subarray(0, 16).toString('latin1'),
      };
      seen.push(s);
      const out = JSON.stringify(s);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
      res.end(out);
    });
  });
}

/** write `text` on the connection at once, then read until `n` answers with a Content-Length are whole */
function exchange(s: Socket, text: string | Buffer, n: number): Promise<Array<{ status: number; body: string }>> {
  return new Promise((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => reject(new Error(`no ${n} answers within 5 s: ${JSON.stringify(got.slice(0, 300))}`)), 5000);
    const parse = (): Array<{ status: number; body: string }> | undefined => {
      const out: Array<{ status: number; body: string }> = [];
      let rest = got;
      while (out.length < n) {
        const end = rest.indexOf('\r\n\r\n');
        if (end < 0) return undefined;
        const head = rest.slice(0, end);
        const len = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (rest.length < end + 4 + len) return undefined;
        out.push({ status: Number(head.split(' ')[1]), body: rest.slice(end + 4, end + 4 + len) });
        rest = rest.slice(end + 4 + len);
      }
      return out;
    };
    const onData = (d: Buffer): void => {
      got += d.toString('latin1');
      const done = parse();
      if (!done) return;
      clearTimeout(timer);
      s.off('data', onData);
      resolve(done);
    };
    s.on('data', onData);
    s.write(text);
  });
}

/** what an h2c pod read of a request body */
interface H2Seen { length: number; sha256: string }

const MiB = 1024 * 1024;
/** what the h2c pods answer to GET /big-answer */
const BIG_ANSWER = randomBytes(8 * MiB);

interface H2Pod {
  server: Http2Server;
  held: ServerHttp2Stream[];
  release(): void;
  /** bytes of BIG_ANSWER node:http2 has sent (each write's callback) */
  answerSent(): number;
}

/**
 * An h2c pod that answers each request with the length and SHA-256 of its body, as JSON.
 * A request to /hold is not read until release() is called: the pod's stream window fills
 * and stays full. GET /big-answer is answered with BIG_ANSWER, written as a well-behaved
 * server writes it (waiting for 'drain').
 */
function h2pod(): H2Pod {
  const held: ServerHttp2Stream[] = [];
  let released = false;
  let answerSent = 0;
  const answer = async (stream: ServerHttp2Stream): Promise<void> => {
    stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
    answerSent = 0;
    await writeAll(stream, BIG_ANSWER, (n) => { answerSent += n; });
  };
  const read = (stream: ServerHttp2Stream): void => {
    const hash = createHash('sha256');
    let length = 0;
    stream.on('data', (c: Buffer) => { hash.update(c); length += c.length; });
    stream.on('end', () => {
      const out = JSON.stringify({ length, sha256: hash.digest('hex') } satisfies H2Seen);
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(out);
    });
  };
  const server = h2server();
  server.on('session', (s) => s.on('error', () => {}));
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    if (headers[':path'] === '/big-answer') answer(stream).catch(() => {}); // a client gone mid-answer rejects the wait for 'drain'
    else if (headers[':path'] === '/hold' && !released) held.push(stream);
    else read(stream);
  });
  return { server, held, release: () => { released = true; for (const s of held.splice(0)) read(s); }, answerSent: () => answerSent };
}

/**
 * Write `body` on `stream` and end it, as a well-behaved sender does: 64 KiB at a time,
 * waiting for 'drain', and stopping if the stream is destroyed. `onSent` gets each chunk's
 * length once node:http2 has sent it (the write's callback).
 */
async function writeAll(stream: Http2Stream, body: Buffer, onSent: (bytes: number) => void): Promise<void> {
  const CHUNK = 64 * 1024;
  for (let off = 0; off < body.length && !stream.destroyed; off += CHUNK) {
    const chunk = body.subarray(off, off + CHUNK);
    if (!stream.write(chunk, () => onSent(chunk.length))) await once(stream, 'drain');
  }
  stream.end();
}

/** writeAll() on a client's request stream: `sent` counts what has gone, `done` resolves once all has */
function sendBody(stream: ClientHttp2Stream, body: Buffer): { sent: () => number; done: Promise<void> } {
  let sent = 0;
  const done = writeAll(stream, body, (n) => { sent += n; });
  return { sent: () => sent, done };
}

/** resolves once `read()` has not grown for `quietMs`, or after `maxMs`; the last value */
async function settled(read: () => number, quietMs: number, maxMs: number): Promise<number> {
  let last = read();
  let still = 0;
  for (let t = 0; t < maxMs && still < quietMs; t += 50) {
    await new Promise((r) => setTimeout(r, 50));
    const now = read();
    still = now === last ? still + 50 : 0;
    last = now;
  }
  return last;
}

function post(path: string, body: string, method = 'POST'): string {
  return `${method} ${path} HTTP/1.1\r\nHost: pod\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

describe('request bodies through the proxy, on this node and across the tunnel', () => {
  let mesh: TwoNodes;
  const seen: Seen[] = [];
  const h2pods = { 'h2-here': h2pod(), 'h2-there': h2pod() };

  before(async () => {
    mesh = await startTwoNodes(BLOCK, [
      { name: 'here', node: 'node-a', server: pod(seen) },
      { name: 'there', node: 'node-b', server: pod(seen) },
      { name: 'h2-here', node: 'node-a', server: h2pods['h2-here'].server },
      { name: 'h2-there', node: 'node-b', server: h2pods['h2-there'].server },
    ], {});
  });

  after(async () => {
    await mesh?.close();
  });

  for (const where of ['here', 'there'] as const) {
    it(`${where}: a small POST, a PUT and a GET pipelined in one write each reach the pod with exactly their own bodies`, async () => {
      const s = mesh.dial(mesh.ip[where]!);
      seen.length = 0;
      // a body, then a request right behind it: the body must end at its Content-Length
      const answers = await exchange(s, `${post('/one', 'hello')}${post('/two', 'x'.repeat(3000), 'PUT')}GET /three HTTP/1.1\r\nHost: pod\r\n\r\n`, 3);
      assert.deepEqual(answers.map((a) => a.status), [200, 200, 200]);
      assert.deepEqual(seen.map((x) => [x.method, x.url, x.cl, x.te, x.length, x.head]), [
        ['POST', '/one', '5', undefined, 5, 'hello'],
        ['PUT', '/two', '3000', undefined, 3000, 'x'.repeat(16)],
        ['GET', '/three', undefined, undefined, 0, ''],
      ]);
      // and the connection goes on
      const again = await exchange(s, post('/four', 'again'), 1);
      assert.equal(JSON.parse(again[0]!.body).head, 'again');
      s.destroy();
    });

    it(`${where}: bodies of 20 KiB and 200 KiB, sized or chunked, arrive byte for byte and framed as sent`, async () => {
      const s = mesh.dial(mesh.ip[where]!);
      seen.length = 0;
      const mid = 'm'.repeat(20 * 1024);
      const big = 'b'.repeat(200 * 1024);
      await exchange(s, post('/mid', mid), 1);
      await exchange(s, post('/big', big), 1);
      const chunked = 'POST /chunked HTTP/1.1\r\nHost: pod\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n';
      await exchange(s, chunked, 1);
      assert.deepEqual(seen.map((x) => [x.url, x.length, x.cl]), [
        ['/mid', mid.length, String(mid.length)],
        ['/big', big.length, String(big.length)],
        ['/chunked', 11, undefined],
      ]);
      assert.equal(seen[2]!.head, 'hello world');
      assert.equal(seen[2]!.te, 'chunked');
      s.destroy();
    });
  }

  for (const where of ['h2-here', 'h2-there'] as const) {
    it(`${where}: an 8 MiB HTTP/2 body arrives byte for byte; while the pod does not read, the client is held back`, async (t) => {
      const pod = h2pods[where];
      const session = h2connect('http://pod', { createConnection: () => mesh.dial(mesh.ip[where]!) });
      session.on('error', () => {});
      try {
        const body = randomBytes(8 * MiB);
        const stream = session.request({ ':method': 'POST', ':path': '/hold', 'content-type': 'application/octet-stream' });
        const answer = once(stream, 'response');
        const { sent, done } = sendBody(stream, body);
        // the pod holds the stream unread: what the client gets out is what the windows on
        // the way take (1 MiB to the proxy, 1 MiB on the tunnel, the pod's 64 KiB) and a
        // few buffers, never the whole body
        const took = await settled(sent, 300, 5000);
        t.diagnostic(`taken from the client while the pod held: ${(took / MiB).toFixed(2)} MiB`);
        assert.equal(pod.held.length, 1, 'the request reached the pod');
        assert.ok(took < 4 * MiB, `the proxy took ${(took / MiB).toFixed(2)} MiB of the body from the client while the pod read nothing`);
        pod.release();
        await done;
        const [headers] = await answer as [Record<string, unknown>];
        stream.setEncoding('utf8');
        let text = '';
        for await (const c of stream) text += c;
        assert.equal(headers[':status'], 200);
        assert.deepEqual(JSON.parse(text), { length: body.length, sha256: createHash('sha256').update(body).digest('hex') });
        // the session carries the next request as usual
        const next = session.request({ ':method': 'POST', ':path': '/next' });
        next.end('next');
        next.setEncoding('utf8');
        let nextText = '';
        for await (const c of next) nextText += c;
        assert.equal(JSON.parse(nextText).length, 4);
      } finally {
        session.destroy();
      }
    });

    it(`${where}: an 8 MiB HTTP/2 answer arrives byte for byte; while the client does not read, the pod is held back`, async (t) => {
      const pod = h2pods[where];
      const session = h2connect('http://pod', { createConnection: () => mesh.dial(mesh.ip[where]!) });
      session.on('error', () => {});
      try {
        const stream = session.request({ ':path': '/big-answer' });
        const [headers] = await once(stream, 'response') as [Record<string, unknown>];
        assert.equal(headers[':status'], 200);
        // the client reads nothing yet: the pod gets out what the windows on the way take
        const took = await settled(pod.answerSent, 300, 5000);
        t.diagnostic(`sent by the pod while the client held: ${(took / MiB).toFixed(2)} MiB`);
        assert.ok(took < 4 * MiB, `the proxy took ${(took / MiB).toFixed(2)} MiB of the answer from the pod while the client read nothing`);
        const chunks: Buffer[] = [];
        for await (const c of stream) chunks.push(c as Buffer);
        const got = Buffer.concat(chunks);
        assert.equal(got.length, BIG_ANSWER.length);
        assert.ok(got.equals(BIG_ANSWER), 'the answer arrived altered');
      } finally {
        session.destroy();
      }
    });
  }
});
