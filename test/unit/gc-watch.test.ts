// A proxy thread's GC pauses (agent/proxy/gc.ts): what nodal_proxy_gc_pause_seconds
// exports per worker and kind, and the tally the bench reads per run. The collections are
// forced with V8's gc() (exposed here through a flag set at run time, in this test file's
// own process), so each kind is known to have happened.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Registry } from 'prom-client';
import { GcWatch, type GcTally } from '../../agent/proxy/gc.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as (o?: { type: 'minor' | 'major' }) => void;

/** perf_hooks hands GC entries over after the pause: wait (bounded) until `done` */
async function settle(w: GcWatch, done: (t: GcTally) => boolean): Promise<GcTally> {
  const seen: GcTally = { count: { minor: 0, major: 0, incremental: 0, weakcb: 0 }, longestMs: 0, pausedMs: 0 };
  for (let i = 0; i < 200; i++) {
    await new Promise((r) => setTimeout(r, 5));
    const t = w.take();
    for (const k of Object.keys(t.count) as Array<keyof GcTally['count']>) seen.count[k] += t.count[k];
    seen.pausedMs += t.pausedMs;
    seen.longestMs = Math.max(seen.longestMs, t.longestMs);
    if (done(seen)) return seen;
  }
  return seen;
}

async function series(registry: Registry): Promise<Map<string, number>> {
  const m = await registry.getSingleMetric('nodal_proxy_gc_pause_seconds')!.get();
  return new Map((m.values as Array<{ metricName?: string; labels: Record<string, unknown>; value: number }>)
    .filter((v) => v.metricName === 'nodal_proxy_gc_pause_seconds_count')
    .map((v) => [`${String(v.labels.worker)}/${String(v.labels.kind)}`, v.value]));
}

describe('GcWatch: the proxy thread\'s GC pauses', () => {
  const watches: GcWatch[] = [];
  after(() => { for (const w of watches) w.stop(); });
  /** a watch for `worker` on a registry of its own, stopped after the suite */
  const watch = (worker: string): { registry: Registry; w: GcWatch } => {
    const registry = new Registry();
    const w = new GcWatch(registry, worker);
    watches.push(w);
    return { registry, w };
  };

  it('counts a full collection as major, with its pause, in the tally and the worker\'s histogram', async () => {
    const { registry, w } = watch('3');
    gc({ type: 'major' });
    const t = await settle(w, (s) => s.count.major >= 1);
    assert.ok(t.count.major >= 1, `a full GC was seen: ${JSON.stringify(t)}`);
    assert.ok(t.longestMs > 0 && t.pausedMs >= t.longestMs, `its pause is measured: ${JSON.stringify(t)}`);
    const s = await series(registry);
    assert.ok((s.get('3/major') ?? 0) >= 1, `nodal_proxy_gc_pause_seconds_count{worker="3",kind="major"}: ${JSON.stringify([...s])}`);
    const text = await registry.metrics();
    assert.match(text, /^nodal_proxy_gc_pause_seconds_bucket\{le="0\.0005",worker="3",kind="major"\} \d+$/m, 'buckets from 0.5 ms');
    assert.match(text, /^nodal_proxy_gc_pause_seconds_bucket\{le="1",worker="3",kind="major"\} [1-9]\d*$/m, 'and up to 1 s');
  });

  it('counts a young-generation collection as minor', async () => {
    const { registry, w } = watch('0');
    gc({ type: 'minor' });
    const t = await settle(w, (s) => s.count.minor >= 1);
    assert.ok(t.count.minor >= 1, `a young GC was seen: ${JSON.stringify(t)}`);
    assert.ok(((await series(registry)).get('0/minor') ?? 0) >= 1);
  });

  it('take() hands over what happened since the last take(): a run\'s pauses are its own', async () => {
    const { w } = watch('1');
    gc({ type: 'major' });
    const first = await settle(w, (s) => s.count.major >= 1);
    assert.ok(first.count.major >= 1);
    // nothing forced since: a later take() does not count the first full GC again
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(w.take().count.major, 0);
  });

  it('stops counting after stop()', async () => {
    const registry = new Registry();
    const w = new GcWatch(registry, '2');
    w.stop();
    gc({ type: 'major' });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(w.take().count.major, 0);
    assert.equal((await series(registry)).size, 0, 'no series after stop()');
  });
});
