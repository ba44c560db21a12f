// sandbox.json: what was built (nodes, pods, processes, netns, links, cgroups), written
// after every step so `down` can undo a sandbox whose builder crashed half-way. A lock
// file keeps two `nodal dev` commands from changing the sandbox at the same time.
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { SandboxError, SandboxErrorCode } from './errors.ts';
import type { NodePlan } from './plan.ts';
import { isAlive, processStartTime, sleep, type ProcessRef } from './system.ts';

export const STATE_VERSION = 1;

export interface ProcessRecord extends ProcessRef {
  /** control, agent-node-1, pod.demo.backend.server, ... */
  name: string;
  log: string;
  cgroup: string;
}

export interface NodeRecord extends NodePlan {
  cgroup: string;
  agent?: ProcessRecord;
}

export interface ContainerRecord {
  name: string;
  process?: ProcessRecord;
  /** command after $(VAR) expansion, as run */
  argv: string[];
}

export interface PodRecord {
  namespace: string;
  name: string;
  uid: string;
  node: string;
  ip: string;
  netns: string;
  /** the veth end in the node netns */
  hostLink: string;
  cgroup: string;
  serviceAccountName: string;
  labels: Record<string, string>;
  /** what decides a restart on re-apply: containers' command, args and env */
  containersHash: string;
  containers: ContainerRecord[];
  createdAt: string;
}

export interface SandboxState {
  version: number;
  createdAt: string;
  /** whether the control plane and agents run (false under NODAL_DEV_NO_MESH=1) */
  mesh: boolean;
  cgroup2: string;
  /** <cgroup2>/nodal-sandbox */
  cgroupRoot: string;
  bpffs: string;
  underlay: { netns: string; bridge: string; ip: string };
  nodes: NodeRecord[];
  control?: ProcessRecord;
  pods: PodRecord[];
  /** namespace/name → ClusterIP, kept so a re-applied Service keeps its address */
  services: Record<string, string>;
}

/** write via a temporary file and rename, so a reader never sees half a file */
export function writeFileAtomic(path: string, data: string, mode = 0o644): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  writeFileSync(tmp, data, { mode });
  renameSync(tmp, path);
}

export function loadState(file: string): SandboxState | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const state = JSON.parse(text) as SandboxState;
  if (state.version !== STATE_VERSION) {
    throw new SandboxError(SandboxErrorCode.EXISTS, `${file} has version ${state.version}, this nodal writes ${STATE_VERSION}: run \`nodal dev down\` and up again`);
  }
  return state;
}

export function saveState(file: string, state: SandboxState): void {
  writeFileAtomic(file, `${JSON.stringify(state, null, 2)}\n`);
}

/** a lock older commands may hold for this long: apply and delete take well under it */
const LOCK_WAIT_MS = 60_000;

/**
 * Take the sandbox lock (a file holding our pid and start time). A lock whose holder is
 * gone is stale and taken over; a live holder is waited for, then reported.
 */
export async function acquireLock(file: string): Promise<() => void> {
  mkdirSync(dirname(file), { recursive: true });
  const me = `${process.pid} ${processStartTime(process.pid) ?? 0}`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const fd = openSync(file, 'wx', 0o644);
      writeSync(fd, me);
      closeSync(fd);
      return () => {
        try {
          if (readFileSync(file, 'utf8') === me) unlinkSync(file);
        } catch { /* removed by down */ }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder: ProcessRef | undefined;
    try {
      const [pid, start] = readFileSync(file, 'utf8').split(' ').map(Number);
      if (pid && start !== undefined) holder = { pid, startTime: start };
    } catch { /* released meanwhile */ }
    if (!holder || !isAlive(holder)) {
      try { unlinkSync(file); } catch { /* someone else took it over */ }
      continue;
    }
    if (Date.now() > deadline) {
      throw new SandboxError(SandboxErrorCode.BUSY, `another nodal dev command (pid ${holder.pid}) holds ${file}`);
    }
    await sleep(100);
  }
}
