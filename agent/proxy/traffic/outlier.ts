// Passive outlier detection for one Service, as Envoy's consecutive-error detectors (and
// Istio's DestinationRule outlierDetection) do it:
// - per endpoint, a counter of consecutive 5xx (any 500-599, and connect failures, which
//   Envoy counts as 503 when local and upstream errors are not split) and a counter of
//   consecutive gateway errors (502, 503, 504 and connect failures). A 500 breaks the
//   gateway run; any non-5xx answer resets both. An absent consecutive5xxErrors is 5
//   (Envoy's and Istio's default), an absent consecutiveGatewayErrors is off; 0 turns off;
// - reaching a configured threshold ejects the endpoint for baseEjection × times ejected,
//   capped at MAX_EJECTION_MS (Envoy's max_ejection_time default, 300 s). Each interval the
//   endpoint then stays in without being ejected takes one off its multiplier (Envoy ≥1.18);
// - maxEjectionPercent: never more than floor(n × percent / 100) endpoints out at once,
//   except that with a percent above 0 one endpoint may always be ejected (Envoy: "will
//   eject at least one host regardless of the value"). 0 disables ejection. If that
//   ejects a service's only endpoint the balancer's panic mode still sends it traffic;
// - an ejected endpoint returns once its time is up: checked lazily by isEjected() and by
//   sweep() (call it every interval so `returned` events are timely), with the injected clock.
// Events go to the injected callback for metrics and logs.

import type { CompiledTrafficPolicy } from '../../../control/api/types.ts';

export type OutlierConfig = NonNullable<CompiledTrafficPolicy['outlierDetection']>;

/** Envoy's and Istio's consecutive_5xx default when a policy sets outlier detection without it */
export const DEFAULT_CONSECUTIVE_5XX = 5;

/** Envoy's max_ejection_time default: however often an endpoint fails, it is retried within 5 minutes */
export const MAX_EJECTION_MS = 300_000;

export type EjectionReason = 'consecutive5xx' | 'consecutiveGatewayErrors';

export type OutlierEvent =
  | { type: 'ejected'; key: string; reason: EjectionReason; durationMs: number; times: number }
  | { type: 'returned'; key: string };

/** what one attempt on an endpoint came to */
export interface AttemptOutcome {
  /** the response status; absent when there was none */
  status?: number;
  /** the connection to the endpoint could not be made (refused, timed out, reset before a response) */
  connectFailure?: boolean;
}

class OutlierState {
  consecutive5xx = 0;
  consecutiveGateway = 0;
  /** ejections so far, minus one per clean interval since the last return */
  times = 0;
  ejectedUntil = 0;
  ejected = false;
  returnedAt = 0;
}

export class OutlierDetector {
  private readonly cfg: OutlierConfig;
  private readonly now: () => number;
  private readonly onEvent: ((e: OutlierEvent) => void) | undefined;
  private readonly states = new Map<string, OutlierState>();
  private ejectedCount = 0;

  constructor(cfg: OutlierConfig, opts: { now: () => number; onEvent?: (e: OutlierEvent) => void }) {
    this.cfg = cfg;
    this.now = opts.now;
    this.onEvent = opts.onEvent;
  }

  /** the endpoint set changed; counters survive for keys that remain */
  update(keys: Iterable<string>): void {
    const keep = new Set(keys);
    for (const [k, s] of this.states) {
      if (keep.has(k)) continue;
      if (s.ejected) this.ejectedCount--;
      this.states.delete(k);
    }
    for (const k of keep) if (!this.states.has(k)) this.states.set(k, new OutlierState());
  }

  /** record one attempt's outcome */
  report(key: string, outcome: AttemptOutcome): void {
    const s = this.states.get(key);
    if (!s) return;
    const status = outcome.status ?? 0;
    const gateway = outcome.connectFailure === true || status === 502 || status === 503 || status === 504;
    const is5xx = gateway || (status >= 500 && status <= 599);
    if (!is5xx) {
      s.consecutive5xx = 0;
      s.consecutiveGateway = 0;
      return;
    }
    s.consecutive5xx++;
    if (gateway) s.consecutiveGateway++;
    else s.consecutiveGateway = 0;
    if (s.ejected) return;
    const c5 = this.cfg.consecutive5xxErrors ?? DEFAULT_CONSECUTIVE_5XX, cg = this.cfg.consecutiveGatewayErrors;
    if (cg !== undefined && cg > 0 && s.consecutiveGateway >= cg) this.eject(key, s, 'consecutiveGatewayErrors');
    else if (c5 !== undefined && c5 > 0 && s.consecutive5xx >= c5) this.eject(key, s, 'consecutive5xx');
  }

  /** is the endpoint out of the balancer's rotation now? (returns it if its time is up) */
  isEjected(key: string): boolean {
    const s = this.states.get(key);
    if (!s?.ejected) return false;
    if (this.now() < s.ejectedUntil) return true;
    this.unEject(key, s);
    return false;
  }

  /** return every endpoint whose time is up; call every intervalMs */
  sweep(): void {
    const now = this.now();
    for (const [k, s] of this.states) if (s.ejected && now >= s.ejectedUntil) this.unEject(k, s);
  }

  get ejected(): number {
    return this.ejectedCount;
  }

  /** how many endpoints may be out at once */
  private maxEjected(): number {
    const pct = this.cfg.maxEjectionPercent;
    if (pct <= 0) return 0;
    return Math.max(1, Math.floor((this.states.size * Math.min(pct, 100)) / 100));
  }

  private eject(key: string, s: OutlierState, reason: EjectionReason): void {
    this.sweep(); // free slots of endpoints whose time is up before counting
    if (this.ejectedCount >= this.maxEjected()) return;
    const now = this.now();
    if (s.times > 0 && this.cfg.intervalMs > 0) {
      s.times = Math.max(0, s.times - Math.floor((now - s.returnedAt) / this.cfg.intervalMs));
    }
    s.times++;
    const durationMs = Math.min(this.cfg.baseEjectionMs * s.times, Math.max(MAX_EJECTION_MS, this.cfg.baseEjectionMs));
    s.ejected = true;
    s.ejectedUntil = now + durationMs;
    s.consecutive5xx = 0;
    s.consecutiveGateway = 0;
    this.ejectedCount++;
    this.onEvent?.({ type: 'ejected', key, reason, durationMs, times: s.times });
  }

  private unEject(key: string, s: OutlierState): void {
    s.ejected = false;
    s.returnedAt = s.ejectedUntil;
    this.ejectedCount--;
    this.onEvent?.({ type: 'returned', key });
  }
}
