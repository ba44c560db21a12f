// Route selection for one request, following Gateway API HTTPRoute and GRPCRoute with a
// Service parent (GAMMA). A RouteTable is built once per snapshot; forService() compiles the
// routes attached to one Service port into a matcher whose candidates are sorted once, so
// match() walks a list and stops at the first hit (regexes are compiled at build time).
//
// Semantics (Gateway API v1, HTTPRouteRule / GRPCRouteRule "precedence"):
// - a parentRef with a port attaches the route to that Service port only;
// - hostnames: exact, or `*.suffix` matching one or more labels (`*.example.com` matches
//   `a.b.example.com`, not `example.com`); the request's host loses its `:port`. Among the
//   routes whose hostnames accept the host, only the most specific hostname competes
//   (exact, then the longest wildcard, then routes with no hostnames), as the listener
//   hostname rules do;
// - HTTPRoute: Exact path, then RegularExpression (implementation-specific: we put it
//   between Exact and PathPrefix, as Contour does), then PathPrefix by length; then method
//   match; then more header matches; then more query matches; then the older route
//   (createdAt), then namespace/name; then rule order, then match order. PathPrefix
//   matches whole segments and ignores a trailing `/` in the prefix. An empty `matches`
//   is PathPrefix "/". Regexes must match the whole value;
// - GRPCRoute (only for requests that carry `grpc`): more characters of exact service,
//   then of exact method (a regex counts as 0 characters: less specific than any exact),
//   then more header matches, then the same route and rule tie-breaks. A gRPC request is
//   matched against GRPCRoutes first and falls back to HTTPRoutes on the same port;
// - the query string is compared after percent-decoding (`+` is a space); the path is
//   compared as sent (no decoding, no dot-segment removal).
// Filters: header modifiers (set replaces, add appends with ", ", remove deletes),
// RequestRedirect and URLRewrite with ReplaceFullPath / ReplacePrefixMatch as the spec's
// HTTPPathModifier table defines, including its trailing-slash cases.

import type { CompiledRoute, HeaderModifier, RouteBackend, RouteFilter, RouteMatch, RouteRule } from '../../../control/api/types.ts';

export interface RouteRequest {
  /** upper-case */
  method: string;
  /** path with the query string */
  path: string;
  /** Host / :authority, possibly with a port */
  host: string;
  /** lower-case name → value (repeated headers joined with ", ") */
  headers: Record<string, string>;
  /** present for gRPC requests: from `/service/method` */
  grpc?: { service: string; method: string };
  /** for redirects: the scheme the client used (default http) */
  scheme?: 'http' | 'https';
  /** for redirects: the Service port the request was addressed to (the GAMMA "listener") */
  port?: number;
}

/** shared between requests and frozen: do not modify */
export interface RouteMatchResult {
  readonly route: CompiledRoute;
  readonly rule: RouteRule;
  /** the match that selected the rule; undefined when the rule has no matches */
  readonly match: RouteMatch | undefined;
  /** the PathPrefix that matched (normalized: no trailing `/`, "" for "/"), for ReplacePrefixMatch */
  readonly matchedPrefix: string | undefined;
}

const PATH_EXACT = 3;
const PATH_REGEX = 2;
const PATH_PREFIX = 1;

interface CompiledStringMatch { name: string; exact: string | undefined; regex: RegExp | undefined }

interface Candidate {
  route: CompiledRoute;
  rule: RouteRule;
  match: RouteMatch | undefined;
  routeIndex: number;
  grpc: boolean;
  // path (HTTP)
  pathKind: number;
  pathValue: string;
  pathRegex: RegExp | undefined;
  method: string | undefined;
  headers: CompiledStringMatch[];
  query: CompiledStringMatch[];
  // gRPC
  grpcService: CompiledStringMatch | undefined;
  grpcMethod: CompiledStringMatch | undefined;
  grpcServiceLen: number;
  grpcMethodLen: number;
  /** what match() returns for this candidate: built once, shared by every request */
  result: RouteMatchResult;
}

interface CompiledHost { exact: string | undefined; suffix: string | undefined }

/** `^(?:re)$`: Gateway API regex matches are full matches */
export function fullMatchRegex(re: string): RegExp {
  return new RegExp(`^(?:${re})$`);
}

function compileString(m: { type: 'Exact' | 'RegularExpression'; name: string; value: string }): CompiledStringMatch {
  return m.type === 'RegularExpression'
    ? { name: m.name, exact: undefined, regex: fullMatchRegex(m.value) }
    : { name: m.name, exact: m.value, regex: undefined };
}

function stringMatches(m: CompiledStringMatch, v: string | undefined): boolean {
  if (v === undefined) return false;
  return m.exact !== undefined ? m.exact === v : m.regex!.test(v);
}

/** a PathPrefix value without its trailing `/`; "/" becomes "" (matches everything) */
export function normalizePrefix(p: string): string {
  let end = p.length;
  while (end > 0 && p.charCodeAt(end - 1) === 47) end--;
  return end === p.length ? p : p.slice(0, end);
}

/** segment-wise prefix: "/foo" matches "/foo", "/foo/", "/foo/bar", not "/foobar" */
export function prefixMatches(prefix: string, path: string): boolean {
  const n = prefix.length;
  if (n === 0) return true;
  if (path.length < n || (path.length > n && path.charCodeAt(n) !== 47)) return false;
  // compared from the end: sibling prefixes (/api/v1, /api/v2) differ there. Twice as fast
  // as startsWith() in V8 for these short strings, and this runs once per candidate.
  for (let i = n - 1; i >= 0; i--) if (path.charCodeAt(i) !== prefix.charCodeAt(i)) return false;
  return true;
}

function compileCandidate(route: CompiledRoute, routeIndex: number, rule: RouteRule, match: RouteMatch | undefined): Candidate {
  const grpc = route.kind === 'GRPCRoute';
  const p = grpc ? undefined : match?.path;
  const prefix = grpc || (p && p.type !== 'PathPrefix') ? undefined : normalizePrefix(p?.value ?? '/');
  const c: Candidate = {
    route, rule, match, routeIndex, grpc,
    pathKind: PATH_PREFIX, pathValue: prefix ?? '', pathRegex: undefined, method: match?.method,
    headers: (match?.headers ?? []).map((h) => compileString({ ...h, name: h.name.toLowerCase() })),
    query: (match?.queryParams ?? []).map(compileString),
    grpcService: undefined, grpcMethod: undefined, grpcServiceLen: 0, grpcMethodLen: 0,
    result: Object.freeze({ route, rule, match, matchedPrefix: prefix }),
  };
  if (grpc) {
    const g = match?.grpc;
    if (g?.service !== undefined) {
      c.grpcService = compileString({ type: g.type, name: '', value: g.service });
      c.grpcServiceLen = g.type === 'Exact' ? g.service.length : 0;
    }
    if (g?.method !== undefined) {
      c.grpcMethod = compileString({ type: g.type, name: '', value: g.method });
      c.grpcMethodLen = g.type === 'Exact' ? g.method.length : 0;
    }
    return c;
  }
  if (p?.type === 'Exact') { c.pathKind = PATH_EXACT; c.pathValue = p.value; }
  else if (p?.type === 'RegularExpression') { c.pathKind = PATH_REGEX; c.pathValue = p.value; c.pathRegex = fullMatchRegex(p.value); }
  return c;
}

function compareRoutes(a: Candidate, b: Candidate): number {
  if (a.route !== b.route) {
    const ta = Date.parse(a.route.createdAt), tb = Date.parse(b.route.createdAt);
    if (ta !== tb) return (Number.isNaN(ta) ? Infinity : ta) - (Number.isNaN(tb) ? Infinity : tb);
    const na = `${a.route.namespace}/${a.route.name}`, nb = `${b.route.namespace}/${b.route.name}`;
    if (na !== nb) return na < nb ? -1 : 1;
  }
  // same route (or identical names): rule order, then match order (stable sort keeps it)
  return a.rule.index - b.rule.index;
}

function compareHttp(a: Candidate, b: Candidate): number {
  if (a.pathKind !== b.pathKind) return b.pathKind - a.pathKind;
  if (a.pathKind === PATH_PREFIX && a.pathValue.length !== b.pathValue.length) return b.pathValue.length - a.pathValue.length;
  if ((a.method === undefined) !== (b.method === undefined)) return a.method === undefined ? 1 : -1;
  if (a.headers.length !== b.headers.length) return b.headers.length - a.headers.length;
  if (a.query.length !== b.query.length) return b.query.length - a.query.length;
  return compareRoutes(a, b);
}

function compareGrpc(a: Candidate, b: Candidate): number {
  if (a.grpcServiceLen !== b.grpcServiceLen) return b.grpcServiceLen - a.grpcServiceLen;
  if (a.grpcMethodLen !== b.grpcMethodLen) return b.grpcMethodLen - a.grpcMethodLen;
  if (a.headers.length !== b.headers.length) return b.headers.length - a.headers.length;
  return compareRoutes(a, b);
}

/** host without port, lower-case; IPv6 literals keep their brackets */
export function hostOnly(host: string): string {
  let end = host.length;
  const colon = host.lastIndexOf(':');
  if (colon > 0 && host.indexOf(']', colon) < 0 && (host[0] !== '[' || host[colon - 1] === ']')) end = colon;
  const h = end === host.length ? host : host.slice(0, end);
  return h.toLowerCase();
}

/** the port in a Host header, if any */
function hostPort(host: string): number | undefined {
  const colon = host.lastIndexOf(':');
  if (colon <= 0 || host.indexOf(']', colon) >= 0) return undefined;
  if (host[0] !== '[' && host.indexOf(':') !== colon) return undefined;
  const n = Number(host.slice(colon + 1));
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

/**
 * How specifically a route's hostnames accept `host`: -1 not at all, 0 the route has no
 * hostnames, 1 + suffix length for a wildcard, 1e6 for an exact name.
 */
function hostRank(hosts: CompiledHost[], host: string): number {
  if (hosts.length === 0) return 0;
  let best = -1;
  for (const h of hosts) {
    if (h.exact !== undefined) { if (h.exact === host) return 1e6; continue; }
    const s = h.suffix!;
    if (host.length > s.length && host.endsWith(s) && s.length + 1 > best) best = s.length + 1;
  }
  return best;
}

/** the first value of a query parameter, percent-decoded; undefined if absent */
function queryParam(query: string, name: string): string | undefined {
  let i = 0;
  while (i <= query.length) {
    let amp = query.indexOf('&', i);
    if (amp < 0) amp = query.length;
    const eq = query.indexOf('=', i);
    const keyEnd = eq >= 0 && eq < amp ? eq : amp;
    if (decodeQuery(query.slice(i, keyEnd)) === name) return decodeQuery(keyEnd === amp ? '' : query.slice(keyEnd + 1, amp));
    i = amp + 1;
  }
  return undefined;
}

function decodeQuery(s: string): string {
  if (s.indexOf('%') < 0 && s.indexOf('+') < 0) return s;
  const plus = s.replaceAll('+', ' ');
  try { return decodeURIComponent(plus); } catch { return plus; }
}

/**
 * The routes attached to one Service port, precompiled and sorted by precedence. match()
 * returns a shared frozen result (no allocation per request); it allocates only to split
 * the query off the path and to decode query values a rule asks about.
 */
export class ServiceRoutes {
  readonly routes: readonly CompiledRoute[];
  private readonly http: Candidate[] = [];
  private readonly grpc: Candidate[] = [];
  private readonly hosts: CompiledHost[][] = [];
  private readonly anyHostnames: boolean;
  /** per-route host ranks of the request being matched: reused, match() is synchronous */
  private readonly ranks: { per: number[]; best: number } = { per: [], best: -1 };

  constructor(routes: CompiledRoute[]) {
    this.routes = routes;
    routes.forEach((route, i) => {
      this.hosts.push(route.hostnames.map((h) => {
        const l = h.toLowerCase();
        return l.startsWith('*.') ? { exact: undefined, suffix: l.slice(1) } : { exact: l, suffix: undefined };
      }));
      const list = route.kind === 'GRPCRoute' ? this.grpc : this.http;
      for (const rule of route.rules) {
        if (rule.matches.length === 0) list.push(compileCandidate(route, i, rule, undefined));
        for (const m of rule.matches) list.push(compileCandidate(route, i, rule, m));
      }
    });
    this.anyHostnames = routes.some((r) => r.hostnames.length > 0);
    this.http.sort(compareHttp);
    this.grpc.sort(compareGrpc);
  }

  match(req: RouteRequest): RouteMatchResult | undefined {
    const ranks = this.anyHostnames ? this.hostRanks(hostOnly(req.host)) : undefined;
    if (ranks && ranks.best < 0) return undefined;
    if (req.grpc && this.grpc.length > 0) {
      const hit = this.walk(this.grpc, req, ranks, '', '');
      if (hit) return hit;
    }
    if (this.http.length === 0) return undefined;
    const q = req.path.indexOf('?');
    const path = q < 0 ? req.path : req.path.slice(0, q);
    const query = q < 0 ? '' : req.path.slice(q + 1);
    return this.walk(this.http, req, ranks, path, query);
  }

  private hostRanks(host: string): { per: number[]; best: number } {
    const ranks = this.ranks;
    let best = -1;
    for (let i = 0; i < this.hosts.length; i++) {
      const r = hostRank(this.hosts[i]!, host);
      ranks.per[i] = r;
      if (r > best) best = r;
    }
    ranks.best = best;
    return ranks;
  }

  private walk(list: Candidate[], req: RouteRequest, ranks: { per: number[]; best: number } | undefined, path: string, query: string): RouteMatchResult | undefined {
    for (const c of list) {
      if (ranks && ranks.per[c.routeIndex] !== ranks.best) continue;
      if (c.grpc ? !grpcMatches(c, req) : !httpMatches(c, req, path, query)) continue;
      return c.result;
    }
    return undefined;
  }
}

function headersMatch(c: Candidate, headers: Record<string, string>): boolean {
  for (const h of c.headers) if (!stringMatches(h, headers[h.name])) return false;
  return true;
}

function httpMatches(c: Candidate, req: RouteRequest, path: string, query: string): boolean {
  if (c.pathKind === PATH_EXACT) { if (path !== c.pathValue) return false; }
  else if (c.pathKind === PATH_REGEX) { if (!c.pathRegex!.test(path)) return false; }
  else if (!prefixMatches(c.pathValue, path)) return false;
  if (c.method !== undefined && c.method !== req.method) return false;
  if (!headersMatch(c, req.headers)) return false;
  for (const m of c.query) if (!stringMatches(m, queryParam(query, m.name))) return false;
  return true;
}

function grpcMatches(c: Candidate, req: RouteRequest): boolean {
  const g = req.grpc!;
  if (c.grpcService && !stringMatches(c.grpcService, g.service)) return false;
  if (c.grpcMethod && !stringMatches(c.grpcMethod, g.method)) return false;
  return headersMatch(c, req.headers);
}

const NO_ROUTES = new ServiceRoutes([]);

/** the gRPC service and method of a request path `/pkg.Service/Method`; undefined if it is not one */
export function grpcMethodOf(path: string): { service: string; method: string } | undefined {
  const slash = path.indexOf('/', 1);
  if (path.charCodeAt(0) !== 47 || slash < 2 || slash === path.length - 1) return undefined;
  if (path.indexOf('/', slash + 1) >= 0 || path.indexOf('?') >= 0) return undefined;
  return { service: path.slice(1, slash), method: path.slice(slash + 1) };
}

/** every route of a snapshot, by parent Service; matchers compiled on first use and kept */
export class RouteTable {
  private readonly byService = new Map<string, CompiledRoute[]>();
  private readonly compiled = new Map<string, ServiceRoutes>();

  constructor(routes: readonly CompiledRoute[]) {
    for (const r of routes) {
      const key = `${r.parent.namespace}/${r.parent.name}`;
      let list = this.byService.get(key);
      if (!list) this.byService.set(key, list = []);
      list.push(r);
    }
  }

  /** does any route attach to this Service (any port)? cheap check before parsing HTTP */
  hasRoutes(namespace: string, name: string): boolean {
    // no key built per request in a mesh without routes
    return this.byService.size > 0 && this.byService.has(`${namespace}/${name}`);
  }

  forService(namespace: string, name: string, port: number): ServiceRoutes {
    const key = `${namespace}/${name}:${port}`;
    let m = this.compiled.get(key);
    if (m) return m;
    const all = this.byService.get(`${namespace}/${name}`);
    const mine = all?.filter((r) => r.parent.port === undefined || r.parent.port === port);
    m = mine && mine.length > 0 ? new ServiceRoutes(mine) : NO_ROUTES;
    this.compiled.set(key, m);
    return m;
  }
}

/**
 * A backend by weight: `random()` in [0,1) scaled to the sum of weights. Weight 0 is never
 * chosen; undefined when there are no backends or every weight is 0 (the caller answers 500).
 */
export function pickBackend(rule: RouteRule, random: () => number): RouteBackend | undefined {
  const backends = rule.backends;
  let total = 0;
  for (const b of backends) if (b.weight > 0) total += b.weight;
  if (total <= 0) return undefined;
  let x = random() * total;
  let last: RouteBackend | undefined;
  for (const b of backends) {
    if (b.weight <= 0) continue;
    if (x < b.weight) return b;
    x -= b.weight;
    last = b;
  }
  return last; // rounding when random() is just below 1
}

/** apply one header modifier in place: set replaces, add appends with ", ", remove deletes */
export function modifyHeaders(headers: Record<string, string>, m: HeaderModifier): void {
  if (m.set) for (const h of m.set) headers[h.name.toLowerCase()] = h.value;
  if (m.add) {
    for (const h of m.add) {
      const n = h.name.toLowerCase();
      const prev = headers[n];
      headers[n] = prev === undefined ? h.value : `${prev}, ${h.value}`;
    }
  }
  if (m.remove) for (const n of m.remove) delete headers[n.toLowerCase()];
}

/** the RequestHeaderModifier filters of a rule (and then of its backend), in order, in place */
export function applyRequestFilters(headers: Record<string, string>, filters: readonly RouteFilter[] | undefined): void {
  if (filters) for (const f of filters) if (f.type === 'RequestHeaderModifier') modifyHeaders(headers, f.modifier);
}

/** the ResponseHeaderModifier filters, in order, applied in place to the response headers */
export function responseHeaders(headers: Record<string, string>, filters: readonly RouteFilter[] | undefined): void {
  if (filters) for (const f of filters) if (f.type === 'ResponseHeaderModifier') modifyHeaders(headers, f.modifier);
}

/** the first filter of a type, or undefined (Gateway API allows one redirect / rewrite per rule) */
export function findFilter<T extends RouteFilter['type']>(filters: readonly RouteFilter[] | undefined, type: T): Extract<RouteFilter, { type: T }> | undefined {
  if (filters) for (const f of filters) if (f.type === type) return f as Extract<RouteFilter, { type: T }>;
  return undefined;
}

/**
 * ReplacePrefixMatch (Gateway API HTTPPathModifier): the matched prefix, taken on segment
 * boundaries, is replaced; a trailing `/` of the replacement is dropped; an empty result is
 * "/". So /foo/bar with prefix /foo → /xyz/bar for "/xyz" or "/xyz/", /bar for "" or "/".
 */
export function replacePrefix(path: string, matchedPrefix: string, replacement: string): string {
  const prefix = normalizePrefix(matchedPrefix);
  const rest = prefixMatches(prefix, path) ? path.slice(prefix.length) : path;
  const out = normalizePrefix(replacement) + rest;
  return out === '' ? '/' : out;
}

function modifyPath(pathWithQuery: string, mod: { type: 'ReplaceFullPath' | 'ReplacePrefixMatch'; value: string }, matchedPrefix: string | undefined): string {
  const q = pathWithQuery.indexOf('?');
  const path = q < 0 ? pathWithQuery : pathWithQuery.slice(0, q);
  const query = q < 0 ? '' : pathWithQuery.slice(q);
  const out = mod.type === 'ReplaceFullPath' ? mod.value : replacePrefix(path, matchedPrefix ?? '', mod.value);
  return out + query;
}

/**
 * The Location of a RequestRedirect. Scheme, hostname and path come from the filter or the
 * request. The port is the filter's; else, with a scheme set, that scheme's well-known port;
 * else the request's port (Host header, then the Service port). Port 80 with http and 443
 * with https are left out of the Location, as the spec asks.
 */
export function redirectLocation(req: RouteRequest, filter: Extract<RouteFilter, { type: 'RequestRedirect' }>, matchedPrefix: string | undefined): { status: number; location: string } {
  const scheme = filter.scheme ?? req.scheme ?? 'http';
  const host = filter.hostname ?? hostOnly(req.host);
  let port = filter.port;
  if (port === undefined) port = filter.scheme ? (filter.scheme === 'https' ? 443 : 80) : hostPort(req.host) ?? req.port;
  const showPort = port !== undefined && !(scheme === 'http' && port === 80) && !(scheme === 'https' && port === 443);
  const path = filter.path ? modifyPath(req.path, filter.path, matchedPrefix) : req.path;
  const status = filter.statusCode === 302 ? 302 : 301;
  return { status, location: `${scheme}://${host}${showPort ? `:${port}` : ''}${path}` };
}

/** URLRewrite: the new Host (undefined: unchanged) and path with query */
export function rewrite(req: RouteRequest, filter: Extract<RouteFilter, { type: 'URLRewrite' }>, matchedPrefix: string | undefined): { host: string | undefined; path: string } {
  return {
    host: filter.hostname,
    path: filter.path ? modifyPath(req.path, filter.path, matchedPrefix) : req.path,
  };
}
