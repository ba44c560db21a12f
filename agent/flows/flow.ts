// A flow: one record per connection verdict (L3/L4) or per request (L7), shaped like
// Hubble's flow.Flow (field names in camelCase as protobufjs renders them) so the
// Observer API can serve it on the wire unchanged. Fill what is known; leave the rest out.
// The only departures from the wire shape (bridged by agent/flows/wire.ts): `summary`
// is Hubble's `Summary`, `isReply` is a plain boolean (a BoolValue on the wire).

export type FlowVerdict = 'VERDICT_UNKNOWN' | 'FORWARDED' | 'DROPPED' | 'ERROR' | 'AUDIT' | 'REDIRECTED';
export type TrafficDirection = 'TRAFFIC_DIRECTION_UNKNOWN' | 'INGRESS' | 'EGRESS';
/** Hubble's flow.FlowType */
export type FlowType = 'UNKNOWN_TYPE' | 'L3_L4' | 'L7';

export interface FlowEndpoint {
  /** endpoint id (per node) */
  ID?: number;
  identity?: number;
  namespace?: string;
  /** k8s:key=value, as Hubble prints them */
  labels?: string[];
  podName?: string;
  workloads?: Array<{ name: string; kind: string }>;
}

export interface FlowPolicy {
  name: string;
  namespace: string;
  /** kind of the policy object, e.g. MeshPolicy */
  kind?: string;
  revision?: number;
  /** nodal extension carried in labels: rule index within the policy */
  labels?: string[];
}

export interface FlowL7Http {
  code?: number;
  method?: string;
  url?: string;
  protocol?: string;
  headers?: Array<{ key: string; value: string }>;
}

/** Hubble's flow.CiliumEventType: what kind of event produced the flow */
export interface FlowEventType {
  type: number;
  subType?: number;
}

export interface FlowService {
  name: string;
  namespace: string;
}

export interface Flow {
  /** wall time */
  time: { seconds: number; nanos: number };
  uuid: string;
  verdict: FlowVerdict;
  /** Hubble DropReason name, e.g. POLICY_DENIED */
  dropReasonDesc?: string;
  IP?: { source: string; destination: string; ipVersion: 'IPv4' | 'IPv6' | 'IP_NOT_USED' };
  l4?: { TCP?: { sourcePort: number; destinationPort: number; flags?: Record<string, boolean> }; UDP?: { sourcePort: number; destinationPort: number } };
  source?: FlowEndpoint;
  destination?: FlowEndpoint;
  Type: FlowType;
  nodeName: string;
  l7?: { type: 'REQUEST' | 'RESPONSE' | 'SAMPLE' | 'UNKNOWN_L7_TYPE'; latencyNs?: number; http?: FlowL7Http };
  trafficDirection: TrafficDirection;
  isReply?: boolean;
  egressAllowedBy?: FlowPolicy[];
  ingressAllowedBy?: FlowPolicy[];
  egressDeniedBy?: FlowPolicy[];
  ingressDeniedBy?: FlowPolicy[];
  traceContext?: { parent: { traceId: string; spanId?: string } };
  /** free text, shown by `nodal observe` after the verdict: why */
  summary?: string;
  /** filled by eventTypeOf() on the wire when absent, so Hubble's --type filters work */
  eventType?: FlowEventType;
  /** the Service a VIP destination (or source) belongs to */
  sourceService?: FlowService;
  destinationService?: FlowService;
}

/** Cilium monitor message types, as Hubble's EventTypeFilter and printer number them */
export const MessageType = { DROP: 1, TRACE: 4, POLICY_VERDICT: 5, ACCESS_LOG: 129 } as const;

/** Cilium trace observation points (sub_type of a TRACE event) that nodal reports */
export const TracePoint = { TO_ENDPOINT: 0, TO_PROXY: 1, TO_STACK: 3, FROM_PROXY: 6 } as const;

/** Hubble DropReason numbers for the names nodal uses */
export const DropReasonCode: Readonly<Record<string, number>> = {
  POLICY_DENIED: 133, UNSUPPORTED_L3_PROTOCOL: 139, INVALID_IDENTITY: 171, UNKNOWN_SENDER: 172,
  POLICY_DENY: 181, AUTH_REQUIRED: 189,
};

/**
 * The event type of a flow: its own when set, else derived the way Cilium would have
 * emitted it (an L7 record is an access log, a drop is a drop, anything else a trace).
 */
export function eventTypeOf(f: Flow): FlowEventType {
  if (f.eventType) return f.eventType;
  if (f.l7 || f.Type === 'L7') return { type: MessageType.ACCESS_LOG, subType: 0 };
  if (f.verdict === 'DROPPED') return { type: MessageType.DROP, subType: DropReasonCode[f.dropReasonDesc ?? ''] ?? 0 };
  // a pod's egress leaves for the network stack; ingress is delivered to the endpoint
  return { type: MessageType.TRACE, subType: f.trafficDirection === 'INGRESS' ? TracePoint.TO_ENDPOINT : TracePoint.TO_STACK };
}

export type FlowTime = Flow['time'];

/** orders two timestamps: negative when a is earlier */
export function compareTime(a: FlowTime, b: FlowTime): number {
  return a.seconds !== b.seconds ? a.seconds - b.seconds : a.nanos - b.nanos;
}

export function timeFromNs(ns: bigint): FlowTime {
  return { seconds: Number(ns / 1_000_000_000n), nanos: Number(ns % 1_000_000_000n) };
}

export function timeFromMs(ms: number): FlowTime {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

export function nowTime(): FlowTime {
  return timeFromMs(Date.now());
}
