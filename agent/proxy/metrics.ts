// Proxy metrics (DESIGN §8 golden signals). Label values stay bounded: identity numbers,
// route names, status classes and verdicts, never IPs, ports, paths or pod names.
// Every metric is documented in docs/metrics.md; a new one goes there too.
//
// Hot path: prom-client hashes and validates the labels on every inc() and observe(), even
// through a labels() child (about 2 µs a request for the two request families here). So a
// request costs one string key and one Map lookup for its (direction, source, destination,
// route) tuple; counters keep a pending count per tuple that a scrape hands to prom-client,
// and the latency histogram is a registry metric of our own holding plain bucket arrays.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export type Direction = 'outbound' | 'inbound';
export type RequestVerdict = 'FORWARDED' | 'DROPPED' | 'ERROR';
/**
 * What became of one retry attempt: `success` the retry got an answer that is not retried
 * again, `failure` it failed again and another retry may follow, `limit_exceeded` the
 * last allowed attempt failed (the caller gets that answer) or no endpoint was left to try,
 * `budget_exhausted` a retry was wanted but the retry budget refused it (no attempt was made).
 */
export type RetryOutcome = 'success' | 'failure' | 'limit_exceeded' | 'budget_exhausted';
/** outlier detection: `ejected` taken out, `returned` back after its ejection time, `skipped` would have been ejected but the max-ejection share was reached */
export type EjectionEvent = 'ejected' | 'returned' | 'skipped';

/** one L7 request, recorded once when its verdict and status are known */
export interface RequestSample {
  /** outbound: the source node's proxy (client side); inbound: the destination's (server side) */
  direction: Direction;
  /** source and destination identity numbers (reserved ids 1..4 included) */
  src: number;
  dst: number;
  /** the route that matched, `namespace/name#rule`, or '' when none did */
  route: string;
  /** HTTP status sent to the client; 0 when none was (connection reset, upgrade without answer) */
  code: number;
  /** grpc-status of a gRPC call (trailer or trailers-only header); absent for plain HTTP */
  grpcStatus?: number | undefined;
  verdict: RequestVerdict;
  /** request headers in to response headers out (or the decision, for a denial) */
  seconds: number;
}

/** what carried() reads of a socket */
export interface CountedSocket {
  readonly bytesRead: number;
  readonly bytesWritten: number;
  once(event: 'close', fn: () => void): unknown;
}

/** per-connection TCP accounting, created once when the connection opens */
export interface ConnectionMetrics {
  /** add bytes (deltas) as seen by the source workload: sent toward the destination, received back */
  bytes(sent: number, received: number): void;
  /** count the close; idempotent */
  close(): void;
}

/** in-cluster latencies sit at the low end (0.5 ms = a same-node hop), timeouts at the high end */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Label tuples cached per family. Identities × routes of one node stay far below this; if
 * churn ever reaches it the cache starts over (the series stay in the registry), so memory
 * is bounded either way.
 */
const MAX_CACHED_TUPLES = 8192;

const IDENTITY_PAIR = ['direction', 'source_identity', 'destination_identity'] as const;
const REQUEST_LABELS = [...IDENTITY_PAIR, 'route', 'code_class', 'grpc_status', 'verdict'] as const;

type Labels = Record<string, string>;

interface CounterChild { readonly labels: Labels; pending: number }

/** a counter whose children are plain numbers on the hot path, flushed into prom-client on collect */
class FastCounter {
  readonly metric: Counter<string>;
  private readonly children = new Map<string, CounterChild>();
  /** children handed out by child(): flushed with the rest, dropped by release() */
  private readonly owned = new Set<CounterChild>();

  constructor(registry: Registry, name: string, help: string, labelNames: readonly string[]) {
    const flush = (): void => this.flush();
    this.metric = new Counter({ name, help, labelNames, registers: [registry], collect: flush });
  }

  /** add to the tuple under `key`; `labels` builds the label object on the first use only */
  add(key: string, labels: () => Labels, n = 1): void {
    let c = this.children.get(key);
    if (c === undefined) {
      if (this.children.size >= MAX_CACHED_TUPLES) {
        this.flush();
        this.children.clear();
      }
      c = { labels: labels(), pending: 0 };
      this.children.set(key, c);
      // the series exists from its first event, even before the scrape that flushes it
      this.metric.inc(c.labels, 0);
    }
    c.pending += n;
  }

  /** children handed out and not yet released */
  get handedOut(): number { return this.owned.size; }

  /** a child the caller keeps (in its own cache, bounded by it) and bumps with `child.pending += n` */
  child(labels: Labels): CounterChild {
    const c = { labels, pending: 0 };
    this.owned.add(c);
    this.metric.inc(labels, 0);
    return c;
  }

  /** flush and forget the children handed out (the caller dropped its cache) */
  release(): void {
    this.flush();
    this.owned.clear();
  }

  private flush(): void {
    for (const set of [this.children.values(), this.owned.values()]) {
      for (const c of set) {
        if (c.pending > 0) {
          this.metric.inc(c.labels, c.pending);
          c.pending = 0;
        }
      }
    }
  }
}

interface HistogramChild { readonly labels: Labels; readonly counts: Float64Array; sum: number; count: number }

/**
 * A Prometheus histogram registered as a custom metric (prom-client's registry takes any
 * object with name, help, type, get() and reset()). Its children are the storage, one per
 * label tuple: as many as prom-client's own histogram would keep.
 */
class FastHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly bounds: readonly number[];
  private readonly children = new Map<string, HistogramChild>();

  constructor(registry: Registry, name: string, help: string, bounds: readonly number[]) {
    this.name = name;
    this.help = help;
    this.bounds = bounds;
    registry.registerMetric(this as unknown as Histogram);
  }

  child(key: string, labels: () => Labels): HistogramChild {
    let c = this.children.get(key);
    if (c === undefined) {
      c = { labels: labels(), counts: new Float64Array(this.bounds.length), sum: 0, count: 0 };
      this.children.set(key, c);
    }
    return c;
  }

  observe(c: HistogramChild, v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    if (i < b.length) c.counts[i]!++;
    c.sum += v;
    c.count++;
  }

  get(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> }> {
    const values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> = [];
    const bucket = `${this.name}_bucket`;
    for (const c of this.children.values()) {
      let acc = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        acc += c.counts[i]!;
        values.push({ labels: { ...c.labels, le: this.bounds[i]! }, value: acc, metricName: bucket });
      }
      values.push({ labels: { ...c.labels, le: '+Inf' }, value: c.count, metricName: bucket });
      values.push({ labels: c.labels, value: c.sum, metricName: `${this.name}_sum` });
      values.push({ labels: c.labels, value: c.count, metricName: `${this.name}_count` });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }

  reset(): void {
    this.children.clear();
  }
}

/** one (direction, source, destination, route) tuple: its latency child and its request counters by status and verdict */
interface RequestSeries {
  readonly key: string;
  readonly base: Labels;
  /** made at the first observation: a tuple that only saw denials has no latency series */
  latency: HistogramChild | undefined;
  readonly counts: Map<number, CounterChild>;
}

const VERDICT_INDEX: Record<RequestVerdict, number> = { FORWARDED: 0, DROPPED: 1, ERROR: 2 };
/** gRPC defines codes 0..16; anything else is counted as "other" so a broken server cannot grow the label set */
const MAX_GRPC_STATUS = 16;

export class ProxyMetrics {
  private readonly requestsTotal: FastCounter;
  private readonly durationSeconds: FastHistogram;
  private readonly series = new Map<string, RequestSeries>();
  /** the same series by source, destination and route, one tree per direction */
  private readonly outboundSeries = new Map<number | string, Map<number | string, Map<string, RequestSeries>>>();
  private readonly inboundSeries = new Map<number | string, Map<number | string, Map<string, RequestSeries>>>();
  private readonly verdictsTotal: FastCounter;
  private readonly retriesTotal: FastCounter;
  private readonly ejectionsTotal: FastCounter;
  private readonly ejectedGauge: Gauge<'service'>;
  /** ejected endpoints per service, so the gauge counts each endpoint once */
  private readonly ejected = new Map<string, Set<string>>();
  private readonly rateLimitedTotal: FastCounter;
  private readonly tcpOpened: FastCounter;
  private readonly tcpClosed: FastCounter;
  private readonly tcpSent: FastCounter;
  private readonly tcpReceived: FastCounter;

  /** connections accepted per side of the proxy (every socket, HTTP or opaque) */
  readonly connections: Counter<'direction'>;
  readonly active: Gauge<'direction'>;
  readonly bytes: Counter<'direction'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.requestsTotal = new FastCounter(registry, 'nodal_proxy_requests_total',
      'L7 requests by direction, source/destination identity, route, HTTP status class, gRPC status and verdict',
      REQUEST_LABELS);
    this.durationSeconds = new FastHistogram(registry, 'nodal_proxy_request_duration_seconds',
      'request headers in to response headers out, for requests that reached (or tried to reach) the upstream',
      LATENCY_BUCKETS);
    this.verdictsTotal = new FastCounter(registry, 'nodal_proxy_policy_verdicts_total',
      'policy decisions taken by the proxy (per opaque connection, per HTTP request), by the policy that decided',
      ['verdict', 'policy']);
    this.retriesTotal = new FastCounter(registry, 'nodal_proxy_retries_total',
      'retry attempts by destination service and outcome', ['service', 'outcome']);
    this.ejectionsTotal = new FastCounter(registry, 'nodal_proxy_outlier_ejections_total',
      'outlier detection events by destination service', ['service', 'event']);
    this.ejectedGauge = new Gauge({
      name: 'nodal_proxy_outlier_ejected_endpoints',
      help: 'endpoints ejected by outlier detection now, by destination service',
      labelNames: ['service'],
      registers,
    });
    this.rateLimitedTotal = new FastCounter(registry, 'nodal_proxy_rate_limited_total',
      'requests refused by a local rate limit (answered 429), by destination service', ['service']);
    this.tcpOpened = new FastCounter(registry, 'nodal_proxy_tcp_connections_opened_total',
      'proxied connections opened, by direction and source/destination identity', IDENTITY_PAIR);
    this.tcpClosed = new FastCounter(registry, 'nodal_proxy_tcp_connections_closed_total',
      'proxied connections closed, by direction and source/destination identity', IDENTITY_PAIR);
    this.tcpSent = new FastCounter(registry, 'nodal_proxy_tcp_sent_bytes_total',
      'bytes the source workload sent toward the destination, by direction and identity pair', IDENTITY_PAIR);
    this.tcpReceived = new FastCounter(registry, 'nodal_proxy_tcp_received_bytes_total',
      'bytes the source workload received from the destination, by direction and identity pair', IDENTITY_PAIR);

    this.connections = new Counter({
      name: 'nodal_proxy_connections_total',
      help: 'connections accepted: outbound (redirected from a local pod) and inbound (delivered to a local pod)',
      labelNames: ['direction'],
      registers,
    });
    this.active = new Gauge({
      name: 'nodal_proxy_active_connections',
      help: 'connections open now, by side of the proxy',
      labelNames: ['direction'],
      registers,
    });
    this.bytes = new Counter({
      name: 'nodal_proxy_bytes_total',
      help: 'bytes carried both ways, counted on the pod-facing socket of each side when it closes',
      labelNames: ['direction'],
      registers,
    });

  }

  /**
   * One L7 request. Counts it, and observes its latency unless policy dropped it (a denial
   * never reached the upstream: its time says nothing about the service).
   */
  request(r: RequestSample): void {
    const s = this.requestSeries(r.direction, r.src, r.dst, r.route);
    const g = r.grpcStatus;
    const grpc = g === undefined ? 0 : g >= 0 && g <= MAX_GRPC_STATUS ? g + 1 : MAX_GRPC_STATUS + 2;
    const sub = (classIndex(r.code) * 32 + grpc) * 4 + VERDICT_INDEX[r.verdict];
    let c = s.counts.get(sub);
    if (c === undefined) {
      const grpcLabel = g === undefined ? '' : grpc <= MAX_GRPC_STATUS + 1 ? String(g) : 'other';
      c = this.requestsTotal.child({ ...s.base, code_class: codeClass(r.code), grpc_status: grpcLabel, verdict: r.verdict });
      s.counts.set(sub, c);
    }
    c.pending++;
    if (r.verdict !== 'DROPPED') this.durationSeconds.observe(s.latency ??= this.latencyChild(s), r.seconds);
  }

  private requestSeries(direction: Direction, src: number | string, dst: number | string, route: string): RequestSeries {
    // looked up by its parts (number keys, then the route): no key string built per request
    const bySrc = direction === 'outbound' ? this.outboundSeries : this.inboundSeries;
    let byDst = bySrc.get(src);
    if (byDst === undefined) bySrc.set(src, (byDst = new Map()));
    let byRoute = byDst.get(dst);
    if (byRoute === undefined) byDst.set(dst, (byRoute = new Map()));
    let s = byRoute.get(route);
    if (s === undefined) {
      if (this.series.size >= MAX_CACHED_TUPLES || this.requestsTotal.handedOut >= MAX_CACHED_TUPLES) {
        // the counts are flushed into prom-client first: nothing recorded is lost
        this.requestsTotal.release();
        this.series.clear();
        this.outboundSeries.clear();
        this.inboundSeries.clear();
        return this.requestSeries(direction, src, dst, route);
      }
      const key = `${direction}|${src}|${dst}|${route}`;
      const base = { direction, source_identity: String(src), destination_identity: String(dst), route };
      s = { key, base, latency: undefined, counts: new Map() };
      this.series.set(key, s);
      byRoute.set(route, s);
    }
    return s;
  }

  /** a policy decision; `policy` is `namespace/name` of the deciding policy, '' when none decided */
  verdict(verdict: 'ALLOW' | 'DENY' | (string & {}), policy: string): void {
    this.verdictsTotal.add(`${verdict}|${policy}`, () => ({ verdict, policy }));
  }

  /** one retry attempt toward `service` (`namespace/name`) and what became of it */
  retry(service: string, outcome: RetryOutcome): void {
    this.retriesTotal.add(`${service}|${outcome}`, () => ({ service, outcome }));
  }

  /** an outlier-detection event for one endpoint (any stable key: `ip:port`, pod name); the endpoint is not a label */
  ejection(service: string, endpoint: string, event: EjectionEvent): void {
    this.ejectionsTotal.add(`${service}|${event}`, () => ({ service, event }));
    if (event === 'skipped') return;
    let set = this.ejected.get(service);
    if (event === 'ejected') {
      if (!set) this.ejected.set(service, set = new Set());
      set.add(endpoint);
    } else if (set) {
      set.delete(endpoint);
      if (set.size === 0) this.ejected.delete(service);
    }
    this.ejectedGauge.set({ service }, set?.size ?? 0);
  }

  /** a request refused by a local rate limit */
  rateLimited(service: string): void {
    this.rateLimitedTotal.add(service, () => ({ service }));
  }

  /**
   * A proxied connection between two identities, counted from its socket: opened now, its
   * bytes and its close when the socket closes. `sourceSide`: the socket the source's bytes
   * are read from (the client's, on the outbound side); else the one they are written to
   * (the pod's, on the inbound side).
   */
  carried(direction: Direction, socket: CountedSocket, src: number, dst: number, sourceSide: boolean): void {
    const m = this.connection(direction, src, dst);
    socket.once('close', () => {
      m.bytes(sourceSide ? socket.bytesRead : socket.bytesWritten, sourceSide ? socket.bytesWritten : socket.bytesRead);
      m.close();
    });
  }

  /** a proxied connection opened between two identities; keep the handle for its bytes and close */
  connection(direction: Direction, src: number, dst: number): ConnectionMetrics {
    const key = `${direction}|${src}|${dst}`;
    const labels = (): Labels => ({ direction, source_identity: String(src), destination_identity: String(dst) });
    this.tcpOpened.add(key, labels);
    let closed = false;
    return {
      bytes: (sent, received) => {
        if (sent > 0) this.tcpSent.add(key, labels, sent);
        if (received > 0) this.tcpReceived.add(key, labels, received);
      },
      close: () => {
        if (closed) return;
        closed = true;
        this.tcpClosed.add(key, labels);
      },
    };
  }

  private observe(direction: Direction, src: number | string, dst: number | string, route: string, seconds: number): void {
    const s = this.requestSeries(direction, src, dst, route);
    this.durationSeconds.observe(s.latency ??= this.latencyChild(s), seconds);
  }

  private latencyChild(s: RequestSeries): HistogramChild {
    return this.durationSeconds.child(s.key, () => s.base);
  }
}

/** index of codeClass(code): 1xx..5xx → 1..5, anything else 0 */
function classIndex(code: number): number {
  return code >= 100 && code < 600 ? Math.floor(code / 100) : 0;
}

export function codeClass(code: number): string {
  if (code >= 100 && code < 600) return `${Math.floor(code / 100)}xx`;
  return 'other';
}

/** the `policy` label of a decision: `namespace/name`, '' when no policy decided */
export function policyLabel(p: { namespace: string; name: string } | undefined): string {
  return p ? `${p.namespace}/${p.name}` : '';
}
