// The node's shared proxy: the three directions composed in one place (the ztunnel shape).
// Every listener is bound before any is served, so a bind failure stops start-up loudly
// instead of leaving a half-working proxy behind.

import { createServer, isIP, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Snapshot } from '../../control/api/types.ts';
import type { Flow } from '../flows/flow.ts';
import type { ProxyContext, Redirect } from './context.ts';
import { ProxyError } from './errors.ts';
import { noAllocationSitePretenuring } from './gc.ts';
import { Inbound } from './inbound.ts';
import { resolveLimits, type ProxyLimits } from './limits.ts';
import { ProxyMetrics, type Direction } from './metrics.ts';
import { Outbound } from './outbound.ts';
import { podSettings } from './pods.ts';
import { shareBindAccessors } from './stream.ts';
import { DEFAULT_TUNNEL_PORT, TunnelPool, TunnelServer } from './tunnel.ts';
import { MeshView } from './view.ts';
import { Tracer } from '../telemetry/index.ts';

export interface ProxyOptions {
  node: string;
  /** :15001, the BPF redirect target */
  outbound: { host: string; port: number };
  /** :15008 tunnel listener, bound to this node's WireGuard tunnel IP */
  inbound: { host: string; port: number };
  /** local address for connections to local pods (the ingress guard admits new connections only from it) */
  upstreamBindIp: string;
  /** the peers' tunnel port; default 15008 */
  peerTunnelPort?: number;
  /** the datapath's map lookup (removes the entry) */
  originalDestination(clientIp: string, clientPort: number): Redirect | undefined;
  /** every L4 connection verdict and every L7 request */
  onFlow(flow: Flow): void;
  registry: Registry;
  logger: Logger;
  telemetry?: import('../telemetry/index.ts').ProxyTelemetry; // access log (--access-log) and per-hop spans (--otlp-endpoint)
  /**
   * bind with SO_REUSEPORT so that several proxies (ProxyWorkers' threads) share the two
   * listeners and the kernel spreads new connections over them; default false (exclusive)
   */
  reusePort?: boolean;
  /** every accepted connection, before it is served (ProxyWorkers counts them per worker) */
  onAccept?(side: Direction): void;
  /** overrides of DEFAULT_LIMITS (limits.ts) */
  limits?: Partial<ProxyLimits>;
}

export class NodeProxy {
  private readonly opts: ProxyOptions;
  private readonly log: Logger;
  private readonly metrics: ProxyMetrics;
  private readonly outboundServer: Server;
  private readonly inboundServer: Server;
  private readonly inbound: Inbound;
  private readonly tunnel: TunnelServer;
  private readonly pool: TunnelPool;
  private readonly outbound: Outbound;
  /** every open connection of either side, so that close() leaves nothing behind */
  private readonly open = new Set<Duplex>();
  private view: MeshView | undefined;
  private serving = false;
  private closed = false;

  private constructor(opts: ProxyOptions) {
    this.opts = opts;
    this.log = opts.logger.child({ component: 'proxy', node: opts.node });
    this.metrics = new ProxyMetrics(opts.registry);
    const ctx: ProxyContext = {
      node: opts.node,
      upstreamBindIp: opts.upstreamBindIp,
      view: () => this.view,
      emit: (f) => this.emit(f),
      metrics: this.metrics,
      log: this.log,
      limits: resolveLimits(opts.limits),
      track: (c, d) => this.track(c, d),
      countBytes: (s, d) => this.countBytes(s, d),
      tracer: opts.telemetry?.tracer ?? new Tracer(),
      accessLog: opts.telemetry?.accessLog,
    };
    this.inbound = new Inbound(ctx);
    this.tunnel = new TunnelServer(ctx, this.inbound);
    this.pool = new TunnelPool(ctx, opts.peerTunnelPort ?? DEFAULT_TUNNEL_PORT);
    // called through opts so that a method passed unbound keeps its `this`
    this.outbound = new Outbound(ctx, this.inbound, this.pool, (ip, port) => opts.originalDestination(ip, port),
      () => ({ ip: opts.outbound.host, port: this.address('outbound').port }));
    // allowHalfOpen: a client's FIN must travel to the far side, not end our reply early
    this.outboundServer = createServer({ allowHalfOpen: true, noDelay: true }, (s) => this.onConnection(s, 'outbound'));
    this.inboundServer = createServer({ allowHalfOpen: true, noDelay: true }, (s) => this.onConnection(s, 'inbound'));
  }

  static async start(opts: ProxyOptions): Promise<NodeProxy> {
    validate(opts);
    shareBindAccessors(); // this thread's HTTP/2 requests must die young (stream.ts)
    noAllocationSitePretenuring(); // and so must what they point to (gc.ts)
    const p = new NodeProxy(opts);
    await p.bind();
    p.serving = true;
    p.log.info({ outbound: p.address('outbound'), inbound: p.address('inbound') }, 'proxy listening');
    return p;
  }

  /** true once a snapshot arrived */
  get ready(): boolean { return this.view !== undefined; }

  /** the bound addresses (port 0 resolves here) */
  get addresses(): { outbound: AddressInfo; inbound: AddressInfo } {
    return { outbound: this.address('outbound'), inbound: this.address('inbound') };
  }

  /** forwarded requests and connections held for the recheck a policy change makes (each until it closes) */
  get trackedLive(): number {
    return this.inbound.destination.liveCount;
  }

  update(snapshot: Snapshot): void {
    if (this.closed) throw new ProxyError('NODAL_ERR_PROXY_CLOSED', 'proxy is closed');
    if (snapshot.node !== this.opts.node) {
      this.log.warn({ snapshotNode: snapshot.node }, 'ignoring a snapshot meant for another node');
      return;
    }
    if (this.view && snapshot.version < this.view.snapshot.version) {
      this.log.debug({ version: snapshot.version, current: this.view.snapshot.version }, 'ignoring an older snapshot');
      return;
    }
    const view = new MeshView(snapshot);
    if (!view.self) this.log.warn('snapshot has no record of this node: tunnel connections will leave from the default address');
    const first = this.view === undefined;
    this.view = view;
    this.outbound.update(view);
    // the destination side opens pod connections: TrafficPolicy connectionPool limits apply there
    this.inbound.destination.pods.configure(podSettings(snapshot, this.opts.node));
    // what the new policy no longer allows must not stay open
    if (!first) {
      const closed = this.inbound.destination.revalidate();
      if (closed > 0) this.log.info({ closed, version: snapshot.version }, 'closed connections and streams the new policy denies');
      const stale = this.inbound.recheckPooled(view);
      if (stale > 0) this.log.info({ closed: stale, version: snapshot.version }, 'closed pooled tunnel streams whose source or pod the new snapshot no longer backs');
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.serving = false;
    const stopped = Promise.all([closeServer(this.outboundServer), closeServer(this.inboundServer)]);
    this.pool.close();
    this.tunnel.close();
    this.outbound.close();
    this.inbound.close();
    for (const c of this.open) c.destroy();
    this.open.clear();
    await stopped;
  }

  private async bind(): Promise<void> {
    const results = await Promise.allSettled([
      listen(this.outboundServer, 'outbound', this.opts.outbound, this.opts.reusePort === true),
      listen(this.inboundServer, 'inbound', this.opts.inbound, this.opts.reusePort === true),
    ]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await Promise.all([closeServer(this.outboundServer), closeServer(this.inboundServer)]);
      throw failed.reason;
    }
    for (const s of [this.outboundServer, this.inboundServer]) {
      s.on('error', (err) => this.log.error({ err }, 'listener error'));
    }
  }

  private onConnection(socket: Socket, side: Direction): void {
    if (!this.serving) {
      // between the first bind and the last, and after close(): nobody may be served yet
      socket.on('error', noop);
      socket.destroy();
      return;
    }
    this.opts.onAccept?.(side);
    if (side === 'outbound') this.outbound.accept(socket);
    else this.tunnel.accept(socket);
  }

  private track(c: Duplex, direction: Direction): void {
    const m = this.metrics;
    m.connections.labels(direction).inc();
    const active = m.active.labels(direction);
    active.inc();
    this.open.add(c);
    c.once('close', () => {
      active.dec();
      this.open.delete(c);
    });
  }

  private countBytes(s: Socket, direction: Direction): void {
    const counter = this.metrics.bytes.labels(direction);
    // once, at close: the byte counts live in the socket already, no per-chunk work
    s.once('close', () => counter.inc(s.bytesRead + s.bytesWritten));
  }

  private emit(f: Flow): void {
    try {
      this.opts.onFlow(f);
    } catch (err) {
      // a failing consumer must not break the data path
      this.log.error({ err }, 'flow consumer threw');
    }
  }

  private address(side: Direction): AddressInfo {
    const a = (side === 'outbound' ? this.outboundServer : this.inboundServer).address();
    if (a && typeof a === 'object') return a;
    const want = side === 'outbound' ? this.opts.outbound : this.opts.inbound;
    return { address: want.host, family: isIP(want.host) === 6 ? 'IPv6' : 'IPv4', port: want.port };
  }
}

function validate(opts: ProxyOptions): void {
  const bad = (what: string): never => { throw new ProxyError('NODAL_ERR_PROXY_CONFIG', `proxy options: ${what}`); };
  if (!opts.node) bad('node is empty');
  for (const side of ['outbound', 'inbound'] as const) {
    const a = opts[side];
    if (!a || isIP(a.host) === 0) bad(`${side}.host ${JSON.stringify(a?.host)} is not an IP address`);
    if (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535) bad(`${side}.port ${a.port} is not a port`);
  }
  if (isIP(opts.upstreamBindIp) === 0) bad(`upstreamBindIp ${JSON.stringify(opts.upstreamBindIp)} is not an IP address`);
  if (opts.peerTunnelPort !== undefined && (!Number.isInteger(opts.peerTunnelPort) || opts.peerTunnelPort < 1 || opts.peerTunnelPort > 65535)) {
    bad(`peerTunnelPort ${opts.peerTunnelPort} is not a port`);
  }
  if (typeof opts.originalDestination !== 'function') bad('originalDestination is not a function');
  if (typeof opts.onFlow !== 'function') bad('onFlow is not a function');
}

/** a listener that could not bind, naming the address and the likely reason */
export function bindError(side: Direction, at: { host: string; port: number }, err: NodeJS.ErrnoException): ProxyError {
  const where = isIP(at.host) === 6 ? `[${at.host}]:${at.port}` : `${at.host}:${at.port}`;
  const hint = err.code === 'EADDRNOTAVAIL' ? ' (is the address configured on this node?)'
    : err.code === 'EADDRINUSE' ? ' (is another agent running?)' : '';
  return new ProxyError('NODAL_ERR_PROXY_BIND', `bind ${side} listener ${where}: ${err.code ?? err.message}${hint}`, { cause: err });
}

function listen(server: Server, side: Direction, at: { host: string; port: number }, reusePort: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => reject(bindError(side, at, err));
    server.once('error', onError);
    server.listen({ host: at.host, port: at.port, exclusive: true, reusePort }, () => {
      server.removeListener('error', onError);
      resolve();
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}

function noop(): void {}
