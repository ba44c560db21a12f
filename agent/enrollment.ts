// From a snapshot to the datapath's desired state for this node. Local endpoints are
// found by their pod cgroup; a pod whose cgroup does not exist yet is left out and picked
// up by the next reconcile (the agent reconciles on every snapshot and periodically, so
// pod restarts and cgroup replacement are followed continuously).
import { statSync } from 'node:fs';
import { join } from 'node:path';
import type { EndpointInfo, Snapshot } from '../control/api/types.ts';
import type { DesiredState, EndpointState } from './datapath/index.ts';

export const HOST_IDENTITY = 1;

/** where a pod's cgroup lives under the node's pod cgroup (the sandbox layout) */
export type CgroupResolver = (pod: { uid: string; namespace: string; name: string }) => string;

export const sandboxCgroups = (nodeCgroup: string): CgroupResolver => (pod) => join(nodeCgroup, `pod-${pod.uid}`);

export interface EnrollmentResult {
  desired: DesiredState;
  /** local pods by cgroup id, to name the source of a connect() verdict */
  byCgroup: Map<bigint, EndpointInfo>;
  /** local enrolled pods whose redirect is in place, ns/name */
  enrolled: string[];
  /** local pods we could not find a cgroup for yet */
  pending: string[];
}

function cgroupId(path: string): bigint | undefined {
  try {
    // on cgroup v2 the directory's inode number is the cgroup id the kernel reports
    return statSync(path, { bigint: true }).ino;
  } catch {
    return undefined;
  }
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
    const id = cgroupId(resolve(ep));
    if (id === undefined) {
      pending.push(`${ep.namespace}/${ep.name}`);
      continue;
    }
    byCgroup.set(id, ep);
    endpoints.push({
      cgroupId: id, endpointId, identity: ep.identity, enrolled: ep.enrolled,
      ...(ep.enrolled && ep.defaultDenyPolicyId !== undefined ? { ingressPolicyId: ep.defaultDenyPolicyId } : {}),
    });
    if (ep.enrolled) enrolled.push(`${ep.namespace}/${ep.name}`);
  }
  const ipcache = s.endpoints.filter((e) => e.ip).map((e) => ({ cidr: `${e.ip}/32`, identity: e.identity }));
  for (const n of s.nodes) {
    for (const addr of [n.underlayIp, n.tunnelIp, n.proxyIp]) if (addr) ipcache.push({ cidr: `${addr}/32`, identity: HOST_IDENTITY });
  }
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
    },
    byCgroup,
    enrolled,
    pending,
  };
}
