// The source side's L7 path: a client pod's HTTP/1.1 or HTTP/2 (h2c, gRPC) connection,
// parsed here so that every request is routed on its own: the backend is chosen per
// request (not per connection), and the request travels as one stream on the tunnel
// session to the backend's node, or in-process to this node's destination side. Many
// client connections share one session per peer node; the destination pools its own
// connections to the pod. The client gets the answer in the protocol it spoke.

import { createServer as h1server, type IncomingMessage, type Server as H1Server, type ServerResponse } from 'node:http';
import {
  constants as h2c, createServer as h2server, type Http2Server, type Http2Session,
  type IncomingHttpHeaders as H2Headers, type ServerHttp2Stream,
} from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import { Duplex, type Readable } from 'node:stream';
import type { EndpointInfo, NodeInfo, RouteFilter, RouteRule } from '../../control/api/types.ts';
import { ReservedIdentity } from '../../control/api/types.ts';
import type { HopSpan } from '../telemetry/index.ts';
import type { RequestVerdict, RetryOutcome } from './metrics.ts';
import type { InboundConn, ProxyContext, SourceInfo } from './context.ts';
import { leanServerAvailable, serveLean } from './client-h1.ts';
import type { Destination } from './destination.ts';
import { errorText } from './errors.ts';
import { MAX_LEAN_BODY, MeshRequests } from './mesh.ts';
import { UpstreamError } from './pod-h1.ts';
import { drain } from './pods.ts';
import {
  answerBytes, cancelOn, closedEarly, connectionClosed, declaredLength, cutOff, endToEnd, flatHeaders, grpcStatusOf, h1Head, h1Request, headerValue, isGrpc, localResponse, NO_BYTES, onH2Answer, pipeBody, unwatchAbort, watchAbort, WholeBody, writeH1, writeH2, type Headers, type L7Response, type RequestHead, type WireProtocol,
} from './exchange.ts';
import { UPSTREAM_FAILURE_HEADER, upstreamFailure } from './destination.ts';
import { TrafficState, type Backend, type ServiceTraffic } from './service-traffic.ts';
import {
  applyRequestFilters, decideFault, findFilter, grpcMethodOf, hashKeyFor, pickBackend, redirectLocation, responseHeaders, RetryPolicy, rewrite,
  type AttemptResult, type HealthEndpoint, type RouteRequest, type RouteRetry, type TrafficRetry,
} from './traffic/index.ts';
import { newFlow, type Addr } from './flows.ts';
import { releaseOnClose } from './stream.ts';
import { guardRequest, guardUpgrade, h2cServerOptions, hardenHttpServer, http1ServerOptions } from './limits.ts';
import { formatAuthority, Header, sourceHeaders, type TunnelPool } from './tunnel.ts';
import { childSpan, parseTraceparent, type TraceParent } from './trace.ts';
import type { MeshView, ServiceTarget } from './view.ts';

/** one client connection the source side parses */
export interface EgressConn {
  src: SourceInfo;
  /** where the client connected (a Service VIP or a pod IP) */
  orig: Addr;
  /** the Service behind orig, when orig is a VIP */
  service: ServiceTarget | undefined;
  /** the pod behind orig, when orig is a pod IP */
  endpoint: EndpointInfo | undefined;
  /** the connection's trace: requests without a traceparent get a span in it */
  trace: TraceParent;
}

/** where one request goes */
interface Target { ip: string; port: number; node: string; identity: number; endpoint: EndpointInfo | undefined; backend: Backend | undefined }

/** how an upgraded HTTP/1.1 connection (WebSocket) is carried on: as a connection, by the outbound side */
export type CarryConnection = (socket: Socket, conn: EgressConn) => void;

const H2_SETTINGS = { enablePush: false, initialWindowSize: 1 << 20 };

export class Egress {
  private readonly ctx: ProxyContext;
  private readonly destination: Destination;
  private readonly pool: TunnelPool;
  /** HTTP/1.1 requests to other nodes' pods, on pooled CONNECT streams */
  private readonly mesh: MeshRequests;
  private readonly carry: CarryConnection;
  private readonly h1: H1Server;
  private readonly h2: Http2Server;
  private readonly h1Conns = new WeakMap<object, EgressConn>();
  private readonly h2Conns = new WeakMap<Http2Session, EgressConn>();
  /** set only while an h2 connection is being handed to the server (its session is created synchronously) */
  private attaching: EgressConn | undefined;
  private readonly sessions = new Set<Http2Session>();
  /** routes and per-Service traffic state (balancers, outlier detection, health, budgets, limits) */
  private readonly traffic: TrafficState;

  constructor(ctx: ProxyContext, destination: Destination, pool: TunnelPool, carry: CarryConnection) {
    this.ctx = ctx;
    this.destination = destination;
    this.pool = pool;
    this.mesh = new MeshRequests(pool, { idlePerPeer: ctx.limits.tunnelIdleStreamsPerPeer, maxAgeMs: ctx.limits.tunnelStreamMaxAgeMs });
    this.carry = carry;
    this.traffic = new TrafficState(ctx, (ep) => this.probeConnection(ep));
    // the client pod's bytes meet the limits here first: llhttp strict, head size, count and
    // time bounded, refusals answered (limits.ts); the destination bounds them again
    const limits = ctx.limits;
    this.h1 = hardenHttpServer(h1server({ ...http1ServerOptions(limits), requireHostHeader: false }, guardRequest(limits, (req, res) => this.onH1(req, res))), limits);
    this.h1.on('upgrade', guardUpgrade(limits, (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket as Socket, head)));
    this.h1.on('connect', (_req: IncomingMessage, socket: Socket) => {
      socket.end('HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    });
    // streams, header list and session memory bounded; rapid reset and invalid frames end the session
    this.h2 = h2server(h2cServerOptions(limits, H2_SETTINGS));
    this.h2.on('session', (s: Http2Session) => {
      if (this.attaching) this.h2Conns.set(s, this.attaching);
      this.sessions.add(s);
      s.on('close', () => this.sessions.delete(s));
      s.on('error', () => { /* the client's session failed; its streams report */ });
    });
    this.h2.on('stream', (stream: ServerHttp2Stream, headers: H2Headers) => this.onH2(stream, headers));
  }

  /** hand a client connection to the parser of the protocol detection (or the Service) named */
  attach(socket: Socket, conn: EgressConn, protocol: WireProtocol): void {
    if (protocol === 'h2') {
      this.attaching = conn;
      try {
        // node:http2 reads the socket's handle directly: bytes detection put back into the
        // stream would be skipped, so a sniffed connection is handed over as a JS stream
        this.h2.emit('connection', socket.readableLength > 0 ? replayable(socket) : socket);
      } finally {
        this.attaching = undefined;
      }
    } else if (leanServerAvailable) {
      // plain requests without node:http's Server; the connection goes to it at the first other one
      // a request client-h1.ts serves has no body, or all of it here (a WholeBody)
      serveLean(socket, this.ctx.limits, (head, body, signal) => this.forward(conn, head, body, !(body instanceof WholeBody), signal),
        (s) => this.toNodeHttp(s, conn));
    } else {
      this.toNodeHttp(socket, conn);
    }
    // not for h2: the session reads the handle itself, and a resumed socket would hand the
    // next bytes to 'data' listeners nobody has (the client's next request, lost)
  }

  /** an HTTP/1.1 connection served by node:http's Server from here on */
  private toNodeHttp(socket: Socket, conn: EgressConn): void {
    this.h1Conns.set(socket, conn);
    // a closed socket can stay reachable until a full GC (stream.ts releaseOnClose), and a
    // WeakMap holds its value as long: the connection's record goes with the connection
    socket.once('close', () => this.h1Conns.delete(socket));
    this.h1.emit('connection', socket);
    // detection (or client-h1.ts) left it paused; node:http reads through the stream
    socket.resume();
  }

  /** a new snapshot: routes recompiled, Services' backends and TrafficPolicies updated */
  update(view: MeshView): void {
    this.traffic.update(view);
  }

  close(): void {
    // stops the timeout checks hardenHttpServer() started
    this.h1.close();
    this.traffic.close();
    this.mesh.close();
    for (const s of this.sessions) s.destroy();
    this.sessions.clear();
  }

  /** a Service's traffic state (balancer, outlier detection, health, limits) for opaque connections */
  serviceTraffic(namespace: string, name: string): ServiceTraffic | undefined {
    return this.traffic.service(namespace, name);
  }

  /**
   * A health probe's connection to an endpoint: from the proxy address on this node, as a
   * CONNECT stream claiming the reserved health identity on another (the destination admits
   * it like a kubelet probe). 'connect' is emitted once the endpoint accepted.
   */
  private probeConnection(ep: HealthEndpoint): Duplex {
    const view = this.ctx.view();
    const node = view?.endpointByIp(ep.address)?.node;
    if (!view || node === this.ctx.node || !node) {
      return netConnect({ host: ep.address, port: ep.port, localAddress: this.ctx.upstreamBindIp });
    }
    const peer = view.node(node);
    if (!peer?.tunnelIp) return netConnect({ host: ep.address, port: ep.port, localAddress: this.ctx.upstreamBindIp });
    const stream = this.pool.open(peer, formatAuthority(ep.address, ep.port), { [Header.identity]: String(ReservedIdentity.HEALTH) });
    stream.once('response', (h: H2Headers) => {
      if (Number(h[':status']) === 200) stream.emit('connect');
      else stream.destroy(new Error(`tunnel answered ${String(h[':status'])}`));
    });
    return stream;
  }

  private onH1(req: IncomingMessage, res: ServerResponse): void {
    const conn = this.h1Conns.get(req.socket);
    if (!conn) {
      res.destroy();
      return;
    }
    const empty = req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined;
    this.forward(conn, h1Head(req), req, empty, connectionClosed(req.socket)).then((r) => writeH1(res, r), () => res.destroy());
  }

  private onH2(stream: ServerHttp2Stream, headers: H2Headers): void {
    stream.on('error', noop);
    releaseOnClose(stream);
    const conn = stream.session ? this.h2Conns.get(stream.session) : undefined;
    if (!conn) {
      stream.close(h2c.NGHTTP2_REFUSED_STREAM);
      return;
    }
    const method = String(headers[':method'] ?? 'GET');
    if (method === 'CONNECT') {
      stream.respond({ ':status': 405 }, { endStream: true });
      return;
    }
    const head: RequestHead = {
      method, path: String(headers[':path'] ?? '/'), authority: String(headers[':authority'] ?? headers.host ?? ''),
      headers: endToEnd(headers, true), protocol: 'h2',
    };
    const ac = new AbortController();
    // only a stream that closed before its exchange was over cancels upstream (a completed
    // one would build an AbortError per request for nothing)
    stream.once('close', () => { if (closedEarly(stream)) ac.abort(); });
    // no body: the HEADERS frame ended the stream (readableEnded is not yet true here)
    this.forward(conn, head, stream, stream.endAfterHeaders || stream.readableEnded, ac.signal).then((r) => writeH2(stream, r), () => {
      if (!stream.closed) stream.close(h2c.NGHTTP2_INTERNAL_ERROR);
    });
  }

  /**
   * An HTTP Upgrade (WebSocket): the request head goes back in front of the bytes and the
   * connection is carried as a connection from here on; the destination still takes the
   * policy decision on the upgrade request it parses.
   */
  private onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const conn = this.h1Conns.get(socket);
    if (!conn) {
      socket.destroy();
      return;
    }
    let lines = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
    const raw = req.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      if (!raw[i]!.toLowerCase().startsWith('x-nodal-')) lines += `${raw[i]}: ${raw[i + 1]}\r\n`;
    }
    lines += '\r\n';
    socket.pause();
    if (head.length > 0) socket.unshift(head);
    socket.unshift(Buffer.from(lines, 'latin1'));
    this.carry(socket, conn);
  }

  /**
   * Route one request and send it on; resolves with what the client must get. A failure
   * that is not an answer (a bug) is logged here and rejects: each caller then drops the
   * client's request its own way.
   */
  private async forward(conn: EgressConn, head: RequestHead, body: Readable, empty: boolean, signal: AbortSignal): Promise<L7Response> {
    try {
      const started = process.hrtime.bigint();
      const startedMs = Date.now();
      const grpc = isGrpc(head.headers);
      const view = this.ctx.view();
      const hop = this.ctx.tracer.start(parseTraceparent(headerValue(head.headers.traceparent)) ?? childSpan(conn.trace), 'client');
      head.headers.traceparent = hop.context.header;
      const req: RequestRecord = {
        conn, head, grpc, hop, started, startedMs, route: '', service: conn.service, retries: 0, upstream: undefined,
        bytesIn: this.ctx.accessLog ? (empty ? 0 : declaredLength(head.headers)) : undefined,
      };
      const res = await this.route(req, view, body, empty, signal);
      this.record(req, res);
      return res;
    } catch (err) {
      this.ctx.log.error({ err: errorText(err) }, 'request failed unexpectedly');
      throw err;
    }
  }

  private async route(req: RequestRecord, view: MeshView | undefined, body: Readable, empty: boolean, signal: AbortSignal): Promise<L7Response> {
    const { conn, head, grpc } = req;
    if (!view) return this.answer(req, 503, 'no snapshot yet', body);
    if (conn.endpoint) return this.attempts(req, view, undefined, body, empty, signal);
    let svc = conn.service!;
    let responseFilters: RouteFilter[] | undefined;

    // HTTPRoute / GRPCRoute attached to the Service (GAMMA): the rule picks the backend Service
    const routes = this.traffic.routes;
    if (routes.hasRoutes(svc.service.namespace, svc.service.name)) {
      const flat = flatHeaders(head.headers);
      const q = head.path.indexOf('?');
      const rreq: RouteRequest = {
        method: head.method, path: head.path, host: head.authority, headers: flat, scheme: 'http', port: svc.port.port,
        ...(grpc ? { grpc: grpcMethodOf(q < 0 ? head.path : head.path.slice(0, q)) } : {}),
      };
      const m = routes.forService(svc.service.namespace, svc.service.name, svc.port.port).match(rreq);
      if (!m) return this.answer(req, 404, `no route of service ${svc.service.namespace}/${svc.service.name} matches`, body);
      req.route = `${m.route.namespace}/${m.route.name}#${m.rule.index}`;
      req.rule = m.rule;
      const redirect = findFilter(m.rule.filters, 'RequestRedirect');
      if (redirect) {
        const r = redirectLocation(rreq, redirect, m.matchedPrefix);
        return this.answer(req, r.status, `redirected by ${req.route}`, body, 'FORWARDED', { location: r.location });
      }
      const rw = findFilter(m.rule.filters, 'URLRewrite');
      if (rw) {
        const r = rewrite(rreq, rw, m.matchedPrefix);
        head.path = r.path;
        if (r.host !== undefined) head.authority = r.host;
      }
      applyRequestFilters(flat, m.rule.filters);
      const backend = pickBackend(m.rule, Math.random);
      if (!backend) return this.answer(req, 500, `route ${req.route} has no backend that can take the request`, body);
      applyRequestFilters(flat, backend.filters);
      head.headers = flat;
      responseFilters = m.rule.filters;
      const target = view.serviceByName(backend.service.namespace, backend.service.name, backend.port);
      if (!target) return this.answer(req, 500, `backend ${backend.service.namespace}/${backend.service.name}:${backend.port} of ${req.route} does not exist`, body);
      svc = target;
      req.service = svc;
    }

    const st = this.traffic.of(svc.service);
    const policy = st?.policy;
    // fault injection, then the local rate limit, then the concurrency limits
    if (policy?.faultInjection) {
      const f = decideFault(policy.faultInjection, Math.random);
      if (f.delayMs > 0) await delay(f.delayMs, signal);
      if (f.abort) return this.answer(req, f.abort.httpStatus, `fault injected by TrafficPolicy ${policy.namespace}/${policy.name}`, body, 'DROPPED');
    }
    if (st?.bucket && !st.bucket.take()) {
      this.ctx.metrics.rateLimited(st.name);
      return this.answer(req, 429, `rate limited by TrafficPolicy ${policy!.namespace}/${policy!.name}`, body, 'DROPPED',
        { 'retry-after': String(st.bucket.retryAfterSeconds()) });
    }
    let slot = st ? st.acquire() : true;
    if (slot !== true && slot !== false) slot = await slot;
    if (!slot) {
      return this.answer(req, 503, `overflow: connection pool of service ${st!.name} is full`, body, 'DROPPED', { 'x-nodal-overloaded': 'true' });
    }
    try {
      const res = req.rule?.timeouts?.requestMs
        ? await this.withTimeout(req, () => this.attempts(req, view, st, body, empty, signal))
        : await this.attempts(req, view, st, body, empty, signal);
      if (responseFilters) {
        const h = flatHeaders(res.headers);
        responseHeaders(h, responseFilters);
        res.headers = h;
      }
      return res;
    } finally {
      st?.release();
    }
  }

  /** the route's whole-request timeout: 504 (DEADLINE_EXCEEDED for gRPC) when it passes first */
  private async withTimeout(req: RequestRecord, run: () => Promise<L7Response>): Promise<L7Response> {
    const ms = req.rule?.timeouts?.requestMs;
    if (!ms) return run();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<L7Response>((resolve) => {
      timer = setTimeout(() => resolve(this.answer(req, 504, `request timeout ${ms} ms of ${req.route}`, undefined)), ms);
    });
    try {
      return await Promise.race([run(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Send the request, retrying as the Service's TrafficPolicy and the route allow: another
   * endpoint each time, within the retry budget, and only with a body the proxy still holds.
   */
  private async attempts(req: RequestRecord, view: MeshView, st: ServiceTraffic | undefined, body: Readable, empty: boolean,
    signal: AbortSignal): Promise<L7Response> {
    const { head } = req;
    const retry = retryPolicy(st?.policy?.retry, req.rule?.retry);
    const perTryMs = req.rule?.timeouts?.backendRequestMs ?? retry.perTryTimeoutMs;
    // a body can be sent again only if the proxy holds all of it: small and of known length
    let held: Buffer | undefined;
    if (retry.attempts > 0 && !empty) {
      held = await holdBody(head, body);
      // what the client reset is not a body to send, however it ended
      if (held !== undefined && cutOff(body)) return this.answer(req, 400, 'request body reset by the client', undefined);
    }
    const retryable = retry.attempts > 0 && (empty || held !== undefined);
    // endpoints already tried: only a request that may be retried needs to remember them
    const tried = retryable ? new Set<string>() : undefined;
    st?.budget.startRequest();
    /** a retry the budget admitted whose attempt is not over: RetryBudget counts it until then */
    let retrying = false;
    try {
      let target = this.pick(req, view, st, tried);
      if (!target) {
        const svc = req.service?.service;
        return this.answer(req, 503, `no healthy upstream for service ${svc?.namespace}/${svc?.name}`, body);
      }
      for (let n = 0; ; n++) {
        tried?.add(target.ip);
        req.upstream = target;
        const lb = target.backend && st ? st.balancer.start(target.backend) : undefined;
        const attemptSignal = perTryMs ? AbortSignal.any([signal, AbortSignal.timeout(perTryMs)]) : signal;
        // a held body goes whole (the lean clients send it with the head), once per attempt
        const sendBody = held !== undefined ? new WholeBody(held) : body;
        const res = await this.send(req, view, target, sendBody, empty || (held !== undefined && held.length === 0), attemptSignal);
        if (retrying) {
          st!.budget.endRetry();
          retrying = false;
        }
        const result = attemptResult(res, attemptSignal, signal);
        lb?.done({ ok: !result.connectFailure && !result.reset && !result.timeout && (result.status ?? 0) < 500 });
        if (target.backend) st?.outlier?.report(target.backend.key, { status: result.status, connectFailure: result.connectFailure || result.timeout });
        const again = retryable && !signal.aborted && retry.shouldRetry(head.method, n, result);
        // the endpoint a retry would go to: with none left, the client gets this answer, as
        // Envoy gives the last upstream answer once it may not retry
        const next = again ? this.pick(req, view, st, tried) : undefined;
        if (n > 0 && st) this.ctx.metrics.retry(st.name, retryOutcome(retry, head.method, result, next !== undefined, signal.aborted));
        if (!next) {
          if (result.timeout && res.status === 503) return this.answer(req, 504, `upstream ${formatAuthority(target.ip, target.port)} did not answer within ${perTryMs} ms`, undefined);
          return res;
        }
        if (!st?.budget.tryStartRetry()) {
          if (st) this.ctx.metrics.retry(st.name, 'budget_exhausted');
          return res;
        }
        retrying = true;
        res.body.destroy();
        await delay(retry.backoffMs(n + 1, Math.random), signal);
        req.retries++;
        target = next;
      }
    } finally {
      if (retrying) st?.budget.endRetry();
      st?.budget.endRequest();
    }
  }

  /** one attempt to one endpoint: in-process when it is on this node, a tunnel stream otherwise */
  private send(req: RequestRecord, view: MeshView, target: Target, body: Readable, empty: boolean, signal: AbortSignal): Promise<L7Response> {
    const { conn, head } = req;
    if (target.node === this.ctx.node) {
      const dst = target.endpoint && target.endpoint.node === this.ctx.node ? target.endpoint : undefined;
      if (!dst) return Promise.resolve(this.answer(req, 503, `backend ${target.ip} is not a known local endpoint`, body));
      const inbound: InboundConn = {
        src: conn.src, dst, port: target.port, appProtocol: view.appProtocol(dst.ip, target.port),
        trace: req.hop.context, via: 'local', peer: undefined,
      };
      return this.destination.exchange(inbound, head, body, signal);
    }
    return this.remote(req, view, head, body, empty, signal, target);
  }

  private remote(req: RequestRecord, view: MeshView, head: RequestHead, body: Readable, empty: boolean, signal: AbortSignal,
    target: Target): Promise<L7Response> {
    const peer = view.node(target.node);
    if (!peer || !peer.tunnelIp) return Promise.resolve(this.answer(req, 503, `no tunnel address for node ${target.node}`, body));
    if (head.protocol === 'http1') return this.pooled(req, peer, head, body, signal, target);
    if (this.pool.takesPooledH2(peer)) return this.pooledH2(req, peer, head, body, empty, signal, target);
    return this.requestStream(req, peer, head, body, empty, signal, target);
  }

  /**
   * An HTTP/2 request to a peer that takes them on pooled streams (mesh.ts): there when its
   * whole body is, at most MAX_LEAN_BODY, by the end of this poll phase (a unary gRPC call
   * sends HEADERS and its one message together); on a request stream of its own otherwise.
   */
  private async pooledH2(req: RequestRecord, peer: NodeInfo, head: RequestHead, body: Readable, empty: boolean,
    signal: AbortSignal, target: Target): Promise<L7Response> {
    const bytes = empty ? NO_BYTES : body instanceof WholeBody ? body.whole : await wholeThisTurn(body, MAX_LEAN_BODY);
    if (bytes !== undefined) return this.pooled(req, peer, head, body, signal, target, bytes);
    // reset by the client while it was read: not a body to send, however it ended
    if (cutOff(body)) return this.answer(req, 400, 'request body reset by the client', undefined);
    return this.requestStream(req, peer, head, body, empty, signal, target);
  }

  /** an HTTP/2 request on a tunnel stream of its own */
  private requestStream(req: RequestRecord, peer: NodeInfo, head: RequestHead, body: Readable, empty: boolean, signal: AbortSignal,
    target: Target): Promise<L7Response> {
    const { conn } = req;
    const headers: Record<string, string | string[]> = {
      ...head.headers,
      ':method': head.method, ':path': head.path, ':scheme': 'http',
      ':authority': head.authority || formatAuthority(target.ip, target.port),
      [Header.destination]: formatAuthority(target.ip, target.port),
      [Header.protocol]: head.protocol,
      ...sourceHeaders(conn.src),
    };
    return new Promise((resolve) => {
      let stream;
      try {
        stream = this.pool.request(peer, headers, { endStream: empty });
      } catch (err) {
        resolve(this.answer(req, 503, `tunnel to ${peer.name}: ${errorText(err)}`, body, 'ERROR', undefined, 'connect-failure'));
        return;
      }
      onH2Answer(stream, resolve, (err) => {
        const refused = stream.rstCode === h2c.NGHTTP2_REFUSED_STREAM;
        resolve(this.answer(req, 503, `tunnel to ${peer.name}: ${errorText(err)}`, body, 'ERROR', undefined, refused ? 'refused-stream' : 'reset'));
      });
      cancelOn(signal, stream);
      if (empty) drain(body);
      else pipeBody(body, stream);
    });
  }

  /** a request to a pod on another node on a pooled CONNECT stream to it (mesh.ts): HTTP/1.1, or HTTP/2 with its whole body, `h2Body` */
  private pooled(req: RequestRecord, peer: NodeInfo, head: RequestHead, body: Readable, signal: AbortSignal,
    target: Target, h2Body?: Buffer): Promise<L7Response> {
    return this.mesh.send(peer, target, req.conn.src, head, body, signal, h2Body).catch((err: unknown) => {
      // refused by the destination's identity check (403), or nothing there (404)
      const refused = err instanceof UpstreamError ? err.refused : undefined;
      if (refused === 403) return this.answer(req, 403, errorText(err), body, 'DROPPED');
      const kind = err instanceof UpstreamError ? err.kind : 'reset';
      return this.answer(req, 503, errorText(err), body, 'ERROR', undefined, kind);
    });
  }

  /** the backend for one request: the pod itself, or one of the Service's backends by its balancer */
  private pick(req: RequestRecord, view: MeshView, st: ServiceTraffic | undefined, tried: ReadonlySet<string> | undefined): Target | undefined {
    const ep = req.conn.endpoint;
    if (ep) return tried?.has(ep.ip) ? undefined : { ip: ep.ip, port: req.conn.orig.port, node: ep.node, identity: ep.identity, endpoint: ep, backend: undefined };
    const svc = req.service;
    if (!svc || !st) return undefined;
    const hashOn = st.policy?.loadBalancer?.hashOn;
    const hashKey = hashOn ? hashKeyFor(hashOn, { headers: flatHeaders(req.head.headers), path: req.head.path, sourceIp: req.conn.src.ip }) : undefined;
    const b = st.balancer.pick(hashKey !== undefined ? { hashKey } : undefined, tried);
    if (!b) return undefined;
    return { ip: b.ip, port: svc.port.targetPort, node: b.node, identity: b.identity, endpoint: view.endpointByIp(b.ip), backend: b };
  }

  /** metrics, access log and span of one request, once its answer is known */
  private record(req: RequestRecord, res: L7Response): void {
    const done = (): void => {
      const seconds = Number(process.hrtime.bigint() - req.started) / 1e9;
      const grpcStatus = req.grpc ? grpcStatusOf(res) : undefined;
      const verdict = req.verdict ?? (res.status >= 500 && req.local ? 'ERROR' : 'FORWARDED');
      const dstIdentity = req.service?.service.identity ?? req.conn.endpoint?.identity ?? 0;
      this.ctx.metrics.request({
        direction: 'outbound', src: req.conn.src.identity, dst: dstIdentity, route: req.route, code: res.status,
        grpcStatus, verdict, seconds,
      });
      const svc = req.service?.service;
      if (this.ctx.tracer.records(req.hop)) this.endSpan(req, res.status, grpcStatus, verdict, dstIdentity);
      this.ctx.accessLog?.write({
        startMs: req.startedMs,
        direction: 'outbound', traceId: req.hop.context.traceId, spanId: req.hop.context.spanId,
        src: { identity: req.conn.src.identity, ...(req.conn.src.endpoint ? { workload: `${req.conn.src.endpoint.namespace}/${req.conn.src.endpoint.name}` } : {}) },
        dst: { identity: dstIdentity, ...(svc ? { workload: `${svc.namespace}/${svc.name}` } : {}) },
        method: req.head.method, authority: req.head.authority, path: req.head.path,
        protocol: req.grpc ? 'gRPC' : req.head.protocol === 'h2' ? 'HTTP/2' : 'HTTP/1.1',
        status: res.status, grpcStatus, route: req.route, upstream: req.upstream ? formatAuthority(req.upstream.ip, req.upstream.port) : '', bytesIn: req.bytesIn, bytesOut: answerBytes(res),
        durationMs: seconds * 1000, retries: req.retries, verdict, policy: '',
      });
    };
    // gRPC's outcome is in its trailers: record when the body ends, or now when the answer
    // came whole with them (its body stream is never read, so it would never end)
    if (req.grpc && !res.empty && res.whole === undefined) res.body.once('close', done);
    else done();
  }

  /** the CLIENT span of a request, for a hop that is exported */
  private endSpan(req: RequestRecord, status: number, grpcStatus: number | undefined, verdict: RequestVerdict, dstIdentity: number): void {
    const q = req.head.path.indexOf('?');
    const path = q < 0 ? req.head.path : req.head.path.slice(0, q);
    const svc = req.service?.service;
    this.ctx.tracer.end(req.hop, {
      method: req.head.method, path, status, grpcStatus,
      ...(req.grpc ? { grpcMethod: path.slice(1) } : {}),
      serverAddress: svc ? `${svc.name}.${svc.namespace}` : req.conn.orig.ip, serverPort: req.conn.orig.port,
      protocol: req.head.protocol === 'h2' ? 'HTTP/2' : 'HTTP/1.1',
      src: { identity: req.conn.src.identity, namespace: req.conn.src.endpoint?.namespace, pod: req.conn.src.endpoint?.name },
      dst: { identity: dstIdentity, namespace: svc?.namespace ?? req.conn.endpoint?.namespace, pod: req.conn.endpoint?.name },
      route: req.route, verdict, ...(req.error ? { error: req.error } : {}),
    });
  }

  /**
   * The proxy answers itself (no route, no backend, a fault, a limit): a flow on this node
   * says why. `failure` marks an answer that stands for a failed attempt (for retries).
   */
  private answer(req: RequestRecord, status: number, why: string, body: Readable | undefined, verdict: RequestVerdict = 'ERROR',
    extra?: Headers, failure?: 'connect-failure' | 'reset' | 'refused-stream'): L7Response {
    if (body) drain(body);
    const { conn, head } = req;
    const f = newFlow(this.ctx.node, verdict, 'L7', 'EGRESS', { ip: conn.src.ip, port: conn.src.port }, conn.orig);
    f.source = conn.src.flow;
    if (req.service) f.destinationService = { name: req.service.service.name, namespace: req.service.service.namespace };
    f.l7 = {
      type: 'REQUEST',
      http: { code: status, method: head.method, url: `http://${head.authority}${head.path}`, protocol: head.protocol === 'h2' ? 'HTTP/2' : 'HTTP/1.1' },
    };
    f.traceContext = { parent: { traceId: req.hop.context.traceId, spanId: req.hop.context.spanId } };
    f.summary = why;
    this.ctx.emit(f);
    req.local = true;
    req.verdict = verdict;
    if (verdict === 'ERROR') req.error = why;
    const res = localResponse(status, why, req.grpc, extra);
    if (failure) failed.set(res, failure);
    return res;
  }
}

/** what the source side knows about one request while it routes it */
interface RequestRecord {
  conn: EgressConn;
  head: RequestHead;
  grpc: boolean;
  hop: HopSpan;
  started: bigint;
  startedMs: number;
  /** `namespace/name#rule` of the matched route, '' when none */
  route: string;
  rule?: RouteRule;
  /** the Service the request went to (the route's backend Service when a route matched) */
  service: ServiceTarget | undefined;
  retries: number;
  /** the request body's length for the access log (when it is on and the length is known) */
  bytesIn: number | undefined;
  /** the last endpoint tried */
  upstream: Target | undefined;
  /** the proxy answered itself */
  local?: boolean;
  verdict?: RequestVerdict;
  error?: string;
}

/**
 * What became of a retry, for nodal_proxy_retries_total: `failure` it failed and another
 * retry follows (or the client left), `limit_exceeded` it failed and may not be retried
 * (it was the last one allowed, or no endpoint is left to try), `success` its answer is not
 * one to retry
 */
function retryOutcome(retry: RetryPolicy, method: string, result: AttemptResult, retried: boolean, aborted: boolean): RetryOutcome {
  if (retried || aborted) return 'failure';
  // with attempts and endpoints left, this answer would have been retried
  if (retry.shouldRetry(method, 0, result)) return 'limit_exceeded';
  return 'success';
}

/** local answers that stand for a failed attempt, and how it failed */
const failed = new WeakMap<L7Response, 'connect-failure' | 'reset' | 'refused-stream'>();

function attemptResult(res: L7Response, attempt: AbortSignal, request: AbortSignal): AttemptResult {
  const how = failed.get(res) ?? upstreamFailure.get(res) ?? remoteFailure(res);
  if (how) {
    const timedOut = attempt.aborted && !request.aborted;
    return {
      connectFailure: how === 'connect-failure', refusedStream: how === 'refused-stream', reset: how === 'reset', timeout: timedOut,
      requestSent: how !== 'connect-failure' && how !== 'refused-stream',
    };
  }
  const grpcStatus = headerValue(res.headers['grpc-status']);
  return { status: res.status, ...(grpcStatus !== undefined ? { grpcStatus: Number(grpcStatus) } : {}), requestSent: true };
}

/** the destination node's word that its pod could not be reached (its 503 carries the header) */
function remoteFailure(res: L7Response): 'connect-failure' | 'reset' | undefined {
  const v = res.headers[UPSTREAM_FAILURE_HEADER];
  if (v === undefined) return undefined;
  delete res.headers[UPSTREAM_FAILURE_HEADER];
  return v === 'connect-failure' ? 'connect-failure' : 'reset';
}

/**
 * A RetryPolicy is configuration only (no per-request state): one per TrafficPolicy retry
 * and route retry, made at its first use. Snapshots bring new objects, so an old policy's
 * entry goes with it.
 */
const retryPolicies = new WeakMap<object, WeakMap<object, RetryPolicy>>();
const NO_ROUTE_RETRY = {};
const NO_TRAFFIC_RETRY = {};

function retryPolicy(policy: TrafficRetry | undefined, route: RouteRetry | undefined): RetryPolicy {
  const outer = policy ?? NO_TRAFFIC_RETRY;
  let byRoute = retryPolicies.get(outer);
  if (!byRoute) retryPolicies.set(outer, (byRoute = new WeakMap()));
  const inner = route ?? NO_ROUTE_RETRY;
  let r = byRoute.get(inner);
  if (!r) byRoute.set(inner, (r = new RetryPolicy(policy, route)));
  return r;
}

/** bodies up to this size are held so that a retry can send them again */
const MAX_HELD_BODY = 64 * 1024;

/** the whole request body if it is small and of known length; undefined: it streams, no retries */
async function holdBody(head: RequestHead, body: Readable): Promise<Buffer | undefined> {
  const cl = Number(headerValue(head.headers['content-length']));
  if (!Number.isInteger(cl) || cl > MAX_HELD_BODY) return undefined;
  if (body instanceof WholeBody) return body.whole;
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/**
 * An HTTP/2 request body when all of it, at most `max` bytes, is here by the end of this poll
 * phase: node:http2 hands a stream the DATA of the read that carried its HEADERS after the
 * 'stream' event, within the same phase (as onH2Answer() finds for answers). undefined when
 * more is to come, or more than `max` came: what was read is put back, and the body streams
 * from its first byte.
 */
function wholeThisTurn(body: Readable, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    /** `ended`: the body ended, whole or cut off (nothing can be put back then) */
    const finish = (whole: boolean, ended = false): void => {
      if (done) return;
      done = true;
      clearImmediate(timer);
      // with its last 'readable' listener gone, the stream flows again for the next reader
      body.off('readable', onReadable);
      body.off('end', onEnd);
      if (whole) {
        resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
        return;
      }
      if (!ended) for (let i = chunks.length - 1; i >= 0; i--) body.unshift(chunks[i]);
      resolve(undefined);
    };
    // paused mode: read() takes what is buffered without switching the stream to flowing
    const onReadable = (): void => {
      for (let c = body.read() as Buffer | null; c !== null; c = body.read() as Buffer | null) {
        chunks.push(c);
        size += c.length;
        if (size > max) {
          finish(false);
          return;
        }
      }
    };
    const onEnd = (): void => finish(!cutOff(body), true);
    const timer = setImmediate(finish, false);
    body.on('readable', onReadable);
    body.once('end', onEnd);
  });
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      unwatchAbort(signal, done);
      resolve();
    }
    watchAbort(signal, done);
  });
}


/**
 * The socket as a plain Duplex that yields what is buffered in it first. Slower than the
 * handle (node:http2 wraps it in a JS stream), so only for connections whose first bytes
 * protocol detection had to read.
 */
function replayable(socket: Socket): Duplex {
  const d = new Duplex({
    read() { socket.resume(); },
    write(chunk: Buffer, _enc, cb) { socket.write(chunk, cb); },
    final(cb) { socket.end(cb); },
    destroy(err, cb) {
      socket.destroy(err ?? undefined);
      cb(err);
    },
  });
  socket.on('data', (c: Buffer) => { if (!d.push(c)) socket.pause(); });
  socket.once('end', () => d.push(null));
  socket.once('close', () => d.destroy());
  socket.on('error', (err) => d.destroy(err));
  return d;
}

function noop(): void {}
