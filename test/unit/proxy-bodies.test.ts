// Request bodies through the proxy, to a pod on the same node and to one on another: a small
// body read whole with its head goes on with it in one write (client-h1.ts WholeBody,
// pod-h1.ts, mesh.ts); larger or chunked bodies stream through node:http. Either way the
// pod gets exactly the body the client sent, framed as it was, and nothing behind it.
import assert from 'node:assert/strict';
import { createServer as httpServer } from 'node:http';
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

function post(path: string, body: string, method = 'POST'): string {
  return `${method} ${path} HTTP/1.1\r\nHost: pod\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

describe('request bodies through the proxy, on this node and across the tunnel', () => {
  let mesh: TwoNodes;
  const seen: Seen[] = [];

  before(async () => {
    mesh = await startTwoNodes(BLOCK, [
      { name: 'here', node: 'node-a', server: pod(seen) },
      { name: 'there', node: 'node-b', server: pod(seen) },
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
});
