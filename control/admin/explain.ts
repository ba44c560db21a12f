// `nodal policy check`: the verdict the mesh would give one connection (and one request),
// and what decides it, computed from the control plane's model with the same functions
// the mesh runs:
//   1. the source's cgroup/connect hook: the node's L4 entries (l4ForNode, exactly what
//      its agent writes into the BPF policy map), looked up in the kernel's first-match
//      order (peer, port), (peer, any), (any, port), (any, any), and on no match the
//      destination's guard (an ALLOW policy selects it: default deny by absence);
//   2. for a source outside the mesh, the destination's cgroup_skb/ingress guard, from the
//      destination node's INGRESS entries in the same order;
//   3. otherwise the destination proxy: agent/policy evaluate(), L7 when the request's
//      method or path is given and the port is not declared opaque, L4 otherwise;
// and the path each backend is reached by (same node, the WireGuard tunnel, direct).
// Pure: a model in, an Explanation out.
import type { ClusterView } from '../plane.ts';
import type { CompiledPolicy, CompiledRule, EndpointInfo, L4Entry, ServiceInfo } from '../api/types.ts';
import { ReservedIdentity } from '../api/types.ts';
import { firstAllowSelecting, l4ForNode, principalOf } from '../model/policy.ts';
import { declaredProtocol as proxyProtocol, evaluate, matchRule, type Decision, type PolicyRequest } from '../../agent/policy/index.ts';
import { AdminErrorCode, ExplainError } from './errors.ts';
import { findEndpoint, findService, notFound, parseRef, refText, type Ref } from './resolve.ts';
import type { BackendPod, BackendVerdict, DestinationInfo, ExplainRequest, Explanation, ExplainVerdict, RuleTrace, Stage, WorkloadInfo } from './types.ts';

export type ExplainModel = Pick<ClusterView, 'trustDomain' | 'version' | 'nodes' | 'identities' | 'endpoints' | 'services' | 'policies'> & {
  /** a node's L4 entries exactly as its agent has them (MeshPolicy and NetworkPolicy merged);
   * without it, MeshPolicy entries are compiled here */
  l4For?: (node: string) => L4Entry[];
  /** NetworkPolicies behind entries' policy ids, to name them */
  networkPolicies?: Array<{ id: number; namespace: string; name: string }>;
};

/** the ports of the shared proxy (DESIGN §11), named in route descriptions */
const PROXY_OUTBOUND_PORT = 15001;
const PROXY_TUNNEL_PORT = 15008;

const RESERVED_NAMES: Record<number, string> = {
  [ReservedIdentity.HOST]: 'host', [ReservedIdentity.WORLD]: 'world', [ReservedIdentity.UNMANAGED]: 'unmanaged', [ReservedIdentity.HEALTH]: 'health',
};

/**
 * How the proxy treats a port (the proxy's own rule, agent/policy): an HTTP/1.1 or HTTP/2
 * (gRPC, h2c) appProtocol is parsed per request, any other declared protocol is opaque TCP
 * with one L4 decision, no appProtocol is sniffed.
 */
export function declaredProtocol(appProtocol: string | undefined): 'http' | 'opaque' | 'detect' {
  const p = proxyProtocol(appProtocol);
  return p === 'http1' || p === 'h2' ? 'http' : p;
}

interface Ctx {
  m: ExplainModel;
  req: ExplainRequest;
  /** the request carries HTTP fields */
  http: boolean;
  l4: Map<string, L4Entry[]>;
  notes: string[];
}

export function explain(model: ExplainModel, input: Partial<ExplainRequest> & Pick<ExplainRequest, 'from' | 'to' | 'port'>): Explanation {
  const notes: string[] = [];
  const req = normalize(input, notes);
  const ctx: Ctx = { m: model, req, http: req.method !== '' || req.path !== '', l4: new Map(), notes };

  const pods = model.endpoints.map(refText);
  const services = model.services.map(refText);
  const srcRef = parseRef('--from', req.from, 'namespace/pod', pods);
  if (srcRef.kind === 'service') throw new ExplainError(AdminErrorCode.INVALID, `--from: a connection comes from a pod, not a Service (${req.from})`);
  const src = findEndpoint(model.endpoints, srcRef);
  if (!src) throw notFound('--from', 'pod', srcRef, pods);
  const source = workload(ctx, src);

  const dstRef = parseRef('--to', req.to, 'namespace/pod or namespace/service', [...pods, ...services]);
  const dst = resolveDestination(ctx, dstRef, [...new Set([...pods, ...services])]);

  const out: Explanation = {
    verdict: 'ALLOWED', summary: '', source, destination: dst.info, request: req, backends: [], modelVersion: model.version, notes,
  };

  if (src.enrolled) {
    const connect = connectStage(ctx, src, dst.info);
    out.connect = connect;
    if (connect.verdict === 'DENY') {
      out.verdict = 'DENIED';
      out.summary = connect.text;
      return out;
    }
  } else if (dst.info.kind === 'service') {
    notes.push(`${refText(src)} is outside the mesh: its connection to the ClusterIP is translated by the cluster (kube-proxy), not by nodal, and reaches a backend directly`);
  }

  if (dst.backends.length === 0) {
    out.verdict = 'ERROR';
    out.summary = `Service ${refText(dst.info)} has no ready backends: ${src.enrolled ? 'the proxy closes the connection' : 'nothing answers at its ClusterIP'}`;
    return out;
  }
  if (dst.info.kind === 'service' && dst.info.targetPort === 0) {
    out.verdict = 'ERROR';
    out.summary = `Service ${refText(dst.info)} port ${dst.info.port} has a named targetPort that none of its backends declares`;
    return out;
  }

  const groups = groupBackends(ctx, dst.backends.map((b) => (src.enrolled ? viaProxy(ctx, src, b, dst.port) : direct(ctx, src, b, dst.port))));
  out.verdict = aggregate(groups);
  out.summary = summarize(groups, out.verdict);
  out.backends = groups.map(({ outcome: _, ...g }) => g);
  return out;
}

// ---- request and destination ----

function normalize(input: Partial<ExplainRequest> & Pick<ExplainRequest, 'from' | 'to' | 'port'>, notes: string[]): ExplainRequest {
  const port = Number(input.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ExplainError(AdminErrorCode.INVALID, `--port: "${input.port}" is not a port (1-65535)`);
  let method = (input.method ?? '').trim().toUpperCase();
  let path = (input.path ?? '').trim();
  const host = (input.host ?? '').trim();
  if (method !== '' && !/^[A-Z]+$/.test(method)) throw new ExplainError(AdminErrorCode.INVALID, `--http-method: "${input.method}" is not an HTTP method`);
  if (path !== '' && !path.startsWith('/')) throw new ExplainError(AdminErrorCode.INVALID, `--http-path: "${input.path}" must start with /`);
  // the proxy judges the path without its query string
  const q = path.indexOf('?');
  if (q >= 0) path = path.slice(0, q);
  // a request always has both: fill in the one left out, and say so
  if (method === '' && (path !== '' || host !== '')) {
    method = 'GET';
    notes.push('no --http-method given: judged as GET');
  }
  if (path === '' && method !== '') {
    path = '/';
    notes.push('no --http-path given: judged as /');
  }
  return { from: (input.from ?? '').trim(), to: (input.to ?? '').trim(), port, method, path, host };
}

interface Backend { ep: EndpointInfo | undefined; ip: string; node: string; identity: number; pod: string; namespace: string }

interface Resolved { info: DestinationInfo; backends: Backend[]; /** the port the backends receive on */ port: number }

function resolveDestination(ctx: Ctx, r: Ref, candidates: string[]): Resolved {
  const { m, req } = ctx;
  const svc = r.kind === 'pod' ? undefined : findService(m.services, r);
  const pod = r.kind === 'service' ? undefined : findEndpoint(m.endpoints, r);
  // both exist: the Service when the port is one of its ports (what a client of the VIP does)
  const useService = svc !== undefined && (r.kind === 'service' || !pod || svc.ports.some((p) => p.port === req.port));
  if (useService) return serviceDestination(ctx, svc);
  if (pod) {
    return {
      info: {
        kind: 'pod', namespace: pod.namespace, name: pod.name, ip: pod.ip, port: req.port, identity: pod.identity,
        targetPort: 0, appProtocol: appProtocolOf(m.services, pod.ip, req.port) ?? '', backendCount: 1,
      },
      backends: [backendOf(pod)],
      port: req.port,
    };
  }
  const what = r.kind === 'service' ? 'Service' : r.kind === 'pod' ? 'pod' : 'pod or Service';
  throw notFound('--to', what, r, r.kind === 'service' ? m.services.map(refText) : r.kind === 'pod' ? m.endpoints.map(refText) : candidates);
}

function serviceDestination(ctx: Ctx, svc: ServiceInfo): Resolved {
  const { m, req } = ctx;
  const sp = svc.ports.find((p) => p.port === req.port && p.protocol === 'TCP');
  if (!sp) {
    const ports = svc.ports.map((p) => `${p.port}${p.name ? `/${p.name}` : ''}${p.protocol !== 'TCP' ? ` (${p.protocol})` : ''}`).join(', ') || 'none';
    throw new ExplainError(AdminErrorCode.INVALID, `--port: Service ${refText(svc)} has no TCP port ${req.port} (ports: ${ports})`);
  }
  if (svc.clusterIp === '' || svc.clusterIp === 'None') {
    const pods = svc.backends.map((b) => `${svc.namespace}/${b.pod}`);
    throw new ExplainError(AdminErrorCode.INVALID,
      `--to: Service ${refText(svc)} is headless (no ClusterIP): clients connect to its pods; ask for one of them${pods.length ? `: ${pods.join(', ')}` : ''}`, pods);
  }
  const byIp = new Map(m.endpoints.map((e) => [e.ip, e]));
  if (svc.identity === 0 && new Set(svc.backends.map((b) => b.identity)).size > 1) {
    ctx.notes.push(`the backends of ${refText(svc)} have different identities: connect() can only apply entries for any peer, the proxy judges each backend`);
  }
  return {
    info: {
      kind: 'service', namespace: svc.namespace, name: svc.name, ip: svc.clusterIp, port: req.port, identity: svc.identity,
      targetPort: sp.targetPort, appProtocol: sp.appProtocol ?? '', backendCount: svc.backends.length,
    },
    backends: svc.backends.map((b) => ({ ep: byIp.get(b.ip), ip: b.ip, node: b.node, identity: b.identity, pod: b.pod, namespace: svc.namespace })),
    port: sp.targetPort,
  };
}

const backendOf = (e: EndpointInfo): Backend => ({ ep: e, ip: e.ip, node: e.node, identity: e.identity, pod: e.name, namespace: e.namespace });

/** the appProtocol a Service declares for this pod address and target port (as the proxy's view keys it) */
function appProtocolOf(services: readonly ServiceInfo[], ip: string, port: number): string | undefined {
  for (const s of services) {
    for (const p of s.ports) {
      if (p.targetPort === port && p.appProtocol && s.backends.some((b) => b.ip === ip)) return p.appProtocol;
    }
  }
  return undefined;
}

// ---- names ----

function identityName(m: ExplainModel, id: number): string {
  if (RESERVED_NAMES[id]) return RESERVED_NAMES[id];
  const i = m.identities.find((x) => x.id === id);
  return i ? `${i.namespace}/${i.serviceAccount}` : `identity ${id}`;
}

function workload(ctx: Ctx, e: EndpointInfo): WorkloadInfo {
  return {
    namespace: e.namespace, name: e.name, node: e.node, ip: e.ip, identity: e.identity, identityName: identityName(ctx.m, e.identity),
    principal: principalOf(ctx.m.trustDomain, { namespace: e.namespace, serviceAccount: e.serviceAccount }), enrolled: e.enrolled,
  };
}

const policyName = (p: { namespace: string; name: string }): string => `${p.namespace}/${p.name}`;
const policyById = (m: ExplainModel, id: number): CompiledPolicy | undefined => {
  if (id === 0) return undefined;
  const mesh = m.policies.find((p) => p.id === id);
  if (mesh) return mesh;
  // a NetworkPolicy: named like a policy, decided entirely at L4
  const np = m.networkPolicies?.find((p) => p.id === id);
  return np ? { id: np.id, namespace: np.namespace, name: np.name, action: 'ALLOW', selects: [], rules: [] } : undefined;
};
const policyRef = (p: CompiledPolicy): NonNullable<Stage['policy']> => ({ id: p.id, namespace: p.namespace, name: p.name, action: p.action });
const selecting = (m: ExplainModel, identity: number): CompiledPolicy[] => m.policies.filter((p) => p.selects.includes(identity));

// ---- the kernel's L4 lookup ----

function entriesFor(ctx: Ctx, node: string): L4Entry[] {
  let e = ctx.l4.get(node);
  if (!e) ctx.l4.set(node, (e = ctx.m.l4For?.(node) ?? l4ForNode(node, ctx.m.endpoints, ctx.m.policies)));
  return e;
}

/** the kernel's first-match order, most specific first (bpf/lib/datapath.h policy_lookup) */
function lookup(entries: readonly L4Entry[], direction: L4Entry['direction'], local: number, peer: number, port: number): L4Entry | undefined {
  const probe = (p: number, po: number): L4Entry | undefined => entries.find((e) =>
    e.direction === direction && e.localIdentity === local && e.peerIdentity === p && e.port === po && (e.proto ?? 'TCP') === 'TCP');
  return probe(peer, port) ?? probe(peer, 0) ?? probe(0, port) ?? probe(0, 0);
}

function lookupText(direction: string, local: number, peer: number, port: number, e: L4Entry | undefined, guard?: CompiledPolicy): string {
  const asked = `${direction} ${local} ↔ ${peer} port ${port}`;
  if (!e) return `${asked}: no entry${guard ? `; guard of ${peer} (${policyName(guard)}) DENY` : ''}`;
  return `${asked}: entry (peer ${e.peerIdentity === 0 ? 'any' : e.peerIdentity}, port ${e.port === 0 ? 'any' : e.port}) ${e.action}${e.toProxy ? ' to the proxy' : ''}`;
}

const peerAdmits = (r: CompiledRule, identity: number): boolean => r.from.length === 0 || r.from.some((f) => f.identities?.includes(identity) === true);

/** L4 rule traces: only `from` is checked by the kernel's entries */
function l4Traces(ctx: Ctx, policies: readonly CompiledPolicy[], peer: number): RuleTrace[] {
  return policies.flatMap((p) => p.rules.map((r): RuleTrace => {
    const from = r.from.length === 0 ? 'any' : peerAdmits(r, peer) ? 'match' : 'no match';
    return { policy: policyName(p), action: p.action, rule: r.index, from, to: 'n/a', when: 'n/a', matched: from !== 'no match' };
  }));
}

function connectStage(ctx: Ctx, src: EndpointInfo, dst: DestinationInfo): Stage {
  const { m } = ctx;
  const found = lookup(entriesFor(ctx, src.node), 'EGRESS', src.identity, dst.identity, dst.port);
  // no entry: the destination's guard denies by absence (the kernel's dst_guard, Snapshot.guards)
  const guard = found ? undefined : firstAllowSelecting(m.policies, dst.identity);
  const e: L4Entry | undefined = found ?? (guard
    ? { direction: 'EGRESS', localIdentity: src.identity, peerIdentity: dst.identity, port: 0, action: 'DENY', policyId: guard.id, rule: 0, defaultDeny: true }
    : undefined);
  const base = {
    where: 'connect' as const, hasRule: false, rule: 0, lookup: lookupText('EGRESS', src.identity, dst.identity, dst.port, found, guard), rules: [] as RuleTrace[],
  };
  const srcName = `${refText(src)} (${principalOf(m.trustDomain, src)})`;
  const dstName = `${dst.kind === 'service' ? 'Service ' : ''}${refText(dst)}`;
  if (e?.action === 'DENY') {
    const p = policyById(m, e.policyId);
    const pn = p ? policyName(p) : `policy ${e.policyId}`;
    if (e.defaultDeny) {
      const allow = selecting(m, dst.identity).filter((x) => x.action === 'ALLOW');
      return {
        ...base, verdict: 'DENY', reason: 'DEFAULT_DENY', ...(p ? { policy: policyRef(p) } : {}),
        text: `refused at connect() (EPERM) on ${src.node}: default deny, ${pn} selects ${dstName} and none of its rules admits ${srcName}`,
        rules: l4Traces(ctx, allow, src.identity),
      };
    }
    return {
      ...base, verdict: 'DENY', reason: 'POLICY_DENY', ...(p ? { policy: policyRef(p) } : {}), hasRule: true, rule: e.rule ?? 0,
      text: `refused at connect() (EPERM) on ${src.node}: denied by ${pn} rule ${e.rule ?? 0}`,
      rules: p ? l4Traces(ctx, [p], src.identity) : [],
    };
  }
  const to = `redirected to the ${src.node} proxy (:${PROXY_OUTBOUND_PORT})`;
  if (e?.toProxy) {
    return { ...base, verdict: 'ALLOW', reason: 'TO_PROXY', text: `${to}: an ALLOW rule could admit it past the destination's guard, the destination proxy decides` };
  }
  if (e) {
    const p = policyById(m, e.policyId);
    return {
      ...base, verdict: 'ALLOW', reason: 'POLICY_ALLOW', ...(p ? { policy: policyRef(p) } : {}), hasRule: p !== undefined, rule: e.rule ?? 0,
      text: `${to}: L4 entry allows it${p ? ` (${policyName(p)} rule ${e.rule ?? 0})` : ''}`,
    };
  }
  // the agent never sets an egress default deny today: destinations, not sources, select policy
  return { ...base, verdict: 'ALLOW', reason: 'DEFAULT_ALLOW', text: `${to}: no L4 entry refuses it, the destination proxy decides` };
}

// ---- per backend ----

interface One { identity: number; pod: BackendPod; protocol: BackendVerdict['protocol']; l7: boolean; decision: Stage; port: number; error?: boolean }

function podName(b: Backend): string {
  return `${b.namespace}/${b.pod}`;
}

function viaProxy(ctx: Ctx, src: EndpointInfo, b: Backend, port: number): One {
  const { m, req } = ctx;
  const proto = declaredProtocol(appProtocolOf(m.services, b.ip, port));
  const l7 = ctx.http && proto !== 'opaque';
  const same = b.node === src.node;
  const peer = m.nodes.find((n) => n.name === b.node);
  const pod: BackendPod = {
    pod: podName(b), node: b.node, ip: b.ip, enrolled: b.ep?.enrolled ?? false, path: same ? 'same-node' : 'cross-node',
    route: same
      ? `${src.node} proxy → inbound (in-process) → pod ${b.ip}:${port}`
      : `${src.node} proxy → WireGuard → ${b.node} proxy (${peer?.tunnelIp || '?'}:${PROXY_TUNNEL_PORT}) → pod ${b.ip}:${port}`,
  };
  if (!same && !peer?.tunnelIp) {
    return {
      identity: b.identity, pod, protocol: proto, l7, port, error: true,
      decision: {
        where: 'proxy', verdict: 'DENY', reason: 'NO_ROUTE', hasRule: false, rule: 0, lookup: '', rules: [],
        text: `node ${b.node} has no tunnel address: the ${src.node} proxy cannot reach it and closes the connection`,
      },
    };
  }
  if (ctx.http && proto === 'opaque') {
    note(ctx, `port ${port} of ${podName(b)} is declared ${appProtocolOf(m.services, b.ip, port)}: the proxy does not parse HTTP there, so one L4 decision applies and the HTTP fields are ignored`);
  }
  const preq: PolicyRequest = {
    dstIdentity: b.identity,
    src: { identity: src.identity, namespace: src.namespace, principal: principalOf(m.trustDomain, src), ip: src.ip },
    port, dstIp: b.ip,
    ...(l7 ? { method: req.method, path: req.path, ...(req.host ? { host: req.host } : {}) } : {}),
  };
  const d = evaluate(m.policies, preq);
  const decision = proxyStage(ctx, d, b, preq, l7);
  if (!l7 && !d.allowed && d.reason === 'NO_ALLOW_MATCHED' && proto !== 'opaque') {
    note(ctx, `judged at L4 only: port ${port} of ${podName(b)} may carry HTTP, whose requests are judged one by one; give --http-method and --http-path`);
  }
  return { identity: b.identity, pod, protocol: proto, l7, decision, port };
}

function proxyStage(ctx: Ctx, d: Decision, b: Backend, preq: PolicyRequest, l7: boolean): Stage {
  const { m } = ctx;
  const p = d.policy ? policyById(m, d.policy.id) : undefined;
  const pn = d.policy ? policyName(d.policy) : '';
  const rule = d.policy?.rule;
  let text: string;
  switch (d.reason) {
    case 'DENY_MATCHED': text = `denied by ${pn} rule ${rule ?? 0}`; break;
    case 'ALLOW_MATCHED': text = `allowed by ${pn} rule ${rule ?? 0}`; break;
    case 'NO_POLICY': text = `no policy selects ${podName(b)}: allowed`; break;
    case 'NO_ALLOW_MATCHED': {
      const allow = selecting(m, b.identity).filter((x) => x.action === 'ALLOW').map(policyName);
      text = `no ALLOW rule of ${allow.join(', ') || pn} matches`;
      break;
    }
  }
  if (d.audit) text += ` (audited by ${d.audit.namespace}/${d.audit.name} rule ${d.audit.rule})`;
  return {
    where: 'proxy', verdict: d.verdict, reason: d.reason, ...(p ? { policy: policyRef(p) } : {}),
    hasRule: rule !== undefined, rule: rule ?? 0, lookup: '', text, rules: ruleTraces(selecting(m, b.identity), preq, l7),
  };
}

/** which part of each rule matched the request: from, to, when, as evaluate() checks them */
function ruleTraces(policies: readonly CompiledPolicy[], preq: PolicyRequest, http: boolean): RuleTrace[] {
  return policies.flatMap((p) => p.rules.map((r): RuleTrace => {
    const deny = p.action === 'DENY';
    const part = (list: readonly unknown[], only: CompiledRule): string =>
      list.length === 0 ? 'any' : matchRule(only, preq, http, deny) ? 'match' : 'no match';
    return {
      policy: policyName(p), action: p.action, rule: r.index,
      from: part(r.from, { ...r, to: [], when: [] }),
      to: part(r.to, { ...r, from: [], when: [] }),
      when: part(r.when, { ...r, from: [], to: [] }),
      matched: matchRule(r, preq, http, deny),
    };
  }));
}

/** a source outside the mesh: no connect() hook, no proxy; an enrolled destination's ingress guard decides */
function direct(ctx: Ctx, src: EndpointInfo, b: Backend, port: number): One {
  const { m } = ctx;
  const same = b.node === src.node;
  const pod: BackendPod = {
    pod: podName(b), node: b.node, ip: b.ip, enrolled: b.ep?.enrolled ?? false, path: 'direct',
    route: same ? `${src.node}: pod to pod ${b.ip}:${port} (no proxy)` : `${src.node} → WireGuard → ${b.node} → pod ${b.ip}:${port} (no proxy)`,
  };
  const proto = declaredProtocol(appProtocolOf(m.services, b.ip, port));
  const one = (decision: Stage): One => ({ identity: b.identity, pod, protocol: proto, l7: false, decision, port });
  const base = { hasRule: false, rule: 0, rules: [] as RuleTrace[] };
  if (!pod.enrolled) {
    return one({
      ...base, where: 'none', verdict: 'ALLOW', reason: 'NOT_ENFORCED', lookup: '',
      text: `neither ${refText(src)} nor ${podName(b)} is in the mesh: nodal does not judge this connection`,
    });
  }
  if (ctx.http) note(ctx, 'a connection from outside the mesh never passes a proxy: only L4 applies, the HTTP fields are ignored');
  // the ingress guard names the source by the ipcache: a pod's address maps to its identity
  const e = lookup(entriesFor(ctx, b.node), 'INGRESS', b.identity, src.identity, port);
  const lk = lookupText('INGRESS', b.identity, src.identity, port, e);
  const srcName = `${refText(src)} (${principalOf(m.trustDomain, src)}, outside the mesh)`;
  const guard = `the ingress guard of ${podName(b)} on ${b.node}`;
  const p = e ? policyById(m, e.policyId) : undefined;
  const pn = p ? policyName(p) : e ? `policy ${e.policyId}` : '';
  const selectors = selecting(m, b.identity).filter((x) => x.action !== 'AUDIT');
  if (e?.action === 'ALLOW') {
    return one({
      ...base, where: 'ingress-guard', verdict: 'ALLOW', reason: 'POLICY_ALLOW', lookup: lk, ...(p ? { policy: policyRef(p) } : {}),
      hasRule: p !== undefined, rule: e.rule ?? 0,
      text: p ? `admitted by ${guard}: ${pn} rule ${e.rule ?? 0} admits ${srcName}` : `admitted by ${guard}: no policy selects ${podName(b)}`,
      rules: l4Traces(ctx, selectors, src.identity),
    });
  }
  if (e?.action === 'DENY') {
    return one({
      ...base, where: 'ingress-guard', verdict: 'DENY', reason: e.defaultDeny ? 'DEFAULT_DENY' : 'POLICY_DENY', lookup: lk,
      ...(p ? { policy: policyRef(p) } : {}), hasRule: !e.defaultDeny, rule: e.defaultDeny ? 0 : e.rule ?? 0,
      text: e.defaultDeny
        ? `dropped by ${guard}: default deny, ${pn} selects it and none of its rules admits ${srcName}`
        : `dropped by ${guard}: denied by ${pn} rule ${e.rule ?? 0}`,
      rules: l4Traces(ctx, selectors, src.identity),
    });
  }
  const dd = b.ep?.defaultDenyPolicyId !== undefined ? policyById(m, b.ep.defaultDenyPolicyId) : undefined;
  if (dd) {
    return one({
      ...base, where: 'ingress-guard', verdict: 'DENY', reason: 'DEFAULT_DENY', lookup: lk, policy: policyRef(dd),
      text: `dropped by ${guard}: default deny, ${policyName(dd)} selects it and its rules for ${srcName} need checks only a proxy can make`,
      rules: l4Traces(ctx, selectors, src.identity),
    });
  }
  return one({
    ...base, where: 'ingress-guard', verdict: 'DENY', reason: 'NOT_FROM_PROXY', lookup: lk,
    text: `dropped by ${guard}: not from the node proxy, and no L4 entry admits ${srcName}`,
  });
}

function note(ctx: Ctx, text: string): void {
  if (!ctx.notes.includes(text)) ctx.notes.push(text);
}

// ---- grouping and the overall verdict ----

type Group = BackendVerdict & { outcome: 'ALLOW' | 'DENY' | 'ERROR' };

function groupBackends(ctx: Ctx, all: One[]): Group[] {
  const groups = new Map<string, Group>();
  for (const o of all) {
    const key = [o.identity, o.protocol, o.l7, o.decision.where, o.decision.verdict, o.decision.text, o.error === true].join('\0');
    let g = groups.get(key);
    if (!g) {
      g = {
        identity: o.identity, identityName: identityName(ctx.m, o.identity), pods: [], protocol: o.protocol, l7: o.l7,
        decision: o.decision, port: o.port, outcome: o.error ? 'ERROR' : o.decision.verdict,
      };
      groups.set(key, g);
    }
    g.pods.push(o.pod);
  }
  return [...groups.values()];
}

function aggregate(groups: readonly Group[]): ExplainVerdict {
  const kinds = new Set(groups.map((g) => g.outcome));
  if (kinds.size > 1) return 'MIXED';
  const k = [...kinds][0];
  return k === 'ALLOW' ? 'ALLOWED' : k === 'DENY' ? 'DENIED' : 'ERROR';
}

/** the proxy's texts name the policy, not the place: say which node's proxy decided */
function withPlace(g: BackendVerdict): string {
  if (g.decision.where !== 'proxy') return g.decision.text;
  return `${g.decision.text} (at the ${[...new Set(g.pods.map((p) => p.node))].join(', ')} proxy)`;
}

function summarize(groups: readonly Group[], verdict: ExplainVerdict): string {
  if (groups.length === 1) return withPlace(groups[0]!);
  const total = groups.reduce((n, g) => n + g.pods.length, 0);
  const allowed = groups.filter((g) => g.outcome === 'ALLOW').reduce((n, g) => n + g.pods.length, 0);
  const parts = groups.map((g) => `${g.pods.length === 1 ? g.pods[0]!.pod : `${g.pods.length} backends`}: ${withPlace(g)}`);
  const head = verdict === 'MIXED' ? `allowed to ${allowed} of ${total} backends`
    : verdict === 'ALLOWED' ? `allowed to all ${total} backends` : verdict === 'DENIED' ? `denied to all ${total} backends` : `no backend of ${total} reachable`;
  return `${head}; ${parts.join('; ')}`;
}
