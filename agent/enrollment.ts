// From a snapshot to the datapath's desired state for this node. Local endpoints are
// found by their cgroups (agent/cgroups.ts): one endpoints-map entry per cgroup the pod's
// processes run in (each container's), all with the pod's endpoint id and identity. A pod
// whose cgroups do not exist yet is left out and picked up by the next reconcile (the agent
// reconciles on every snapshot and periodically, so pod restarts and cgroup replacement are
// followed continuously).
import type { EndpointInfo, Snapshot } from '../control/api/types.ts';
import type { DesiredState, EndpointState } from './datapath/index.ts';

export const HOST_IDENTITY = 1;

/** the cgroup ids a local pod's processes run in; empty while none can be found */
export type CgroupResolver = (pod: { uid: string; namespace: string; name: string }) => readonly bigint[];

export interface EnrollmentResult {
  desired: DesiredState;
  /** local pods by every cgroup id of theirs, to name the source of a connect() verdict */
  byCgroup: Map<bigint, EndpointInfo>;
  /** local enrolled pods whose redirect is in place, ns/name */
  enrolled: string[];
  /** local pods we could not find a cgroup for yet */
  pending: string[];
}

export function desiredFromSnapshot(s: Snapshot, node: string, resolve: CgroupResolver): EnrollmentResult {
  const endpoints: EndpointState[] = [];
  const enrolled: string[] = [];
  const pending: string[] = [];
  const byCgroup = new Map<bigint, EndpointInfo>();
  let endpointId = 0;
  for (const ep of [...s.endpoints].sort((a, b) => a.uid.localeCompare(b.uid))) {
    if (ep.node !== node) continue;
    endpointId++;
    const ids = resolve(ep);
    if (ids.length === 0) {
      pending.push(`${ep.namespace}/${ep.name}`);
      continue;
    }
    for (const id of ids) {
      byCgroup.set(id, ep);
      endpoints.push({
        cgroupId: id, endpointId, identity: ep.identity, enrolled: ep.enrolled,
        ...(ep.enrolled && ep.defaultDenyPolicyId !== undefined ? { ingressPolicyId: ep.defaultDenyPolicyId } : {}),
      });
    }
    if (ep.enrolled) enrolled.push(`${ep.namespace}/${ep.name}`);
  }
  const ipcache = s.endpoints.filter((e) => e.ip).map((e) => ({ cidr: `${e.ip}/32`, identity: e.identity }));
  for (const n of s.nodes) {
    for (const addr of [n.underlayIp, n.tunnelIp, n.proxyIp]) if (addr) ipcache.push({ cidr: `${addr}/32`, identity: HOST_IDENTITY });
  }
  // NetworkPolicy ipBlocks: addresses outside the cluster get the identity of the
  // longest prefix that names them (pods and nodes above stay more specific)
  for (const c of s.cidrIdentities ?? []) ipcache.push({ cidr: c.cidr, identity: c.identity });
  const seen = new Set<string>();
  const services = s.services.flatMap((svc) => svc.ports.map((p) => ({
    vip: svc.clusterIp, port: p.port, proto: p.protocol, serviceId: svc.id, identity: svc.identity,
  }))).filter((x) => x.vip && x.vip !== 'None');
  return {
    desired: {
      endpoints,
      ipcache: ipcache.filter((e) => (seen.has(e.cidr) ? false : (seen.add(e.cidr), true))),
      services,
      policy: s.l4.map((e) => ({ ...e })),
      guards: (s.guards ?? []).map((g) => ({ identity: g.identity, policyId: g.policyId })),
    },
    byCgroup,
    enrolled,
    pending,
  };
}
