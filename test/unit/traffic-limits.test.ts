// Connection-pool limits (circuit breaking): caps, overflow counts, release, retirement.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMIT, PoolLimits } from '../../agent/proxy/traffic/limits.ts';

describe('connection pool limits', () => {
  it('caps connections and pending requests, counting overflows, and frees on release', () => {
    const p = new PoolLimits({ maxConnections: 2, maxPendingRequests: 1 });
    assert.deepEqual([p.connections.tryAcquire(), p.connections.tryAcquire(), p.connections.tryAcquire()], [true, true, false]);
    assert.deepEqual([p.pending.tryAcquire(), p.pending.tryAcquire()], [true, false]);
    assert.deepEqual([p.connections.overflows, p.pending.overflows], [1, 1]);
    p.connections.release();
    p.pending.release();
    assert.deepEqual([p.connections.tryAcquire(), p.pending.tryAcquire()], [true, true]);
  });

  it('does not go negative on an extra release (a double close must not raise the cap)', () => {
    const p = new PoolLimits({ maxConnections: 1 });
    p.connections.release();
    assert.equal(p.connections.tryAcquire(), true);
    assert.equal(p.connections.tryAcquire(), false);
  });

  it('retires a connection after maxRequestsPerConnection; 0 or absent means never', () => {
    const p = new PoolLimits({ maxRequestsPerConnection: 3 });
    assert.deepEqual([1, 2, 3].map((n) => p.retire(n)), [false, false, true]);
    assert.equal(new PoolLimits({ maxRequestsPerConnection: 0 }).retire(1e6), false);
    const d = new PoolLimits(undefined);
    assert.deepEqual([d.connections.max, d.pending.max, d.retire(1e6)], [DEFAULT_LIMIT, DEFAULT_LIMIT, false]);
  });
});
