// The source side: a connection a local enrolled pod opened, redirected here by the
// datapath (cgroup/connect4 → :15001). Find where it was going, then by its protocol
// (the Service's appProtocol, else the first bytes): HTTP/1.1 and HTTP/2 go to the L7
// path (egress.ts), which routes every request on its own; anything else is carried as a
// connection to one backend: in-process to the inbound side when the backend is on this
// node, as a CONNECT stream through the tunnel otherwise. Destinations outside the mesh
// are passed straight through.

import { connect, type Socket } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http2';
import type { EndpointInfo } from '../../control/api/types.ts';
import { ReservedIdentity } from '../../control/api/types.ts';
import type { FlowEndpoint, FlowVerdict } from '../flows/flow.ts';
import { declaredProtocol } from '../policy/index.ts';
import type { InboundConn, ProxyContext, Redirect, SourceInfo } from './context.ts';
import { sourceFlowEndpoint } from './context.ts';
import type { EgressConn } from './egress.ts';
import { Egress } from './egress.ts';
import { newFlow, type Addr } from './flows.ts';
import { errorText } from './errors.ts';
import type { Inbound } from './inbound.ts';
import { abort, DETECT_WAIT_MS, normalizeIp, sniff, splice } from './stream.ts';
import { formatAuthority, Header, sourceHeaders, type TunnelPool } from './tunnel.ts';
import { newTrace, type TraceParent } from './trace.ts';
import { hashKeyFor } from './traffic/index.ts';
import { WORLD_ENDPOINT, type MeshView, type ServiceTarget } from './view.ts';

export type OriginalDestination = (clientIp: string, clientPort: number) => Redirect | undefined;

/** where one connection goes, once routing has decided */
interface Target { ip: string; port: number; node: string; identity: number; endpoint: EndpointInfo | undefined }

/** what the outbound side reports about one connection */
interface OutboundRecord {
  src: SourceInfo; dst: Addr; dstFlow: FlowEndpoint; trace: TraceParent;
  /** the connection's FORWARDED flow is already out (an upgraded HTTP/1.1 connection) */
  recorded?: boolean;
  /** an ERROR flow went out: the backend could not be reached (outlier detection counts it) */
  failed?: boolean;
}

export class Outbound {
  private readonly ctx: ProxyContext;
  private readonly inbound: Inbound;
  private readonly pool: TunnelPool;
  private readonly originalDestination: OriginalDestination;
  private readonly listen: () => Addr;
  private readonly egress: Egress;

  constructor(ctx: ProxyContext, inbound: Inbound, pool: TunnelPool, originalDestination: OriginalDestination, listen: () => Addr) {
    this.ctx = ctx;
    this.inbound = inbound;
    this.pool = pool;
    this.originalDestination = originalDestination;
    this.listen = listen;
    this.egress = new Egress(ctx, inbound.destination, pool, (socket, conn) => this.carry(socket, conn, true));
  }

  update(view: MeshView): void {
    this.egress.update(view);
  }

  close(): void {
    this.egress.close();
  }

  accept(socket: Socket): void {
    this.ctx.track(socket, 'outbound');
    this.ctx.countBytes(socket, 'outbound');
    socket.on('error', noop);
    const client: Addr = { ip: normalizeIp(socket.remoteAddress), port: socket.remotePort ?? 0 };
    const view = this.ctx.view();
    if (!view) return this.fail(socket, undefined, client, 'no snapshot yet');

    let redirect: Redirect | undefined;
    try {
      redirect = this.originalDestination(client.ip, client.port);
    } catch (err) {
      this.ctx.log.warn({ client, err: errorText(err) }, 'original destination lookup failed');
      return this.fail(socket, view, client, `original destination lookup failed: ${errorText(err)}`);
    }
    if (!redirect) return this.fail(socket, view, client, 'no original destination');

    const srcEndpoint = view.localEndpointByIp(client.ip);
    const src: SourceInfo = {
      identity: redirect.srcIdentity,
      endpoint: srcEndpoint,
      flow: sourceFlowEndpoint(view, srcEndpoint, redirect.srcIdentity, redirect.endpointId),
      ip: client.ip, port: client.port,
      principal: view.principal(redirect.srcIdentity),
      namespace: view.identity(redirect.srcIdentity)?.namespace ?? srcEndpoint?.namespace,
    };
    const orig: Addr = { ip: normalizeIp(redirect.origIp), port: redirect.origPort };
    const listen = this.listen();
    if (orig.ip === listen.ip && orig.port === listen.port) {
      return this.fail(socket, view, client, 'redirect loop: original destination is the proxy itself', src);
    }

    const svc = view.service(orig.ip, orig.port);
    const ep = svc ? undefined : view.endpointByIp(orig.ip);
    if (!svc && !ep) return this.passthrough(socket, src, orig);
    const conn: EgressConn = { src, orig, service: svc, endpoint: ep, trace: newTrace() };
    this.ctx.metrics.carried('outbound', socket, src.identity, svc ? svc.service.identity : ep!.identity, true);
    const declared = declaredProtocol(svc ? svc.port.appProtocol : view.appProtocol(orig.ip, orig.port));
    if (declared === 'opaque') return this.carry(socket, conn, false);
    if (declared !== 'detect') return this.l7(socket, view, conn, declared);
    sniff(socket, DETECT_WAIT_MS, (proto) => {
      if (socket.destroyed) return;
      const v = this.ctx.view() ?? view;
      if (proto === 'opaque') this.carry(socket, conn, false);
      else this.l7(socket, v, conn, proto);
    });
  }

  /** HTTP: the connection's record now (one per connection, as for opaque TCP), then per-request routing */
  private l7(socket: Socket, view: MeshView, conn: EgressConn, protocol: 'http1' | 'h2'): void {
    const f = newFlow(this.ctx.node, 'FORWARDED', 'L3_L4', 'EGRESS', conn.src, conn.orig);
    f.source = conn.src.flow;
    f.destination = conn.endpoint ? view.flowEndpoint(conn.endpoint) : serviceFlowEndpoint(conn.service!);
    if (conn.service) f.destinationService = { name: conn.service.service.name, namespace: conn.service.service.namespace };
    f.traceContext = { parent: { traceId: conn.trace.traceId, spanId: conn.trace.spanId } };
    this.ctx.emit(f);
    this.egress.attach(socket, conn, protocol);
  }

  /**
   * Opaque TCP (and an upgraded HTTP/1.1 connection): one backend for the whole connection.
   * `recorded`: the connection's flow was already emitted by the L7 path.
   */
  private carry(socket: Socket, conn: EgressConn, recorded: boolean): void {
    const view = this.ctx.view();
    if (!view) return this.fail(socket, undefined, conn.src, 'no snapshot yet', conn.src);
    const { src, orig } = conn;
    const svc = conn.service;
    if (svc) {
      const name = `${svc.service.namespace}/${svc.service.name}`;
      if (svc.service.backends.length === 0) return this.fail(socket, view, src, `no backends for service ${name}`, src, orig);
      // the Service's own balancer, outlier detection, health checks and connection limit:
      // TrafficPolicy applies to opaque connections as it does to requests
      const st = this.egress.serviceTraffic(svc.service.namespace, svc.service.name);
      if (!st) return this.fail(socket, view, src, `no traffic state for service ${name}`, src, orig);
      const hashOn = st.policy?.loadBalancer?.hashOn;
      // a connection has no headers: only a source-IP hash can pin it
      const hashKey = hashOn ? hashKeyFor(hashOn, { headers: {}, path: '', sourceIp: src.ip }) : undefined;
      const b = st.balancer.pick(hashKey !== undefined ? { hashKey } : undefined);
      if (!b) return this.fail(socket, view, src, `no healthy backend for service ${name}`, src, orig);
      if (!st.limits.connections.tryAcquire()) {
        return this.fail(socket, view, src, `connection limit of service ${name} reached (connectionPool.maxConnections)`, src, orig);
      }
      const lb = st.balancer.start(b);
      const target: Target = { ip: b.ip, port: svc.port.targetPort, node: b.node, identity: b.identity, endpoint: view.endpointByIp(b.ip) };
      const rec = this.record(view, src, target, conn.trace, recorded);
      socket.once('close', () => {
        st.release();
        lb.done({ ok: !rec.failed });
        st.outlier?.report(b.key, { connectFailure: rec.failed === true });
      });
      return this.forward(socket, view, rec, target);
    }
    const ep = conn.endpoint!;
    const target: Target = { ip: ep.ip, port: orig.port, node: ep.node, identity: ep.identity, endpoint: ep };
    this.forward(socket, view, this.record(view, src, target, conn.trace, recorded), target);
  }

  private record(view: MeshView, src: SourceInfo, target: Target, trace: TraceParent, recorded: boolean): OutboundRecord {
    return { src, dst: { ip: target.ip, port: target.port }, dstFlow: view.flowEndpoint(target.endpoint, target.identity), trace, recorded };
  }

  private forward(socket: Socket, view: MeshView, rec: OutboundRecord, target: Target): void {
    if (target.node === this.ctx.node) this.local(socket, view, rec, target);
    else this.remote(socket, view, rec, target);
  }

  /** same node: the inbound logic in-process, no tunnel, same policy path */
  private local(socket: Socket, view: MeshView, rec: OutboundRecord, target: Target): void {
    const dst = target.endpoint && target.endpoint.node === this.ctx.node ? target.endpoint : undefined;
    if (!dst) return this.fail(socket, view, rec.src, `backend ${target.ip} is not a known local endpoint`, rec.src, rec.dst);
    const conn: InboundConn = {
      src: rec.src, dst, port: target.port, appProtocol: view.appProtocol(dst.ip, target.port),
      trace: rec.trace, via: 'local', peer: undefined,
      upstreamFailed: () => { rec.failed = true; },
    };
    const early = this.inbound.preflight(conn);
    if (early && !early.allowed) {
      this.emit(rec, 'DROPPED', 'denied by destination policy');
      abort(socket);
      return;
    }
    this.emit(rec, 'FORWARDED');
    this.inbound.serve(socket, conn, early);
  }

  /** another node: a CONNECT stream on the session to that node's proxy */
  private remote(socket: Socket, view: MeshView, rec: OutboundRecord, target: Target): void {
    const peer = view.node(target.node);
    if (!peer || !peer.tunnelIp) {
      return this.fail(socket, view, rec.src, `no tunnel address for node ${target.node}`, rec.src, rec.dst);
    }
    const headers = { ...sourceHeaders(rec.src), [Header.traceparent]: rec.trace.header };

    let stream;
    try {
      stream = this.pool.open(peer, formatAuthority(target.ip, target.port), headers);
    } catch (err) {
      return this.fail(socket, view, rec.src, `tunnel to ${peer.name}: ${errorText(err)}`, rec.src, rec.dst);
    }
    let answered = false;
    stream.on('error', (err) => {
      if (answered) return; // after the answer, splice() owns errors
      answered = true;
      this.emit(rec, 'ERROR', `tunnel to ${peer.name}: ${errorText(err)}`);
      abort(socket);
    });
    // a client that leaves before the peer answers must not leave the stream open
    socket.once('close', () => { if (!answered) stream.close(); });
    stream.once('response', (h: IncomingHttpHeaders) => {
      if (answered) return;
      answered = true;
      const status = Number(h[':status']);
      if (status === 200) {
        this.emit(rec, 'FORWARDED');
        splice(socket, stream);
        return;
      }
      const verdict: FlowVerdict = status === 403 ? 'DROPPED' : 'ERROR';
      this.emit(rec, verdict, status === 403 ? `refused by node ${peer.name} (403)` : `tunnel to ${peer.name}: status ${status}`);
      stream.close();
      abort(socket);
    });
  }

  /** outside the mesh: connect to the original destination as it was */
  private passthrough(socket: Socket, src: SourceInfo, orig: Addr): void {
    this.ctx.metrics.carried('outbound', socket, src.identity, ReservedIdentity.WORLD, true);
    const rec: OutboundRecord = { src, dst: orig, dstFlow: WORLD_ENDPOINT, trace: newTrace() };
    const up = connect({ host: orig.ip, port: orig.port, allowHalfOpen: true, noDelay: true });
    let connected = false;
    up.once('connect', () => {
      connected = true;
      this.emit(rec, 'FORWARDED');
    });
    splice(socket, up, (err) => {
      if (err && !connected) this.emit(rec, 'ERROR', `connect ${orig.ip}:${orig.port}: ${errorText(err)}`);
    });
  }

  private emit(rec: OutboundRecord, verdict: FlowVerdict, summary?: string): void {
    if (verdict === 'ERROR') rec.failed = true;
    if (rec.recorded && verdict === 'FORWARDED') return;
    const f = newFlow(this.ctx.node, verdict, 'L3_L4', 'EGRESS', rec.src, rec.dst);
    f.source = rec.src.flow;
    f.destination = rec.dstFlow;
    f.traceContext = { parent: { traceId: rec.trace.traceId, spanId: rec.trace.spanId } };
    if (summary) f.summary = summary;
    this.ctx.emit(f);
  }

  /** close the client's connection with an ERROR flow saying why */
  private fail(socket: Socket, view: MeshView | undefined, client: Addr, summary: string, src?: SourceInfo, dst?: Addr): void {
    const to = dst ?? this.listen();
    const f = newFlow(this.ctx.node, 'ERROR', 'L3_L4', 'EGRESS', client, to);
    if (src) f.source = src.flow;
    else if (view) {
      const ep = view.localEndpointByIp(client.ip);
      if (ep) f.source = view.flowEndpoint(ep);
    }
    f.summary = summary;
    this.ctx.emit(f);
    abort(socket);
  }
}

/**
 * A Service as the connection's flow names it: no pod (each request may go to another),
 * the backends' identity when they share one
 */
function serviceFlowEndpoint(svc: ServiceTarget): FlowEndpoint {
  return { identity: svc.service.identity, namespace: svc.service.namespace };
}

function noop(): void {}
