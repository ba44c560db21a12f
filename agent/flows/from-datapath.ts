// Kernel verdict events into flows: the 5-tuple and identities come from the event; pod,
// namespace, labels, Service and the policy that decided come from the current snapshot.
// Every verdict names its policy and rule, including "default deny because policy X
// selects this workload" (DESIGN §4), in Hubble's *_denied_by / *_allowed_by fields.
import { randomUUID } from 'node:crypto';
import type { CompiledPolicy, EndpointInfo, IdentityInfo, ServiceInfo, Snapshot } from '../../control/api/types.ts';
import type { VerdictEvent } from '../datapath/index.ts';
import { DropReasonCode, MessageType, TracePoint, timeFromNs, type Flow, type FlowEndpoint, type FlowPolicy } from './flow.ts';

/** Cilium's names for the reserved identities (DESIGN §4 uses the same numbers) */
export const RESERVED_IDENTITY_NAMES: Readonly<Record<number, string>> = {
  1: 'host', 2: 'world', 3: 'unmanaged', 4: 'health', 5: 'init', 6: 'remote-node', 7: 'kube-apiserver', 8: 'ingress',
};

interface SnapshotIndex {
  endpointsByIp: Map<string, EndpointInfo>;
  identities: Map<number, IdentityInfo>;
  services: Map<string, ServiceInfo>;
  policies: Map<number, CompiledPolicy>;
}

// one index per snapshot object: snapshots are replaced, never mutated
const indexes = new WeakMap<Snapshot, SnapshotIndex>();
function indexOf(s: Snapshot): SnapshotIndex {
  let ix = indexes.get(s);
  if (!ix) {
    ix = {
      endpointsByIp: new Map(s.endpoints.map((e) => [e.ip, e])),
      identities: new Map(s.identities.map((i) => [i.id, i])),
      services: new Map(s.services.map((v) => [v.clusterIp, v])),
      policies: new Map(s.policies.map((p) => [p.id, p])),
    };
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

function endpointFor(ip: string, identity: number, ix: SnapshotIndex | undefined, endpointId: number | undefined): FlowEndpoint {
  const ep = ix?.endpointsByIp.get(ip);
  const id = identity || ep?.identity || 0;
  const out: FlowEndpoint = { identity: id };
  if (endpointId) out.ID = endpointId;
  if (ep) {
    out.namespace = ep.namespace;
    out.podName = ep.name;
    out.labels = endpointLabels(ep.labels, ep.namespace);
    return out;
  }
  const info = ix?.identities.get(id);
  if (info) {
    out.namespace = info.namespace;
    out.labels = endpointLabels(info.labels, info.namespace);
  } else if (RESERVED_IDENTITY_NAMES[id]) {
    out.labels = [`reserved:${RESERVED_IDENTITY_NAMES[id]}`];
  }
  return out;
}

/** the kind of a compiled policy; MeshPolicy unless the compiler says otherwise */
function kindOf(p: CompiledPolicy): string {
  const k = (p as CompiledPolicy & { kind?: unknown }).kind;
  return typeof k === 'string' && k !== '' ? k : 'MeshPolicy';
}

interface NamedPolicy { policy: FlowPolicy; text: string }

function namePolicy(ev: VerdictEvent, s: Snapshot | undefined, ix: SnapshotIndex | undefined, withRule: boolean): NamedPolicy | undefined {
  if (!ev.policyId) return undefined;
  const p = ix?.policies.get(ev.policyId);
  const labels = withRule ? [`rule=${ev.rule}`] : ['default-deny'];
  if (!p) {
    return {
      policy: { name: `policy-${ev.policyId}`, namespace: '', kind: 'MeshPolicy', labels },
      text: `policy id ${ev.policyId} (not in the current snapshot)`,
    };
  }
  const kind = kindOf(p);
  return {
    policy: { name: p.name, namespace: p.namespace, kind, labels, ...(s ? { revision: s.version } : {}) },
    text: `${kind} ${p.namespace}/${p.name}`,
  };
}

function verdictOf(v: VerdictEvent['verdict']): Flow['verdict'] {
  return v === 'UNKNOWN' ? 'VERDICT_UNKNOWN' : v;
}

export interface FlowContext {
  node: string;
  snapshot?: Snapshot;
  /** the local pod behind a cgroup: connect() happens before the socket has an address */
  localEndpoint?: (cgroupId: bigint) => EndpointInfo | undefined;
}

const UNSPECIFIED = new Set(['::', '0.0.0.0']);

/** one flow per kernel verdict (a connection attempt, or a SYN at an enrolled pod) */
export function flowFromVerdictEvent(ev: VerdictEvent, ctx: FlowContext): Flow {
  const s = ctx.snapshot;
  const ix = s ? indexOf(s) : undefined;
  const ingress = ev.hook === 'ingress' || ev.direction === 'INGRESS';
  if (!ingress && UNSPECIFIED.has(ev.source.ip)) {
    const local = ctx.localEndpoint?.(ev.cgroupId);
    if (local?.ip) ev = { ...ev, source: { ip: local.ip, port: 0 } };
  }
  const verdict = verdictOf(ev.verdict);
  const f: Flow = {
    time: timeFromNs(ev.timeNs),
    uuid: randomUUID(),
    verdict,
    IP: { source: ev.source.ip, destination: ev.destination.ip, ipVersion: ev.family === 6 ? 'IPv6' : 'IPv4' },
    // the local endpoint is the sender at connect, the receiver at ingress
    source: endpointFor(ev.source.ip, ev.srcIdentity, ix, ingress ? undefined : ev.endpointId),
    destination: endpointFor(ev.destination.ip, ev.dstIdentity, ix, ingress ? ev.endpointId : undefined),
    Type: 'L3_L4',
    nodeName: ctx.node,
    trafficDirection: ev.direction,
    // every verdict is about a new connection (the hooks never see replies)
    isReply: false,
  };
  if (ev.proto === 6) {
    f.l4 = { TCP: { sourcePort: ev.source.port, destinationPort: ev.destination.port, ...(ingress ? { flags: { SYN: true } } : {}) } };
  } else if (ev.proto === 17) {
    f.l4 = { UDP: { sourcePort: ev.source.port, destinationPort: ev.destination.port } };
  }
  const svc = ix?.services.get(ev.destination.ip);
  if (svc) f.destinationService = { name: svc.name, namespace: svc.namespace };

  const rule = ` rule ${ev.rule}`;
  if (verdict === 'DROPPED') {
    const named = namePolicy(ev, s, ix, ev.reason === 'POLICY_DENY');
    switch (ev.reason) {
      case 'POLICY_DENY':
        f.dropReasonDesc = 'POLICY_DENY';
        f.summary = named ? `denied by ${named.text}${rule}` : 'denied by a DENY rule';
        break;
      case 'DEFAULT_DENY':
        // Hubble's name for "no rule allowed it"
        f.dropReasonDesc = 'POLICY_DENIED';
        f.summary = named ? `default deny: no ALLOW rule of ${named.text} matches` : 'default deny: no ALLOW rule matches';
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
    if (named) f[ingress ? 'ingressDeniedBy' : 'egressDeniedBy'] = [named.policy];
    f.eventType = { type: MessageType.DROP, subType: DropReasonCode[f.dropReasonDesc] ?? 0 };
    return f;
  }

  const head = verdict === 'REDIRECTED' ? 'redirected to the node proxy' : ingress ? 'admitted' : 'forwarded';
  if (ev.reason === 'POLICY_ALLOW') {
    const named = namePolicy(ev, s, ix, true);
    if (named) f[ingress ? 'ingressAllowedBy' : 'egressAllowedBy'] = [named.policy];
    f.summary = named ? `${head}: allowed by ${named.text}${rule}` : `${head}: allowed by policy`;
  } else if (ev.reason === 'DEFAULT_ALLOW' && verdict !== 'REDIRECTED') {
    // at connect() only the source's own egress is judged; the destination decides later
    f.summary = `${head}: no policy selects this workload`;
  } else {
    f.summary = head;
  }
  f.eventType = {
    type: MessageType.TRACE,
    subType: verdict === 'REDIRECTED' ? TracePoint.TO_PROXY : ingress ? TracePoint.TO_ENDPOINT : TracePoint.TO_STACK,
  };
  return f;
}
