// The node-to-node tunnel (DESIGN §5): one HTTP/2 session (h2c, inside WireGuard) per peer
// node (another when one is at its stream limit), multiplexing CONNECT streams and request
// streams. A CONNECT stream is a proxied connection (opaque TCP, an HTTP Upgrade), or one of
// the source proxy's pooled connections to a pod that carries the HTTP/1.1 requests it
// routed there (mesh.ts): HTTP/1.1 requests, and HTTP/2 and gRPC requests whose body is all
// here when the peer says it takes them (POOLED_H2_SETTING). A request stream is one HTTP/2
// or gRPC request the source side routed any other way (the request as the client sent it,
// plus x-nodal-destination naming the pod). The client half (TunnelPool) serves the outbound
// side; the server half (TunnelServer) authenticates the peer by its tunnel address, checks
// the claimed source identity against the pods that run on that peer, and hands accepted
// streams to the inbound side.

import {
  connect as h2connect, constants as h2constants, createServer as h2server,
  type ClientHttp2Session, type ClientHttp2Stream, type Http2Server, type Http2Session,
  type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream, type Settings,
} from 'node:http2';
import { connect, isIP, isIPv6, type Socket } from 'node:net';
import type { EndpointInfo, NodeInfo } from '../../control/api/types.ts';
import { ReservedIdentity } from '../../control/api/types.ts';
import type { InboundConn, ProxyContext } from './context.ts';
import { errorText } from './errors.ts';
import { closedEarly, endToEnd, writeH2, type RequestHead } from './exchange.ts';
import { newFlow } from './flows.ts';
import { tunnelClientOptions, tunnelServerOptions } from './limits.ts';
import type { Inbound } from './inbound.ts';
import { normalizeIp, releaseOnClose } from './stream.ts';
import { newTrace, parseTraceparent } from './trace.ts';
import type { MeshView } from './view.ts';

/**
 * The tunnel headers: identity travels as data the receiver verifies, never as trust. The
 * receiver maps the identity to its SPIFFE id and labels from its own snapshot, so none of
 * those travel (before this release an unread x-nodal-source-spiffe did; receivers never
 * read it, so peers of either release understand each other). Each value a receiver gets
 * costs it an old-space string until its next full GC (docs/ARCHITECTURE.md, "What a
 * request leaves for the GC"): a header goes only where it is read.
 */
export const Header = {
  identity: 'x-nodal-source-identity',
  endpoint: 'x-nodal-source-endpoint',
  /** source ip:port, informational (flows), never used for a decision */
  addr: 'x-nodal-source-addr',
  /** request streams: the pod (ip:port) the source side chose; CONNECT names it in :authority */
  destination: 'x-nodal-destination',
  /**
   * request streams, and a request on a pooled stream whose client spoke HTTP/2 (`h2`): the
   * protocol the client spoke, which the destination speaks to the pod
   */
  protocol: 'x-nodal-protocol',
  traceparent: 'traceparent',
} as const;

/**
 * The headers that name a stream's source workload, which the receiver checks: its
 * identity and address, and its pod when known
 */
export function sourceHeaders(src: { identity: number; endpoint: EndpointInfo | undefined; ip: string; port: number }): Record<string, string> {
  const h: Record<string, string> = { [Header.identity]: String(src.identity), [Header.addr]: formatAuthority(src.ip, src.port) };
  if (src.endpoint) h[Header.endpoint] = `${src.endpoint.namespace}/${src.endpoint.name}`;
  return h;
}

/** x-nodal-protocol of a CONNECT stream that carries the source proxy's own HTTP/1.1 requests (mesh.ts) */
export const POOLED_REQUESTS = 'http1-requests';

export const DEFAULT_TUNNEL_PORT = 15008;

/**
 * Per-stream flow-control window. HTTP/2's default 64 KiB caps one stream at 64 KiB per
 * round trip; 1 MiB lets a single bulk transfer fill a node-to-node link at in-cluster RTTs.
 */
const STREAM_WINDOW = 1 << 20;
/** whole-session window: many streams share one session, so it is a multiple of the stream's */
const SESSION_WINDOW = 16 << 20;

const settings = { initialWindowSize: STREAM_WINDOW, enablePush: false };

/**
 * A SETTINGS parameter of the tunnel's server half (from HTTP/2's experimental range,
 * RFC 9113 §11.3): 1 says it serves HTTP/2 requests on pooled streams, as HTTP/1.1 with
 * `x-nodal-protocol: h2` (mesh.ts). A peer from before does not send it, and a source sends
 * such requests only on a session whose peer did: during a rolling upgrade each side speaks
 * what the other understands. A client ignores a setting it does not know (§6.5.2).
 */
export const POOLED_H2_SETTING = 0xf0da;
const serverSettings: CustomSettings = { ...settings, customSettings: { [POOLED_H2_SETTING]: 1 } };
/** node's settings with those it does not know (node 22+; not in @types/node 24.10) */
type CustomSettings = Settings & { customSettings?: Record<number, number> };

// ---------------------------------------------------------------- client (outbound side)

/**
 * Sessions one peer may have open at once. A session carries as many streams at once as the
 * peer's SETTINGS_MAX_CONCURRENT_STREAMS allows (limits.ts tunnelMaxStreams, 16,384), and
 * nghttp2 holds any stream beyond that, unsent, until one of the open ones ends: a long-lived
 * connection or an idle pooled stream can hold its slot for minutes. So a full session gets a
 * sibling, as Envoy's HTTP/2 pool opens another connection at max_concurrent_streams.
 */
const MAX_SESSIONS_PER_PEER = 8;

/** one session to a peer and the streams open on it */
interface Tunnel { session: ClientHttp2Session; open: number }

/** the tunnel each open stream is counted in */
const tunnelOf = new WeakMap<ClientHttp2Stream, Tunnel>();

function streamClosed(this: ClientHttp2Stream): void {
  const t = tunnelOf.get(this);
  if (t) t.open--;
}

export class TunnelPool {
  private readonly ctx: ProxyContext;
  private readonly port: number;
  /** `${node}@${tunnelIp}`: a peer whose tunnel address changes gets new sessions */
  private readonly sessions = new Map<string, Tunnel[]>();
  /** peers whose every session was full at once, told in the log once until a stream fits again */
  private readonly saturated = new Set<string>();

  constructor(ctx: ProxyContext, port: number) {
    this.ctx = ctx;
    this.port = port;
  }

  /** a CONNECT stream to `authority` (ip:port of a pod on `peer`); throws if the session is unusable */
  open(peer: NodeInfo, authority: string, headers: OutgoingHttpHeaders): ClientHttp2Stream {
    return this.request(peer, { ':method': 'CONNECT', ':authority': authority, ...headers });
  }

  /** any stream on a session to `peer` (pseudo-headers included); throws if the session is unusable */
  request(peer: NodeInfo, headers: OutgoingHttpHeaders, options?: { endStream?: boolean }): ClientHttp2Stream {
    const t = this.pick(`${peer.name}@${peer.tunnelIp}`, peer);
    const s = t.session.request(headers, options);
    t.open++;
    tunnelOf.set(s, t);
    s.once('close', streamClosed);
    return s;
  }

  /**
   * The peer serves HTTP/2 requests on pooled streams (POOLED_H2_SETTING): its session to it
   * said so. false until a session's SETTINGS have come: its first requests go as request
   * streams, as to a peer from before.
   */
  takesPooledH2(peer: NodeInfo): boolean {
    const list = this.sessions.get(`${peer.name}@${peer.tunnelIp}`);
    if (!list) return false;
    for (const t of list) if (!t.session.destroyed && (t.session.remoteSettings as CustomSettings).customSettings?.[POOLED_H2_SETTING] === 1) return true;
    return false;
  }

  close(): void {
    for (const list of this.sessions.values()) for (const t of list) t.session.destroy();
    this.sessions.clear();
  }

  /**
   * The first session to `peer` with a free stream slot (streams stay packed into the fewest
   * sessions), else a new one while fewer than MAX_SESSIONS_PER_PEER are open, else the
   * least busy: nghttp2 holds the stream until one of that session's streams ends.
   */
  private pick(key: string, peer: NodeInfo): Tunnel {
    const list = this.sessions.get(key);
    let least: Tunnel | undefined;
    if (list) {
      for (const t of list) {
        // destroyed, its 'close' not yet emitted
        if (t.session.destroyed) continue;
        if (t.open < this.capacity(t.session)) {
          this.saturated.delete(key);
          return t;
        }
        if (!least || t.open < least.open) least = t;
      }
    }
    if (!list || list.length < MAX_SESSIONS_PER_PEER || !least) {
      if (least) this.ctx.log.info({ peer: peer.name, sessions: list!.length + 1, streams: least.open }, 'tunnel sessions to the peer are full: opening another');
      return this.connect(key, peer);
    }
    if (!this.saturated.has(key)) {
      this.saturated.add(key);
      this.ctx.log.warn({ peer: peer.name, sessions: list!.length, streams: least.open },
        'every tunnel session to the peer is at its stream limit: new streams wait for open ones to end');
    }
    return least;
  }

  /** streams a session may carry at once: what the peer allows, and no more than this proxy would allow a peer */
  private capacity(s: ClientHttp2Session): number {
    const remote = s.remoteSettings.maxConcurrentStreams ?? Infinity;
    return Math.min(remote, this.ctx.limits.tunnelMaxStreams);
  }

  private connect(key: string, peer: NodeInfo): Tunnel {
    const host = peer.tunnelIp;
    const port = this.port;
    // the receiver authenticates us by source address: leave from our own tunnel address
    const localAddress = this.ctx.view()?.self?.tunnelIp || undefined;
    const url = `http://${isIPv6(host) ? `[${host}]` : host}:${port}`;
    const s = h2connect(url, {
      ...tunnelClientOptions(this.ctx.limits, settings),
      remoteCustomSettings: [POOLED_H2_SETTING],
      createConnection: () => connect({ host, port, localAddress, noDelay: true }),
    });
    const t: Tunnel = { session: s, open: 0 };
    // a session closing or going away takes no new streams; the ones it carries run on
    const forget = (): void => {
      const list = this.sessions.get(key);
      const i = list ? list.indexOf(t) : -1;
      if (i < 0) return;
      list!.splice(i, 1);
      if (list!.length === 0) this.sessions.delete(key);
    };
    s.on('connect', () => s.setLocalWindowSize(SESSION_WINDOW));
    s.on('error', (err) => this.ctx.log.warn({ peer: peer.name, tunnel: url, err: errorText(err) }, 'tunnel session failed'));
    s.on('goaway', forget);
    s.on('close', forget);
    let list = this.sessions.get(key);
    if (!list) this.sessions.set(key, (list = []));
    list.push(t);
    return t;
  }
}

// ---------------------------------------------------------------- server (inbound side)

export class TunnelServer {
  private readonly ctx: ProxyContext;
  private readonly inbound: Inbound;
  private readonly server: Http2Server;
  private readonly sessions = new Set<Http2Session>();

  constructor(ctx: ProxyContext, inbound: Inbound) {
    this.ctx = ctx;
    this.inbound = inbound;
    this.server = h2server(tunnelServerOptions(ctx.limits, serverSettings));
    this.server.on('session', (s: Http2Session) => {
      this.sessions.add(s);
      s.on('close', () => this.sessions.delete(s));
      s.on('error', (err) => this.ctx.log.debug({ err: errorText(err) }, 'tunnel session error'));
      s.setLocalWindowSize(SESSION_WINDOW);
    });
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
  }

  /** a TCP connection on the tunnel listener: only a peer node's tunnel address may speak h2 */
  accept(socket: Socket): void {
    const ip = normalizeIp(socket.remoteAddress);
    const peer = this.ctx.view()?.peerByTunnelIp(ip);
    if (!peer) {
      this.refusePeer(ip, socket.remotePort ?? 0, normalizeIp(socket.localAddress), socket.localPort ?? 0);
      socket.on('error', noop);
      socket.resetAndDestroy();
      return;
    }
    this.server.emit('connection', socket);
  }

  close(): void {
    for (const s of this.sessions) s.destroy();
    this.sessions.clear();
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', noop);
    releaseOnClose(stream);
    const view = this.ctx.view();
    const sock = stream.session?.socket;
    const peerIp = normalizeIp(sock?.remoteAddress);
    // the snapshot may have dropped the peer since its session began: check every stream
    const peer = view?.peerByTunnelIp(peerIp);
    if (!view || !peer) {
      this.refusePeer(peerIp, sock?.remotePort ?? 0, normalizeIp(sock?.localAddress), sock?.localPort ?? 0);
      stream.session?.destroy();
      return;
    }
    const method = headers[':method'];
    const isConnect = method === 'CONNECT';
    const authority = parseAuthority(isConnect ? headers[':authority'] : headers[Header.destination]);
    if (!authority) {
      stream.respond({ ':status': 400 }, { endStream: true });
      return;
    }
    const claimedText = headerValue(headers[Header.identity]);
    const claimed = Number(claimedText);
    const srcAddr = parseAuthority(headers[Header.addr]);
    const srcEndpoint = findSourceEndpoint(view, headerValue(headers[Header.endpoint]), peer.name, claimed);
    const srcIp = srcEndpoint?.ip ?? srcAddr?.ip ?? peerIp;
    const srcPort = srcAddr?.port ?? 0;
    const trace = parseTraceparent(headers[Header.traceparent]) ?? newTrace();

    // the reserved health identity: a peer proxy's active health check, a connection only
    const probe = claimed === ReservedIdentity.HEALTH && isConnect;
    if (!claimedText || !Number.isInteger(claimed) || (!probe && !view.identityRunsOn(peer.name, claimed))) {
      const summary = `spoofed source identity ${claimedText || '(none)'} from node ${peer.name}`;
      this.ctx.log.warn({ peer: peer.name, peerIp, claimed: claimedText, authority: headers[':authority'] }, summary);
      const f = newFlow(this.ctx.node, 'DROPPED', 'L3_L4', 'INGRESS', { ip: srcIp, port: srcPort }, authority);
      if (Number.isInteger(claimed)) f.source = { identity: claimed };
      const dst = view.localEndpointByIp(authority.ip);
      if (dst) f.destination = view.flowEndpoint(dst);
      f.dropReasonDesc = 'AUTH_REQUIRED';
      f.summary = summary;
      f.traceContext = { parent: { traceId: trace.traceId, spanId: trace.spanId } };
      this.ctx.emit(f);
      stream.respond({ ':status': 403 }, { endStream: true });
      return;
    }

    const dst = view.localEndpointByIp(authority.ip);
    if (!dst) {
      const f = newFlow(this.ctx.node, 'ERROR', 'L3_L4', 'INGRESS', { ip: srcIp, port: srcPort }, authority);
      f.source = view.flowEndpoint(srcEndpoint, claimed);
      f.summary = `no local endpoint ${authority.ip} on node ${this.ctx.node}`;
      this.ctx.emit(f);
      stream.respond({ ':status': 404 }, { endStream: true });
      return;
    }

    const conn: InboundConn = {
      src: {
        identity: claimed, endpoint: srcEndpoint, flow: view.flowEndpoint(srcEndpoint, claimed),
        ip: srcIp, port: srcPort, principal: view.principal(claimed), namespace: view.identity(claimed)?.namespace ?? srcEndpoint?.namespace,
      },
      dst, port: authority.port, appProtocol: view.appProtocol(dst.ip, authority.port),
      trace, via: 'tunnel', peer: peer.name,
    };
    if (!isConnect) {
      this.onRequest(stream, headers, conn);
      return;
    }
    if (headers[Header.protocol] === POOLED_REQUESTS) {
      conn.pooled = true;
      stream.respond({ ':status': 200 });
      this.inbound.serve(stream, conn);
      return;
    }
    const early = this.inbound.preflight(conn);
    if (early && !early.allowed) {
      stream.respond({ ':status': 403 }, { endStream: true });
      return;
    }
    stream.respond({ ':status': 200 });
    this.inbound.serve(stream, conn, early);
  }

  /** a request stream: one HTTP request for a local pod, answered on the same stream */
  private onRequest(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, conn: InboundConn): void {
    const head: RequestHead = {
      method: String(headers[':method']),
      path: String(headers[':path'] ?? '/'),
      authority: String(headers[':authority'] ?? ''),
      headers: endToEnd(headers, true),
      protocol: headers[Header.protocol] === 'h2' ? 'h2' : 'http1',
    };
    const ac = new AbortController();
    // only a stream that closed before its exchange was over cancels upstream (a completed
    // one would build an AbortError per request for nothing)
    stream.once('close', () => { if (closedEarly(stream)) ac.abort(); });
    this.inbound.destination.exchange(conn, head, stream, ac.signal).then((r) => writeH2(stream, r), (err) => {
      this.ctx.log.error({ err: errorText(err) }, 'tunnel request failed unexpectedly');
      if (!stream.closed) stream.close(h2constants.NGHTTP2_INTERNAL_ERROR);
    });
  }

  private refusePeer(ip: string, port: number, localIp: string, localPort: number): void {
    const summary = 'tunnel from unknown peer';
    this.ctx.log.warn({ peerIp: ip }, summary);
    const f = newFlow(this.ctx.node, 'DROPPED', 'L3_L4', 'INGRESS', { ip, port }, { ip: localIp, port: localPort });
    f.dropReasonDesc = 'AUTH_REQUIRED';
    f.summary = summary;
    this.ctx.emit(f);
  }
}

function findSourceEndpoint(view: MeshView, ref: string | undefined, node: string, identity: number): EndpointInfo | undefined {
  // the header only names the pod; it counts only if that pod is on the peer with that identity
  if (!ref) return undefined;
  const ep = view.endpointByName(ref);
  return ep && ep.node === node && ep.identity === identity ? ep : undefined;
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** `ip:port` or `[v6]:port` → parts; anything else undefined */
export function parseAuthority(value: string | string[] | undefined): { ip: string; port: number } | undefined {
  const v = headerValue(value);
  if (!v) return undefined;
  let ip: string;
  let portText: string;
  if (v.startsWith('[')) {
    const end = v.indexOf(']');
    if (end < 0 || v[end + 1] !== ':') return undefined;
    ip = v.slice(1, end);
    portText = v.slice(end + 2);
  } else {
    const colon = v.lastIndexOf(':');
    if (colon <= 0) return undefined;
    ip = v.slice(0, colon);
    portText = v.slice(colon + 1);
  }
  const port = Number(portText);
  if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535) return undefined;
  // an address, checked before normalizing: '::ffff:' is stripped once, and
  // '[::ffff:::ffff:10.1.2.3]' must not become a valid address that way
  if (isIP(ip) === 0) return undefined;
  return { ip: normalizeIp(ip), port };
}

/**
 * `ip:port`, an IPv6 address in brackets. Every caller passes an address it already holds
 * as valid (a socket's, an endpoint's), and only IPv6 has a colon: no isIPv6() regex per
 * request (about 100 ns, several times per cross-node request)
 */
export function formatAuthority(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function noop(): void {}
