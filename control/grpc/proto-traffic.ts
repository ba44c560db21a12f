// The traffic-management part of the Snapshot (routes and TrafficPolicies, DESIGN §5) and
// its wire messages in control.proto, converted field by field like the rest of proto.ts:
// enums become the model's string unions, a oneof becomes the filter's `type`, and
// optional fields stay absent rather than arriving as zero values.
import type {
  CompiledRoute, CompiledTrafficPolicy, HeaderModifier, RouteBackend, RouteFilter, RouteMatch, RouteRule, ServiceRef,
} from '../api/types.ts';
import { SnapshotDecodeError } from '../errors.ts';

type W = Record<string, unknown>;
const arr = (v: unknown): W[] => (Array.isArray(v) ? (v as W[]) : []);
/** a message field: proto-loader hands an unset one over as null */
const isW = (v: unknown): v is W => v !== null && typeof v === 'object' && !Array.isArray(v);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v ?? 0));
const strs = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);
const nums = (v: unknown): number[] => (Array.isArray(v) ? v.map(Number) : []);
/** an optional scalar: present only when the sender set it */
const opt = <K extends string, T>(key: K, v: unknown, conv: (x: unknown) => T): Partial<Record<K, T>> =>
  (v === undefined || v === null ? {} : { [key]: conv(v) } as Record<K, T>);
const optList = <K extends string, T>(key: K, list: T[]): Partial<Record<K, T[]>> => (list.length > 0 ? { [key]: list } as Record<K, T[]> : {});

function fromEnum<T extends Record<string, string>>(table: T, what: string, v: unknown): T[keyof T] {
  if (typeof v === 'string' && Object.hasOwn(table, v)) return table[v as keyof T];
  throw new SnapshotDecodeError(`${what}: unknown value ${JSON.stringify(v)}`);
}
const toEnum = (table: Record<string, string>, v: string): string => Object.keys(table).find((k) => table[k] === v)!;

const STRING_MATCH = { STRING_MATCH_TYPE_EXACT: 'Exact', STRING_MATCH_TYPE_REGULAR_EXPRESSION: 'RegularExpression' } as const;
const PATH_MATCH = { PATH_MATCH_TYPE_EXACT: 'Exact', PATH_MATCH_TYPE_PATH_PREFIX: 'PathPrefix', PATH_MATCH_TYPE_REGULAR_EXPRESSION: 'RegularExpression' } as const;
const PATH_MODIFIER = { PATH_MODIFIER_TYPE_REPLACE_FULL_PATH: 'ReplaceFullPath', PATH_MODIFIER_TYPE_REPLACE_PREFIX_MATCH: 'ReplacePrefixMatch' } as const;
const ROUTE_KIND = { ROUTE_KIND_HTTP_ROUTE: 'HTTPRoute', ROUTE_KIND_GRPC_ROUTE: 'GRPCRoute' } as const;
const LB = {
  LOAD_BALANCER_ALGORITHM_ROUND_ROBIN: 'ROUND_ROBIN', LOAD_BALANCER_ALGORITHM_LEAST_REQUEST: 'LEAST_REQUEST',
  LOAD_BALANCER_ALGORITHM_PEAK_EWMA: 'PEAK_EWMA', LOAD_BALANCER_ALGORITHM_CONSISTENT_HASH: 'CONSISTENT_HASH',
} as const;
const HC = { HEALTH_CHECK_PROTOCOL_TCP: 'TCP', HEALTH_CHECK_PROTOCOL_HTTP: 'HTTP', HEALTH_CHECK_PROTOCOL_GRPC: 'GRPC' } as const;
const UNIT = { RATE_LIMIT_UNIT_SECOND: 'Second', RATE_LIMIT_UNIT_MINUTE: 'Minute', RATE_LIMIT_UNIT_HOUR: 'Hour' } as const;
/** RouteFilter.type ↔ the oneof member that carries it */
const FILTER_FIELD = {
  requestHeaderModifier: 'RequestHeaderModifier', responseHeaderModifier: 'ResponseHeaderModifier',
  requestRedirect: 'RequestRedirect', urlRewrite: 'URLRewrite',
} as const;

// ---- model → wire ----
const stringMatchToWire = (x: { type: string; name: string; value: string }): W => ({ ...x, type: toEnum(STRING_MATCH, x.type) });
const pathModToWire = (p: { type: string; value: string } | undefined): W | null => (p ? { type: toEnum(PATH_MODIFIER, p.type), value: p.value } : null);

function filterToWire(f: RouteFilter): W {
  const field = toEnum(FILTER_FIELD, f.type);
  switch (f.type) {
    case 'RequestHeaderModifier': case 'ResponseHeaderModifier': return { [field]: { ...f.modifier } };
    case 'RequestRedirect': {
      const { type: _, path, ...rest } = f;
      return { [field]: { ...rest, path: pathModToWire(path) } };
    }
    case 'URLRewrite': {
      const { type: _, path, ...rest } = f;
      return { [field]: { ...rest, path: pathModToWire(path) } };
    }
  }
}

function matchToWire(x: RouteMatch): W {
  return {
    path: x.path ? { type: toEnum(PATH_MATCH, x.path.type), value: x.path.value } : null,
    headers: (x.headers ?? []).map(stringMatchToWire), queryParams: (x.queryParams ?? []).map(stringMatchToWire),
    ...(x.method !== undefined ? { method: x.method } : {}),
    grpc: x.grpc ? { ...x.grpc, type: toEnum(STRING_MATCH, x.grpc.type) } : null,
  };
}

const backendToWire = (b: RouteBackend): W => ({ ...b, filters: (b.filters ?? []).map(filterToWire) });

const ruleToWire = (r: RouteRule): W => ({
  ...r, matches: r.matches.map(matchToWire), filters: r.filters.map(filterToWire), backends: r.backends.map(backendToWire),
  timeouts: r.timeouts ?? null, retry: r.retry ?? null,
});

export const routeToWire = (r: CompiledRoute): W => ({ ...r, kind: toEnum(ROUTE_KIND, r.kind), rules: r.rules.map(ruleToWire) });

export function trafficPolicyToWire(p: CompiledTrafficPolicy): W {
  return {
    ...p,
    loadBalancer: p.loadBalancer ? { algorithm: toEnum(LB, p.loadBalancer.algorithm), hashOn: p.loadBalancer.hashOn ? { ...p.loadBalancer.hashOn, sourceIp: p.loadBalancer.hashOn.sourceIP === true } : null } : null,
    connectionPool: p.connectionPool ?? null,
    outlierDetection: p.outlierDetection ?? null,
    healthCheck: p.healthCheck ? { ...p.healthCheck, protocol: toEnum(HC, p.healthCheck.protocol) } : null,
    retry: p.retry ?? null,
    faultInjection: p.faultInjection ? { delay: p.faultInjection.delay ?? null, abort: p.faultInjection.abort ?? null } : null,
    rateLimit: p.rateLimit ? { ...p.rateLimit, unit: toEnum(UNIT, p.rateLimit.unit) } : null,
  };
}

// ---- wire → model ----
const serviceRef = (v: unknown): ServiceRef => (isW(v) ? { namespace: str(v.namespace), name: str(v.name) } : { namespace: '', name: '' });
const stringMatchFromWire = (what: string) => (x: W): { type: 'Exact' | 'RegularExpression'; name: string; value: string } =>
  ({ type: fromEnum(STRING_MATCH, what, x.type), name: str(x.name), value: str(x.value) });
const pathModFromWire = (v: unknown, what: string): { path?: { type: 'ReplaceFullPath' | 'ReplacePrefixMatch'; value: string } } =>
  (isW(v) ? { path: { type: fromEnum(PATH_MODIFIER, what, v.type), value: str(v.value) } } : {});
const pairs = (v: unknown): Array<{ name: string; value: string }> => arr(v).map((h) => ({ name: str(h.name), value: str(h.value) }));

function headerModFromWire(v: unknown): HeaderModifier {
  const h = isW(v) ? v : {};
  return { ...optList('set', pairs(h.set)), ...optList('add', pairs(h.add)), ...optList('remove', strs(h.remove)) };
}

function filterFromWire(f: W): RouteFilter {
  // oneofs: true names the member that is set in `filter`
  const field = typeof f.filter === 'string' ? f.filter : Object.keys(FILTER_FIELD).find((k) => isW(f[k]));
  const body = field !== undefined && isW(f[field]) ? f[field] : undefined;
  if (field === undefined || body === undefined || !Object.hasOwn(FILTER_FIELD, field)) throw new SnapshotDecodeError('RouteFilter: no filter set');
  switch (field as keyof typeof FILTER_FIELD) {
    case 'requestHeaderModifier': return { type: 'RequestHeaderModifier', modifier: headerModFromWire(body) };
    case 'responseHeaderModifier': return { type: 'ResponseHeaderModifier', modifier: headerModFromWire(body) };
    case 'requestRedirect':
      return {
        type: 'RequestRedirect',
        ...opt('scheme', body.scheme, (x) => fromEnum({ http: 'http', https: 'https' } as const, 'RequestRedirect.scheme', x)),
        ...opt('hostname', body.hostname, str), ...opt('port', body.port, num),
        ...pathModFromWire(body.path, 'RequestRedirect.path.type'), statusCode: num(body.statusCode),
      };
    case 'urlRewrite':
      return { type: 'URLRewrite', ...opt('hostname', body.hostname, str), ...pathModFromWire(body.path, 'URLRewrite.path.type') };
  }
}

function matchFromWire(x: W): RouteMatch {
  return {
    ...(isW(x.path) ? { path: { type: fromEnum(PATH_MATCH, 'PathMatch.type', x.path.type), value: str(x.path.value) } } : {}),
    ...optList('headers', arr(x.headers).map(stringMatchFromWire('RouteMatch.headers.type'))),
    ...optList('queryParams', arr(x.queryParams).map(stringMatchFromWire('RouteMatch.queryParams.type'))),
    ...opt('method', x.method, str),
    ...(isW(x.grpc) ? { grpc: { type: fromEnum(STRING_MATCH, 'GrpcMethodMatch.type', x.grpc.type), ...opt('service', x.grpc.service, str), ...opt('method', x.grpc.method, str) } } : {}),
  };
}

function ruleFromWire(r: W): RouteRule {
  return {
    index: num(r.index), ...opt('name', r.name, str),
    matches: arr(r.matches).map(matchFromWire),
    filters: arr(r.filters).map(filterFromWire),
    backends: arr(r.backends).map((b): RouteBackend => ({
      service: serviceRef(b.service), port: num(b.port), weight: num(b.weight), ...optList('filters', arr(b.filters).map(filterFromWire)),
    })),
    ...(isW(r.timeouts) ? { timeouts: { ...opt('requestMs', r.timeouts.requestMs, num), ...opt('backendRequestMs', r.timeouts.backendRequestMs, num) } } : {}),
    ...(isW(r.retry) ? { retry: { attempts: num(r.retry.attempts), ...optList('codes', nums(r.retry.codes)), ...opt('backoffMs', r.retry.backoffMs, num) } } : {}),
  };
}

export function routeFromWire(r: W): CompiledRoute {
  const parent = isW(r.parent) ? r.parent : {};
  return {
    kind: fromEnum(ROUTE_KIND, 'CompiledRoute.kind', r.kind), namespace: str(r.namespace), name: str(r.name),
    parent: { ...serviceRef(parent), ...opt('port', parent.port, num) },
    hostnames: strs(r.hostnames), rules: arr(r.rules).map(ruleFromWire), createdAt: str(r.createdAt),
  };
}

export function trafficPolicyFromWire(p: W): CompiledTrafficPolicy {
  const out: CompiledTrafficPolicy = { namespace: str(p.namespace), name: str(p.name), target: serviceRef(p.target) };
  if (isW(p.loadBalancer)) {
    const lb = p.loadBalancer, h = isW(lb.hashOn) ? lb.hashOn : undefined;
    out.loadBalancer = {
      algorithm: fromEnum(LB, 'LoadBalancer.algorithm', lb.algorithm),
      ...(h ? { hashOn: { ...opt('header', h.header, str), ...opt('cookie', h.cookie, str), ...opt('queryParameter', h.queryParameter, str), ...(h.sourceIp === true ? { sourceIP: true } : {}) } } : {}),
    };
  }
  if (isW(p.connectionPool)) {
    const c = p.connectionPool;
    out.connectionPool = {
      ...opt('maxConnections', c.maxConnections, num), ...opt('maxPendingRequests', c.maxPendingRequests, num),
      ...opt('maxRequestsPerConnection', c.maxRequestsPerConnection, num), ...opt('connectTimeoutMs', c.connectTimeoutMs, num),
      ...opt('idleTimeoutMs', c.idleTimeoutMs, num),
    };
  }
  if (isW(p.outlierDetection)) {
    const o = p.outlierDetection;
    out.outlierDetection = {
      ...opt('consecutive5xxErrors', o.consecutive5xxErrors, num), ...opt('consecutiveGatewayErrors', o.consecutiveGatewayErrors, num),
      intervalMs: num(o.intervalMs), baseEjectionMs: num(o.baseEjectionMs), maxEjectionPercent: num(o.maxEjectionPercent),
    };
  }
  if (isW(p.healthCheck)) {
    const h = p.healthCheck;
    out.healthCheck = {
      protocol: fromEnum(HC, 'HealthCheck.protocol', h.protocol), ...opt('path', h.path, str),
      ...optList('expectedStatuses', nums(h.expectedStatuses)), ...opt('grpcService', h.grpcService, str),
      intervalMs: num(h.intervalMs), timeoutMs: num(h.timeoutMs), healthyThreshold: num(h.healthyThreshold), unhealthyThreshold: num(h.unhealthyThreshold),
    };
  }
  if (isW(p.retry)) {
    const r = p.retry;
    out.retry = {
      attempts: num(r.attempts), ...opt('perTryTimeoutMs', r.perTryTimeoutMs, num), budgetPercent: num(r.budgetPercent),
      minRetriesPerSecond: num(r.minRetriesPerSecond), retryOn: strs(r.retryOn), retryNonIdempotent: r.retryNonIdempotent === true,
    };
  }
  if (isW(p.faultInjection)) {
    const f = p.faultInjection;
    out.faultInjection = {
      ...(isW(f.delay) ? { delay: { percent: num(f.delay.percent), delayMs: num(f.delay.delayMs) } } : {}),
      ...(isW(f.abort) ? { abort: { percent: num(f.abort.percent), httpStatus: num(f.abort.httpStatus) } } : {}),
    };
  }
  if (isW(p.rateLimit)) {
    out.rateLimit = { requests: num(p.rateLimit.requests), unit: fromEnum(UNIT, 'RateLimit.unit', p.rateLimit.unit), burst: num(p.rateLimit.burst) };
  }
  return out;
}
