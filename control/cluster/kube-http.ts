// Plain JSON requests to the Kubernetes API through @kubernetes/client-node's own
// transport and authentication (KubeConfig: in-cluster token, client certificates, exec
// plugins), for what the informers do not do themselves: paged lists that return the
// objects exactly as the server sent them (the typed API clients would turn them into
// model classes, unlike the watch, which hands over plain JSON) and status writes.
import { HttpMethod, IsomorphicFetchHttpLibrary, RequestContext, type KubeConfig } from '@kubernetes/client-node';

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

export interface KubeList {
  apiVersion?: string;
  kind?: string;
  metadata: { resourceVersion?: string; continue?: string };
  items: KubeObject[];
}

/** a request the API server refused, or that never got an answer (status 0) */
export class KubeApiError extends Error {
  readonly code = 'NODAL_ERR_KUBE_API';
  /** the HTTP status; 0 when there was no response. ListWatch reads this name to spot 410 Gone */
  readonly statusCode: number;
  /** the Status reason (NotFound, Forbidden, Expired, ...) */
  readonly reason: string;
  constructor(message: string, statusCode: number, reason: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KubeApiError';
    this.statusCode = statusCode;
    this.reason = reason;
  }
}

/** what to tell the operator, by status: the usual causes of each */
const HINTS: Record<number, string> = {
  401: 'are the kubeconfig credentials or the ServiceAccount token valid?',
  403: 'does the control plane\'s ServiceAccount have RBAC to list, watch and patch this resource? (deploy/ holds the ClusterRole)',
  404: 'is the CRD installed?',
};

/** a list page: big enough to keep round trips few, small enough to keep the server's memory bounded (client-go uses 500) */
const PAGE_SIZE = 500;

export class KubeClient {
  readonly #kc: KubeConfig;
  readonly #http = new IsomorphicFetchHttpLibrary();
  readonly #timeoutMs: number;

  constructor(kc: KubeConfig, opts: { timeoutMs?: number } = {}) {
    this.#kc = kc;
    this.#timeoutMs = opts.timeoutMs ?? 60_000;
  }

  /** the API server's URL, for logs */
  get server(): string {
    return this.#kc.getCurrentCluster()?.server ?? '(no current cluster)';
  }

  /** one JSON request; a non-2xx answer becomes a KubeApiError naming the operation */
  async request<T>(method: 'GET' | 'PATCH' | 'PUT' | 'POST' | 'DELETE', path: string, o: { body?: unknown; contentType?: string; signal?: AbortSignal } = {}): Promise<T> {
    const op = `${method} ${path}`;
    const cluster = this.#kc.getCurrentCluster();
    if (!cluster) throw new KubeApiError(`${op}: the kubeconfig has no current cluster`, 0, 'NoCluster');
    const ctx = new RequestContext(cluster.server + path, HttpMethod[method]);
    ctx.setHeaderParam('Accept', 'application/json');
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    ctx.setSignal(o.signal ? AbortSignal.any([o.signal, timeout]) : timeout);
    if (o.body !== undefined) {
      ctx.setHeaderParam('Content-Type', o.contentType ?? 'application/json');
      ctx.setBody(JSON.stringify(o.body));
    }
    let status: number;
    let text: string;
    try {
      await this.#kc.applySecurityAuthentication(ctx);
      const resp = await this.#http.send(ctx).toPromise();
      status = resp.httpStatusCode;
      text = await resp.body.text();
    } catch (err) {
      const why = timeout.aborted ? `no answer within ${this.#timeoutMs} ms` : (err as Error).message;
      throw new KubeApiError(`${op}: ${why}`, 0, timeout.aborted ? 'Timeout' : 'Transport', { cause: err });
    }
    let body: unknown;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch (err) {
      throw new KubeApiError(`${op}: ${status}: the answer is not JSON: ${text.slice(0, 200)}`, status, 'BadResponse', { cause: err });
    }
    if (status < 200 || status > 299) {
      const s = (body ?? {}) as { message?: string; reason?: string };
      const hint = HINTS[status];
      throw new KubeApiError(`${op}: ${status} ${s.reason ?? ''}: ${s.message ?? text.slice(0, 200)}${hint ? ` (${hint})` : ''}`, status, s.reason ?? 'Unknown');
    }
    return body as T;
  }

  /**
   * every page of a collection; the List's resourceVersion is the first page's, which is
   * where a watch must start. A continue token that expired mid-way restarts the list.
   */
  async list(path: string, signal?: AbortSignal): Promise<KubeList> {
    for (let attempt = 0; ; attempt++) {
      const items: KubeObject[] = [];
      let first: KubeList | undefined;
      let cont: string | undefined;
      try {
        do {
          const q = new URLSearchParams({ limit: String(PAGE_SIZE), ...(cont ? { continue: cont } : {}) });
          const page = await this.request<KubeList>('GET', `${path}?${q}`, signal ? { signal } : {});
          first ??= page;
          items.push(...(page.items ?? []));
          cont = page.metadata?.continue || undefined;
        } while (cont !== undefined);
      } catch (err) {
        if (err instanceof KubeApiError && err.statusCode === 410 && cont !== undefined && attempt === 0) continue;
        throw err;
      }
      return { ...first!, metadata: { resourceVersion: first!.metadata?.resourceVersion ?? '' }, items };
    }
  }
}

export interface BackoffOptions {
  /** the first retry's delay */
  baseMs: number;
  /** the cap: an API server that is down for long is still retried this often */
  maxMs: number;
}

/** client-go's defaults for a failed list/watch: 800 ms doubling up to 30 s */
export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 800, maxMs: 30_000 };

/** the nominal delay before retry number `failures` (1, 2, ...): exponential, capped */
export const backoffDelay = (failures: number, b: BackoffOptions): number =>
  Math.min(b.maxMs, b.baseMs * 2 ** Math.min(30, Math.max(0, failures - 1)));

/** half to all of the nominal delay, so many clients that failed together do not retry together */
export const jittered = (ms: number): number => Math.round(ms / 2 + Math.random() * (ms / 2));
