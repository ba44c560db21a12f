// Identity ids stored in the cluster (DESIGN §4, §7: "all durable state lives in the
// cluster"): one cluster-scoped NodalIdentity `id-<n>` per allocated id, spec {id,
// namespace, serviceAccount, labels}, the exact allocator key in the annotation
// nodal.io/identity-key. Service and policy ids stay in the state directory's file
// (PersistentIds): only identities are carried by every node's maps and ipcache.
//
// Who writes: only the leader creates and deletes NodalIdentity objects. Every replica
// (leader or follower) reads them — a list at start, then again every refresh period and
// at once whenever a build asked for a key that has no id yet — so both replicas hand
// out the same ids. A build that needs an id nobody has allocated yet reports it through
// missing(); the control plane then holds that build back (keeps serving the previous
// snapshots) and rebuilds when the ids change: on the leader after its own create, on a
// follower after the leader's object shows up in a refresh. No snapshot ever carries an
// id that is not in the cluster, so a restart or a failover can never move an id.
//
// Uniqueness: the object name is the id, and a create on a taken name is a 409, so two
// allocators (a leader and a deposed leader that has not noticed yet) can never give one
// id to two keys; the loser re-reads and tries the next number. They can give one key
// two ids: every reader then takes the lowest, and the other object is garbage.
// Garbage collection (leader only): an object whose key the current build does not use and
// no build of this process asked for during the grace period (default 10 min, counted from this process's start for keys
// it never saw) is deleted — except the highest id, which stays as the high-water mark
// so that an id is never handed out again after a restart (a stale map entry must never
// make one workload look like another).
// Keys that are not workload identities (NetworkPolicy ipBlock CIDR identities,
// `cidr:<prefix>`) are stored with namespace and serviceAccount "-" and the key in the
// annotation.
import type { Logger } from 'pino';
import { FIRST_ALLOCATED_IDENTITY } from '../api/types.ts';
import { DEFAULT_BACKOFF, KubeApiError, backoffDelay, jittered, type KubeClient, type KubeObject } from '../cluster/kube-http.ts';
import type { IdAllocator, IdKind } from './ids.ts';

export const NODAL_IDENTITIES_PATH = '/apis/nodal.io/v1alpha1/nodalidentities';
export const IDENTITY_KEY_ANNOTATION = 'nodal.io/identity-key';
/** long enough to ride out a rollout or a node drain without renumbering; short enough that churn does not pile up objects */
export const DEFAULT_IDENTITY_GC_GRACE_MS = 10 * 60_000;
/** how often every replica re-reads the identities (also at once when a build misses one) */
export const DEFAULT_IDENTITY_REFRESH_MS = 5_000;
/** how often the leader looks for garbage */
export const DEFAULT_IDENTITY_GC_INTERVAL_MS = 60_000;

/** what the control plane needs beyond IdAllocator: flush before a snapshot leaves, and hold back builds that miss ids */
export interface IdStore extends IdAllocator {
  flush(): void;
  /** a build starts: forget the previous build's misses */
  startBuild?(): void;
  /** identity keys the build since startBuild() asked for that have no id yet */
  missing?(): number;
  /** fn runs when ids changed (allocated, seen from another replica, collected) */
  onChange?(fn: () => void): void;
}

interface IdentitySpec {
  id?: number;
  namespace?: string;
  serviceAccount?: string;
  labels?: Record<string, string>;
}

type IdentityObject = KubeObject & { spec?: IdentitySpec };

export interface KubernetesIdsOptions {
  client: KubeClient;
  logger: Logger;
  /** who may create and delete: the leader */
  isLeader: () => boolean;
  /** service and policy ids (and flush) go here: the state directory's PersistentIds */
  files: IdAllocator & { flush(): void };
  gcGraceMs?: number;
  gcIntervalMs?: number;
  refreshMs?: number;
}

/** the spec for a key: a workload key is identityKey()'s JSON [namespace, serviceAccount, [[label, value], ...]] */
export function specForKey(key: string): Omit<IdentitySpec, 'id'> {
  try {
    const v = JSON.parse(key) as unknown;
    if (Array.isArray(v) && v.length === 3 && typeof v[0] === 'string' && v[0] !== '' && typeof v[1] === 'string' && v[1] !== '' && Array.isArray(v[2])) {
      const labels: Record<string, string> = {};
      for (const pair of v[2] as unknown[]) {
        if (Array.isArray(pair) && typeof pair[0] === 'string' && typeof pair[1] === 'string') labels[pair[0]] = pair[1];
      }
      return { namespace: v[0], serviceAccount: v[1], labels };
    }
  } catch {
    // not JSON: a non-workload key
  }
  return { namespace: '-', serviceAccount: '-', labels: {} };
}

/** the key an object stands for: the annotation, else rebuilt from the spec as identityKey() would */
function keyOf(o: IdentityObject): string | undefined {
  const a = o.metadata?.annotations?.[IDENTITY_KEY_ANNOTATION];
  if (typeof a === 'string' && a !== '') return a;
  const s = o.spec;
  if (!s?.namespace || !s.serviceAccount) return undefined;
  const labels = s.labels ?? {};
  return JSON.stringify([s.namespace, s.serviceAccount, Object.keys(labels).sort().map((k) => [k, labels[k]])]);
}

export const identityObjectName = (id: number): string => `id-${id}`;

export class KubernetesIds implements IdStore {
  readonly #client: KubeClient;
  readonly #log: Logger;
  readonly #isLeader: () => boolean;
  readonly #files: IdAllocator & { flush(): void };
  readonly #graceMs: number;
  readonly #gcEveryMs: number;
  readonly #refreshMs: number;
  readonly #started = Date.now();
  /** key → id, the lowest id when a key has several objects */
  #ids = new Map<string, number>();
  /** id → object name and key, everything listed */
  #objects = new Map<number, { name: string; key: string | undefined }>();
  #maxId = FIRST_ALLOCATED_IDENTITY - 1;
  readonly #lastUsed = new Map<string, number>();
  #missed = new Set<string>();
  /** the keys of the build in progress or last built: in use whatever the clock says */
  #current = new Set<string>();
  readonly #listeners: Array<() => void> = [];
  readonly #stop = new AbortController();
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #kicked = false;
  #lastGc = 0;

  constructor(opts: KubernetesIdsOptions) {
    this.#client = opts.client;
    this.#log = opts.logger.child({ component: 'identities' });
    this.#isLeader = opts.isLeader;
    this.#files = opts.files;
    this.#graceMs = opts.gcGraceMs ?? DEFAULT_IDENTITY_GC_GRACE_MS;
    this.#gcEveryMs = opts.gcIntervalMs ?? DEFAULT_IDENTITY_GC_INTERVAL_MS;
    this.#refreshMs = opts.refreshMs ?? DEFAULT_IDENTITY_REFRESH_MS;
  }

  /**
   * the first list, retried with backoff until it succeeds (the API server may be coming up
   * with the control plane) or close(); then the background loop
   */
  async start(): Promise<void> {
    for (let failures = 1; ; failures++) {
      try {
        await this.refresh();
        break;
      } catch (err) {
        if (this.#stop.signal.aborted) throw err;
        const ms = jittered(backoffDelay(failures, DEFAULT_BACKOFF));
        this.#log.warn({ err, failures, retryInMs: ms }, 'could not list NodalIdentity objects (is the CRD installed? RBAC?); retrying');
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, ms);
          this.#wake = () => { clearTimeout(t); resolve(); };
        });
        this.#wake = undefined;
      }
    }
    this.#loop ??= this.#run();
  }

  async close(): Promise<void> {
    this.#stop.abort();
    this.#wake?.();
    await this.#loop;
    this.#listeners.length = 0;
  }

  id(kind: IdKind, key: string): number {
    if (kind !== 'identities') return this.#files.id(kind, key);
    this.#lastUsed.set(key, Date.now());
    this.#current.add(key);
    const v = this.#ids.get(key);
    if (v !== undefined) return v;
    this.#missed.add(key);
    if (this.#missed.size === 1) this.kick();
    // a placeholder: a build that missed ids is not published (missing() > 0)
    return 0;
  }

  flush(): void {
    this.#files.flush();
  }

  startBuild(): void {
    this.#missed = new Set();
    this.#current = new Set();
  }

  missing(): number {
    return this.#missed.size;
  }

  onChange(fn: () => void): void {
    this.#listeners.push(fn);
  }

  /** the identities as this replica knows them: key → id */
  known(): ReadonlyMap<string, number> {
    return this.#ids;
  }

  /** run the loop's round now (a miss, or the leadership changed) */
  kick(): void {
    this.#kicked = true;
    this.#wake?.();
  }

  /** re-read every NodalIdentity; true when the key → id map changed */
  async refresh(): Promise<boolean> {
    const list = await this.#client.list(NODAL_IDENTITIES_PATH, this.#stop.signal);
    const ids = new Map<string, number>();
    const objects = new Map<number, { name: string; key: string | undefined }>();
    let max = this.#maxId;
    for (const o of list.items as IdentityObject[]) {
      const id = o.spec?.id;
      const name = o.metadata?.name;
      if (!Number.isInteger(id) || id! < FIRST_ALLOCATED_IDENTITY || !name) {
        this.#log.warn({ name, id }, 'ignoring a NodalIdentity without a valid spec.id');
        continue;
      }
      const key = keyOf(o);
      objects.set(id!, { name, key });
      max = Math.max(max, id!);
      if (key === undefined) continue;
      const prev = ids.get(key);
      if (prev === undefined || id! < prev) ids.set(key, id!);
    }
    this.#objects = objects;
    this.#maxId = max;
    const changed = ids.size !== this.#ids.size || [...ids].some(([k, v]) => this.#ids.get(k) !== v);
    this.#ids = ids;
    return changed;
  }

  /** leader: a NodalIdentity for every missed key; true when any was created */
  async allocate(): Promise<boolean> {
    let created = false;
    for (const key of [...this.#missed]) {
      if (this.#stop.signal.aborted || !this.#isLeader()) break;
      if (this.#ids.has(key)) continue;
      for (let attempt = 0; ; attempt++) {
        const id = this.#maxId + 1;
        const body: IdentityObject = {
          apiVersion: 'nodal.io/v1alpha1', kind: 'NodalIdentity',
          metadata: { name: identityObjectName(id), annotations: { [IDENTITY_KEY_ANNOTATION]: key } },
          spec: { id, ...specForKey(key) },
        };
        try {
          await this.#client.request('POST', NODAL_IDENTITIES_PATH, { body, signal: this.#stop.signal });
        } catch (err) {
          if (err instanceof KubeApiError && err.statusCode === 409 && attempt < 100) {
            // another replica took this number: see what it made (perhaps this very key), then the next number
            this.#maxId = Math.max(this.#maxId, id);
            await this.refresh();
            if (this.#ids.has(key)) break;
            continue;
          }
          throw err;
        }
        this.#maxId = id;
        this.#objects.set(id, { name: identityObjectName(id), key });
        if (!this.#ids.has(key)) this.#ids.set(key, id);
        created = true;
        this.#log.info({ id, key }, 'allocated an identity');
        break;
      }
    }
    return created;
  }

  /** leader: delete identities no build asked for during the grace period (never the highest id); returns how many */
  async collect(now = Date.now()): Promise<number> {
    if (!this.#isLeader()) return 0;
    let deleted = 0;
    for (const [id, o] of [...this.#objects]) {
      if (id === this.#maxId) continue;
      const used = o.key === undefined ? undefined : this.#lastUsed.get(o.key);
      // a duplicate (not the id its key resolves to) is garbage as soon as it is past the grace period too
      const inUse = o.key !== undefined && this.#ids.get(o.key) === id;
      if (inUse && this.#current.has(o.key!)) continue;
      const since = inUse ? used ?? this.#started : this.#started;
      if (now - since < this.#graceMs) continue;
      if (this.#stop.signal.aborted || !this.#isLeader()) break;
      try {
        await this.#client.request('DELETE', `${NODAL_IDENTITIES_PATH}/${encodeURIComponent(o.name)}`, { signal: this.#stop.signal });
      } catch (err) {
        if (!(err instanceof KubeApiError && err.statusCode === 404)) throw err;
      }
      this.#objects.delete(id);
      if (o.key !== undefined && this.#ids.get(o.key) === id) {
        this.#ids.delete(o.key);
        this.#lastUsed.delete(o.key);
      }
      deleted++;
      this.#log.info({ id, key: o.key }, 'collected an unused identity');
    }
    return deleted;
  }

  /** one round: refresh; the leader allocates what builds missed and now and then collects */
  async round(): Promise<boolean> {
    let changed = await this.refresh();
    if (this.#isLeader()) {
      if (this.#missed.size > 0 && (await this.allocate())) changed = true;
      if (Date.now() - this.#lastGc >= this.#gcEveryMs) {
        this.#lastGc = Date.now();
        if ((await this.collect()) > 0) changed = true;
      }
    }
    return changed;
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#stop.signal.aborted) {
      this.#kicked = false;
      try {
        if (await this.round()) for (const fn of this.#listeners) fn();
        failures = 0;
      } catch (err) {
        if (this.#stop.signal.aborted) break;
        failures++;
        this.#log.warn({ err, failures }, 'could not read or write NodalIdentity objects; retrying');
      }
      // while a build waits for ids, poll faster: a follower waits for the leader's create
      const wait = this.#missed.size > 0 ? Math.min(this.#refreshMs, 500 * Math.min(failures + 1, 4)) : this.#refreshMs;
      if (this.#kicked && failures === 0) continue;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, wait);
        this.#wake = () => { clearTimeout(t); resolve(); };
      });
      this.#wake = undefined;
    }
  }
}
