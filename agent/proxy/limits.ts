// Every bound the proxy puts on what a client or a peer node may send (issue 4 item 7:
// hostile input). One place, so that the numbers and their reasons are read together and
// a test can shorten a timeout instead of waiting a minute. The parsers themselves are
// Node's (llhttp for HTTP/1.1, nghttp2 for HTTP/2); this file only configures them, and
// answers what they reject.

import type { IncomingMessage, Server, ServerOptions, ServerResponse } from 'node:http';
import type { ClientSessionOptions, ServerOptions as Http2ServerOptions, Settings } from 'node:http2';
import type { Duplex } from 'node:stream';
import { ProxyError } from './errors.ts';

export interface ProxyLimits {
  /** HTTP/1.1: time for one request's head to arrive, from its first byte (slowloris); answered 408 */
  headersTimeoutMs: number;
  /** how often node:http looks for expired heads: a slow head is closed within headersTimeout + this */
  timeoutCheckMs: number;
  /** HTTP/1.1: time for a whole request (head and body); 0 = unbounded, see the default's reason */
  requestTimeoutMs: number;
  /** HTTP/1.1: idle time of a keep-alive client connection between requests */
  keepAliveTimeoutMs: number;
  /** HTTP/1.1: bytes of request line plus headers; answered 431 */
  maxHeaderBytes: number;
  /** HTTP/1.1: header fields per request; answered 431 */
  maxHeaderCount: number;
  /** HTTP/1.1 Upgrade: time for the pod to answer the upgrade request; answered 504 (used by the onUpgrade fix, see the report) */
  upgradeTimeoutMs: number;
  /** after an error answer (400/408/431), how long the client may take to read it before the connection is dropped */
  errorLingerMs: number;
  /** tunnel: streams one tunnel session may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); a full session gets a sibling (tunnel.ts) */
  tunnelMaxStreams: number;
  /** tunnel: bytes of one stream's header block (SETTINGS_MAX_HEADER_LIST_SIZE); a tunnel request carries ~6 short headers */
  tunnelMaxHeaderBytes: number;
  /** tunnel: header fields of one stream, pseudo-headers included */
  tunnelMaxHeaderPairs: number;
  /** tunnel: idle pooled streams (mesh.ts) kept to one peer node, over all its source and destination pods, by each of the two pools (lean, node's agent) */
  tunnelIdleStreamsPerPeer: number;
  /** tunnel: a pooled stream (mesh.ts) is retired once it is this old, however busy; 0: never */
  tunnelStreamMaxAgeMs: number;
  /** HTTP/2: memory nghttp2 may hold per session, in MB, before it refuses new streams */
  h2SessionMemoryMb: number;
  /** HTTP/2: invalid frames tolerated before the session is closed */
  h2MaxInvalidFrames: number;
  /** HTTP/2: streams refused (over a limit) before the session is closed */
  h2MaxRejectedStreams: number;
  /** h2c from client pods: streams one client connection may have open at once */
  h2cMaxStreams: number;
  /** HTTP/2 rapid reset (CVE-2023-44487): RST_STREAM frames a peer may send in a burst... */
  h2ResetBurst: number;
  /** ...and per second after it; past either the session gets GOAWAY */
  h2ResetRate: number;
}

export const DEFAULT_LIMITS: Readonly<ProxyLimits> = Object.freeze({
  // a pod writes a request head in one segment; 10 s covers a stalled node, and frees a
  // slowloris connection 6x sooner than node's 60 s default
  headersTimeoutMs: 10_000,
  // node's default check is every 30 s, which would make the 10 s above ~40 s
  timeoutCheckMs: 1_000,
  // 0: uploads and streamed request bodies may run as long as they move (Envoy's
  // request_timeout is off by default too); a stalled head is headersTimeout's job
  requestTimeoutMs: 0,
  // long, like Envoy's one-hour idle timeout: the proxy must not be the first to drop an
  // idle connection the application expects to reuse (that races with the next request)
  keepAliveTimeoutMs: 60 * 60 * 1000,
  // Envoy's 60 KiB default rounded up: large cookies and JWTs pass as they would without
  // the mesh, while node's 16 KiB default would refuse requests the pod itself accepts
  maxHeaderBytes: 64 * 1024,
  // node's default count; Envoy's 100 would refuse what many pods accept
  maxHeaderCount: 2_000,
  // Envoy's default route timeout: a WebSocket handshake is answered at once or not at all
  upgradeTimeoutMs: 15_000,
  errorLingerMs: 2_000,
  // the connections between two nodes share a session (another once it is full): a busy
  // pair of nodes needs thousands, a compromised peer must not get millions per session
  tunnelMaxStreams: 16_384,
  tunnelMaxHeaderBytes: 16 * 1024,
  tunnelMaxHeaderPairs: 32,
  // a pool is per source pod and destination pod, 64 idle streams each: without a bound per
  // peer, a burst between many pairs of pods would keep tens of thousands open for 30 s
  tunnelIdleStreamsPerPeer: 1_024,
  // the destination checks a pooled stream's source when it opens, and again at each
  // snapshot (inbound.ts recheckPooled()); a destination of an older version does only the
  // first, so during a rolling upgrade a busy stream would carry one check for hours.
  // Retired after a minute, no check covers more, whatever the peer's version: one CONNECT
  // a minute per busy pair of pods
  tunnelStreamMaxAgeMs: 60_000,
  // one session carries every connection between two nodes, so the 10 MB default would
  // throttle a busy pair of nodes long before memory is a real concern
  h2SessionMemoryMb: 128,
  // a peer's nghttp2 sends no invalid frames; a few hundred is noise, a thousand an attack
  h2MaxInvalidFrames: 100,
  h2MaxRejectedStreams: 100,
  // Go's http2 server default: one client connection is one pod's, not a node's traffic
  h2cMaxStreams: 250,
  // nghttp2's burst; the rate is 3x its 33/s because one tunnel carries the resets of
  // every aborted connection between two nodes, and a legitimate burst of client resets
  // must not tear down all of them
  h2ResetBurst: 1_000,
  h2ResetRate: 100,
});

/** defaults with overrides, validated once at start-up */
export function resolveLimits(over: Partial<ProxyLimits> | undefined): ProxyLimits {
  const l: ProxyLimits = { ...DEFAULT_LIMITS, ...over };
  for (const k of Object.keys(DEFAULT_LIMITS) as Array<keyof ProxyLimits>) {
    const v = l[k];
    // a zero timeout or age means "none"; a zero size or count would refuse everything
    const min = k === 'requestTimeoutMs' || k === 'tunnelStreamMaxAgeMs' ? 0 : 1;
    if (!Number.isInteger(v) || v < min) {
      throw new ProxyError('NODAL_ERR_PROXY_CONFIG', `proxy options: limits.${k} ${String(v)} is not an integer >= ${min}`);
    }
  }
  // node:http refuses a header timeout longer than a non-zero request timeout
  if (l.requestTimeoutMs > 0 && l.headersTimeoutMs > l.requestTimeoutMs) {
    throw new ProxyError('NODAL_ERR_PROXY_CONFIG', `proxy options: limits.headersTimeoutMs ${l.headersTimeoutMs} is longer than limits.requestTimeoutMs ${l.requestTimeoutMs}`);
  }
  return l;
}

// ---------------------------------------------------------------- HTTP/1.1

/** node:http server options; llhttp stays strict (no lenient flags: they are what smuggling needs) */
export function http1ServerOptions(l: ProxyLimits): ServerOptions {
  return {
    insecureHTTPParser: false,
    maxHeaderSize: l.maxHeaderBytes,
    headersTimeout: l.headersTimeoutMs,
    requestTimeout: l.requestTimeoutMs,
    connectionsCheckingInterval: l.timeoutCheckMs,
    keepAliveTimeout: l.keepAliveTimeoutMs,
    // duplicate singletons (Host, Content-Type, Authorization) keep the first value, the
    // same one the policy saw and the pod gets: the proxy re-frames every request
    joinDuplicateHeaders: false,
  };
}

/**
 * What createServer() leaves undone for a server that never listens and is fed streams by
 * emit('connection'), as the proxy's is:
 * - node:http starts the check for headersTimeout/requestTimeout on 'listening'; without
 *   it no timeout applies at all and a slowloris client holds its connection forever;
 * - node's own answer to a parse error writes and destroys in one go: on a tunnel stream
 *   the reset overtakes the answer, and on a socket the client's unread bytes turn the
 *   close into a RST that can discard it. The client would see a reset, not a 400.
 */
export function hardenHttpServer<S extends Server>(server: S, l: ProxyLimits): S {
  // one more than the limit, so that a request over it can be told from one at it (guard())
  server.maxHeadersCount = l.maxHeaderCount + 1;
  server.emit('listening');
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => answerClientError(err, socket, l.errorLingerMs));
  return server;
}

const ANSWERS: Record<string, string> = {
  HPE_HEADER_OVERFLOW: '431 Request Header Fields Too Large',
  HPE_CHUNK_EXTENSIONS_OVERFLOW: '413 Content Too Large',
  ERR_HTTP_REQUEST_TIMEOUT: '408 Request Timeout',
};

/** sockets already answered: llhttp stays in its error state and reports every later chunk again */
const answered = new WeakSet<Duplex>();

/**
 * Answer a request the parser refused, then close the connection: the answer, a FIN, and
 * the client's remaining bytes read and dropped (never parsed, never forwarded) until it
 * closes too or errorLinger runs out.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex, lingerMs: number): void {
  // answered already, or refused by guardRequest (whose answer closes the connection)
  if (answered.has(socket) || refused.has(socket)) return;
  answered.add(socket);
  socket.on('error', noop);
  // a response under way for an earlier pipelined request: an error answer now would be
  // read as its answer, so the connection just ends. One for the failing request itself
  // (a bad chunk in its body) that has not begun is replaced by the error answer.
  const s = socket as Duplex & { _httpMessage?: ServerResponse | null; parser?: { incoming?: IncomingMessage | null } | null };
  const res = s._httpMessage;
  const ours = !res || (!res.headersSent && res.req === s.parser?.incoming);
  if (!ours || !socket.writable) {
    socket.destroy();
    return;
  }
  const status = ANSWERS[err.code ?? ''] ?? '400 Bad Request';
  socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  const timer = setTimeout(() => socket.destroy(), lingerMs);
  socket.once('close', () => clearTimeout(timer));
}

/**
 * What the proxy refuses before a request is handled, beyond what llhttp refuses while it
 * reads the head: more header fields than maxHeaderCount (node:http would silently drop
 * the rest, and the pod would get a request its client did not send), a repeated Host
 * (RFC 9112 §3.2), and a Transfer-Encoding whose final coding is not chunked (RFC 9112
 * §6.3). llhttp refuses that last one too, but only after it handed the head over: the
 * request would have started, and its head could reach a pod before the refusal.
 * Undefined when the request may go on; otherwise the status line of the answer.
 */
export function refusal(req: IncomingMessage, l: ProxyLimits): string | undefined {
  const raw = req.rawHeaders;
  if (raw.length > 2 * l.maxHeaderCount) return '431 Request Header Fields Too Large';
  let hosts = 0;
  let coding: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host' && ++hosts > 1) return '400 Bad Request';
    if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') coding = raw[i + 1]!;
  }
  if (coding !== undefined && coding.slice(coding.lastIndexOf(',') + 1).trim().toLowerCase() !== 'chunked') return '400 Bad Request';
  return undefined;
}

/**
 * Connections whose last answer was a refusal with `connection: close`: requests and
 * upgrades pipelined behind the refused one are not served (their answers could never be
 * sent), so none of them reaches a pod.
 */
const refused = new WeakSet<Duplex>();

/** the request handler behind refusal(): a refused request is answered and its connection closed */
export function guardRequest(l: ProxyLimits, handle: (req: IncomingMessage, res: ServerResponse) => void): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    if (refused.has(req.socket)) return;
    const why = refusal(req, l);
    if (why === undefined) return handle(req, res);
    refused.add(req.socket);
    const code = Number(why.slice(0, 3));
    res.writeHead(code, why.slice(4), { connection: 'close', 'content-length': 0 });
    res.end();
  };
}

/** the upgrade handler behind refusal() */
export function guardUpgrade(l: ProxyLimits, handle: (req: IncomingMessage, socket: Duplex, head: Buffer) => void): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
  return (req, socket, head) => {
    // behind a refusal, as for requests: the refusal's answer closes the connection
    if (refused.has(socket)) {
      socket.on('error', noop);
      return;
    }
    const why = refusal(req, l);
    if (why === undefined) return handle(req, socket, head);
    socket.on('error', noop);
    socket.end(`HTTP/1.1 ${why}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    const timer = setTimeout(() => socket.destroy(), l.errorLingerMs);
    socket.once('close', () => clearTimeout(timer));
  };
}

// ---------------------------------------------------------------- HTTP/2 (tunnel)

/** nghttp2 options node supports but @types/node 24 does not list */
interface SessionGuards { maxSessionInvalidFrames?: number; maxSessionRejectedStreams?: number }

/** the tunnel listener: its own settings (windows) plus the bounds a hostile peer meets */
export function tunnelServerOptions(l: ProxyLimits, settings: Settings): Http2ServerOptions & SessionGuards {
  return h2ServerOptions(l, settings, l.tunnelMaxStreams, l.tunnelMaxHeaderBytes, l.tunnelMaxHeaderPairs);
}

/**
 * A listener for h2c (prior knowledge) from client pods, for when the proxy parses HTTP/2
 * itself: header bounds as for HTTP/1.1 (the same requests, in another framing), the
 * session guards as for the tunnel.
 */
export function h2cServerOptions(l: ProxyLimits, settings: Settings = {}): Http2ServerOptions & SessionGuards {
  return h2ServerOptions(l, settings, l.h2cMaxStreams, l.maxHeaderBytes, l.maxHeaderCount);
}

function h2ServerOptions(l: ProxyLimits, settings: Settings, streams: number, headerBytes: number, headerPairs: number): Http2ServerOptions & SessionGuards {
  return {
    settings: { ...settings, maxConcurrentStreams: streams, maxHeaderListSize: headerBytes },
    maxSessionMemory: l.h2SessionMemoryMb,
    maxHeaderListPairs: headerPairs,
    maxSessionInvalidFrames: l.h2MaxInvalidFrames,
    maxSessionRejectedStreams: l.h2MaxRejectedStreams,
    streamResetBurst: l.h2ResetBurst,
    streamResetRate: l.h2ResetRate,
  };
}

/** the tunnel's client half: the peer's answers are bounded the same way */
export function tunnelClientOptions(l: ProxyLimits, settings: Settings): ClientSessionOptions & SessionGuards {
  return {
    settings: { ...settings, maxHeaderListSize: l.tunnelMaxHeaderBytes },
    maxSessionMemory: l.h2SessionMemoryMb,
    maxHeaderListPairs: l.tunnelMaxHeaderPairs,
    maxSessionInvalidFrames: l.h2MaxInvalidFrames,
  };
}

function noop(): void {}
