// The fuzz targets of test/fuzz/, run for a bounded time in the unit layer so that CI runs
// them on every change. NODAL_FUZZ_MS (default 15000) is split between the targets;
// NODAL_FUZZ_SEED replays a run (the seed is printed either way, and in every failure).
import { describe, it } from 'node:test';
import { budget } from '../fuzz/random.ts';
import { fuzzParsers } from '../fuzz/parsers.fuzz.ts';
import { fuzzHttp1 } from '../fuzz/http1.fuzz.ts';

/** the 127.0.N.x block of the HTTP/1.1 target's two nodes, apart from the other proxy tests */
const BLOCK = 70;

describe('fuzz', () => {
  const b = budget(15_000, 1_000_000);
  const share = (part: number): number => Math.round(b.ms * part);

  it('the proxy\'s own parsers: parseAuthority, parseTraceparent, classify', (t) => {
    const r = fuzzParsers({ ...b, ms: share(0.2) });
    t.diagnostic(`seed ${b.seed}: ${r.iterations} inputs`);
  });

  it('HTTP/1.1 through the proxy, same node and cross node', { timeout: share(0.8) + 60_000 }, async (t) => {
    const r = await fuzzHttp1({ ...b, ms: share(0.8) }, BLOCK);
    t.diagnostic(`seed ${b.seed}: ${r.iterations} inputs ${JSON.stringify(r.outcomes)}`);
  });
});
