// The agent's own writes to the Kubernetes API (agent --kubernetes; DESIGN §6, §9): it
// publishes its WireGuard public key on its Node (annotation nodal.io/wg-pub-key, which
// the control plane reads when no Hello reported a key) and marks the local pods whose
// redirection is in place (annotation nodal.io/redirected=<the snapshot version that
// enrolled the pod>), removing the mark when a pod is no longer enrolled.
//
// Desired state in, JSON merge patches out: set() and enrolled() only record what should
// be and never wait, so the data path is never held up by the API server. A few patches
// run at a time; a failed one is retried with capped exponential backoff; nothing is
// written that was already written (the annotator remembers what it wrote). After a
// restart it knows nothing, so each local pod gets one patch (the mark, or its removal:
// a pod marked by the previous run may have left the mesh meanwhile).
//
// The transport is the control plane's KubeClient (control/cluster/kube-http.ts: the
// client library's authentication), handed in: this module imports no value from
// control/ or @kubernetes/client-node, so an agent without --kubernetes loads neither.
import type { Logger } from 'pino';

/** what the annotator needs of control/cluster/kube-http.ts KubeClient */
export interface KubeRequester {
  request<T>(method: 'PATCH', path: string, o: { body?: unknown; contentType?: string; signal?: AbortSignal }): Promise<T>;
}

export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
}

export const WG_KEY_ANNOTATION = 'nodal.io/wg-pub-key';
export const REDIRECTED_ANNOTATION = 'nodal.io/redirected';

export interface KubeAnnotatorOptions {
  /** the API server and credentials (the agent: a KubeClient over KubeConfig.loadFromDefault(), its ServiceAccount) */
  client: KubeRequester;
  /** this node's name: the Node to annotate */
  node: string;
  logger: Logger;
  /** patches in flight at most; default 4 */
  concurrency?: number;
  /** retry delays of a failed patch; default 1 s doubling up to 60 s */
  backoff?: BackoffOptions;
}

/** one object the annotator keeps an annotation on */
interface Item {
  kind: 'Node' | 'Pod';
  path: string;
  annotation: string;
  /** the value wanted; null: the annotation absent */
  desired: string | null;
  /** the value last written successfully; undefined: not known (nothing written yet) */
  written: string | null | undefined;
  failures: number;
  retry: NodeJS.Timeout | undefined;
  inflight: boolean;
  /** a pod that left this node's endpoints: dropped once the removal is written (or the pod is gone) */
  forget: boolean;
}

const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 1000, maxMs: 60_000 };

/** capped exponential, then half to all of it, so agents that failed together do not retry together */
const retryDelay = (failures: number, b: BackoffOptions): number => {
  const ms = Math.min(b.maxMs, b.baseMs * 2 ** Math.min(30, Math.max(0, failures - 1)));
  return Math.round(ms / 2 + Math.random() * (ms / 2));
};

/** KubeApiError's statusCode; 0 for a transport failure or anything else */
const statusOf = (err: unknown): number =>
  (typeof err === 'object' && err !== null && typeof (err as { statusCode?: unknown }).statusCode === 'number' ? (err as { statusCode: number }).statusCode : 0);

export class KubeAnnotator {
  readonly #client: KubeRequester;
  readonly #log: Logger;
  readonly #concurrency: number;
  readonly #backoff: BackoffOptions;
  readonly #items = new Map<string, Item>();
  /** keys ready to be written, in order */
  readonly #queue = new Set<string>();
  readonly #abort = new AbortController();
  #inflight = 0;
  #closed = false;
  #idleWaiters: Array<() => void> = [];
  readonly #nodeKey: string;

  constructor(o: KubeAnnotatorOptions) {
    this.#client = o.client;
    this.#log = o.logger.child({ component: 'kube-annotator' });
    this.#concurrency = Math.max(1, o.concurrency ?? 4);
    this.#backoff = o.backoff ?? DEFAULT_BACKOFF;
    this.#nodeKey = `node:${o.node}`;
    this.#items.set(this.#nodeKey, {
      kind: 'Node', path: `/api/v1/nodes/${encodeURIComponent(o.node)}`, annotation: WG_KEY_ANNOTATION,
      desired: null, written: null, failures: 0, retry: undefined, inflight: false, forget: false,
    });
  }

  /** publish (or republish, when it changed) this node's WireGuard public key */
  setPublicKey(key: string): void {
    if (this.#closed) return;
    this.#want(this.#nodeKey, key);
  }

  /**
   * after a reconcile: `enrolled` are the local pods with redirection in place, `local`
   * every pod of this node the snapshot names (ns/name both); `version` the snapshot's
   */
  enrolled(version: number | string, enrolled: readonly string[], local: readonly string[]): void {
    if (this.#closed) return;
    const on = new Set(enrolled);
    const here = new Set([...local, ...enrolled]);
    for (const pod of here) {
      const key = `pod:${pod}`;
      let it = this.#items.get(key);
      if (!it) {
        const slash = pod.indexOf('/');
        if (slash <= 0) continue;
        it = {
          kind: 'Pod', path: `/api/v1/namespaces/${encodeURIComponent(pod.slice(0, slash))}/pods/${encodeURIComponent(pod.slice(slash + 1))}`,
          annotation: REDIRECTED_ANNOTATION, desired: null, written: undefined, failures: 0, retry: undefined, inflight: false, forget: false,
        };
        this.#items.set(key, it);
      }
      it.forget = false;
      if (on.has(pod)) {
        // a pod keeps the version that enrolled it: later snapshots do not rewrite it
        const has = typeof it.desired === 'string' ? it.desired : typeof it.written === 'string' ? it.written : undefined;
        this.#want(key, has ?? String(version));
      } else {
        this.#want(key, null);
      }
    }
    for (const [key, it] of this.#items) {
      if (it.kind !== 'Pod' || here.has(key.slice(4))) continue;
      // gone from this node: take the mark back if we set it, then forget the pod
      it.forget = true;
      if (it.written === null || it.written === undefined) {
        if (!it.inflight) this.#drop(key, it);
        else it.desired = null;
      } else {
        this.#want(key, null);
      }
    }
    this.#pump();
  }

  /** resolves when nothing is queued or in flight (retries waiting on a timer do not count) */
  idle(): Promise<void> {
    if (this.#inflight === 0 && this.#queue.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** objects whose annotation is not (yet) as wanted */
  get outstanding(): number {
    let n = 0;
    for (const it of this.#items.values()) if (it.written !== it.desired) n++;
    return n;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const it of this.#items.values()) clearTimeout(it.retry);
    this.#queue.clear();
    this.#abort.abort();
    await this.idle();
  }

  #want(key: string, value: string | null): void {
    const it = this.#items.get(key)!;
    it.desired = value;
    if (it.written === value) {
      this.#queue.delete(key);
      return;
    }
    if (!it.inflight && it.retry === undefined) this.#queue.add(key);
    this.#pump();
  }

  #drop(key: string, it: Item): void {
    clearTimeout(it.retry);
    this.#queue.delete(key);
    this.#items.delete(key);
  }

  #pump(): void {
    while (!this.#closed && this.#inflight < this.#concurrency && this.#queue.size > 0) {
      const key = this.#queue.values().next().value!;
      this.#queue.delete(key);
      const it = this.#items.get(key);
      if (!it || it.inflight || it.written === it.desired) continue;
      void this.#write(key, it);
    }
    if (this.#inflight === 0 && this.#queue.size === 0) for (const w of this.#idleWaiters.splice(0)) w();
  }

  async #write(key: string, it: Item): Promise<void> {
    const value = it.desired;
    it.inflight = true;
    this.#inflight++;
    try {
      await this.#client.request('PATCH', it.path, {
        body: { metadata: { annotations: { [it.annotation]: value } } },
        contentType: 'application/merge-patch+json',
        signal: this.#abort.signal,
      });
      it.written = value;
      if (it.failures > 0) this.#log.info({ object: it.path, attempts: it.failures + 1 }, 'annotation written after retries');
      it.failures = 0;
    } catch (err) {
      if (it.kind === 'Pod' && statusOf(err) === 404) {
        // the pod is gone: nothing left to mark or unmark (a pod the snapshot still names
        // keeps this answer remembered, so it is not asked again every reconcile)
        it.written = value;
        it.failures = 0;
      } else if (!this.#closed) {
        it.failures++;
        const delay = retryDelay(it.failures, this.#backoff);
        this.#log.warn({ err: (err as Error).message, object: it.path, annotation: it.annotation, failures: it.failures, retryInMs: delay }, 'annotation write failed; retrying');
        it.retry = setTimeout(() => {
          it.retry = undefined;
          if (this.#items.get(key) === it && it.written !== it.desired) {
            this.#queue.add(key);
            this.#pump();
          }
        }, delay);
        it.retry.unref();
      }
    } finally {
      it.inflight = false;
      this.#inflight--;
      if (it.forget && it.written === null && this.#items.get(key) === it) this.#drop(key, it);
      else if (it.written !== it.desired && it.retry === undefined && !this.#closed) this.#queue.add(key);
      this.#pump();
    }
  }
}
