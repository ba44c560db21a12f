// Retries: whether a failed attempt is tried again, after how long, and whether the
// service's retry budget allows it. Follows Envoy's x-envoy-retry-on / Istio's retryOn:
// - `5xx`: any 5xx, a reset or timeout before the response, a connect failure or a refused
//   stream; `gateway-error`: 502, 503, 504 (and connect failures, as Envoy's does);
//   `reset`: the connection reset or the per-try timeout fired before a response;
//   `connect-failure`; `retriable-4xx`: 409; `refused-stream`: HTTP/2 REFUSED_STREAM;
//   gRPC `cancelled` (1), `deadline-exceeded` (4), `resource-exhausted` (8),
//   `unavailable` (14) from grpc-status; a bare number ("503") retries that status;
// - Gateway API HTTPRouteRetry on the route replaces the policy's attempts and conditions:
//   its `codes` are retried, and connection errors (connect failure, reset, timeout) always
//   are ("Implementations MUST retry on connection errors ... if a retry stanza is configured");
// - `attempts` counts retries, not tries (Istio, Gateway API): 2 means up to 3 tries;
// - a connect failure or a refused stream means the endpoint never saw the request, so it
//   is retried whatever the method and whether or not retryOn names it. Otherwise a method
//   that is not idempotent (RFC 9110 §9.2.2: only GET, HEAD, OPTIONS, TRACE, PUT, DELETE
//   are) is not retried once any of it was sent, unless retryNonIdempotent;
// - backoff: exponential with full jitter, random × min(max, base × 2^(retry-1)); base
//   25 ms and max 10 × base (Envoy's defaults), base from the route's backoffMs if set;
// - RetryBudget (Envoy's retry_budget, with Linkerd's per-second floor): a retry may start
//   while retries active < floor(budgetPercent % of requests active), or, beyond that, while the
//   floor's token bucket (minRetriesPerSecond per second, that many at most) has a token.

import type { CompiledTrafficPolicy, RouteRule } from '../../../control/api/types.ts';

export type TrafficRetry = NonNullable<CompiledTrafficPolicy['retry']>;
export type RouteRetry = NonNullable<RouteRule['retry']>;

/** Envoy's default base interval: the first retry waits 0-25 ms */
export const BACKOFF_BASE_MS = 25;
/** Envoy: max interval is 10 × base */
export const BACKOFF_MAX_FACTOR = 10;

/** RFC 9110 §9.2.2 idempotent methods (and safe ones, which are idempotent) */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method);
}

/** what happened to one attempt */
export interface AttemptResult {
  /** response status, absent when none arrived */
  status?: number;
  /** grpc-status from trailers (or trailers-only headers) */
  grpcStatus?: number;
  /** could not connect to the endpoint: nothing was sent */
  connectFailure?: boolean;
  /** HTTP/2 REFUSED_STREAM: the endpoint did not process the request */
  refusedStream?: boolean;
  /** reset or disconnect before a response */
  reset?: boolean;
  /** the per-try timeout fired before a response */
  timeout?: boolean;
  /** any byte of the request (head or body) was written to the endpoint */
  requestSent: boolean;
}

const GRPC_CODES: Record<string, number> = { 'cancelled': 1, 'deadline-exceeded': 4, 'resource-exhausted': 8, 'unavailable': 14 };

export class RetryPolicy {
  /** retries allowed after the first try */
  readonly attempts: number;
  readonly perTryTimeoutMs: number | undefined;
  readonly retryNonIdempotent: boolean;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private on5xx = false;
  private onGateway = false;
  private onReset = false;
  private onConnect = false;
  private on409 = false;
  private onRefused = false;
  private readonly statuses = new Set<number>();
  private readonly grpcStatuses = new Set<number>();

  /** the route's retry (Gateway API) overrides the TrafficPolicy's attempts and conditions */
  constructor(policy: TrafficRetry | undefined, route?: RouteRetry) {
    this.perTryTimeoutMs = policy?.perTryTimeoutMs;
    this.retryNonIdempotent = policy?.retryNonIdempotent ?? false;
    this.baseMs = route?.backoffMs && route.backoffMs > 0 ? route.backoffMs : BACKOFF_BASE_MS;
    this.maxMs = this.baseMs * BACKOFF_MAX_FACTOR;
    if (route) {
      this.attempts = route.attempts;
      this.onReset = this.onConnect = true;
      for (const c of route.codes ?? []) this.statuses.add(c);
      return;
    }
    this.attempts = policy?.attempts ?? 0;
    for (const cond of policy?.retryOn ?? []) {
      switch (cond) {
        case '5xx': this.on5xx = true; break;
        case 'gateway-error': this.onGateway = true; break;
        case 'reset': this.onReset = true; break;
        case 'connect-failure': this.onConnect = true; break;
        case 'retriable-4xx': this.on409 = true; break;
        case 'refused-stream': this.onRefused = true; break;
        default: {
          const g = GRPC_CODES[cond];
          if (g !== undefined) this.grpcStatuses.add(g);
          else if (/^[1-5][0-9][0-9]$/.test(cond)) this.statuses.add(Number(cond));
          // unknown conditions were rejected when the policy was validated; ignore here
        }
      }
    }
  }

  /**
   * Should the request be tried again after `retriesSoFar` retries ended in `r`? Does not
   * consult the budget: call RetryBudget.tryStartRetry() when this says yes.
   */
  shouldRetry(method: string, retriesSoFar: number, r: AttemptResult): boolean {
    if (retriesSoFar >= this.attempts) return false;
    // the endpoint never saw it: safe for any method, and a retry stanza always covers it
    if (r.connectFailure || r.refusedStream) return true;
    if (r.requestSent && !this.retryNonIdempotent && !IDEMPOTENT.has(method)) return false;
    return this.retriable(r);
  }

  private retriable(r: AttemptResult): boolean {
    if (r.status === undefined) {
      return (r.reset === true || r.timeout === true) && (this.onReset || this.on5xx);
    }
    const s = r.status;
    if (this.statuses.has(s)) return true;
    if (this.on5xx && s >= 500 && s <= 599) return true;
    if (this.onGateway && (s === 502 || s === 503 || s === 504)) return true;
    if (this.on409 && s === 409) return true;
    return r.grpcStatus !== undefined && this.grpcStatuses.has(r.grpcStatus);
  }

  /** wait before retry number `retry` (1 = the first retry): full jitter in [0, min(max, base·2^(retry-1))) */
  backoffMs(retry: number, random: () => number): number {
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** Math.max(0, retry - 1));
    return Math.floor(random() * ceiling);
  }
}

/** one per Service: caps concurrent retries so a failing backend does not get a retry storm */
export class RetryBudget {
  private readonly percent: number;
  private readonly floorPerSecond: number;
  private readonly now: () => number;
  private activeRequests = 0;
  private activeRetries = 0;
  private floorTokens: number;
  private floorStamp: number;
  /** retries allowed / refused so far (metrics) */
  retries = 0;
  refused = 0;

  constructor(cfg: { budgetPercent: number; minRetriesPerSecond: number }, now: () => number) {
    this.percent = cfg.budgetPercent;
    this.floorPerSecond = Math.max(0, cfg.minRetriesPerSecond);
    this.now = now;
    this.floorTokens = this.floorPerSecond;
    this.floorStamp = now();
  }

  /** a request (first try) began; a request with retries is still one request */
  startRequest(): void { this.activeRequests++; }
  endRequest(): void { if (this.activeRequests > 0) this.activeRequests--; }

  /** may a retry start now? if true, call endRetry() when that retry's attempt ends */
  tryStartRetry(): boolean {
    if (this.activeRetries < Math.floor((this.activeRequests * this.percent) / 100)) return this.admit();
    this.refill();
    if (this.floorTokens >= 1) {
      this.floorTokens -= 1;
      return this.admit();
    }
    this.refused++;
    return false;
  }

  endRetry(): void { if (this.activeRetries > 0) this.activeRetries--; }

  get active(): { requests: number; retries: number } {
    return { requests: this.activeRequests, retries: this.activeRetries };
  }

  private admit(): boolean {
    this.activeRetries++;
    this.retries++;
    return true;
  }

  private refill(): void {
    const now = this.now();
    const elapsed = now - this.floorStamp;
    this.floorStamp = now;
    if (elapsed > 0) this.floorTokens = Math.min(this.floorPerSecond, this.floorTokens + (elapsed * this.floorPerSecond) / 1000);
  }
}
