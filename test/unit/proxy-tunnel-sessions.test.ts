// A tunnel session carries at most the peer's SETTINGS_MAX_CONCURRENT_STREAMS at once, and
// nghttp2 holds any stream beyond that, unsent, until an open one ends. Connections between
// two nodes beyond that limit must not wait on each other: the source proxy opens another
// session to the peer (tunnel.ts TunnelPool). And the pooled streams a burst opened do not
// all stay open afterwards: idle ones are bounded per peer (mesh.ts, tunnelIdleStreamsPerPeer),
// in the lean pool and in node's agent (large bodies) alike.
import assert from 'node:assert/strict';
import { createServer as httpServer } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { httpGet, httpSend, startTwoNodes, type TwoNodes } from '../helpers/two-nodes.ts';

const BLOCK = 80;
/** streams per session, as node-b advertises it and node-a holds to */
const STREAMS = 2;
/** idle pooled streams node-a keeps to node-b, over all its pools */
const IDLE_PER_PEER = 2;

/** the first `text.length` bytes the socket reads back, or an error after `ms` */
function echoed(s: Socket, text: string, ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => reject(new Error(`no echo of ${JSON.stringify(text)} within ${ms} ms (got ${JSON.stringify(got)})`)), ms);
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.length >= text.length) {
        clearTimeout(timer);
        resolve(got);
      }
    });
    s.write(text);
  });
}

describe('tunnel sessions: more connections between two nodes than one session carries, and the idle streams a burst leaves', () => {
  let mesh: TwoNodes;

  before(async () => {
    const echo = createServer((s) => { s.on('error', () => {}); s.pipe(s); });
    // answers a little late, so that requests sent together are in flight together
    const web = httpServer((req, res) => { setTimeout(() => res.end(`web ${req.url}`), 50); });
    mesh = await startTwoNodes(BLOCK, [{ name: 'echo', node: 'node-b', server: echo }, { name: 'web', node: 'node-b', server: web }],
      { tunnelMaxStreams: STREAMS, tunnelIdleStreamsPerPeer: IDLE_PER_PEER });
  });

  after(async () => {
    await mesh?.close();
  });

  it(`${STREAMS * 2 + 1} long-lived connections at once, ${STREAMS} streams per session: each is carried at once`, async () => {
    const conns = Array.from({ length: STREAMS * 2 + 1 }, () => mesh.dial(mesh.ip.echo!));
    // all open together: none ends before the last has been echoed
    const got = await Promise.all(conns.map((s, i) => echoed(s, `ping ${i}\n`, 3000)));
    assert.deepEqual(got, conns.map((_, i) => `ping ${i}\n`));
    // and each still carries data both ways
    const again = await Promise.all(conns.map((s, i) => echoed(s, `pong ${i}\n`, 3000)));
    assert.deepEqual(again, conns.map((_, i) => `pong ${i}\n`));
    for (const s of conns) s.destroy();
  });

  /** node-b's open inbound connections and streams */
  const openAtB = async (): Promise<number> => {
    const m = (await mesh.registryB.getMetricsAsJSON()).find((x) => x.name === 'nodal_proxy_active_connections');
    return m?.values.find((v) => v.labels.direction === 'inbound')?.value ?? 0;
  };

  it(`requests that ran together leave at most ${IDLE_PER_PEER} idle pooled streams to the peer, however many they opened`, async () => {
    // the echo test's streams are gone first
    for (let i = 0; i < 100 && await openAtB() > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(await openAtB(), 0);
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => httpGet(() => mesh.dial(mesh.ip.web!), `/burst-${i}`)));
    assert.deepEqual(answers.map((a) => a.body), answers.map((_, i) => `web /burst-${i}`));
    // six streams were open at once; the ones beyond the bound close as their answers end
    for (let i = 0; i < 100 && await openAtB() > IDLE_PER_PEER; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(await openAtB(), IDLE_PER_PEER);
    // and the kept ones carry the next requests
    const next = await Promise.all([0, 1].map((i) => httpGet(() => mesh.dial(mesh.ip.web!), `/next-${i}`)));
    assert.deepEqual(next.map((a) => a.body), ['web /next-0', 'web /next-1']);
    assert.equal(await openAtB(), IDLE_PER_PEER);
  });

  it(`so do requests with large bodies (node's agent, not the lean pool): at most ${IDLE_PER_PEER} more idle streams`, async () => {
    // the lean pool's idle streams from the test before stay; the agent keeps its own
    const lean = await openAtB();
    const body = 'x'.repeat(20 * 1024);
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => httpSend(() => mesh.dial(mesh.ip.web!), 'POST', `/large-${i}`, body)));
    assert.deepEqual(answers.map((a) => a.body), answers.map((_, i) => `web /large-${i}`));
    for (let i = 0; i < 100 && await openAtB() > lean + IDLE_PER_PEER; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(await openAtB(), lean + IDLE_PER_PEER);
    // the kept ones carry the next large bodies without opening more
    const next = await Promise.all([0, 1].map((i) => httpSend(() => mesh.dial(mesh.ip.web!), 'POST', `/again-${i}`, body)));
    assert.deepEqual(next.map((a) => a.body), ['web /again-0', 'web /again-1']);
    assert.equal(await openAtB(), lean + IDLE_PER_PEER);
  });
});
