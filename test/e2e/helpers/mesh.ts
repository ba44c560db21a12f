// Helpers for the mesh e2e test (test/e2e/mesh.test.ts): flows as `nodal observe -o json`
// prints them (its runObserve, in process, against the sandbox's relay), one HTTP GET from
// inside a pod, HTTP from the underlay (the only place that reaches the agents' ports), and
// restarting an agent or the control plane the way `nodal dev up` starts them.
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import assert from 'node:assert/strict';
import { flowFromWire, responseFromJson, type Flow, type WireFlow } from '../../../agent/flows/index.ts';
import { runObserve, type FilterOp, type ObserveOptions } from '../../../cli/observe.ts';
import { UNDERLAY_NETNS, type Sandbox, type SandboxStatus } from '../../../cli/dev/index.ts';
// the sandbox's own start-up path for its processes, reused so a restarted agent or
// control plane runs exactly as `nodal dev up` runs it
import { acquireLock, saveState, startAgent, startControl, waitReady, type SandboxProcess as ProcessRecord } from '../../../cli/dev/index.ts';
import { repoRoot } from '../../helpers/paths.ts';

/** the pod scripts of this test (plain .mjs: pods run them from the source tree) */
export const fixture = (name: string): string => join(repoRoot, 'test/fixtures/e2e', name);

/** poll `check` every `intervalMs` until it returns something other than undefined/false */
export async function until<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

class Collect extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8');
    cb();
  }
}

/** filter flags in the order `nodal observe` takes them: [['from-pod', 'demo/frontend'], ['verdict', 'DROPPED']] */
export type Flags = ReadonlyArray<readonly [string, string?]>;

/**
 * `nodal observe -o json <flags>` against the sandbox's relay, every line parsed back into
 * a Flow exactly as `nodal observe --input-file` would. By default every flow in the
 * buffers (--all); pass `last` or `since` to narrow.
 */
export async function observe(sb: Sandbox, flags: Flags, opts: Pick<ObserveOptions, 'last' | 'since' | 'all'> = {}): Promise<Flow[]> {
  const out = new Collect();
  const err = new Collect();
  const ops: FilterOp[] = flags.map(([name, value]) => (value === undefined ? { name } : { name, value }));
  const o: ObserveOptions = { server: `unix:${sb.layout.relaySocket}`, output: 'json', ...(opts.last || opts.since ? opts : { all: true }) };
  const code = await runObserve(o, ops, { out, err });
  assert.equal(code, 0, `nodal observe ${flags.map(([n, v]) => `--${n} ${v ?? ''}`).join(' ')} failed: ${err.text}`);
  return out.text.split('\n').filter((l) => l.trim() !== '').flatMap((l) => {
    const r = responseFromJson(l);
    return r.flow ? [flowFromWire(r.flow as WireFlow)] : [];
  });
}

/** wait until `nodal observe` shows at least one flow passing `pick`; resolves with those that do */
export async function flowsUntil(sb: Sandbox, what: string, flags: Flags, pick: (f: Flow) => boolean, timeoutMs: number, opts: Pick<ObserveOptions, 'last' | 'since'> = {}): Promise<Flow[]> {
  return until(what, async () => {
    const found = (await observe(sb, flags, opts)).filter(pick);
    return found.length > 0 ? found : undefined;
  }, timeoutMs, 200);
}

/** what test/fixtures/e2e/http-get.mjs prints */
export interface GetResult {
  status?: number;
  body?: string;
  /** the client's local address:port */
  local?: string;
  /** errno code (EPERM, ECONNREFUSED, ETIMEDOUT, ...) */
  error?: string;
  syscall?: string | null;
}

/** one GET on a new connection from inside a pod (its netns and cgroup: enrolled if the pod is) */
export async function podGet(sb: Sandbox, pod: string, url: string): Promise<GetResult> {
  const r = await sb.exec(pod, [process.execPath, fixture('http-get.mjs'), url], { stdio: 'pipe' });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as GetResult;
  } catch {
    assert.fail(`GET ${url} from ${pod}: no result (exit ${r.code}): ${r.stdout}${r.stderr}`);
  }
}

// runs in the underlay netns: one GET of each URL, printed as {url: {status, body} | {error}}
const UNDERLAY_GET = `
const out = {};
await Promise.all(process.argv.slice(1).map(async (u) => {
  try { const r = await fetch(u, { signal: AbortSignal.timeout(2000) }); out[u] = { status: r.status, body: await r.text() }; }
  catch (e) { out[u] = { error: String(e?.cause?.code ?? e?.name ?? e) }; }
}));
process.stdout.write(JSON.stringify(out));
`;

export interface UnderlayResult { status?: number; body?: string; error?: string }

/** GET each URL from inside the underlay netns, where the nodes' admin ports are reachable */
export function underlayGet(urls: readonly string[]): Promise<Record<string, UnderlayResult>> {
  return new Promise((resolve, reject) => {
    execFile('nsenter', [`--net=/run/netns/${UNDERLAY_NETNS}`, '--', process.execPath, '--input-type=module', '-e', UNDERLAY_GET, ...urls],
      { encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        if (err) return reject(new Error(`underlay GET failed: ${err.message} ${stderr}`));
        resolve(JSON.parse(stdout) as Record<string, UnderlayResult>);
      });
  });
}

/** alive and not a zombie */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

export async function killAndWait(pid: number, what: string): Promise<void> {
  process.kill(pid, 'SIGKILL');
  await until(`${what} (pid ${pid}) to be gone after SIGKILL`, () => !alive(pid), 5000, 20);
}

/** start an agent again through the sandbox's own start-up path, record it, wait for /readyz */
export async function restartAgent(sb: Sandbox, node: string, readyTimeoutMs: number): Promise<ProcessRecord> {
  const release = await acquireLock(sb.layout.lockFile);
  const state = sb.state()!;
  const rec = state.nodes.find((n) => n.name === node);
  assert.ok(rec, `no node ${node} in the sandbox`);
  try {
    rec.agent = startAgent(rec, state, sb.layout);
    saveState(sb.layout.stateFile, state);
  } finally {
    release();
  }
  await waitReady(state, readyTimeoutMs);
  return rec.agent;
}

/** start the control plane again through the sandbox's own start-up path, and record it */
export async function restartControl(sb: Sandbox): Promise<ProcessRecord> {
  const release = await acquireLock(sb.layout.lockFile);
  try {
    const state = sb.state()!;
    state.control = startControl(state, sb.layout);
    saveState(sb.layout.stateFile, state);
    return state.control;
  } finally {
    release();
  }
}

/** the network namespace a process is in, as `net:[inode]`; undefined when it is gone */
export function netnsOf(pid: number | 'self'): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

/** processes (not zombies) whose network namespace is one of `netns` (`net:[inode]` strings) */
export function processesIn(netns: ReadonlySet<string>): Array<{ pid: number; cmd: string }> {
  const out: Array<{ pid: number; cmd: string }> = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    const ns = netnsOf(pid);
    if (!ns || !netns.has(ns) || !alive(pid)) continue;
    let cmd = '';
    try { cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim(); } catch { /* gone */ }
    out.push({ pid, cmd });
  }
  return out;
}

/** live processes whose command line mentions `needle` */
export function processesMatching(needle: string): Array<{ pid: number; cmd: string }> {
  const out: Array<{ pid: number; cmd: string }> = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    let cmd = '';
    try { cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8').replaceAll('\0', ' ').trim(); } catch { continue; }
    if (cmd.includes(needle) && alive(Number(e))) out.push({ pid: Number(e), cmd });
  }
  return out;
}

/**
 * tcpdump on the underlay bridge, writing a pcap: resolves once it listens. stop() ends it
 * with SIGINT (which flushes the file) and resolves when it has exited.
 */
export async function captureUnderlay(bridge: string, file: string): Promise<{ stop: () => Promise<void>; child: ChildProcess }> {
  const child = spawn('nsenter', [`--net=/run/netns/${UNDERLAY_NETNS}`, '--', 'tcpdump', '--immediate-mode', '-U', '-n', '-s', '0', '-i', bridge, '-w', file],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  let exited = false;
  const gone = new Promise<void>((resolve) => child.once('exit', () => { exited = true; resolve(); }));
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  await until(`tcpdump to listen on ${bridge}`, () => {
    if (exited) throw new Error(`tcpdump exited: ${stderr}`);
    return /listening on/.test(stderr);
  }, 5000, 20);
  return {
    child,
    stop: async () => {
      if (!exited) child.kill('SIGINT');
      await gone;
    },
  };
}

/** `nodal dev status -o json`, the command itself, for the sandbox under `root` (NODAL_SANDBOX_ROOT) */
export function devStatusJson(root: string): Promise<SandboxStatus> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [join(repoRoot, 'dist/cli/main.js'), 'dev', 'status', '-o', 'json'],
      { encoding: 'utf8', env: { ...process.env, NODAL_SANDBOX_ROOT: root } }, (err, stdout, stderr) => {
        if (err) return reject(new Error(`nodal dev status -o json: ${err.message} ${stderr}`));
        resolve(JSON.parse(stdout) as SandboxStatus);
      });
  });
}

/** the lines of a pod container's log */
export function podLog(sb: Sandbox, pod: string, container?: string): string[] {
  const p = sb.pod(pod);
  const c = container === undefined ? p.containers[0] : p.containers.find((x) => x.name === container);
  assert.ok(c?.process, `pod ${pod} has no running container ${container ?? ''}`);
  try {
    return readFileSync(c.process.log, 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

/**
 * What the data path looked like, for a failed case's evidence: per node, WireGuard as its
 * agent's wireguard-go reports it (`wg show`, in the agent's mount namespace, where its
 * UAPI socket is), addresses, routes and neighbours; and the underlay bridge. Each command's
 * output or error, as text; never throws.
 */
export function dataPathSnapshot(sb: Sandbox): string {
  const run = (argv: string[]): string => {
    const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 5000 });
    return `$ ${argv.join(' ')}\n${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? `${r.error.message}\n` : ''}`;
  };
  const out: string[] = [];
  for (const n of sb.state()?.nodes ?? []) {
    const pid = n.agent?.pid;
    if (pid && alive(pid)) out.push(run(['nsenter', '-t', String(pid), '-m', '-n', 'wg', 'show', 'all']));
    else out.push(`# ${n.name}: agent not running\n`);
    for (const c of [['addr'], ['route'], ['neigh']]) out.push(run(['ip', '-n', n.netns, '-d', ...c]));
  }
  out.push(run(['ip', '-n', UNDERLAY_NETNS, '-br', 'link']), run(['ip', '-n', UNDERLAY_NETNS, 'neigh']));
  return out.join('\n');
}
