// Small system helpers for kernel and e2e tests: run a command with a clear error, find
// the cgroup2 mount, and require root + BPF (a kernel test that cannot run fails, it
// never skips).
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';

export function run(cmd: string, args: readonly string[], opts: { input?: string; allowFail?: boolean } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input: opts.input ?? '', timeout: 30_000 });
  if ((r.status !== 0 || r.error) && !opts.allowFail) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr.trim()}`);
  }
  return r.stdout;
}

export function sh(script: string): string {
  return execFileSync('sh', ['-c', script], { encoding: 'utf8', timeout: 30_000 });
}

export function cgroup2Mount(): string {
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[2] === 'cgroup2' && f[1]) return f[1];
  }
  throw new Error('no cgroup2 filesystem is mounted (see /proc/mounts): nodal needs cgroup v2');
}

export function bpffsMount(): string {
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[2] === 'bpf' && f[1]) return f[1];
  }
  // the sandbox and the agent mount it the same way
  run('mount', ['-t', 'bpf', 'bpf', '/sys/fs/bpf']);
  return '/sys/fs/bpf';
}

/** fail loudly, naming what is missing, when the kernel tests cannot run here */
export function requireKernel(): void {
  assert.equal(process.getuid?.(), 0, 'kernel tests need root: run them as root (CI runs as root)');
  assert.ok(readFileSyncSafe('/sys/kernel/btf/vmlinux'), 'kernel tests need BTF: /sys/kernel/btf/vmlinux is missing');
  cgroup2Mount();
  bpffsMount();
}

function readFileSyncSafe(p: string): boolean {
  try {
    readFileSync(p, { flag: 'r' }).subarray(0, 1);
    return true;
  } catch {
    return false;
  }
}

export function randomId(): string {
  return Math.random().toString(36).slice(2, 7);
}
