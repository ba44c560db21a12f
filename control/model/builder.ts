// ClusterState → the mesh model: identities, endpoints, services and compiled policies.
// One code path for every source. Pure apart from the injected id allocator, and
// deterministic: inputs are walked in sorted order so ids are allocated the same way
// whatever order a source delivered its objects in.
import type { CompiledPolicy, CompiledRoute, CompiledTrafficPolicy, EndpointInfo, Guard, IdentityInfo, NodeInfo, ServiceInfo, ServicePort } from '../api/types.ts';
import type { ClusterState, EndpointSliceObject, PodObject } from '../cluster/state.ts';
import type { IdAllocator } from './ids.ts';
import { identityKey, identityLabels, matchesLabels, spiffeId } from './identity.ts';
import { compileNetworkPolicies, type NetworkPolicyModel } from './networkpolicy.ts';
import { compilePolicies, firstAllowSelecting, guardsOf } from './policy.ts';
import { compileRoutes, compileTrafficPolicies } from './traffic.ts';

export interface Model {
  trustDomain: string;
  nodes: NodeInfo[];
  identities: IdentityInfo[];
  endpoints: EndpointInfo[];
  services: ServiceInfo[];
  policies: CompiledPolicy[];
  /** destination identities ALLOW policies select, and the policy a default deny names (guardsOf) */
  guards: Guard[];
  /** Kubernetes NetworkPolicy, resolved (control/model/networkpolicy.ts); absent when there is none */
  networkPolicy?: NetworkPolicyModel;
  /** accepted routes with an existing Service parent (control/model/traffic.ts); absent when there is none */
  routes?: CompiledRoute[];
  /** TrafficPolicies in force, one per Service; absent when there is none */
  trafficPolicies?: CompiledTrafficPolicy[];
}

export interface BuildInput {
  state: ClusterState;
  trustDomain: string;
  ids: IdAllocator;
  /** WireGuard keys agents reported in their Hello, by node; they win over the Node record */
  wgKeys?: Record<string, string>;
}

/** namespace label that enrolls every pod in it, and the pod label value that opts out (DESIGN §9) */
export const MESH_LABEL = 'nodal.io/mesh';
const ENROLLED = 'enabled';
const OPT_OUT = 'disabled';

const byNsName = (a: { namespace: string; name: string }, b: { namespace: string; name: string }): number =>
  a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/** a pod that no longer runs holds no address and no identity */
const isLive = (p: PodObject): boolean => p.phase !== 'Succeeded' && p.phase !== 'Failed';

export function buildModel(input: BuildInput): Model {
  const { state, trustDomain, ids } = input;
  const nsLabels = new Map(state.namespaces.map((n) => [n.name, n.labels]));
  const pods = state.pods.filter(isLive).sort(byNsName);

  const identities = new Map<number, IdentityInfo>();
  const podIdentity = new Map<PodObject, number>();
  for (const p of pods) {
    const id = ids.id('identities', identityKey(p.namespace, p.serviceAccount, p.labels));
    podIdentity.set(p, id);
    if (!identities.has(id)) {
      identities.set(id, {
        id, namespace: p.namespace, serviceAccount: p.serviceAccount,
        labels: identityLabels(p.labels), spiffeId: spiffeId(trustDomain, p.namespace, p.serviceAccount),
      });
    }
  }
  const identityList = [...identities.values()].sort((a, b) => a.id - b.id);
  const policies = compilePolicies(state.policies, identityList, ids, trustDomain);

  const endpoints: EndpointInfo[] = [];
  for (const p of pods) {
    if (p.podIp === '' || p.nodeName === '') continue;
    const identity = podIdentity.get(p)!;
    const deny = firstAllowSelecting(policies, identity);
    endpoints.push({
      namespace: p.namespace, name: p.name, uid: p.uid, node: p.nodeName, ip: p.podIp, identity,
      labels: sortedLabels(p.labels), serviceAccount: p.serviceAccount,
      enrolled: nsLabels.get(p.namespace)?.[MESH_LABEL] === ENROLLED && p.labels[MESH_LABEL] !== OPT_OUT,
      ...(deny ? { defaultDenyPolicyId: deny.id } : {}),
      ...(p.workload ? { workload: { kind: p.workload.kind, name: p.workload.name } } : {}),
    });
  }

  const slicesOf = new Map<string, EndpointSliceObject[]>();
  for (const sl of state.endpointSlices ?? []) {
    const key = `${sl.namespace}/${sl.serviceName}`;
    const list = slicesOf.get(key);
    if (list) list.push(sl);
    else slicesOf.set(key, [sl]);
  }
  const podByIp = new Map<string, PodObject>();
  if (slicesOf.size > 0) for (const p of pods) if (p.podIp !== '') podByIp.set(`${p.namespace}/${p.podIp}`, p);

  // a service's backends are looked for in its own namespace only (2,000 services × 50,000 pods otherwise)
  const podsByNs = new Map<string, PodObject[]>();
  for (const p of pods) {
    const l = podsByNs.get(p.namespace);
    if (l) l.push(p);
    else podsByNs.set(p.namespace, [p]);
  }
  const services = [...state.services].sort(byNsName).map((svc): ServiceInfo => {
    // Kubernetes derives endpoints only from a non-empty selector, and only ready pods serve
    // ... unless the source has EndpointSlices for the service (Kubernetes mode): they are the truth
    const slices = slicesOf.get(`${svc.namespace}/${svc.name}`);
    const backends = slices !== undefined ? sliceBackends(slices, podByIp) : svc.selector === undefined || Object.keys(svc.selector).length === 0 ? [] : (podsByNs.get(svc.namespace) ?? []).filter((p) =>
      p.phase === 'Running' && p.podIp !== '' && matchesLabels(svc.selector!, p.labels));
    const backendIds = new Set(backends.map((p) => podIdentity.get(p)!));
    return {
      namespace: svc.namespace, name: svc.name, id: ids.id('services', `${svc.namespace}/${svc.name}`), clusterIp: svc.clusterIp,
      ports: svc.ports.map((sp): ServicePort => ({
        ...(sp.name !== undefined ? { name: sp.name } : {}),
        port: sp.port,
        // a named targetPort resolves per pod in Kubernetes; we carry one number, taken from
        // the first backend that names the port, 0 when none does (nothing can serve it)
        // with EndpointSlices, the slice's port of the same name is the resolved target port
        targetPort: slicePort(slices, sp.name) ?? (typeof sp.targetPort === 'number' ? sp.targetPort : backends.map((b) => b.namedPorts[sp.targetPort])
          .find((n) => n !== undefined) ?? 0),
        protocol: sp.protocol,
        ...(sp.appProtocol !== undefined ? { appProtocol: sp.appProtocol } : {}),
      })),
      backends: backends.map((b) => ({ ip: b.podIp, node: b.nodeName, identity: podIdentity.get(b)!, pod: b.name })),
      identity: backendIds.size === 1 ? [...backendIds][0]! : 0,
    };
  });

  const nodes = [...state.nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((n): NodeInfo => ({
    name: n.name, underlayIp: n.internalIp, tunnelIp: n.tunnelIp, podCidrs: [...n.podCidrs],
    wgPublicKey: input.wgKeys?.[n.name] || n.wgPublicKey, proxyIp: n.proxyIp,
  }));

  const networkPolicy = compileNetworkPolicies(state.networkPolicies ?? [], identityList, state.namespaces, podIdentity, ids);
  const routes = compileRoutes(state.routes ?? [], state.services);
  const trafficPolicies = compileTrafficPolicies(state.trafficPolicies ?? [], state.services);
  return {
    trustDomain, nodes, identities: identityList, endpoints, services, policies, guards: guardsOf(policies), ...(networkPolicy ? { networkPolicy } : {}),
    ...(routes.length > 0 ? { routes } : {}), ...(trafficPolicies.length > 0 ? { trafficPolicies } : {}),
  };
}

/** the pods behind a service's slices: ready endpoints whose address is a known pod, in pod order */
function sliceBackends(slices: EndpointSliceObject[], podByIp: Map<string, PodObject>): PodObject[] {
  const found = new Set<PodObject>();
  for (const sl of slices) {
    for (const ep of sl.endpoints) {
      if (!ep.ready) continue;
      for (const addr of ep.addresses) {
        const pod = podByIp.get(`${sl.namespace}/${addr}`);
        if (pod !== undefined && (ep.podName === undefined || ep.podName === pod.name)) found.add(pod);
      }
    }
  }
  return [...found].sort(byNsName);
}

/** the target port the slices give a ServicePort (matched by name, '' for an unnamed one) */
function slicePort(slices: EndpointSliceObject[] | undefined, name: string | undefined): number | undefined {
  for (const sl of slices ?? []) {
    const p = sl.ports.find((x) => x.name === (name ?? ''));
    if (p !== undefined) return p.port;
  }
  return undefined;
}

function sortedLabels(l: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.keys(l).sort().map((k) => [k, l[k]!]));
}
