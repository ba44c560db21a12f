// bench/helpers/header-strings.ts, one cell of bench/h2-headers.ts: docs/benchmarks.md's
// claim that node:http2 leaves each received header value in old space rests on its
// measurement, which only means something if no GC ran while old space was read. A cell
// that cannot keep GCs out must fail, not report a figure that promotion inflated.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import type { HeaderStringsResult } from '../../bench/helpers/header-strings.ts';

const HELPER = fileURLToPath(new URL('../../bench/helpers/header-strings.js', import.meta.url));
const BIG_YOUNG = ['--expose-gc', '--max-semi-space-size=256', '--min-semi-space-size=256'];

async function run(flags: string[], args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, [...flags, HELPER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const [code] = await once(child, 'exit') as [number | null];
  return { code, out, err };
}

describe('bench header-strings cell', () => {
  it('reports old-space bytes per request and a timed full GC for each protocol', async () => {
    for (const protocol of ['h2', 'http1'] as const) {
      const r = await run(BIG_YOUNG, [protocol, '4', '300', '300']);
      assert.equal(r.code, 0, r.err);
      const result = JSON.parse(r.out) as HeaderStringsResult;
      assert.equal(result.protocol, protocol);
      assert.equal(result.extra, 4);
      assert.equal(result.requests, 300);
      assert.equal(result.gcRequests, 300);
      assert.ok(Number.isFinite(result.oldBytesPerRequest), r.out);
      assert.ok(result.fullGcMs > 0, r.out);
    }
  });

  it('fails, naming the cause, when a GC runs while old space is measured', async () => {
    // a 1 MB young generation fills within the measured requests
    const r = await run(['--expose-gc', '--max-semi-space-size=1'], ['h2', '4', '3000', '10']);
    assert.equal(r.code, 1);
    assert.equal(r.out, '');
    assert.match(r.err, /GC\(s\) ran while old space was measured/);
  });

  it('refuses to run without --expose-gc or with an unknown protocol', async () => {
    const noGc = await run([], ['h2', '0']);
    assert.notEqual(noGc.code, 0);
    assert.match(noGc.err, /run with --expose-gc/);
    const bad = await run(BIG_YOUNG, ['h3', '0']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.err, /usage: header-strings\.js <h2\|http1>/);
  });
});
