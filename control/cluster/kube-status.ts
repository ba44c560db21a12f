// Reports validation on the object itself (DESIGN §4): status.conditions[type=Accepted],
// True when the object is in force as written, False with reason Invalid and the field at
// fault when it was rejected. Written through the status subresource, and only when the
// condition the object carries differs from the verdict: our own write comes back as a
// watch event carrying the condition we wrote, which then matches, so nothing loops.
import type { Logger } from 'pino';
import { KubeApiError, backoffDelay, jittered, type BackoffOptions, type KubeClient, type KubeObject } from './kube-http.ts';
import { objectKey, objectPath, type KubeResource } from './kube-resources.ts';

export const ACCEPTED = 'Accepted';

/** what the source decided about one version of an object */
export interface Verdict {
  status: 'True' | 'False';
  /** CamelCase, as Kubernetes conditions spell reasons: Accepted, Invalid */
  reason: string;
  message: string;
}

/** metav1.Condition */
export interface Condition {
  type: string;
  status: string;
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export interface ConditionWriterOptions {
  client: KubeClient;
  logger: Logger;
  /** only one writer in a cluster: leader election plugs in here. False skips; resync() catches up */
  enabled: () => boolean;
  /** the newest cached version of an object, for retries */
  latest: (r: KubeResource, namespace: string, name: string) => KubeObject | undefined;
  backoff: BackoffOptions;
}

interface Entry {
  r: KubeResource;
  namespace: string;
  name: string;
  want: Verdict;
  inFlight: boolean;
  /** a newer version arrived while a write was in flight: look again when it ends */
  again: boolean;
  /** resourceVersion|verdict of the last successful write: do not write it twice */
  written: string | undefined;
  failures: number;
  timer: NodeJS.Timeout | undefined;
}

const conditionsOf = (o: KubeObject): Condition[] => {
  const status = o.status as { conditions?: unknown } | undefined;
  return Array.isArray(status?.conditions) ? (status.conditions as Condition[]) : [];
};

/** metav1.Condition allows 32768; a rejected value quoted in full could pass that, and nobody reads that far */
const MAX_MESSAGE = 4096;
const clip = (m: string): string => (m.length <= MAX_MESSAGE ? m : `${m.slice(0, MAX_MESSAGE - 1)}…`);

/** the API server keeps second precision */
const now = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

export class ConditionWriter {
  readonly #o: ConditionWriterOptions;
  readonly #log: Logger;
  readonly #entries = new Map<string, Entry>();
  readonly #abort = new AbortController();
  #closed = false;

  constructor(o: ConditionWriterOptions) {
    this.#o = o;
    this.#log = o.logger;
  }

  /** writes in flight or waiting for a retry */
  get pending(): number {
    return [...this.#entries.values()].filter((e) => e.inFlight || e.timer !== undefined).length;
  }

  /** make the object's Accepted condition say `want` (for its current generation) */
  reconcile(r: KubeResource, obj: KubeObject, verdict: Verdict): void {
    if (this.#closed) return;
    const want = { ...verdict, message: clip(verdict.message) };
    const md = obj.metadata ?? {};
    const namespace = md.namespace ?? '', name = md.name ?? '';
    const key = objectKey(r.kind, namespace, name);
    const current = conditionsOf(obj).find((c) => c.type === ACCEPTED);
    if (current && current.status === want.status && current.reason === want.reason && current.message === want.message &&
      current.observedGeneration === md.generation) {
      const done = this.#entries.get(key);
      if (done && !done.inFlight) {
        clearTimeout(done.timer);
        this.#entries.delete(key);
      }
      return;
    }
    if (!this.#o.enabled()) return;
    let e = this.#entries.get(key);
    if (!e) {
      e = { r, namespace, name, want, inFlight: false, again: false, written: undefined, failures: 0, timer: undefined };
      this.#entries.set(key, e);
    }
    e.want = want;
    if (e.inFlight) {
      e.again = true;
      return;
    }
    if (e.timer !== undefined) return; // a retry is due; it reads the newest version then
    const stamp = `${md.resourceVersion ?? ''}|${want.status}|${want.reason}|${want.message}|${md.generation ?? ''}`;
    if (e.written === stamp) return; // written for this version already; the watch brings it back
    void this.#write(e, obj, current, stamp);
  }

  /** the object is gone: nothing more to write */
  forget(r: KubeResource, namespace: string, name: string): void {
    const key = objectKey(r.kind, namespace, name);
    const e = this.#entries.get(key);
    if (e) clearTimeout(e.timer);
    this.#entries.delete(key);
  }

  close(): void {
    this.#closed = true;
    this.#abort.abort();
    for (const e of this.#entries.values()) clearTimeout(e.timer);
    this.#entries.clear();
  }

  async #write(e: Entry, obj: KubeObject, current: Condition | undefined, stamp: string): Promise<void> {
    const md = obj.metadata ?? {};
    const cond: Condition = {
      type: ACCEPTED, status: e.want.status,
      ...(typeof md.generation === 'number' ? { observedGeneration: md.generation } : {}),
      // the time the status flipped, not the time we last wrote
      lastTransitionTime: current?.status === e.want.status ? current.lastTransitionTime : now(),
      reason: e.want.reason, message: e.want.message,
    };
    const others = conditionsOf(obj);
    const conditions = others.some((c) => c.type === ACCEPTED) ? others.map((c) => (c.type === ACCEPTED ? cond : c)) : [...others, cond];
    const path = objectPath(e.r, e.namespace, e.name, 'status');
    e.inFlight = true;
    try {
      // merge patch with the resourceVersion we judged: it replaces the list, so it must not
      // land on a version whose conditions we have not seen (409 instead; the watch brings that one)
      await this.#o.client.request('PATCH', path, {
        body: { metadata: { resourceVersion: md.resourceVersion }, status: { conditions } },
        contentType: 'application/merge-patch+json', signal: this.#abort.signal,
      });
      e.written = stamp;
      e.failures = 0;
      const log = { kind: e.r.kind, namespace: e.namespace || undefined, name: e.name, status: cond.status, reason: cond.reason };
      if (cond.status === 'True') this.#log.info(log, 'status condition Accepted written');
      else this.#log.warn({ ...log, message: cond.message }, 'status condition Accepted written');
    } catch (err) {
      if (this.#closed) return;
      const code = err instanceof KubeApiError ? err.statusCode : 0;
      if (code === 404) {
        this.forget(e.r, e.namespace, e.name); // deleted meanwhile
      } else if (code !== 409) {
        e.failures++;
        const delay = backoffDelay(e.failures, this.#o.backoff);
        this.#log.warn({ err, kind: e.r.kind, namespace: e.namespace || undefined, name: e.name, retryInMs: delay }, 'status write failed; will retry');
        e.timer = setTimeout(() => {
          e.timer = undefined;
          const latest = this.#o.latest(e.r, e.namespace, e.name);
          if (latest) this.reconcile(e.r, latest, e.want);
        }, jittered(delay));
        e.timer.unref();
      }
      // 409: a newer version exists; its watch event re-runs the verdict (or already set `again`)
    } finally {
      e.inFlight = false;
      if (e.again && !this.#closed) {
        e.again = false;
        const latest = this.#o.latest(e.r, e.namespace, e.name);
        if (latest) this.reconcile(e.r, latest, e.want);
      }
    }
  }
}
