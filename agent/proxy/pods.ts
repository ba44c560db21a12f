// Upstream connections from the destination proxy to its local pods, pooled per pod:
// HTTP/1.1 requests without a body on the lean client's keep-alive connections
// (pod-h1.ts), those with a body over node:http's keep-alive agent (one request per
// connection at a time), HTTP/2 (h2c, gRPC) over one multiplexed session per pod address.
// Every connection leaves from the proxy address, the only source the ingress guard admits
// for a new connection.

import { Agent, IncomingMessage, request, type ClientRequest, type OutgoingHttpHeaders } from 'node:http';
import { connect as h2connect, type ClientHttp2Session, type Http2Stream } from 'node:http2';
import { connect, Socket } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import type { Snapshot } from '../../control/api/types.ts';
import { errorText } from './errors.ts';
import { cancelOn, endToEnd, NO_BYTES, onH2Answer, pipeBody, unwatchAbort, watchAbort, WholeBody, wholeBodyOf, WholeResponse, type Headers, type L7Response, type RequestHead } from './exchange.ts';
import { LeanPodClient, leanClientAvailable, UpstreamError, type WholeAnswer } from './pod-h1.ts';
import { clearSessionTimer } from './stream.ts';

export { UpstreamError };

/** idle HTTP/1.1 sockets kept per pod: enough for bursts, few enough not to pin pod memory */
const IDLE_SOCKETS_PER_POD = 64;
/** an idle h2 session to a pod is closed after this long */
const H2_IDLE_MS = 5 * 60 * 1000;
/** a pod's h2 stream window: generous, as for the tunnel (in-node, no real RTT) */
const H2_WINDOW = 1 << 20;

/** a TrafficPolicy's connectionPool settings that shape the connections to one pod port */
export interface PodConnectionSettings {
  /** requests a connection (HTTP/1.1) or session (HTTP/2) carries before it is retired; 0/absent: unlimited */
  maxRequestsPerConnection?: number | undefined;
  /** an idle connection or session is closed after this long */
  idleTimeoutMs?: number | undefined;
}

/**
 * The settings per local pod port (`ip:port`) from the snapshot's TrafficPolicies: the
 * destination proxy opens the pod connections, so it applies the connectionPool settings
 * of every Service the pod backs on that port — the strictest when several do.
 */
export function podSettings(snapshot: Snapshot, node: string): Map<string, PodConnectionSettings> {
  const out = new Map<string, PodConnectionSettings>();
  const services = new Map(snapshot.services.map((s) => [`${s.namespace}/${s.name}`, s]));
  const min = (a: number | undefined, b: number | undefined): number | undefined =>
    a === undefined || a <= 0 ? (b !== undefined && b > 0 ? b : undefined) : b === undefined || b <= 0 ? a : Math.min(a, b);
  for (const tp of snapshot.trafficPolicies ?? []) {
    const cp = tp.connectionPool;
    if (!cp || (!cp.maxRequestsPerConnection && !cp.idleTimeoutMs)) continue;
    const svc = services.get(`${tp.target.namespace}/${tp.target.name}`);
    if (!svc) continue;
    for (const b of svc.backends) {
      if (b.node !== node) continue;
      for (const port of svc.ports) {
        const key = `${b.ip}:${port.targetPort}`;
        const prev = out.get(key);
        out.set(key, {
          maxRequestsPerConnection: min(prev?.maxRequestsPerConnection, cp.maxRequestsPerConnection),
          idleTimeoutMs: min(prev?.idleTimeoutMs, cp.idleTimeoutMs),
        });
      }
    }
  }
  return out;
}

/** the keep-alive agent, with each pod port's idle timeout on the sockets it keeps */
class PodAgent extends Agent {
  settings = new Map<string, PodConnectionSettings>();

  // Node's agent returns whether the socket is kept (its types say void)
  override keepSocketAlive(socket: Duplex): void {
    const kept = super.keepSocketAlive(socket) as unknown as boolean;
    if (!kept || !(socket instanceof Socket)) return kept as unknown as void;
    const idle = this.settings.get(`${socket.remoteAddress}:${socket.remotePort}`)?.idleTimeoutMs;
    // a free socket that times out is destroyed by the agent (its 'timeout' handler)
    if (idle) socket.setTimeout(idle);
    return true as unknown as void;
  }

  override reuseSocket(socket: Duplex, req: ClientRequest): void {
    // in use again: the idle timer must not cut a slow answer
    if (socket instanceof Socket) socket.setTimeout(0);
    super.reuseSocket(socket, req);
  }
}

export class PodPool {
  private readonly bindIp: string;
  private readonly agent: PodAgent;
  private readonly sessions = new Map<string, ClientHttp2Session>();
  private readonly onSocket: (s: Socket) => void;
  /** requests each HTTP/1.1 connection or HTTP/2 session to a pod has carried */
  private readonly carried = new WeakMap<object, number>();
  /** HTTP/1.1 requests without a body (pod-h1.ts); undefined where node's parser cannot be reached */
  private readonly lean: LeanPodClient | undefined;

  constructor(bindIp: string, onSocket: (s: Socket) => void) {
    this.bindIp = bindIp;
    this.onSocket = onSocket;
    this.agent = new PodAgent({ keepAlive: true, maxFreeSockets: IDLE_SOCKETS_PER_POD, localAddress: bindIp });
    this.lean = leanClientAvailable ? new LeanPodClient(bindIp, IDLE_SOCKETS_PER_POD, onSocket) : undefined;
  }

  /** connectionPool settings per pod port (podSettings()); applied to connections opened or reused from now on */
  configure(settings: Map<string, PodConnectionSettings>): void {
    this.agent.settings = settings;
    this.lean?.configure(settings);
  }

  /** one more request on `conn`; true when it is the last one the pod port's limit allows */
  private count(conn: object, ip: string, port: number): boolean {
    const n = (this.carried.get(conn) ?? 0) + 1;
    this.carried.set(conn, n);
    const settings = this.agent.settings;
    if (settings.size === 0) return false; // no TrafficPolicy limits a pod here: no key to build
    const max = settings.get(`${ip}:${port}`)?.maxRequestsPerConnection;
    return max !== undefined && max > 0 && n >= max;
  }

  /**
   * Send one request to the pod; resolves at the response headers. `traceparent` replaces
   * the one in head.headers: the request goes on with this hop's span as its parent.
   */
  send(ip: string, port: number, head: RequestHead, traceparent: string, body: Readable, signal: AbortSignal): Promise<L7Response> {
    if (head.protocol === 'h2') return this.sendH2(ip, port, head, traceparent, body, signal);
    const lean = this.lean;
    const bytes = lean ? leanBody(head, body) : undefined;
    if (bytes !== undefined) return sendLean(body, (resolve, reject) => lean!.send(ip, port, head, bytes, traceparent, signal, resolve, reject));
    return this.sendH1(ip, port, head, traceparent, body, signal);
  }

  close(): void {
    this.lean?.close();
    this.agent.destroy();
    for (const s of this.sessions.values()) s.destroy();
    this.sessions.clear();
  }

  private sendH1(ip: string, port: number, head: RequestHead, traceparent: string, body: Readable, signal: AbortSignal): Promise<L7Response> {
    return sendHttp1({
      agent: this.agent, host: ip, port, localAddress: this.bindIp, where: `upstream ${ip}:${port}`,
      onSocket: (s) => {
        // a reused socket is counted once per request, a new one is announced once
        if (!this.carried.has(s)) this.onSocket(s as Socket);
        return this.count(s, ip, port);
      },
    }, head, traceparent, body, signal);
  }

  private sendH2(ip: string, port: number, head: RequestHead, traceparent: string, body: Readable, signal: AbortSignal): Promise<L7Response> {
    return new Promise((resolve, reject) => {
      let session: ClientHttp2Session;
      try {
        session = this.session(ip, port);
      } catch (err) {
        reject(new UpstreamError('connect-failure', `upstream ${ip}:${port}: ${(err as Error).message}`, { cause: err }));
        return;
      }
      if (this.count(session, ip, port)) {
        // its last allowed stream: the next request opens a new session; this one ends
        // gracefully once its streams are done
        if (this.sessions.get(`${ip}:${port}`) === session) this.sessions.delete(`${ip}:${port}`);
        setImmediate(() => session.close());
      }
      // no body: END_STREAM goes with the HEADERS frame, and nothing is piped. Piping an
      // ended body would end() a stream node:http2 already ended for a GET, and node builds
      // an Error (with its stack) for each such call once the stream is done
      const none = bodiless(body);
      const stream = session.request({
        ':method': head.method, ':path': head.path, ':scheme': 'http',
        ':authority': head.authority || `${ip}:${port}`, ...head.headers, traceparent,
      }, { endStream: none });
      onH2Answer(stream, resolve, (err) => {
        const kind = connected.has(session) ? 'reset' : 'connect-failure';
        reject(new UpstreamError(kind, `upstream ${ip}:${port}: ${errorText(err)}`, { cause: err }));
      });
      cancelOn(signal, stream);
      if (none) drain(body);
      else pipeBody(body, stream);
    });
  }

  private session(ip: string, port: number): ClientHttp2Session {
    const key = `${ip}:${port}`;
    const existing = this.sessions.get(key);
    if (existing && !existing.closed && !existing.destroyed) return existing;
    const bindIp = this.bindIp;
    const s = h2connect(`http://${key}`, {
      settings: { enablePush: false, initialWindowSize: H2_WINDOW },
      createConnection: () => {
        const sock = connect({ host: ip, port, localAddress: bindIp, noDelay: true });
        this.onSocket(sock);
        return sock;
      },
    });
    s.once('connect', () => connected.add(s));
    s.setTimeout(this.agent.settings.get(key)?.idleTimeoutMs ?? H2_IDLE_MS, () => s.close());
    s.on('error', () => { /* each stream reports its own failure */ });
    const forget = (): void => { if (this.sessions.get(key) === s) this.sessions.delete(key); };
    s.on('close', () => {
      forget();
      clearSessionTimer(s);
    });
    s.on('goaway', forget);
    this.sessions.set(key, s);
    return s;
  }
}

/**
 * The body a lean client (pod-h1.ts) sends in one write with the head: none (NO_BYTES), or
 * all of it, here already and framed by the head's Content-Length (a small POST read with
 * its head). undefined: it goes through node:http, which frames and streams it.
 */
export function leanBody(head: RequestHead, body: Readable): Buffer | undefined {
  if (body instanceof WholeBody) return wholeBodyOf(head, body);
  return bodiless(body) ? NO_BYTES : undefined;
}

/**
 * The client's side of a request whose body is sent another way, or is none: read to its
 * end so that it ends. Not an HTTP/2 stream whose HEADERS ended it: node:http2 drains that
 * itself when the stream closes, and one whose readable side ended before its answer was
 * written is destroyed before that write completes, which builds an ERR_STREAM_DESTROYED
 * error, stack and all, per request. Not a WholeBody: its bytes went with the head, and its
 * stream costs nothing while unread.
 */
export function drain(body: Readable): void {
  if (!endedWithHeaders(body) && !(body instanceof WholeBody)) body.resume();
}

/**
 * A request without a body, or with all of it (leanBody()), through a lean client
 * (pod-h1.ts): `send` starts it; what it throws rejects. The client's side is drained (drain()).
 */
export function sendLean(body: Readable,
  send: (resolve: (res: IncomingMessage | WholeAnswer) => void, reject: (err: Error) => void) => void): Promise<L7Response> {
  drain(body);
  return new Promise((resolve, reject) => {
    send((res) => {
      // called from the connection's read: nothing thrown here may reach it
      try {
        resolve(leanAnswer(res));
      } catch (err) {
        reject(err as Error);
      }
    }, reject);
  });
}

/** where sendHttp1() sends a request, through a keep-alive agent */
export interface Http1Upstream {
  agent: Agent;
  host: string;
  port: number;
  localAddress?: string;
  /** request options for the agent's own use (its pool key, what its connections are) */
  agentOptions?: object;
  /** [name, value, ...] the proxy adds after the request's own headers */
  add?: string[];
  /** names the upstream in error messages */
  where: string;
  /** the connection the request got; true when it is its last (retired once the answer is read) */
  onSocket?(s: Duplex): boolean;
}

/**
 * Send one HTTP/1.1 request with node:http through `up.agent`; resolves at the response
 * headers. `traceparent` replaces the one in head.headers: the request goes on with this
 * hop's span as its parent. Fails with an UpstreamError: 'connect-failure' when nothing was
 * sent, else 'reset'.
 */
export function sendHttp1(up: Http1Upstream, head: RequestHead, traceparent: string, body: Readable, signal: AbortSignal): Promise<L7Response> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new UpstreamError('connect-failure', `${up.where}: request cancelled before it was sent`));
      return;
    }
    // a flat [name, value, ...] list: node:http writes it as it is, without building the
    // map of an OutgoingMessage's setHeader() for each (and no copy of head.headers)
    const h = head.headers;
    const headers: Array<string | string[]> = [];
    for (const k in h) if (k !== 'traceparent') headers.push(k, h[k]!);
    if (head.authority) headers.push('host', head.authority);
    headers.push('traceparent', traceparent);
    if (up.add) headers.push(...up.add);
    // node:http frames a body by its own rule: chunked by default, but not for GET, HEAD,
    // DELETE, OPTIONS, TRACE; a GET's chunked body would go out as bare bytes, read by the
    // upstream as the requests that follow (smuggling). A body is framed here, always.
    if (h['content-length'] === undefined && !knownEmpty(body)) headers.push('transfer-encoding', 'chunked');
    // what node:http will not send (its checks are not llhttp's) throws here, and rejects
    const req = request({
      ...up.agentOptions, host: up.host, port: up.port, method: head.method, path: head.path,
      headers: headers as unknown as OutgoingHttpHeaders, agent: up.agent, localAddress: up.localAddress, setHost: false,
    });
    let sent = false;
    let last = false;
    let settled = false;
    // the client went away first: cancel upstream (an own listener, removed with the
    // exchange; http.request's `signal` option costs a stream-wide end-of-stream watch)
    const onAbort = (): void => { req.destroy(signal.reason instanceof Error ? signal.reason : new Error('request cancelled')); };
    watchAbort(signal, onAbort);
    const unwatch = (): void => unwatchAbort(signal, onAbort);
    req.on('socket', (s: Duplex) => {
      if (up.onSocket) last = up.onSocket(s);
      if ((s as Partial<Socket>).connecting === true) s.once('connect', () => { sent = true; });
      else sent = true;
    });
    req.on('response', (res) => {
      settled = true;
      res.once('close', unwatch);
      // the connection's last allowed request: retire it once the answer is read, before
      // the agent can hand it out again
      if (last) res.once('end', () => req.socket?.destroy());
      resolve({ status: res.statusCode ?? 502, headers: endToEnd(res.headers, false), body: res, trailers: () => trailersOf(res.trailers) });
    });
    req.on('error', (err) => {
      if (settled) return;
      settled = true;
      unwatch();
      reject(new UpstreamError(sent ? 'reset' : 'connect-failure', `${up.where}: ${errorText(err)}`, { cause: err }));
    });
    // no body (a GET): the request ends at once instead of piping nothing into it; the
    // client's stream is drained so that it ends too
    if (bodiless(body)) {
      drain(body);
      req.end();
      return;
    }
    // pipe, not pipeline: a failing upstream must not destroy the client's side, which
    // stays open for the error answer (and, for HTTP/1.1, the next keep-alive request)
    pipeBody(body, req);
  });
}

/** a request body known to be empty before it is read (anything else gets framed) */
function knownEmpty(body: Readable): boolean {
  if (body.readableEnded) return true;
  // HTTP/2: END_STREAM on the HEADERS frame
  if (endedWithHeaders(body)) return true;
  // HTTP/1.1: llhttp read no body without Content-Length or Transfer-Encoding
  if (body instanceof IncomingMessage) return body.headers['content-length'] === undefined && body.headers['transfer-encoding'] === undefined;
  return false;
}

/**
 * A request without a body: an HTTP/1.1 request that announced none (RFC 9112 §6.3: no
 * Transfer-Encoding and no Content-Length, or a length of 0), or a stream that already
 * ended. Known from the head, before the parser has even reached the request's end.
 */
export function bodiless(body: Readable): boolean {
  // whatever became of its stream, a WholeBody's bytes are the body
  if (body instanceof WholeBody) return body.whole.length === 0;
  if (body.readableEnded) return true;
  if (endedWithHeaders(body)) return true;
  if (!(body instanceof IncomingMessage)) return false;
  const h = body.headers;
  return h['transfer-encoding'] === undefined && (h['content-length'] === undefined || h['content-length'] === '0');
}

/** an HTTP/2 stream whose HEADERS frame ended it (a request without a body from another node, or an h2c client) */
function endedWithHeaders(body: Readable): boolean {
  return (body as Partial<Http2Stream>).endAfterHeaders === true;
}

function leanAnswer(res: IncomingMessage | WholeAnswer): L7Response {
  if (res instanceof IncomingMessage) return answer(res);
  return new WholeResponse(res.status, endToEnd(res.headers, false), res.body, res.trailers);
}

function answer(res: IncomingMessage): L7Response {
  return { status: res.statusCode ?? 502, headers: endToEnd(res.headers, false), body: res, trailers: () => trailersOf(res.trailers) };
}

function trailersOf(t: NodeJS.Dict<string>): Headers | undefined {
  let out: Headers | undefined;
  for (const k in t) {
    const v = t[k];
    if (v !== undefined) (out ??= {})[k] = v;
  }
  return out;
}

/** sessions whose connection to the pod was established (a failure after that is a reset) */
const connected = new WeakSet<ClientHttp2Session>();
