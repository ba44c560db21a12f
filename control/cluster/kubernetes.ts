// Kubernetes source: @kubernetes/client-node informers (list, then watch from the list's
// resourceVersion) for every kind nodal reads, feeding the same validation, conversion and
// ClusterState as the directory source (kinds.ts), so everything after a source is one
// code path (DESIGN §7). What client-node does and what this adds:
//   - ListWatch relists on 410 Gone (HTTP 410, or an ERROR event with code 410) and
//     reconnects a watch the server ended; it STOPS on any other error (a failed list, a
//     refused watch, a reset connection). Here every stop is restarted with exponential
//     backoff and jitter, resuming from the last resourceVersion.
//   - Watches ask for bookmarks, so a quiet kind's resourceVersion keeps up and a
//     reconnect rarely needs a relist.
//   - Each kind lists and watches on its own: a slow or failing kind holds up nobody else
//     (start() does wait until every kind has listed once, as WaitForCacheSync does).
//   - Lists are paged and read as plain JSON, like the watch events.
// An object that fails validation keeps the last good version of it in force, is listed
// in errors(), and (MeshPolicy, TrafficPolicy) gets status condition Accepted=False naming
// the field; an HTTPRoute or GRPCRoute gets Gateway API status.parents[] entries
// (route-status.ts). Whether a TrafficPolicy or route is in force also depends on other
// objects (its Service, its backends, an older TrafficPolicy for the same Service), so
// their status is written at each commit, from the state just built.
// EndpointSlices go into ClusterState.endpointSlices (read from the informer's cache at
// each commit; they are no kinds.ts kind, the directory source has none). A kind that is
// watched but not in kinds.ts is cached (objects()) and triggers no rebuild; adding it to
// kinds.ts and state.ts makes it flow (the switch in #commit will not compile until it
// has a place in ClusterState).
import { KubeConfig, ListWatch, Watch, type KubernetesListObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ConfigError } from '../errors.ts';
import { stableStringify } from '../persist.ts';
import type { ClusterSource } from './directory.ts';
import { DEFAULT_BACKOFF, KubeApiError, KubeClient, backoffDelay, jittered, type BackoffOptions, type KubeObject } from './kube-http.ts';
import { KUBE_RESOURCES, collectionPath, objectKey, type KubeResource } from './kube-resources.ts';
import { ConditionWriter, type Verdict } from './kube-status.ts';
import { routeStatusWant, type RouteJudgement } from './route-status.ts';
import { routeRefs, serviceKeys, trafficPolicyVerdicts } from './traffic-refs.ts';
import { KINDS, parseDocument, type Typed } from './kinds.ts';
import { emptyClusterState, type ClusterState, type EndpointSliceObject } from './state.ts';

export interface KubernetesSourceOptions {
  logger: Logger;
  /** default KubeConfig.loadFromDefault(): in a pod the ServiceAccount, else $KUBECONFIG or ~/.kube/config */
  kubeConfig?: KubeConfig;
  /** a relist delivers hundreds of events at once: one rebuild after the burst */
  debounceMs?: number;
  /** re-judge every cached object this often (repairs status conditions someone else overwrote) */
  resyncMs?: number;
  /** restarts of a failed list/watch, and retries of status writes */
  backoff?: BackoffOptions;
  /** one API request (a list page, a status write); watches are long-lived and not bound by it */
  requestTimeoutMs?: number;
  /** whether this replica writes status conditions: leader election plugs in here (default: always) */
  writeStatus?: () => boolean;
  /** while start() waits for the first list of every kind, log the laggards this often */
  syncReportMs?: number;
}

/** one kind's informer, as status and tests see it */
export interface KindHealth {
  kind: string;
  /** listed at least once (start() waits for every kind) */
  synced: boolean;
  /** false while the server answers 404 for an optional kind (CRD not installed) */
  served: boolean;
  objects: number;
  /** the resourceVersion a watch would resume from */
  resourceVersion: string;
  bookmarks: number;
  /** consecutive failures; progress (a list, an event, an open watch) resets it */
  failures: number;
  restarts: number;
  /** nominal delays of the latest restarts, oldest first (at most 16) */
  backoffs: number[];
  lastError: string | undefined;
}

/** errors() names this as the "file" of a rejected object */
const SOURCE = 'kubernetes';
const KEPT_BACKOFFS = 16;

interface Held {
  object: Typed;
  generation: number | undefined;
}

interface Kind {
  r: KubeResource;
  informer: ListWatch<KubeObject>;
  /** the model reads it (an entry of kinds.ts) */
  reads: boolean;
  synced: boolean;
  served: boolean;
  bookmarks: number;
  failures: number;
  restarts: number;
  backoffs: number[];
  lastError: string | undefined;
  timer: NodeJS.Timeout | undefined;
}

/**
 * client-node's Watch, made to report failures through `done` as it does for every other
 * failure: it throws when authentication fails before the request (an exec plugin, an
 * expired file), and ListWatch, which calls it from a callback, would turn that into an
 * unhandled rejection. Also reports an open watch and each event (for backoff and
 * health), drops managedFields before the object is cached, and aborts a watch whose
 * answer arrives after close() (ListWatch.stop() cannot reach a request still connecting).
 */
class ReportingWatch extends Watch {
  readonly #o: { onOpen: () => void; onEvent: (phase: string) => void; closed: () => boolean };
  constructor(kc: KubeConfig, o: { onOpen: () => void; onEvent: (phase: string) => void; closed: () => boolean }) {
    super(kc);
    this.#o = o;
  }

  override async watch(path: string, query: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, obj: unknown, watchObj?: unknown) => void, done: (err: unknown) => void): Promise<AbortController> {
    let ended = false;
    const end = (err: unknown): void => {
      ended = true;
      done(err);
    };
    try {
      const controller = await super.watch(path, query, (phase, obj, w) => {
        this.#o.onEvent(phase);
        callback(phase, slim(obj as KubeObject), w);
      }, end);
      if (this.#o.closed()) controller.abort();
      else if (!ended) this.#o.onOpen();
      return controller;
    } catch (err) {
      end(err);
      return new AbortController();
    }
  }
}

/** managedFields is often the larger half of an object and nodal never reads it: not worth caching */
function slim(o: KubeObject): KubeObject {
  if (o?.metadata?.managedFields !== undefined) delete o.metadata.managedFields;
  return o;
}

/** API objects → the documents kinds.ts validates; undefined: not something nodal models */
function toDocument(r: KubeResource, obj: KubeObject): Record<string, unknown> | undefined {
  // list items of built-in kinds carry no kind/apiVersion; the server converted them to the version we asked for
  const doc: Record<string, unknown> = { ...obj, apiVersion: r.apiVersion, kind: r.kind };
  const spec = (obj.spec ?? {}) as Record<string, unknown>;
  // a host-network pod has the node's address and is the host, not a workload with an identity
  if (r.kind === 'Pod' && spec.hostNetwork === true) return undefined;
  // nodal carries TCP and UDP; an SCTP port must not make the whole Service invalid
  if (r.kind === 'Service' && Array.isArray(spec.ports)) {
    doc.spec = { ...spec, ports: spec.ports.filter((p) => { const proto = (p as { protocol?: unknown }).protocol; return proto === undefined || proto === 'TCP' || proto === 'UDP'; }) };
  }
  return doc;
}

const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/**
 * an EndpointSlice → what the model reads of it; undefined for one that belongs to no
 * Service. Read leniently: a malformed port or endpoint is left out, not the slice.
 */
export function toEndpointSlice(obj: KubeObject): EndpointSliceObject | undefined {
  const md = obj.metadata ?? {};
  const serviceName = (md as { labels?: Record<string, unknown> }).labels?.[SERVICE_NAME_LABEL];
  if (typeof serviceName !== 'string' || serviceName === '' || !md.namespace || !md.name) return undefined;
  const o = obj as unknown as { addressType?: unknown; ports?: unknown; endpoints?: unknown };
  const ports: EndpointSliceObject['ports'] = [];
  for (const p of Array.isArray(o.ports) ? o.ports as Array<Record<string, unknown>> : []) {
    if (typeof p?.port !== 'number') continue;
    const protocol = p.protocol === undefined ? 'TCP' : p.protocol;
    if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') continue;
    ports.push({ name: typeof p.name === 'string' ? p.name : '', port: p.port, protocol });
  }
  const endpoints: EndpointSliceObject['endpoints'] = [];
  for (const e of Array.isArray(o.endpoints) ? o.endpoints as Array<Record<string, unknown>> : []) {
    if (!Array.isArray(e?.addresses)) continue;
    const ready = (e.conditions as { ready?: unknown } | undefined)?.ready;
    const ref = e.targetRef as { kind?: unknown; name?: unknown; namespace?: unknown } | undefined;
    endpoints.push({
      addresses: e.addresses.filter((a): a is string => typeof a === 'string'),
      // Kubernetes: an unknown (absent) ready condition is to be read as ready
      ready: ready !== false,
      ...(ref?.kind === 'Pod' && typeof ref.name === 'string' && (ref.namespace === undefined || ref.namespace === md.namespace) ? { podName: ref.name } : {}),
      ...(typeof e.nodeName === 'string' ? { nodeName: e.nodeName } : {}),
    });
  }
  return {
    namespace: md.namespace, name: md.name, serviceName,
    addressType: typeof o.addressType === 'string' ? o.addressType : 'IPv4', ports, endpoints,
  };
}

/** kinds whose status depends on other objects too: judged at each commit, not per event */
const CROSS_REF_KINDS: ReadonlySet<string> = new Set(['HTTPRoute', 'GRPCRoute', 'TrafficPolicy']);

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));
const statusOf = (err: unknown): number => {
  const e = err as { statusCode?: unknown; code?: unknown } | undefined;
  return typeof e?.statusCode === 'number' ? e.statusCode : typeof e?.code === 'number' ? e.code : 0;
};

export class KubernetesSource implements ClusterSource {
  readonly #log: Logger;
  readonly #kc: KubeConfig;
  readonly #client: KubeClient;
  readonly #debounceMs: number;
  readonly #resyncMs: number;
  readonly #backoff: BackoffOptions;
  readonly #syncReportMs: number;
  readonly #kinds: Kind[];
  readonly #status: ConditionWriter;
  readonly #abort = new AbortController();
  readonly #sleeps = new Set<NodeJS.Timeout>();
  /** the objects in force, keyed kind/namespace/name as the directory source keys them */
  readonly #held = new Map<string, Held>();
  readonly #rejected = new Map<string, ConfigError>();
  /** the Accepted=False verdict of each rejected object, for kinds whose status is written at commit */
  readonly #invalid = new Map<string, Verdict>();
  #state: ClusterState = emptyClusterState();
  #stateKey = stableStringify(this.#state);
  #errorsKey = '[]';
  #onChange: (() => void) | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #resync: NodeJS.Timeout | undefined;
  #closed = false;
  #synced: { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void };

  constructor(opts: KubernetesSourceOptions) {
    this.#log = opts.logger.child({ component: 'kubernetes-source' });
    if (opts.kubeConfig) this.#kc = opts.kubeConfig;
    else {
      this.#kc = new KubeConfig();
      this.#kc.loadFromDefault();
    }
    this.#client = new KubeClient(this.#kc, { timeoutMs: opts.requestTimeoutMs ?? 60_000 });
    this.#debounceMs = opts.debounceMs ?? 100;
    this.#resyncMs = opts.resyncMs ?? 300_000;
    this.#backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.#syncReportMs = opts.syncReportMs ?? 10_000;
    let resolve!: () => void, reject!: (e: Error) => void;
    const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
    promise.catch(() => {}); // close() before start() must not leave an unhandled rejection
    this.#synced = { promise, resolve, reject };
    this.#status = new ConditionWriter({
      client: this.#client, logger: this.#log, backoff: this.#backoff,
      enabled: opts.writeStatus ?? (() => true),
      latest: (r, namespace, name) => this.#kinds.find((k) => k.r === r)?.informer.get(name, namespace || undefined),
    });
    this.#kinds = KUBE_RESOURCES.map((r) => this.#makeKind(r));
  }

  async start(onChange: () => void): Promise<void> {
    if (this.#closed) throw new Error('KubernetesSource: start() after close()');
    this.#log.info({ server: this.#client.server, kinds: this.#kinds.map((k) => k.r.kind) }, 'listing and watching the Kubernetes API');
    for (const k of this.#kinds) this.#run(k);
    const report = setInterval(() => {
      const waiting = this.#kinds.filter((k) => !k.synced).map((k) => ({ kind: k.r.kind, failures: k.failures, lastError: k.lastError }));
      this.#log.warn({ waiting }, 'still waiting for the first list of some kinds');
    }, this.#syncReportMs);
    report.unref();
    try {
      await this.#synced.promise;
    } finally {
      clearInterval(report);
    }
    this.#commit();
    this.#onChange = onChange;
    this.#resync = setInterval(() => this.resync(), this.#resyncMs);
    this.#resync.unref();
    this.#log.info({ objects: this.#held.size, rejected: this.#rejected.size }, 'initial state listed');
  }

  state(): ClusterState {
    return this.#state;
  }

  errors(): ConfigError[] {
    return [...this.#rejected.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, e]) => e);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#onChange = undefined;
    this.#synced.reject(new Error('KubernetesSource closed before the first list of every kind'));
    clearTimeout(this.#debounce);
    clearInterval(this.#resync);
    for (const t of this.#sleeps) clearTimeout(t);
    this.#sleeps.clear();
    this.#abort.abort();
    this.#status.close();
    for (const k of this.#kinds) clearTimeout(k.timer);
    await Promise.all(this.#kinds.map((k) => k.informer.stop()));
  }

  /**
   * judge every cached object again and re-check its status condition; runs every
   * resyncMs, and is what a new leader calls to take over status writing
   */
  resync(): void {
    if (this.#closed) return;
    for (const k of this.#kinds) {
      if (!k.reads) continue;
      for (const o of k.informer.list()) this.#upsert(k, o);
    }
  }

  health(): KindHealth[] {
    return this.#kinds.map((k) => ({
      kind: k.r.kind, synced: k.synced, served: k.served, objects: k.informer.list().length,
      resourceVersion: k.informer.latestResourceVersion(), bookmarks: k.bookmarks, failures: k.failures,
      restarts: k.restarts, backoffs: [...k.backoffs], lastError: k.lastError,
    }));
  }

  /** the cached objects of a kind as the API server sent them, also of the kinds the model does not read yet */
  objects(kind: string): readonly KubeObject[] {
    return this.#kinds.find((k) => k.r.kind === kind)?.informer.list() ?? [];
  }

  /** status writes in flight or waiting for a retry */
  get pendingStatusWrites(): number {
    return this.#status.pending;
  }

  #makeKind(r: KubeResource): Kind {
    const k = {
      r, reads: Object.hasOwn(KINDS, r.kind), synced: false, served: true, bookmarks: 0, failures: 0, restarts: 0,
      backoffs: [] as number[], lastError: undefined as string | undefined, timer: undefined as NodeJS.Timeout | undefined,
    } as Kind;
    const watch = new ReportingWatch(this.#kc, {
      onOpen: () => this.#progress(k),
      onEvent: (phase) => {
        if (phase === 'BOOKMARK') k.bookmarks++;
        if (phase !== 'ERROR') this.#progress(k);
      },
      closed: () => this.#closed,
    });
    const list = async (): Promise<KubernetesListObject<KubeObject>> => {
      try {
        const l = await this.#client.list(collectionPath(r), this.#abort.signal);
        l.items.forEach(slim);
        k.served = true;
        this.#progress(k);
        // ListWatch applies the items right after this promise settles; count the kind as
        // listed once that has happened
        setImmediate(() => this.#listed(k, l.items.length));
        return l as KubernetesListObject<KubeObject>;
      } catch (err) {
        if (!r.optional || statusOf(err) !== 404) throw err;
        if (k.served) this.#log.warn({ kind: r.kind, path: collectionPath(r) }, 'not served (CRD not installed?): taking it as none, and looking again with backoff');
        k.served = false;
        setImmediate(() => this.#listed(k, 0));
        // an empty list drops whatever was cached, e.g. after the CRD was removed
        return { metadata: { resourceVersion: '' }, items: [] };
      }
    };
    // bookmarks keep a quiet kind's resourceVersion fresh, so a reconnect rarely needs a relist
    k.informer = new ListWatch<KubeObject>(`${collectionPath(r)}?allowWatchBookmarks=true`, watch, list, false, undefined, undefined, {
      // ListWatch's own delay between reconnects of a watch that ended without events; capped like ours
      delayFn: (ms) => this.#sleep(Math.min(ms, this.#backoff.maxMs)),
    });
    k.informer.on('add', (o) => this.#upsert(k, o));
    k.informer.on('update', (o) => this.#upsert(k, o));
    k.informer.on('delete', (o) => this.#remove(k, o));
    k.informer.on('error', (err) => this.#failed(k, err));
    // EndpointSlices are not a kinds.ts kind (the directory source has none): #commit reads
    // them straight from the informer's cache, so a change only needs a rebuild
    if (r.kind === 'EndpointSlice') for (const ev of ['add', 'update', 'delete'] as const) k.informer.on(ev, () => this.#schedule());
    return k;
  }

  #run(k: Kind): void {
    k.informer.start().catch((err: unknown) => this.#failed(k, err));
  }

  /** a timer that close() cancels; a cancelled sleep never resolves, so nothing runs after close */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.#closed) return;
      const t = setTimeout(() => {
        this.#sleeps.delete(t);
        resolve();
      }, ms);
      this.#sleeps.add(t);
    });
  }

  #progress(k: Kind): void {
    k.failures = 0;
  }

  #listed(k: Kind, count: number): void {
    if (this.#closed || k.synced) return;
    k.synced = true;
    this.#log.debug({ kind: k.r.kind, objects: count }, 'listed');
    if (this.#kinds.every((x) => x.synced)) this.#synced.resolve();
  }

  /** ListWatch stopped (it does on anything but 410 and a clean end): start it again after a backoff */
  #failed(k: Kind, err: unknown): void {
    if (this.#closed || k.timer !== undefined) return;
    const status = statusOf(err);
    k.failures++;
    k.lastError = errorText(err);
    const delay = backoffDelay(k.failures, this.#backoff);
    k.backoffs.push(delay);
    if (k.backoffs.length > KEPT_BACKOFFS) k.backoffs.shift();
    const log = { kind: k.r.kind, status: status || undefined, failures: k.failures, retryInMs: delay, err: err instanceof KubeApiError ? err.message : errorText(err) };
    if (k.r.optional && !k.served && status === 404) this.#log.debug(log, 'still not served');
    else if (status === 401 || status === 403) this.#log.error(log, 'the API server refused: check credentials and RBAC');
    else this.#log.warn(log, 'list/watch failed; restarting with backoff');
    k.timer = setTimeout(() => {
      k.timer = undefined;
      if (this.#closed) return;
      k.restarts++;
      this.#run(k);
    }, jittered(delay));
  }

  #upsert(k: Kind, obj: KubeObject): void {
    if (!k.reads || this.#closed) return;
    const md = obj.metadata ?? {};
    const namespace = k.r.namespaced ? md.namespace ?? '' : '';
    const key = objectKey(k.r.kind, namespace, md.name ?? '');
    const doc = toDocument(k.r, obj);
    const parsed = doc === undefined ? undefined : parseDocument(doc, SOURCE, 0);
    let verdict: Verdict | undefined;
    this.#invalid.delete(key);
    if (parsed === undefined || parsed.result === 'skip') {
      this.#held.delete(key);
      this.#rejected.delete(key);
    } else if (parsed.result === 'ok') {
      this.#held.set(key, { object: parsed.object, generation: md.generation });
      this.#rejected.delete(key);
      verdict = { status: 'True', reason: 'Accepted', message: 'in force' };
    } else {
      this.#rejected.set(key, parsed.error);
      const kept = this.#held.get(key);
      const where = [parsed.error.field, parsed.error.reason].filter((p) => p !== undefined && p !== '').join(': ');
      verdict = {
        status: 'False', reason: 'Invalid',
        message: `${where}; ${kept ? `the last accepted version${kept.generation !== undefined ? ` (generation ${kept.generation})` : ''} stays in force` : 'not in force'}`,
      };
    }
    if (CROSS_REF_KINDS.has(k.r.kind)) {
      if (verdict?.status === 'False') this.#invalid.set(key, verdict);
    } else if (k.r.conditions && verdict) {
      this.#status.reconcile(k.r, obj, verdict);
    }
    this.#schedule();
  }

  #remove(k: Kind, obj: KubeObject): void {
    if (!k.reads || this.#closed) return;
    const md = obj.metadata ?? {};
    const namespace = k.r.namespaced ? md.namespace ?? '' : '';
    this.#held.delete(objectKey(k.r.kind, namespace, md.name ?? ''));
    this.#rejected.delete(objectKey(k.r.kind, namespace, md.name ?? ''));
    this.#invalid.delete(objectKey(k.r.kind, namespace, md.name ?? ''));
    this.#status.forget(k.r, namespace, md.name ?? '');
    this.#schedule();
  }

  #schedule(): void {
    if (this.#onChange === undefined) return; // before start() resolves: the initial commit covers it
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => this.#commit(), this.#debounceMs);
  }

  /** the held objects → ClusterState, in key order as the directory source builds it; onChange when it or the errors changed */
  #commit(): void {
    const state = emptyClusterState();
    for (const key of [...this.#held.keys()].sort()) {
      const o = this.#held.get(key)!.object;
      switch (o.kind) {
        case 'Namespace': state.namespaces.push(o.value); break;
        case 'Pod': state.pods.push(o.value); break;
        case 'Service': state.services.push(o.value); break;
        case 'Node': state.nodes.push(o.value); break;
        case 'MeshPolicy': state.policies.push(o.value); break;
        case 'NetworkPolicy': (state.networkPolicies ??= []).push(o.value); break;
        case 'HTTPRoute': case 'GRPCRoute': (state.routes ??= []).push(o.value); break;
        case 'TrafficPolicy': (state.trafficPolicies ??= []).push(o.value); break;
        default: {
          const unplaced: never = o;
          throw new Error(`KubernetesSource: no ClusterState field for ${(unplaced as Typed).kind}`);
        }
      }
    }
    const slices = (this.#kinds.find((k) => k.r.kind === 'EndpointSlice')?.informer.list() ?? [])
      .map(toEndpointSlice).filter((e): e is EndpointSliceObject => e !== undefined)
      .sort((a, b) => (a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (slices.length > 0) state.endpointSlices = slices;
    const errors = this.errors();
    const errorsKey = stableStringify(errors.map((e) => e.message));
    const known = new Set((JSON.parse(this.#errorsKey) as string[]));
    for (const e of errors) {
      if (!known.has(e.message)) this.#log.error({ code: e.code, object: e.object, field: e.field }, `rejected: ${e.message}`);
    }
    const key = stableStringify(state);
    const changed = key !== this.#stateKey || errorsKey !== this.#errorsKey;
    if (key !== this.#stateKey) this.#log.info({ objects: this.#held.size, errors: errors.length }, 'cluster state changed');
    this.#state = state;
    this.#stateKey = key;
    this.#errorsKey = errorsKey;
    this.#reportCrossRefs(state);
    if (changed) this.#onChange?.();
  }

  /** status of routes and TrafficPolicies, judged against the state just built */
  #reportCrossRefs(state: ClusterState): void {
    const services = serviceKeys(state.services);
    const tp = trafficPolicyVerdicts(state.trafficPolicies ?? [], services);
    for (const k of this.#kinds) {
      if (!CROSS_REF_KINDS.has(k.r.kind)) continue;
      for (const obj of k.informer.list()) {
        const md = obj.metadata ?? {};
        const key = objectKey(k.r.kind, md.namespace ?? '', md.name ?? '');
        const invalid = this.#invalid.get(key), held = this.#held.get(key)?.object;
        if (k.r.kind === 'TrafficPolicy') {
          if (invalid) this.#status.reconcile(k.r, obj, invalid);
          else if (held?.kind === 'TrafficPolicy') {
            const v = tp.get(`${held.value.namespace}/${held.value.name}`);
            this.#status.reconcile(k.r, obj, v?.inForce === false
              ? { status: 'False', reason: v.reason, message: v.message }
              : { status: 'True', reason: 'Accepted', message: 'in force' });
          }
        } else {
          const judged: RouteJudgement | undefined = invalid ? { valid: false, message: invalid.message }
            : held?.kind === 'HTTPRoute' || held?.kind === 'GRPCRoute' ? { valid: true, refs: routeRefs(held.value, services) } : undefined;
          this.#status.reconcileStatus(k.r, obj, routeStatusWant(obj, judged));
        }
      }
    }
  }
}
