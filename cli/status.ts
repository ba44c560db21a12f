// `nodal status`: the mesh at a glance, from the control plane's admin API: nodes and
// their agents (connection, snapshot acked), the programs attached at each node's pod
// cgroup with the datapath's counters, WireGuard peers and handshakes, enrolled
// endpoints, flow rate and lost events. Agents that do not answer are named, not hidden.
// Also the connection helper `nodal policy check` shares.
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import * as grpc from '@grpc/grpc-js';
import { alignTable, connectOrFail } from '../agent/flows/index.ts';
import { adminClient, type AdminClient, type ClusterStatus, type NodeStatus } from '../control/admin/index.ts';

/** where `nodal dev up` puts the control plane's admin socket (beside relay.sock) */
export const DEFAULT_CONTROL = 'unix:/run/nodal/sandbox/control.sock';
/** long enough for a busy control plane, short enough that a dead one is reported at once */
const DEFAULT_TIMEOUT_MS = 5000;
const OUTPUTS = ['table', 'json'] as const;

export interface CliIO {
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

/** a command's exit code: 0 done, 1 the control plane cannot be reached (or failed), 2 bad arguments */
export const Exit = { OK: 0, UNREACHABLE: 1, USAGE: 2 } as const;

export class UsageError extends Error {
  readonly code = 'NODAL_ERR_CLI_USAGE';
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function outputOf(v: string | undefined): 'table' | 'json' {
  const o = v ?? 'table';
  if (!(OUTPUTS as readonly string[]).includes(o)) throw new UsageError(`-o: "${o}" is not one of ${OUTPUTS.join(', ')}`);
  return o as 'table' | 'json';
}

export function timeoutOf(v: string | undefined): number {
  if (v === undefined) return DEFAULT_TIMEOUT_MS;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v.trim());
  if (!m) throw new UsageError(`--timeout: "${v}" is not a duration such as 5s`);
  return Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : 1000);
}

/** --server, else NODAL_CONTROL, else the sandbox's socket; a bare path is a unix socket */
export function serverOf(flag: string | undefined): string {
  const s = flag || process.env.NODAL_CONTROL || DEFAULT_CONTROL;
  return s.startsWith('/') ? `unix:${s}` : s.replace(/^(?:https?|grpc):\/\//, '');
}

/**
 * Run `fn` against the admin API at `server`. A control plane that cannot be reached is
 * exit 1 with the address named; INVALID_ARGUMENT / NOT_FOUND are the caller's arguments
 * (exit 2); anything else is exit 1 with the server's message.
 */
export async function withAdmin(command: string, server: string, timeoutMs: number, io: CliIO, fn: (c: AdminClient) => Promise<number>): Promise<number> {
  const unreachable = (why: string): number => {
    io.err.write(`nodal ${command}: cannot reach the control plane at ${server}: ${why}\n` +
      '  (start the sandbox with `nodal dev up`, or point --server / NODAL_CONTROL at the control plane\'s admin socket)\n');
    return Exit.UNREACHABLE;
  };
  const sock = server.startsWith('unix:') ? server.replace(/^unix:(\/\/)?/, '') : undefined;
  if (sock && !existsSync(sock)) return unreachable(`socket ${sock} does not exist`);
  let client: AdminClient;
  try {
    client = adminClient(server);
  } catch (err) {
    io.err.write(`nodal ${command}: ${(err as Error).message}\n`);
    return Exit.UNREACHABLE;
  }
  try {
    const notReady = await connectOrFail(client.grpc, timeoutMs);
    if (notReady) return unreachable(notReady);
    return await fn(client);
  } catch (err) {
    const e = err as grpc.ServiceError;
    if (e.code === grpc.status.INVALID_ARGUMENT || e.code === grpc.status.NOT_FOUND) {
      io.err.write(`nodal ${command}: ${e.details}\n`);
      return Exit.USAGE;
    }
    if (e.code === grpc.status.UNAVAILABLE) return unreachable(e.details || e.message);
    if (e.code === grpc.status.DEADLINE_EXCEEDED) return unreachable(`no answer within ${timeoutMs}ms`);
    if (e.code === grpc.status.UNIMPLEMENTED) return unreachable('it does not serve the admin API (an older control plane?)');
    io.err.write(`nodal ${command}: ${server}: ${typeof e.code === 'number' ? grpc.status[e.code] : ''} ${e.details || e.message}\n`);
    return Exit.UNREACHABLE;
  } finally {
    client.close();
  }
}

export interface StatusOptions {
  server?: string;
  output?: string;
  timeout?: string;
  agentTimeout?: string;
  agents?: boolean;
}

export async function runStatus(o: StatusOptions, io: CliIO = { out: process.stdout, err: process.stderr }, now = Date.now()): Promise<number> {
  let output: 'table' | 'json';
  let timeoutMs: number;
  let agentTimeoutMs: number;
  try {
    output = outputOf(o.output);
    timeoutMs = timeoutOf(o.timeout);
    agentTimeoutMs = o.agentTimeout === undefined ? 0 : timeoutOf(o.agentTimeout);
  } catch (err) {
    io.err.write(`nodal status: ${(err as Error).message}\n`);
    return Exit.USAGE;
  }
  const server = serverOf(o.server);
  return withAdmin('status', server, timeoutMs, io, async (c) => {
    const s = await c.status({ skipAgents: o.agents === false, agentTimeoutMs }, { deadlineMs: timeoutMs + agentTimeoutMs });
    io.out.write(output === 'json' ? `${JSON.stringify(s, null, 2)}\n` : `${formatStatus(s, { now, server })}\n`);
    return Exit.OK;
  });
}

// ---- human output ----

const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 ? `${s % 60}s` : ''}`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60) ? `${Math.floor((s % 3600) / 60)}m` : ''}`;
  return `${Math.floor(s / 86_400)}d${Math.floor((s % 86_400) / 3600) ? `${Math.floor((s % 86_400) / 3600)}h` : ''}`;
}

/** a handshake more than this old means the peer is not talking (WireGuard rekeys every 2 min) */
const STALE_HANDSHAKE_S = 180;

function handshake(unix: number, now: number): string {
  if (unix <= 0) return 'never';
  const age = now / 1000 - unix;
  return `${formatDuration(age)} ago${age > STALE_HANDSHAKE_S ? ' (stale)' : ''}`;
}

const shortKey = (k: string): string => (k.length > 12 ? `${k.slice(0, 10)}…` : k || '-');

function agentState(n: NodeStatus): string {
  const c = n.connection;
  if (!c?.seen) return 'never connected';
  return c.connected ? 'connected' : 'disconnected';
}

function snapshotText(n: NodeStatus): string {
  const c = n.connection;
  if (!c?.seen) return n.agent ? String(n.agent.snapshotVersion || '-') : '-';
  let t = c.ackedVersion === c.sentVersion ? `${c.ackedVersion || '-'}` : `${c.ackedVersion || '-'} (sent ${c.sentVersion})`;
  if (c.lastNack && c.lastNack.version > c.ackedVersion) t += ` NACK ${c.lastNack.version}`;
  return t;
}

/** "3, 2 enrolled", and how many the agent has redirected when that differs (pods starting) */
function endpointsText(total: number, enrolled: number, redirected: number | undefined): string {
  return `${total}, ${enrolled} enrolled${redirected !== undefined && redirected !== enrolled ? ` (${redirected} redirected)` : ''}`;
}

export function formatStatus(s: ClusterStatus, o: { now?: number; server?: string } = {}): string {
  const now = o.now ?? Date.now();
  const lines: string[] = [];
  const connected = s.nodes.filter((n) => n.connection?.connected).length;
  const enrolled = s.endpoints.filter((e) => e.enrolled).length;
  lines.push(`Control plane:  ${s.version}${o.server ? ` at ${o.server}` : ''}, model version ${s.modelVersion}, trust domain ${s.trustDomain}`);
  lines.push(`Cluster:        ${plural(s.nodes.length, 'node')} (${connected} agent${connected === 1 ? '' : 's'} connected), ` +
    `${plural(s.endpoints.length, 'endpoint')} (${enrolled} enrolled), ${plural(s.identities, 'identity', 'identities')}, ` +
    `${plural(s.services, 'service')}, ${plural(s.policies.length, 'policy', 'policies')}`);
  if (s.errors.length === 0) {
    lines.push('Config:         no rejected documents');
  } else {
    lines.push(`Config:         ${plural(s.errors.length, 'rejected document')} (the last good version stays in force):`);
    for (const e of s.errors) lines.push(`  ${[e.file, e.object, e.field, e.message].filter(Boolean).join(': ')}`);
  }

  const nodes = s.nodes;
  lines.push('', 'NODES');
  lines.push(alignTable([
    ['NAME', 'UNDERLAY', 'TUNNEL', 'AGENT', 'SNAPSHOT', 'UPTIME', 'ENDPOINTS'],
    ...nodes.map((n) => {
      const eps = s.endpoints.filter((e) => e.node === n.name);
      return [
        n.listed ? n.name : `${n.name} (unlisted)`, n.underlayIp || '-', n.tunnelIp || '-', agentState(n), snapshotText(n),
        n.agent ? formatDuration(n.agent.uptimeSeconds) : '-',
        endpointsText(eps.length, eps.filter((e) => e.enrolled).length, n.agent?.endpoints?.enrolled.length),
      ];
    }),
  ]));

  const reporting = nodes.filter((n) => n.agent);
  if (reporting.length > 0) {
    lines.push('', 'DATAPATH (program ids attached at the node\'s pod cgroup)');
    const hookNames = ['connect4', 'connect6', 'sock_ops', 'ingress'];
    lines.push(alignTable([
      ['NODE', ...hookNames.map((h) => h.toUpperCase()), 'REDIRECTS', 'DROPS CONNECT/INGRESS', 'LOST EVENTS'],
      ...reporting.map((n) => {
        const d = n.agent!.datapath;
        const hooks = hookNames.map((h) => {
          const x = d?.hooks.find((y) => y.hook === h);
          if (!x) return '?';
          if (x.error) return 'error';
          return x.programIds.length ? x.programIds.join(',') : 'none';
        });
        const c = d?.counters;
        return [n.name, ...hooks, c ? String(c.redirects) : '?', c ? `${c.dropConnect}/${c.dropIngress}` : '?', c ? String(c.eventsLost) : '?'];
      }),
    ]));
    for (const n of reporting) {
      const d = n.agent!.datapath;
      if (d?.error) lines.push(`  ${n.name}: ${d.error}`);
      for (const h of d?.hooks ?? []) if (h.error) lines.push(`  ${n.name} ${h.hook}: ${h.error}`);
      if (d && d.hooks.some((h) => !h.error && h.programIds.length === 0)) lines.push(`  ${n.name}: some hooks have no program attached: enforcement is off for them`);
    }

    lines.push('', 'WIREGUARD');
    const rows: string[][] = [['NODE', 'MODE', 'PUBLIC KEY', 'PEER', 'ENDPOINT', 'HANDSHAKE', 'RX', 'TX']];
    const wgErrors: string[] = [];
    for (const n of reporting) {
      const w = n.agent!.wireguard;
      if (!w) continue;
      if (w.error) wgErrors.push(`  ${n.name}: ${w.error}`);
      if (w.peers.length === 0) rows.push([n.name, w.mode, shortKey(w.publicKey), '(no peers)', '', '', '', '']);
      w.peers.forEach((p, i) => rows.push([
        i === 0 ? n.name : '', i === 0 ? w.mode : '', i === 0 ? shortKey(w.publicKey) : '',
        p.node || shortKey(p.publicKey), p.endpoint || '-', handshake(p.latestHandshake, now), formatBytes(p.rxBytes), formatBytes(p.txBytes),
      ]));
    }
    lines.push(alignTable(rows), ...wgErrors);

    lines.push('', 'FLOWS');
    lines.push(alignTable([
      ['NODE', 'RATE', 'SEEN', 'STORED', 'LOST'],
      ...reporting.map((n) => {
        const f = n.agent!.flows;
        if (!f) return [n.name, '?', '?', '?', '?'];
        return [n.name, `${f.ratePerSecond.toFixed(1)}/s (${f.rateWindowSeconds}s)`, String(f.seen), `${f.stored}/${f.capacity}`, String(f.lost)];
      }),
    ]));

    lines.push('', 'ENROLLED (redirection in place, as each agent reports)');
    lines.push(alignTable(reporting.map((n) => [n.name, n.agent!.endpoints?.enrolled.join(', ') || '(none)'])));
  }

  const silent = nodes.filter((n) => !n.agent && n.agentError);
  if (silent.length > 0) {
    lines.push('', 'AGENTS NOT REPORTING');
    lines.push(alignTable(silent.map((n) => [n.name, n.agentError])));
  }
  const odd = nodes.filter((n) => n.agent && n.agentError);
  for (const n of odd) lines.push(`  ${n.name}: ${n.agentError}`);
  return lines.join('\n');
}

export function registerStatus(program: Command): void {
  program.command('status')
    .description('summarise the mesh: nodes, agents, attached programs, WireGuard peers, enrolled endpoints, flow rate, lost events')
    .option('--server <address>', `control plane admin API: unix:/path or host:port (env NODAL_CONTROL, default ${DEFAULT_CONTROL})`)
    .option('-o, --output <format>', OUTPUTS.join(' | '), 'table')
    .option('--timeout <duration>', 'how long to wait for the control plane', '5s')
    .option('--agent-timeout <duration>', 'how long the control plane waits for each agent (default: its own, 1.5s)')
    .option('--no-agents', 'the control plane\'s view only: do not ask the agents')
    .action(async (o: StatusOptions) => {
      process.exitCode = await runStatus(o);
    });
}
