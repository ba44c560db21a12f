// What the slowest requests of a latency run waited on, from the kernel's scheduler trace
// (bench/proxy.ts, HTTP/1.1 on one connection at 1,000 requests/s). `perf record -e sched:sched_switch`
// runs across the h2load run; for each request at or above the run's p99 (from h2load's
// --log-file), the time each CPU spent on what, within the request's own interval, names
// its cause, as the one whose time most exceeds what the run's median request spent on it:
// the proxy's other threads (for nodal, V8's compiler and GC helpers), the proxy's event
// loop (a GC pause, a long task), kernel threads, every CPU idle at once (nothing could run:
// the request waited on a wake-up, on this VM the hypervisor's), or the rest (the load tool,
// the backend, other processes, or nothing that stands out).
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { percentile } from '../report.ts';

const run = promisify(execFile);

export const CAUSES = ['proxyThreads', 'proxyLoop', 'kernel', 'allIdle', 'other'] as const;
export type Cause = (typeof CAUSES)[number];

export interface Tail {
  requests: number;
  /** ms */
  p99: number;
  /** requests at or above the p99, by what they mostly waited on */
  causes: Record<Cause, number>;
}

/** one stretch a CPU spent on one task (or idle), seconds on CLOCK_MONOTONIC */
export interface Slice { start: number; end: number; cpu: number; task: string; tid: number; pid: number }

/** a scheduler trace: its slices sorted by end, and how long the longest lasted */
export interface SchedTrace { slices: Slice[]; longest: number }

/** `perf sched timehist` output: the slices it lists, each ending at its time column */
export function parseTimehist(text: string): SchedTrace {
  const out: Slice[] = [];
  for (const line of text.split('\n')) {
    // "   29421.040701 [0000]  h2load[11477/11476]   0.000   0.021   0.087"
    const m = /^\s*(\d+\.\d+)\s+\[(\d+)\]\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$/.exec(line);
    if (!m) continue;
    const end = Number(m[1]);
    const name = m[3]!;
    const ids = /^(.*)\[(\d+)(?:\/(\d+))?\]$/.exec(name);
    const tid = ids ? Number(ids[2]) : 0;
    out.push({ start: end - Number(m[6]) / 1000, end, cpu: Number(m[2]), task: ids ? ids[1]! : name, tid, pid: ids?.[3] ? Number(ids[3]) : tid });
  }
  out.sort((a, b) => a.end - b.end);
  return { slices: out, longest: out.reduce((n, x) => Math.max(n, x.end - x.start), 0) };
}

const KERNEL_THREAD = /^(kworker|ksoftirqd|kdamond|rcu_|migration|kswapd|khugepaged|kcompactd|watchdog)/;
/** below this the cause is not told apart from the ordinary work of one request (ms) */
const NOISE_MS = 0.2;

/** What the request [start, end] (seconds) spent its time on, ms per cause; `proxyPid`: the proxy process */
export function timesOf(trace: SchedTrace, start: number, end: number, proxyPid: number): Record<Cause, number> {
  const { slices, longest } = trace;
  const ms: Record<Cause, number> = { proxyThreads: 0, proxyLoop: 0, kernel: 0, allIdle: 0, other: 0 };
  const idle = new Map<number, Array<[number, number]>>();
  const cpus = new Set<number>();
  // the first slice that ends after start
  let lo = 0;
  for (let hi = slices.length; lo < hi;) {
    const mid = (lo + hi) >> 1;
    if (slices[mid]!.end <= start) lo = mid + 1;
    else hi = mid;
  }
  // sorted by end: past end + longest, none started before `end`
  for (let i = lo; i < slices.length && slices[i]!.end <= end + longest; i++) {
    const s = slices[i]!;
    if (s.start >= end) continue;
    cpus.add(s.cpu);
    const a = Math.max(s.start, start);
    const b = Math.min(s.end, end);
    if (s.task === '<idle>') {
      (idle.get(s.cpu) ?? idle.set(s.cpu, []).get(s.cpu)!).push([a, b]);
      continue;
    }
    const t = (b - a) * 1000;
    if (s.pid === proxyPid) ms[s.tid === proxyPid ? 'proxyLoop' : 'proxyThreads'] += t;
    else if (KERNEL_THREAD.test(s.task)) ms.kernel += t;
    else ms.other += t;
  }
  // the time every CPU was idle at once: the intersection of their idle stretches
  let all: Array<[number, number]> | undefined;
  for (const cpu of cpus) {
    const mine = idle.get(cpu) ?? [];
    all = all === undefined ? mine : intersect(all, mine);
  }
  ms.allIdle = (all ?? []).reduce((n, [a, b]) => n + (b - a) * 1000, 0);
  return ms;
}

/**
 * What a slow request mostly waited on: the cause whose time exceeds what the run's median
 * request spent on it (`usual`) by the most, if by more than NOISE_MS; else 'other'
 */
export function causeOf(times: Record<Cause, number>, usual: Record<Cause, number>): Cause {
  let cause: Cause = 'other';
  let most = NOISE_MS;
  for (const c of CAUSES) {
    const excess = times[c] - usual[c];
    if (excess > most) {
      most = excess;
      cause = c;
    }
  }
  return cause;
}

function intersect(x: ReadonlyArray<[number, number]>, y: ReadonlyArray<[number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const [a, b] of x) {
    for (const [c, d] of y) {
      const lo = Math.max(a, c);
      const hi = Math.min(b, d);
      if (hi > lo) out.push([lo, hi]);
    }
  }
  return out;
}

/**
 * Run `load` (an h2load run that writes its per-request log to `logFile`, lasting about
 * `seconds`) under perf's scheduler trace, and tell what its slowest 1% waited on.
 * `proxyPid`: the process whose threads are told apart (nodal's, or the nginx worker's).
 */
export async function traceTail(dir: string, logFile: string, seconds: number, proxyPid: number, load: () => Promise<unknown>): Promise<Tail> {
  const data = `${dir}/sched.data`;
  // h2load's log has wall-clock starts; perf's trace CLOCK_MONOTONIC, as process.hrtime
  const wallMinusMono = Date.now() / 1000 - Number(process.hrtime.bigint()) / 1e9;
  const perf = spawn('perf', ['record', '-q', '-k', 'mono', '-e', 'sched:sched_switch', '-a', '-o', data, '--', 'sleep', String(seconds + 3)],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  perf.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = once(perf, 'exit');
  try {
    await new Promise((r) => setTimeout(r, 500)); // perf is recording
    await load();
    const [code] = (await exited) as [number | null];
    if (code !== 0) throw new Error(`perf record exited ${code}: ${err.trim()}`);
    const { stdout } = await run('perf', ['sched', 'timehist', '-i', data], { maxBuffer: 256 * 1024 * 1024 });
    const trace = parseTimehist(stdout);
    const reqs = readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => {
      const f = l.split('\t');
      return { start: Number(f[0]) / 1e6 - wallMinusMono, ms: Number(f[2]) / 1000 };
    });
    const p99 = percentile(reqs.map((r) => r.ms).sort((a, b) => a - b), 99);
    const times = reqs.map((r) => timesOf(trace, r.start, r.start + r.ms / 1000, proxyPid));
    const usual = Object.fromEntries(CAUSES.map((c) => [c, percentile(times.map((t) => t[c]).sort((a, b) => a - b), 50)])) as Record<Cause, number>;
    const causes = Object.fromEntries(CAUSES.map((c) => [c, 0])) as Record<Cause, number>;
    reqs.forEach((r, i) => { if (r.ms >= p99) causes[causeOf(times[i]!, usual)]++; });
    return { requests: reqs.length, p99, causes };
  } finally {
    if (perf.exitCode === null) perf.kill('SIGINT');
    rmSync(data, { force: true });
  }
}

/** perf is on PATH and may trace the scheduler */
export async function canTrace(): Promise<boolean> {
  try {
    await run('perf', ['record', '-q', '-e', 'sched:sched_switch', '-a', '-o', '/dev/null', '--', 'true']);
    return true;
  } catch {
    return false;
  }
}
