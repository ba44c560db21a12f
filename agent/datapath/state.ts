// The desired datapath state, in the mesh's words, and its encoding into map entries.
// Pure: no kernel, so the whole translation is unit-tested.
import {
  endpointKey, endpointValue, guardKey, guardValue, ipcacheKey, ipcacheValue, policyKey, policyValue, serviceKey, serviceValue,
} from './codec.ts';
import { parseCidr } from './addr.ts';
import { Direction, EndpointFlag, PolicyAction, PolicyFlag, Proto, type DirectionName, type PolicyActionName } from './constants.ts';

export interface EndpointState {
  cgroupId: bigint;
  endpointId: number;
  identity: number;
  enrolled: boolean;
  /** set when some policy selects this endpoint for egress: unmatched connects are denied */
  egressPolicyId?: number;
  ingressPolicyId?: number;
}

export interface IpcacheEntry { cidr: string; identity: number }

export interface ServiceEntry { vip: string; port: number; proto?: 'TCP' | 'UDP'; serviceId: number; identity: number }

export interface PolicyEntry {
  direction: DirectionName;
  localIdentity: number;
  /** 0 = any peer */
  peerIdentity: number;
  /** 0 = any port */
  port: number;
  proto?: 'TCP' | 'UDP';
  action: PolicyActionName;
  policyId: number;
  rule?: number;
  /** a DENY that stands for "no ALLOW rule of policyId admits the peer" */
  defaultDeny?: boolean;
  /** an EGRESS ALLOW that only admits the connection to the proxy (past a guard) */
  toProxy?: boolean;
}

/** a destination identity some ALLOW policy selects: an EGRESS miss towards it is a default deny */
export interface GuardEntry { identity: number; policyId: number }

export interface DesiredState {
  endpoints: EndpointState[];
  ipcache: IpcacheEntry[];
  services: ServiceEntry[];
  policy: PolicyEntry[];
  /** absent: none (a state written before guards existed) */
  guards?: GuardEntry[];
}

export const emptyState = (): DesiredState => ({ endpoints: [], ipcache: [], services: [], policy: [], guards: [] });

/** map contents keyed by the key's hex, as the reconciler compares them */
export type Entries = Map<string, { key: Buffer; value: Buffer }>;

function put(m: Entries, key: Buffer, value: Buffer): void {
  m.set(key.toString('hex'), { key, value });
}

export function encodeEndpoints(eps: readonly EndpointState[]): Entries {
  const m: Entries = new Map();
  for (const e of eps) {
    let flags = e.enrolled ? EndpointFlag.ENROLLED : 0;
    if (e.egressPolicyId !== undefined) flags |= EndpointFlag.EGRESS_ENFORCED;
    if (e.ingressPolicyId !== undefined) flags |= EndpointFlag.INGRESS_ENFORCED;
    put(m, endpointKey(e.cgroupId), endpointValue.encode({
      endpoint_id: e.endpointId, identity: e.identity, flags,
      egress_policy_id: e.egressPolicyId ?? 0, ingress_policy_id: e.ingressPolicyId ?? 0,
    }));
  }
  return m;
}

export function encodeIpcache(entries: readonly IpcacheEntry[]): Entries {
  const m: Entries = new Map();
  for (const e of entries) {
    const { addr, prefixlen } = parseCidr(e.cidr);
    const key = Buffer.alloc(ipcacheKey.size);
    key.writeUInt32LE(prefixlen, 0);
    addr.copy(key, 4);
    put(m, key, ipcacheValue.encode({ identity: e.identity, flags: 0 }));
  }
  return m;
}

const protoNumber = (p: 'TCP' | 'UDP' | undefined): number => (p === 'UDP' ? Proto.UDP : Proto.TCP);

export function encodeServices(entries: readonly ServiceEntry[]): Entries {
  const m: Entries = new Map();
  for (const s of entries) {
    put(m, serviceKey.encode({ addr: s.vip, port: s.port, proto: protoNumber(s.proto) }),
      serviceValue.encode({ service_id: s.serviceId, identity: s.identity }));
  }
  return m;
}

export function encodePolicy(entries: readonly PolicyEntry[]): Entries {
  const m: Entries = new Map();
  for (const p of entries) {
    put(m, policyKey.encode({
      local_identity: p.localIdentity, peer_identity: p.peerIdentity, port: p.port,
      proto: protoNumber(p.proto), direction: Direction[p.direction],
    }), policyValue.encode({
      action: PolicyAction[p.action], rule: p.rule ?? 0, policy_id: p.policyId,
      flags: (p.defaultDeny ? PolicyFlag.DEFAULT_DENY : 0) | (p.toProxy ? PolicyFlag.TO_PROXY : 0),
    }));
  }
  return m;
}

export function encodeGuards(entries: readonly GuardEntry[]): Entries {
  const m: Entries = new Map();
  for (const g of entries) {
    const key = guardKey(g.identity);
    // one policy names a default deny: two would leave the verdict to the order of a list
    if (m.has(key.toString('hex'))) throw new RangeError(`dst_guard: identity ${g.identity} is guarded twice in one state`);
    put(m, key, guardValue.encode({ policy_id: g.policyId }));
  }
  return m;
}
