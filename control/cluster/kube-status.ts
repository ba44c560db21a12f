// Reports validation on the object itself (DESIGN §4): status.conditions[type=Accepted],
// True when the object is in force as written, False with reason Invalid and the field at
// fault when it was rejected. Gateway API routes report the same way their API asks:
// status.parents[] entries with controllerName nodal.io/mesh and Accepted / ResolvedRefs
// conditions per Service parent (route-status.ts computes them), leaving other
// controllers' entries alone. Written through the status subresource, and only when what
// the object carries differs from the verdict: our own write comes back as a watch event
// carrying what we wrote, which then matches, so nothing loops.
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

/**
 * the status an object should carry: whether it already does, and the status to write
 * (given the object as cached, so it can keep what others wrote and transition times)
 */
export interface StatusWant {
  /** identifies the desired content: a write for the same version and fingerprint is not repeated */
  fingerprint: string;
  satisfiedBy(obj: KubeObject): boolean;
  status(obj: KubeObject): Record<string, unknown>;
  /** for the log line after a write */
  summary: { ok: boolean; text: string };
}

interface Entry {
  r: KubeResource;
  namespace: string;
  name: string;
  want: StatusWant;
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

  /** make the object's Accepted condition say `verdict` (for its current generation) */
  reconcile(r: KubeResource, obj: KubeObject, verdict: Verdict): void {
    this.reconcileStatus(r, obj, acceptedWant({ ...verdict, message: clip(verdict.message) }));
  }

  /** make the object's status say what `want` describes */
  reconcileStatus(r: KubeResource, obj: KubeObject, want: StatusWant): void {
    if (this.#closed) return;
    const md = obj.metadata ?? {};
    const namespace = md.namespace ?? '', name = md.name ?? '';
    const key = objectKey(r.kind, namespace, name);
    if (want.satisfiedBy(obj)) {
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
    const stamp = `${md.resourceVersion ?? ''}|${want.fingerprint}|${md.generation ?? ''}`;
    if (e.written === stamp) return; // written for this version already; the watch brings it back
    void this.#write(e, obj, stamp);
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

  async #write(e: Entry, obj: KubeObject, stamp: string): Promise<void> {
    const md = obj.metadata ?? {};
    const status = e.want.status(obj);
    const path = objectPath(e.r, e.namespace, e.name, 'status');
    e.inFlight = true;
    try {
      // merge patch with the resourceVersion we judged: it replaces the list, so it must not
      // land on a version whose conditions we have not seen (409 instead; the watch brings that one)
      await this.#o.client.request('PATCH', path, {
        body: { metadata: { resourceVersion: md.resourceVersion }, status },
        contentType: 'application/merge-patch+json', signal: this.#abort.signal,
      });
      e.written = stamp;
      e.failures = 0;
      const log = { kind: e.r.kind, namespace: e.namespace || undefined, name: e.name };
      if (e.want.summary.ok) this.#log.info(log, `status written: ${e.want.summary.text}`);
      else this.#log.warn(log, `status written: ${e.want.summary.text}`);
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
          if (latest) this.reconcileStatus(e.r, latest, e.want);
        }, jittered(delay));
        e.timer.unref();
      }
      // 409: a newer version exists; its watch event re-runs the verdict (or already set `again`)
    } finally {
      e.inFlight = false;
      if (e.again && !this.#closed) {
        e.again = false;
        const latest = this.#o.latest(e.r, e.namespace, e.name);
        if (latest) this.reconcileStatus(e.r, latest, e.want);
      }
    }
  }
}

/** a metav1.Condition for `verdict`, keeping the transition time when the status did not flip */
export function conditionFor(type: string, verdict: Verdict, generation: number | undefined, current: Condition | undefined): Condition {
  return {
    type, status: verdict.status,
    ...(typeof generation === 'number' ? { observedGeneration: generation } : {}),
    // the time the status flipped, not the time we last wrote
    lastTransitionTime: current?.status === verdict.status ? current.lastTransitionTime : now(),
    reason: verdict.reason, message: clip(verdict.message),
  };
}

/** the condition already says `verdict` for this generation */
export const conditionSays = (c: Condition | undefined, verdict: Verdict, generation: number | undefined): boolean =>
  c !== undefined && c.status === verdict.status && c.reason === verdict.reason && c.message === clip(verdict.message) && c.observedGeneration === generation;

/** status.conditions[type=Accepted] says `want`; other conditions are kept */
function acceptedWant(want: Verdict): StatusWant {
  return {
    fingerprint: `${want.status}|${want.reason}|${want.message}`,
    summary: { ok: want.status === 'True', text: `Accepted=${want.status} ${want.reason}${want.status === 'True' ? '' : `: ${want.message}`}` },
    satisfiedBy: (obj) => conditionSays(conditionsOf(obj).find((c) => c.type === ACCEPTED), want, obj.metadata?.generation),
    status: (obj) => {
      const others = conditionsOf(obj);
      const cond = conditionFor(ACCEPTED, want, obj.metadata?.generation, others.find((c) => c.type === ACCEPTED));
      return { conditions: others.some((c) => c.type === ACCEPTED) ? others.map((c) => (c.type === ACCEPTED ? cond : c)) : [...others, cond] };
    },
  };
}
