// The sandbox as one object: up builds the underlay, nodes and mesh; apply/delete manage
// objects and pods; exec runs a command in a pod; down removes every trace, from
// sandbox.json and, after a crash, by the names the sandbox always uses.
import { existsSync, mkdirSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  applyManifests, deleteManifests, loadManifestFiles, type ApplyContext, type ObjectResult,
} from './apply.ts';
import { namespaceObject, nodeObject, writeObject } from './config.ts';
import { SandboxError, SandboxErrorCode } from './errors.ts';
import { DEFAULT_STATE_DIR, examplesDir, repoRoot, sandboxLayout, type SandboxLayout } from './layout.ts';
import { parseManifests, type Manifest } from './manifest.ts';
import { READY_TIMEOUT_MS, startAgent, startControl, waitReady } from './mesh.ts';
import {
  BPF_PIN_DIR, CGROUP_ROOT_NAME, DEFAULT_NODES, NETNS_PREFIX_NODE, NETNS_PREFIX_POD, UNDERLAY_BRIDGE,
  UNDERLAY_GATEWAY, UNDERLAY_NETNS, planNodes,
} from './plan.ts';
import { execInPod, type ExecOptions, type ExecResult } from './pods.ts';
import { killCgroup, removeCgroupTree, stopProcess } from './processes.ts';
import { acquireLock, loadState, saveState, STATE_VERSION, type NodeRecord, type PodRecord, type SandboxState } from './state.ts';
import { sandboxStatus, type SandboxStatus } from './status.ts';
import { bpffsMount, cgroup2Mount, ensureBpffs, isAlive, listNetns, missingPrerequisites, netnsExists } from './system.ts';
import { createNode, createUnderlay, deleteNetns } from './topology.ts';

export interface SandboxOptions {
  /** state and run folders under this root instead of /var/lib and /run (NODAL_SANDBOX_ROOT) */
  root?: string;
  /** start the control plane and agents; false builds topology and pods only (NODAL_DEV_NO_MESH=1) */
  mesh?: boolean;
  /** progress lines, for a CLI to print */
  log?: (line: string) => void;
}

export interface UpOptions {
  nodes?: number;
  /** apply deploy/local/examples once the mesh is ready (needs two nodes) */
  examples?: boolean;
  readyTimeoutMs?: number;
}

export interface UpResult {
  /** false when a whole sandbox was already up and left as it was */
  created: boolean;
  state: SandboxState;
  examples: ObjectResult[];
}

export interface DownResult {
  /** what was removed, for the user (netns, cgroups, pins, folders, processes) */
  removed: string[];
}

/** sandbox netns names: the underlay, nodes, pods; never another tool's nodal-* namespaces */
export function isSandboxNetns(name: string): boolean {
  return name === UNDERLAY_NETNS || new RegExp(`^${NETNS_PREFIX_NODE}\\d+$`).test(name) || new RegExp(`^${NETNS_PREFIX_POD}[0-9a-f]{8}$`).test(name);
}

export class Sandbox {
  readonly layout: SandboxLayout;
  readonly mesh: boolean;
  private readonly log: (line: string) => void;

  constructor(opts: SandboxOptions = {}) {
    this.layout = sandboxLayout(opts.root);
    this.mesh = opts.mesh ?? process.env.NODAL_DEV_NO_MESH !== '1';
    this.log = opts.log ?? (() => {});
  }

  /** sandbox.json, or undefined when no sandbox was built under this root */
  state(): SandboxState | undefined {
    return loadState(this.layout.stateFile);
  }

  /** what of a sandbox exists on this machine: under any root, since netns and cgroups are global */
  leftovers(): string[] {
    const found: string[] = [];
    if (existsSync(this.layout.stateFile)) found.push(this.layout.stateFile);
    for (const ns of listNetns()) if (isSandboxNetns(ns)) found.push(`netns ${ns}`);
    const cg2 = cgroup2Mount();
    if (cg2 && existsSync(join(cg2, CGROUP_ROOT_NAME))) found.push(`cgroup ${join(cg2, CGROUP_ROOT_NAME)}`);
    for (const pin of this.pinDirs()) found.push(`BPF pins ${pin}`);
    return found;
  }

  private pinDirs(): string[] {
    const bpffs = bpffsMount();
    if (!bpffs) return [];
    const dir = join(bpffs, BPF_PIN_DIR);
    try {
      return readdirSync(dir).filter((e) => /^node-\d+$/.test(e)).map((e) => join(dir, e));
    } catch {
      return [];
    }
  }

  /** why an existing sandbox is not whole, or [] when every part is there and running */
  private problemsOf(state: SandboxState): string[] {
    const problems: string[] = [];
    if (!netnsExists(state.underlay.netns)) problems.push(`netns ${state.underlay.netns} is gone`);
    for (const n of state.nodes) {
      if (!netnsExists(n.netns)) problems.push(`netns ${n.netns} is gone`);
      if (state.mesh && !isAlive(n.agent)) problems.push(`the agent of ${n.name} is not running (log: ${n.agent?.log ?? 'none'})`);
    }
    if (state.mesh && !isAlive(state.control)) problems.push(`the control plane is not running (log: ${state.control?.log ?? 'none'})`);
    return problems;
  }

  async up(opts: UpOptions = {}): Promise<UpResult> {
    const plans = planNodes(opts.nodes ?? DEFAULT_NODES);
    const missing = missingPrerequisites({ mesh: this.mesh, repoRoot });
    if (missing.length > 0) {
      throw new SandboxError(SandboxErrorCode.PREREQ, `the sandbox cannot run here:\n${missing.map((m) => `  - missing ${m.what}\n    fix: ${m.fix}`).join('\n')}`);
    }
    const existing = this.state();
    if (existing) {
      const problems = this.problemsOf(existing);
      if (problems.length > 0) {
        throw new SandboxError(SandboxErrorCode.EXISTS, `a sandbox exists but is not whole:\n  ${problems.join('\n  ')}\nrun \`nodal dev down\`, then \`nodal dev up\` again`);
      }
      if (existing.nodes.length !== plans.length && opts.nodes !== undefined) {
        throw new SandboxError(SandboxErrorCode.EXISTS, `a sandbox with ${existing.nodes.length} node(s) is up: run \`nodal dev down\` first to change the node count`);
      }
      this.log(`a sandbox is already up (${existing.nodes.length} nodes, ${existing.pods.length} pods): leaving it as it is`);
      return { created: false, state: existing, examples: [] };
    }
    const leftovers = this.leftovers();
    if (leftovers.length > 0) {
      const elsewhere = this.layout.stateDir !== DEFAULT_STATE_DIR && existsSync(join(DEFAULT_STATE_DIR, 'sandbox.json'))
        ? ` (a developer sandbox is up, its state in ${DEFAULT_STATE_DIR}: \`nodal dev down\` without NODAL_SANDBOX_ROOT removes it)` : '';
      throw new SandboxError(SandboxErrorCode.EXISTS, `a sandbox or its leftovers already exist${elsewhere}:\n  ${leftovers.join('\n  ')}\nonly one sandbox can be up per machine: run \`nodal dev down\` first`);
    }

    const release = await acquireLock(this.layout.lockFile);
    let state: SandboxState;
    try {
      state = await this.build(plans);
      if (this.mesh) await this.startMesh(state, opts.readyTimeoutMs ?? READY_TIMEOUT_MS);
    } finally {
      release();
    }
    let examples: ObjectResult[] = [];
    if (opts.examples) {
      if (state.nodes.length < 2) this.log('examples skipped: they place frontend and backend on two nodes (use --nodes 2 or more)');
      else examples = await this.apply([examplesDir]);
    }
    return { created: true, state, examples };
  }

  private async build(plans: ReturnType<typeof planNodes>): Promise<SandboxState> {
    const { layout } = this;
    const cgroup2 = cgroup2Mount()!;
    const bpffs = await ensureBpffs();
    for (const d of [layout.configDir, layout.controlDir, layout.logsDir]) mkdirSync(d, { recursive: true });
    const state: SandboxState = {
      version: STATE_VERSION,
      createdAt: new Date().toISOString(),
      mesh: this.mesh,
      cgroup2,
      cgroupRoot: join(cgroup2, CGROUP_ROOT_NAME),
      bpffs,
      underlay: { netns: UNDERLAY_NETNS, bridge: UNDERLAY_BRIDGE, ip: UNDERLAY_GATEWAY },
      nodes: [],
      pods: [],
      services: {},
    };
    const save = (): void => saveState(layout.stateFile, state);
    save();
    mkdirSync(state.cgroupRoot, { recursive: true });
    this.log(`underlay: netns ${UNDERLAY_NETNS}, bridge ${UNDERLAY_BRIDGE} ${UNDERLAY_GATEWAY}/24`);
    await createUnderlay();
    for (const plan of plans) {
      const node: NodeRecord = { ...plan, cgroup: join(state.cgroupRoot, plan.name) };
      state.nodes.push(node);
      save(); // recorded first: down removes a half-built node
      mkdirSync(node.cgroup, { recursive: true });
      mkdirSync(layout.nodeStateDir(node.name), { recursive: true });
      mkdirSync(dirname(layout.observerSocket(node.name)), { recursive: true });
      await createNode(node);
      writeObject(layout.configDir, 'Node', undefined, node.name, nodeObject(node));
      this.log(`${node.name}: netns ${node.netns}, underlay ${node.underlayIp}, pods ${node.podCidr}, tunnel ${node.tunnelIp}, cgroup ${node.cgroup}`);
    }
    writeObject(layout.configDir, 'Namespace', undefined, 'default', namespaceObject('default'));
    return state;
  }

  private async startMesh(state: SandboxState, readyTimeoutMs: number): Promise<void> {
    const save = (): void => saveState(this.layout.stateFile, state);
    state.control = startControl(state, this.layout);
    save();
    this.log(`control plane: pid ${state.control.pid}, ${UNDERLAY_GATEWAY}:15012, relay ${this.layout.relaySocket} (log ${state.control.log})`);
    for (const node of state.nodes) {
      node.agent = startAgent(node, state, this.layout);
      save();
      this.log(`agent ${node.name}: pid ${node.agent.pid} (log ${node.agent.log})`);
    }
    this.log(`waiting for the agents to be ready (up to ${Math.round(readyTimeoutMs / 1000)} s)`);
    await waitReady(state, readyTimeoutMs, (n) => this.log(`agent ${n}: ready`));
  }

  private requireState(): SandboxState {
    const state = this.state();
    if (!state) throw new SandboxError(SandboxErrorCode.NOT_UP, `no sandbox is up (no ${this.layout.stateFile}): start one with \`nodal dev up\``);
    return state;
  }

  private async withContext<T>(fn: (ctx: ApplyContext) => Promise<T>): Promise<T> {
    this.requireState();
    const release = await acquireLock(this.layout.lockFile);
    try {
      const state = this.requireState(); // read again under the lock
      return await fn({ state, layout: this.layout, save: () => saveState(this.layout.stateFile, state) });
    } finally {
      release();
    }
  }

  /** apply files/folders (or already parsed manifests) */
  async apply(input: readonly string[] | readonly Manifest[]): Promise<ObjectResult[]> {
    const manifests = toManifests(input);
    return this.withContext((ctx) => applyManifests(ctx, manifests));
  }

  async applyYaml(text: string, origin = '<inline>'): Promise<ObjectResult[]> {
    return this.apply(parseManifests(text, origin));
  }

  async delete(input: readonly string[] | readonly Manifest[]): Promise<ObjectResult[]> {
    const manifests = toManifests(input);
    return this.withContext((ctx) => deleteManifests(ctx, manifests));
  }

  async deleteYaml(text: string, origin = '<inline>'): Promise<ObjectResult[]> {
    return this.delete(parseManifests(text, origin));
  }

  /** a pod by namespace/name (or namespace and name) */
  pod(ref: string, name?: string): PodRecord {
    const [namespace, podName] = name === undefined ? splitRef(ref) : [ref, name];
    const state = this.requireState();
    const pod = state.pods.find((p) => p.namespace === namespace && p.name === podName);
    if (!pod) {
      const known = state.pods.map((p) => `${p.namespace}/${p.name}`).join(', ') || 'none';
      throw new SandboxError(SandboxErrorCode.NOT_FOUND, `no pod ${namespace}/${podName} in the sandbox (pods: ${known})`);
    }
    return pod;
  }

  /** run a command in a pod's netns and cgroup; resolves with its exit code (and output when piped) */
  async exec(ref: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (argv.length === 0) throw new SandboxError(SandboxErrorCode.COMMAND, 'exec needs a command: nodal dev exec NAMESPACE/POD -- CMD [ARGS...]');
    const pod = this.pod(ref);
    const node = this.requireState().nodes.find((n) => n.name === pod.node)!;
    return execInPod(pod, node, argv, opts);
  }

  status(): SandboxStatus {
    return sandboxStatus(this.state(), this.layout);
  }

  /**
   * Remove every trace: processes, pod and node netns, the underlay, cgroups, BPF pins and
   * the state and run folders. Works after a crash (leftovers found by name) and twice.
   */
  async down(): Promise<DownResult> {
    const removed: string[] = [];
    let state: SandboxState | undefined;
    try {
      state = this.state();
    } catch (err) {
      this.log(`sandbox.json unreadable (${(err as Error).message}): removing by name`);
    }
    const release = existsSync(this.layout.runDir) ? await acquireLock(this.layout.lockFile) : () => {};
    try {
      // agents first, gracefully: they may detach their programs and flush their state
      const procs = [...(state?.nodes.map((n) => n.agent) ?? []), state?.control].filter((p) => p !== undefined);
      await Promise.all(procs.map(async (p) => {
        if (isAlive(p)) removed.push(`process ${p.name} (pid ${p.pid})`);
        await stopProcess(p);
      }));

      const cg2 = state?.cgroup2 ?? cgroup2Mount();
      const cgroupRoot = cg2 ? join(cg2, CGROUP_ROOT_NAME) : undefined;
      // whatever is left: pods' processes, their forks, exec'd commands, wireguard-go
      const killed = cgroupRoot ? await killCgroup(cgroupRoot) : 0;
      if (killed > 0) removed.push(`${killed} process(es) in ${cgroupRoot}`);
      // a container whose shell could not join its cgroup is only found by its pid
      for (const pod of state?.pods ?? []) {
        for (const c of pod.containers) {
          if (!c.process || !isAlive(c.process)) continue;
          removed.push(`process ${c.process.name} (pid ${c.process.pid})`);
          await stopProcess(c.process, 0);
        }
      }

      const netns = new Set<string>([
        ...(state ? [state.underlay.netns, ...state.nodes.map((n) => n.netns), ...state.pods.map((p) => p.netns)] : []),
        ...listNetns().filter(isSandboxNetns),
      ]);
      // pods before nodes before the underlay: each veth goes with its first namespace
      const order = (n: string): number => (n.startsWith(NETNS_PREFIX_POD) ? 0 : n.startsWith(NETNS_PREFIX_NODE) ? 1 : 2);
      for (const ns of [...netns].sort((a, b) => order(a) - order(b))) {
        if (!netnsExists(ns)) continue;
        await deleteNetns(ns);
        removed.push(`netns ${ns}`);
      }

      if (cgroupRoot && existsSync(cgroupRoot)) {
        await removeCgroupTree(cgroupRoot);
        removed.push(`cgroup ${cgroupRoot}`);
      }

      for (const pin of this.pinDirs()) {
        rmSync(pin, { recursive: true, force: true });
        removed.push(`BPF pins ${pin}`);
      }
      const bpffs = bpffsMount();
      if (bpffs) removeIfEmpty(join(bpffs, BPF_PIN_DIR));
    } finally {
      release();
    }
    for (const dir of [this.layout.runDir, this.layout.stateDir]) {
      if (!existsSync(dir)) continue;
      rmSync(dir, { recursive: true, force: true });
      removed.push(dir);
    }
    // the parents nodal made (/run/nodal, /var/lib/nodal, or the test root) go when empty
    for (const dir of [dirname(this.layout.runDir), dirname(this.layout.stateDir)]) removeIfEmpty(dir);
    return { removed };
  }
}

function removeIfEmpty(dir: string): void {
  try {
    rmdirSync(dir);
  } catch { /* not empty, or not there */ }
}

function splitRef(ref: string): [string, string] {
  const i = ref.indexOf('/');
  return i < 0 ? ['default', ref] : [ref.slice(0, i), ref.slice(i + 1)];
}

function toManifests(input: readonly string[] | readonly Manifest[]): Manifest[] {
  if (input.length === 0) return [];
  return typeof input[0] === 'string' ? loadManifestFiles(input as readonly string[]) : [...input as readonly Manifest[]];
}
