// A tunnel session carries at most the peer's SETTINGS_MAX_CONCURRENT_STREAMS at once, and
// nghttp2 holds any stream beyond that, unsent, until an open one ends. Connections between
// two nodes beyond that limit must not wait on each other: the source proxy opens another
// session to the peer (tunnel.ts TunnelPool).
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startTwoNodes, type TwoNodes } from '../helpers/two-nodes.ts';

const BLOCK = 80;
/** streams per session, as node-b advertises it and node-a holds to */
const STREAMS = 2;

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

describe('tunnel sessions: more connections between two nodes than one session carries', () => {
  let mesh: TwoNodes;

  before(async () => {
    const echo = createServer((s) => { s.on('error', () => {}); s.pipe(s); });
    mesh = await startTwoNodes(BLOCK, [{ name: 'echo', node: 'node-b', server: echo }], { tunnelMaxStreams: STREAMS });
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
});
