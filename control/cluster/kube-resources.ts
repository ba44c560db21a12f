// The Kubernetes resources the control plane watches, one table entry each, and their
// REST paths. `kind` and `apiVersion` are the ones the directory source reads from YAML
// (control/cluster/kinds.ts), so an object from the API server goes through the same
// validation and conversion as a document from a file.

export interface KubeResource {
  kind: string;
  apiVersion: string;
  /** the REST collection name */
  plural: string;
  namespaced: boolean;
  /** a CRD that may not be installed: a 404 means "none of these", not a failure */
  optional: boolean;
  /** validation is reported on the object: status.conditions[type=Accepted] via the status subresource */
  conditions: boolean;
}

export const KUBE_RESOURCES: readonly KubeResource[] = [
  { kind: 'Namespace', apiVersion: 'v1', plural: 'namespaces', namespaced: false, optional: false, conditions: false },
  { kind: 'Node', apiVersion: 'v1', plural: 'nodes', namespaced: false, optional: false, conditions: false },
  { kind: 'Pod', apiVersion: 'v1', plural: 'pods', namespaced: true, optional: false, conditions: false },
  { kind: 'Service', apiVersion: 'v1', plural: 'services', namespaced: true, optional: false, conditions: false },
  { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', plural: 'endpointslices', namespaced: true, optional: false, conditions: false },
  { kind: 'NetworkPolicy', apiVersion: 'networking.k8s.io/v1', plural: 'networkpolicies', namespaced: true, optional: false, conditions: false },
  { kind: 'HTTPRoute', apiVersion: 'gateway.networking.k8s.io/v1', plural: 'httproutes', namespaced: true, optional: true, conditions: false },
  { kind: 'GRPCRoute', apiVersion: 'gateway.networking.k8s.io/v1', plural: 'grpcroutes', namespaced: true, optional: true, conditions: false },
  { kind: 'MeshPolicy', apiVersion: 'nodal.io/v1alpha1', plural: 'meshpolicies', namespaced: true, optional: true, conditions: true },
  { kind: 'TrafficPolicy', apiVersion: 'nodal.io/v1alpha1', plural: 'trafficpolicies', namespaced: true, optional: true, conditions: true },
];

const prefix = (r: KubeResource): string => (r.apiVersion.includes('/') ? `/apis/${r.apiVersion}` : `/api/${r.apiVersion}`);

/** the cluster-wide collection: what the informer lists and watches */
export const collectionPath = (r: KubeResource): string => `${prefix(r)}/${r.plural}`;

/** one object, or one of its subresources */
export function objectPath(r: KubeResource, namespace: string, name: string, subresource?: 'status'): string {
  const ns = r.namespaced ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  return `${prefix(r)}${ns}/${r.plural}/${encodeURIComponent(name)}${subresource ? `/${subresource}` : ''}`;
}

/** the key the directory source uses for the same object: kind/namespace/name */
export const objectKey = (kind: string, namespace: string, name: string): string => `${kind}/${namespace}/${name}`;
