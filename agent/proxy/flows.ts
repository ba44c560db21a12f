// Building Flow records (agent/flows/flow.ts): one per connection verdict, one per request.

import type { Flow, FlowPolicy, FlowType, FlowVerdict, TrafficDirection } from '../flows/flow.ts';
import type { Decision } from '../policy/index.ts';
import { flowUuid } from '../flows/uuid.ts';

export interface Addr { ip: string; port: number }

/** wall time with sub-millisecond precision: flows from one node sort in the order they happened */
function now(): Flow['time'] {
  const ms = performance.timeOrigin + performance.now();
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.floor((ms - seconds * 1000) * 1e6) };
}

export function newFlow(
  nodeName: string, verdict: FlowVerdict, type: FlowType, direction: TrafficDirection,
  src: Addr | undefined, dst: Addr | undefined,
): Flow {
  // the proxy records requests and connections, never replies on their own; addresses are
  // IP addresses already (normalised), so a colon is what makes one IPv6
  const f: Flow = { time: now(), uuid: flowUuid(), verdict, Type: type, nodeName, trafficDirection: direction, isReply: false };
  if (src && dst && src.ip && dst.ip) {
    f.IP = { source: src.ip, destination: dst.ip, ipVersion: src.ip.includes(':') ? 'IPv6' : 'IPv4' };
    f.l4 = { TCP: { sourcePort: src.port, destinationPort: dst.port } };
  }
  return f;
}

export function flowPolicy(p: NonNullable<Decision['policy']>): FlowPolicy {
  const fp: FlowPolicy = { name: p.name, namespace: p.namespace, kind: 'MeshPolicy' };
  if (p.rule !== undefined) fp.labels = [`rule=${p.rule}`];
  return fp;
}

/** ingress allowed_by / denied_by, the drop reason, and the audit mark of a decision */
export function applyDecision(f: Flow, d: Decision): void {
  if (d.policy) {
    if (d.allowed) f.ingressAllowedBy = [flowPolicy(d.policy)];
    else f.ingressDeniedBy = [flowPolicy(d.policy)];
  }
  if (!d.allowed) f.dropReasonDesc = 'POLICY_DENIED';
  if (d.audit) {
    const mark = `audit: ${d.audit.namespace}/${d.audit.name} rule ${d.audit.rule}`;
    f.summary = f.summary ? `${f.summary}; ${mark}` : mark;
  }
}
