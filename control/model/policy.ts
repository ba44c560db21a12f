// MeshPolicy → CompiledPolicy, and the L4 entries each node's BPF policy map holds.
//
// Evaluation order (DESIGN §4, Istio AuthorizationPolicy): any DENY match denies; a
// workload no ALLOW policy selects is allowed; otherwise some ALLOW rule must match.
// AUDIT only marks and never changes a verdict.
//
// Why DENY precedence is resolved HERE and not in the kernel: the BPF `policy` map is
// first-match by specificity ((peer, port), (peer, any), (any, port), (any, any); see
// bpf/api/nodal.h), not by action, so it cannot combine an ALLOW and a DENY that cover
// the same connection. The compiler therefore writes, per (local, peer) pair, only the
// one entry that is already the final answer, and denies by absence (as Cilium does):
//   - a guard      per destination identity that ALLOW policies select (Snapshot.guards,
//                  BPF dst_guard; guardsOf): a connect() towards it that no entry matches
//                  is refused, "default deny because policy X selects this workload",
//                  named after the first such ALLOW policy, rule 0. No per-pair entry;
//   - EGRESS DENY  when a DENY rule that is pure L4 (no `to`, no `when`) matches the source:
//                  refused at connect() and named after that policy and rule;
//   - EGRESS ALLOW (toProxy, policy 0) when the destination is guarded and some ALLOW rule's
//                  `from` admits the source: it only lets the connection past the guard to
//                  the proxy, which evaluates L7 (`to`, `when`) and the DENY rules that
//                  depend on the request (connect() sends every allowed connection there);
//   - nothing      otherwise (no ALLOW policy selects the destination): the connection goes
//                  to the proxy, as above.
// So a node holds entries for the pairs some rule names, not for every (local, guarded)
// pair: at 1,000 policies that is the difference between ~200 and ~45,000 per node.
// Destinations are identities, never IPs: a connect() to a Service VIP is judged by the
// service's identity (ServiceInfo.identity), which is one of these when its backends share it.
//
// INGRESS entries serve cgroup_skb/ingress, which admits a new connection to an enrolled
// pod that does not come from the node proxy (a client outside the mesh) only if the map
// allows its identity. Such connections never reach the proxy, so only decisions that
// need no L7 are written: ALLOW from any peer for a workload no policy selects, ALLOW
// from the host (kubelet probes must keep working under any policy, as in Istio), and for
// selected workloads, per non-enrolled peer identity, the DENY or ALLOW of a pure-L4 rule.
import type { CompiledPolicy, CompiledRule, EndpointInfo, Guard, IdentityInfo, L4Entry, L7Match, PeerMatch } from '../api/types.ts';
import { ReservedIdentity } from '../api/types.ts';
import type { MeshPolicyObject, PolicySource } from '../cluster/state.ts';
import { fingerprint, stableStringify } from '../persist.ts';
import type { IdAllocator } from './ids.ts';
import { matchesLabels } from './identity.ts';

/** Istio string match: exact, `*` (any), `prefix*` or `*suffix` */
export function istioMatch(pattern: string, value: string): boolean {
  if (pattern === '*') return value !== '';
  if (pattern.startsWith('*')) return value.endsWith(pattern.slice(1));
  if (pattern.endsWith('*')) return value.startsWith(pattern.slice(0, -1));
  return pattern === value;
}

/** the principal Istio would see for an identity: <trust-domain>/ns/<ns>/sa/<sa>, no scheme */
export const principalOf = (trustDomain: string, i: Pick<IdentityInfo, 'namespace' | 'serviceAccount'>): string =>
  `${trustDomain}/ns/${i.namespace}/sa/${i.serviceAccount}`;

/** all conditions of one Source are AND'ed (Istio); each list is OR'ed */
export function sourceMatches(src: PolicySource, i: IdentityInfo, trustDomain: string): boolean {
  return sourceMatchesPrincipal(src, i, principalOf(trustDomain, i));
}

function sourceMatchesPrincipal(src: PolicySource, i: Pick<IdentityInfo, 'namespace'>, principal: string): boolean {
  if (src.principals && !src.principals.some((p) => istioMatch(p, principal))) return false;
  if (src.notPrincipals?.some((p) => istioMatch(p, principal))) return false;
  if (src.namespaces && !src.namespaces.some((n) => istioMatch(n, i.namespace))) return false;
  if (src.notNamespaces?.some((n) => istioMatch(n, i.namespace))) return false;
  return true;
}

const byNsName = (a: MeshPolicyObject, b: MeshPolicyObject): number =>
  a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/**
 * The last compile's policies by input (id and content), for the next compile: a change to
 * one policy then compiles that one alone, and the others stay the same objects (so what is
 * derived per object, such as the resolved peer sets, carries over). Valid only for the same
 * identities and trust domain; compiling is pure given those, so sharing is safe.
 */
let lastCompile: { context: string; byInput: Map<string, CompiledPolicy> } | undefined;

/** compiled in namespace/name order, which is also the order "first policy" refers to */
export function compilePolicies(policies: readonly MeshPolicyObject[], identities: readonly IdentityInfo[], ids: IdAllocator, trustDomain: string): CompiledPolicy[] {
  // per identity once, not per policy × rule: principals, and identities by namespace
  const principals = identities.map((i) => principalOf(trustDomain, i));
  const byNs = new Map<string, IdentityInfo[]>();
  for (const i of identities) {
    const l = byNs.get(i.namespace);
    if (l) l.push(i);
    else byNs.set(i.namespace, [i]);
  }
  const matching = (src: PolicySource): number[] => {
    const out: number[] = [];
    for (let k = 0; k < identities.length; k++) if (sourceMatchesPrincipal(src, identities[k]!, principals[k]!)) out.push(identities[k]!.id);
    return out;
  };
  const compileOne = (p: MeshPolicyObject, id: number): CompiledPolicy => ({
    id,
    namespace: p.namespace,
    name: p.name,
    action: p.action,
    // selectors are matched on identity labels: enforcement is per identity, so a selector
    // on a per-pod label (pod-template-hash) must not select half of an identity
    selects: (byNs.get(p.namespace) ?? []).filter((i) => matchesLabels(p.matchLabels, i.labels)).map((i) => i.id),
    rules: p.rules.map((r, index): CompiledRule => ({
      index,
      from: r.from.map((src): PeerMatch => ({
        identities: matching(src),
        ...(src.principals ? { principals: [...src.principals] } : {}),
        ...(src.namespaces ? { namespaces: [...src.namespaces] } : {}),
        ...(src.notPrincipals ? { notPrincipals: [...src.notPrincipals] } : {}),
        ...(src.notNamespaces ? { notNamespaces: [...src.notNamespaces] } : {}),
      })),
      to: r.to.map((op): L7Match => ({ ...op })),
      when: r.when.map((w) => ({ ...w })),
    })),
  });
  const context = `${trustDomain}\n${fingerprint(identities)}`;
  const reuse = lastCompile?.context === context ? lastCompile.byInput : undefined;
  const byInput = new Map<string, CompiledPolicy>();
  const out = [...policies].sort(byNsName).map((p) => {
    // every policy's id is asked for, reused or not: the allocator keeps only ids in use
    const id = ids.id('policies', `${p.namespace}/${p.name}`);
    const key = `${id}\n${stableStringify(p)}`;
    const compiled = reuse?.get(key) ?? compileOne(p, id);
    byInput.set(key, compiled);
    return compiled;
  });
  lastCompile = { context, byInput };
  return out;
}

/** the ALLOW policy whose name a default deny of this identity carries */
export function firstAllowSelecting(policies: readonly CompiledPolicy[], identity: number): CompiledPolicy | undefined {
  return indexOf(policies).allow.get(identity)?.[0];
}

/** the guards of a policy list: every identity an ALLOW policy selects, by identity */
export function guardsOf(policies: readonly CompiledPolicy[]): Guard[] {
  const ix = indexOf(policies);
  return [...ix.allow].map(([identity, l]) => ({ identity, policyId: l[0]!.id })).sort((a, b) => a.identity - b.identity);
}

/**
 * Derived once per compiled policy list (the model's, which is never mutated) and shared
 * by every node: at 1,000 nodes the per-node work would otherwise redo the same scans.
 * deny/allow: per destination identity, the policies selecting it, in policy order;
 * named: per source identity, the destinations some rule's `from` names it for, and
 * anySource: the destinations with a rule that has no `from` (it names every source);
 * egress: per source identity, its EGRESS entries, which depend on the policies alone.
 */
interface PolicyIndex {
  guardedSet: Set<number>;
  deny: Map<number, CompiledPolicy[]>;
  allow: Map<number, CompiledPolicy[]>;
  named: Map<number, Set<number>>;
  anySource: Set<number>;
  egress: Map<number, L4Entry[]>;
}
const indexes = new WeakMap<readonly CompiledPolicy[], PolicyIndex>();
function indexOf(policies: readonly CompiledPolicy[]): PolicyIndex {
  let ix = indexes.get(policies);
  if (ix) return ix;
  const deny = new Map<number, CompiledPolicy[]>();
  const allow = new Map<number, CompiledPolicy[]>();
  const guardedSet = new Set<number>();
  const named = new Map<number, Set<number>>();
  const anySource = new Set<number>();
  for (const p of policies) {
    if (p.action === 'AUDIT') continue;
    const into = p.action === 'DENY' ? deny : allow;
    const selects = new Set(p.selects);
    for (const id of selects) {
      guardedSet.add(id);
      const l = into.get(id);
      if (l) l.push(p);
      else into.set(id, [p]);
    }
    for (const r of p.rules) {
      if (r.from.length === 0) {
        for (const d of selects) anySource.add(d);
        continue;
      }
      for (const m of r.from) {
        for (const s of m.identities ?? []) {
          let ds = named.get(s);
          if (!ds) named.set(s, (ds = new Set()));
          for (const d of selects) ds.add(d);
        }
      }
    }
  }
  ix = { guardedSet, deny, allow, named, anySource, egress: new Map() };
  indexes.set(policies, ix);
  return ix;
}

/** a PeerMatch's resolved identities as a set (a notNamespaces source can match thousands) */
const peerSets = new WeakMap<PeerMatch, Set<number>>();
function peerSet(m: PeerMatch): Set<number> {
  let s = peerSets.get(m);
  if (!s) peerSets.set(m, (s = new Set(m.identities ?? [])));
  return s;
}

/** endpoints by node, and the identities of the ones outside the mesh, once per endpoint list */
interface EndpointIndex { local: Map<string, number[]>; outsiders: number[] }
const endpointIndexes = new WeakMap<readonly EndpointInfo[], EndpointIndex>();
function endpointIndexOf(endpoints: readonly EndpointInfo[]): EndpointIndex {
  let ix = endpointIndexes.get(endpoints);
  if (ix) return ix;
  const byNode = new Map<string, Set<number>>();
  const out = new Set<number>([ReservedIdentity.WORLD, ReservedIdentity.UNMANAGED]);
  for (const e of endpoints) {
    if (!e.enrolled) {
      out.add(e.identity);
      continue;
    }
    const s = byNode.get(e.node);
    if (s) s.add(e.identity);
    else byNode.set(e.node, new Set([e.identity]));
  }
  ix = {
    local: new Map([...byNode].map(([n, s]) => [n, [...s].sort((a, b) => a - b)])),
    outsiders: [...out].sort((a, b) => a - b),
  };
  endpointIndexes.set(endpoints, ix);
  return ix;
}

/** a rule's `from` admits the source (empty = any source); PeerMatch.identities is resolved */
const fromAdmits = (r: CompiledRule, source: number): boolean =>
  r.from.length === 0 || r.from.some((m) => peerSet(m).has(source));
const pureL4 = (r: CompiledRule): boolean => r.to.length === 0 && r.when.length === 0;

interface Verdict { action: 'ALLOW' | 'DENY'; policyId: number; rule: number; defaultDeny?: boolean }

/** the default for a workload no ALLOW policy selects; policy id 0 names no policy */
const DEFAULT_ALLOW: Verdict = { action: 'ALLOW', policyId: 0, rule: 0 };
/** past the guard to the proxy, which decides: names no policy, as no L4 rule decided */
const TO_PROXY: Verdict = { action: 'ALLOW', policyId: 0, rule: 0 };

/**
 * what L4 alone can decide for `source` → `dest`: a DENY is final; an ALLOW is final only
 * when `denyNeedsL7` is false (no DENY rule that depends on the request matches the source);
 * no verdict means only the proxy can decide
 */
function decideL4(ix: PolicyIndex, source: number, dest: number): { verdict?: Verdict; denyNeedsL7: boolean } {
  let denyNeedsL7 = false;
  for (const p of ix.deny.get(dest) ?? []) {
    for (const r of p.rules) {
      if (!fromAdmits(r, source)) continue;
      if (pureL4(r)) return { verdict: { action: 'DENY', policyId: p.id, rule: r.index }, denyNeedsL7 };
      denyNeedsL7 = true;
    }
  }
  const allow = ix.allow.get(dest) ?? [];
  if (allow.length === 0) return { verdict: DEFAULT_ALLOW, denyNeedsL7 };
  let couldAdmit = false;
  let admitting: Verdict | undefined;
  for (const p of allow) {
    for (const r of p.rules) {
      if (!fromAdmits(r, source)) continue;
      couldAdmit = true;
      if (pureL4(r)) admitting ??= { action: 'ALLOW', policyId: p.id, rule: r.index };
    }
  }
  // `to` and `when` are ignored here on purpose: if no rule's `from` admits the source, no
  // request can be admitted, so the connection is refused at once and named after the policy
  if (!couldAdmit) return { verdict: { action: 'DENY', policyId: allow[0]!.id, rule: 0, defaultDeny: true }, denyNeedsL7 };
  return { ...(admitting ? { verdict: admitting } : {}), denyNeedsL7 };
}

const dirOrder = { EGRESS: 0, INGRESS: 1 } as const;
export function compareL4(a: L4Entry, b: L4Entry): number {
  return dirOrder[a.direction] - dirOrder[b.direction] || a.localIdentity - b.localIdentity
    || a.peerIdentity - b.peerIdentity || a.port - b.port || (a.action < b.action ? -1 : a.action > b.action ? 1 : 0);
}

/** the BPF policy entries for one node's local enrolled endpoints, sorted */
export function l4ForNode(node: string, endpoints: readonly EndpointInfo[], policies: readonly CompiledPolicy[]): L4Entry[] {
  const out: L4Entry[] = [];
  const eix = endpointIndexOf(endpoints);
  const local = eix.local.get(node) ?? [];
  if (local.length === 0) return out;
  const ix = indexOf(policies);
  const entry = (direction: L4Entry['direction'], localIdentity: number, peerIdentity: number, v: Verdict): L4Entry =>
    ({ direction, localIdentity, peerIdentity, port: 0, action: v.action, policyId: v.policyId, rule: v.rule, ...(v.defaultDeny ? { defaultDeny: true } : {}) });

  for (const s of local) {
    // the same for every node the identity runs on: computed once per model
    let row = ix.egress.get(s);
    if (!row) {
      row = [];
      // only destinations some rule names this source for (or names every source for) can
      // need an entry: for any other guarded one no rule admits it, and the guard denies
      const named = ix.named.get(s);
      const candidates = named ? [...new Set([...named, ...ix.anySource])] : [...ix.anySource];
      for (const d of candidates.sort((a, b) => a - b)) {
        const { verdict } = decideL4(ix, s, d);
        // no EGRESS ALLOW names a policy: the proxy still judges L7 and the DENY rules that
        // depend on the request. A default deny is the guard's, with no entry
        if (verdict?.action === 'DENY') {
          if (!verdict.defaultDeny) row.push(entry('EGRESS', s, d, verdict));
        } else if (ix.allow.has(d)) {
          row.push({ ...entry('EGRESS', s, d, TO_PROXY), toProxy: true });
        }
      }
      ix.egress.set(s, row);
    }
    // shared, not copied, between the nodes the identity runs on: nothing mutates an entry
    for (const e of row) out.push(e);
  }

  // EGRESS is already in compareL4 order (local, then peer, ascending; one entry per
  // pair): only INGRESS needs sorting, which saves sorting tens of thousands of entries per node
  const egressEnd = out.length;

  // peers that reach an enrolled pod without the proxy: pods outside the mesh, and
  // addresses the ipcache knows as world or unmanaged (only a rule without `from` admits them)
  const outsiders = eix.outsiders;
  for (const d of local) {
    out.push(entry('INGRESS', d, ReservedIdentity.HOST, { action: 'ALLOW', policyId: 0, rule: 0 }));
    if (!ix.guardedSet.has(d)) {
      out.push(entry('INGRESS', d, 0, { action: 'ALLOW', policyId: 0, rule: 0 }));
      continue;
    }
    for (const s of outsiders) {
      if (s === ReservedIdentity.HOST) continue;
      const { verdict, denyNeedsL7 } = decideL4(ix, s, d);
      if (verdict?.action === 'DENY') out.push(entry('INGRESS', d, s, verdict));
      // without a proxy on the path an L7 DENY cannot be checked: then the peer is not admitted
      else if (verdict?.action === 'ALLOW' && !denyNeedsL7) out.push(entry('INGRESS', d, s, verdict));
    }
  }
  const ingress = out.splice(egressEnd).sort(compareL4);
  for (const e of ingress) out.push(e);
  return out;
}
