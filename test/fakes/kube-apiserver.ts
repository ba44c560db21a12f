// A fake Kubernetes API server, honest to the wire, for the real @kubernetes/client-node
// to talk to over HTTP on 127.0.0.1:0. It serves the kinds nodal reads (core v1
// namespaces/pods/services/nodes, EndpointSlices, NetworkPolicies, Gateway API routes and
// the nodal CRDs, coordination.k8s.io Leases), cluster-wide and per namespace:
//   list   GET  .../<plural>            a <Kind>List with metadata.resourceVersion; limit/continue
//   watch  GET  .../<plural>?watch=true newline-delimited JSON events over a chunked 200:
//          ADDED/MODIFIED/DELETED from a resourceVersion (or the current state first when
//          none is given), BOOKMARK when allowWatchBookmarks=true, ERROR with a 410 Status
//          (then close) when the resourceVersion is compacted away; timeoutSeconds ends it
//   get/create/update/patch (merge patch)/delete on items, and the status subresource
// Failures are Status objects with the real codes and reasons. Test controls: write and
// delete objects as controllers would, compact history, drop or expire watches, send
// bookmarks, fail the next N requests, stall or delay requests, stop serving a kind (a
// CRD not installed), and count every request by verb and resource.
// Not modelled: discovery, field selectors, label selectors beyond equality, a consistent
// snapshot across list pages (later pages read the current state; the watch that follows
// from the list's resourceVersion replays what changed, so a client still converges).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { FAKE_RESOURCES, FakeStore, StatusError, apiVersionOf, type FakeResource, type KubeObj, type StoreEvent } from './kube-store.ts';

export { FAKE_RESOURCES, FakeStore, StatusError, mergePatch } from './kube-store.ts';
export type { FakeResource, KubeObj } from './kube-store.ts';

export type Verb = 'list' | 'watch' | 'get' | 'create' | 'update' | 'patch' | 'delete';

export interface RequestRecord {
  verb: Verb;
  /** the plural, e.g. pods */
  resource: string;
  subresource: 'status' | undefined;
  namespace: string | undefined;
  name: string | undefined;
  query: Record<string, string>;
  contentType: string | undefined;
}

/** which requests a control applies to; unset fields match anything */
export interface Match {
  verb?: Verb;
  resource?: string;
  subresource?: 'status';
}

export interface FakeKubeApiServerOptions {
  /** when set, requests must carry `Authorization: Bearer <token>` */
  token?: string;
  /**
   * how a watch from a compacted resourceVersion fails: 'event' as the watch cache does
   * (200, one ERROR event with a 410 Status, close) or 'http' (a 410 response)
   */
  goneAs?: 'event' | 'http';
  /** send a BOOKMARK this often to watches that allow them (the real server: about a minute) */
  bookmarkEveryMs?: number;
}

interface WatchConn {
  resource: FakeResource;
  namespace: string | undefined;
  selector: Selector;
  bookmarks: boolean;
  res: ServerResponse;
  timer: NodeJS.Timeout | undefined;
}

interface Route {
  resource: FakeResource;
  namespace: string | undefined;
  name: string | undefined;
  subresource: 'status' | undefined;
}

type Selector = (labels: Record<string, string> | undefined) => boolean;

const matches = (m: Match, r: RequestRecord): boolean =>
  (m.verb === undefined || m.verb === r.verb) && (m.resource === undefined || m.resource === r.resource) && (m.subresource === undefined || m.subresource === r.subresource);

const REASONS: Record<number, string> = {
  400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 405: 'MethodNotAllowed', 409: 'Conflict',
  410: 'Expired', 415: 'UnsupportedMediaType', 422: 'Invalid', 429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable', 504: 'Timeout',
};

/** equality-based label selectors: a=b, a==b, a!=b, a, !a */
function parseSelector(text: string | undefined): Selector {
  if (text === undefined || text === '') return () => true;
  const terms = text.split(',').map((t) => t.trim()).filter(Boolean).map((t): Selector => {
    const ne = /^([^!=]+)!=(.*)$/.exec(t);
    if (ne) return (l) => l?.[ne[1]!] !== ne[2];
    const eq = /^([^!=]+)==?(.*)$/.exec(t);
    if (eq) return (l) => l?.[eq[1]!] === eq[2];
    if (t.startsWith('!')) return (l) => l?.[t.slice(1)] === undefined;
    if (/^[A-Za-z0-9./_-]+$/.test(t)) return (l) => l?.[t] !== undefined;
    throw new StatusError(400, 'BadRequest', `unable to parse requirement: ${t} (this fake supports equality-based selectors only)`);
  });
  return (l) => terms.every((f) => f(l));
}

function writeJson(res: ServerResponse, code: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.destroyed || res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

const failure = (code: number, message: string): StatusError => new StatusError(code, REASONS[code] ?? 'Unknown', message);

export class FakeKubeApiServer {
  readonly store = new FakeStore();
  readonly requests: RequestRecord[] = [];
  readonly #server: Server;
  readonly #opts: FakeKubeApiServerOptions;
  readonly #watches = new Set<WatchConn>();
  readonly #unserved = new Set<string>();
  #failures: Array<{ match: Match; remaining: number; code: number }> = [];
  #gates: Array<{ match: Match; wait: () => Promise<void>; release?: () => void }> = [];
  #pending = new Map<RequestRecord, true>();
  #waiters: Array<() => void> = [];
  #bookmarkTimer: NodeJS.Timeout | undefined;
  #url = '';

  private constructor(opts: FakeKubeApiServerOptions) {
    this.#opts = opts;
    this.#server = createServer((req, res) => void this.#handle(req, res));
    this.store.subscribe((e) => this.#fanOut(e));
  }

  static async start(opts: FakeKubeApiServerOptions = {}): Promise<FakeKubeApiServer> {
    const s = new FakeKubeApiServer(opts);
    await new Promise<void>((resolve, reject) => {
      s.#server.once('error', reject);
      s.#server.listen(0, '127.0.0.1', () => resolve());
    });
    s.#url = `http://127.0.0.1:${(s.#server.address() as AddressInfo).port}`;
    if (opts.bookmarkEveryMs !== undefined) {
      s.#bookmarkTimer = setInterval(() => s.bookmark(), opts.bookmarkEveryMs);
      s.#bookmarkTimer.unref();
    }
    return s;
  }

  get url(): string {
    return this.#url;
  }

  /** what KubeConfig.loadFromOptions takes to point a client here */
  kubeConfigOptions(): { clusters: Array<{ name: string; server: string; skipTLSVerify: boolean }>; users: Array<{ name: string; token?: string }>; contexts: Array<{ name: string; cluster: string; user: string }>; currentContext: string } {
    return {
      clusters: [{ name: 'fake', server: this.#url, skipTLSVerify: true }],
      users: [{ name: 'fake', ...(this.#opts.token !== undefined ? { token: this.#opts.token } : {}) }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'fake' }],
      currentContext: 'fake',
    };
  }

  async close(): Promise<void> {
    clearInterval(this.#bookmarkTimer);
    for (const g of this.#gates.splice(0)) g.release?.();
    for (const w of this.#watches) this.#endWatch(w, true);
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  // ---- test controls ----

  resource(kind: string): FakeResource {
    const r = FAKE_RESOURCES.find((x) => x.kind === kind || x.plural === kind);
    if (!r) throw new Error(`fake apiserver: no resource ${kind}`);
    return r;
  }

  /** create or replace a whole object, status included, as kubelet and controllers together would */
  apply(obj: KubeObj): KubeObj {
    const r = FAKE_RESOURCES.find((x) => x.kind === obj.kind && apiVersionOf(x) === obj.apiVersion);
    if (!r) throw new Error(`fake apiserver: no resource for ${obj.apiVersion}/${obj.kind}`);
    const ns = r.namespaced ? obj.metadata.namespace ?? 'default' : '';
    const existing = this.store.get(r, ns, obj.metadata.name);
    const body = { ...obj, metadata: { ...obj.metadata, resourceVersion: undefined } } as KubeObj;
    return existing ? this.store.update(r, ns, obj.metadata.name, body, 'all') : this.store.create(r, ns, body);
  }

  /** `namespace` is ignored for cluster-scoped kinds */
  remove(kind: string, namespace: string, name: string): KubeObj {
    const r = this.resource(kind);
    return this.store.delete(r, r.namespaced ? namespace : '', name);
  }

  /** `namespace` is ignored for cluster-scoped kinds */
  get(kind: string, namespace: string, name: string): KubeObj | undefined {
    const r = this.resource(kind);
    return this.store.get(r, r.namespaced ? namespace : '', name);
  }

  /** stop (or resume) serving a kind: its paths answer 404, as for a CRD that is not installed */
  serve(kind: string, served: boolean): void {
    const r = this.resource(kind);
    if (served) this.#unserved.delete(r.plural);
    else {
      this.#unserved.add(r.plural);
      for (const w of this.#watches) if (w.resource === r) this.#endWatch(w, false);
    }
  }

  /** etcd compaction: a watch from any resourceVersion before now will get 410 */
  compact(): void {
    this.store.compact();
  }

  /** end open watches: cleanly (the response ends) or abruptly (the connection is reset) */
  dropWatches(o: { resource?: string; abrupt?: boolean } = {}): number {
    let n = 0;
    for (const w of this.#watches) {
      if (o.resource !== undefined && w.resource.plural !== o.resource && w.resource.kind !== o.resource) continue;
      this.#endWatch(w, o.abrupt === true);
      n++;
    }
    return n;
  }

  /** what the watch cache does when a watcher falls too far behind: ERROR 410, then close */
  expireWatches(resource?: string): number {
    let n = 0;
    for (const w of this.#watches) {
      if (resource !== undefined && w.resource.plural !== resource && w.resource.kind !== resource) continue;
      this.#send(w, { type: 'ERROR', object: this.#gone(this.store.compactedRevision - 1).toStatus() });
      this.#endWatch(w, false);
      n++;
    }
    return n;
  }

  /** a BOOKMARK at the current resourceVersion to every watch that allowed bookmarks */
  bookmark(resource?: string): number {
    let n = 0;
    for (const w of this.#watches) {
      if (!w.bookmarks || (resource !== undefined && w.resource.plural !== resource && w.resource.kind !== resource)) continue;
      this.#send(w, { type: 'BOOKMARK', object: { kind: w.resource.kind, apiVersion: apiVersionOf(w.resource), metadata: { resourceVersion: String(this.store.resourceVersion) } } });
      n++;
    }
    return n;
  }

  /** the next `n` matching requests fail with `code` and a Status body */
  failNext(match: Match, n: number, code = 500): void {
    this.#failures.push({ match, remaining: n, code });
  }

  /** matching requests wait (before any byte of the response) until released */
  stall(match: Match): { release: () => void } {
    let release!: () => void;
    const done = new Promise<void>((r) => { release = r; });
    const gate = { match, wait: () => done, release };
    this.#gates.push(gate);
    return {
      release: () => {
        this.#gates = this.#gates.filter((g) => g !== gate);
        release();
      },
    };
  }

  /** matching requests are answered `ms` late; returns the undo */
  delay(match: Match, ms: number): () => void {
    const gate = { match, wait: () => sleep(ms) };
    this.#gates.push(gate);
    return () => { this.#gates = this.#gates.filter((g) => g !== gate); };
  }

  count(match: Match = {}): number {
    return this.requests.filter((r) => matches(match, r)).length;
  }

  /** requests waiting on a stall or delay right now */
  pending(match: Match = {}): number {
    return [...this.#pending.keys()].filter((r) => matches(match, r)).length;
  }

  openWatches(resource?: string): number {
    return [...this.#watches].filter((w) => resource === undefined || w.resource.plural === resource || w.resource.kind === resource).length;
  }

  /** resolves once pred() holds, re-checked on every request, store change and watch end; fails after ms */
  async until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
    if (pred()) return;
    await new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (!pred()) return;
        clearTimeout(timer);
        this.#waiters = this.#waiters.filter((w) => w !== check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== check);
        reject(new Error(`fake apiserver: timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      this.#waiters.push(check);
    });
  }

  #notify(): void {
    for (const w of [...this.#waiters]) w();
  }

  // ---- the API ----

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', this.#url);
      const route = this.#route(url.pathname);
      const query = Object.fromEntries(url.searchParams);
      const verb = this.#verb(req.method ?? 'GET', route, query);
      const record: RequestRecord = {
        verb, resource: route.resource.plural, subresource: route.subresource, namespace: route.namespace, name: route.name, query,
        contentType: req.headers['content-type'],
      };
      this.requests.push(record);
      this.#notify();
      if (this.#opts.token !== undefined && req.headers.authorization !== `Bearer ${this.#opts.token}`) {
        throw failure(401, 'Unauthorized');
      }
      const body = verb === 'create' || verb === 'update' || verb === 'patch' ? await this.#body(req) : undefined;

      const fail = this.#failures.find((f) => f.remaining > 0 && matches(f.match, record));
      if (fail) {
        fail.remaining--;
        this.#failures = this.#failures.filter((f) => f.remaining > 0);
        throw failure(fail.code, `injected failure (${fail.code})`);
      }
      const gates = this.#gates.filter((g) => matches(g.match, record));
      if (gates.length > 0) {
        this.#pending.set(record, true);
        this.#notify();
        try {
          for (const g of gates) await g.wait();
        } finally {
          this.#pending.delete(record);
        }
      }
      if (res.destroyed) return;
      if (this.#unserved.has(route.resource.plural)) throw failure(404, 'the server could not find the requested resource');
      this.#serve(verb, route, query, body, req, res);
    } catch (err) {
      const e = err instanceof StatusError ? err : failure(500, (err as Error).message);
      writeJson(res, e.code, e.toStatus(), e.code === 429 ? { 'retry-after': '1' } : {});
    }
  }

  #route(path: string): Route {
    const segs = path.split('/').filter(Boolean);
    let group: string, version: string, rest: string[];
    if (segs[0] === 'api' && segs[1] === 'v1') [group, version, rest] = ['', 'v1', segs.slice(2)];
    else if (segs[0] === 'apis' && segs.length >= 3) [group, version, rest] = [segs[1]!, segs[2]!, segs.slice(3)];
    else throw failure(404, 'the server could not find the requested resource');
    const find = (plural: string | undefined): FakeResource | undefined =>
      FAKE_RESOURCES.find((r) => r.group === group && r.version === version && r.plural === plural);
    let namespace: string | undefined;
    // /namespaces/<ns>/<plural>/... is a namespaced path unless <plural> is not a namespaced kind
    if (rest[0] === 'namespaces' && rest.length >= 3 && find(rest[2])?.namespaced) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const resource = find(rest[0]);
    if (!resource || rest.length > 3 || (rest.length === 3 && rest[2] !== 'status')) throw failure(404, 'the server could not find the requested resource');
    if (rest.length >= 2 && resource.namespaced && namespace === undefined) throw failure(404, 'the server could not find the requested resource');
    return { resource, namespace, name: rest[1], subresource: rest[2] === 'status' ? 'status' : undefined };
  }

  #verb(method: string, route: { name: string | undefined; subresource: string | undefined }, query: Record<string, string>): Verb {
    const item = route.name !== undefined;
    if (method === 'GET') return item ? 'get' : query.watch === 'true' || query.watch === '1' ? 'watch' : 'list';
    if (method === 'POST' && !item) return 'create';
    if (method === 'PUT' && item) return 'update';
    if (method === 'PATCH' && item) return 'patch';
    if (method === 'DELETE' && item) return 'delete';
    throw failure(405, `the server does not allow this method on the requested resource`);
  }

  async #body(req: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw failure(400, `the body of the request was in an unknown format: ${(err as Error).message}`);
    }
  }

  #serve(verb: Verb, route: Route, query: Record<string, string>, body: unknown, req: IncomingMessage, res: ServerResponse): void {
    const { resource, namespace, name, subresource } = route;
    const ns = resource.namespaced ? namespace ?? '' : '';
    switch (verb) {
      case 'list': return this.#list(resource, namespace, query, res);
      case 'watch': return this.#watch(resource, namespace, query, res);
      case 'get': {
        const o = this.store.get(resource, ns, name!);
        if (!o) throw new StatusError(404, 'NotFound', `${resource.plural} "${name}" not found`, { name, kind: resource.plural });
        return writeJson(res, 200, o);
      }
      case 'create': {
        const o = body as KubeObj;
        if (resource.namespaced && o.metadata?.namespace !== undefined && o.metadata.namespace !== namespace) {
          throw failure(400, 'the namespace of the provided object does not match the namespace sent on the request');
        }
        return writeJson(res, 201, this.store.create(resource, ns, o));
      }
      case 'update': {
        if (subresource === 'status' && !resource.statusSubresource) throw failure(404, 'the server could not find the requested resource');
        return writeJson(res, 200, this.store.update(resource, ns, name!, body as KubeObj, subresource));
      }
      case 'patch': {
        if (subresource === 'status' && !resource.statusSubresource) throw failure(404, 'the server could not find the requested resource');
        const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
        if (type !== 'application/merge-patch+json' && !(type === 'application/strategic-merge-patch+json' && resource.builtin)) {
          throw failure(415, `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json${resource.builtin ? ', application/strategic-merge-patch+json' : ''}`);
        }
        return writeJson(res, 200, this.store.patch(resource, ns, name!, body, subresource));
      }
      case 'delete': return writeJson(res, 200, this.store.delete(resource, ns, name!));
    }
  }

  #list(resource: FakeResource, namespace: string | undefined, query: Record<string, string>, res: ServerResponse): void {
    if (query.fieldSelector) throw failure(400, 'field selectors are not supported by this fake');
    const selector = parseSelector(query.labelSelector);
    let listRv = this.store.resourceVersion;
    let after: string | undefined;
    if (query.continue) {
      let token: { rv: number; after: string };
      try {
        token = JSON.parse(Buffer.from(query.continue, 'base64url').toString('utf8')) as { rv: number; after: string };
      } catch {
        throw failure(400, 'continue key is not valid');
      }
      if (token.rv < this.store.compactedRevision) {
        throw failure(410, 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.');
      }
      [listRv, after] = [token.rv, token.after];
    }
    const keyOf = (o: KubeObj): string => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    let items = this.store.list(resource, namespace).filter((o) => selector(o.metadata.labels)).filter((o) => after === undefined || keyOf(o) > after);
    const limit = Number(query.limit ?? 0);
    let cont: string | undefined;
    let remaining: number | undefined;
    if (limit > 0 && items.length > limit) {
      remaining = items.length - limit;
      items = items.slice(0, limit);
      cont = Buffer.from(JSON.stringify({ rv: listRv, after: keyOf(items.at(-1)!) })).toString('base64url');
    }
    if (resource.builtin) {
      for (const o of items) {
        delete o.kind;
        delete o.apiVersion;
      }
    }
    writeJson(res, 200, {
      kind: `${resource.kind}List`, apiVersion: apiVersionOf(resource),
      metadata: { resourceVersion: String(listRv), ...(cont !== undefined ? { continue: cont, remainingItemCount: remaining } : {}) },
      items,
    });
  }

  #watch(resource: FakeResource, namespace: string | undefined, query: Record<string, string>, res: ServerResponse): void {
    if (query.fieldSelector) throw failure(400, 'field selectors are not supported by this fake');
    const selector = parseSelector(query.labelSelector);
    const rvText = query.resourceVersion ?? '';
    let replay: StoreEvent[] | undefined;
    let initial: KubeObj[] = [];
    if (rvText === '' || rvText === '0') {
      // no resourceVersion: the current state as ADDED events first, then changes
      initial = this.store.list(resource, namespace);
    } else {
      const rv = Number(rvText);
      if (!Number.isInteger(rv) || rv < 0) throw failure(400, `invalid resource version: ${JSON.stringify(rvText)}`);
      replay = this.store.since(resource, rv);
      if (replay === undefined) {
        if (this.#opts.goneAs === 'http') throw this.#gone(rv);
      }
    }
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-cache, private', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: WatchConn = { resource, namespace, selector, bookmarks: query.allowWatchBookmarks === 'true', res, timer: undefined };
    if (rvText !== '' && rvText !== '0' && replay === undefined) {
      this.#send(w, { type: 'ERROR', object: this.#gone(Number(rvText)).toStatus() });
      res.end();
      return;
    }
    for (const o of initial) if (selector(o.metadata.labels)) this.#send(w, { type: 'ADDED', object: o });
    for (const e of replay ?? []) this.#deliver(w, e);
    this.#watches.add(w);
    res.on('close', () => {
      clearTimeout(w.timer);
      this.#watches.delete(w);
      this.#notify();
    });
    const timeout = Number(query.timeoutSeconds ?? 0);
    if (timeout > 0) {
      w.timer = setTimeout(() => this.#endWatch(w, false), timeout * 1000);
      w.timer.unref();
    }
    this.#notify();
  }

  #gone(rv: number): StatusError {
    return new StatusError(410, 'Expired', `too old resource version: ${rv} (${this.store.compactedRevision})`);
  }

  #fanOut(e: StoreEvent): void {
    for (const w of this.#watches) this.#deliver(w, e);
    this.#notify();
  }

  #deliver(w: WatchConn, e: StoreEvent): void {
    if (e.resource !== w.resource) return;
    if (w.namespace !== undefined && e.object.metadata.namespace !== w.namespace) return;
    if (!w.selector(e.object.metadata.labels)) return;
    this.#send(w, { type: e.type, object: e.object });
  }

  #send(w: WatchConn, event: { type: string; object: unknown }): void {
    if (!w.res.destroyed && !w.res.writableEnded) w.res.write(`${JSON.stringify(event)}\n`);
  }

  #endWatch(w: WatchConn, abrupt: boolean): void {
    clearTimeout(w.timer);
    this.#watches.delete(w);
    if (abrupt) w.res.socket?.destroy();
    else if (!w.res.writableEnded) w.res.end();
  }
}
