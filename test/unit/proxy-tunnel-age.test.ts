// A pooled tunnel stream carries one source check: the destination's when the stream opened
// (and, on a destination of this version, again at each snapshot). The source retires a
// stream once it is tunnelStreamMaxAgeMs old, however busy it is, so no check covers more than
// that on a destination of any version (mesh.ts; the lean pool for small requests, node's
// agent for large bodies).
import assert from 'node:assert/strict';
import { createServer as httpServer } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { httpSend as send, startTwoNodes, type TwoNodes } from '../helpers/two-nodes.ts';

const BLOCK = 88;
const MAX_AGE_MS = 400;
/** over 8 KiB: node's agent carries it, not the lean pool */
const LARGE = 'x'.repeat(20 * 1024);

describe(`tunnel streams are retired at ${MAX_AGE_MS} ms of age (tunnelStreamMaxAgeMs), idle or busy`, () => {
  let mesh: TwoNodes;

  before(async () => {
    // answers with the method, path and body length it got
    const web = httpServer((req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => { n += c.length; });
      req.on('end', () => res.end(`${req.method} ${req.url} ${n}`));
    });
    mesh = await startTwoNodes(BLOCK, [{ name: 'web', node: 'node-b', server: web }], { tunnelStreamMaxAgeMs: MAX_AGE_MS });
  });

  after(async () => {
    await mesh?.close();
  });

  /** streams node-b has accepted from node-a so far */
  const opened = async (): Promise<number> => {
    const m = (await mesh.registryB.getMetricsAsJSON()).find((x) => x.name === 'nodal_proxy_connections_total');
    return m?.values.find((v) => v.labels.direction === 'inbound')?.value ?? 0;
  };
  const get = (path: string): Promise<{ status: number; body: string }> => send(() => mesh.dial(mesh.ip.web!), 'GET', path);

  it('an idle stream past its age is not taken again: the next request opens another', async () => {
    const before = await opened();
    assert.deepEqual(await get('/one'), { status: 200, body: 'GET /one 0' });
    assert.deepEqual(await get('/two'), { status: 200, body: 'GET /two 0' });
    assert.equal(await opened(), before + 1, 'the second request reuses the first one\'s stream');
    await sleep(MAX_AGE_MS + 100);
    assert.deepEqual(await get('/three'), { status: 200, body: 'GET /three 0' });
    assert.equal(await opened(), before + 2);
  });

  it('a stream that never idles is retired too, between two requests, none of which fails', async () => {
    const before = await opened();
    const started = Date.now();
    const answers: string[] = [];
    // one request after another for 2.5 ages: the stream is never idle long
    for (let i = 0; Date.now() - started < MAX_AGE_MS * 2.5; i++) answers.push((await get(`/busy-${i}`)).body);
    assert.ok(answers.length > 10, `only ${answers.length} requests were made`);
    assert.deepEqual(answers, answers.map((_, i) => `GET /busy-${i} 0`));
    // no stream lives past its age: two retirements at least in 2.5 ages, each opening
    // another; and far fewer streams than requests
    const n = await opened() - before;
    assert.ok(n >= 2 && n < answers.length / 4, `${n} streams opened for ${answers.length} requests`);
  });

  it('a large body\'s stream (node\'s agent) carries one more request past its age, then is retired', async () => {
    const first = await send(() => mesh.dial(mesh.ip.web!), 'POST', '/large-1', LARGE);
    assert.deepEqual(first, { status: 200, body: `POST /large-1 ${LARGE.length}` });
    const before = await opened();
    assert.deepEqual(await send(() => mesh.dial(mesh.ip.web!), 'POST', '/large-2', LARGE), { status: 200, body: `POST /large-2 ${LARGE.length}` });
    assert.equal(await opened(), before, 'a young stream is reused');
    await sleep(MAX_AGE_MS + 100);
    assert.deepEqual(await send(() => mesh.dial(mesh.ip.web!), 'POST', '/large-3', LARGE), { status: 200, body: `POST /large-3 ${LARGE.length}` });
    assert.deepEqual(await send(() => mesh.dial(mesh.ip.web!), 'POST', '/large-4', LARGE), { status: 200, body: `POST /large-4 ${LARGE.length}` });
    assert.equal(await opened(), before + 1, 'the old stream carried /large-3, its last; /large-4 opened another');
  });
});
