// The storage half of the fake Kubernetes API server: the resources it serves, the
// objects with one global, monotonically increasing resourceVersion (as etcd's revision),
// a bounded history of watch events that a compaction can cut (so an old resourceVersion
// gets 410 Gone), and the server-side rules a client relies on: generated uid and
// timestamps, optimistic concurrency on resourceVersion, metadata.generation that moves
// only with the spec, and a status subresource split from the main resource.
import { randomUUID } from 'node:crypto';

export interface FakeResource {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  /** PUT/PATCH on the main resource keep status; only .../status changes it */
  statusSubresource: boolean;
  /** built-in kinds: items of a List carry no kind/apiVersion (CRDs, served unstructured, do) */
  builtin: boolean;
}

export const FAKE_RESOURCES: readonly FakeResource[] = [
  { group: '', version: 'v1', kind: 'Namespace', plural: 'namespaces', namespaced: false, statusSubresource: true, builtin: true },
  { group: '', version: 'v1', kind: 'Pod', plural: 'pods', namespaced: true, statusSubresource: true, builtin: true },
  { group: '', version: 'v1', kind: 'Service', plural: 'services', namespaced: true, statusSubresource: true, builtin: true },
  { group: '', version: 'v1', kind: 'Node', plural: 'nodes', namespaced: false, statusSubresource: true, builtin: true },
  { group: 'discovery.k8s.io', version: 'v1', kind: 'EndpointSlice', plural: 'endpointslices', namespaced: true, statusSubresource: false, builtin: true },
  { group: 'networking.k8s.io', version: 'v1', kind: 'NetworkPolicy', plural: 'networkpolicies', namespaced: true, statusSubresource: false, builtin: true },
  { group: 'gateway.networking.k8s.io', version: 'v1', kind: 'HTTPRoute', plural: 'httproutes', namespaced: true, statusSubresource: true, builtin: false },
  { group: 'gateway.networking.k8s.io', version: 'v1', kind: 'GRPCRoute', plural: 'grpcroutes', namespaced: true, statusSubresource: true, builtin: false },
  { group: 'nodal.io', version: 'v1alpha1', kind: 'MeshPolicy', plural: 'meshpolicies', namespaced: true, statusSubresource: true, builtin: false },
  { group: 'nodal.io', version: 'v1alpha1', kind: 'TrafficPolicy', plural: 'trafficpolicies', namespaced: true, statusSubresource: true, builtin: false },
  // leader election (control/cluster/lease.ts): updates carry the resourceVersion read, so a stale one is a 409
  { group: 'coordination.k8s.io', version: 'v1', kind: 'Lease', plural: 'leases', namespaced: true, statusSubresource: false, builtin: true },
  // allocated identities (control/model/ids-kubernetes.ts): cluster-scoped; a create on a taken name is a 409
  { group: 'nodal.io', version: 'v1alpha1', kind: 'NodalIdentity', plural: 'nodalidentities', namespaced: false, statusSubresource: false, builtin: false },
];

export const apiVersionOf = (r: FakeResource): string => (r.group === '' ? r.version : `${r.group}/${r.version}`);

export interface Meta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [k: string]: unknown;
}

export interface KubeObj {
  apiVersion?: string;
  kind?: string;
  metadata: Meta;
  [k: string]: unknown;
}

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  rv: number;
  resource: FakeResource;
  type: EventType;
  object: KubeObj;
}

/** a Kubernetes Status failure, as the API server writes it */
export class StatusError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: number, reason: string, message: string, details?: Record<string, unknown>) {
    super(message);
    this.code = code;
    this.reason = reason;
    this.details = details;
  }
  toStatus(): Record<string, unknown> {
    return {
      kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: this.message, reason: this.reason,
      ...(this.details ? { details: this.details } : {}), code: this.code,
    };
  }
}

const clone = <T>(v: T): T => structuredClone(v);
const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
/** the API server's timestamps have second precision */
const now = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

/** RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else replaces */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return clone(patch);
  const out: Record<string, unknown> = isObj(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** JSON with sorted keys: equal content compares equal whatever the key order */
const stable = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) =>
  (isObj(x) ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, x[k]])) : x));

/** everything but metadata and status: what metadata.generation counts changes of */
const specOf = (o: KubeObj): string => stable(Object.fromEntries(Object.entries(o).filter(([k]) => k !== 'metadata' && k !== 'status' && k !== 'kind' && k !== 'apiVersion')));

const keyOf = (namespace: string, name: string): string => `${namespace}/${name}`;

export class FakeStore {
  /** etcd starts well above 1 on a real cluster; so do we, so nothing relies on small numbers */
  #rv = 1000;
  /** events at or below this revision are gone: a watch from an older one gets 410 */
  #compacted = 0;
  readonly #objects = new Map<string, Map<string, KubeObj>>();
  #history: StoreEvent[] = [];
  readonly #listeners = new Set<(e: StoreEvent) => void>();

  constructor() {
    for (const r of FAKE_RESOURCES) this.#objects.set(r.plural, new Map());
  }

  get resourceVersion(): number {
    return this.#rv;
  }

  get compactedRevision(): number {
    return this.#compacted;
  }

  subscribe(fn: (e: StoreEvent) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** drop the history up to now, as etcd compaction does */
  compact(): void {
    this.#compacted = this.#rv;
    this.#history = [];
  }

  /** events after `rv` for a resource; undefined when that revision is compacted away */
  since(resource: FakeResource, rv: number): StoreEvent[] | undefined {
    if (rv < this.#compacted) return undefined;
    return this.#history.filter((e) => e.rv > rv && e.resource === resource);
  }

  list(resource: FakeResource, namespace?: string): KubeObj[] {
    const all = [...this.#objects.get(resource.plural)!.values()];
    return all.filter((o) => namespace === undefined || o.metadata.namespace === namespace)
      .sort((a, b) => (keyOf(a.metadata.namespace ?? '', a.metadata.name) < keyOf(b.metadata.namespace ?? '', b.metadata.name) ? -1 : 1))
      .map(clone);
  }

  get(resource: FakeResource, namespace: string, name: string): KubeObj | undefined {
    const o = this.#objects.get(resource.plural)!.get(keyOf(namespace, name));
    return o ? clone(o) : undefined;
  }

  create(resource: FakeResource, namespace: string, body: KubeObj): KubeObj {
    const name = body.metadata?.name;
    if (typeof name !== 'string' || name === '') throw new StatusError(422, 'Invalid', `${resource.kind} is invalid: metadata.name: Required value: name is required`);
    const map = this.#objects.get(resource.plural)!;
    if (map.has(keyOf(namespace, name))) {
      throw new StatusError(409, 'AlreadyExists', `${resource.plural}${resource.group ? `.${resource.group}` : ''} "${name}" already exists`, this.#details(resource, name));
    }
    const obj: KubeObj = clone(body);
    obj.apiVersion = apiVersionOf(resource);
    obj.kind = resource.kind;
    // system fields are the server's, whatever the client sent
    obj.metadata = {
      ...obj.metadata, name, uid: randomUUID(), creationTimestamp: now(), generation: 1,
      ...(resource.namespaced ? { namespace } : {}),
    };
    if (!resource.namespaced) delete obj.metadata.namespace;
    return this.#commit(resource, 'ADDED', obj);
  }

  /**
   * replace an object (PUT). `subresource` 'status' changes only status; the main resource
   * keeps status when the kind has a status subresource; 'all' (the test's own writes, as
   * kubelet and controllers together would make them) replaces both in one event. A body
   * resourceVersion must match.
   */
  update(resource: FakeResource, namespace: string, name: string, body: KubeObj, subresource?: 'status' | 'all'): KubeObj {
    const old = this.#existing(resource, namespace, name);
    const sent = body.metadata?.resourceVersion;
    if (sent !== undefined && sent !== '' && sent !== old.metadata.resourceVersion) {
      throw new StatusError(409, 'Conflict',
        `Operation cannot be fulfilled on ${resource.plural}${resource.group ? `.${resource.group}` : ''} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        this.#details(resource, name));
    }
    let next: KubeObj;
    if (subresource === 'status') {
      next = clone(old);
      if (body.status === undefined) delete next.status;
      else next.status = clone(body.status);
    } else {
      next = clone(body);
      next.metadata = { ...clone(body.metadata ?? {}), name, uid: old.metadata.uid, creationTimestamp: old.metadata.creationTimestamp, generation: old.metadata.generation };
      if (resource.namespaced) next.metadata.namespace = namespace;
      if (resource.statusSubresource && subresource !== 'all') {
        if (old.status === undefined) delete next.status;
        else next.status = clone(old.status);
      }
      if (specOf(next) !== specOf(old)) next.metadata.generation = (old.metadata.generation ?? 0) + 1;
    }
    next.apiVersion = apiVersionOf(resource);
    next.kind = resource.kind;
    if (stable({ ...next, metadata: { ...next.metadata, resourceVersion: '' } }) === stable({ ...old, metadata: { ...old.metadata, resourceVersion: '' } })) {
      return clone(old); // a no-op write does not bump resourceVersion, as on a real server
    }
    return this.#commit(resource, 'MODIFIED', next);
  }

  /** JSON merge patch; a resourceVersion in the patch is a precondition, as on a real server */
  patch(resource: FakeResource, namespace: string, name: string, patch: unknown, subresource?: 'status'): KubeObj {
    const old = this.#existing(resource, namespace, name);
    const merged = mergePatch(old, patch) as KubeObj;
    const sent = isObj(patch) && isObj(patch.metadata) ? patch.metadata.resourceVersion : undefined;
    merged.metadata = { ...merged.metadata, resourceVersion: typeof sent === 'string' ? sent : old.metadata.resourceVersion! };
    return this.update(resource, namespace, name, merged, subresource);
  }

  delete(resource: FakeResource, namespace: string, name: string): KubeObj {
    const old = this.#existing(resource, namespace, name);
    this.#objects.get(resource.plural)!.delete(keyOf(namespace, name));
    return this.#commit(resource, 'DELETED', old);
  }

  #existing(resource: FakeResource, namespace: string, name: string): KubeObj {
    const o = this.#objects.get(resource.plural)!.get(keyOf(namespace, name));
    if (!o) throw new StatusError(404, 'NotFound', `${resource.plural}${resource.group ? `.${resource.group}` : ''} "${name}" not found`, this.#details(resource, name));
    return o;
  }

  #details(resource: FakeResource, name: string): Record<string, unknown> {
    return { name, ...(resource.group ? { group: resource.group } : {}), kind: resource.plural };
  }

  #commit(resource: FakeResource, type: EventType, obj: KubeObj): KubeObj {
    this.#rv += 1;
    obj.metadata.resourceVersion = String(this.#rv);
    const map = this.#objects.get(resource.plural)!;
    if (type !== 'DELETED') map.set(keyOf(obj.metadata.namespace ?? '', obj.metadata.name), obj);
    const event: StoreEvent = { rv: this.#rv, resource, type, object: clone(obj) };
    this.#history.push(event);
    for (const fn of this.#listeners) fn(event);
    return clone(obj);
  }
}
