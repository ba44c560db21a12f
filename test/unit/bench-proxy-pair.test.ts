// bench/helpers/proxy-pair.ts, the process bench/proxy.ts pins and measures: its line
// commands. `gc` is what marks each evenly spaced round in docs/benchmarks.md with nodal's
// longest GC pause and its full GCs, so it must count a full GC that happened (`mem`
// forces one) in the answer after it, and not again in the next.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Topology } from '../../bench/helpers/proxy-pair.ts';
import type { GcTally } from '../../agent/proxy/index.ts';
import { freePort } from '../helpers/ports.ts';

const PAIR = fileURLToPath(new URL('../../bench/helpers/proxy-pair.js', import.meta.url));

describe('bench proxy pair', () => {
  it('answers gc with the pauses since the last gc: a forced full GC, then not again', async () => {
    const topo: Topology = {
      tunnelPort: await freePort(),
      outboundPort: await freePort(),
      nodes: [
        { name: 'node-a', tunnelIp: '127.0.77.1', outboundIp: '127.0.78.1', upstreamBindIp: '127.0.79.1' },
        { name: 'node-b', tunnelIp: '127.0.77.2', outboundIp: '127.0.78.2', upstreamBindIp: '127.0.79.2' },
      ],
      services: [],
    };
    const child = spawn(process.execPath, ['--expose-gc', PAIR, JSON.stringify(topo)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const next = async (): Promise<string> => {
      const r = await lines.next();
      assert.ok(!r.done, `the pair exited: ${stderr}`);
      return r.value;
    };
    const ask = async (cmd: string): Promise<string> => {
      child.stdin.write(`${cmd}\n`);
      return next();
    };
    try {
      assert.equal((JSON.parse(await next()) as { ready?: boolean }).ready, true);
      await ask('gc'); // start-up's pauses
      const mem = JSON.parse(await ask('mem')) as { heapUsed?: number };
      assert.ok((mem.heapUsed ?? 0) > 0, 'mem: process.memoryUsage() after a full GC');
      // perf_hooks hands a GC over after its pause: ask again (bounded) until it is there
      let full = 0;
      let longest = 0;
      for (let i = 0; i < 50 && full === 0; i++) {
        const t = JSON.parse(await ask('gc')) as GcTally;
        full += t.count.major;
        longest = Math.max(longest, t.longestMs);
        if (full === 0) await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(full >= 1, 'the forced full GC is counted');
      assert.ok(longest > 0, 'with its pause');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal((JSON.parse(await ask('gc')) as GcTally).count.major, 0, 'not counted again');
      assert.match(await ask('nonsense'), /unknown command/);
    } finally {
      const exited = once(child, 'exit');
      child.stdin.end(); // the pair exits when stdin ends
      const [code] = await exited as [number | null];
      assert.equal(code, 0, stderr);
    }
  });
});
