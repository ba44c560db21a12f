// The cluster as the model builder sees it, whatever the source: the directory of YAML
// today, Kubernetes informers later. Sources convert their objects into these typed,
// validated shapes; everything after this point is one code path (DESIGN §7).
import type { CompiledTrafficPolicy, PolicyAction, RouteRule, ServiceRef } from '../api/types.ts';

export interface NamespaceObject {
  name: string;
  labels: Record<string, string>;
}

export interface PodObject {
  namespace: string;
  name: string;
  uid: string;
  labels: Record<string, string>;
  /** '' until scheduled */
  nodeName: string;
  serviceAccount: string;
  /** '' until the pod has an address */
  podIp: string;
  phase: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
  /** named container ports, to resolve a Service's named targetPort */
  namedPorts: Record<string, number>;
  /** the controller that owns the pod, as Hubble names it (workloadOf in kinds.ts); absent for a bare pod */
  workload?: WorkloadRef;
}

/** Hubble's flow.Workload: the kind and name of a pod's controller */
export interface WorkloadRef {
  kind: string;
  name: string;
}

export interface ServicePortObject {
  name?: string;
  port: number;
  /** a number, or the name of a container port */
  targetPort: number | string;
  protocol: 'TCP' | 'UDP';
  appProtocol?: string;
}

export interface ServiceObject {
  namespace: string;
  name: string;
  /** '' for a headless service or one without an address */
  clusterIp: string;
  /** undefined: no selector, so no backends are derived from pods (Kubernetes semantics) */
  selector: Record<string, string> | undefined;
  ports: ServicePortObject[];
}

export interface NodeObject {
  name: string;
  internalIp: string;
  podCidrs: string[];
  tunnelIp: string;
  proxyIp: string;
  /** nodal.io/wg-pub-key, the Kubernetes-mode record; a key an agent reports wins */
  wgPublicKey: string;
}

/** Istio AuthorizationPolicy Source, as written */
export interface PolicySource {
  principals?: string[];
  notPrincipals?: string[];
  namespaces?: string[];
  notNamespaces?: string[];
}

/** Istio AuthorizationPolicy Operation, ports already parsed to numbers */
export interface PolicyOperation {
  ports?: number[];
  notPorts?: number[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
  hosts?: string[];
  /** lower-case header name → Istio patterns; every listed header must match */
  headers?: Record<string, string[]>;
  /** Istio patterns on a gRPC request's service (package.Service) and method */
  grpcServices?: string[];
  grpcMethods?: string[];
}

export interface PolicyRule {
  from: PolicySource[];
  to: PolicyOperation[];
  when: Array<{ key: string; values?: string[]; notValues?: string[] }>;
}

export interface MeshPolicyObject {
  namespace: string;
  name: string;
  /** empty = every pod of the namespace */
  matchLabels: Record<string, string>;
  action: PolicyAction;
  rules: PolicyRule[];
}

/** a Kubernetes label selector; both parts AND'ed, an empty selector selects everything */
export interface LabelSelector {
  matchLabels: Record<string, string>;
  matchExpressions: Array<{ key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values: string[] }>;
}

/** one element of NetworkPolicy ingress.from / egress.to, as written */
export type NetworkPolicyPeerObject =
  /** podSelector and/or namespaceSelector (both set: AND); podSelector alone = the policy's namespace */
  | { podSelector?: LabelSelector; namespaceSelector?: LabelSelector }
  | { ipBlock: { cidr: string; except: string[] } };

export interface NetworkPolicyPortObject {
  protocol: 'TCP' | 'UDP' | 'SCTP';
  /** absent: every port of the protocol; a name resolves against the destination pod's containerPorts */
  port?: number | string;
  /** with a numeric port: the range port..endPort */
  endPort?: number;
}

export interface NetworkPolicyRuleObject {
  /** ingress.from or egress.to; empty = every peer */
  peers: NetworkPolicyPeerObject[];
  /** empty = every port */
  ports: NetworkPolicyPortObject[];
}

/** networking.k8s.io/v1 NetworkPolicy, policyTypes already defaulted */
export interface NetworkPolicyObject {
  namespace: string;
  name: string;
  podSelector: LabelSelector;
  policyTypes: Array<'Ingress' | 'Egress'>;
  ingress: NetworkPolicyRuleObject[];
  egress: NetworkPolicyRuleObject[];
}

/** one endpoint of a discovery.k8s.io/v1 EndpointSlice */
export interface EndpointSliceEndpoint {
  addresses: string[];
  /** conditions.ready; an absent condition counts as ready (Kubernetes semantics) */
  ready: boolean;
  /** targetRef, when it names a Pod */
  podName?: string;
  nodeName?: string;
}

/** discovery.k8s.io/v1 EndpointSlice, as the Kubernetes source reads it */
export interface EndpointSliceObject {
  namespace: string;
  name: string;
  /** label kubernetes.io/service-name: the Service the slice belongs to */
  serviceName: string;
  addressType: string;
  /** name '' for a Service's unnamed port; port is the resolved target port */
  ports: Array<{ name: string; port: number; protocol: 'TCP' | 'UDP' | 'SCTP' }>;
  endpoints: EndpointSliceEndpoint[];
}

/**
 * a Gateway API HTTPRoute or GRPCRoute (gateway.networking.k8s.io/v1), validated, with its
 * Service parents only (GAMMA): parents of other kinds belong to other controllers. The
 * model makes one CompiledRoute per parent and zeroes the weight of backends that do not
 * resolve to a Service.
 */
export interface RouteObject {
  kind: 'HTTPRoute' | 'GRPCRoute';
  namespace: string;
  name: string;
  /** at least one */
  parents: Array<ServiceRef & { port?: number }>;
  hostnames: string[];
  /** backend weights as written */
  rules: RouteRule[];
  /** metadata.creationTimestamp, '' when the document has none (directory source) */
  createdAt: string;
}

/** a TrafficPolicy (nodal.io/v1alpha1), defaults applied and durations in ms */
export interface TrafficPolicyObject extends CompiledTrafficPolicy {
  /** metadata.creationTimestamp, '' when the document has none: the older of two policies for one Service wins */
  createdAt: string;
}

export interface ClusterState {
  namespaces: NamespaceObject[];
  pods: PodObject[];
  services: ServiceObject[];
  nodes: NodeObject[];
  policies: MeshPolicyObject[];
  /** optional so sources that do not read NetworkPolicy yet need no change */
  networkPolicies?: NetworkPolicyObject[];
  /**
   * EndpointSlices (Kubernetes source only): a Service with at least one slice takes its
   * backends from them, any other from pods + selector; absent when there are none
   */
  endpointSlices?: EndpointSliceObject[];
  /** HTTPRoutes and GRPCRoutes with a Service parent; absent when there are none */
  routes?: RouteObject[];
  /** absent when there are none */
  trafficPolicies?: TrafficPolicyObject[];
}

export const emptyClusterState = (): ClusterState => ({ namespaces: [], pods: [], services: [], nodes: [], policies: [] });
