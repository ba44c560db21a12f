// The control plane's public surface (DESIGN §7): the process entry (control/main.ts),
// the agent, the CLI and tests reach control/ only through here.
export { startControlPlane, startControlPlaneWith, DEFAULT_TRUST_DOMAIN } from './plane.ts';
export type { ControlPlane, ControlPlaneOptions, ClusterView } from './plane.ts';
export { AgentControlClient } from './grpc/client.ts';
export type { AgentControlClientOptions } from './grpc/client.ts';
export type { AgentStatus } from './grpc/server.ts';
export { DirectorySource } from './cluster/directory.ts';
export type { ClusterSource, DirectorySourceOptions } from './cluster/directory.ts';
export type { KubernetesSource, KubernetesSourceOptions, KindHealth } from './cluster/kubernetes.ts';
/** the Kubernetes informer source, loaded on demand: @kubernetes/client-node takes most of a second to import, and the agent and CLI never need it */
export const loadKubernetesSource = (): Promise<typeof import('./cluster/kubernetes.ts')> => import('./cluster/kubernetes.ts');
/** the Kubernetes API client (KubeClient: JSON requests through the client library's auth), loaded on demand for the same reason; the agent with --kubernetes */
export const loadKubeClient = (): Promise<typeof import('./cluster/kube-http.ts')> => import('./cluster/kube-http.ts');
export type * from './cluster/state.ts';
export { buildModel, MESH_LABEL } from './model/builder.ts';
export type { Model, BuildInput } from './model/builder.ts';
export { identityLabels, spiffeId } from './model/identity.ts';
export { l4ForNode, istioMatch, principalOf } from './model/policy.ts';
export { protoPath, snapshotToWire, snapshotFromWire, changedSections } from './grpc/proto.ts';
export { encodeSnapshotMessage } from './grpc/encode.ts';
export { ConfigError, ConfigSourceError, StateError, SnapshotDecodeError, ControlListenError } from './errors.ts';
export type * from './api/types.ts';
export { ReservedIdentity, FIRST_ALLOCATED_IDENTITY } from './api/types.ts';
