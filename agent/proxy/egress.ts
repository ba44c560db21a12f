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
import type { Socket } from 'node:net';
import { Duplex, type Readable } from 'node:stream';
import type { EndpointInfo } from '../../control/api/types.ts';
import type { FlowVerdict } from '../flows/flow.ts';
import type { InboundConn, ProxyContext, SourceInfo } from './context.ts';
import type { Destination } from './destination.ts';
import { errorText } from './errors.ts';
import {
  endToEnd, headerValue, isGrpc, localResponse, writeH1, writeH2, type Headers, type L7Response, type RequestHead, type WireProtocol,
} from './exchange.ts';
import { newFlow, type Addr } from './flows.ts';
import { CLIENT_IDLE_MS } from './http.ts';
import { formatAuthority, Header, type TunnelPool } from './tunnel.ts';
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
interface Target { ip: string; port: number; node: string; identity: number; endpoint: EndpointInfo | undefined }

/** how an upgraded HTTP/1.1 connection (WebSocket) is carried on: as a connection, by the outbound side */
export type CarryConnection = (socket: Socket, conn: EgressConn) => void;

const H2_SETTINGS = { enablePush: false, initialWindowSize: 1 << 20 };

export class Egress {
  private readonly ctx: ProxyContext;
  private readonly destination: Destination;
  private readonly pool: TunnelPool;
  private readonly carry: CarryConnection;
  private readonly h1: H1Server;
  private readonly h2: Http2Server;
  private readonly h1Conns = new WeakMap<object, EgressConn>();
  private readonly h2Conns = new WeakMap<Http2Session, EgressConn>();
  /** set only while an h2 connection is being handed to the server (its session is created synchronously) */
  private attaching: EgressConn | undefined;
  /** round-robin position per service port; survives snapshots so that an update does not reset the spread */
  private readonly rr = new Map<string, number>();
  private readonly sessions = new Set<Http2Session>();

  constructor(ctx: ProxyContext, destination: Destination, pool: TunnelPool, carry: CarryConnection) {
    this.ctx = ctx;
    this.destination = destination;
    this.pool = pool;
    this.carry = carry;
    this.h1 = h1server({ keepAliveTimeout: CLIENT_IDLE_MS, requireHostHeader: false }, (req, res) => this.onH1(req, res));
    this.h1.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.onUpgrade(req, socket, head));
    this.h1.on('connect', (_req: IncomingMessage, socket: Socket) => {
      socket.end('HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    });
    this.h2 = h2server({ settings: H2_SETTINGS });
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
    } else {
      this.h1Conns.set(socket, conn);
      this.h1.emit('connection', socket);
      // detection left it paused; node:http reads through the stream
      socket.resume();
    }
    // not for h2: the session reads the handle itself, and a resumed socket would hand the
    // next bytes to 'data' listeners nobody has (the client's next request, lost)
  }

  close(): void {
    for (const s of this.sessions) s.destroy();
    this.sessions.clear();
  }

  private onH1(req: IncomingMessage, res: ServerResponse): void {
    const conn = this.h1Conns.get(req.socket);
    if (!conn) {
      res.destroy();
      return;
    }
    const head: RequestHead = {
      method: req.method ?? 'GET', path: req.url ?? '/', authority: req.headers.host ?? '',
      headers: endToEnd(req.headers, true), protocol: 'http1',
    };
    const ac = new AbortController();
    res.on('close', () => { if (!res.writableFinished) ac.abort(); });
    const empty = req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined;
    this.forward(conn, head, req, empty, ac.signal).then((r) => writeH1(res, r), (err) => {
      this.ctx.log.error({ err: errorText(err) }, 'request failed unexpectedly');
      res.destroy();
    });
  }

  private onH2(stream: ServerHttp2Stream, headers: H2Headers): void {
    stream.on('error', noop);
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
    stream.once('close', () => ac.abort());
    this.forward(conn, head, stream, stream.readableEnded, ac.signal).then((r) => writeH2(stream, r), (err) => {
      this.ctx.log.error({ err: errorText(err) }, 'request failed unexpectedly');
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

  /** route one request and send it on; resolves with what the client must get */
  private async forward(conn: EgressConn, head: RequestHead, body: Readable, empty: boolean, signal: AbortSignal): Promise<L7Response> {
    const grpc = isGrpc(head.headers);
    const view = this.ctx.view();
    const trace = parseTraceparent(headerValue(head.headers.traceparent)) ?? childSpan(conn.trace);
    head.headers.traceparent = trace.header;
    if (!view) return this.answer(conn, head, trace, 503, 'no snapshot yet', grpc, body);
    const target = this.pick(conn, view);
    if (!target) {
      const svc = conn.service?.service;
      return this.answer(conn, head, trace, 503, `no healthy upstream for service ${svc?.namespace}/${svc?.name}`, grpc, body);
    }
    if (target.node === this.ctx.node) {
      const dst = target.endpoint && target.endpoint.node === this.ctx.node ? target.endpoint : undefined;
      if (!dst) return this.answer(conn, head, trace, 503, `backend ${target.ip} is not a known local endpoint`, grpc, body);
      const inbound: InboundConn = {
        src: conn.src, dst, port: target.port, appProtocol: view.appProtocol(dst.ip, target.port), trace, via: 'local', peer: undefined,
      };
      return this.destination.exchange(inbound, head, body, signal);
    }
    return this.remote(conn, view, head, body, empty, signal, target, trace, grpc);
  }

  private remote(conn: EgressConn, view: MeshView, head: RequestHead, body: Readable, empty: boolean, signal: AbortSignal,
    target: Target, trace: TraceParent, grpc: boolean): Promise<L7Response> {
    const peer = view.node(target.node);
    if (!peer || !peer.tunnelIp) return Promise.resolve(this.answer(conn, head, trace, 503, `no tunnel address for node ${target.node}`, grpc, body));
    const headers: Record<string, string | string[]> = {
      ...head.headers,
      ':method': head.method, ':path': head.path, ':scheme': 'http',
      ':authority': head.authority || formatAuthority(target.ip, target.port),
      [Header.destination]: formatAuthority(target.ip, target.port),
      [Header.protocol]: head.protocol,
      [Header.identity]: String(conn.src.identity),
      [Header.addr]: formatAuthority(conn.src.ip, conn.src.port),
    };
    const spiffe = view.identity(conn.src.identity)?.spiffeId;
    if (spiffe) headers[Header.spiffe] = spiffe;
    if (conn.src.endpoint) headers[Header.endpoint] = `${conn.src.endpoint.namespace}/${conn.src.endpoint.name}`;
    return new Promise((resolve) => {
      let stream;
      try {
        stream = this.pool.request(peer, headers, { signal, endStream: empty });
      } catch (err) {
        resolve(this.answer(conn, head, trace, 503, `tunnel to ${peer.name}: ${errorText(err)}`, grpc, body));
        return;
      }
      let trailers: Headers | undefined;
      let answered = false;
      stream.on('trailers', (t: H2Headers) => { trailers = endToEnd(t, false); });
      stream.once('response', (h: H2Headers, flags: number) => {
        answered = true;
        resolve({ status: Number(h[':status']), headers: endToEnd(h, false), body: stream, trailers: () => trailers, empty: (flags & h2c.NGHTTP2_FLAG_END_STREAM) !== 0 });
      });
      stream.on('error', (err) => {
        if (answered) return; // after the answer the client's side sees the body fail
        answered = true;
        resolve(this.answer(conn, head, trace, 503, `tunnel to ${peer.name}: ${errorText(err)}`, grpc, body));
      });
      if (empty) body.resume();
      else body.pipe(stream);
    });
  }

  /** the backend for one request: the pod itself, or one of the Service's backends in turn */
  private pick(conn: EgressConn, view: MeshView): Target | undefined {
    const ep = conn.endpoint;
    if (ep) return { ip: ep.ip, port: conn.orig.port, node: ep.node, identity: ep.identity, endpoint: ep };
    const svc = conn.service;
    if (!svc) return undefined;
    const backends = svc.service.backends;
    if (backends.length === 0) return undefined;
    const i = this.rr.get(svc.key) ?? 0;
    this.rr.set(svc.key, (i + 1) % backends.length);
    const b = backends[i % backends.length]!;
    return { ip: b.ip, port: svc.port.targetPort, node: b.node, identity: b.identity, endpoint: view.endpointByIp(b.ip) };
  }

  /** the proxy answers itself (no backend, no tunnel): an ERROR flow on this node says why */
  private answer(conn: EgressConn, head: RequestHead, trace: TraceParent, status: number, why: string, grpc: boolean, body: Readable,
    verdict: FlowVerdict = 'ERROR'): L7Response {
    body.resume();
    const f = newFlow(this.ctx.node, verdict, 'L7', 'EGRESS', { ip: conn.src.ip, port: conn.src.port }, conn.orig);
    f.source = conn.src.flow;
    f.l7 = {
      type: 'REQUEST',
      http: { code: status, method: head.method, url: `http://${head.authority}${head.path}`, protocol: head.protocol === 'h2' ? 'HTTP/2' : 'HTTP/1.1' },
    };
    f.traceContext = { parent: { traceId: trace.traceId, spanId: trace.spanId } };
    f.summary = why;
    this.ctx.emit(f);
    return localResponse(status, why, grpc);
  }
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
