// `nodal status`: the control plane's view of the cluster joined with each agent's own
// report, which the control plane fetches from the agent's health listener
// (http://<node underlay IP>:15021/status). Agents are asked in parallel with a short
// timeout each; one that does not answer is reported with the reason, never left out.
import { request } from 'node:http';
import type { ClusterView } from '../plane.ts';
import type { NodeInfo } from '../api/types.ts';
import type { AgentReport, ClusterStatus, NodeStatus, StatusRequest } from './types.ts';

/** the agent's health port (DESIGN §11), where /status is served */
export const AGENT_HEALTH_PORT = 15021;
/** a healthy agent answers in milliseconds; a CLI should not wait on a dead one for long */
export const DEFAULT_AGENT_TIMEOUT_MS = 1500;
/** a report is a few KiB; anything far larger is not an agent's */
const MAX_REPORT_BYTES = 4 << 20;

export interface StatusOptions {
  /** the control plane's build, e.g. "nodal v0.1.0" */
  version: string;
  agentPort?: number;
  agentTimeoutMs?: number;
  /** where a node's agent report is fetched; default http://<underlayIp>:<agentPort>/status */
  agentUrl?: (node: { name: string; address: string }) => string;
}

type FetchResult = { report: AgentReport } | { error: string };

export async function clusterStatus(view: ClusterView, opts: StatusOptions, req: Partial<StatusRequest> = {}): Promise<ClusterStatus> {
  const timeoutMs = req.agentTimeoutMs || opts.agentTimeoutMs || DEFAULT_AGENT_TIMEOUT_MS;
  const urlOf = opts.agentUrl ?? ((n) => `http://${hostPort(n.address, opts.agentPort ?? AGENT_HEALTH_PORT)}/status`);
  const agents = new Map(view.agents.map((a) => [a.node, a]));

  // the listed nodes, then agents of nodes the cluster does not list (found by their gRPC peer)
  const rows: Array<{ info: NodeInfo; listed: boolean }> = view.nodes.map((info) => ({ info, listed: true }));
  for (const a of view.agents) {
    if (view.nodes.some((n) => n.name === a.node)) continue;
    rows.push({ info: { name: a.node, underlayIp: peerHost(a.peer), tunnelIp: '', podCidrs: [], wgPublicKey: '', proxyIp: '' }, listed: false });
  }

  const nodes = await Promise.all(rows.map(async ({ info, listed }): Promise<NodeStatus> => {
    const a = agents.get(info.name);
    const url = info.underlayIp ? urlOf({ name: info.name, address: info.underlayIp }) : '';
    const row: NodeStatus = {
      name: info.name, listed, underlayIp: info.underlayIp, tunnelIp: info.tunnelIp, proxyIp: info.proxyIp, podCidrs: [...info.podCidrs],
      wgPublicKey: info.wgPublicKey,
      connection: {
        seen: a !== undefined, connected: a?.connected ?? false, peer: a?.peer ?? '', connectedAt: a?.connectedAt ?? '',
        sentVersion: a?.sentVersion ?? 0, ackedVersion: a?.ackedVersion ?? 0, ...(a?.lastNack ? { lastNack: { ...a.lastNack } } : {}),
      },
      agentError: '', agentUrl: url,
    };
    if (req.skipAgents) return row;
    if (!url) {
      row.agentError = 'no address known for this node';
      return row;
    }
    const r = await fetchReport(url, timeoutMs);
    if ('error' in r) row.agentError = r.error;
    else {
      row.agent = r.report;
      if (r.report.node && r.report.node !== info.name) row.agentError = `the agent at ${url} reports itself as node ${r.report.node}`;
    }
    return row;
  }));

  return {
    version: opts.version,
    modelVersion: view.version,
    trustDomain: view.trustDomain,
    nodes,
    identities: view.identities.length,
    services: view.services.length,
    endpoints: view.endpoints.map((e) => ({ namespace: e.namespace, name: e.name, node: e.node, ip: e.ip, identity: e.identity, enrolled: e.enrolled })),
    policies: view.policies.map((p) => ({ id: p.id, namespace: p.namespace, name: p.name, action: p.action, selects: [...p.selects], rules: p.rules.length })),
    errors: view.errors.map((e) => ({ file: e.file, object: e.object ?? '', field: e.field ?? '', message: e.reason })),
  };
}

const hostPort = (host: string, port: number): string => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

/** the host of a gRPC peer string: "10.10.0.11:53120", "[::1]:53120", "ipv4:…" */
function peerHost(peer: string): string {
  const p = peer.replace(/^(ipv4|ipv6):/, '');
  if (p.startsWith('[')) return p.slice(1, p.indexOf(']'));
  const colon = p.lastIndexOf(':');
  return colon > 0 && p.indexOf(':') === colon ? p.slice(0, colon) : p;
}

/** GET the agent's /status; resolves with the report or with why there is none */
export function fetchReport(url: string, timeoutMs: number): Promise<FetchResult> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: FetchResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const req = request(url, { method: 'GET', headers: { accept: 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_REPORT_BYTES) finish({ error: `unusable answer: more than ${MAX_REPORT_BYTES} bytes` });
        else chunks.push(c);
      });
      res.on('error', (err) => finish({ error: `unreachable: ${err.message}` }));
      res.on('end', () => {
        if (res.statusCode !== 200) {
          finish({ error: res.statusCode === 404 ? 'HTTP 404: no agent /status there (not a nodal agent, or one older than this control plane)'
            : `the agent answered HTTP ${res.statusCode}: ${Buffer.concat(chunks).toString().trim().slice(0, 200)}` });
          return;
        }
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString()) as unknown;
          if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('not a JSON object');
          finish({ report: body as AgentReport });
        } catch (err) {
          finish({ error: `unusable answer: ${(err as Error).message}` });
        }
      });
    });
    const timer = setTimeout(() => finish({ error: `unreachable: no answer within ${timeoutMs}ms` }), timeoutMs);
    req.on('error', (err) => finish({ error: `unreachable: ${err.message}` }));
    req.end();
  });
}
