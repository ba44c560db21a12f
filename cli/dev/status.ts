// `nodal dev status`: what the sandbox is, read from sandbox.json, the config directory,
// the agents' state (WireGuard keys) and the control plane's identities; printed as
// aligned columns or as JSON.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { listObjects } from './config.ts';
import type { SandboxLayout } from './layout.ts';
import type { ProcessRecord, SandboxState } from './state.ts';
import { isAlive } from './system.ts';

export interface ProcessStatus {
  pid: number;
  alive: boolean;
  log: string;
}

export interface NodeStatus {
  name: string;
  netns: string;
  underlayIp: string;
  tunnelIp: string;
  podCidr: string;
  proxyIp: string;
  cgroup: string;
  /** base64, once the agent has written wg-public.key */
  wgPublicKey?: string;
  agent?: ProcessStatus;
}

export interface PodStatus {
  namespace: string;
  name: string;
  uid: string;
  node: string;
  ip: string;
  netns: string;
  cgroup: string;
  serviceAccountName: string;
  labels: Record<string, string>;
  /** namespace label nodal.io/mesh=enabled and no pod label nodal.io/mesh=disabled (DESIGN §9) */
  enrolled: boolean;
  /** the node's agent reports redirection in place for this pod (its enrolled.json) */
  redirected: boolean;
  identity?: number;
  spiffeId?: string;
  /** every container process alive */
  running: boolean;
  containers: Array<{ name: string; argv: string[] } & Partial<ProcessStatus>>;
}

export interface SandboxStatus {
  up: boolean;
  mesh: boolean;
  stateDir: string;
  runDir: string;
  relaySocket: string;
  logsDir: string;
  control?: ProcessStatus;
  nodes: NodeStatus[];
  pods: PodStatus[];
  services: Array<{ namespace: string; name: string; clusterIp: string }>;
}

function processStatus(p: ProcessRecord | undefined): ProcessStatus | undefined {
  return p ? { pid: p.pid, alive: isAlive(p), log: p.log } : undefined;
}

function readTrimmed(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

interface IdentityEntry { id: number; namespace: string; serviceAccount: string; labels: Record<string, string> }

/** the trust domain the control plane uses unless told otherwise (control --trust-domain) */
const TRUST_DOMAIN = 'cluster.local';

/**
 * The control plane's identities.json (control/model/ids.ts): {identities: {key: id}},
 * each key the JSON text [namespace, serviceAccount, [[label, value], ...]] holding the
 * identity-relevant labels only.
 */
export function readIdentities(file: string): IdentityEntry[] {
  const text = readTrimmed(file);
  if (!text) return [];
  let data: { identities?: Record<string, unknown> };
  try {
    data = JSON.parse(text) as typeof data;
  } catch {
    return []; // being rewritten: the next status reads it whole
  }
  const out: IdentityEntry[] = [];
  for (const [key, id] of Object.entries(data.identities ?? {})) {
    try {
      const [namespace, serviceAccount, labels] = JSON.parse(key) as [unknown, unknown, unknown];
      if (typeof id !== 'number' || typeof namespace !== 'string' || typeof serviceAccount !== 'string' || !Array.isArray(labels)) continue;
      out.push({ id, namespace, serviceAccount, labels: Object.fromEntries(labels as Array<[string, string]>) });
    } catch { /* a key of another shape: not an identity we can show */ }
  }
  return out;
}

/**
 * A pod's identity: same namespace and service account, and labels the pod carries (the
 * control plane keeps only identity-relevant ones); the most specific match wins.
 */
export function matchIdentity(ids: readonly IdentityEntry[], pod: { namespace: string; serviceAccountName: string; labels: Record<string, string> }): IdentityEntry | undefined {
  let best: IdentityEntry | undefined;
  for (const id of ids) {
    if (id.namespace !== pod.namespace || id.serviceAccount !== pod.serviceAccountName) continue;
    const labels = Object.entries(id.labels);
    if (!labels.every(([k, v]) => pod.labels[k] === v)) continue;
    if (!best || labels.length > Object.keys(best.labels).length) best = id;
  }
  return best;
}

/** the pods (namespace/name) an agent has redirection in place for */
function readEnrolled(file: string): string[] {
  try {
    const e = (JSON.parse(readTrimmed(file) ?? '{}') as { enrolled?: unknown }).enrolled;
    return Array.isArray(e) ? e.filter((x): x is string => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

export function isEnrolled(nsLabels: Record<string, string> | undefined, podLabels: Record<string, string>): boolean {
  return nsLabels?.['nodal.io/mesh'] === 'enabled' && podLabels['nodal.io/mesh'] !== 'disabled';
}

export function sandboxStatus(state: SandboxState | undefined, layout: SandboxLayout): SandboxStatus {
  const base = { stateDir: layout.stateDir, runDir: layout.runDir, relaySocket: layout.relaySocket, logsDir: layout.logsDir };
  if (!state) return { up: false, mesh: false, ...base, nodes: [], pods: [], services: [] };
  const namespaces = new Map(listObjects(layout.configDir).filter((o) => o.kind === 'Namespace').map((o) => [o.name, o.labels]));
  const identities = readIdentities(join(layout.controlDir, 'identities.json'));
  const control = processStatus(state.control);
  const redirected = new Set(state.nodes.flatMap((n) => readEnrolled(join(layout.nodeStateDir(n.name), 'enrolled.json'))));
  return {
    up: true,
    mesh: state.mesh,
    ...base,
    ...(control ? { control } : {}),
    nodes: state.nodes.map((n) => {
      const key = readTrimmed(join(layout.nodeStateDir(n.name), 'wg-public.key'));
      const agent = processStatus(n.agent);
      return {
        name: n.name, netns: n.netns, underlayIp: n.underlayIp, tunnelIp: n.tunnelIp, podCidr: n.podCidr,
        proxyIp: n.proxyIp, cgroup: n.cgroup, ...(key ? { wgPublicKey: key } : {}), ...(agent ? { agent } : {}),
      };
    }),
    pods: state.pods.map((p) => {
      const id = matchIdentity(identities, p);
      const containers = p.containers.map((c) => ({ name: c.name, argv: c.argv, ...processStatus(c.process) }));
      return {
        namespace: p.namespace, name: p.name, uid: p.uid, node: p.node, ip: p.ip, netns: p.netns, cgroup: p.cgroup,
        serviceAccountName: p.serviceAccountName, labels: p.labels,
        enrolled: isEnrolled(namespaces.get(p.namespace), p.labels),
        redirected: redirected.has(`${p.namespace}/${p.name}`),
        ...(id ? { identity: id.id, spiffeId: `spiffe://${TRUST_DOMAIN}/ns/${id.namespace}/sa/${id.serviceAccount}` } : {}),
        running: containers.length > 0 && containers.every((c) => c.alive === true),
        containers,
      };
    }),
    services: Object.entries(state.services).map(([key, clusterIp]) => {
      const [namespace, name] = key.split('/') as [string, string];
      return { namespace, name, clusterIp };
    }),
  };
}

/** columns padded to their widest cell, two spaces apart; the last column is not padded */
export function renderTable(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

function aliveText(p: ProcessStatus | undefined): string {
  if (!p) return '-';
  return p.alive ? `${p.pid} running` : `${p.pid} exited`;
}

export function formatStatus(s: SandboxStatus): string {
  if (!s.up) return 'no sandbox is up (start one with `nodal dev up`)';
  const out: string[] = [];
  out.push(`sandbox: ${s.nodes.length} node(s), ${s.pods.length} pod(s)${s.mesh ? '' : ', no mesh (NODAL_DEV_NO_MESH)'}; state ${s.stateDir}, logs ${s.logsDir}`);
  if (s.mesh) out.push(`control plane: ${aliveText(s.control)}; relay ${s.relaySocket}`);
  out.push('');
  out.push(renderTable(['NODE', 'NETNS', 'UNDERLAY', 'TUNNEL', 'POD CIDR', 'AGENT', 'WIREGUARD KEY'],
    s.nodes.map((n) => [n.name, n.netns, n.underlayIp, n.tunnelIp, n.podCidr, aliveText(n.agent), n.wgPublicKey ?? '-'])));
  out.push('');
  if (s.pods.length === 0) out.push('no pods (apply some with `nodal dev apply -f FILE`)');
  else {
    out.push(renderTable(['NAMESPACE', 'POD', 'NODE', 'IP', 'IDENTITY', 'ENROLLED', 'STATUS'],
      s.pods.map((p) => [p.namespace, p.name, p.node, p.ip, p.identity !== undefined ? String(p.identity) : '-',
        p.enrolled ? (p.redirected || !s.mesh ? 'yes' : 'yes (pending)') : 'no', p.running ? 'Running' : 'Exited'])));
  }
  if (s.services.length > 0) {
    out.push('');
    out.push(renderTable(['NAMESPACE', 'SERVICE', 'CLUSTER-IP'], s.services.map((v) => [v.namespace, v.name, v.clusterIp])));
  }
  return out.join('\n');
}
