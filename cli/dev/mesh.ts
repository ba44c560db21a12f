// The mesh inside the sandbox: the control plane in the underlay netns and one agent per
// node, each in its node's netns and in a mount namespace of its own (wireguard-go keeps
// its UAPI socket at one fixed path per interface name, DESIGN §10).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SandboxError, SandboxErrorCode } from './errors.ts';
import { agentMain, bpfObjectsDir, controlMain, type SandboxLayout } from './layout.ts';
import { CGROUP_SYSTEM, Ports, UNDERLAY_GATEWAY, UNDERLAY_NETNS, type NodePlan } from './plan.ts';
import { spawnDetached } from './processes.ts';
import type { NodeRecord, ProcessRecord, SandboxState } from './state.ts';
import { isAlive, sleep } from './system.ts';

/** agents load BPF, start WireGuard and wait for a first snapshot: seconds, not minutes */
export const READY_TIMEOUT_MS = 60_000;
const PROBE_INTERVAL_MS = 500;
/** lines of a log shown when a process does not come up */
const LOG_TAIL_LINES = 20;

export function controlArgv(nodes: readonly NodePlan[], layout: SandboxLayout): string[] {
  return [
    'nsenter', `--net=/run/netns/${UNDERLAY_NETNS}`, '--',
    process.execPath, controlMain,
    '--config-dir', layout.configDir,
    '--state-dir', layout.controlDir,
    '--listen', `${UNDERLAY_GATEWAY}:${Ports.CONTROL}`,
    '--relay-listen', `${UNDERLAY_GATEWAY}:${Ports.RELAY}`,
    '--relay-socket', layout.relaySocket,
    '--agents', nodes.map((n) => `${n.name}=${n.underlayIp}:${Ports.AGENT_OBSERVER}`).join(','),
  ];
}

/** a private tmpfs on /run/wireguard, so every node can name its interface nodal-wg0 */
const PRIVATE_WIREGUARD_RUN = 'mkdir -p /run/wireguard && mount -t tmpfs tmpfs /run/wireguard && exec "$0" "$@"';

export function agentArgv(node: NodeRecord, layout: SandboxLayout): string[] {
  return [
    'unshare', '--mount', '--propagation', 'slave',
    'nsenter', `--net=/run/netns/${node.netns}`, '--',
    'sh', '-c', PRIVATE_WIREGUARD_RUN,
    process.execPath, agentMain,
    '--node', node.name,
    '--control', `${UNDERLAY_GATEWAY}:${Ports.CONTROL}`,
    '--state-dir', layout.nodeStateDir(node.name),
    '--cgroup', node.cgroup,
    '--proxy-ip', node.proxyIp,
    '--tunnel-ip', node.tunnelIp,
    '--underlay-ip', node.underlayIp,
    '--pod-cidr', node.podCidr,
    '--observer-socket', layout.observerSocket(node.name),
    '--bpf-objects', bpfObjectsDir,
    // two proxy workers whatever this machine's CPU count: the sandbox exercises the
    // listeners shared between worker threads as a multi-core node does
    '--proxy-workers', '2',
  ];
}

function systemCgroup(state: SandboxState, name: string): string {
  return join(state.cgroupRoot, CGROUP_SYSTEM, name);
}

export function startControl(state: SandboxState, layout: SandboxLayout): ProcessRecord {
  return spawnDetached({
    name: 'control',
    argv: controlArgv(state.nodes, layout),
    cgroup: systemCgroup(state, 'control'),
    log: layout.logFile('control'),
    env: { ...process.env as Record<string, string> },
  });
}

export function startAgent(node: NodeRecord, state: SandboxState, layout: SandboxLayout): ProcessRecord {
  const name = `agent-${node.name}`;
  return spawnDetached({
    name,
    argv: agentArgv(node, layout),
    cgroup: systemCgroup(state, name),
    log: layout.logFile(name),
    env: { ...process.env as Record<string, string> },
  });
}

export function healthUrl(node: NodePlan): string {
  return `http://${node.underlayIp}:${Ports.HEALTH}/readyz`;
}

// runs inside the underlay netns (the only place that reaches every node): one probe of
// each URL given, printed as {url: status or error code}
const PROBE_SCRIPT = `
const out = {};
await Promise.all(process.argv.slice(1).map(async (u) => {
  try { const r = await fetch(u, { signal: AbortSignal.timeout(1000) }); out[u] = r.status; await r.body?.cancel(); }
  catch (e) { out[u] = String(e?.cause?.code ?? e?.name ?? e); }
}));
process.stdout.write(JSON.stringify(out));
`;

export function probe(urls: readonly string[]): Promise<Record<string, number | string>> {
  return new Promise((resolve) => {
    const child = spawn('nsenter', [`--net=/run/netns/${UNDERLAY_NETNS}`, '--', process.execPath, '--input-type=module', '-e', PROBE_SCRIPT, ...urls], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('close', () => {
      try {
        resolve(JSON.parse(out) as Record<string, number | string>);
      } catch {
        resolve(Object.fromEntries(urls.map((u) => [u, `probe failed: ${err.trim() || 'no output'}`])));
      }
    });
  });
}

export function logTail(file: string, lines = LOG_TAIL_LINES): string {
  try {
    const all = readFileSync(file, 'utf8').trimEnd().split('\n');
    return all.slice(-lines).map((l) => `    | ${l}`).join('\n');
  } catch {
    return '    | (no log written)';
  }
}

function notReady(what: string, rec: ProcessRecord, why: string): SandboxError {
  return new SandboxError(SandboxErrorCode.NOT_READY,
    `${what} ${why}: see ${rec.log}\n  last lines:\n${logTail(rec.log)}\n  (the sandbox is left as it is for inspection; \`nodal dev down\` removes it)`);
}

/**
 * Wait until every agent answers 200 on /readyz, failing early, with the log's last lines,
 * when the control plane or an agent exits.
 */
export async function waitReady(state: SandboxState, timeoutMs = READY_TIMEOUT_MS, onReady?: (node: string) => void): Promise<void> {
  const pending = new Map(state.nodes.map((n) => [healthUrl(n), n]));
  const last = new Map<string, number | string>();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (state.control && !isAlive(state.control)) throw notReady('the control plane', state.control, 'exited during start-up');
    for (const n of pending.values()) {
      if (n.agent && !isAlive(n.agent)) throw notReady(`the agent of ${n.name}`, n.agent, 'exited during start-up');
    }
    const results = await probe([...pending.keys()]);
    for (const [url, status] of Object.entries(results)) {
      last.set(url, status);
      const node = pending.get(url);
      if (status === 200 && node) {
        pending.delete(url);
        onReady?.(node.name);
      }
    }
    if (pending.size === 0) return;
    if (Date.now() > deadline) {
      const [url, node] = [...pending.entries()][0]!;
      throw notReady(`the agent of ${node.name}`, node.agent!,
        `did not become ready within ${Math.round(timeoutMs / 1000)} s (${url}: ${String(last.get(url))})`);
    }
    await sleep(PROBE_INTERVAL_MS);
  }
}
