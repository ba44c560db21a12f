// Processes of the sandbox: each one detached in its own session (it outlives the CLI),
// logging to one file, and placed in a cgroup before it execs, so cgroup.kill finds it and
// everything it forks, even after the CLI that started it is gone.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { SandboxError, SandboxErrorCode } from './errors.ts';
import type { ProcessRecord } from './state.ts';
import { isAlive, processStartTime, sleep } from './system.ts';

/** a process gets this long to exit on SIGTERM (agents detach and flush) before SIGKILL */
const STOP_GRACE_MS = 3_000;
/** the kernel empties a killed cgroup in milliseconds; waiting longer means something is stuck */
const CGROUP_EMPTY_WAIT_MS = 5_000;

/**
 * The shell writes its own pid into the cgroup, then execs: the process is inside the
 * cgroup before it runs a single instruction of its program, so nothing escapes.
 */
const ENTER_CGROUP = 'echo $$ > "$0/cgroup.procs" && exec "$@"';

export interface SpawnSpec {
  name: string;
  argv: readonly string[];
  cgroup: string;
  log: string;
  env: Record<string, string>;
  cwd?: string;
}

export function spawnDetached(spec: SpawnSpec): ProcessRecord {
  mkdirSync(spec.cgroup, { recursive: true });
  mkdirSync(dirname(spec.log), { recursive: true });
  const fd = openSync(spec.log, 'a');
  try {
    const child = spawn('sh', ['-c', ENTER_CGROUP, spec.cgroup, ...spec.argv], {
      detached: true, // setsid: its own session and process group, untouched by the CLI's terminal
      stdio: ['ignore', fd, fd],
      env: spec.env,
      cwd: spec.cwd ?? '/',
    });
    child.on('error', () => { /* reported below through the missing pid */ });
    child.unref();
    const pid = child.pid;
    if (pid === undefined) throw new SandboxError(SandboxErrorCode.COMMAND, `start ${spec.name}: could not spawn sh`);
    return { name: spec.name, pid, startTime: processStartTime(pid) ?? 0, log: spec.log, cgroup: spec.cgroup };
  } finally {
    closeSync(fd);
  }
}

/** SIGTERM the process group, SIGKILL it after a grace period; a recycled pid is left alone */
export async function stopProcess(rec: ProcessRecord | undefined, graceMs = STOP_GRACE_MS): Promise<void> {
  if (!rec || !isAlive(rec)) return;
  signalGroup(rec.pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isAlive(rec)) return;
    await sleep(50);
  }
  signalGroup(rec.pid, 'SIGKILL');
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try { process.kill(pid, signal); } catch { /* already gone */ }
  }
}

function cgroupProcs(dir: string): number[] {
  const pids: number[] = [];
  const walk = (d: string): void => {
    try {
      for (const p of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (p) pids.push(Number(p));
    } catch { /* gone */ }
    for (const sub of subdirs(d)) walk(join(d, sub));
  };
  walk(dir);
  return pids;
}

function subdirs(dir: string): string[] {
  try {
    return readdirSync(dir).filter((e) => statSync(join(dir, e)).isDirectory());
  } catch {
    return [];
  }
}

/** kill every process in a cgroup subtree and wait until the subtree is empty; returns how many there were */
export async function killCgroup(dir: string): Promise<number> {
  if (!existsSync(dir)) return 0;
  const killFile = join(dir, 'cgroup.kill');
  const deadline = Date.now() + CGROUP_EMPTY_WAIT_MS;
  const seen = new Set<number>();
  for (;;) {
    const pids = cgroupProcs(dir);
    if (pids.length === 0) return seen.size;
    for (const pid of pids) seen.add(pid);
    if (existsSync(killFile)) {
      try { writeFileSync(killFile, '1'); } catch { /* raced with removal */ }
    } else {
      // kernels before 5.14 have no cgroup.kill: signal what is there, again until empty
      for (const pid of pids) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    if (Date.now() > deadline) {
      throw new SandboxError(SandboxErrorCode.COMMAND, `cgroup ${dir} still holds processes ${pids.join(', ')} after SIGKILL`);
    }
    await sleep(20);
  }
}

/** kill, then rmdir a cgroup subtree bottom-up (a cgroup must be empty to go) */
export async function removeCgroupTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  await killCgroup(dir);
  const rm = async (d: string): Promise<void> => {
    for (const sub of subdirs(d)) await rm(join(d, sub));
    for (let i = 0; ; i++) {
      try {
        rmdirSync(d);
        return;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return;
        // EBUSY while the kernel finishes reaping the killed tasks
        if (code !== 'EBUSY' || i >= 100) {
          throw new SandboxError(SandboxErrorCode.COMMAND, `rmdir cgroup ${d}: ${code ?? String(err)}`, { cause: err });
        }
        await sleep(20);
      }
    }
  };
  await rm(dir);
}

/** the cgroup a process is in, from /proc/<pid>/cgroup (the v2 line, "0::/path") */
export function cgroupOf(pid: number): string | undefined {
  try {
    for (const line of readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')) {
      if (line.startsWith('0::')) return line.slice(3);
    }
  } catch { /* gone */ }
  return undefined;
}
