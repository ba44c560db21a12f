// `nodal top`: a live table of HTTP traffic per route — source workload → destination
// workload, method and path — with requests per second, success rate and latency
// percentiles over a sliding window, like `linkerd viz top` / `linkerd viz routes`. It
// follows the L7 flows of the relay (or one agent); the aggregation (RouteTable) is pure,
// so its window, percentiles and success rate are tested on synthetic flows.
import type { Command } from 'commander';
import {
  alignTable, flowFromWire, RESERVED_IDENTITY_NAMES, timeFromMs, urlPath,
  type Flow, type FlowEndpoint, type FlowFilter, type WireFlow, type WireGetFlowsRequest, type WireGetFlowsResponse,
} from '../agent/flows/index.ts';
import { durationArg, serverOf, streamFlows, DEFAULT_SERVER, type ObserveIO } from './observe.ts';
import { ObserveUsageError } from './observe/request.ts';

/** long enough for a steady rate at a few requests a second, short enough to show a change within seconds */
export const DEFAULT_WINDOW = '10s';
/** about as often as a person reads a changing table */
export const DEFAULT_INTERVAL = '1s';
/**
 * Distinct routes kept. A client that puts ids the template does not recognise in its
 * paths must not grow the table without bound: past this, new routes of a source →
 * destination pair are counted under the path "(other)".
 */
export const MAX_ROUTES = 1000;
/** Cilium's monitor message type of an L7 access log: what an HTTP flow is */
const L7_EVENT_TYPE = 129;

export interface RouteKey {
  source: string;
  destination: string;
  method: string;
  path: string;
}

export interface TopRow extends RouteKey {
  /** requests in the window */
  requests: number;
  rps: number;
  /** 0..1: answered, not 5xx, not denied */
  successRate: number;
  /** undefined when no request in the window carried a latency */
  p50Ms: number | undefined;
  p99Ms: number | undefined;
}

// --- naming ---

function labelValue(labels: string[] | undefined, key: string): string | undefined {
  for (const l of labels ?? []) {
    const eq = l.indexOf('=');
    if (eq < 0) continue;
    const k = l.slice(0, eq);
    // Cilium labels carry a source: k8s:app=web
    if (k === key || k.endsWith(`:${key}`)) return l.slice(eq + 1);
  }
  return undefined;
}

/**
 * The workload an endpoint belongs to, as stable across pod restarts as the flow allows:
 * its workload, else its app.kubernetes.io/name or app label, else its pod name
 * (namespaced); a reserved identity by name; an address as a last resort.
 */
export function workloadOf(ep: FlowEndpoint | undefined, service?: { name: string; namespace: string }, ip?: string): string {
  const name = ep?.workloads?.[0]?.name ?? labelValue(ep?.labels, 'app.kubernetes.io/name') ?? labelValue(ep?.labels, 'app') ?? ep?.podName;
  if (name) return ep?.namespace ? `${ep.namespace}/${name}` : name;
  if (service) return `${service.namespace}/${service.name}`;
  const reserved = ep?.labels?.find((l) => l.startsWith('reserved:'));
  if (reserved) return reserved.slice('reserved:'.length);
  if (ep?.identity) return RESERVED_IDENTITY_NAMES[ep.identity] ?? `identity ${ep.identity}`;
  return ip || 'unknown';
}

const ID_SEGMENT = /^(?:\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,})$/i;

/** the path of a URL with id-like segments (numbers, UUIDs, long hex) as ":id" */
export function pathTemplate(url: string | undefined): string {
  if (!url) return '/';
  const path = urlPath(url) || '/';
  return path.split('/').map((s) => (ID_SEGMENT.test(s) ? ':id' : s)).join('/');
}

/** nearest-rank percentile of an ascending list */
export function percentile(sorted: number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

// --- the aggregation ---

/** one route's requests in time order: parallel arrays read from `head` (no shift()) */
class Samples {
  times: number[] = [];
  latencies: number[] = [];
  ok: boolean[] = [];
  head = 0;

  add(t: number, latencyMs: number, ok: boolean): void {
    // flows from several nodes arrive nearly in order; keep the arrays sorted by time
    let i = this.times.length;
    while (i > this.head && this.times[i - 1]! > t) i--;
    this.times.splice(i, 0, t);
    this.latencies.splice(i, 0, latencyMs);
    this.ok.splice(i, 0, ok);
  }

  expire(before: number): void {
    while (this.head < this.times.length && this.times[this.head]! < before) this.head++;
    // compact once the dead prefix is the larger part
    if (this.head > 64 && this.head * 2 > this.times.length) {
      this.times.splice(0, this.head);
      this.latencies.splice(0, this.head);
      this.ok.splice(0, this.head);
      this.head = 0;
    }
  }

  get size(): number {
    return this.times.length - this.head;
  }
}

export interface RouteTableOptions {
  windowMs: number;
  maxRoutes?: number;
}

/**
 * Requests per route over a sliding window. A request counts at its flow's time, clamped
 * to when it arrived (a node whose clock runs ahead cannot keep rows alive), so history
 * asked for with `since` fills the first table at once.
 */
export class RouteTable {
  readonly windowMs: number;
  private readonly maxRoutes: number;
  private readonly routes = new Map<string, { key: RouteKey; samples: Samples }>();
  /** flows the servers reported lost (lost_events), since the start */
  lostEvents = 0;

  constructor(opts: RouteTableOptions) {
    if (!(opts.windowMs > 0)) throw new RangeError(`window must be positive, not ${opts.windowMs}`);
    this.windowMs = opts.windowMs;
    this.maxRoutes = opts.maxRoutes ?? MAX_ROUTES;
  }

  /** count one flow; false when it is not an HTTP request record */
  add(f: Flow, arrivalMs: number): boolean {
    const http = f.l7?.http;
    if (!http) return false;
    // Hubble-style reply records run destination → source; nodal's are never replies
    const [src, dst, srcSvc, dstSvc, srcIp, dstIp] = f.isReply
      ? [f.destination, f.source, f.destinationService, f.sourceService, f.IP?.destination, f.IP?.source]
      : [f.source, f.destination, f.sourceService, f.destinationService, f.IP?.source, f.IP?.destination];
    const key: RouteKey = {
      source: workloadOf(src, srcSvc, srcIp),
      destination: workloadOf(dst, dstSvc, dstIp),
      method: (http.method ?? '').toUpperCase() || '-',
      path: pathTemplate(http.url),
    };
    let id = JSON.stringify([key.source, key.destination, key.method, key.path]);
    let route = this.routes.get(id);
    if (!route) {
      if (this.routes.size >= this.maxRoutes) {
        key.path = '(other)';
        id = JSON.stringify([key.source, key.destination, key.method, key.path]);
        route = this.routes.get(id);
      }
      if (!route) {
        route = { key, samples: new Samples() };
        this.routes.set(id, route);
      }
    }
    const t = Math.min(f.time.seconds * 1000 + f.time.nanos / 1e6, arrivalMs);
    const code = http.code ?? 0;
    const ok = f.verdict !== 'DROPPED' && f.verdict !== 'ERROR' && code < 500;
    route.samples.add(t, f.l7?.latencyNs !== undefined ? f.l7.latencyNs / 1e6 : Number.NaN, ok);
    return true;
  }

  /** the routes with requests in the window ending at `nowMs`, busiest first */
  rows(nowMs: number): TopRow[] {
    const from = nowMs - this.windowMs;
    const out: TopRow[] = [];
    for (const [id, { key, samples }] of this.routes) {
      samples.expire(from);
      if (samples.size === 0) {
        this.routes.delete(id);
        continue;
      }
      let requests = 0;
      let ok = 0;
      const lat: number[] = [];
      for (let i = samples.head; i < samples.times.length && samples.times[i]! <= nowMs; i++) {
        requests++;
        if (samples.ok[i]) ok++;
        const l = samples.latencies[i]!;
        if (!Number.isNaN(l)) lat.push(l);
      }
      if (requests === 0) continue;
      lat.sort((a, b) => a - b);
      out.push({
        ...key, requests, rps: requests / (this.windowMs / 1000), successRate: ok / requests,
        p50Ms: percentile(lat, 50), p99Ms: percentile(lat, 99),
      });
    }
    const cmp = (x: string, y: string): number => (x < y ? -1 : x > y ? 1 : 0);
    return out.sort((a, b) => b.rps - a.rps || cmp(a.source, b.source) || cmp(a.destination, b.destination)
      || cmp(a.method, b.method) || cmp(a.path, b.path));
  }
}

// --- rendering ---

export interface TopMeta {
  windowMs: number;
  lostEvents: number;
  unavailableNodes: string[];
}

function fmtLatency(ms: number | undefined): string {
  if (ms === undefined) return '-';
  if (ms < 1) return `${ms.toFixed(2)}ms`;
  if (ms < 10) return `${ms.toFixed(1)}ms`;
  return `${Math.round(ms)}ms`;
}

function fmtSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** the table, with a line above that says what it covers and what was lost */
export function renderTable(rows: TopRow[], meta: TopMeta): string {
  const head = [`HTTP routes over the last ${fmtSeconds(meta.windowMs)}: ${rows.length}`];
  // loss is shown, never silent: these rows undercount by at least this much
  if (meta.lostEvents > 0) head.push(`EVENTS LOST: ${meta.lostEvents}`);
  if (meta.unavailableNodes.length > 0) head.push(`nodes unavailable: ${meta.unavailableNodes.join(', ')}`);
  if (rows.length === 0) return `${head.join('   ')}\n(no HTTP requests seen)\n`;
  const table = alignTable([
    ['SOURCE', 'DESTINATION', 'METHOD', 'PATH', 'SUCCESS', 'RPS', 'LATENCY_P50', 'LATENCY_P99'],
    ...rows.map((r) => [r.source, r.destination, r.method, r.path, `${(r.successRate * 100).toFixed(2)}%`,
      `${r.rps.toFixed(1)}rps`, fmtLatency(r.p50Ms), fmtLatency(r.p99Ms)]),
  ]);
  return `${head.join('   ')}\n${table}\n`;
}

const round = (n: number | undefined, digits: number): number | null => (n === undefined ? null : Number(n.toFixed(digits)));

/** the same as one JSON document (-o json) */
export function renderJson(rows: TopRow[], meta: TopMeta): Record<string, unknown> {
  return {
    window_seconds: meta.windowMs / 1000,
    lost_events: meta.lostEvents,
    unavailable_nodes: meta.unavailableNodes,
    routes: rows.map((r) => ({
      source: r.source, destination: r.destination, method: r.method, path: r.path, requests: r.requests,
      rps: round(r.rps, 3), success_rate: round(r.successRate, 4), latency_ms_p50: round(r.p50Ms, 3), latency_ms_p99: round(r.p99Ms, 3),
    })),
  };
}

// --- the command ---

export interface TopOptions {
  server?: string;
  timeout?: string;
  namespace?: string[];
  window?: string;
  interval?: string;
  once?: boolean;
  output?: string;
}

/** L7 flows only; with -n, those from or to the namespaces (as `observe -n ... -t l7`) */
export function topRequest(namespaces: string[], windowMs: number, once: boolean, nowMs: number): WireGetFlowsRequest {
  const l7 = [{ type: L7_EVENT_TYPE }];
  const whitelist: FlowFilter[] = namespaces.length === 0
    ? [{ eventType: l7 }]
    : [{ sourcePod: namespaces.map((n) => `${n}/`), eventType: l7 }, { destinationPod: namespaces.map((n) => `${n}/`), eventType: l7 }];
  const req: WireGetFlowsRequest = { whitelist, blacklist: [], since: timeFromMs(nowMs - windowMs) };
  // --once: the last window, at once; otherwise that window and then live
  if (once) req.until = timeFromMs(nowMs);
  else req.follow = true;
  return req;
}

/** run `nodal top`; resolves with the exit code (live mode ends on Ctrl-C or `signal`) */
export async function runTop(o: TopOptions, io: ObserveIO = { out: process.stdout, err: process.stderr }, signal?: AbortSignal): Promise<number> {
  let windowMs: number;
  let intervalMs: number;
  let timeoutMs: number;
  const json = (o.output ?? 'table') === 'json';
  try {
    if (!json && (o.output ?? 'table') !== 'table') throw new ObserveUsageError(`-o: "${o.output}" is not one of table, json`);
    windowMs = durationArg('window', o.window ?? DEFAULT_WINDOW);
    intervalMs = durationArg('interval', o.interval ?? DEFAULT_INTERVAL);
    timeoutMs = durationArg('timeout', o.timeout ?? '5s');
  } catch (err) {
    io.err.write(`nodal top: ${(err as Error).message}\n`);
    return 1;
  }
  const nowMs = Date.now();
  const req = topRequest(o.namespace ?? [], windowMs, Boolean(o.once), nowMs);
  const table = new RouteTable({ windowMs });
  const unavailable = new Set<string>();
  const onData = (r: WireGetFlowsResponse): void => {
    if (r.flow) table.add(flowFromWire(r.flow as WireFlow), Date.now());
    else if (r.lostEvents) table.lostEvents += Number(r.lostEvents.numEventsLost ?? 0);
    else if (r.nodeStatus) {
      const names = r.nodeStatus.nodeNames ?? [];
      if (r.nodeStatus.stateChange === 'NODE_UNAVAILABLE' || r.nodeStatus.stateChange === 'NODE_ERROR') for (const n of names) unavailable.add(n);
      else for (const n of names) unavailable.delete(n);
    }
  };
  const tty = Boolean((io.out as { isTTY?: boolean }).isTTY);
  const draw = (at: number): void => {
    const rows = table.rows(at);
    const meta: TopMeta = { windowMs, lostEvents: table.lostEvents, unavailableNodes: [...unavailable].sort() };
    const text = json ? `${JSON.stringify(renderJson(rows, meta))}\n` : renderTable(rows, meta);
    // redraw in place on a terminal; a pipe gets one table after another
    io.out.write(tty && !o.once ? `\x1b[H\x1b[2J${text}` : o.once || json ? text : `${text}\n`);
  };

  const server = serverOf(o.server);
  if (o.once) {
    const code = await streamFlows(server, timeoutMs, req, io, 'top', onData, signal);
    if (code === 0) draw(nowMs);
    return code;
  }
  const timer = setInterval(() => draw(Date.now()), intervalMs);
  try {
    return await streamFlows(server, timeoutMs, req, io, 'top', onData, signal);
  } finally {
    clearInterval(timer);
  }
}

/** `nodal top`: requests per route, live */
export function registerTop(program: Command): void {
  program.command('top')
    .description('live HTTP traffic per route (source → destination, method, path): requests/s, success rate, p50/p99 latency')
    .option('--server <address>', `Observer to ask: host:port or unix:/path (env NODAL_SERVER, default ${DEFAULT_SERVER})`)
    .option('--timeout <duration>', 'how long to wait for the connection', '5s')
    .option('-n, --namespace <ns>', 'only requests from or to this namespace (repeatable)', (v: string, prev: string[]) => [...prev, v], [])
    .option('--window <duration>', 'the sliding window the rates and percentiles cover', DEFAULT_WINDOW)
    .option('--interval <duration>', 'how often the table is redrawn', DEFAULT_INTERVAL)
    .option('--once', 'print one table over the last window and exit (for scripts)')
    .option('-o, --output <format>', 'table | json', 'table')
    .action(async (o: TopOptions) => {
      process.exitCode = await runTop(o);
    });
}
