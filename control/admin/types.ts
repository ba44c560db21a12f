// The admin API's messages as TypeScript sees them on both ends of the socket: the shapes
// of control/proto/nodal/v1/admin.proto with every field present (proto-loader fills the
// defaults: '' and 0 mean "none", a missing sub-message is undefined).

export interface ExplainRequest {
  from: string;
  to: string;
  port: number;
  method: string;
  path: string;
  host: string;
}

export type ExplainVerdict = 'ALLOWED' | 'DENIED' | 'MIXED' | 'ERROR';
export type StageWhere = 'connect' | 'ingress-guard' | 'proxy' | 'none';

export interface PolicyRefInfo { id: number; namespace: string; name: string; action: string }

/** how one rule fared; each part: match | no match | any | n/a */
export interface RuleTrace {
  policy: string;
  action: string;
  rule: number;
  from: string;
  to: string;
  when: string;
  matched: boolean;
}

export interface Stage {
  where: StageWhere;
  verdict: 'ALLOW' | 'DENY';
  reason: string;
  policy?: PolicyRefInfo;
  hasRule: boolean;
  rule: number;
  lookup: string;
  text: string;
  rules: RuleTrace[];
}

export interface WorkloadInfo {
  namespace: string;
  name: string;
  node: string;
  ip: string;
  identity: number;
  identityName: string;
  principal: string;
  enrolled: boolean;
}

export interface DestinationInfo {
  kind: 'pod' | 'service';
  namespace: string;
  name: string;
  ip: string;
  port: number;
  identity: number;
  targetPort: number;
  appProtocol: string;
  backendCount: number;
}

export interface BackendPod {
  pod: string;
  node: string;
  ip: string;
  enrolled: boolean;
  path: 'same-node' | 'cross-node' | 'direct';
  route: string;
}

export interface BackendVerdict {
  identity: number;
  identityName: string;
  pods: BackendPod[];
  protocol: 'http' | 'opaque' | 'detect';
  l7: boolean;
  decision: Stage;
  port: number;
}

export interface Explanation {
  verdict: ExplainVerdict;
  summary: string;
  source: WorkloadInfo;
  destination: DestinationInfo;
  request: ExplainRequest;
  connect?: Stage;
  backends: BackendVerdict[];
  modelVersion: number;
  notes: string[];
}

// ---- Status ----

export interface StatusRequest {
  skipAgents: boolean;
  agentTimeoutMs: number;
}

export interface AgentConnectionInfo {
  seen: boolean;
  connected: boolean;
  peer: string;
  connectedAt: string;
  sentVersion: number;
  ackedVersion: number;
  lastNack?: { version: number; error: string; at: string };
}

/** agent/status.ts AgentStatusReport after the wire: every field present */
export interface AgentReport {
  node: string;
  version: string;
  snapshotVersion: number;
  uptimeSeconds: number;
  datapath?: {
    pinRoot: string;
    cgroup: string;
    hooks: Array<{ hook: string; programIds: number[]; adopted: boolean; error: string }>;
    counters?: { dropConnect: number; dropIngress: number; eventsLost: number; redirects: number };
    error: string;
  };
  wireguard?: {
    mode: string;
    publicKey: string;
    peers: Array<{ node: string; publicKey: string; endpoint: string; latestHandshake: number; rxBytes: number; txBytes: number; allowedIps: string[] }>;
    error: string;
  };
  endpoints?: { enrolled: string[] };
  flows?: { seen: number; stored: number; capacity: number; lost: number; ratePerSecond: number; rateWindowSeconds: number };
}

export interface NodeStatus {
  name: string;
  listed: boolean;
  underlayIp: string;
  tunnelIp: string;
  proxyIp: string;
  podCidrs: string[];
  wgPublicKey: string;
  connection?: AgentConnectionInfo;
  agent?: AgentReport;
  agentError: string;
  agentUrl: string;
}

export interface EndpointSummary { namespace: string; name: string; node: string; ip: string; identity: number; enrolled: boolean }
export interface PolicySummary { id: number; namespace: string; name: string; action: string; selects: number[]; rules: number }
export interface ConfigErrorInfo { file: string; object: string; field: string; message: string }

export interface ClusterStatus {
  version: string;
  modelVersion: number;
  trustDomain: string;
  nodes: NodeStatus[];
  identities: number;
  services: number;
  endpoints: EndpointSummary[];
  policies: PolicySummary[];
  errors: ConfigErrorInfo[];
}
