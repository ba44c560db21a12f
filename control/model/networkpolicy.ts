// Kubernetes NetworkPolicy (networking.k8s.io/v1) → identities, CIDR identities and the
// L4 entries of each node's BPF policy map, combined with the MeshPolicy entries.
//
// Semantics (kubernetes.io "Network Policies"):
//   - a pod selected by some NetworkPolicy whose policyTypes include Ingress (Egress) is
//     isolated for that direction: only what the union of those policies' rules admits is
//     allowed, everything else is a default deny naming the first such policy
//     (namespace/name order); a pod no policy selects for a direction is not restricted;
//   - policyTypes absent: Ingress, plus Egress when the policy has egress rules (defaulted
//     in kinds.ts);
//   - a rule admits a peer matched by ANY element of from/to (empty = every peer) on ANY of
//     its ports (empty = every port); inside one element podSelector and namespaceSelector
//     are AND'ed; podSelector alone means the policy's namespace; namespaceSelector {} means
//     every namespace; ipBlock admits addresses in cidr minus except (meant for addresses
//     outside the cluster: pod addresses keep their pod identity, as the docs allow);
//   - a port may be numeric, a named container port (resolved against the DESTINATION pod:
//     the local pod for ingress, the peer for egress) or a range port..endPort (expanded to
//     one entry per port, at most MAX_PORT_RANGE, rejected beyond that in kinds.ts);
//   - traffic to and from the node's host is always allowed (as the docs say).
// Selectors match identity labels (as MeshPolicy does): enforcement is per identity.
//
// Datapath limits: the BPF hooks see TCP only, so only TCP ports are written; a rule whose
// ports are all UDP/SCTP admits no TCP connection (correct), and UDP/SCTP traffic itself is
// not enforced (neither redirected nor dropped) in this version.
//
// ipBlock → CIDR identities: every distinct prefix written as a cidr or an except gets an
// identity of its own from the allocator ('cidr:<prefix>'), and an ipcache entry (Model
// networkPolicy.cidrIdentities → Snapshot.cidrIdentities). The ipcache is longest-prefix
// match, so an address resolves to the most specific prefix that holds it; a block
// (C, except E) then admits exactly the prefix identities inside C and not inside any e ∈ E,
// plus WORLD when C is a /0 (addresses no prefix holds).
//
// PRECEDENCE WITH MeshPolicy (both must allow; NetworkPolicy decides L4 reachability,
// MeshPolicy further restricts, at L4 here and at L7 in the proxy). For each local identity
// and direction the two layers are evaluated cell by cell over (peer, port) — every peer
// identity the map can see, plus "any other peer", times every port either layer names,
// plus "any other port" — with the same first-match lookup the kernel uses, and combined:
//   1. a NetworkPolicy DENY (default deny of an isolated pod) wins;
//   2. else a MeshPolicy DENY (explicit, or its default deny);
//   3. else ALLOW, named after the NetworkPolicy rule (or the MeshPolicy when it named one);
//   4. INGRESS only: NetworkPolicy ALLOW but MeshPolicy undecided (its admission needs L7,
//      which a connection that bypasses the proxy cannot get) → dropped, as MeshPolicy alone
//      would, written as a default deny of the MeshPolicy.
// A MeshPolicy EGRESS default deny is not an entry but the destination's guard (policy.ts):
// a cell towards a guarded peer that no MeshPolicy entry matches is that default deny.
// The cells are then written back as the fewest entries whose first-match lookup, followed
// by the guard for EGRESS, yields the same answer for every cell. Without any NetworkPolicy opinion for a (local, direction), the
// MeshPolicy entries are kept exactly as policy.ts wrote them.
//
// MESH TRAFFIC. A connection between two enrolled pods goes source → source-node proxy →
// destination-node proxy → destination, and cgroup_skb/ingress admits it because it comes from
// the proxy: the INGRESS map never sees it. So the destination's NetworkPolicy ingress is
// enforced at the SOURCE's connect(): the EGRESS cells of a local source S towards a peer P
// that is ingress-isolated also AND in P's ingress verdict for S (the source node is trusted
// for this, as it already is for MeshPolicy's egress denials). Gaps left:
//   - connect() to a Service VIP sees the service port, while NetworkPolicy ports name pod
//     ports: for a service whose backends share one identity P, the EGRESS cell (P, service
//     port) is allowed when the cell (P, targetPort) is (so a direct connection to a pod of P
//     on the service port number is admitted too: an over-approximation on a port the pod
//     usually does not listen on). A VIP whose backends carry several identities is judged as
//     peer "any" and is refused by an isolating policy unless a rule admits every peer on
//     that port; the proxy, which picks the backend, should re-check (agent/policy evaluate
//     does not read NetworkPolicy yet);
//   - "a pod cannot block access to itself": enforcement is per identity, so a pod reaching
//     its own address is judged like a connection to another replica of its identity;
//   - the HOST identity covers the addresses of every node (agent ipcache), not only the
//     pod's own node, so the host exception is a little wider than the docs say;
//   - a source that is not enrolled reaching an enrolled pod is checked by the INGRESS map
//     (it bypasses the proxy); one reaching a non-enrolled pod is not enforced at all (no
//     hooks on non-enrolled pods).
import type { EndpointInfo, Guard, IdentityInfo, L4Entry, ServiceInfo } from '../api/types.ts';
import { ReservedIdentity } from '../api/types.ts';
import { ipBits } from '../cluster/kinds.ts';
import type { LabelSelector, NamespaceObject, NetworkPolicyObject, PodObject } from '../cluster/state.ts';
import type { IdAllocator } from './ids.ts';
import { compareL4 } from './policy.ts';

export interface NpPort {
  protocol: 'TCP' | 'UDP' | 'SCTP';
  /** absent: every port; a string is a named container port of the destination */
  port?: number | string;
  endPort?: number;
}

export interface CompiledNpRule {
  index: number;
  /** absent: every peer (from/to empty); else workload and CIDR identities (and WORLD for a /0 block) */
  peers?: number[];
  /** absent: every port */
  ports?: NpPort[];
}

export interface CompiledNetworkPolicy {
  id: number;
  namespace: string;
  name: string;
  /** identities the podSelector selects (in the policy's namespace) */
  selects: number[];
  /** present iff policyTypes includes Ingress (an empty list isolates and admits nothing) */
  ingress?: CompiledNpRule[];
  egress?: CompiledNpRule[];
}

export interface NetworkPolicyModel {
  policies: CompiledNetworkPolicy[];
  /** identity → container port name → port numbers across its pods */
  namedPorts: Record<string, Record<string, number[]>>;
  /** ipBlock prefixes (canonical) and their identities: ipcache entries */
  cidrIdentities: Array<{ cidr: string; identity: number }>;
}

/** the policy id allocator key of a NetworkPolicy (apart from MeshPolicy's `<ns>/<name>`) */
export const networkPolicyKey = (namespace: string, name: string): string => `NetworkPolicy/${namespace}/${name}`;

/** Kubernetes label selector semantics: matchLabels and every expression AND'ed */
export function selectorMatches(sel: LabelSelector, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels)) if (labels[k] !== v) return false;
  for (const e of sel.matchExpressions) {
    const has = Object.hasOwn(labels, e.key);
    switch (e.operator) {
      case 'In': if (!has || !e.values.includes(labels[e.key]!)) return false; break;
      case 'NotIn': if (has && e.values.includes(labels[e.key]!)) return false; break;
      case 'Exists': if (!has) return false; break;
      case 'DoesNotExist': if (has) return false; break;
    }
  }
  return true;
}

interface Prefix { v4: boolean; bits: bigint; len: number; text: string }

/** a CIDR with its host bits cleared, in one spelling */
function prefixOf(cidr: string): Prefix {
  const [addr, lenText] = cidr.split('/');
  const ip = ipBits(addr!)!;
  const len = Number(lenText);
  const width = ip.v4 ? 32 : 128;
  const shift = BigInt(width - len);
  const bits = (ip.bits >> shift) << shift;
  let text: string;
  if (ip.v4) text = [24n, 16n, 8n, 0n].map((s) => String((bits >> s) & 0xffn)).join('.');
  else text = Array.from({ length: 8 }, (_, i) => ((bits >> BigInt(112 - 16 * i)) & 0xffffn).toString(16)).join(':');
  return { v4: ip.v4, bits, len, text: `${text}/${len}` };
}

const within = (inner: Prefix, outer: Prefix): boolean => {
  if (inner.v4 !== outer.v4 || inner.len < outer.len) return false;
  const shift = BigInt((inner.v4 ? 32 : 128) - outer.len);
  return (inner.bits >> shift) === (outer.bits >> shift);
};

const byNsName = (a: { namespace: string; name: string }, b: { namespace: string; name: string }): number =>
  a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/** resolve selectors to identities and allocate the CIDR identities; undefined when there is no NetworkPolicy */
export function compileNetworkPolicies(
  policies: readonly NetworkPolicyObject[], identities: readonly IdentityInfo[], namespaces: readonly NamespaceObject[],
  pods: ReadonlyMap<PodObject, number>, ids: IdAllocator,
): NetworkPolicyModel | undefined {
  if (policies.length === 0) return undefined;
  // every namespace carries kubernetes.io/metadata.name (set by the API server)
  const nsLabels = new Map<string, Record<string, string>>();
  for (const n of namespaces) nsLabels.set(n.name, { ...n.labels, 'kubernetes.io/metadata.name': n.name });
  const nsLabelsOf = (ns: string): Record<string, string> => nsLabels.get(ns) ?? { 'kubernetes.io/metadata.name': ns };

  const sorted = [...policies].sort(byNsName);
  const prefixes = new Map<string, Prefix>();
  for (const p of sorted) {
    for (const r of [...p.ingress, ...p.egress]) {
      for (const peer of r.peers) {
        if (!('ipBlock' in peer)) continue;
        for (const c of [peer.ipBlock.cidr, ...peer.ipBlock.except]) {
          const pre = prefixOf(c);
          prefixes.set(pre.text, pre);
        }
      }
    }
  }
  const cidrIdentities = [...prefixes.keys()].sort().map((cidr) => ({ cidr, identity: ids.id('identities', `cidr:${cidr}`) }));

  const compileRules = (p: NetworkPolicyObject, rules: NetworkPolicyObject['ingress']): CompiledNpRule[] => rules.map((r, index) => {
    if (r.peers.length === 0) return { index, ...(r.ports.length > 0 ? { ports: r.ports.map((x) => ({ ...x })) } : {}) };
    const admitted = new Set<number>();
    for (const peer of r.peers) {
      if ('ipBlock' in peer) {
        const block = prefixOf(peer.ipBlock.cidr);
        const except = peer.ipBlock.except.map(prefixOf);
        for (const c of cidrIdentities) {
          const pre = prefixes.get(c.cidr)!;
          if (within(pre, block) && !except.some((e) => within(pre, e))) admitted.add(c.identity);
        }
        if (block.len === 0) admitted.add(ReservedIdentity.WORLD);
        continue;
      }
      for (const i of identities) {
        const nsOk = peer.namespaceSelector ? selectorMatches(peer.namespaceSelector, nsLabelsOf(i.namespace)) : i.namespace === p.namespace;
        if (nsOk && (!peer.podSelector || selectorMatches(peer.podSelector, i.labels))) admitted.add(i.id);
      }
    }
    return { index, peers: [...admitted].sort((a, b) => a - b), ...(r.ports.length > 0 ? { ports: r.ports.map((x) => ({ ...x })) } : {}) };
  });

  const compiled = sorted.map((p): CompiledNetworkPolicy => ({
    id: ids.id('policies', networkPolicyKey(p.namespace, p.name)),
    namespace: p.namespace,
    name: p.name,
    selects: identities.filter((i) => i.namespace === p.namespace && selectorMatches(p.podSelector, i.labels)).map((i) => i.id),
    ...(p.policyTypes.includes('Ingress') ? { ingress: compileRules(p, p.ingress) } : {}),
    ...(p.policyTypes.includes('Egress') ? { egress: compileRules(p, p.egress) } : {}),
  }));

  const named: Record<string, Record<string, number[]>> = {};
  for (const [pod, identity] of pods) {
    for (const [n, port] of Object.entries(pod.namedPorts)) {
      const list = ((named[String(identity)] ??= {})[n] ??= []);
      if (!list.includes(port)) list.push(port);
    }
  }
  for (const byName of Object.values(named)) for (const l of Object.values(byName)) l.sort((a, b) => a - b);
  return { policies: compiled, namedPorts: named, cidrIdentities };
}

// ---- per-node L4 entries -------------------------------------------------------------

interface Verdict { action: 'ALLOW' | 'DENY'; policyId: number; rule: number; defaultDeny?: boolean; toProxy?: boolean }
type Dir = 'INGRESS' | 'EGRESS';
/** the peer of no known identity: the (any, ...) row */
const ANY = 0;

const isolating = (np: NetworkPolicyModel, dir: Dir, local: number): CompiledNetworkPolicy[] =>
  np.policies.filter((p) => (dir === 'INGRESS' ? p.ingress : p.egress) !== undefined && p.selects.includes(local));
const rulesOf = (p: CompiledNetworkPolicy, dir: Dir): CompiledNpRule[] => (dir === 'INGRESS' ? p.ingress : p.egress) ?? [];

/** does one port entry admit TCP port q (0: a port no list names) towards `dest` */
function portAdmits(np: NetworkPolicyModel, pp: NpPort, q: number, dest: number): boolean {
  if (pp.protocol !== 'TCP') return false;
  if (pp.port === undefined) return true;
  if (typeof pp.port === 'number') return q === pp.port || (pp.endPort !== undefined && q >= pp.port && q <= pp.endPort);
  return dest !== ANY && np.namedPorts[String(dest)]?.[pp.port]?.includes(q) === true;
}

/** the ports the isolating rules name towards `dest` (ranges expanded, names resolved) */
function portsNamed(np: NetworkPolicyModel, pols: readonly CompiledNetworkPolicy[], dir: Dir, dest: number, into: Set<number>): void {
  for (const p of pols) {
    for (const r of rulesOf(p, dir)) {
      for (const pp of r.ports ?? []) {
        if (pp.protocol !== 'TCP' || pp.port === undefined) continue;
        if (typeof pp.port === 'number') for (let q = pp.port; q <= (pp.endPort ?? pp.port); q++) into.add(q);
        else if (dest !== ANY) for (const q of np.namedPorts[String(dest)]?.[pp.port] ?? []) into.add(q);
      }
    }
  }
}

/** the NetworkPolicy verdict for `local` in `dir` with `peer` on port q; undefined: `local` is not isolated */
function npVerdict(np: NetworkPolicyModel, pols: readonly CompiledNetworkPolicy[], dir: Dir, local: number, peer: number, q: number): Verdict | undefined {
  if (pols.length === 0) return undefined;
  if (peer === ReservedIdentity.HOST) return { action: 'ALLOW', policyId: 0, rule: 0 };
  const dest = dir === 'INGRESS' ? local : peer;
  for (const p of pols) {
    for (const r of rulesOf(p, dir)) {
      const peerOk = r.peers === undefined || (peer !== ANY && r.peers.includes(peer));
      if (peerOk && (r.ports === undefined || r.ports.some((pp) => portAdmits(np, pp, q, dest)))) {
        return { action: 'ALLOW', policyId: p.id, rule: r.index };
      }
    }
  }
  return { action: 'DENY', policyId: pols[0]!.id, rule: 0, defaultDeny: true };
}

/** the kernel's first-match lookup over one (direction, local)'s entries */
export function lookupL4(entries: readonly L4Entry[], dir: Dir, local: number, peer: number, port: number): L4Entry | undefined {
  const probe = (p: number, q: number): L4Entry | undefined =>
    entries.find((e) => e.direction === dir && e.localIdentity === local && e.peerIdentity === p && e.port === q && (e.proto ?? 'TCP') === 'TCP');
  return probe(peer, port) ?? probe(peer, 0) ?? probe(ANY, port) ?? probe(ANY, 0);
}

const toVerdict = (e: L4Entry | undefined): Verdict | undefined =>
  e ? { action: e.action, policyId: e.policyId, rule: e.rule ?? 0, ...(e.defaultDeny ? { defaultDeny: true } : {}), ...(e.toProxy ? { toProxy: true } : {}) } : undefined;
const sameVerdict = (a: Verdict | undefined, b: Verdict | undefined): boolean =>
  a === b || (a !== undefined && b !== undefined && a.action === b.action && a.policyId === b.policyId && a.rule === b.rule
    && !a.defaultDeny === !b.defaultDeny && !a.toProxy === !b.toProxy);

/**
 * the combined BPF policy entries for one node: MeshPolicy entries (policy.ts l4ForNode)
 * merged with the NetworkPolicy model, as the header comment describes
 */
export function mergeNetworkPolicyL4(
  node: string, endpoints: readonly EndpointInfo[], identities: readonly IdentityInfo[], mesh: readonly L4Entry[], np: NetworkPolicyModel | undefined,
  services: readonly ServiceInfo[] = [], guards: readonly Guard[] = [],
): L4Entry[] {
  if (!np) return [...mesh];
  // an EGRESS cell no entry matches is the destination's guard, a default deny (policy.ts)
  const guardOf = new Map(guards.map((g) => [g.identity, g.policyId]));
  const guardVerdict = (peer: number): Verdict | undefined => {
    const id = guardOf.get(peer);
    return id === undefined ? undefined : { action: 'DENY', policyId: id, rule: 0, defaultDeny: true };
  };
  // VIP port → target ports, per backend identity (services whose backends share one)
  const vip = new Map<number, Map<number, number[]>>();
  for (const svc of services) {
    if (svc.identity === ANY) continue;
    for (const sp of svc.ports) {
      if (sp.protocol !== 'TCP' || sp.targetPort === 0 || sp.targetPort === sp.port) continue;
      const byPort = vip.get(svc.identity) ?? new Map<number, number[]>();
      vip.set(svc.identity, byPort);
      const t = byPort.get(sp.port) ?? [];
      if (!t.includes(sp.targetPort)) t.push(sp.targetPort);
      byPort.set(sp.port, t);
    }
  }
  const local = [...new Set(endpoints.filter((e) => e.node === node && e.enrolled).map((e) => e.identity))].sort((a, b) => a - b);
  const cidrIds = np.cidrIdentities.map((c) => c.identity);
  const cidrSet = new Set(cidrIds);
  const meshDefaultDeny = new Map(endpoints.filter((e) => e.defaultDenyPolicyId !== undefined).map((e) => [e.identity, e.defaultDenyPolicyId!]));
  // the MeshPolicy compiler knows no CIDR identity: such a peer is what WORLD was before it
  const meshPeer = (p: number): number => (cidrSet.has(p) ? ReservedIdentity.WORLD : p);
  const outsiders = [ReservedIdentity.HOST, ReservedIdentity.WORLD, ReservedIdentity.UNMANAGED, ...endpoints.filter((e) => !e.enrolled).map((e) => e.identity)];
  const everyone = [ReservedIdentity.HOST, ReservedIdentity.WORLD, ReservedIdentity.UNMANAGED, ...identities.map((i) => i.id)];

  const out: L4Entry[] = [];
  for (const dir of ['EGRESS', 'INGRESS'] as const) {
    for (const l of local) {
      const own = isolating(np, dir, l);
      const meshOwn = mesh.filter((e) => e.direction === dir && e.localIdentity === l);
      const peers = [...new Set([...(dir === 'EGRESS' ? everyone : outsiders), ...cidrIds, ...meshOwn.map((e) => e.peerIdentity)])]
        .filter((p) => p !== ANY).sort((a, b) => a - b);
      // the destination's ingress policies, for mesh traffic judged at the source (EGRESS only)
      const destPols = new Map<number, CompiledNetworkPolicy[]>();
      if (dir === 'EGRESS') for (const p of peers) { const d = isolating(np, 'INGRESS', p); if (d.length > 0) destPols.set(p, d); }

      if (own.length === 0 && destPols.size === 0) {
        // no NetworkPolicy opinion: MeshPolicy's entries, with WORLD's extended to the CIDR identities
        out.push(...meshOwn);
        for (const e of meshOwn) if (e.peerIdentity === ReservedIdentity.WORLD) for (const c of cidrIds) out.push({ ...e, peerIdentity: c });
        continue;
      }

      // the same first-match lookup as lookupL4, indexed: cells are peers × ports
      const meshAt = new Map(meshOwn.filter((e) => (e.proto ?? 'TCP') === 'TCP').map((e) => [`${e.peerIdentity}/${e.port}`, e]));
      const drop: Verdict = { action: 'DENY', policyId: meshDefaultDeny.get(l) ?? own[0]?.id ?? 0, rule: 0, defaultDeny: true };
      const direct = (peer: number, q: number): Verdict | undefined => {
        const n = npVerdict(np, own, dir, l, peer, q);
        const d = peer !== ANY ? npVerdict(np, destPols.get(peer) ?? [], 'INGRESS', peer, l, q) : undefined;
        const mp = peer === ANY ? ANY : meshPeer(peer);
        const m = toVerdict(meshAt.get(`${mp}/${q}`) ?? meshAt.get(`${mp}/0`) ?? meshAt.get(`${ANY}/${q}`) ?? meshAt.get(`${ANY}/0`))
          ?? (dir === 'EGRESS' && mp !== ANY ? guardVerdict(mp) : undefined);
        if (n?.action === 'DENY') return n;
        if (d?.action === 'DENY') return d;
        if (m?.action === 'DENY') return m;
        const allow = n ?? d;
        if (!allow) return m;
        if (!m) return dir === 'INGRESS' ? drop : allow;
        return m.policyId !== 0 ? m : allow;
      };
      const cell = (peer: number, q: number): Verdict | undefined => {
        const v = direct(peer, q);
        if (dir !== 'EGRESS' || v?.action !== 'DENY' || peer === ANY) return v;
        for (const t of vip.get(peer)?.get(q) ?? []) {
          const w = direct(peer, t);
          if (w?.action === 'ALLOW') return w;
        }
        return v;
      };
      // an undefined cell that must shadow a wider entry: what the kernel does on no match
      const express = (v: Verdict | undefined): Verdict => v ?? (dir === 'INGRESS' ? drop : { action: 'ALLOW', policyId: 0, rule: 0 });
      const entry = (peer: number, port: number, v: Verdict): L4Entry =>
        ({ direction: dir, localIdentity: l, peerIdentity: peer, port, action: v.action, policyId: v.policyId, rule: v.rule,
          ...(v.defaultDeny ? { defaultDeny: true } : {}), ...(v.toProxy ? { toProxy: true } : {}) });

      const anyPorts = new Set<number>();
      portsNamed(np, own, dir, dir === 'INGRESS' ? l : ANY, anyPorts);
      const anyRow = new Map<number, Verdict | undefined>();
      const any0 = cell(ANY, 0);
      if (any0) out.push(entry(ANY, 0, any0));
      for (const q of [...anyPorts].sort((a, b) => a - b)) {
        const v = cell(ANY, q);
        anyRow.set(q, v);
        if (!sameVerdict(v, any0)) out.push(entry(ANY, q, express(v)));
      }
      // what the kernel finds for (p, q) when p has no entry of its own: an (any, q) entry,
      // else (any, any), else for EGRESS the guard of p (deny by absence needs no entry)
      const viaAny = (p: number, q: number): Verdict | undefined => {
        if (anyRow.has(q) && !sameVerdict(anyRow.get(q), any0)) return anyRow.get(q);
        if (any0 !== undefined) return any0;
        return dir === 'EGRESS' ? guardVerdict(meshPeer(p)) : undefined;
      };

      for (const p of peers) {
        const ports = new Set(anyPorts);
        portsNamed(np, own, dir, dir === 'INGRESS' ? l : p, ports);
        if (destPols.has(p)) portsNamed(np, destPols.get(p)!, 'INGRESS', p, ports);
        if (dir === 'EGRESS') for (const q of vip.get(p)?.keys() ?? []) ports.add(q);
        const p0 = cell(p, 0);
        const own0 = !sameVerdict(p0, viaAny(p, 0));
        if (own0) out.push(entry(p, 0, express(p0)));
        for (const q of [...ports].sort((a, b) => a - b)) {
          const v = cell(p, q);
          if (!sameVerdict(v, own0 ? p0 : viaAny(p, q))) out.push(entry(p, q, express(v)));
        }
      }
    }
  }
  return out.sort(compareL4);
}
