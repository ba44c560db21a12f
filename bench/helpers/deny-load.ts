// Verdict-event load for benchmarks: one deny_loop.py per pod (its network namespace and
// its cgroup, as a container runtime would place it), started together, each making
// denied connect() calls — one DROPPED event per call.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Pod } from '../../test/helpers/lab.ts';
import { repoRoot } from '../../test/helpers/paths.ts';

const LOOP = join(repoRoot, 'bench/helpers/deny_loop.py');
// Debian's interpreter: the one the Makefile's packages install into
const PYTHON = '/usr/bin/python3';

export interface LoadSpec {
  host: string;
  port: number;
  seconds: number;
  /** events per pod; 0: until `seconds` */
  maxPerPod?: number;
  /** events/s per pod; 0: as fast as it can */
  ratePerPod?: number;
}

export interface LoadResult {
  events: number;
  seconds: number;
  /** CPU seconds the generators used, kernel time of their denied connect() calls included */
  cpuSeconds: number;
}

interface Gen { child: ChildProcess; lines: AsyncIterator<string>; stderr: () => string }

/** every generator process still running, so a failed run can kill them */
const live = new Set<ChildProcess>();

export function killLoad(): void {
  for (const c of live) c.kill('SIGKILL');
  live.clear();
}

async function nextJson(g: Gen, what: string): Promise<Record<string, unknown>> {
  const r = await g.lines.next();
  if (r.done) throw new Error(`deny_loop.py exited before ${what}: ${g.stderr().trim()}`);
  const v = JSON.parse(r.value) as Record<string, unknown>;
  if (typeof v.error === 'string') throw new Error(`deny_loop.py: ${v.error}`);
  return v;
}

/**
 * Start one generator per pod, wait until every one has probed (one denied connect, so
 * the policy is known to deny), then release them together. Resolves when all finish.
 */
export async function runLoad(pods: readonly Pod[], spec: LoadSpec, onStart?: () => void): Promise<LoadResult> {
  const gens: Gen[] = pods.map((pod) => {
    const args = [LOOP, spec.host, String(spec.port), String(spec.seconds), String(spec.maxPerPod ?? 0), String(spec.ratePerPod ?? 0)];
    const script = `echo $$ > ${pod.cgroup}/cgroup.procs && exec ip netns exec ${pod.netns} ${PYTHON} "$@"`;
    const child = spawn('sh', ['-c', script, 'sh', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(child);
    child.once('close', () => live.delete(child));
    let err = '';
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    return { child, lines: createInterface({ input: child.stdout! })[Symbol.asyncIterator](), stderr: () => err };
  });
  try {
    for (const g of gens) await nextJson(g, 'it was ready');
    onStart?.();
    for (const g of gens) g.child.stdin!.write('go\n');
    const done = await Promise.all(gens.map((g) => nextJson(g, 'it reported')));
    return {
      events: done.reduce((s, d) => s + Number(d.events), 0),
      seconds: Math.max(...done.map((d) => Number(d.seconds))),
      cpuSeconds: done.reduce((s, d) => s + Number(d.cpu), 0),
    };
  } finally {
    for (const g of gens) if (g.child.exitCode === null) g.child.kill('SIGKILL');
  }
}
