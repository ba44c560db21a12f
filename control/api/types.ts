// The data model every part agrees on after the source: what the control plane computes
// from the cluster's objects and streams to each agent as one per-node snapshot. The
// gRPC messages in control/proto/nodal/v1/control.proto carry exactly these shapes.

/** a workload identity (DESIGN §4): namespace + service account + identity labels */
export interface IdentityInfo {
  id: number;
  namespace: string;
  serviceAccount: string;
  /** identity-relevant labels only (pod-template-hash and the like dropped) */
  labels: Record<string, string>;
  /** spiffe://<trust-domain>/ns/<ns>/sa/<sa> */
  spiffeId: string;
}

export interface NodeInfo {
  name: string;
  /** the address peers reach this node at (underlay) */
  underlayIp: string;
  /** this node's WireGuard tunnel address; the inbound tunnel listens here */
  tunnelIp: string;
  podCidrs: string[];
  /** base64 WireGuard public key, '' until the agent has published it */
  wgPublicKey: string;
  /** the node proxy's address as pods see it (redirect target, ingress-guard source) */
  proxyIp: string;
}

export interface EndpointInfo {
  namespace: string;
  /** pod name */
  name: string;
  uid: string;
  node: string;
  ip: string;
  identity: number;
  labels: Record<string, string>;
  serviceAccount: string;
  /** namespace label nodal.io/mesh=enabled and no pod opt-out */
  enrolled: boolean;
  /** set when an ALLOW MeshPolicy selects this endpoint: unmatched traffic is denied by it */
  defaultDenyPolicyId?: number;
  /** the pod's controller as Hubble names it (a ReplicaSet of a Deployment → the Deployment); absent for a bare pod */
  workload?: { kind: string; name: string };
}

export interface ServicePort {
  name?: string;
  port: number;
  targetPort: number;
  protocol: 'TCP' | 'UDP';
  /** Service appProtocol: 'http', 'tcp', 'grpc', ... */
  appProtocol?: string;
}

export interface ServiceInfo {
  namespace: string;
  name: string;
  id: number;
  clusterIp: string;
  ports: ServicePort[];
  /** ready endpoints selected by the service */
  backends: Array<{ ip: string; node: string; identity: number; pod: string }>;
  /** the backends' identity when they share one, else 0 */
  identity: number;
}

// ---- traffic management (DESIGN §5): Gateway API routes with a Service parent (GAMMA) and
// TrafficPolicy (nodal.io/v1alpha1), compiled by the control plane, applied by the source
// node's proxy per request. Durations are milliseconds; names are as the user wrote them.

/** a Service by namespace and name (a route's parent or backend, a TrafficPolicy's target) */
export interface ServiceRef { namespace: string; name: string }

export type StringMatchType = 'Exact' | 'RegularExpression';

export interface RouteMatch {
  /** absent: any path (Gateway API's default is PathPrefix "/") */
  path?: { type: 'Exact' | 'PathPrefix' | 'RegularExpression'; value: string };
  /** all must match; names are lower-case */
  headers?: Array<{ type: StringMatchType; name: string; value: string }>;
  /** all must match; names as written (query parameter names are case-sensitive) */
  queryParams?: Array<{ type: StringMatchType; name: string; value: string }>;
  /** HTTP method, upper-case */
  method?: string;
  /** GRPCRoute method match: absent service/method match any */
  grpc?: { type: StringMatchType; service?: string; method?: string };
}

export interface HeaderModifier {
  set?: Array<{ name: string; value: string }>;
  add?: Array<{ name: string; value: string }>;
  /** lower-case names */
  remove?: string[];
}

export type RouteFilter =
  | { type: 'RequestHeaderModifier'; modifier: HeaderModifier }
  | { type: 'ResponseHeaderModifier'; modifier: HeaderModifier }
  | {
    type: 'RequestRedirect';
    scheme?: 'http' | 'https';
    hostname?: string;
    port?: number;
    path?: { type: 'ReplaceFullPath' | 'ReplacePrefixMatch'; value: string };
    /** 301 (default) or 302 */
    statusCode: number;
  }
  | {
    type: 'URLRewrite';
    hostname?: string;
    path?: { type: 'ReplaceFullPath' | 'ReplacePrefixMatch'; value: string };
  };

export interface RouteBackend {
  service: ServiceRef;
  /** the Service port; targetPort resolved by the proxy from the Service */
  port: number;
  /** 0 means never chosen (Gateway API: a weight of 0 takes no traffic) */
  weight: number;
  /** per-backend filters (header modifiers only) */
  filters?: RouteFilter[];
}

export interface RouteRule {
  /** position in spec.rules, for flows and metrics */
  index: number;
  /** spec.rules[].name if set */
  name?: string;
  /** OR'ed; empty = match every request */
  matches: RouteMatch[];
  filters: RouteFilter[];
  /** empty with no redirect filter: requests get 500 (Gateway API) */
  backends: RouteBackend[];
  /** Gateway API HTTPRouteTimeouts: the whole request (request) and each try (backendRequest) */
  timeouts?: { requestMs?: number; backendRequestMs?: number };
  /** Gateway API HTTPRouteRetry (per-route; overrides the TrafficPolicy's attempts/codes) */
  retry?: { attempts: number; codes?: number[]; backoffMs?: number };
}

export interface CompiledRoute {
  kind: 'HTTPRoute' | 'GRPCRoute';
  namespace: string;
  name: string;
  /** the Service the route attaches to (parentRefs kind Service), and the port if the parentRef names one */
  parent: ServiceRef & { port?: number };
  /** lower-case; empty = any host */
  hostnames: string[];
  rules: RouteRule[];
  /** precedence tie-break between routes: older first, then namespace/name (Gateway API) */
  createdAt: string;
}

export interface CompiledTrafficPolicy {
  namespace: string;
  name: string;
  /** the Service in the policy's namespace it configures */
  target: ServiceRef;
  loadBalancer?: {
    algorithm: 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'PEAK_EWMA' | 'CONSISTENT_HASH';
    hashOn?: { header?: string; cookie?: string; queryParameter?: string; sourceIP?: boolean };
  };
  connectionPool?: {
    maxConnections?: number;
    maxPendingRequests?: number;
    /** 0 = unlimited */
    maxRequestsPerConnection?: number;
    connectTimeoutMs?: number;
    idleTimeoutMs?: number;
  };
  outlierDetection?: {
    consecutive5xxErrors?: number;
    consecutiveGatewayErrors?: number;
    intervalMs: number;
    baseEjectionMs: number;
    maxEjectionPercent: number;
  };
  healthCheck?: {
    protocol: 'TCP' | 'HTTP' | 'GRPC';
    path?: string;
    expectedStatuses?: number[];
    grpcService?: string;
    intervalMs: number;
    timeoutMs: number;
    healthyThreshold: number;
    unhealthyThreshold: number;
  };
  retry?: {
    attempts: number;
    perTryTimeoutMs?: number;
    /** at most this percent of active requests may be retries (Envoy retry budget) */
    budgetPercent: number;
    /** retries always allowed per second regardless of the budget */
    minRetriesPerSecond: number;
    retryOn: string[];
    /** retry a request that is not idempotent (POST, PATCH, ...) after its body was sent */
    retryNonIdempotent: boolean;
  };
  faultInjection?: {
    delay?: { percent: number; delayMs: number };
    abort?: { percent: number; httpStatus: number };
  };
  /** local token bucket per node proxy: `requests` per `unit`, plus `burst` */
  rateLimit?: { requests: number; unit: 'Second' | 'Minute' | 'Hour'; burst: number };
}

export type PolicyAction = 'ALLOW' | 'DENY' | 'AUDIT';

/** who a rule admits, resolved to identities at compile time where possible */
export interface PeerMatch {
  /** any source at all (rule without from) */
  any?: boolean;
  identities?: number[];
  /** SPIFFE principals as written (exact, prefix*, *suffix), checked at the proxy */
  principals?: string[];
  namespaces?: string[];
  notPrincipals?: string[];
  notNamespaces?: string[];
}

export interface L7Match {
  ports?: number[];
  methods?: string[];
  /** Istio path syntax: exact, prefix* or *suffix */
  paths?: string[];
  hosts?: string[];
  notMethods?: string[];
  notPaths?: string[];
  notPorts?: number[];
  /** lower-case header name → Istio patterns (exact, prefix*, *suffix, *); every listed header must match one of its patterns */
  headers?: Record<string, string[]>;
  /**
   * Istio patterns on the service (`package.Service`) and method of a gRPC request (path
   * `/package.Service/Method`, content-type application/grpc*); a match with either never
   * matches a request that is not gRPC
   */
  grpcServices?: string[];
  grpcMethods?: string[];
}

export interface CompiledRule {
  /** index of the rule in the MeshPolicy spec */
  index: number;
  /** all from entries, OR'ed; empty = any source */
  from: PeerMatch[];
  /** all to entries, OR'ed; empty = any operation */
  to: L7Match[];
  /** when conditions as written (key, values, notValues), AND'ed */
  when: Array<{ key: string; values?: string[]; notValues?: string[] }>;
}

export interface CompiledPolicy {
  id: number;
  namespace: string;
  name: string;
  action: PolicyAction;
  /** identities of the workloads this policy applies to */
  selects: number[];
  /** no rules: ALLOW matches nothing, DENY matches nothing (Istio semantics) */
  rules: CompiledRule[];
}

/** an L4 entry for the BPF policy map of one node (agent/datapath PolicyEntry) */
export interface L4Entry {
  direction: 'EGRESS' | 'INGRESS';
  localIdentity: number;
  peerIdentity: number;
  port: number;
  proto?: 'TCP' | 'UDP';
  action: 'ALLOW' | 'DENY';
  policyId: number;
  rule?: number;
  /** a DENY standing for "no ALLOW rule of policyId admits the peer" (a default deny) */
  defaultDeny?: boolean;
  /** an EGRESS ALLOW (policy 0) that only admits the source to the proxy, which decides:
   * it exists so that the destination's guard does not deny the connection */
  toProxy?: boolean;
}

/** a destination identity some ALLOW MeshPolicy selects: an EGRESS connect() towards it
 * that no L4 entry matches is a default deny naming policyId, the first such policy */
export interface Guard {
  identity: number;
  policyId: number;
}

export interface Snapshot {
  /** increases with every change; an agent applies a snapshot only if newer */
  version: number;
  /** the node this snapshot is for */
  node: string;
  trustDomain: string;
  nodes: NodeInfo[];
  identities: IdentityInfo[];
  /** every pod in the cluster: local ones are enforced, remote ones are peers */
  endpoints: EndpointInfo[];
  services: ServiceInfo[];
  policies: CompiledPolicy[];
  /** compiled L4 entries for this node's local endpoints */
  l4: L4Entry[];
  /** guarded destination identities, the same on every node, by identity (absent: none) */
  guards?: Guard[];
  /** NetworkPolicy ipBlock prefixes and their identities, for the ipcache (absent: none) */
  cidrIdentities?: Array<{ cidr: string; identity: number }>;
  /** the Kubernetes NetworkPolicies behind L4 entries' policy ids, to name them in verdicts (absent: none) */
  networkPolicies?: Array<{ id: number; namespace: string; name: string }>;
  /** accepted HTTPRoutes and GRPCRoutes whose parent is a Service (absent: none) */
  routes?: CompiledRoute[];
  /** accepted TrafficPolicies (absent: none) */
  trafficPolicies?: CompiledTrafficPolicy[];
}

/** the reserved identities of DESIGN §4 */
export const ReservedIdentity = { HOST: 1, WORLD: 2, UNMANAGED: 3, HEALTH: 4 } as const;
export const FIRST_ALLOCATED_IDENTITY = 256;
