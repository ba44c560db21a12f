// Local rate limit: one token bucket per Service in this node's proxy (like Envoy's
// local_ratelimit filter; limits are per proxy, not cluster-wide). Tokens refill
// continuously at `requests` per `unit`; the bucket holds `requests + burst` tokens (so a
// user gets the whole per-unit allowance at once, plus the burst) and starts full. A
// refused request gets 429 with Retry-After: the whole seconds until one token is back.

import type { CompiledTrafficPolicy } from '../../../control/api/types.ts';

export type RateLimitConfig = NonNullable<CompiledTrafficPolicy['rateLimit']>;

const UNIT_MS: Record<RateLimitConfig['unit'], number> = { Second: 1_000, Minute: 60_000, Hour: 3_600_000 };

export class TokenBucket {
  readonly capacity: number;
  /** tokens per millisecond */
  private readonly rate: number;
  private readonly now: () => number;
  private tokens: number;
  private stamp: number;
  /** requests refused so far (metrics) */
  refused = 0;

  constructor(cfg: RateLimitConfig, now: () => number) {
    this.capacity = Math.max(1, cfg.requests + Math.max(0, cfg.burst));
    this.rate = Math.max(0, cfg.requests) / UNIT_MS[cfg.unit];
    this.now = now;
    this.tokens = this.capacity;
    this.stamp = now();
  }

  /** take one token: true to admit the request */
  take(): boolean {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    this.refused++;
    return false;
  }

  /** for Retry-After after a refusal: whole seconds until a token is back (at least 1; 0 if one is available now) */
  retryAfterSeconds(): number {
    this.refill();
    if (this.tokens >= 1) return 0;
    if (this.rate === 0) return UNIT_MS.Hour / 1000;
    // the epsilon keeps float noise (1800.0000000002) from adding a second
    return Math.max(1, Math.ceil((1 - this.tokens) / this.rate / 1000 - 1e-9));
  }

  /** tokens now (metrics, tests) */
  available(): number {
    this.refill();
    return this.tokens;
  }

  private refill(): void {
    const now = this.now();
    const elapsed = now - this.stamp;
    if (elapsed <= 0) return;
    this.stamp = now;
    this.tokens = Math.min(this.capacity, this.tokens + elapsed * this.rate);
  }
}
