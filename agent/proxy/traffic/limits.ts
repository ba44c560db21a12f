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

export class PoolLimits {
  readonly maxConnections: number;
  readonly maxPendingRequests: number;
  readonly maxRequestsPerConnection: number;
  connections = 0;
  pending = 0;
  /** refusals so far, by limit */
  readonly overflows = { connections: 0, pending: 0 };

  constructor(cfg: PoolConfig | undefined) {
    this.maxConnections = cfg?.maxConnections ?? DEFAULT_LIMIT;
    this.maxPendingRequests = cfg?.maxPendingRequests ?? DEFAULT_LIMIT;
    this.maxRequestsPerConnection = cfg?.maxRequestsPerConnection ?? 0;
  }

  /** open a new upstream connection? pair a true with releaseConnection() when it closes */
  tryAcquireConnection(): boolean {
    if (this.connections >= this.maxConnections) {
      this.overflows.connections++;
      return false;
    }
    this.connections++;
    return true;
  }

  releaseConnection(): void {
    if (this.connections > 0) this.connections--;
  }

  /** may a request wait for a connection? pair a true with releasePending() when it gets one or gives up */
  tryAcquirePending(): boolean {
    if (this.pending >= this.maxPendingRequests) {
      this.overflows.pending++;
      return false;
    }
    this.pending++;
    return true;
  }

  releasePending(): void {
    if (this.pending > 0) this.pending--;
  }

  /** after `served` requests, must the connection be closed rather than reused? */
  retire(served: number): boolean {
    return this.maxRequestsPerConnection > 0 && served >= this.maxRequestsPerConnection;
  }
}
