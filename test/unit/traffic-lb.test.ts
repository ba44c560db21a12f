// Load balancing: round robin, least request (P2C), peak EWMA, consistent hash, and how
// unavailable and excluded endpoints are skipped.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Balancer, hashKeyFor, type Algorithm } from '../../agent/proxy/traffic/lb.ts';

interface Ep { key: string; ip: string }
const eps = (...keys: string[]): Ep[] => keys.map((key) => ({ key, ip: `10.0.0.${key.charCodeAt(key.length - 1)}` }));

/** a seeded generator (mulberry32) so every run sees the same sequence */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function balancer(algorithm: Algorithm, opts: { random?: () => number; clock?: { t: number }; isAvailable?: (k: string) => boolean } = {}): Balancer<Ep> {
  const clock = opts.clock ?? { t: 0 };
  return new Balancer<Ep>({ algorithm, random: opts.random ?? seeded(1), now: () => clock.t, isAvailable: opts.isAvailable });
}

describe('round robin', () => {
  it('cycles through endpoints and skips unavailable and excluded ones', () => {
    const down = new Set(['b']);
    const lb = balancer('ROUND_ROBIN', { isAvailable: (k) => !down.has(k) });
    lb.update(eps('a', 'b', 'c'));
    assert.deepEqual([1, 2, 3, 4].map(() => lb.pick()?.key), ['a', 'c', 'a', 'c']);
    assert.equal(lb.pick(undefined, new Set(['a']))?.key, 'c');
    down.clear();
    assert.deepEqual([1, 2, 3].map(() => lb.pick()?.key).sort(), ['a', 'b', 'c']);
  });

  it('panics (ignores health) when every endpoint is unavailable, but never picks an excluded one', () => {
    const lb = balancer('ROUND_ROBIN', { isAvailable: () => false });
    lb.update(eps('a', 'b'));
    assert.ok(lb.pick());
    assert.equal(lb.panics, 1);
    assert.equal(lb.pick(undefined, new Set(['a']))?.key, 'b');
    assert.equal(lb.pick(undefined, new Set(['a', 'b'])), undefined);
    lb.update([]);
    assert.equal(lb.pick(), undefined);
  });
});

describe('least request (power of two choices)', () => {
  it('sends new requests to the less loaded endpoint', () => {
    const lb = balancer('LEAST_REQUEST');
    lb.update(eps('a', 'b'));
    for (let i = 0; i < 5; i++) lb.start(lb.endpoints[0]!);
    for (let i = 0; i < 20; i++) assert.equal(lb.pick()?.key, 'b');
  });

  it('spreads load evenly when requests are held open', () => {
    const lb = balancer('LEAST_REQUEST', { random: seeded(7) });
    lb.update(eps('a', 'b', 'c', 'd'));
    for (let i = 0; i < 400; i++) lb.start(lb.pick()!);
    for (const k of ['a', 'b', 'c', 'd']) {
      assert.ok(Math.abs(lb.active(k) - 100) <= 3, `${k} holds ${lb.active(k)}`);
    }
  });

  it('never picks an ejected endpoint or one this request already tried', () => {
    const lb = balancer('LEAST_REQUEST', { random: seeded(11), isAvailable: (k) => k !== 'a' });
    lb.update(eps('a', 'b', 'c', 'd'));
    const tried = new Set(['c']);
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) seen.add(lb.pick(undefined, tried)!.key);
    assert.deepEqual([...seen].sort(), ['b', 'd']);
  });

  it('keeps active counts for endpoints that survive an update, and done() releases them', () => {
    const lb = balancer('LEAST_REQUEST');
    lb.update(eps('a', 'b'));
    const r = lb.start(lb.endpoints[0]!);
    lb.update(eps('a', 'c'));
    assert.equal(lb.active('a'), 1);
    r.done({ ok: true });
    r.done({ ok: true });
    assert.equal(lb.active('a'), 0);
  });
});

describe('peak EWMA', () => {
  it('prefers the endpoint that answers faster', () => {
    const clock = { t: 0 };
    const lb = balancer('PEAK_EWMA', { clock, random: seeded(3) });
    lb.update(eps('fast', 'slow', 'mid'));
    const latency: Record<string, number> = { fast: 5, slow: 200, mid: 50 };
    const counts: Record<string, number> = { fast: 0, slow: 0, mid: 0 };
    for (let i = 0; i < 600; i++) {
      const ep = lb.pick()!;
      counts[ep.key]!++;
      clock.t += 10;
      lb.start(ep).done({ latencyMs: latency[ep.key]!, ok: true });
    }
    assert.ok(counts.fast! > counts.mid! && counts.mid! > counts.slow!, JSON.stringify(counts));
    assert.ok(counts.fast! > 300, JSON.stringify(counts));
  });

  it('reacts to a latency spike at once (peak) and forgives it as time passes (decay)', () => {
    const clock = { t: 0 };
    const lb = balancer('PEAK_EWMA', { clock });
    lb.update(eps('a', 'b'));
    const [a, b] = lb.endpoints as [Ep, Ep];
    lb.start(a).done({ latencyMs: 10, ok: true });
    lb.start(b).done({ latencyMs: 20, ok: true });
    assert.equal(lb.pick()?.key, 'a');
    lb.start(a).done({ latencyMs: 500, ok: true }); // one slow answer
    assert.equal(lb.pick()?.key, 'b');
    for (let i = 0; i < 50; i++) { clock.t += 1000; lb.start(a).done({ latencyMs: 10, ok: true }); lb.start(b).done({ latencyMs: 20, ok: true }); }
    assert.equal(lb.pick()?.key, 'a');
  });

  it('counts outstanding requests: a fast endpoint with many in flight loses to an idle one', () => {
    const lb = balancer('PEAK_EWMA');
    lb.update(eps('a', 'b'));
    const [a, b] = lb.endpoints as [Ep, Ep];
    lb.start(a).done({ latencyMs: 10, ok: true });
    lb.start(b).done({ latencyMs: 30, ok: true });
    for (let i = 0; i < 5; i++) lb.start(a);
    assert.equal(lb.pick()?.key, 'b');
  });
});

describe('consistent hash', () => {
  const keys = Array.from({ length: 2000 }, (_, i) => `user-${i}`);
  const assign = (lb: Balancer<Ep>) => new Map(keys.map((k) => [k, lb.pick({ hashKey: k })!.key]));

  it('sends the same key to the same endpoint and spreads keys roughly evenly', () => {
    const lb = balancer('CONSISTENT_HASH');
    lb.update(eps('a', 'b', 'c', 'd'));
    const first = assign(lb);
    assert.deepEqual(assign(lb), first);
    const per = new Map<string, number>();
    for (const v of first.values()) per.set(v, (per.get(v) ?? 0) + 1);
    for (const [k, n] of per) assert.ok(n > 350 && n < 650, `${k} got ${n} of 2000`);
  });

  it('moves only the keys of a removed endpoint, and only keys to an added one', () => {
    const lb = balancer('CONSISTENT_HASH');
    lb.update(eps('a', 'b', 'c', 'd'));
    const before = assign(lb);
    lb.update(eps('a', 'b', 'c', 'd', 'e'));
    const added = assign(lb);
    let moved = 0;
    for (const k of keys) {
      if (added.get(k) === before.get(k)) continue;
      moved++;
      assert.equal(added.get(k), 'e', `${k} moved between old endpoints`);
    }
    assert.ok(moved > 250 && moved < 600, `moved ${moved} of 2000 (ideal 400)`);
    lb.update(eps('a', 'c', 'd', 'e'));
    const removed = assign(lb);
    for (const k of keys) if (added.get(k) !== 'b') assert.equal(removed.get(k), added.get(k));
  });

  it('does not depend on the order endpoints are listed in', () => {
    const x = balancer('CONSISTENT_HASH'), y = balancer('CONSISTENT_HASH');
    x.update(eps('a', 'b', 'c'));
    y.update(eps('c', 'a', 'b'));
    const before = assign(x);
    assert.deepEqual(assign(y), before);
    x.update(eps('b', 'c', 'a')); // a snapshot that reorders the same endpoints
    assert.deepEqual(assign(x), before);
  });

  it('walks past an ejected endpoint and returns its keys when it comes back', () => {
    const down = new Set<string>();
    const lb = balancer('CONSISTENT_HASH', { isAvailable: (k) => !down.has(k) });
    lb.update(eps('a', 'b', 'c'));
    const before = assign(lb);
    down.add('a');
    const during = assign(lb);
    for (const k of keys) {
      if (before.get(k) === 'a') assert.notEqual(during.get(k), 'a');
      else assert.equal(during.get(k), before.get(k));
    }
    down.clear();
    assert.deepEqual(assign(lb), before);
  });

  it('takes the key from a header, cookie, query parameter or source IP', () => {
    const req = { headers: { 'x-user': 'u1', cookie: 'a=1; session=s9; b=2' }, path: '/x?tenant=t3&y=1', sourceIp: '10.1.2.3' };
    assert.equal(hashKeyFor({ header: 'X-User' }, req), 'u1');
    assert.equal(hashKeyFor({ cookie: 'session' }, req), 's9');
    assert.equal(hashKeyFor({ queryParameter: 'tenant' }, req), 't3');
    assert.equal(hashKeyFor({ sourceIP: true }, req), '10.1.2.3');
    assert.equal(hashKeyFor({ cookie: 'missing' }, req), undefined);
  });
});
