// `nodal dev apply` and `nodal dev delete`: a batch of manifests is read and checked as a
// whole (nothing changes when any object is wrong), then applied in order, namespaces
// first. Pods are placed, given an address, a netns and a cgroup, and started; every
// object lands in the control plane's config directory.
import { randomUUID } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { listObjects, objectExists, removeObject, writeObject } from './config.ts';
import { ManifestError, SandboxError, SandboxErrorCode } from './errors.ts';
import type { SandboxLayout } from './layout.ts';
import { objectKey, parseManifests, type Manifest } from './manifest.ts';
import { allocateClusterIp, allocatePodIp, schedule } from './plan.ts';
import {
  containersHash, createPodSandbox, deletePod, newPodRecord, podObject, startContainers, stopContainers,
} from './pods.ts';
import type { NodeRecord, PodRecord, SandboxState } from './state.ts';

export interface ApplyContext {
  state: SandboxState;
  layout: SandboxLayout;
  /** persist the state (called after every pod change, so a crash loses nothing) */
  save(): void;
}

export type Outcome = 'created' | 'configured' | 'unchanged' | 'restarted' | 'deleted' | 'not found';

export interface ObjectResult {
  kind: string;
  namespace?: string;
  name: string;
  outcome: Outcome;
  /** pods: node and address */
  detail?: string;
}

export function formatResult(r: ObjectResult): string {
  return `${objectKey(r)} ${r.outcome}${r.detail ? ` (${r.detail})` : ''}`;
}

const MANIFEST_FILE = /\.(ya?ml|json)$/;

/**
 * Read manifests from files and folders (a folder's .yaml/.yml/.json files, in name order,
 * not recursing, as kubectl does) or '-' for stdin; every file's problems are collected.
 */
export function loadManifestFiles(paths: readonly string[]): Manifest[] {
  const problems: string[] = [];
  const out: Manifest[] = [];
  const files: string[] = [];
  for (const p of paths) {
    if (p === '-') {
      files.push(p);
      continue;
    }
    let st;
    try {
      st = statSync(p);
    } catch {
      problems.push(`${p}: no such file or folder`);
      continue;
    }
    if (st.isDirectory()) {
      const found = readdirSync(p).filter((f) => MANIFEST_FILE.test(f)).sort().map((f) => join(p, f));
      if (found.length === 0) problems.push(`${p}: no .yaml, .yml or .json files in this folder`);
      files.push(...found);
    } else files.push(p);
  }
  for (const f of files) {
    const shown = f === '-' ? '<stdin>' : displayPath(f);
    try {
      out.push(...parseManifests(readFileSync(f === '-' ? 0 : f, 'utf8'), shown));
    } catch (err) {
      if (err instanceof ManifestError) problems.push(...err.problems);
      else problems.push(`${shown}: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) throw new ManifestError(problems);
  return out;
}

function displayPath(p: string): string {
  const rel = relative(process.cwd(), p);
  return rel.startsWith('..') ? p : rel;
}

/** namespaces first (objects need theirs), everything else in the order written */
function namespacesFirst(ms: readonly Manifest[]): Manifest[] {
  return [...ms.filter((m) => m.kind === 'Namespace'), ...ms.filter((m) => m.kind !== 'Namespace')];
}

function where(m: Manifest): string {
  return `${m.source} (${objectKey(m)})`;
}

function rejectDuplicates(ms: readonly Manifest[]): void {
  const seen = new Map<string, Manifest>();
  const problems: string[] = [];
  for (const m of ms) {
    const key = objectKey(m);
    const first = seen.get(key);
    if (first) problems.push(`${where(m)}: metadata.name: ${key} is also defined at ${first.source}`);
    else seen.set(key, m);
  }
  if (problems.length > 0) throw new ManifestError(problems);
}

interface PodPlan {
  manifest: Manifest;
  existing?: PodRecord;
  node: NodeRecord;
  ip: string;
}

/** place every new pod and check that updates keep what cannot change; all or nothing */
function planPods(ctx: ApplyContext, ms: readonly Manifest[]): Map<Manifest, PodPlan> {
  const { state } = ctx;
  const problems: string[] = [];
  const plans = new Map<Manifest, PodPlan>();
  const perNode = new Map<string, number>();
  const usedIps = new Set<string>(state.pods.map((p) => p.ip));
  for (const p of state.pods) perNode.set(p.node, (perNode.get(p.node) ?? 0) + 1);
  for (const m of ms) {
    const view = m.pod;
    if (!view) continue;
    const existing = state.pods.find((p) => p.namespace === m.namespace && p.name === m.name);
    if (existing) {
      if (view.nodeName !== undefined && view.nodeName !== existing.node) {
        problems.push(`${where(m)}: spec.nodeName: a pod cannot move (runs on ${existing.node}): delete it first`);
      } else if (view.requestedIp !== undefined && view.requestedIp !== existing.ip) {
        problems.push(`${where(m)}: metadata.annotations: a pod keeps its address (${existing.ip}): delete it first`);
      } else {
        plans.set(m, { manifest: m, existing, node: state.nodes.find((n) => n.name === existing.node)!, ip: existing.ip });
      }
      continue;
    }
    try {
      const node = schedule(view.nodeName, state.nodes, perNode) as NodeRecord;
      const ip = allocatePodIp(node.podCidr, usedIps, view.requestedIp);
      usedIps.add(ip);
      perNode.set(node.name, (perNode.get(node.name) ?? 0) + 1);
      plans.set(m, { manifest: m, node, ip });
    } catch (err) {
      if (!(err instanceof SandboxError)) throw err;
      problems.push(`${where(m)}: ${err.message}`);
    }
  }
  if (problems.length > 0) {
    throw new SandboxError(SandboxErrorCode.SCHEDULE, problems.length === 1 ? problems[0]! : `cannot place the pods:\n  ${problems.join('\n  ')}`);
  }
  return plans;
}

function planServices(ctx: ApplyContext, ms: readonly Manifest[]): Map<Manifest, string> {
  const problems: string[] = [];
  const taken = new Map(Object.entries(ctx.state.services).map(([k, ip]) => [ip, k]));
  const out = new Map<Manifest, string>();
  for (const m of ms) {
    if (!m.service) continue;
    const key = `${m.namespace}/${m.name}`;
    const wanted = m.service.clusterIp;
    if (wanted === 'None') {
      out.set(m, 'None');
      continue;
    }
    const holder = wanted !== undefined ? taken.get(wanted) : undefined;
    if (wanted !== undefined && holder !== undefined && holder !== key) {
      problems.push(`${where(m)}: spec.clusterIP: ${wanted} is already the address of Service ${holder}`);
      continue;
    }
    const ip = wanted ?? ctx.state.services[key] ?? allocateClusterIp(m.namespace!, m.name, taken.keys());
    taken.set(ip, key);
    out.set(m, ip);
  }
  if (problems.length > 0) throw new ManifestError(problems);
  return out;
}

function knownNamespaces(ctx: ApplyContext): Set<string> {
  return new Set(listObjects(ctx.layout.configDir).filter((o) => o.kind === 'Namespace').map((o) => o.name));
}

function requireNamespaces(ctx: ApplyContext, ms: readonly Manifest[]): void {
  const known = knownNamespaces(ctx);
  for (const m of ms) if (m.kind === 'Namespace') known.add(m.name);
  const problems = ms
    .filter((m) => m.namespace !== undefined && !known.has(m.namespace))
    .map((m) => `${where(m)}: metadata.namespace: namespace "${m.namespace}" does not exist: apply a Namespace named ${m.namespace} first (or in the same batch)`);
  if (problems.length > 0) throw new ManifestError(problems);
}

export async function applyManifests(ctx: ApplyContext, manifests: readonly Manifest[]): Promise<ObjectResult[]> {
  rejectDuplicates(manifests);
  const ordered = namespacesFirst(manifests);
  requireNamespaces(ctx, ordered);
  const pods = planPods(ctx, ordered);
  const services = planServices(ctx, ordered);
  const results: ObjectResult[] = [];
  for (const m of ordered) {
    const base = { kind: m.kind, name: m.name, ...(m.namespace !== undefined ? { namespace: m.namespace } : {}) };
    const pod = pods.get(m);
    if (pod) {
      results.push({ ...base, ...await applyPod(ctx, pod) });
      continue;
    }
    let object = m.object;
    if (m.kind === 'Namespace') {
      // the label Kubernetes sets on every namespace, which namespace selectors rely on
      const labels = { 'kubernetes.io/metadata.name': m.name, ...m.labels };
      object = { ...m.object, metadata: { ...(m.object.metadata as Record<string, unknown>), labels } };
    }
    const clusterIp = services.get(m);
    if (clusterIp !== undefined) {
      const spec: Record<string, unknown> = { ...(m.object.spec as Record<string, unknown>), clusterIP: clusterIp };
      if (clusterIp !== 'None') spec.clusterIPs = [clusterIp];
      object = { ...m.object, spec };
      if (clusterIp !== 'None') ctx.state.services[`${m.namespace}/${m.name}`] = clusterIp;
      ctx.save();
    }
    const outcome = writeObject(ctx.layout.configDir, m.kind, m.namespace, m.name, object);
    results.push({ ...base, outcome, ...(clusterIp && clusterIp !== 'None' ? { detail: clusterIp } : {}) });
  }
  return results;
}

async function applyPod(ctx: ApplyContext, plan: PodPlan): Promise<Pick<ObjectResult, 'outcome' | 'detail'>> {
  const { state, layout } = ctx;
  const m = plan.manifest;
  const view = m.pod!;
  const detail = `${plan.node.name}, ${plan.ip}`;
  let pod = plan.existing;
  let outcome: Outcome;
  if (!pod) {
    pod = newPodRecord(m, view, { uid: randomUUID(), node: plan.node, ip: plan.ip });
    state.pods.push(pod);
    ctx.save(); // recorded before anything is built: down can undo a half-built pod
    await createPodSandbox(pod, plan.node);
    startContainers(pod, view, plan.node, layout);
    outcome = 'created';
  } else if (pod.containersHash !== containersHash(view)) {
    await stopContainers(pod);
    startContainers(pod, view, plan.node, layout);
    outcome = 'restarted';
  } else {
    outcome = 'unchanged';
  }
  // labels and service account may change without a restart, as they do in Kubernetes
  pod.labels = m.labels;
  pod.serviceAccountName = view.serviceAccountName;
  ctx.save();
  const written = writeObject(layout.configDir, 'Pod', pod.namespace, pod.name, podObject(m, pod, plan.node));
  if (outcome === 'unchanged' && written !== 'unchanged') outcome = 'configured';
  return { outcome, detail };
}

async function removePod(ctx: ApplyContext, pod: PodRecord): Promise<void> {
  // the file goes first: the control plane withdraws the endpoint before its address is freed
  removeObject(ctx.layout.configDir, 'Pod', pod.namespace, pod.name);
  await deletePod(pod, ctx.state.nodes.find((n) => n.name === pod.node)?.netns);
  ctx.state.pods = ctx.state.pods.filter((p) => p !== pod);
  ctx.save();
}

/** delete objects; a Namespace takes everything in it along, as in Kubernetes */
export async function deleteManifests(ctx: ApplyContext, manifests: readonly Manifest[]): Promise<ObjectResult[]> {
  const results: ObjectResult[] = [];
  const ordered = namespacesFirst(manifests).reverse();
  for (const m of ordered) {
    const base = { kind: m.kind, name: m.name, ...(m.namespace !== undefined ? { namespace: m.namespace } : {}) };
    results.push({ ...base, outcome: await deleteObject(ctx, m.kind, m.namespace, m.name) });
  }
  return results;
}

export async function deleteObject(ctx: ApplyContext, kind: string, namespace: string | undefined, name: string): Promise<Outcome> {
  if (kind === 'Pod') {
    const pod = ctx.state.pods.find((p) => p.namespace === namespace && p.name === name);
    if (!pod) return removeObject(ctx.layout.configDir, kind, namespace, name) ? 'deleted' : 'not found';
    await removePod(ctx, pod);
    return 'deleted';
  }
  if (kind === 'Namespace') {
    if (!objectExists(ctx.layout.configDir, kind, undefined, name)) return 'not found';
    for (const pod of ctx.state.pods.filter((p) => p.namespace === name)) await removePod(ctx, pod);
    for (const o of listObjects(ctx.layout.configDir)) {
      if (o.namespace === name) await deleteObject(ctx, o.kind, o.namespace, o.name);
    }
  }
  if (kind === 'Service') {
    delete ctx.state.services[`${namespace}/${name}`];
    ctx.save();
  }
  return removeObject(ctx.layout.configDir, kind, namespace, name) ? 'deleted' : 'not found';
}
