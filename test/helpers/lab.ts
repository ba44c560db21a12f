// A node and its pods on one machine, for kernel tests: the node is a network namespace
// with a bridge, each pod a network namespace with a veth on that bridge plus a cgroup
// under the node's cgroup. Everything is named with a random suffix and removed by
// destroy(), also after a failed test.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { cgroup2Mount, randomId, run } from './sys.ts';
import { repoRoot } from './paths.ts';

export interface Pod { name: string; netns: string; ip: string; cgroup: string; cgroupId: bigint }

export interface PodProcess {
  child: ChildProcess;
  /** next JSON line the process prints */
  next(): Promise<Record<string, unknown>>;
  send(line: string): void;
  stop(): Promise<void>;
}

export const PODCTL = join(repoRoot, 'dist/test/helpers/podctl.js');

export class Lab {
  readonly id = randomId();
  readonly nodeNetns: string;
  readonly bridge = 'br0';
  readonly subnet: string;
  readonly gateway: string;
  readonly cgroupRoot: string;
  readonly nodeCgroup: string;
  readonly pods = new Map<string, Pod>();
  private readonly children = new Set<ChildProcess>();
  private nextHost = 2;

  readonly octet: number;

  constructor(octet = 77) {
    this.octet = octet;
    this.nodeNetns = `nodal-t${this.id}-node`;
    this.subnet = `10.${octet}.0`;
    this.gateway = `${this.subnet}.1`;
    this.cgroupRoot = join(cgroup2Mount(), `nodal-test-${this.id}`);
    this.nodeCgroup = join(this.cgroupRoot, 'node');
  }

  create(): this {
    mkdirSync(this.nodeCgroup, { recursive: true });
    run('ip', ['netns', 'add', this.nodeNetns]);
    this.nsExec(this.nodeNetns, ['ip', 'link', 'set', 'lo', 'up']);
    // a fixed MAC: a bridge without one takes its lowest port's, and changes it when a pod
    // with a lower one joins, leaving earlier pods' ARP entries pointing nowhere
    this.nsExec(this.nodeNetns, ['ip', 'link', 'add', this.bridge, 'address', '02:6e:64:74:00:01', 'type', 'bridge']);
    this.nsExec(this.nodeNetns, ['ip', 'addr', 'add', `${this.gateway}/24`, 'dev', this.bridge]);
    this.nsExec(this.nodeNetns, ['ip', 'link', 'set', this.bridge, 'up']);
    return this;
  }

  nsExec(ns: string, argv: readonly string[]): string {
    return run('ip', ['netns', 'exec', ns, ...argv]);
  }

  netnsPath(ns: string): string {
    return `/run/netns/${ns}`;
  }

  addPod(name: string): Pod {
    const host = this.nextHost++;
    const ip = `${this.subnet}.${host}`;
    const netns = `nodal-t${this.id}-${name}`;
    const hostIf = `v${this.id}${host}`;
    run('ip', ['netns', 'add', netns]);
    run('ip', ['link', 'add', hostIf, 'netns', this.nodeNetns, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
    this.nsExec(this.nodeNetns, ['ip', 'link', 'set', hostIf, 'master', this.bridge, 'up']);
    this.nsExec(netns, ['ip', 'link', 'set', 'lo', 'up']);
    this.nsExec(netns, ['ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    this.nsExec(netns, ['ip', 'link', 'set', 'eth0', 'up']);
    this.nsExec(netns, ['ip', 'route', 'add', 'default', 'via', this.gateway]);
    const cgroup = join(this.nodeCgroup, name);
    mkdirSync(cgroup, { recursive: true });
    const pod: Pod = { name, netns, ip, cgroup, cgroupId: statSync(cgroup, { bigint: true }).ino };
    this.pods.set(name, pod);
    return pod;
  }

  pod(name: string): Pod {
    const p = this.pods.get(name);
    if (!p) throw new Error(`no pod ${name} in this lab`);
    return p;
  }

  /** run podctl inside a pod: its netns and its cgroup, as a container runtime would */
  spawnInPod(pod: Pod, args: readonly string[]): PodProcess {
    const script = `echo $$ > ${pod.cgroup}/cgroup.procs && exec ip netns exec ${pod.netns} "$0" "$@"`;
    return this.track(spawn('sh', ['-c', script, process.execPath, PODCTL, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, POD_NAME: pod.name },
    }));
  }

  /** run podctl in the node's namespace (outside every pod cgroup) */
  spawnInNode(args: readonly string[]): PodProcess {
    return this.track(spawn('ip', ['netns', 'exec', this.nodeNetns, process.execPath, PODCTL, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, POD_NAME: 'node' },
    }));
  }

  /** one-shot podctl in a pod, resolving with its single JSON result */
  async inPod(pod: Pod, args: readonly string[]): Promise<Record<string, unknown>> {
    const p = this.spawnInPod(pod, args);
    try {
      return await p.next();
    } finally {
      await p.stop();
    }
  }

  private track(child: ChildProcess): PodProcess {
    this.children.add(child);
    const lines: string[] = [];
    const waiters: Array<(l: string | null) => void> = [];
    let stderr = '';
    let ended = false;
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (l) => {
      const w = waiters.shift();
      if (w) w(l); else lines.push(l);
    });
    const exited = new Promise<void>((resolve) => child.once('close', () => {
      ended = true;
      this.children.delete(child);
      for (const w of waiters.splice(0)) w(null);
      resolve();
    }));
    return {
      child,
      next: () => new Promise((resolve, reject) => {
        const take = (l: string | null): void => {
          if (l === null) reject(new Error(`pod process exited (${child.exitCode}) without output: ${stderr.trim()}`));
          else resolve(JSON.parse(l) as Record<string, unknown>);
        };
        const l = lines.shift();
        if (l !== undefined) take(l);
        else if (ended) take(null);
        else waiters.push(take);
      }),
      send: (line) => { child.stdin?.write(`${line}\n`); },
      stop: async () => {
        if (!ended) child.kill('SIGKILL');
        await exited;
      },
    };
  }

  /** remove every process, namespace, link and cgroup this lab made */
  async destroy(): Promise<void> {
    for (const c of this.children) c.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 50));
    for (const pod of this.pods.values()) run('ip', ['netns', 'del', pod.netns], { allowFail: true });
    run('ip', ['netns', 'del', this.nodeNetns], { allowFail: true });
    removeCgroupTree(this.cgroupRoot);
  }
}

/** rmdir a cgroup subtree bottom-up, first moving stray processes to the root */
export function removeCgroupTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirDirs(dir)) removeCgroupTree(join(dir, entry));
  const procs = join(dir, 'cgroup.procs');
  const root = cgroup2Mount();
  if (existsSync(procs)) {
    for (const pid of readFileSync(procs, 'utf8').split('\n').filter(Boolean)) {
      try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone already */ }
      try { writeFileSync(join(root, 'cgroup.procs'), pid); } catch { /* exited */ }
    }
  }
  for (let i = 0; i < 50; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY') throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  rmdirSync(dir);
}

function readdirDirs(dir: string): string[] {
  return (readdirSyncSafe(dir)).filter((e) => statSync(join(dir, e)).isDirectory());
}

function readdirSyncSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

