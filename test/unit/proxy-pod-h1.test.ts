// The lean pod client (agent/proxy/pod-h1.ts): a request's body goes with its head, and a
// pod that closes a keep-alive connection as a request arrives on it (the race every
// keep-alive client meets when a pod's idle timeout fires) gets an idempotent request it
// never answered once more, on a new connection; anything else is the client's answer.
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Readable } from 'node:stream';
import { WholeBody, type RequestHead } from '../../agent/proxy/exchange.ts';
import { LeanPodClient, UpstreamError, type WholeAnswer } from '../../agent/proxy/pod-h1.ts';
import { leanBody } from '../../agent/proxy/pods.ts';

const POD_IP = '127.0.33.1';

/**
 * What the pod does with a request, by its number on its connection (1 = the first):
 * answer it, close the connection without a byte, or send half a status line and close
 */
type Act = 'answer' | 'drop' | 'half';

describe('lean pod client: a kept connection the pod closed as the request went out', () => {
  let server: Server;
  let port = 0;
  let act: (nth: number) => Act = () => 'answer';
  /** connections the pod accepted, and the requests it read, in order */
  let connections = 0;
  let requests: string[] = [];
  const sockets = new Set<Socket>();
  const client = new LeanPodClient('127.0.0.1', 64, () => {});

  before(async () => {
    server = createServer((s) => {
      connections++;
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
      let buffered = '';
      let nth = 0;
      s.on('data', (d: Buffer) => {
        buffered += d.toString('latin1');
        for (let end = buffered.indexOf('\r\n\r\n'); end >= 0; end = buffered.indexOf('\r\n\r\n')) {
          const head = buffered.slice(0, end);
          const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0);
          if (buffered.length < end + 4 + length) return; // the body is still coming
          const line = head.slice(0, head.indexOf('\r\n'));
          const body = buffered.slice(end + 4, end + 4 + length);
          buffered = buffered.slice(end + 4 + length);
          requests.push(length > 0 ? `${line} ${body}` : line);
          const what = act(++nth);
          if (what === 'drop') {
            s.destroy();
            return;
          }
          if (what === 'half') {
            s.end('HTTP/1.1 2');
            return;
          }
          s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${line.length}\r\nconnection: keep-alive\r\n\r\n${line}`);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, POD_IP, resolve));
    port = (server.address() as { port: number }).port;
  });

  beforeEach(() => {
    // every test starts with no kept connection: the first request opens one
    client.close();
    for (const s of sockets) s.destroy();
    connections = 0;
    requests = [];
    act = () => 'answer';
  });

  after(async () => {
    client.close();
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** one request, without a body or with `body` whole: the status and body, or the error */
  function send(method: string, path: string, body?: string): Promise<{ status: number; body: string } | UpstreamError> {
    const headers: Record<string, string> = body === undefined ? {} : { 'content-length': String(Buffer.byteLength(body)) };
    return new Promise((resolve) => {
      client.send(POD_IP, port, { method, path, authority: 'pod', headers, protocol: 'http1' }, body === undefined ? undefined : Buffer.from(body), '',
        new AbortController().signal,
        (res: IncomingMessage | WholeAnswer) => {
          if ('body' in res && Buffer.isBuffer(res.body)) {
            resolve({ status: res.status, body: res.body.toString() });
            return;
          }
          const m = res as IncomingMessage;
          const chunks: Buffer[] = [];
          m.on('data', (c: Buffer) => chunks.push(c));
          m.on('end', () => resolve({ status: m.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        },
        (err) => resolve(err));
    });
  }

  it('an idempotent request the pod dropped on a kept connection is sent once more, on a new one, and answered', async () => {
    assert.deepEqual(await send('GET', '/one'), { status: 200, body: 'GET /one HTTP/1.1' });
    // the kept connection's next request is dropped; a new connection's first is answered
    act = (nth) => (nth === 2 ? 'drop' : 'answer');
    assert.deepEqual(await send('GET', '/two'), { status: 200, body: 'GET /two HTTP/1.1' });
    assert.equal(connections, 2);
    assert.deepEqual(requests, ['GET /one HTTP/1.1', 'GET /two HTTP/1.1', 'GET /two HTTP/1.1']);
    // and the new connection is kept for the next
    act = () => 'answer';
    assert.deepEqual(await send('DELETE', '/three'), { status: 200, body: 'DELETE /three HTTP/1.1' });
    assert.equal(connections, 2);
  });

  it('a body goes with its head, framed by its Content-Length, and a PUT\'s body goes again with its replay', async () => {
    assert.deepEqual(await send('POST', '/order', 'one item'), { status: 200, body: 'POST /order HTTP/1.1' });
    // small and larger than one string write (pod-h1.ts ONE_STRING_MAX)
    const big = 'b'.repeat(5000);
    assert.deepEqual(await send('PUT', '/big', big), { status: 200, body: 'PUT /big HTTP/1.1' });
    act = (nth) => (nth === 3 ? 'drop' : 'answer');
    assert.deepEqual(await send('PUT', '/item', 'state'), { status: 200, body: 'PUT /item HTTP/1.1' });
    assert.deepEqual(requests, ['POST /order HTTP/1.1 one item', `PUT /big HTTP/1.1 ${big}`, 'PUT /item HTTP/1.1 state', 'PUT /item HTTP/1.1 state']);
    assert.equal(connections, 2);
  });

  it('a POST is never sent twice: the pod may have acted on it', async () => {
    await send('GET', '/one');
    act = (nth) => (nth === 2 ? 'drop' : 'answer');
    const r = await send('POST', '/order');
    assert.ok(r instanceof UpstreamError, 'the client hears the failure');
    assert.equal(r.kind, 'reset');
    assert.deepEqual(requests, ['GET /one HTTP/1.1', 'POST /order HTTP/1.1']);
    assert.equal(connections, 1);
  });

  it('a new connection closed before its answer is the answer: the pod is failing, not racing an idle timeout', async () => {
    act = () => 'drop';
    const r = await send('GET', '/first');
    assert.ok(r instanceof UpstreamError);
    assert.equal(r.kind, 'reset');
    assert.equal(connections, 1);
    assert.equal(requests.length, 1);
  });

  it('an answer that began and was cut off is not replayed', async () => {
    await send('GET', '/one');
    act = (nth) => (nth === 2 ? 'half' : 'answer');
    const r = await send('GET', '/two');
    assert.ok(r instanceof UpstreamError);
    assert.equal(connections, 1);
    assert.deepEqual(requests, ['GET /one HTTP/1.1', 'GET /two HTTP/1.1']);
  });

  it('once only: when the new connection drops it too, the client hears the failure', async () => {
    await send('GET', '/one');
    act = (nth) => (nth === 1 && connections === 1 ? 'answer' : 'drop');
    const r = await send('GET', '/two');
    assert.ok(r instanceof UpstreamError);
    assert.equal(r.kind, 'reset');
    assert.equal(connections, 2);
    assert.deepEqual(requests, ['GET /one HTTP/1.1', 'GET /two HTTP/1.1', 'GET /two HTTP/1.1']);
  });
});

describe('leanBody: what a lean client may send with the head', () => {
  const head = (headers: Record<string, string>): RequestHead => ({ method: 'POST', path: '/', authority: 'pod', headers, protocol: 'http1' });

  it('a whole body goes only when the head\'s Content-Length frames exactly it; node:http frames anything else', () => {
    const body = (): WholeBody => new WholeBody(Buffer.from('hello'));
    assert.equal(leanBody(head({ 'content-length': '5' }), body())?.toString(), 'hello');
    // a client's "Connection: content-length" drops the length from the head: sent bare,
    // the body would be read by the pod as the next request
    assert.equal(leanBody(head({}), body()), undefined);
    assert.equal(leanBody(head({ 'content-length': '4' }), body()), undefined);
    assert.equal(leanBody(head({ 'content-length': '05' }), body())?.length, 5, 'the number, not its spelling');
    // a stream that ended with nothing in it is no body at all
    const ended = new Readable({ read() {} });
    ended.push(null);
    ended.resume();
    return new Promise<void>((resolve) => ended.once('end', () => {
      assert.equal(leanBody(head({}), ended)?.length, 0);
      assert.equal(leanBody(head({}), new Readable({ read() {} })), undefined, 'a body still to come is node:http\'s');
      resolve();
    }));
  });
});
