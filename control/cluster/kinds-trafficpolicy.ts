// TrafficPolicy (nodal.io/v1alpha1): the schema of deploy/kubernetes/crds/trafficpolicies.nodal.io.yaml
// and its conversion to CompiledTrafficPolicy, with the defaults the CRD's descriptions
// promise (keep both in step) and durations in milliseconds. Strict: a field we ignored
// would leave a Service without the protection its author asked for.
import type { CompiledTrafficPolicy } from '../api/types.ts';
import { a, compact, m, readDuration, s, isProblem, type Doc, type Problem } from './read.ts';
import { bool, fraction, int, list, name, obj, oneOf, req, str } from './schema.ts';
import type { TrafficPolicyObject } from './state.ts';

/** the defaults the CRD documents; the proxy receives them filled in */
export const TRAFFIC_POLICY_DEFAULTS = {
  outlierIntervalMs: 10_000,
  baseEjectionMs: 30_000,
  maxEjectionPercent: 10,
  /** Envoy's default, used when outlierDetection names neither error counter */
  consecutive5xxErrors: 5,
  healthIntervalMs: 5_000,
  healthTimeoutMs: 1_000,
  healthyThreshold: 1,
  unhealthyThreshold: 3,
  retryAttempts: 2,
  budgetPercent: 20,
  minRetriesPerSecond: 3,
  /** retried when retryOn is not written: failures where the request never reached the application */
  retryOn: ['connect-failure', 'refused-stream', 'unavailable'],
  faultPercent: 100,
  burst: 0,
} as const;

const INT32 = 2_147_483_647;
const RETRY_ON = ['5xx', 'gateway-error', 'reset', 'connect-failure', 'retriable-4xx', 'refused-stream', 'cancelled', 'deadline-exceeded', 'resource-exhausted', 'unavailable'];

export const TRAFFIC_POLICY_SPEC = obj({
  targetRef: req(obj({ group: str, kind: req(oneOf('Service')), name: req(name) }, { strict: true })),
  loadBalancer: obj({
    algorithm: oneOf('ROUND_ROBIN', 'LEAST_REQUEST', 'PEAK_EWMA', 'CONSISTENT_HASH'),
    hashOn: obj({ header: name, cookie: name, queryParameter: name, sourceIP: bool }, { strict: true, atLeastOne: ['header', 'cookie', 'queryParameter', 'sourceIP'] }),
  }, { strict: true }),
  connectionPool: obj({
    maxConnections: int(1, INT32), maxPendingRequests: int(1, INT32), maxRequestsPerConnection: int(0, INT32),
    connectTimeout: str, idleTimeout: str,
  }, { strict: true }),
  outlierDetection: obj({
    consecutive5xxErrors: int(0, INT32), consecutiveGatewayErrors: int(0, INT32), interval: str, baseEjectionTime: str,
    maxEjectionPercent: int(0, 100),
  }, { strict: true }),
  healthCheck: obj({
    protocol: req(oneOf('TCP', 'HTTP', 'GRPC')), path: str, expectedStatuses: list(int(100, 599)), grpcService: str,
    interval: str, timeout: str, healthyThreshold: int(1, INT32), unhealthyThreshold: int(1, INT32),
  }, { strict: true }),
  retry: obj({
    attempts: int(0, 10), perTryTimeout: str, budgetPercent: int(0, 100), minRetriesPerSecond: int(0, INT32),
    retryOn: list(oneOf(...RETRY_ON)), retryNonIdempotent: bool,
  }, { strict: true }),
  faultInjection: obj({
    delay: obj({ percent: fraction(0, 100), fixedDelay: req(str) }, { strict: true }),
    abort: obj({ percent: fraction(0, 100), httpStatus: req(int(200, 599)) }, { strict: true }),
  }, { strict: true }),
  rateLimit: obj({ requests: req(int(1, INT32)), unit: req(oneOf('Second', 'Minute', 'Hour')), burst: int(0, INT32) }, { strict: true }),
}, { strict: true });

/** a duration field when written: ms, undefined when absent, or the problem */
function optDuration(o: Doc, field: string, at: string): number | undefined | Problem {
  return o[field] == null ? undefined : readDuration(o[field], `${at}.${field}`);
}

export function convertTrafficPolicy(d: Doc, namespace: string): TrafficPolicyObject | Problem {
  const spec = m(d.spec), md = m(d.metadata);
  const target = m(spec.targetRef);
  if (target.group != null && s(target.group) !== '') return { path: 'spec.targetRef.group', reason: `${JSON.stringify(target.group)}: a Service is in the core group (group: "")` };
  const out: TrafficPolicyObject = {
    namespace, name: s(md.name), target: { namespace, name: s(target.name) }, createdAt: s(md.creationTimestamp),
  };

  if (spec.loadBalancer != null) {
    const lb = m(spec.loadBalancer);
    const algorithm = s(lb.algorithm, 'ROUND_ROBIN') as NonNullable<CompiledTrafficPolicy['loadBalancer']>['algorithm'];
    if (algorithm === 'CONSISTENT_HASH' && lb.hashOn == null) return { path: 'spec.loadBalancer.hashOn', reason: 'is required for CONSISTENT_HASH' };
    if (algorithm !== 'CONSISTENT_HASH' && lb.hashOn != null) return { path: 'spec.loadBalancer.hashOn', reason: `only goes with CONSISTENT_HASH, not ${algorithm}` };
    const loadBalancer: NonNullable<CompiledTrafficPolicy['loadBalancer']> = { algorithm };
    if (lb.hashOn != null) {
      const h = m(lb.hashOn);
      const set = Object.keys(h).filter((k) => h[k] != null && h[k] !== false);
      if (set.length !== 1) return { path: 'spec.loadBalancer.hashOn', reason: `must set exactly one of header, cookie, queryParameter, sourceIP (has ${set.join(', ') || 'none'})` };
      loadBalancer.hashOn = compact({
        header: typeof h.header === 'string' ? h.header.toLowerCase() : undefined,
        cookie: h.cookie as string | undefined, queryParameter: h.queryParameter as string | undefined,
        sourceIP: h.sourceIP === true ? true : undefined,
      });
    }
    out.loadBalancer = loadBalancer;
  }

  if (spec.connectionPool != null) {
    const cp = m(spec.connectionPool), at = 'spec.connectionPool';
    const connectTimeoutMs = optDuration(cp, 'connectTimeout', at);
    if (isProblem(connectTimeoutMs)) return connectTimeoutMs;
    const idleTimeoutMs = optDuration(cp, 'idleTimeout', at);
    if (isProblem(idleTimeoutMs)) return idleTimeoutMs;
    out.connectionPool = compact({
      maxConnections: cp.maxConnections as number | undefined, maxPendingRequests: cp.maxPendingRequests as number | undefined,
      maxRequestsPerConnection: cp.maxRequestsPerConnection as number | undefined, connectTimeoutMs, idleTimeoutMs,
    });
  }

  if (spec.outlierDetection != null) {
    const od = m(spec.outlierDetection), at = 'spec.outlierDetection';
    const intervalMs = optDuration(od, 'interval', at);
    if (isProblem(intervalMs)) return intervalMs;
    const baseEjectionMs = optDuration(od, 'baseEjectionTime', at);
    if (isProblem(baseEjectionMs)) return baseEjectionMs;
    if (intervalMs === 0) return { path: `${at}.interval`, reason: 'must be longer than 0' };
    const neither = od.consecutive5xxErrors == null && od.consecutiveGatewayErrors == null;
    out.outlierDetection = compact({
      consecutive5xxErrors: neither ? TRAFFIC_POLICY_DEFAULTS.consecutive5xxErrors : od.consecutive5xxErrors as number | undefined,
      consecutiveGatewayErrors: od.consecutiveGatewayErrors as number | undefined,
      intervalMs: intervalMs ?? TRAFFIC_POLICY_DEFAULTS.outlierIntervalMs,
      baseEjectionMs: baseEjectionMs ?? TRAFFIC_POLICY_DEFAULTS.baseEjectionMs,
      maxEjectionPercent: typeof od.maxEjectionPercent === 'number' ? od.maxEjectionPercent : TRAFFIC_POLICY_DEFAULTS.maxEjectionPercent,
    });
  }

  if (spec.healthCheck != null) {
    const hc = m(spec.healthCheck), at = 'spec.healthCheck';
    const protocol = s(hc.protocol) as NonNullable<CompiledTrafficPolicy['healthCheck']>['protocol'];
    if (protocol !== 'HTTP') {
      for (const f of ['path', 'expectedStatuses']) if (hc[f] != null) return { path: `${at}.${f}`, reason: `only goes with protocol HTTP, not ${protocol}` };
    }
    if (protocol !== 'GRPC' && hc.grpcService != null) return { path: `${at}.grpcService`, reason: `only goes with protocol GRPC, not ${protocol}` };
    if (typeof hc.path === 'string' && !hc.path.startsWith('/')) return { path: `${at}.path`, reason: `${JSON.stringify(hc.path)} must start with /` };
    const intervalMs = optDuration(hc, 'interval', at);
    if (isProblem(intervalMs)) return intervalMs;
    const timeoutMs = optDuration(hc, 'timeout', at);
    if (isProblem(timeoutMs)) return timeoutMs;
    const interval = intervalMs ?? TRAFFIC_POLICY_DEFAULTS.healthIntervalMs, timeout = timeoutMs ?? TRAFFIC_POLICY_DEFAULTS.healthTimeoutMs;
    if (interval === 0) return { path: `${at}.interval`, reason: 'must be longer than 0' };
    if (timeout === 0 || timeout > interval) {
      return { path: `${at}.timeout`, reason: `${timeout} ms must be longer than 0 and no longer than the interval (${interval} ms)` };
    }
    const statuses = a(hc.expectedStatuses) as number[];
    out.healthCheck = compact({
      protocol,
      path: protocol === 'HTTP' ? s(hc.path, '/') : undefined,
      expectedStatuses: statuses.length > 0 ? [...new Set(statuses)].sort((x, y) => x - y) : undefined,
      grpcService: protocol === 'GRPC' ? s(hc.grpcService) : undefined,
      intervalMs: interval, timeoutMs: timeout,
      healthyThreshold: typeof hc.healthyThreshold === 'number' ? hc.healthyThreshold : TRAFFIC_POLICY_DEFAULTS.healthyThreshold,
      unhealthyThreshold: typeof hc.unhealthyThreshold === 'number' ? hc.unhealthyThreshold : TRAFFIC_POLICY_DEFAULTS.unhealthyThreshold,
    });
  }

  if (spec.retry != null) {
    const r = m(spec.retry), at = 'spec.retry';
    const perTryTimeoutMs = optDuration(r, 'perTryTimeout', at);
    if (isProblem(perTryTimeoutMs)) return perTryTimeoutMs;
    const retryOn = a(r.retryOn) as string[];
    out.retry = compact({
      attempts: typeof r.attempts === 'number' ? r.attempts : TRAFFIC_POLICY_DEFAULTS.retryAttempts,
      perTryTimeoutMs: perTryTimeoutMs === 0 ? undefined : perTryTimeoutMs,
      budgetPercent: typeof r.budgetPercent === 'number' ? r.budgetPercent : TRAFFIC_POLICY_DEFAULTS.budgetPercent,
      minRetriesPerSecond: typeof r.minRetriesPerSecond === 'number' ? r.minRetriesPerSecond : TRAFFIC_POLICY_DEFAULTS.minRetriesPerSecond,
      retryOn: retryOn.length > 0 ? [...new Set(retryOn)].sort() : [...TRAFFIC_POLICY_DEFAULTS.retryOn],
      retryNonIdempotent: r.retryNonIdempotent === true,
    });
  }

  if (spec.faultInjection != null) {
    const fi = m(spec.faultInjection), at = 'spec.faultInjection';
    const faultInjection: NonNullable<CompiledTrafficPolicy['faultInjection']> = {};
    if (fi.delay != null) {
      const dl = m(fi.delay);
      const delayMs = readDuration(dl.fixedDelay, `${at}.delay.fixedDelay`);
      if (isProblem(delayMs)) return delayMs;
      faultInjection.delay = { percent: typeof dl.percent === 'number' ? dl.percent : TRAFFIC_POLICY_DEFAULTS.faultPercent, delayMs };
    }
    if (fi.abort != null) {
      const ab = m(fi.abort);
      faultInjection.abort = { percent: typeof ab.percent === 'number' ? ab.percent : TRAFFIC_POLICY_DEFAULTS.faultPercent, httpStatus: ab.httpStatus as number };
    }
    if (faultInjection.delay === undefined && faultInjection.abort === undefined) return { path: at, reason: 'must set at least one of delay, abort' };
    out.faultInjection = faultInjection;
  }

  if (spec.rateLimit != null) {
    const rl = m(spec.rateLimit);
    out.rateLimit = {
      requests: rl.requests as number, unit: s(rl.unit) as 'Second' | 'Minute' | 'Hour',
      burst: typeof rl.burst === 'number' ? rl.burst : TRAFFIC_POLICY_DEFAULTS.burst,
    };
  }
  return out;
}
