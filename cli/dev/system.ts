// The machine the sandbox runs on: commands with errors that name them, the cgroup2 and
// bpf mounts found from /proc/mounts (hybrid systems mount cgroup2 elsewhere), process
// identity that survives pid reuse, and the prerequisites `up` checks before it builds.
import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { SandboxError, SandboxErrorCode } from './errors.ts';

/** a command that hangs this long is broken, not slow: ip and friends answer in milliseconds */
const COMMAND_TIMEOUT_MS = 30_000;

export interface RunOptions {
  input?: string;
  allowFail?: boolean;
}

/** run a command; on failure the error names the command line and carries its stderr */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && !opts.allowFail) {
        const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found on PATH' : (stderr.trim() || err.message);
        reject(new SandboxError(SandboxErrorCode.COMMAND, `${cmd} ${args.join(' ')}: ${why}`, { cause: err }));
      } else resolve(stdout);
    });
    if (opts.input !== undefined) {
      child.stdin?.on('error', () => {}); // the exit code reports a command that stopped reading
      child.stdin?.end(opts.input);
    }
  });
}

/** `ip -n NS -batch -`: many link/addr/route changes in one process */
export async function ipBatch(netns: string | undefined, lines: readonly string[]): Promise<void> {
  const ns = netns === undefined ? [] : ['-n', netns];
  await run('ip', [...ns, '-batch', '-'], { input: `${lines.join('\n')}\n` });
}

function mountOf(fstype: string): string | undefined {
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[2] === fstype && f[1]) return f[1].replace(/\\040/g, ' ');
  }
  return undefined;
}

/** the cgroup v2 mount point, wherever the system put it (/sys/fs/cgroup or .../unified) */
export function cgroup2Mount(): string | undefined {
  return mountOf('cgroup2');
}

export function bpffsMount(): string | undefined {
  return mountOf('bpf');
}

export async function ensureBpffs(): Promise<string> {
  const found = bpffsMount();
  if (found) return found;
  await run('mount', ['-t', 'bpf', 'bpf', '/sys/fs/bpf']);
  return '/sys/fs/bpf';
}

export function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, cmd);
    try {
      accessSync(p, constants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch { /* not here */ }
  }
  return undefined;
}

/** the netns names `ip netns add` made (their bind mounts live in /run/netns) */
export function listNetns(): string[] {
  try {
    return readdirSync('/run/netns');
  } catch {
    return [];
  }
}

export function netnsExists(name: string): boolean {
  return existsSync(join('/run/netns', name));
}

/**
 * A process's start time in clock ticks since boot (/proc/<pid>/stat field 22): with the
 * pid it identifies one process for good, so a recycled pid is never taken for ours.
 */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) may hold spaces and parentheses: count from the last ')'
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const start = Number(rest[19]);
    return Number.isFinite(start) ? start : undefined;
  } catch {
    return undefined;
  }
}

export interface ProcessRef {
  pid: number;
  startTime: number;
}

export function isAlive(ref: ProcessRef | undefined): boolean {
  if (!ref) return false;
  if (processStartTime(ref.pid) !== ref.startTime) return false;
  try {
    // a zombie still has /proc/<pid>/stat; state Z means it is gone for our purposes
    const stat = readFileSync(`/proc/${ref.pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface Prerequisite {
  what: string;
  fix: string;
}

/**
 * Everything the sandbox needs that this machine lacks, each with how to get it. An
 * empty list means `up` can build. `mesh` adds what the control plane and agents need.
 */
export function missingPrerequisites(opts: { mesh: boolean; repoRoot: string }): Prerequisite[] {
  const missing: Prerequisite[] = [];
  if (process.getuid?.() !== 0) missing.push({ what: 'root privileges (network namespaces, cgroups, BPF)', fix: 'run it as root: sudo nodal dev up' });
  if (!cgroup2Mount()) {
    missing.push({ what: 'a cgroup v2 mount (none in /proc/mounts)', fix: 'mount one: mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified (or boot with systemd.unified_cgroup_hierarchy=1)' });
  }
  if (!existsSync('/dev/net/tun')) missing.push({ what: '/dev/net/tun (wireguard-go needs it)', fix: 'modprobe tun, or in a container: --device /dev/net/tun' });
  const tools: Array<[string, string]> = [
    ['ip', 'apt-get install iproute2'],
    ['nsenter', 'apt-get install util-linux'],
    ['unshare', 'apt-get install util-linux'],
    ['mount', 'apt-get install mount'],
  ];
  for (const [cmd, fix] of tools) if (!which(cmd)) missing.push({ what: `the ${cmd} command`, fix });
  if (opts.mesh) {
    if (!existsSync('/sys/module/wireguard') && !which('wireguard-go')) {
      missing.push({ what: 'WireGuard: no kernel module and no wireguard-go', fix: 'apt-get install wireguard-go wireguard-tools (or load the kernel module: modprobe wireguard)' });
    }
    if (!existsSync('/sys/kernel/btf/vmlinux')) missing.push({ what: 'kernel BTF (/sys/kernel/btf/vmlinux)', fix: 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y' });
    for (const f of ['dist/agent/main.js', 'dist/control/main.js']) {
      if (!existsSync(join(opts.repoRoot, f))) missing.push({ what: `${f} (the build)`, fix: 'make build' });
    }
    if (!existsSync(join(opts.repoRoot, 'native/build/Release/nodal_native.node'))) {
      missing.push({ what: 'the native addon (native/build/Release/nodal_native.node)', fix: 'make native' });
    }
    const bpfDir = join(opts.repoRoot, 'bpf/build');
    if (!existsSync(bpfDir) || !readdirSync(bpfDir).some((f) => f.endsWith('.bpf.o'))) {
      missing.push({ what: 'compiled BPF objects in bpf/build', fix: 'make bpf' });
    }
  }
  return missing;
}
