// MeshPolicy evaluation at the destination, pure: Istio AuthorizationPolicy semantics over
// the compiled form (control/api/types.ts CompiledPolicy). The proxy calls this once per
// opaque TCP connection (L4 only) and once per HTTP request (L7).
//
// Order (DESIGN §4, as in Istio): any matching DENY rule denies; when no ALLOW policy
// selects the workload the request is allowed; otherwise an ALLOW rule must match. AUDIT
// policies never change the verdict, they only mark it.
//
// L4-only evaluation (no method/path known): HTTP-only fields make an ALLOW rule match
// nothing, and are ignored in a DENY rule so that the DENY applies more widely. This is
// Istio's conservative treatment of HTTP fields on TCP traffic: a policy can never let
// more through because the proxy saw less.
//
// gRPC fields (grpcServices, grpcMethods) match only a gRPC request: `grpc` when the
// caller passes it, else derived from content-type application/grpc* and a path of the
// form /package.Service/Method. On an HTTP request that is not gRPC such a field makes the
// operation match nothing, in ALLOW and DENY alike (a DENY on a gRPC method says nothing
// about REST calls); on L4-only evaluation it is an HTTP field like the others.

import type { CompiledPolicy, CompiledRule, L7Match, PeerMatch } from '../../control/api/types.ts';
import { matchAny, matchHost, matchValue } from './match.ts';

export interface PolicySource {
  identity: number;
  namespace?: string;
  /** SPIFFE id without `spiffe://`, e.g. cluster.local/ns/foo/sa/bar (Istio principal form) */
  principal?: string;
  /** for `when: source.ip`; optional */
  ip?: string;
}

export interface PolicyRequest {
  dstIdentity: number;
  src: PolicySource;
  /** destination (target) port */
  port: number;
  method?: string;
  /** path without the query string */
  path?: string;
  host?: string;
  /** lower-case header names */
  headers?: Record<string, string>;
  /**
   * the gRPC service (package.Service) and method of the request; optional: without it a
   * request whose content-type starts with application/grpc is gRPC, named by its path
   */
  grpc?: { service: string; method: string };
  /** for `when: destination.ip`; optional */
  dstIp?: string;
}

export interface PolicyRef { id: number; namespace: string; name: string; rule?: number }

export type DecisionReason = 'DENY_MATCHED' | 'ALLOW_MATCHED' | 'NO_POLICY' | 'NO_ALLOW_MATCHED';

export interface Decision {
  allowed: boolean;
  verdict: 'ALLOW' | 'DENY';
  reason: DecisionReason;
  /** the policy (and rule) that decided; absent for NO_POLICY */
  policy?: PolicyRef;
  /** the first AUDIT policy rule that matched, whatever the verdict */
  audit?: { id: number; namespace: string; name: string; rule: number };
}

const NO_POLICY: Decision = Object.freeze({ allowed: true, verdict: 'ALLOW', reason: 'NO_POLICY' }) as Decision;

export function evaluate(policies: readonly CompiledPolicy[], req: PolicyRequest): Decision {
  const http = req.method !== undefined || req.path !== undefined;
  let audit: Decision['audit'];
  let firstAllow: CompiledPolicy | undefined;

  for (const p of policies) {
    if (!p.selects.includes(req.dstIdentity)) continue;
    if (p.action === 'DENY') {
      const rule = firstMatchingRule(p.rules, req, http, true);
      if (rule !== undefined) {
        const d: Decision = { allowed: false, verdict: 'DENY', reason: 'DENY_MATCHED', policy: ref(p, rule) };
        // audit still has to be looked for: it marks denied requests too
        const a = audit ?? findAudit(policies, req, http);
        if (a) d.audit = a;
        return d;
      }
    } else if (p.action === 'AUDIT') {
      if (audit === undefined) {
        const rule = firstMatchingRule(p.rules, req, http, false);
        if (rule !== undefined) audit = { id: p.id, namespace: p.namespace, name: p.name, rule };
      }
    } else if (firstAllow === undefined) {
      firstAllow = p;
    }
  }

  if (firstAllow === undefined) return audit ? { ...NO_POLICY, audit } : NO_POLICY;

  for (const p of policies) {
    if (p.action !== 'ALLOW' || !p.selects.includes(req.dstIdentity)) continue;
    const rule = firstMatchingRule(p.rules, req, http, false);
    if (rule !== undefined) {
      const d: Decision = { allowed: true, verdict: 'ALLOW', reason: 'ALLOW_MATCHED', policy: ref(p, rule) };
      if (audit) d.audit = audit;
      return d;
    }
  }
  const d: Decision = {
    allowed: false, verdict: 'DENY', reason: 'NO_ALLOW_MATCHED',
    policy: { id: firstAllow.id, namespace: firstAllow.namespace, name: firstAllow.name },
  };
  if (audit) d.audit = audit;
  return d;
}

/**
 * The policies as they stand for one source: every rule whose `from` cannot match `src`
 * is dropped, the others keep only what is left to check (`to`, `when`), and a DENY or
 * AUDIT policy left without rules goes (it can match nothing). An ALLOW policy stays even
 * without rules: that it selects the workload is what makes an unmatched request denied.
 * For every request from `src` (same identity, principal and namespace),
 * evaluate(forSource(policies, src), req) decides as evaluate(policies, req): `from` reads
 * only those three fields. The proxy keeps the result per source and destination.
 */
export function forSource(policies: readonly CompiledPolicy[], src: PolicySource): CompiledPolicy[] {
  const out: CompiledPolicy[] = [];
  for (const p of policies) {
    let rules: CompiledRule[] | undefined;
    for (const [i, r] of p.rules.entries()) {
      const keep = r.from.length === 0 || r.from.some((f) => matchPeer(f, src));
      if (keep && r.from.length === 0 && rules === undefined) continue; // unchanged so far
      rules ??= p.rules.slice(0, i);
      if (keep) rules.push(r.from.length === 0 ? r : { ...r, from: [] });
    }
    if (rules === undefined) {
      out.push(p);
      continue;
    }
    if (rules.length === 0 && p.action !== 'ALLOW') continue;
    out.push({ ...p, rules });
  }
  return out;
}

/** one line for logs, flows and the CLI: why the decision came out this way */
export function describeDecision(d: Decision): string {
  const p = d.policy;
  const name = p ? `${p.namespace}/${p.name}` : '';
  const rule = p?.rule !== undefined ? ` rule ${p.rule}` : '';
  switch (d.reason) {
    case 'DENY_MATCHED': return `denied by ${name}${rule}`;
    case 'ALLOW_MATCHED': return `allowed by ${name}${rule}`;
    case 'NO_ALLOW_MATCHED': return `no ALLOW policy of ${name} matches`;
    case 'NO_POLICY': return 'allowed: no policy selects the workload';
  }
}

function ref(p: CompiledPolicy, rule: number): PolicyRef {
  return { id: p.id, namespace: p.namespace, name: p.name, rule };
}

function findAudit(policies: readonly CompiledPolicy[], req: PolicyRequest, http: boolean): Decision['audit'] {
  for (const p of policies) {
    if (p.action !== 'AUDIT' || !p.selects.includes(req.dstIdentity)) continue;
    const rule = firstMatchingRule(p.rules, req, http, false);
    if (rule !== undefined) return { id: p.id, namespace: p.namespace, name: p.name, rule };
  }
  return undefined;
}

/** the index (as written in the spec) of the first rule that matches, else undefined */
function firstMatchingRule(rules: readonly CompiledRule[], req: PolicyRequest, http: boolean, deny: boolean): number | undefined {
  for (const r of rules) if (matchRule(r, req, http, deny)) return r.index;
  return undefined;
}

export function matchRule(rule: CompiledRule, req: PolicyRequest, http: boolean, deny: boolean): boolean {
  if (rule.from.length > 0 && !rule.from.some((f) => matchPeer(f, req.src))) return false;
  if (rule.to.length > 0 && !rule.to.some((t) => matchOperation(t, req, http, deny))) return false;
  for (const c of rule.when) if (!matchCondition(c, req, http, deny)) return false;
  return true;
}

/** every field that is present must match (AND), as in Istio's Source */
function matchPeer(f: PeerMatch, src: PolicySource): boolean {
  if (f.any) return true;
  if (f.identities && f.identities.length > 0 && !f.identities.includes(src.identity)) return false;
  if (f.principals && f.principals.length > 0 && !matchAny(f.principals, src.principal)) return false;
  if (f.namespaces && f.namespaces.length > 0 && !matchAny(f.namespaces, src.namespace)) return false;
  if (f.notPrincipals && f.notPrincipals.length > 0 && matchAny(f.notPrincipals, src.principal)) return false;
  if (f.notNamespaces && f.notNamespaces.length > 0 && matchAny(f.notNamespaces, src.namespace)) return false;
  return true;
}

function hasHttpFields(t: L7Match): boolean {
  return nonEmpty(t.methods) || nonEmpty(t.paths) || nonEmpty(t.hosts) || nonEmpty(t.notMethods) || nonEmpty(t.notPaths)
    || t.headers !== undefined || nonEmpty(t.grpcServices) || nonEmpty(t.grpcMethods);
}

/** /package.Service/Method: two non-empty segments */
const GRPC_PATH = /^\/([^/]+)\/([^/]+)$/;

/** the request's gRPC service and method, or undefined when it is not a gRPC request */
export function grpcOf(req: PolicyRequest): { service: string; method: string } | undefined {
  if (req.grpc) return req.grpc;
  const ct = req.headers?.['content-type'];
  if (ct === undefined || !ct.toLowerCase().startsWith('application/grpc')) return undefined;
  const m = GRPC_PATH.exec(req.path ?? '');
  return m ? { service: m[1]!, method: m[2]! } : undefined;
}

function matchOperation(t: L7Match, req: PolicyRequest, http: boolean, deny: boolean): boolean {
  if (nonEmpty(t.ports) && !t.ports.includes(req.port)) return false;
  if (nonEmpty(t.notPorts) && t.notPorts.includes(req.port)) return false;
  if (!http) {
    // L4 only: see the file comment. DENY keeps only its port constraints.
    return deny || !hasHttpFields(t);
  }
  if (nonEmpty(t.methods) && !matchAny(t.methods, req.method)) return false;
  if (nonEmpty(t.notMethods) && matchAny(t.notMethods, req.method)) return false;
  if (nonEmpty(t.paths) && !matchAny(t.paths, req.path)) return false;
  if (nonEmpty(t.notPaths) && matchAny(t.notPaths, req.path)) return false;
  if (nonEmpty(t.hosts) && !matchHost(t.hosts, req.host)) return false;
  if (t.headers !== undefined) {
    for (const name in t.headers) if (!matchAny(t.headers[name]!, req.headers?.[name])) return false;
  }
  if (nonEmpty(t.grpcServices) || nonEmpty(t.grpcMethods)) {
    const g = grpcOf(req);
    if (g === undefined) return false;
    if (nonEmpty(t.grpcServices) && !matchAny(t.grpcServices, g.service)) return false;
    if (nonEmpty(t.grpcMethods) && !matchAny(t.grpcMethods, g.method)) return false;
  }
  return true;
}

type Condition = CompiledRule['when'][number];

/**
 * Supported keys: source.namespace, source.principal, source.ip, destination.port,
 * destination.ip, request.headers[<name>]. A key the proxy cannot evaluate (request.auth.*
 * without JWT support, connection.sni, or request.headers on opaque TCP) is treated like an
 * HTTP-only field on TCP: an ALLOW rule does not match, a DENY rule ignores the condition.
 */
function matchCondition(c: Condition, req: PolicyRequest, http: boolean, deny: boolean): boolean {
  const value = conditionValue(c.key, req, http);
  if (value === UNKNOWN) return deny;
  if (nonEmpty(c.values) && !c.values.some((v) => conditionMatch(c.key, v, value))) return false;
  if (nonEmpty(c.notValues) && c.notValues.some((v) => conditionMatch(c.key, v, value))) return false;
  return true;
}

const UNKNOWN = Symbol('unknown');

function conditionValue(key: string, req: PolicyRequest, http: boolean): string | undefined | typeof UNKNOWN {
  switch (key) {
    case 'source.namespace': return req.src.namespace;
    case 'source.principal': return req.src.principal;
    case 'source.ip': case 'remote.ip': return req.src.ip ?? UNKNOWN;
    case 'destination.port': return String(req.port);
    case 'destination.ip': return req.dstIp ?? UNKNOWN;
  }
  if (key.startsWith('request.headers[') && key.endsWith(']')) {
    if (!http) return UNKNOWN;
    return req.headers?.[key.slice('request.headers['.length, -1).toLowerCase()];
  }
  return UNKNOWN;
}

function conditionMatch(key: string, pattern: string, value: string | undefined): boolean {
  if (value === undefined) return false;
  if ((key === 'source.ip' || key === 'remote.ip' || key === 'destination.ip') && pattern.includes('/')) {
    return inCidr(value, pattern);
  }
  return matchValue(pattern, value);
}

/** IPv4 CIDR only; an IPv6 CIDR matches nothing rather than something by accident */
function inCidr(ip: string, cidr: string): boolean {
  const [base, bitsText] = cidr.split('/');
  const bits = Number(bitsText);
  const a = ipv4(ip);
  const b = ipv4(base ?? '');
  if (a === undefined || b === undefined || !Number.isInteger(bits) || bits < 0 || bits > 32) return false;
  if (bits === 0) return true;
  const mask = (~0 << (32 - bits)) >>> 0;
  return ((a & mask) >>> 0) === ((b & mask) >>> 0);
}

function ipv4(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    const v = Number(p);
    if (!/^\d{1,3}$/.test(p) || v > 255) return undefined;
    n = n * 256 + v;
  }
  return n;
}

function nonEmpty<T>(a: readonly T[] | undefined): a is readonly T[] {
  return a !== undefined && a.length > 0;
}
