// Loading control.proto and converting between the model (control/api/types.ts) and its
// wire messages. The conversion is explicit, field by field: enums become the model's
// string unions, and optional fields stay absent rather than arriving as zero values.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import type {
  CompiledPolicy, CompiledRoute, CompiledTrafficPolicy, EndpointInfo, IdentityInfo, L4Entry, L7Match, NodeInfo, PeerMatch, ServiceInfo, Snapshot,
} from '../api/types.ts';
import { SnapshotDecodeError } from '../errors.ts';
import { fingerprint } from '../persist.ts';
import { routeFromWire, routeToWire, trafficPolicyFromWire, trafficPolicyToWire } from './proto-traffic.ts';

const PROTO = 'control/proto/nodal/v1/control.proto';

/**
 * the .proto sits beside the sources; compiled code runs from dist/, which tsc does not
 * copy it into, so walk up from this module until the file is found
 */
export function protoPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, PROTO);
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find ${PROTO} above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** the loaded service; longs as numbers (versions stay far below 2^53), enums as names */
export function loadAgentControl(): { definition: grpc.ServiceDefinition; client: grpc.ServiceClientConstructor } {
  const pkgDef = loadSync(protoPath(), { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true, arrays: true, objects: true });
  const pkg = grpc.loadPackageDefinition(pkgDef) as unknown as { nodal: { v1: { AgentControl: grpc.ServiceClientConstructor } } };
  return { definition: pkg.nodal.v1.AgentControl.service, client: pkg.nodal.v1.AgentControl };
}

// ---- wire shapes (what proto-loader hands us with the options above) ----
export type WireAgentMessage =
  | { msg: 'hello'; hello: { node: string; wgPublicKey: string; lastVersion: number; acceptsDeltas?: boolean } }
  | { msg: 'ack'; ack: { version: number } }
  | { msg: 'nack'; nack: { version: number; error: string; wantFull?: boolean } };

export interface WireSnapshotMessage {
  snapshot: Record<string, unknown>;
  /** non-zero: a delta from this version, carrying only `sections` */
  deltaFrom?: number;
  /** SnapshotSection enum names */
  sections?: string[];
}

/** the top-level sections of a Snapshot a delta can carry, in proto order */
export const SNAPSHOT_SECTIONS = ['nodes', 'identities', 'endpoints', 'services', 'policies', 'l4', 'cidrIdentities', 'networkPolicies', 'routes', 'trafficPolicies', 'guards'] as const;
export type SnapshotSection = typeof SNAPSHOT_SECTIONS[number];
const SECTION_ENUM: Record<SnapshotSection, string> = {
  nodes: 'SNAPSHOT_SECTION_NODES', identities: 'SNAPSHOT_SECTION_IDENTITIES', endpoints: 'SNAPSHOT_SECTION_ENDPOINTS',
  services: 'SNAPSHOT_SECTION_SERVICES', policies: 'SNAPSHOT_SECTION_POLICIES', l4: 'SNAPSHOT_SECTION_L4',
  cidrIdentities: 'SNAPSHOT_SECTION_CIDR_IDENTITIES', networkPolicies: 'SNAPSHOT_SECTION_NETWORK_POLICIES',
  routes: 'SNAPSHOT_SECTION_ROUTES', trafficPolicies: 'SNAPSHOT_SECTION_TRAFFIC_POLICIES', guards: 'SNAPSHOT_SECTION_GUARDS',
};
/** sections whose model field is optional (absent when empty) */
const OPTIONAL_SECTIONS: ReadonlySet<SnapshotSection> = new Set(['cidrIdentities', 'networkPolicies', 'routes', 'trafficPolicies', 'guards']);

const PROTOCOL = { PROTOCOL_TCP: 'TCP', PROTOCOL_UDP: 'UDP' } as const;
const POLICY_ACTION = { POLICY_ACTION_ALLOW: 'ALLOW', POLICY_ACTION_DENY: 'DENY', POLICY_ACTION_AUDIT: 'AUDIT' } as const;
const L4_ACTION = { L4_ACTION_ALLOW: 'ALLOW', L4_ACTION_DENY: 'DENY' } as const;
const DIRECTION = { DIRECTION_EGRESS: 'EGRESS', DIRECTION_INGRESS: 'INGRESS' } as const;

function fromEnum<T extends Record<string, string>>(table: T, what: string, v: unknown): T[keyof T] {
  if (typeof v === 'string' && Object.hasOwn(table, v)) return table[v as keyof T];
  throw new SnapshotDecodeError(`${what}: unknown value ${JSON.stringify(v)}`);
}
const toEnum = (table: Record<string, string>, v: string): string => Object.keys(table).find((k) => table[k] === v)!;

// ---- model → wire ----
const l7ToWire = (m: L7Match): Record<string, unknown> => ({
  ...m, headers: Object.fromEntries(Object.entries(m.headers ?? {}).map(([k, values]) => [k, { values }])),
});
const peerToWire = (m: PeerMatch): Record<string, unknown> => ({ ...m, any: m.any === true });

/** one section of a Snapshot in its wire shape (absent optional sections go out empty) */
export function sectionToWire<K extends SnapshotSection>(k: K, v: Snapshot[K]): unknown[] {
  switch (k) {
    case 'services':
      return (v as ServiceInfo[]).map((svc) => ({ ...svc, ports: svc.ports.map((p) => ({ ...p, protocol: toEnum(PROTOCOL, p.protocol) })) }));
    case 'policies':
      return (v as CompiledPolicy[]).map((p) => ({
        ...p, action: toEnum(POLICY_ACTION, p.action),
        rules: p.rules.map((r) => ({ ...r, from: r.from.map(peerToWire), to: r.to.map(l7ToWire) })),
      }));
    case 'l4':
      return (v as L4Entry[]).map((e) => ({
        ...e, direction: toEnum(DIRECTION, e.direction), action: toEnum(L4_ACTION, e.action),
        proto: e.proto ? toEnum(PROTOCOL, e.proto) : 'PROTOCOL_UNSPECIFIED', defaultDeny: e.defaultDeny === true, toProxy: e.toProxy === true,
      }));
    case 'routes':
      return ((v as CompiledRoute[] | undefined) ?? []).map(routeToWire);
    case 'trafficPolicies':
      return ((v as CompiledTrafficPolicy[] | undefined) ?? []).map(trafficPolicyToWire);
    default:
      // NodeInfo, IdentityInfo, EndpointInfo (its workload included), and the optional
      // lists are already the wire shape
      return (v as unknown[] | undefined) ?? [];
  }
}

export function snapshotToWire(s: Snapshot): WireSnapshotMessage {
  const snapshot: Record<string, unknown> = { version: s.version, node: s.node, trustDomain: s.trustDomain };
  for (const k of SNAPSHOT_SECTIONS) snapshot[k] = sectionToWire(k, s[k]);
  return { snapshot };
}

/**
 * A digest of one section's content (persist.ts fingerprint), once per section array: the
 * sections a model version shares (every node's endpoints, services, policies ...) are the
 * same arrays, so a delta decision for 1,000 agents serialises each of them once, not once
 * per agent. An absent optional section is an empty one.
 */
const EMPTY: readonly unknown[] = Object.freeze([]);
export const sectionFingerprint = (v: readonly unknown[] | undefined): string => fingerprint(v === undefined || v.length === 0 ? EMPTY : v);

/** the sections of `next` that differ from `base` (an absent optional section equals an empty one) */
export function changedSections(base: Snapshot, next: Snapshot): SnapshotSection[] {
  return SNAPSHOT_SECTIONS.filter((k) => base[k] !== next[k] && sectionFingerprint(base[k]) !== sectionFingerprint(next[k]));
}

/** the enum name of a section on the wire */
export const sectionEnum = (k: SnapshotSection): string => SECTION_ENUM[k];

/** `next` as a delta from `base`: only `sections` are filled, the others go out empty */
export function deltaToWire(base: Snapshot, next: Snapshot, sections: readonly SnapshotSection[]): WireSnapshotMessage {
  const wire = snapshotToWire(next);
  const keep = new Set(sections);
  for (const k of SNAPSHOT_SECTIONS) if (!keep.has(k)) wire.snapshot[k] = [];
  return { ...wire, deltaFrom: base.version, sections: sections.map((k) => SECTION_ENUM[k]) };
}

/** the version a delta builds on; 0 for a whole snapshot */
export const deltaBase = (m: WireSnapshotMessage): number => num(m.deltaFrom);

/** a delta message applied onto the snapshot it builds on (the caller checks deltaBase(m) === current.version) */
export function applyDelta(current: Snapshot, m: WireSnapshotMessage): Snapshot {
  const decoded = snapshotFromWire(m);
  const out: Snapshot = { ...current, version: decoded.version, node: decoded.node, trustDomain: decoded.trustDomain };
  for (const name of m.sections ?? []) {
    const k = (Object.keys(SECTION_ENUM) as SnapshotSection[]).find((x) => SECTION_ENUM[x] === name);
    if (k === undefined) throw new SnapshotDecodeError(`SnapshotMessage.sections: unknown value ${JSON.stringify(name)}`);
    if (OPTIONAL_SECTIONS.has(k)) {
      const o = out as unknown as Record<string, unknown>;
      delete o[k];
      if (decoded[k] !== undefined) o[k] = decoded[k];
    } else {
      (out as unknown as Record<string, unknown>)[k] = decoded[k];
    }
  }
  return out;
}

// ---- wire → model ----
type W = Record<string, unknown>;
const arr = (v: unknown): W[] => (Array.isArray(v) ? (v as W[]) : []);
/** a message field: proto-loader hands an unset one over as null (defaults: true) */
const isW = (v: unknown): v is W => v !== null && typeof v === 'object' && !Array.isArray(v);
const strs = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);
const nums = (v: unknown): number[] => (Array.isArray(v) ? v.map(Number) : []);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v ?? 0));
const labels = (v: unknown): Record<string, string> => {
  const o = (v ?? {}) as Record<string, string>;
  return Object.fromEntries(Object.keys(o).sort().map((k) => [k, String(o[k])]));
};
/** L7Match.headers (map<string, StringList>), names sorted; absent when empty */
const headerPatterns = (v: unknown): { headers?: Record<string, string[]> } => {
  const o = isW(v) ? v : {};
  const names = Object.keys(o).sort();
  return names.length > 0 ? { headers: Object.fromEntries(names.map((k) => [k, strs((o[k] as W | null)?.values)])) } : {};
};
/** a repeated field that the model keeps optional: absent when empty */
const optList = <K extends string, T>(key: K, list: T[]): Partial<Record<K, T[]>> => (list.length > 0 ? { [key]: list } as Record<K, T[]> : {});

export function snapshotFromWire(msg: WireSnapshotMessage): Snapshot {
  const s = msg.snapshot;
  if (!s) throw new SnapshotDecodeError('message carries no snapshot');
  return {
    version: num(s.version), node: str(s.node), trustDomain: str(s.trustDomain),
    nodes: arr(s.nodes).map((n): NodeInfo => ({
      name: str(n.name), underlayIp: str(n.underlayIp), tunnelIp: str(n.tunnelIp), podCidrs: strs(n.podCidrs),
      wgPublicKey: str(n.wgPublicKey), proxyIp: str(n.proxyIp),
    })),
    identities: arr(s.identities).map((i): IdentityInfo => ({
      id: num(i.id), namespace: str(i.namespace), serviceAccount: str(i.serviceAccount), labels: labels(i.labels), spiffeId: str(i.spiffeId),
    })),
    endpoints: arr(s.endpoints).map((e): EndpointInfo => ({
      namespace: str(e.namespace), name: str(e.name), uid: str(e.uid), node: str(e.node), ip: str(e.ip), identity: num(e.identity),
      labels: labels(e.labels), serviceAccount: str(e.serviceAccount), enrolled: e.enrolled === true,
      ...(e.defaultDenyPolicyId !== undefined ? { defaultDenyPolicyId: num(e.defaultDenyPolicyId) } : {}),
      ...(isW(e.workload) ? { workload: { kind: str(e.workload.kind), name: str(e.workload.name) } } : {}),
    })),
    services: arr(s.services).map((svc): ServiceInfo => ({
      namespace: str(svc.namespace), name: str(svc.name), id: num(svc.id), clusterIp: str(svc.clusterIp),
      ports: arr(svc.ports).map((p) => ({
        ...(p.name !== undefined ? { name: str(p.name) } : {}),
        port: num(p.port), targetPort: num(p.targetPort), protocol: fromEnum(PROTOCOL, 'ServicePort.protocol', p.protocol),
        ...(p.appProtocol !== undefined ? { appProtocol: str(p.appProtocol) } : {}),
      })),
      backends: arr(svc.backends).map((b) => ({ ip: str(b.ip), node: str(b.node), identity: num(b.identity), pod: str(b.pod) })),
      identity: num(svc.identity),
    })),
    policies: arr(s.policies).map((p): CompiledPolicy => ({
      id: num(p.id), namespace: str(p.namespace), name: str(p.name), action: fromEnum(POLICY_ACTION, 'CompiledPolicy.action', p.action),
      selects: nums(p.selects),
      rules: arr(p.rules).map((r) => ({
        index: num(r.index),
        from: arr(r.from).map((m): PeerMatch => ({
          ...(m.any === true ? { any: true } : {}),
          // always resolved by the compiler, so kept even when empty ("matches no known identity")
          identities: nums(m.identities),
          ...optList('principals', strs(m.principals)), ...optList('namespaces', strs(m.namespaces)),
          ...optList('notPrincipals', strs(m.notPrincipals)), ...optList('notNamespaces', strs(m.notNamespaces)),
        })),
        to: arr(r.to).map((m): L7Match => ({
          ...optList('ports', nums(m.ports)), ...optList('notPorts', nums(m.notPorts)),
          ...optList('methods', strs(m.methods)), ...optList('notMethods', strs(m.notMethods)),
          ...optList('paths', strs(m.paths)), ...optList('notPaths', strs(m.notPaths)), ...optList('hosts', strs(m.hosts)),
          ...headerPatterns(m.headers),
          ...optList('grpcServices', strs(m.grpcServices)), ...optList('grpcMethods', strs(m.grpcMethods)),
        })),
        when: arr(r.when).map((w) => ({ key: str(w.key), ...optList('values', strs(w.values)), ...optList('notValues', strs(w.notValues)) })),
      })),
    })),
    l4: arr(s.l4).map((e): L4Entry => ({
      direction: fromEnum(DIRECTION, 'L4Entry.direction', e.direction), localIdentity: num(e.localIdentity), peerIdentity: num(e.peerIdentity),
      port: num(e.port), ...(e.proto !== 'PROTOCOL_UNSPECIFIED' && e.proto !== undefined ? { proto: fromEnum(PROTOCOL, 'L4Entry.proto', e.proto) } : {}),
      action: fromEnum(L4_ACTION, 'L4Entry.action', e.action), policyId: num(e.policyId),
      ...(e.rule !== undefined ? { rule: num(e.rule) } : {}),
      ...(e.defaultDeny === true ? { defaultDeny: true } : {}),
      ...(e.toProxy === true ? { toProxy: true } : {}),
    })),
    ...optList('cidrIdentities', arr(s.cidrIdentities).map((c) => ({ cidr: str(c.cidr), identity: num(c.identity) }))),
    ...optList('networkPolicies', arr(s.networkPolicies).map((p) => ({ id: num(p.id), namespace: str(p.namespace), name: str(p.name) }))),
    ...optList('routes', arr(s.routes).map(routeFromWire)),
    ...optList('trafficPolicies', arr(s.trafficPolicies).map(trafficPolicyFromWire)),
    ...optList('guards', arr(s.guards).map((g) => ({ identity: num(g.identity), policyId: num(g.policyId) }))),
  };
}
