// Local rate limit: burst, continuous refill with an injected clock, and Retry-After.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TokenBucket } from '../../agent/proxy/traffic/ratelimit.ts';

const takeN = (b: TokenBucket, n: number) => Array.from({ length: n }, () => b.take()).filter(Boolean).length;

describe('local rate limit', () => {
  it('admits the allowance plus burst at once, then refuses', () => {
    const clock = { t: 0 };
    const b = new TokenBucket({ requests: 10, unit: 'Second', burst: 5 }, () => clock.t);
    assert.equal(takeN(b, 20), 15);
    assert.equal(b.refused, 5);
  });

  it('refills continuously at requests per unit and never beyond capacity', () => {
    const clock = { t: 0 };
    const b = new TokenBucket({ requests: 10, unit: 'Second', burst: 0 }, () => clock.t);
    takeN(b, 10);
    clock.t += 250; // 2.5 tokens
    assert.equal(takeN(b, 5), 2);
    clock.t += 50; // 0.5 + 0.5
    assert.equal(takeN(b, 5), 1);
    clock.t += 60_000;
    assert.equal(takeN(b, 50), 10);
  });

  it('counts per minute and hour, and tells how long to wait in Retry-After', () => {
    const clock = { t: 0 };
    const m = new TokenBucket({ requests: 6, unit: 'Minute', burst: 0 }, () => clock.t);
    assert.equal(takeN(m, 7), 6);
    assert.equal(m.retryAfterSeconds(), 10);
    clock.t += 9_500;
    assert.equal(m.retryAfterSeconds(), 1);
    clock.t += 500;
    assert.equal(m.take(), true);
    const h = new TokenBucket({ requests: 2, unit: 'Hour', burst: 1 }, () => clock.t);
    assert.equal(takeN(h, 5), 3);
    assert.equal(h.retryAfterSeconds(), 1800);
  });
});
