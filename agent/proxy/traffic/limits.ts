// Connection-pool limits for one Service (circuit breaking as Envoy's cluster thresholds
// and Istio's connectionPool): at most maxConnections upstream connections, at most
// maxPendingRequests requests waiting for a connection, and a connection retired after
// maxRequestsPerConnection requests (0: no limit). A request past a limit fails fast (503,
// Envoy's "upstream overflow") instead of queueing; overflows are counted for metrics.
// Absent limits are Envoy's defaults (1024), so a pool is never unbounded.

import type { CompiledTrafficPolicy } from '../../../control/api/types.ts';

export type PoolConfig = NonNullable<CompiledTrafficPolicy['connectionPool']>;

/** Envoy's default threshold for connections and pending requests */
export const DEFAULT_LIMIT = 1024;

/** one capped counter: tryAcquire() admits while below max, else counts an overflow */
export class Limit {
  readonly max: number;
  current = 0;
  overflows = 0;

  constructor(max: number) {
    this.max = max;
  }

  /** pair a true with one release() */
  tryAcquire(): boolean {
    if (this.current >= this.max) {
      this.overflows++;
      return false;
    }
    this.current++;
    return true;
  }

  /** never below 0: a double release must not raise the cap */
  release(): void {
    if (this.current > 0) this.current--;
  }
}

export class PoolLimits {
  /** upstream connections open: acquire before connecting, release on close */
  readonly connections: Limit;
  /** requests waiting for a connection: acquire while waiting, release when served or given up */
  readonly pending: Limit;
  readonly maxRequestsPerConnection: number;

  constructor(cfg: PoolConfig | undefined) {
    this.connections = new Limit(cfg?.maxConnections ?? DEFAULT_LIMIT);
    this.pending = new Limit(cfg?.maxPendingRequests ?? DEFAULT_LIMIT);
    this.maxRequestsPerConnection = cfg?.maxRequestsPerConnection ?? 0;
  }

  /** after `served` requests, must the connection be closed rather than reused? */
  retire(served: number): boolean {
    return this.maxRequestsPerConnection > 0 && served >= this.maxRequestsPerConnection;
  }
}
