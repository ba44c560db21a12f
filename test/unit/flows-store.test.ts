// The flow ring and its followers: bounded, O(1) ingest, loss reported and never silent.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FlowStore, type FollowEvent } from '../../agent/flows/index.ts';
import { flowAt, turns } from '../fixtures/flows/harness.ts';

const secs = (fs: Array<{ time: { seconds: number } }>): number[] => fs.map((f) => f.time.seconds - 1_700_000_000);

describe('flow store ring', () => {
  it('keeps the newest `capacity` flows across wraparound, oldest first', () => {
    const store = new FlowStore({ capacity: 4 });
    for (let i = 1; i <= 10; i++) store.add(flowAt(i));
    assert.equal(store.size, 4);
    assert.equal(store.seen, 10);
    assert.equal(store.capacity, 4);
    assert.deepEqual(secs(store.query(undefined)), [7, 8, 9, 10]);
    assert.deepEqual(secs(store.query(undefined, { number: 2 })), [9, 10]);
    assert.deepEqual(secs(store.query(undefined, { number: 2, first: true })), [7, 8]);
    // wrap exactly to the start of the array and once more
    for (let i = 11; i <= 14; i++) store.add(flowAt(i));
    assert.deepEqual(secs(store.query(undefined)), [11, 12, 13, 14]);
  });

  it('answers before the ring is full', () => {
    const store = new FlowStore({ capacity: 8 });
    assert.deepEqual(store.query(undefined), []);
    store.add(flowAt(1));
    store.add(flowAt(2));
    assert.deepEqual(secs(store.query(undefined, { number: 5 })), [1, 2]);
    assert.deepEqual(secs(store.query(undefined, { first: true })), [1, 2]);
  });

  it('applies filter, since/until and number together (last N of the matching)', () => {
    const store = new FlowStore({ capacity: 100 });
    for (let i = 1; i <= 20; i++) store.add(flowAt(i, { verdict: i % 2 ? 'DROPPED' : 'FORWARDED' }));
    const dropped = (f: { verdict: string }): boolean => f.verdict === 'DROPPED';
    assert.deepEqual(secs(store.query(dropped, { number: 3 })), [15, 17, 19]);
    assert.deepEqual(secs(store.query(dropped, { number: 2, first: true })), [1, 3]);
    const t = (s: number): { seconds: number; nanos: number } => ({ seconds: 1_700_000_000 + s, nanos: 0 });
    assert.deepEqual(secs(store.query(undefined, { since: t(5), until: t(8) })), [5, 6, 7, 8]);
    assert.deepEqual(secs(store.query(dropped, { since: t(5), until: t(12), number: 2 })), [9, 11]);
  });

  it('inserts by index: no shift/splice/unshift, the array never grows (O(1) per flow)', () => {
    const store = new FlowStore({ capacity: 64 });
    const sub = store.follow(undefined, { deliver: () => false }, { queue: 8 });
    const calls = { shift: 0, splice: 0, unshift: 0 };
    const orig = { shift: Array.prototype.shift, splice: Array.prototype.splice, unshift: Array.prototype.unshift };
    const descriptors = Object.getOwnPropertyDescriptors(Array.prototype);
    Array.prototype.shift = function (this: unknown[]) { calls.shift++; return orig.shift.call(this); };
    Array.prototype.splice = function (this: unknown[], ...a: unknown[]) { calls.splice++; return (orig.splice as (...x: unknown[]) => unknown[]).apply(this, a); } as typeof Array.prototype.splice;
    Array.prototype.unshift = function (this: unknown[], ...a: unknown[]) { calls.unshift++; return orig.unshift.apply(this, a); };
    try {
      for (let i = 0; i < 10_000; i++) store.add(flowAt(i));
    } finally {
      for (const k of ['shift', 'splice', 'unshift'] as const) Object.defineProperty(Array.prototype, k, descriptors[k]!);
    }
    assert.deepEqual(calls, { shift: 0, splice: 0, unshift: 0 });
    assert.equal((store as unknown as { ring: unknown[] }).ring.length, 64);
    assert.equal(store.size, 64);
    assert.equal(store.seen, 10_000);
    sub.close();
  });

  it('rejects a capacity that is not a positive integer', () => {
    assert.throws(() => new FlowStore({ capacity: 0 }), RangeError);
    assert.throws(() => new FlowStore({ capacity: 1.5 }), RangeError);
  });
});

describe('flow store followers', () => {
  it('delivers live flows in order, after add() has returned (never inside ingest)', async () => {
    const store = new FlowStore({ capacity: 16 });
    const got: FollowEvent[] = [];
    let insideAdd = false;
    let deliveredInsideAdd = false;
    store.follow(undefined, { deliver: (ev) => { if (insideAdd) deliveredInsideAdd = true; got.push(ev); return true; } });
    for (let i = 1; i <= 5; i++) {
      insideAdd = true;
      store.add(flowAt(i));
      insideAdd = false;
    }
    assert.equal(got.length, 0, 'delivery is deferred off the ingest path');
    await turns();
    assert.deepEqual(got.map((e) => (e.kind === 'flow' ? e.flow.time.seconds - 1_700_000_000 : -1)), [1, 2, 3, 4, 5]);
    assert.equal(deliveredInsideAdd, false);
  });

  it('only queues flows that match its filter', async () => {
    const store = new FlowStore();
    const got: number[] = [];
    store.follow((f) => f.verdict === 'DROPPED', { deliver: (ev) => { if (ev.kind === 'flow') got.push(ev.flow.time.seconds - 1_700_000_000); return true; } });
    for (let i = 1; i <= 6; i++) store.add(flowAt(i, { verdict: i > 3 ? 'DROPPED' : 'FORWARDED' }));
    await turns();
    assert.deepEqual(got, [4, 5, 6]);
  });

  it('a stalled follower loses flows beyond its queue and is told how many, in order', async () => {
    const store = new FlowStore({ capacity: 1000, followerQueue: 8 });
    const got: FollowEvent[] = [];
    const sub = store.follow(undefined, { deliver: (ev) => { got.push(ev); return true; } }, { paused: true });
    for (let i = 1; i <= 100; i++) store.add(flowAt(i));
    // ingest went on regardless: the ring has everything
    assert.equal(store.size, 100);
    assert.equal(sub.lost, 92);
    sub.resume();
    await turns();
    store.add(flowAt(101));
    await turns();
    const shape = got.map((e) => (e.kind === 'flow' ? e.flow.time.seconds - 1_700_000_000 : `lost:${e.count}:${e.source}`));
    assert.deepEqual(shape, [1, 2, 3, 4, 5, 6, 7, 8, 'lost:92:OBSERVER_EVENTS_QUEUE', 101]);
  });

  it('reports the loss before later flows when the queue frees up while still behind', async () => {
    const store = new FlowStore({ followerQueue: 4 });
    const got: Array<number | string> = [];
    const sub = store.follow(undefined, {
      deliver: (ev) => {
        got.push(ev.kind === 'flow' ? ev.flow.time.seconds - 1_700_000_000 : `lost:${ev.count}`);
        return got.length !== 2; // the client stalls after its second flow
      },
    });
    for (let i = 1; i <= 6; i++) store.add(flowAt(i)); // 1-4 queued, 5-6 lost
    await turns(); // delivers 1 and 2, then stalls with 3 and 4 queued
    assert.deepEqual(got, [1, 2]);
    store.add(flowAt(7)); // room again: the notice goes in before 7
    sub.resume();
    await turns();
    assert.deepEqual(got, [1, 2, 3, 4, 'lost:2', 7]);
    assert.equal(sub.lost, 2);
  });

  it('a notice that finds no room itself is folded into the next one, not dropped', async () => {
    const store = new FlowStore({ followerQueue: 2 });
    const got: Array<number | string> = [];
    const sub = store.follow(undefined, { deliver: (ev) => { got.push(ev.kind === 'flow' ? ev.flow.time.seconds - 1_700_000_000 : `lost:${ev.count}`); return true; } }, { paused: true });
    for (let i = 1; i <= 5; i++) store.add(flowAt(i)); // 1-2 queued, 3-5 lost
    sub.resume();
    await turns();
    assert.deepEqual(got, [1, 2, 'lost:3']);
  });

  it('a follower that says stop is paused until resume; others are not held back', async () => {
    const store = new FlowStore({ followerQueue: 1000 });
    const slow: number[] = [];
    const fast: number[] = [];
    const s = store.follow(undefined, { deliver: (ev) => { if (ev.kind === 'flow') slow.push(1); return false; } });
    store.follow(undefined, { deliver: (ev) => { if (ev.kind === 'flow') fast.push(1); return true; } });
    for (let i = 0; i < 50; i++) store.add(flowAt(i));
    await turns();
    assert.equal(slow.length, 1);
    assert.equal(fast.length, 50);
    assert.equal(s.backlog, 49);
    s.resume();
    await turns();
    assert.equal(slow.length, 2);
  });

  it('passes upstream loss (the kernel ring buffer) to every follower', async () => {
    const store = new FlowStore();
    const got: string[] = [];
    store.follow(undefined, { deliver: (ev) => { got.push(ev.kind === 'flow' ? 'flow' : `${ev.source}:${ev.count}`); return true; } });
    store.add(flowAt(1));
    store.addLost(7);
    store.add(flowAt(2));
    await turns();
    assert.deepEqual(got, ['flow', 'PERF_EVENT_RING_BUFFER:7', 'flow']);
    assert.equal(store.lost, 7);
  });

  it('close() detaches the follower', async () => {
    const store = new FlowStore();
    let n = 0;
    const s = store.follow(undefined, { deliver: () => { n++; return true; } });
    assert.equal(store.followers, 1);
    s.close();
    assert.equal(store.followers, 0);
    store.add(flowAt(1));
    await turns();
    assert.equal(n, 0);
  });
});
