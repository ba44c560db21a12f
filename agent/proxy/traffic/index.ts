// agent/proxy/traffic: traffic management for the source node's proxy (DESIGN §5), as pure
// modules the request path calls: route selection and filters (Gateway API), load
// balancing, passive outlier detection, active health checks, retries and retry budgets,
// fault injection, local rate limits and connection-pool limits. Clocks, randomness and
// connections are injected; nothing here reads the snapshot or owns a socket of the proxy.
export {
  RouteTable, ServiceRoutes, pickBackend, applyRequestFilters, responseHeaders, modifyHeaders,
  findFilter, redirectLocation, rewrite, replacePrefix, grpcMethodOf,
} from './routes.ts';
export type { RouteRequest, RouteMatchResult } from './routes.ts';
export { Balancer, BalancerRequest, hashKeyFor } from './lb.ts';
export type { Algorithm, BalancedEndpoint, BalancerOptions, HashOn } from './lb.ts';
export { OutlierDetector, MAX_EJECTION_MS } from './outlier.ts';
export type { AttemptOutcome, EjectionReason, OutlierConfig, OutlierEvent } from './outlier.ts';
export { HealthChecker, netConnector, probe } from './health.ts';
export type { Connector, HealthCheckerOptions, HealthConfig, HealthEndpoint } from './health.ts';
export { RetryBudget, RetryPolicy, isIdempotent } from './retry.ts';
export type { AttemptResult, RouteRetry, TrafficRetry } from './retry.ts';
export { NO_FAULT, decideFault, grpcStatusForHttp } from './fault.ts';
export type { FaultConfig, FaultDecision } from './fault.ts';
export { TokenBucket } from './ratelimit.ts';
export type { RateLimitConfig } from './ratelimit.ts';
export { Limit, PoolLimits } from './limits.ts';
export type { PoolConfig } from './limits.ts';
