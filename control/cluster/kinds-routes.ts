// Gateway API HTTPRoute and GRPCRoute (gateway.networking.k8s.io/v1) attached to a Service
// (GAMMA): schemas and the semantic checks the schema cannot express, as the Gateway API's
// own CEL rules and webhook state them. Strict like MeshPolicy: a filter or rule field we
// silently ignored would send traffic somewhere its author did not write. A parent of any
// other group (a Gateway) belongs to another controller and is left alone, not an error.
import type { HeaderModifier, RouteBackend, RouteFilter, RouteMatch, RouteRule, ServiceRef } from '../api/types.ts';
import { a, compact, m, readDuration, s, isProblem, type Doc, type Problem } from './read.ts';
import { int, list, name, obj, oneOf, parsePort, port, req, str, type Schema } from './schema.ts';
import type { RouteObject } from './state.ts';

/** Gateway API limits: a weight is 0..1,000,000 (default 1), 16 rules, 8 matches, 16 filters, 16 backends */
export const MAX_WEIGHT = 1_000_000;

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];
/** an HTTP header name (RFC 7230 token), as Gateway API validates HTTPHeaderName */
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
/** a hostname, optionally with one leading wildcard label (Gateway API Hostname) */
const HOSTNAME = /^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const GRPC_SERVICE = /^[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*$/;
const GRPC_METHOD = /^[A-Za-z_][A-Za-z_0-9]*$/;
/** the core group as parentRefs and backendRefs may spell it */
const CORE = new Set(['', 'core']);

const parentRef = obj({ group: str, kind: str, namespace: str, name: req(name), sectionName: str, port }, { strict: true });
const stringMatch = obj({ type: oneOf('Exact', 'RegularExpression'), name: req(name), value: req(str) }, { strict: true });
const headerValue = obj({ name: req(name), value: req(str) }, { strict: true });
const headerModifier = obj({ set: list(headerValue), add: list(headerValue), remove: list(name) }, { strict: true });
const pathModifier = obj({ type: req(oneOf('ReplaceFullPath', 'ReplacePrefixMatch')), replaceFullPath: str, replacePrefixMatch: str }, { strict: true });
/** filters we do not apply still have a shape to pass the schema, so the message can say "not supported" */
const anything = obj({});
const httpFilter = obj({
  type: req(name),
  requestHeaderModifier: headerModifier, responseHeaderModifier: headerModifier,
  requestRedirect: obj({ scheme: oneOf('http', 'https'), hostname: name, path: pathModifier, port, statusCode: int(100, 599) }, { strict: true }),
  urlRewrite: obj({ hostname: name, path: pathModifier }, { strict: true }),
  requestMirror: anything, extensionRef: anything, cors: anything, externalAuth: anything,
}, { strict: true });
const grpcFilter = obj({
  type: req(name), requestHeaderModifier: headerModifier, responseHeaderModifier: headerModifier, requestMirror: anything, extensionRef: anything,
}, { strict: true });
const backendRef = (filter: Schema): Schema => obj({
  group: str, kind: str, name: req(name), namespace: str, port, weight: int(0, MAX_WEIGHT), filters: list(filter),
}, { strict: true });

const httpRule = obj({
  name: str,
  matches: list(obj({
    path: obj({ type: oneOf('Exact', 'PathPrefix', 'RegularExpression'), value: str }, { strict: true }),
    headers: list(stringMatch), queryParams: list(stringMatch), method: oneOf(...METHODS),
  }, { strict: true })),
  filters: list(httpFilter),
  backendRefs: list(backendRef(httpFilter)),
  timeouts: obj({ request: str, backendRequest: str }, { strict: true }),
  retry: obj({ codes: list(int(400, 599)), attempts: int(0, 1_000), backoff: str }, { strict: true }),
}, { strict: true });

const grpcRule = obj({
  name: str,
  matches: list(obj({
    method: obj({ type: oneOf('Exact', 'RegularExpression'), service: str, method: str }, { strict: true }),
    headers: list(stringMatch),
  }, { strict: true })),
  filters: list(grpcFilter),
  backendRefs: list(backendRef(grpcFilter)),
}, { strict: true });

const routeSpec = (rule: Schema): Schema => obj({
  parentRefs: list(parentRef), hostnames: list(str), rules: list(rule),
}, { strict: true });

export const HTTPROUTE_SPEC = routeSpec(httpRule);
export const GRPCROUTE_SPEC = routeSpec(grpcRule);

const FILTERS: Record<'HTTPRoute' | 'GRPCRoute', Record<string, string>> = {
  HTTPRoute: {
    RequestHeaderModifier: 'requestHeaderModifier', ResponseHeaderModifier: 'responseHeaderModifier',
    RequestRedirect: 'requestRedirect', URLRewrite: 'urlRewrite',
  },
  GRPCRoute: { RequestHeaderModifier: 'requestHeaderModifier', ResponseHeaderModifier: 'responseHeaderModifier' },
};
/** the only filters a backendRef may carry (RouteBackend.filters) */
const BACKEND_FILTERS = ['RequestHeaderModifier', 'ResponseHeaderModifier'];

const GATEWAY_GROUP = 'gateway.networking.k8s.io';

/** a parentRef's group and kind with the Gateway API defaults (gateway.networking.k8s.io, Gateway) */
const parentKind = (p: Doc): { group: string; kind: string } => ({ group: p.group == null ? GATEWAY_GROUP : s(p.group), kind: s(p.kind, 'Gateway') });

/** the parentRef names a Service (GAMMA), the only parents nodal acts on */
export const isServiceParent = (p: unknown): boolean => {
  const { group, kind } = parentKind(m(p));
  return CORE.has(group) && kind === 'Service';
};

/**
 * the document's Service parents; a problem for a parentRef that tries to name a Service
 * and gets it wrong. An empty list (only Gateway parents) means the route is not ours.
 */
export function serviceParents(spec: Doc, namespace: string): Array<ServiceRef & { port?: number }> | Problem {
  const out: Array<ServiceRef & { port?: number }> = [];
  const refs = a(spec.parentRefs);
  for (let i = 0; i < refs.length; i++) {
    const p = m(refs[i]), at = `spec.parentRefs[${i}]`;
    const { group, kind } = parentKind(p);
    if (!CORE.has(group)) {
      if (kind === 'Service') return { path: `${at}.group`, reason: `${JSON.stringify(group)}: a Service parent is in the core group (group: "")` };
      continue; // a Gateway (or another controller's parent): not ours
    }
    if (kind !== 'Service') return { path: `${at}.kind`, reason: `${JSON.stringify(kind)} in the core group: only Service parents (GAMMA) are supported` };
    if (p.sectionName != null) return { path: `${at}.sectionName`, reason: 'not supported for a Service parent: name the Service port with port' };
    out.push(compact({ namespace: s(p.namespace, namespace), name: s(p.name), port: p.port == null ? undefined : parsePort(p.port) }));
  }
  return out;
}

/** validate and convert a route that passed its schema and has at least one Service parent */
export function convertRoute(kind: 'HTTPRoute' | 'GRPCRoute', d: Doc, namespace: string, parents: RouteObject['parents']): RouteObject | Problem {
  const spec = m(d.spec), md = m(d.metadata);
  const hostnames: string[] = [];
  const rawHosts = a(spec.hostnames);
  for (let i = 0; i < rawHosts.length; i++) {
    const h = s(rawHosts[i]).toLowerCase();
    if (!HOSTNAME.test(h) || h.length > 253) return { path: `spec.hostnames[${i}]`, reason: `${JSON.stringify(rawHosts[i])} is not a hostname (a DNS name, optionally starting with *.)` };
    hostnames.push(h);
  }
  const rules: RouteRule[] = [];
  const rawRules = a(spec.rules);
  for (let i = 0; i < rawRules.length; i++) {
    const r = convertRule(kind, m(rawRules[i]), `spec.rules[${i}]`, namespace, i);
    if (isProblem(r)) return r;
    rules.push(r);
  }
  return { kind, namespace, name: s(md.name), parents, hostnames, rules, createdAt: s(md.creationTimestamp) };
}

function convertRule(kind: 'HTTPRoute' | 'GRPCRoute', r: Doc, at: string, namespace: string, index: number): RouteRule | Problem {
  const matches: RouteMatch[] = [];
  const rawMatches = a(r.matches);
  for (let j = 0; j < rawMatches.length; j++) {
    const mt = kind === 'HTTPRoute' ? httpMatch(m(rawMatches[j]), `${at}.matches[${j}]`) : grpcMatch(m(rawMatches[j]), `${at}.matches[${j}]`);
    if (isProblem(mt)) return mt;
    matches.push(mt);
  }
  const filters = convertFilters(kind, a(r.filters), `${at}.filters`, Object.keys(FILTERS[kind]));
  if (isProblem(filters)) return filters;
  const types = filters.map((f) => f.type);
  if (types.includes('RequestRedirect') && types.includes('URLRewrite')) {
    return { path: `${at}.filters`, reason: 'RequestRedirect and URLRewrite cannot be used together' };
  }
  const prefixRewrite = filters.some((f) => (f.type === 'RequestRedirect' || f.type === 'URLRewrite') && f.path?.type === 'ReplacePrefixMatch');
  if (prefixRewrite && (matches.length === 0 || matches.some((mt) => mt.path?.type !== 'PathPrefix'))) {
    return { path: `${at}.filters`, reason: 'ReplacePrefixMatch needs every match of the rule to have a PathPrefix path match' };
  }
  const backends: RouteBackend[] = [];
  const rawBackends = a(r.backendRefs);
  if (types.includes('RequestRedirect') && rawBackends.length > 0) {
    return { path: `${at}.backendRefs`, reason: 'a rule with a RequestRedirect filter answers the request itself and cannot have backendRefs' };
  }
  for (let j = 0; j < rawBackends.length; j++) {
    const b = convertBackend(kind, m(rawBackends[j]), `${at}.backendRefs[${j}]`, namespace);
    if (isProblem(b)) return b;
    backends.push(b);
  }
  const rule: RouteRule = { index, matches, filters, backends };
  if (typeof r.name === 'string' && r.name !== '') rule.name = r.name;
  if (r.timeouts !== undefined && r.timeouts !== null) {
    const t = timeouts(m(r.timeouts), `${at}.timeouts`);
    if (isProblem(t)) return t;
    if (Object.keys(t).length > 0) rule.timeouts = t;
  }
  if (r.retry !== undefined && r.retry !== null) {
    const rt = m(r.retry);
    // Gateway API leaves the default number of attempts to the implementation: one retry
    const retry: NonNullable<RouteRule['retry']> = { attempts: typeof rt.attempts === 'number' ? rt.attempts : 1 };
    const codes = a(rt.codes) as number[];
    if (codes.length > 0) retry.codes = [...new Set(codes)].sort((x, y) => x - y);
    if (rt.backoff !== undefined && rt.backoff !== null) {
      const ms = readDuration(rt.backoff, `${at}.retry.backoff`);
      if (isProblem(ms)) return ms;
      retry.backoffMs = ms;
    }
    rule.retry = retry;
  }
  return rule;
}

/** Gateway API: a zero duration disables that timeout, so it compiles to absent */
function timeouts(t: Doc, at: string): NonNullable<RouteRule['timeouts']> | Problem {
  const out: NonNullable<RouteRule['timeouts']> = {};
  if (t.request != null) {
    const ms = readDuration(t.request, `${at}.request`);
    if (isProblem(ms)) return ms;
    if (ms > 0) out.requestMs = ms;
  }
  if (t.backendRequest != null) {
    const ms = readDuration(t.backendRequest, `${at}.backendRequest`);
    if (isProblem(ms)) return ms;
    if (ms > 0) out.backendRequestMs = ms;
  }
  if (out.requestMs !== undefined && out.backendRequestMs !== undefined && out.backendRequestMs > out.requestMs) {
    return { path: `${at}.backendRequest`, reason: `${s(t.backendRequest)} is longer than request (${s(t.request)}): one try cannot outlast the whole request` };
  }
  return out;
}

function stringMatches(list: unknown[], at: string, lower: boolean): Array<{ type: 'Exact' | 'RegularExpression'; name: string; value: string }> | Problem {
  const out: Array<{ type: 'Exact' | 'RegularExpression'; name: string; value: string }> = [];
  const seen = new Set<string>();
  for (let k = 0; k < list.length; k++) {
    const h = m(list[k]), type = s(h.type, 'Exact') as 'Exact' | 'RegularExpression';
    const nm = lower ? s(h.name).toLowerCase() : s(h.name);
    if (lower && !HEADER_NAME.test(nm)) return { path: `${at}[${k}].name`, reason: `${JSON.stringify(h.name)} is not an HTTP header name` };
    // Gateway API: a repeated name is ignored after its first entry; we say so instead
    if (seen.has(nm)) return { path: `${at}[${k}].name`, reason: `${JSON.stringify(h.name)} is matched twice` };
    seen.add(nm);
    if (type === 'RegularExpression') {
      const bad = regexProblem(s(h.value), `${at}[${k}].value`);
      if (bad) return bad;
    }
    out.push({ type, name: nm, value: s(h.value) });
  }
  return out;
}

function regexProblem(pattern: string, path: string): Problem | undefined {
  try {
    new RegExp(pattern); // eslint-disable-line no-new
    return undefined;
  } catch (err) {
    return { path, reason: `${JSON.stringify(pattern)} is not a regular expression: ${(err as Error).message.replace(/^Invalid regular expression: /, '')}` };
  }
}

function httpMatch(mt: Doc, at: string): RouteMatch | Problem {
  const out: RouteMatch = {};
  if (mt.path != null) {
    const p = m(mt.path), type = s(p.type, 'PathPrefix') as NonNullable<RouteMatch['path']>['type'], value = s(p.value, '/');
    if (type === 'RegularExpression') {
      const bad = regexProblem(value, `${at}.path.value`);
      if (bad) return bad;
    } else if (!value.startsWith('/')) {
      return { path: `${at}.path.value`, reason: `${JSON.stringify(value)}: a ${type} path must start with /` };
    } else if (type === 'PathPrefix' && /\/\/|\/\.\.?(\/|$)/.test(value)) {
      return { path: `${at}.path.value`, reason: `${JSON.stringify(value)} must not contain // or /./ or /../ segments` };
    }
    out.path = { type, value };
  }
  const headers = stringMatches(a(mt.headers), `${at}.headers`, true);
  if (isProblem(headers)) return headers;
  if (headers.length > 0) out.headers = headers;
  const query = stringMatches(a(mt.queryParams), `${at}.queryParams`, false);
  if (isProblem(query)) return query;
  if (query.length > 0) out.queryParams = query;
  if (typeof mt.method === 'string') out.method = mt.method;
  return out;
}

function grpcMatch(mt: Doc, at: string): RouteMatch | Problem {
  const out: RouteMatch = {};
  if (mt.method != null) {
    const g = m(mt.method), type = s(g.type, 'Exact') as 'Exact' | 'RegularExpression';
    const service = typeof g.service === 'string' && g.service !== '' ? g.service : undefined;
    const method = typeof g.method === 'string' && g.method !== '' ? g.method : undefined;
    if (service === undefined && method === undefined) return { path: `${at}.method`, reason: 'must set at least one of service, method' };
    if (type === 'Exact') {
      if (service !== undefined && !GRPC_SERVICE.test(service)) return { path: `${at}.method.service`, reason: `${JSON.stringify(service)} is not a gRPC service name (package.Service)` };
      if (method !== undefined && !GRPC_METHOD.test(method)) return { path: `${at}.method.method`, reason: `${JSON.stringify(method)} is not a gRPC method name` };
    } else {
      for (const [field, v] of [['service', service], ['method', method]] as const) {
        const bad = v === undefined ? undefined : regexProblem(v, `${at}.method.${field}`);
        if (bad) return bad;
      }
    }
    out.grpc = compact({ type, service, method });
  }
  const headers = stringMatches(a(mt.headers), `${at}.headers`, true);
  if (isProblem(headers)) return headers;
  if (headers.length > 0) out.headers = headers;
  return out;
}

function convertFilters(kind: 'HTTPRoute' | 'GRPCRoute', list: unknown[], at: string, supported: string[]): RouteFilter[] | Problem {
  const out: RouteFilter[] = [];
  for (let j = 0; j < list.length; j++) {
    const f = m(list[j]), type = s(f.type), here = `${at}[${j}]`;
    if (!supported.includes(type)) {
      return { path: `${here}.type`, reason: `${JSON.stringify(type)} is not supported by nodal here (supported: ${supported.join(', ')})` };
    }
    if (out.some((x) => x.type === type)) return { path: `${here}.type`, reason: `${type} appears twice; Gateway API allows each filter once per rule` };
    const field = FILTERS[kind][type]!;
    const stray = Object.keys(f).find((k) => k !== 'type' && k !== field);
    if (stray !== undefined) return { path: `${here}.${stray}`, reason: `does not belong to a ${type} filter (it takes ${field})` };
    if (f[field] == null) return { path: `${here}.${field}`, reason: `is required for type ${type}` };
    const body = m(f[field]);
    switch (type) {
      case 'RequestHeaderModifier': case 'ResponseHeaderModifier': {
        const mod = headerMod(body, `${here}.${field}`);
        if (isProblem(mod)) return mod;
        out.push({ type, modifier: mod });
        break;
      }
      case 'RequestRedirect': {
        const path = pathMod(body.path, `${here}.${field}.path`);
        if (isProblem(path)) return path;
        const statusCode = typeof body.statusCode === 'number' ? body.statusCode : 301;
        if (statusCode !== 301 && statusCode !== 302) return { path: `${here}.${field}.statusCode`, reason: `${statusCode} is not supported (301 or 302)` };
        out.push(compact({
          type: 'RequestRedirect' as const, scheme: body.scheme as 'http' | 'https' | undefined,
          hostname: typeof body.hostname === 'string' ? body.hostname.toLowerCase() : undefined,
          port: body.port === undefined ? undefined : parsePort(body.port), path, statusCode,
        }));
        break;
      }
      case 'URLRewrite': {
        const path = pathMod(body.path, `${here}.${field}.path`);
        if (isProblem(path)) return path;
        if (body.hostname === undefined && path === undefined) return { path: `${here}.${field}`, reason: 'must set at least one of hostname, path' };
        out.push(compact({ type: 'URLRewrite' as const, hostname: typeof body.hostname === 'string' ? body.hostname.toLowerCase() : undefined, path }));
        break;
      }
    }
  }
  return out;
}

function headerMod(body: Doc, at: string): HeaderModifier | Problem {
  const out: HeaderModifier = {};
  const names = new Set<string>();
  for (const op of ['set', 'add'] as const) {
    const list = a(body[op]);
    for (let k = 0; k < list.length; k++) {
      const h = m(list[k]), nm = s(h.name);
      if (!HEADER_NAME.test(nm)) return { path: `${at}.${op}[${k}].name`, reason: `${JSON.stringify(nm)} is not an HTTP header name` };
      if (names.has(nm.toLowerCase())) return { path: `${at}.${op}[${k}].name`, reason: `${JSON.stringify(nm)} is modified twice` };
      names.add(nm.toLowerCase());
    }
    if (list.length > 0) out[op] = list.map((h) => ({ name: s(m(h).name), value: s(m(h).value) }));
  }
  const remove = a(body.remove).map((x) => s(x).toLowerCase());
  const bad = remove.findIndex((nm) => !HEADER_NAME.test(nm) || names.has(nm));
  if (bad >= 0) {
    return { path: `${at}.remove[${bad}]`, reason: names.has(remove[bad]!) ? `${JSON.stringify(remove[bad])} is also set or added` : `${JSON.stringify(remove[bad])} is not an HTTP header name` };
  }
  if (remove.length > 0) out.remove = [...new Set(remove)];
  if (Object.keys(out).length === 0) return { path: at, reason: 'must set at least one of set, add, remove' };
  return out;
}

function pathMod(v: unknown, at: string): { type: 'ReplaceFullPath' | 'ReplacePrefixMatch'; value: string } | undefined | Problem {
  if (v === undefined || v === null) return undefined;
  const p = m(v), type = s(p.type) as 'ReplaceFullPath' | 'ReplacePrefixMatch';
  const field = type === 'ReplaceFullPath' ? 'replaceFullPath' : 'replacePrefixMatch';
  const other = type === 'ReplaceFullPath' ? 'replacePrefixMatch' : 'replaceFullPath';
  if (p[other] !== undefined) return { path: `${at}.${other}`, reason: `does not go with type ${type} (it takes ${field})` };
  if (typeof p[field] !== 'string') return { path: `${at}.${field}`, reason: `is required for type ${type}` };
  const value = s(p[field]);
  if (!value.startsWith('/')) return { path: `${at}.${field}`, reason: `${JSON.stringify(value)} must start with /` };
  return { type, value };
}

function convertBackend(kind: 'HTTPRoute' | 'GRPCRoute', b: Doc, at: string, namespace: string): RouteBackend | Problem {
  if (!CORE.has(s(b.group)) || s(b.kind, 'Service') !== 'Service') {
    return { path: `${at}.kind`, reason: `${[s(b.group), s(b.kind, 'Service')].filter((x) => x !== '').join('/')}: only Service backends are supported` };
  }
  if (b.port === undefined || b.port === null) return { path: `${at}.port`, reason: 'is required for a Service backend' };
  const out: RouteBackend = {
    service: { namespace: s(b.namespace, namespace), name: s(b.name) },
    port: parsePort(b.port)!,
    weight: typeof b.weight === 'number' ? b.weight : 1,
  };
  const filters = convertFilters(kind, a(b.filters), `${at}.filters`, BACKEND_FILTERS);
  if (isProblem(filters)) return filters;
  if (filters.length > 0) out.filters = filters;
  return out;
}
