// Active health checking for one Service's endpoints (Envoy's health checkers, the
// TrafficPolicy healthCheck): every intervalMs each endpoint gets one probe that must
// succeed within timeoutMs.
// - TCP: the connection is accepted. HTTP: `GET path` (default "/") answers with a status in
//   expectedStatuses, or 200-399 when none are listed. GRPC: grpc.health.v1.Health/Check for
//   grpcService ("" = the whole server) over HTTP/2 cleartext answers SERVING with
//   grpc-status 0;
// - an endpoint turns unhealthy after unhealthyThreshold failures in a row and healthy again
//   after healthyThreshold successes in a row. A new endpoint counts as healthy until probes
//   say otherwise: it came from Kubernetes as ready, and holding traffic back until a first
//   probe would stall every rollout by up to one interval (Envoy waits; we do not);
// - probes connect through the injected `connect(endpoint)`, which returns a Duplex that
//   emits 'connect' once the endpoint accepted (net.Socket does; a tunnel adapter must emit
//   it when its CONNECT is answered), so the proxy can route probes through its tunnel and
//   bind them to the address the ingress guard admits. netConnector() is the plain default;
// - the first probe of an endpoint waits a random part of one interval, so a snapshot with
//   many endpoints does not fire a storm of probes at once; later ones follow each probe's
//   end by intervalMs. Timers are unref'd; close() cancels timers and probes in flight.

import { request as httpRequest } from 'node:http';
import { connect as h2connect, constants as h2 } from 'node:http2';
import { connect as netConnect } from 'node:net';
import type { Duplex } from 'node:stream';
import type { CompiledTrafficPolicy } from '../../../control/api/types.ts';
import { grpcMessage, grpcPayload } from '../exchange.ts';

export type HealthConfig = NonNullable<CompiledTrafficPolicy['healthCheck']>;

export interface HealthEndpoint { key: string; address: string; port: number }

export type Connector = (ep: HealthEndpoint) => Duplex;

/** the default connector: a TCP connection from `localAddress` (the address the ingress guard admits) */
export function netConnector(localAddress?: string): Connector {
  return (ep) => netConnect({ host: ep.address, port: ep.port, localAddress });
}

export interface HealthCheckerOptions {
  connect: Connector;
  random: () => number;
  /** Host / :authority of HTTP and gRPC probes; default the endpoint's address:port */
  authority?: string;
  /** healthy ↔ unhealthy transitions, for metrics and logs */
  onChange?: (key: string, healthy: boolean) => void;
}

/** grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING */
const GRPC_SERVING = 1;

function authorityOf(ep: HealthEndpoint): string {
  return ep.address.includes(':') ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`;
}

/** a probe's settle-once bookkeeping: timeout, abort and cleanup in one place */
function settle(timeoutMs: number, signal: AbortSignal, cleanup: () => void): { promise: Promise<boolean>; finish: (ok: boolean) => void } {
  let resolve!: (ok: boolean) => void;
  const promise = new Promise<boolean>((r) => { resolve = r; });
  let done = false;
  const onAbort = () => finish(false);
  const timer = setTimeout(onAbort, timeoutMs);
  timer.unref();
  signal.addEventListener('abort', onAbort, { once: true });
  function finish(ok: boolean): void {
    if (done) return;
    done = true;
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
    cleanup();
    resolve(ok);
  }
  if (signal.aborted) finish(false);
  return { promise, finish };
}

function tcpProbe(cfg: HealthConfig, ep: HealthEndpoint, connect: Connector, signal: AbortSignal): Promise<boolean> {
  const sock = connect(ep);
  const { promise, finish } = settle(cfg.timeoutMs, signal, () => sock.destroy());
  sock.once('connect', () => finish(true));
  sock.once('error', () => finish(false));
  sock.once('close', () => finish(false));
  return promise;
}

function statusOk(cfg: HealthConfig, status: number): boolean {
  if (cfg.expectedStatuses && cfg.expectedStatuses.length > 0) return cfg.expectedStatuses.includes(status);
  return status >= 200 && status <= 399;
}

function httpProbe(cfg: HealthConfig, ep: HealthEndpoint, connect: Connector, signal: AbortSignal, authority: string | undefined): Promise<boolean> {
  const req = httpRequest({
    method: 'GET',
    path: cfg.path ?? '/',
    headers: { host: authority ?? authorityOf(ep), 'user-agent': 'nodal-health-check', connection: 'close' },
    createConnection: () => connect(ep),
  });
  const { promise, finish } = settle(cfg.timeoutMs, signal, () => req.destroy());
  req.once('response', (res) => {
    res.resume();
    finish(statusOk(cfg, res.statusCode ?? 0));
  });
  req.once('error', () => finish(false));
  req.end();
  return promise;
}

/** HealthCheckRequest { string service = 1; } in a gRPC length-prefixed message */
function grpcCheckFrame(service: string): Buffer {
  const name = Buffer.from(service, 'utf8');
  const msg = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(name.length), name]);
  return grpcMessage(msg);
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) { out.push((n & 0x7f) | 0x80); n >>>= 7; }
  out.push(n);
  return Buffer.from(out);
}

/** HealthCheckResponse.status (field 1, varint) from a gRPC message; 0 (UNKNOWN) if absent */
export function grpcServingStatus(body: Buffer): number {
  const msg = grpcPayload(body);
  let i = 0;
  while (i < msg.length) {
    const tag = msg[i++]!;
    if (tag === 0x08) {
      let v = 0, shift = 0;
      while (i < msg.length) { const b = msg[i++]!; v |= (b & 0x7f) << shift; if (b < 0x80) break; shift += 7; }
      return v;
    }
    const wire = tag & 7;
    if (wire === 0) { while (i < msg.length && msg[i++]! >= 0x80); }
    else if (wire === 2) { let l = 0, shift = 0; while (i < msg.length) { const b = msg[i++]!; l |= (b & 0x7f) << shift; if (b < 0x80) break; shift += 7; } i += l; }
    else return 0; // no other wire types in this message
  }
  return 0;
}

function grpcProbe(cfg: HealthConfig, ep: HealthEndpoint, connect: Connector, signal: AbortSignal, authority: string | undefined): Promise<boolean> {
  const session = h2connect(`http://${authority ?? authorityOf(ep)}`, { createConnection: () => connect(ep) });
  const { promise, finish } = settle(cfg.timeoutMs, signal, () => session.destroy());
  session.once('error', () => finish(false));
  const stream = session.request({
    [h2.HTTP2_HEADER_METHOD]: 'POST',
    [h2.HTTP2_HEADER_PATH]: '/grpc.health.v1.Health/Check',
    'content-type': 'application/grpc',
    te: 'trailers',
    'user-agent': 'nodal-health-check',
  });
  let grpcStatus: string | undefined;
  let httpStatus = 0;
  const chunks: Buffer[] = [];
  stream.on('response', (headers) => {
    httpStatus = Number(headers[h2.HTTP2_HEADER_STATUS]);
    const s = headers['grpc-status']; // trailers-only response
    if (s !== undefined) grpcStatus = String(s);
  });
  stream.on('trailers', (trailers) => { if (trailers['grpc-status'] !== undefined) grpcStatus = String(trailers['grpc-status']); });
  stream.on('data', (c: Buffer) => chunks.push(c));
  stream.on('end', () => finish(httpStatus === 200 && grpcStatus === '0' && grpcServingStatus(Buffer.concat(chunks)) === GRPC_SERVING));
  stream.on('error', () => finish(false));
  stream.end(grpcCheckFrame(cfg.grpcService ?? ''));
  return promise;
}

/** one probe of one endpoint: true if it passed within the timeout */
export function probe(cfg: HealthConfig, ep: HealthEndpoint, connect: Connector, signal: AbortSignal, authority?: string): Promise<boolean> {
  switch (cfg.protocol) {
    case 'TCP': return tcpProbe(cfg, ep, connect, signal);
    case 'HTTP': return httpProbe(cfg, ep, connect, signal, authority);
    case 'GRPC': return grpcProbe(cfg, ep, connect, signal, authority);
  }
}

class ProbeState {
  ep: HealthEndpoint;
  healthy = true;
  successes = 0;
  failures = 0;
  timer: NodeJS.Timeout | undefined;
  inflight: AbortController | undefined;
  removed = false;

  constructor(ep: HealthEndpoint) {
    this.ep = ep;
  }

  stop(): void {
    this.removed = true;
    clearTimeout(this.timer);
    this.inflight?.abort();
  }
}

export class HealthChecker {
  private readonly cfg: HealthConfig;
  private readonly opts: HealthCheckerOptions;
  private readonly states = new Map<string, ProbeState>();
  private closed = false;
  /** probes run so far (metrics, tests) */
  probes = 0;

  constructor(cfg: HealthConfig, opts: HealthCheckerOptions) {
    this.cfg = cfg;
    this.opts = opts;
  }

  /** the endpoint set changed: probe new endpoints (jittered), stop probing gone ones */
  update(endpoints: readonly HealthEndpoint[]): void {
    if (this.closed) return;
    const keep = new Set<string>();
    for (const ep of endpoints) {
      keep.add(ep.key);
      const s = this.states.get(ep.key);
      if (s) { s.ep = ep; continue; }
      const n = new ProbeState(ep);
      this.states.set(ep.key, n);
      this.schedule(n, this.opts.random() * this.cfg.intervalMs);
    }
    for (const [k, s] of this.states) {
      if (keep.has(k)) continue;
      s.stop();
      this.states.delete(k);
    }
  }

  /** unknown endpoints are healthy: only probes mark one down */
  isHealthy(key: string): boolean {
    return this.states.get(key)?.healthy ?? true;
  }

  close(): void {
    this.closed = true;
    for (const s of this.states.values()) s.stop();
    this.states.clear();
  }

  private schedule(s: ProbeState, delayMs: number): void {
    s.timer = setTimeout(() => { void this.run(s); }, delayMs);
    s.timer.unref();
  }

  private async run(s: ProbeState): Promise<void> {
    const ac = new AbortController();
    s.inflight = ac;
    this.probes++;
    let ok = false;
    try {
      ok = await probe(this.cfg, s.ep, this.opts.connect, ac.signal, this.opts.authority);
    } catch {
      ok = false; // a connector that throws is a failed probe
    }
    s.inflight = undefined;
    if (s.removed || this.closed) return;
    this.record(s, ok);
    this.schedule(s, this.cfg.intervalMs);
  }

  private record(s: ProbeState, ok: boolean): void {
    if (ok) {
      s.failures = 0;
      s.successes++;
      if (!s.healthy && s.successes >= this.cfg.healthyThreshold) {
        s.healthy = true;
        this.opts.onChange?.(s.ep.key, true);
      }
    } else {
      s.successes = 0;
      s.failures++;
      if (s.healthy && s.failures >= this.cfg.unhealthyThreshold) {
        s.healthy = false;
        this.opts.onChange?.(s.ep.key, false);
      }
    }
  }
}
