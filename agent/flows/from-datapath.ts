// Kernel verdict events into flows: the 5-tuple and identities come from the event; pod,
// namespace, labels, Service and the policy that decided come from the current snapshot.
// Every verdict names its policy and rule, including "default deny because policy X
// selects this workload" (DESIGN §4), in Hubble's *_denied_by / *_allowed_by fields.
//
// This runs once per kernel verdict, at up to hundreds of thousands a second, and the
// store keeps every flow for a while, so what a flow holds costs garbage-collector time.
// What depends only on the snapshot (endpoints with their labels, named policies, their
// summaries) is built once per snapshot and shared by the flows that refer to it; shared
// parts are frozen, since a flow is never changed after it is made.
import type { CompiledPolicy, EndpointInfo, IdentityInfo, ServiceInfo, Snapshot } from '../../control/api/types.ts';
import type { VerdictEvent } from '../datapath/index.ts';
import { flowUuid } from './uuid.ts';
import { DropReasonCode, MessageType, TracePoint, timeFromNs, type Flow, type FlowEndpoint, type FlowEventType, type FlowPolicy } from './flow.ts';

/** Cilium's names for the reserved identities (DESIGN §4 uses the same numbers) */
export const RESERVED_IDENTITY_NAMES: Readonly<Record<number, string>> = {
  1: 'host', 2: 'world', 3: 'unmanaged', 4: 'health', 5: 'init', 6: 'remote-node', 7: 'kube-apiserver', 8: 'ingress',
};

/** endpoints remembered per snapshot; past this many (a scan from many sources) start over */
const ENDPOINT_CACHE_MAX = 16_384;

interface NamedPolicy {
  /** frozen, shared by every flow this policy decided with this rule */
  policies: FlowPolicy[];
  text: string;
  /** summaries by verdict wording, made on first use */
  summaries: Map<string, string>;
}

interface SnapshotIndex {
  endpointsByIp: Map<string, EndpointInfo>;
  identities: Map<number, IdentityInfo>;
  services: Map<string, ServiceInfo>;
  policies: Map<number, CompiledPolicy>;
  revision: number | undefined;
  /** flow endpoints by ip, then by identity and endpoint id */
  endpoints: Map<string, Map<number, FlowEndpoint>>;
  endpointCount: number;
  /** by policy id and rule (or default deny) */
  named: Map<number, NamedPolicy>;
}

const newIndex = (s: Snapshot | undefined): SnapshotIndex => ({
  endpointsByIp: new Map(s?.endpoints.map((e) => [e.ip, e])),
  identities: new Map(s?.identities.map((i) => [i.id, i])),
  services: new Map(s?.services.map((v) => [v.clusterIp, v])),
  // Kubernetes NetworkPolicies share the policy id space; named with their own kind
  policies: new Map<number, CompiledPolicy>([
    ...(s?.networkPolicies ?? []).map((n): [number, CompiledPolicy] =>
      [n.id, { id: n.id, namespace: n.namespace, name: n.name, kind: 'NetworkPolicy', action: 'ALLOW', selects: [], rules: [] } as CompiledPolicy]),
    ...(s?.policies ?? []).map((p): [number, CompiledPolicy] => [p.id, p]),
  ]),
  revision: s?.version,
  endpoints: new Map(),
  endpointCount: 0,
  named: new Map(),
});

// one index per snapshot object: snapshots are replaced, never mutated
const indexes = new WeakMap<Snapshot, SnapshotIndex>();
/** flows made without a snapshot share their own caches */
const noSnapshot = newIndex(undefined);
function indexOf(s: Snapshot | undefined): SnapshotIndex {
  if (!s) return noSnapshot;
  let ix = indexes.get(s);
  if (!ix) {
    ix = newIndex(s);
    indexes.set(s, ix);
  }
  return ix;
}

/** labels the way Hubble shows them: `k8s:key=value`, sorted, plus the namespace label */
export function endpointLabels(labels: Record<string, string>, namespace: string | undefined): string[] {
  const out = Object.entries(labels).map(([k, v]) => `k8s:${k}=${v}`);
  if (namespace) out.push(`k8s:io.kubernetes.pod.namespace=${namespace}`);
  return out.sort();
}

/** Hubble's Endpoint.workloads for a pod's controller: one entry, frozen with the endpoint */
function flowWorkloads(w: { kind: string; name: string }): NonNullable<FlowEndpoint['workloads']> {
  return Object.freeze([Object.freeze({ name: w.name, kind: w.kind })]) as NonNullable<FlowEndpoint['workloads']>;
}

function makeEndpoint(ip: string, identity: number, ix: SnapshotIndex, endpointId: number): FlowEndpoint {
  const ep = ix.endpointsByIp.get(ip);
  const id = identity || ep?.identity || 0;
  const out: FlowEndpoint = { identity: id };
  if (endpointId) out.ID = endpointId;
  if (ep) {
    out.namespace = ep.namespace;
    out.podName = ep.name;
    out.labels = Object.freeze(endpointLabels(ep.labels, ep.namespace)) as string[];
    if (ep.workload) out.workloads = flowWorkloads(ep.workload);
    return Object.freeze(out);
  }
  const info = ix.identities.get(id);
  if (info) {
    out.namespace = info.namespace;
    out.labels = Object.freeze(endpointLabels(info.labels, info.namespace)) as string[];
  } else if (RESERVED_IDENTITY_NAMES[id]) {
    out.labels = Object.freeze([`reserved:${RESERVED_IDENTITY_NAMES[id]}`]) as string[];
  }
  return Object.freeze(out);
}

/** the endpoint at `ip`, shared by every flow of this snapshot that names it the same way */
function endpointFor(ip: string, identity: number, ix: SnapshotIndex, endpointId: number | undefined): FlowEndpoint {
  // identity and endpoint id are u32: together they key exactly below 2^53 only when
  // the identity is small, so fall back to building when they do not fit
  const eid = endpointId ?? 0;
  if (identity >= 0x200000) return makeEndpoint(ip, identity, ix, eid);
  const key = identity * 4294967296 + eid;
  let byKey = ix.endpoints.get(ip);
  let out = byKey?.get(key);
  if (out) return out;
  out = makeEndpoint(ip, identity, ix, eid);
  if (ix.endpointCount >= ENDPOINT_CACHE_MAX) {
    ix.endpoints.clear();
    ix.endpointCount = 0;
    byKey = undefined;
  }
  if (!byKey) ix.endpoints.set(ip, (byKey = new Map()));
  byKey.set(key, out);
  ix.endpointCount++;
  return out;
}

/** the kind of a compiled policy; MeshPolicy unless the compiler says otherwise */
function kindOf(p: CompiledPolicy): string {
  const k = (p as CompiledPolicy & { kind?: unknown }).kind;
  return typeof k === 'string' && k !== '' ? k : 'MeshPolicy';
}

function namePolicy(ev: VerdictEvent, ix: SnapshotIndex, withRule: boolean): NamedPolicy | undefined {
  if (!ev.policyId) return undefined;
  // rule is a u16: one key per (policy, rule) and one for "default deny"
  const key = ev.policyId * 65537 + (withRule ? ev.rule : 65536);
  const hit = ix.named.get(key);
  if (hit) return hit;
  const p = ix.policies.get(ev.policyId);
  const labels = Object.freeze(withRule ? [`rule=${ev.rule}`] : ['default-deny']) as string[];
  let policy: FlowPolicy, text: string;
  if (!p) {
    policy = { name: `policy-${ev.policyId}`, namespace: '', kind: 'MeshPolicy', labels };
    text = `policy id ${ev.policyId} (not in the current snapshot)`;
  } else {
    const kind = kindOf(p);
    policy = { name: p.name, namespace: p.namespace, kind, labels, ...(ix.revision !== undefined ? { revision: ix.revision } : {}) };
    text = `${kind} ${p.namespace}/${p.name}`;
  }
  const named: NamedPolicy = { policies: Object.freeze([Object.freeze(policy)]) as FlowPolicy[], text, summaries: new Map() };
  ix.named.set(key, named);
  return named;
}

function summaryOf(named: NamedPolicy, wording: string, make: () => string): string {
  let s = named.summaries.get(wording);
  if (s === undefined) named.summaries.set(wording, (s = make()));
  return s;
}

function verdictOf(v: VerdictEvent['verdict']): Flow['verdict'] {
  return v === 'UNKNOWN' ? 'VERDICT_UNKNOWN' : v;
}

// event types are a handful of constant pairs: one frozen object each
const eventTypes = new Map<number, FlowEventType>();
function eventType(type: number, subType: number): FlowEventType {
  const key = type * 65536 + subType;
  let et = eventTypes.get(key);
  if (!et) eventTypes.set(key, (et = Object.freeze({ type, subType })));
  return et;
}

const SYN_ONLY = Object.freeze({ SYN: true });

function makeL4(proto: number, sport: number, dport: number, ingress: boolean): Flow['l4'] {
  if (proto === 6) return { TCP: ingress ? { sourcePort: sport, destinationPort: dport, flags: SYN_ONLY } : { sourcePort: sport, destinationPort: dport } };
  if (proto === 17) return { UDP: { sourcePort: sport, destinationPort: dport } };
  return undefined;
}

// a connect() verdict has no source port yet, so its l4 is one of a bounded few: shared
const l4NoSourcePort = new Map<number, Flow['l4']>();
function l4For(proto: number, sport: number, dport: number, ingress: boolean): Flow['l4'] {
  if (sport !== 0 || (proto !== 6 && proto !== 17)) return makeL4(proto, sport, dport, ingress);
  const key = proto * 0x20000 + (ingress ? 0x10000 : 0) + dport;
  let l4 = l4NoSourcePort.get(key);
  if (!l4) {
    l4 = makeL4(proto, sport, dport, ingress)!;
    Object.freeze(l4.TCP ?? l4.UDP);
    l4NoSourcePort.set(key, Object.freeze(l4));
  }
  return l4;
}

export interface FlowContext {
  node: string;
  snapshot?: Snapshot;
  /** the local pod behind a cgroup: connect() happens before the socket has an address */
  localEndpoint?: (cgroupId: bigint) => EndpointInfo | undefined;
}

/** one flow per kernel verdict (a connection attempt, or a SYN at an enrolled pod) */
export function flowFromVerdictEvent(ev: VerdictEvent, ctx: FlowContext): Flow {
  const ix = indexOf(ctx.snapshot);
  const ingress = ev.hook === 'ingress' || ev.direction === 'INGRESS';
  let srcIp = ev.source.ip;
  let srcPort = ev.source.port;
  if (!ingress && (srcIp === '::' || srcIp === '0.0.0.0') && ctx.localEndpoint) {
    const local = ctx.localEndpoint(ev.cgroupId);
    if (local?.ip) { srcIp = local.ip; srcPort = 0; }
  }
  const dstIp = ev.destination.ip;
  const verdict = verdictOf(ev.verdict);
  const f: Flow = {
    time: ev.time ?? timeFromNs(ev.timeNs),
    uuid: flowUuid(),
    verdict,
    IP: { source: srcIp, destination: dstIp, ipVersion: ev.family === 6 ? 'IPv6' : 'IPv4' },
    // the local endpoint is the sender at connect, the receiver at ingress
    source: endpointFor(srcIp, ev.srcIdentity, ix, ingress ? undefined : ev.endpointId),
    destination: endpointFor(dstIp, ev.dstIdentity, ix, ingress ? ev.endpointId : undefined),
    Type: 'L3_L4',
    nodeName: ctx.node,
    trafficDirection: ev.direction,
    // every verdict is about a new connection (the hooks never see replies)
    isReply: false,
  };
  const l4 = l4For(ev.proto, srcPort, ev.destination.port, ingress);
  if (l4) f.l4 = l4;
  const svc = ix.services.get(dstIp);
  if (svc) f.destinationService = { name: svc.name, namespace: svc.namespace };

  if (verdict === 'DROPPED') {
    const named = namePolicy(ev, ix, ev.reason === 'POLICY_DENY');
    switch (ev.reason) {
      case 'POLICY_DENY':
        f.dropReasonDesc = 'POLICY_DENY';
        f.summary = named ? summaryOf(named, 'deny', () => `denied by ${named.text} rule ${ev.rule}`) : 'denied by a DENY rule';
        break;
      case 'DEFAULT_DENY':
        // Hubble's name for "no rule allowed it"
        f.dropReasonDesc = 'POLICY_DENIED';
        f.summary = named ? summaryOf(named, 'default-deny', () => `default deny: no ALLOW rule of ${named.text} matches`) : 'default deny: no ALLOW rule matches';
        break;
      case 'NOT_FROM_PROXY':
        f.dropReasonDesc = 'POLICY_DENIED';
        f.summary = 'mesh bypass: a new connection to an enrolled pod must come through its node proxy, and no L4 policy admits this source';
        break;
      case 'UNSUPPORTED_L3':
        f.dropReasonDesc = 'UNSUPPORTED_L3_PROTOCOL';
        f.summary = 'address family not handled by the mesh';
        break;
      default:
        f.dropReasonDesc = 'DROP_REASON_UNKNOWN';
        f.summary = `dropped (datapath reason ${ev.reason})`;
    }
    if (named) f[ingress ? 'ingressDeniedBy' : 'egressDeniedBy'] = named.policies;
    f.eventType = eventType(MessageType.DROP, DropReasonCode[f.dropReasonDesc] ?? 0);
    return f;
  }

  const head = verdict === 'REDIRECTED' ? 'redirected to the node proxy' : ingress ? 'admitted' : 'forwarded';
  if (ev.reason === 'POLICY_ALLOW') {
    const named = namePolicy(ev, ix, true);
    if (named) f[ingress ? 'ingressAllowedBy' : 'egressAllowedBy'] = named.policies;
    f.summary = named ? summaryOf(named, head, () => `${head}: allowed by ${named.text} rule ${ev.rule}`) : `${head}: allowed by policy`;
  } else if (ev.reason === 'DEFAULT_ALLOW' && verdict !== 'REDIRECTED') {
    // at connect() only the source's own egress is judged; the destination decides later
    f.summary = `${head}: no policy selects this workload`;
  } else {
    f.summary = head;
  }
  f.eventType = eventType(
    MessageType.TRACE,
    verdict === 'REDIRECTED' ? TracePoint.TO_PROXY : ingress ? TracePoint.TO_ENDPOINT : TracePoint.TO_STACK,
  );
  return f;
}
