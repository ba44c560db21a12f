// Where a local pod's processes live in the cgroup-v2 hierarchy. The connect hooks see
// bpf_get_current_cgroup_id() of the calling task, which is the cgroup of the container
// the task runs in, not the pod's: every container cgroup of an enrolled pod is an entry
// in the endpoints map. Layouts:
// - sandbox: `<node cgroup>/pod-<uid>`, processes directly in it (nodal dev);
// - kubelet, systemd driver: `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice`
//   (Guaranteed: `kubepods.slice/kubepods-pod<uid_>.slice`), containers `cri-containerd-<id>.scope`
//   or `crio-<id>.scope` (crun may put the processes one level down, in `.../container`);
// - kubelet, cgroupfs driver: `kubepods/<qos>/pod<uid>` (Guaranteed: `kubepods/pod<uid>`),
//   containers `<id>` (containerd) or `crio-<id>` (CRI-O).
// Which one a node uses is found by probing, once per pod: the pod's directory is cached
// until it disappears, its containers are listed on every call (a restarted container is a
// new directory, so a new cgroup id).
import { readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';

export type CgroupLayout = 'auto' | 'sandbox' | 'kubelet';
export const CGROUP_LAYOUTS: readonly CgroupLayout[] = ['auto', 'sandbox', 'kubelet'];

/** the layout a pod's directory was found in */
export type PodCgroupKind = 'sandbox' | 'systemd' | 'cgroupfs';

export interface ContainerCgroup {
  dir: string;
  /** the cgroup id the kernel reports: the directory's inode number on cgroup v2 */
  id: bigint;
}

export interface PodCgroup {
  kind: PodCgroupKind;
  dir: string;
  /** the cgroups the pod's processes run in; empty while the runtime is still creating them */
  containers: ContainerCgroup[];
}

export interface PodCgroupsOptions {
  /** the cgroup2 mount (from /proc/mounts) */
  cgroup2: string;
  /** the directory holding this node's pods (--cgroup): the kubepods root on a real node */
  nodeCgroup: string;
  layout?: CgroupLayout;
}

/** kubelet QoS classes with their own parent cgroup; Guaranteed pods sit at the root */
const QOS_CLASSES = ['burstable', 'besteffort'] as const;
/** kubepods roots tried under the cgroup2 mount besides --cgroup: kubelet's default
 *  cgroup root, and `--cgroup-root=/kubelet` as kind runs it */
const KUBEPODS_ROOTS = ['kubepods.slice', 'kubepods', 'kubelet.slice/kubelet-kubepods.slice', 'kubelet/kubepods'];
/** a container's own cgroup tree below its scope is shallow; deeper is not a layout we know */
const MAX_CONTAINER_DEPTH = 3;
/** a pod UID is a UUID; anything with a path separator or dots must never become a path */
const POD_UID = /^[A-Za-z0-9_-]+$/;

export function cgroupId(dir: string): bigint | undefined {
  try {
    return statSync(dir, { bigint: true }).ino;
  } catch {
    return undefined;
  }
}

function isDir(dir: string): boolean {
  try {
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/** candidate pod directories under one kubepods root, in the naming its driver uses */
function kubeletCandidates(root: string, uid: string): { kind: PodCgroupKind; dir: string }[] {
  const name = basename(root);
  if (name.endsWith('.slice')) {
    // systemd escapes '-' in a unit name part as '_'; the prefix nests (kubepods-burstable-pod…)
    const prefix = name.slice(0, -'.slice'.length);
    const unitUid = uid.replaceAll('-', '_');
    return [
      { kind: 'systemd', dir: join(root, `${prefix}-pod${unitUid}.slice`) },
      ...QOS_CLASSES.map((q) => ({ kind: 'systemd' as const, dir: join(root, `${prefix}-${q}.slice`, `${prefix}-${q}-pod${unitUid}.slice`) })),
    ];
  }
  return [
    { kind: 'cgroupfs', dir: join(root, `pod${uid}`) },
    ...QOS_CLASSES.map((q) => ({ kind: 'cgroupfs' as const, dir: join(root, q, `pod${uid}`) })),
  ];
}

/** leaf cgroups below a pod directory: with cgroup v2's no-internal-process rule, the
 *  processes are in the leaves (`crio-<id>.scope/container` under crun, the scope otherwise) */
function containerCgroups(podDir: string): ContainerCgroup[] | undefined {
  const out: ContainerCgroup[] = [];
  const walk = (dir: string, depth: number): boolean => {
    let children: string[];
    try {
      children = readdirSync(dir, { withFileTypes: true })
        .filter((d) => d.isDirectory() && !d.name.startsWith('crio-conmon-'))
        .map((d) => d.name)
        .sort();
    } catch {
      return false;
    }
    if (children.length === 0 || depth >= MAX_CONTAINER_DEPTH) {
      if (depth === 0) return true;
      const id = cgroupId(dir);
      // removed between listing and stat: the container is going away, the next call sees it
      if (id !== undefined) out.push({ dir, id });
      return true;
    }
    for (const c of children) walk(join(dir, c), depth + 1);
    return true;
  };
  return walk(podDir, 0) ? out : undefined;
}

/** Finds local pods' cgroups, probing the layouts once per pod and caching the pod's directory. */
export class PodCgroups {
  readonly layout: CgroupLayout;
  private readonly cache = new Map<string, { kind: PodCgroupKind; dir: string }>();
  private readonly kubepodsRoots: string[];
  private readonly nodeCgroup: string;

  constructor(opts: PodCgroupsOptions) {
    this.layout = opts.layout ?? 'auto';
    this.nodeCgroup = opts.nodeCgroup;
    const roots = [opts.nodeCgroup, ...KUBEPODS_ROOTS.map((r) => join(opts.cgroup2, r))];
    this.kubepodsRoots = [...new Set(roots)];
  }

  /** the pod's cgroup and its containers' cgroups, or undefined while it cannot be found */
  resolve(uid: string): PodCgroup | undefined {
    if (!POD_UID.test(uid)) return undefined;
    const cached = this.cache.get(uid);
    if (cached) {
      const found = this.read(cached.kind, cached.dir);
      if (found) return found;
      this.cache.delete(uid);
    }
    for (const c of this.candidates(uid)) {
      if (!isDir(c.dir)) continue;
      const found = this.read(c.kind, c.dir);
      if (!found) continue;
      this.cache.set(uid, c);
      return found;
    }
    return undefined;
  }

  /** the cgroup ids to enroll for a pod (empty: not found yet); the shape enrollment takes */
  readonly ids = (pod: { uid: string }): bigint[] => this.resolve(pod.uid)?.containers.map((c) => c.id) ?? [];

  /** drop cached pods that are no longer local */
  retain(uids: Iterable<string>): void {
    const keep = new Set(uids);
    for (const uid of this.cache.keys()) if (!keep.has(uid)) this.cache.delete(uid);
  }

  get cached(): number {
    return this.cache.size;
  }

  private read(kind: PodCgroupKind, dir: string): PodCgroup | undefined {
    if (kind === 'sandbox') {
      // the sandbox runs a pod's processes in the pod cgroup itself
      const id = cgroupId(dir);
      return id === undefined ? undefined : { kind, dir, containers: [{ dir, id }] };
    }
    const containers = containerCgroups(dir);
    return containers === undefined ? undefined : { kind, dir, containers };
  }

  private candidates(uid: string): { kind: PodCgroupKind; dir: string }[] {
    const out: { kind: PodCgroupKind; dir: string }[] = [];
    if (this.layout !== 'kubelet') out.push({ kind: 'sandbox', dir: join(this.nodeCgroup, `pod-${uid}`) });
    if (this.layout !== 'sandbox') for (const root of this.kubepodsRoots) out.push(...kubeletCandidates(root, uid));
    return out;
  }
}

/** the sandbox layout alone: `<node cgroup>/pod-<uid>` */
export const sandboxCgroups = (nodeCgroup: string): PodCgroups => new PodCgroups({ cgroup2: nodeCgroup, nodeCgroup, layout: 'sandbox' });
