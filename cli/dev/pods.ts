// A pod in the sandbox: a network namespace with a veth on its node's pod bridge, a cgroup
// under its node's subtree, and its containers' command + args run as processes inside
// both. The image is ignored: the processes run from this machine's filesystem.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { constants } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { expandVars, type ContainerView, type Manifest, type PodView } from './manifest.ts';
import { examplesDir, repoRoot, type SandboxLayout } from './layout.ts';
import { podHostLink, podNetnsName } from './plan.ts';
import { killCgroup, removeCgroupTree, spawnDetached } from './processes.ts';
import type { NodeRecord, PodRecord } from './state.ts';
import { createPodNetwork, deletePodNetwork } from './topology.ts';

/**
 * Variables the sandbox adds for $(VAR) expansion in command, args and env, so manifests
 * need no machine-specific paths: $(NODE) is this nodal's node binary, $(EXAMPLES) the
 * examples folder, $(REPO) the repository.
 */
export function sandboxVars(): Record<string, string> {
  return { NODE: process.execPath, EXAMPLES: examplesDir, REPO: repoRoot };
}

/** what a re-apply compares to decide whether the processes restart */
export function containersHash(pod: PodView): string {
  const shape = pod.containers.map((c) => ({ name: c.name, command: c.command, args: c.args, env: c.env }));
  return createHash('sha256').update(JSON.stringify(shape)).digest('hex').slice(0, 16);
}

function fieldValue(path: string, pod: PodRecord, node: NodeRecord): string {
  switch (path) {
    case 'metadata.name': return pod.name;
    case 'metadata.namespace': return pod.namespace;
    case 'metadata.uid': return pod.uid;
    case 'spec.nodeName': return pod.node;
    case 'spec.serviceAccountName': return pod.serviceAccountName;
    case 'status.podIP': return pod.ip;
    case 'status.hostIP': return node.underlayIp;
    default: return '';
  }
}

/** the environment a pod's processes see: a small base, POD_*, then the container's env in order */
export function podEnv(pod: PodRecord, node: NodeRecord, container?: ContainerView): Record<string, string> {
  const path = [dirname(process.execPath), ...(process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)];
  const env: Record<string, string> = {
    PATH: [...new Set(path)].join(delimiter),
    HOME: '/root',
    HOSTNAME: pod.name,
    ...sandboxVars(),
    POD_NAME: pod.name,
    POD_NAMESPACE: pod.namespace,
    POD_IP: pod.ip,
    NODE_NAME: pod.node,
  };
  for (const e of container?.env ?? []) {
    env[e.name] = 'value' in e ? expandVars(e.value, env) : fieldValue(e.fieldPath, pod, node);
  }
  return env;
}

export function containerArgv(c: ContainerView, env: Record<string, string>): string[] {
  return [...c.command, ...c.args].map((a) => expandVars(a, env));
}

/** the process's own argv: entered into the pod's netns (the cgroup is entered before) */
function inPodNetns(pod: PodRecord, argv: readonly string[]): string[] {
  return ['nsenter', `--net=/run/netns/${pod.netns}`, '--', ...argv];
}

export interface PodPlacement {
  uid: string;
  node: NodeRecord;
  ip: string;
}

export function newPodRecord(m: Manifest, view: PodView, at: PodPlacement): PodRecord {
  return {
    namespace: m.namespace!,
    name: m.name,
    uid: at.uid,
    node: at.node.name,
    ip: at.ip,
    netns: podNetnsName(at.uid),
    hostLink: podHostLink(at.uid),
    cgroup: join(at.node.cgroup, `pod-${at.uid}`),
    serviceAccountName: view.serviceAccountName,
    labels: m.labels,
    containersHash: containersHash(view),
    containers: [],
    createdAt: new Date().toISOString(),
  };
}

/** build the pod's namespace and cgroup; the record is saved before this, so down finds a half-built pod */
export async function createPodSandbox(pod: PodRecord, node: NodeRecord): Promise<void> {
  mkdirSync(pod.cgroup, { recursive: true });
  await createPodNetwork(pod, node);
}

export function startContainers(pod: PodRecord, view: PodView, node: NodeRecord, layout: SandboxLayout): void {
  pod.containers = view.containers.map((c) => {
    const env = podEnv(pod, node, c);
    const argv = containerArgv(c, env);
    const process = spawnDetached({
      name: `pod.${pod.namespace}.${pod.name}.${c.name}`,
      argv: inPodNetns(pod, argv),
      cgroup: pod.cgroup,
      log: layout.logFile(`pod.${pod.namespace}.${pod.name}.${c.name}`),
      env,
    });
    return { name: c.name, argv, process };
  });
  pod.containersHash = containersHash(view);
}

/** every process of the pod, exec'd ones included, goes with cgroup.kill */
export async function stopContainers(pod: PodRecord): Promise<void> {
  await killCgroup(pod.cgroup);
  for (const c of pod.containers) delete c.process;
}

/** `nodeNetns`: the netns of the pod's node, where the host end of its veth is */
export async function deletePod(pod: PodRecord, nodeNetns: string | undefined): Promise<void> {
  await removeCgroupTree(pod.cgroup);
  await deletePodNetwork(pod, nodeNetns);
}

/** the object the control plane reads: the manifest plus what a kubelet would report */
export function podObject(m: Manifest, pod: PodRecord, node: NodeRecord): Record<string, unknown> {
  const o = structuredClone(m.object) as { metadata: Record<string, unknown>; spec: Record<string, unknown>; status?: unknown };
  o.metadata.uid = pod.uid;
  o.metadata.creationTimestamp = pod.createdAt;
  o.spec.nodeName = pod.node;
  o.spec.serviceAccountName = pod.serviceAccountName;
  o.status = {
    phase: 'Running',
    podIP: pod.ip,
    podIPs: [{ ip: pod.ip }],
    hostIP: node.underlayIp,
    hostIPs: [{ ip: node.underlayIp }],
    conditions: [{ type: 'Ready', status: 'True' }],
    startTime: pod.createdAt,
  };
  return o;
}

export interface ExecOptions {
  /** 'inherit' (the terminal, for the CLI) or 'pipe' (captured, for tests) */
  stdio?: 'inherit' | 'pipe';
  input?: string;
  /** default: the caller's working directory (pods share this machine's filesystem) */
  cwd?: string;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** run a command inside a pod (netns + cgroup); the exit code is the command's, 128+n on signal n */
export function execInPod(pod: PodRecord, node: NodeRecord, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const env = { ...podEnv(pod, node, undefined), ...(process.env.TERM ? { TERM: process.env.TERM } : {}) };
  const script = 'echo $$ > "$0/cgroup.procs" && exec "$@"';
  const stdio = opts.stdio ?? 'inherit';
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', script, pod.cgroup, ...inPodNetns(pod, argv)], {
      stdio: stdio === 'inherit' ? 'inherit' : ['pipe', 'pipe', 'pipe'],
      env,
      cwd: opts.cwd ?? process.cwd(),
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    if (stdio === 'pipe') {
      // a command that exits before reading its input closes the pipe: that is its
      // business, not an error of exec (EPIPE would otherwise escape as unhandled)
      child.stdin?.on('error', () => {});
      child.stdin?.end(opts.input ?? '');
    }
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const n = signal ? 128 + (constants.signals[signal] ?? 0) : (code ?? 1);
      resolve({ code: n, stdout, stderr });
    });
  });
}
