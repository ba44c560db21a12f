// Retry decisions (retryOn conditions, route retry codes, the non-idempotent rule),
// backoff bounds, and the retry budget.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RetryBudget, RetryPolicy, type TrafficRetry } from '../../agent/proxy/traffic/retry.ts';

const policy = (retryOn: string[], extra: Partial<TrafficRetry> = {}) =>
  new RetryPolicy({ attempts: 2, budgetPercent: 20, minRetriesPerSecond: 10, retryOn, retryNonIdempotent: false, ...extra });
const sent = { requestSent: true };

describe('retry decision', () => {
  it('retries the conditions named in retryOn and nothing else', () => {
    const p = policy(['gateway-error', 'retriable-4xx', 'unavailable']);
    assert.equal(p.shouldRetry('GET', 0, { ...sent, status: 503 }), true);
    assert.equal(p.shouldRetry('GET', 0, { ...sent, status: 500 }), false);
    assert.equal(p.shouldRetry('GET', 0, { ...sent, status: 409 }), true);
    assert.equal(p.shouldRetry('GET', 0, { ...sent, status: 404 }), false);
    assert.equal(p.shouldRetry('POST', 0, { requestSent: false, status: 200, grpcStatus: 14 }), true);
    assert.equal(p.shouldRetry('POST', 0, { requestSent: false, status: 200, grpcStatus: 13 }), false);
    assert.equal(p.shouldRetry('GET', 0, { ...sent, reset: true }), false);
  });

  it('covers resets and timeouts with 5xx or reset, and retries listed status numbers', () => {
    assert.equal(policy(['5xx']).shouldRetry('GET', 0, { ...sent, status: 500 }), true);
    assert.equal(policy(['5xx']).shouldRetry('GET', 0, { ...sent, timeout: true }), true);
    assert.equal(policy(['reset']).shouldRetry('GET', 0, { ...sent, reset: true }), true);
    assert.equal(policy(['reset']).shouldRetry('GET', 0, { ...sent, status: 503 }), false);
    assert.equal(policy(['429']).shouldRetry('GET', 0, { ...sent, status: 429 }), true);
    assert.equal(policy(['cancelled', 'deadline-exceeded', 'resource-exhausted']).shouldRetry('GET', 0, { ...sent, status: 200, grpcStatus: 8 }), true);
  });

  it('stops after `attempts` retries', () => {
    const p = policy(['5xx']);
    assert.equal(p.shouldRetry('GET', 1, { ...sent, status: 503 }), true);
    assert.equal(p.shouldRetry('GET', 2, { ...sent, status: 503 }), false);
    assert.equal(new RetryPolicy(undefined).shouldRetry('GET', 0, { connectFailure: true, requestSent: false }), false);
  });

  it('never retries a non-idempotent request once sent, unless allowed; unsent is always retried', () => {
    const p = policy(['5xx']);
    assert.equal(p.shouldRetry('POST', 0, { ...sent, status: 503 }), false);
    assert.equal(p.shouldRetry('PATCH', 0, { ...sent, reset: true }), false);
    assert.equal(p.shouldRetry('PUT', 0, { ...sent, status: 503 }), true);
    assert.equal(p.shouldRetry('DELETE', 0, { ...sent, status: 503 }), true);
    assert.equal(p.shouldRetry('POST', 0, { connectFailure: true, requestSent: false }), true);
    assert.equal(p.shouldRetry('POST', 0, { refusedStream: true, requestSent: true }), true);
    assert.equal(policy(['gateway-error']).shouldRetry('POST', 0, { connectFailure: true, requestSent: false }), true);
    assert.equal(policy(['5xx'], { retryNonIdempotent: true }).shouldRetry('POST', 0, { ...sent, status: 503 }), true);
  });

  it('lets a route retry replace the policy: its codes plus connection errors', () => {
    const p = new RetryPolicy({ attempts: 5, budgetPercent: 20, minRetriesPerSecond: 10, retryOn: ['5xx'], retryNonIdempotent: false }, { attempts: 1, codes: [503] });
    assert.equal(p.attempts, 1);
    assert.equal(p.shouldRetry('GET', 0, { ...sent, status: 503 }), true);
    assert.equal(p.shouldRetry('GET', 0, { ...sent, status: 500 }), false);
    assert.equal(p.shouldRetry('GET', 0, { ...sent, timeout: true }), true);
    assert.equal(p.shouldRetry('GET', 1, { ...sent, status: 503 }), false);
  });
});

describe('retry backoff', () => {
  it('grows exponentially from 25 ms, caps at 250 ms, and jitters over the whole range', () => {
    const p = policy(['5xx']);
    const top = () => 0.999999;
    assert.deepEqual([1, 2, 3, 4, 5, 10].map((n) => p.backoffMs(n, top)), [24, 49, 99, 199, 249, 249]);
    assert.equal(p.backoffMs(3, () => 0), 0);
    assert.equal(p.backoffMs(3, () => 0.5), 50);
  });

  it('uses the route backoff as the base', () => {
    const p = new RetryPolicy(undefined, { attempts: 3, backoffMs: 100 });
    assert.equal(p.backoffMs(1, () => 0.999999), 99);
    assert.equal(p.backoffMs(8, () => 0.999999), 999);
  });
});

describe('retry budget', () => {
  it('refuses a retry storm beyond budgetPercent of active requests, counting refusals', () => {
    const clock = { t: 0 };
    const b = new RetryBudget({ budgetPercent: 20, minRetriesPerSecond: 0 }, () => clock.t);
    for (let i = 0; i < 100; i++) b.startRequest();
    let allowed = 0;
    for (let i = 0; i < 100; i++) if (b.tryStartRetry()) allowed++;
    assert.equal(allowed, 20);
    assert.equal(b.refused, 80);
    assert.equal(b.retries, 20);
    b.endRetry();
    assert.equal(b.tryStartRetry(), true);
    assert.equal(b.tryStartRetry(), false);
  });

  it('always allows minRetriesPerSecond, refilled over time', () => {
    const clock = { t: 0 };
    const b = new RetryBudget({ budgetPercent: 20, minRetriesPerSecond: 3 }, () => clock.t);
    b.startRequest(); // 20 % of one request is less than one retry
    assert.deepEqual([1, 2, 3, 4].map(() => b.tryStartRetry()), [true, true, true, false]);
    clock.t += 500;
    assert.deepEqual([1, 2].map(() => b.tryStartRetry()), [true, false]);
    clock.t += 10_000; // the floor does not bank more than one second's worth
    assert.deepEqual([1, 2, 3, 4].map(() => b.tryStartRetry()), [true, true, true, false]);
  });
});
