// Passive outlier detection: consecutive 5xx / gateway errors, ejection time growing with
// repeat offences, the max-ejection-percent cap, and return when the time is up.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { OutlierDetector, MAX_EJECTION_MS, type OutlierConfig, type OutlierEvent } from '../../agent/proxy/traffic/outlier.ts';

function detector(cfg: Partial<OutlierConfig>, keys = ['a', 'b', 'c', 'd']) {
  const clock = { t: 1_000 };
  const events: OutlierEvent[] = [];
  const d = new OutlierDetector(
    { consecutive5xxErrors: 5, intervalMs: 10_000, baseEjectionMs: 30_000, maxEjectionPercent: 100, ...cfg },
    { now: () => clock.t, onEvent: (e) => events.push(e) },
  );
  d.update(keys);
  return { d, clock, events };
}

function lastDuration(events: OutlierEvent[]): number | undefined {
  const e = events.at(-1);
  return e?.type === 'ejected' ? e.durationMs : undefined;
}

const fail = (d: OutlierDetector, key: string, n: number, status = 500) => { for (let i = 0; i < n; i++) d.report(key, { status }); };

describe('outlier detection', () => {
  it('ejects after N consecutive 5xx and a success in between resets the count', () => {
    const { d, events } = detector({});
    fail(d, 'a', 4);
    d.report('a', { status: 200 });
    fail(d, 'a', 4);
    assert.equal(d.isEjected('a'), false);
    fail(d, 'a', 1);
    assert.equal(d.isEjected('a'), true);
    assert.deepEqual(events, [{ type: 'ejected', key: 'a', reason: 'consecutive5xx', durationMs: 30_000, times: 1 }]);
  });

  it('counts connect failures and 502/503/504 as gateway errors; a 500 breaks that run', () => {
    const { d, events } = detector({ consecutive5xxErrors: 0, consecutiveGatewayErrors: 3 });
    d.report('a', { status: 502 });
    d.report('a', { connectFailure: true });
    d.report('a', { status: 500 });
    d.report('a', { status: 504 });
    d.report('a', { status: 503 });
    assert.equal(d.isEjected('a'), false);
    d.report('a', { connectFailure: true });
    assert.equal(d.isEjected('a'), true);
    assert.equal(events[0]?.type === 'ejected' && events[0].reason, 'consecutiveGatewayErrors');
    fail(d, 'b', 20, 404);
    assert.equal(d.isEjected('b'), false);
  });

  it('returns an endpoint when its time is up, and ejects it longer each time, up to the cap', () => {
    const { d, clock, events } = detector({ baseEjectionMs: 100_000 });
    fail(d, 'a', 5);
    clock.t += 99_999;
    assert.equal(d.isEjected('a'), true);
    clock.t += 1;
    assert.equal(d.isEjected('a'), false);
    assert.deepEqual(events.at(-1), { type: 'returned', key: 'a' });
    fail(d, 'a', 5);
    assert.deepEqual(events.at(-1), { type: 'ejected', key: 'a', reason: 'consecutive5xx', durationMs: 200_000, times: 2 });
    clock.t += 200_000;
    d.sweep();
    assert.deepEqual(events.at(-1), { type: 'returned', key: 'a' });
    fail(d, 'a', 5);
    assert.equal(lastDuration(events), 300_000);
    clock.t += 300_000;
    d.sweep();
    fail(d, 'a', 5); // 4 × 100 s, capped
    assert.equal(lastDuration(events), MAX_EJECTION_MS);
  });

  it('forgets past ejections one per clean interval', () => {
    const { d, clock, events } = detector({ baseEjectionMs: 30_000, intervalMs: 10_000 });
    fail(d, 'a', 5);
    clock.t += 30_000;
    assert.equal(d.isEjected('a'), false);
    fail(d, 'a', 5); // straight away: second offence
    assert.equal(lastDuration(events), 60_000);
    clock.t += 60_000 + 20_000; // back, then two clean intervals
    assert.equal(d.isEjected('a'), false);
    fail(d, 'a', 5);
    assert.equal(lastDuration(events), 30_000);
  });

  it('never ejects beyond maxEjectionPercent, and frees the slot when an endpoint returns', () => {
    const { d, clock } = detector({ maxEjectionPercent: 50 });
    fail(d, 'a', 5);
    fail(d, 'b', 5);
    fail(d, 'c', 5);
    assert.deepEqual(['a', 'b', 'c', 'd'].map((k) => d.isEjected(k)), [true, true, false, false]);
    assert.equal(d.ejected, 2);
    clock.t += 30_000;
    fail(d, 'c', 5);
    assert.deepEqual(['a', 'b', 'c'].map((k) => d.isEjected(k)), [false, false, true]);
  });

  it('always allows one ejection when the percent is above 0, none when it is 0', () => {
    const low = detector({ maxEjectionPercent: 10 }, ['a', 'b', 'c']);
    fail(low.d, 'a', 5);
    fail(low.d, 'b', 5);
    assert.deepEqual([low.d.isEjected('a'), low.d.isEjected('b')], [true, false]);
    const off = detector({ maxEjectionPercent: 0 });
    fail(off.d, 'a', 50);
    assert.equal(off.d.isEjected('a'), false);
  });

  it('ejects after 5 consecutive 5xx when the policy names no threshold', () => {
    const { d } = detector({ consecutive5xxErrors: undefined });
    fail(d, 'a', 4);
    assert.equal(d.isEjected('a'), false);
    fail(d, 'a', 1);
    assert.equal(d.isEjected('a'), true);
  });

  it('drops state of removed endpoints, freeing their ejection slot', () => {
    const { d } = detector({ maxEjectionPercent: 25 });
    fail(d, 'a', 5);
    fail(d, 'b', 5);
    assert.equal(d.isEjected('b'), false);
    d.update(['b', 'c', 'd', 'e']);
    assert.equal(d.ejected, 0);
    fail(d, 'b', 5);
    assert.equal(d.isEjected('b'), true);
  });
});
