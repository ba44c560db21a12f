// Cross-node requests on pooled CONNECT streams. The source side sends each HTTP/1.1 request
// it routed to a pod on another node as HTTP/1.1 inside a CONNECT stream to that pod (DESIGN
// §5's tunnel), and keeps the stream for the next request as a keep-alive connection is kept:
// one request at a time per stream, as many streams as requests in flight. A stream is the
// source workload's: identity, SPIFFE id and pod travel in its CONNECT headers, which the
// destination checks as for any CONNECT, and again at each snapshot (inbound.ts
// recheckPooled()); each request adds only its client's port (x-nodal-source-addr), for
// flows. Requests without a body, or with a small body all here (a WholeBody), go through the
// lean client's pool and parser (pod-h1.ts LeanPool), the others through node:http's
// keep-alive agent. The destination serves a pooled stream as the source side serves a
// client connection (http.ts servePooled: client-h1.ts, then node:http's Server from the
// first request that is not plain), each request through the same policy and flow path as
// every request.
//
// An HTTP/2 or gRPC request goes the same way when its whole body is here (none, or a unary
// call's message: egress.ts pooledH2()) and the peer said it takes them (tunnel.ts
// POOLED_H2_SETTING): as HTTP/1.1 with `x-nodal-protocol: h2` and a Content-Length, which the
// destination reads as the HTTP/2 request it was and sends to the pod as one; the answer
// comes back as HTTP/1.1, its trailers (grpc-status) in chunked framing, and goes to the
// client as HTTP/2 again. A request whose body streams (a client-streaming or bidirectional
// call) keeps a request stream of its own: on HTTP/1.1 it would need a chunked body, which
// hands the destination's side of the pooled stream to node:http's Server for good.
//
// Why not a stream per request: node:http2 costs about as much per stream as the whole rest of
// a request, on both nodes, and every finished stream stays reachable until V8's next full GC
// (stream.ts releaseOnClose), so cross-node load made young-generation GC pauses of 10-20 ms.
// What node:http2 leaves in old space per stream (each received header value, its stream
// tables: docs/ARCHITECTURE.md) sets how often full GCs come; a request on a pooled stream
// leaves none of it. docs/benchmarks.md has the figures.

import { Agent, type ClientRequest, type IncomingMessage } from 'node:http';
import type { ClientHttp2Stream, IncomingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import type { NodeInfo } from '../../control/api/types.ts';
import { errorText } from './errors.ts';
import type { SourceInfo } from './context.ts';
import { NO_BYTES, WholeBody, type L7Response, type RequestHead } from './exchange.ts';
import { LeanPool, leanClientAvailable, requestHead, UpstreamError, type PodConnection, type WholeAnswer } from './pod-h1.ts';
import { leanBody, sendHttp1, sendLean } from './pods.ts';
import { buffersOnly } from './stream.ts';
import { formatAuthority, Header, POOLED_REQUESTS, sourceHeaders, type TunnelPool } from './tunnel.ts';

/**
 * Bodies up to this size go with their head in one write, so in one DATA frame (16 KiB),
 * which the destination's lean server reads whole with its head; a larger one would reach
 * it in two frames, and the stream would be node:http's from then on (client-h1.ts). A
 * larger body goes through node's agent.
 */
export const MAX_LEAN_BODY = 8 * 1024;
/** an idle pooled stream is closed after this long */
const IDLE_MS = 30_000;
/** idle streams kept per source workload and pod */
const IDLE_PER_KEY = 64;
/**
 * Requests a pooled stream carries before it is retired (and ProxyLimits
 * tunnelStreamMaxAgeMs, its age). The destination checks a stream's source when it opens
 * and again at each snapshot (inbound.ts recheckPooled()); retiring it as well bounds what
 * any one check covers, on a destination that does only the first too.
 */
const MAX_REQUESTS_PER_STREAM = 10_000;

/** where a pooled stream goes, and whose it is: what opening one takes */
interface MeshTarget {
  peer: NodeInfo;
  /** the pod, ip:port */
  dst: string;
  src: SourceInfo;
  traceparent: string;
}

/** node:http request options the agent reads back (getName, createConnection) */
interface MeshOptions {
  meshKey: string;
  meshTarget: MeshTarget;
}

/** a CONNECT the destination refused (its status), for the request that opened it */
const refusals = new WeakMap<object, number>();
/** requests each of the agent's streams has carried */
const carried = new WeakMap<object, number>();
/** when each of the agent's streams was opened (Date.now()) */
const openedAt = new WeakMap<object, number>();

/**
 * Open a CONNECT stream for `t` on the session to its node: node's agent and the lean pool
 * pool it as a socket to the pod. Throws when the session is unusable.
 */
function openStream(tunnels: TunnelPool, t: MeshTarget): ClientHttp2Stream {
  const headers: Record<string, string> = { ...sourceHeaders(t.src), [Header.protocol]: POOLED_REQUESTS };
  if (t.traceparent) headers[Header.traceparent] = t.traceparent;
  const s = tunnels.open(t.peer, t.dst, headers);
  // node's agent keeps a socket alive with these; a stream has no TCP keep-alive, and
  // holds the event loop only as its session does
  const pooled = s as ClientHttp2Stream & Pick<Socket, 'setKeepAlive' | 'ref' | 'unref'>;
  pooled.setKeepAlive = noop as Socket['setKeepAlive'];
  pooled.ref = noop as Socket['ref'];
  pooled.unref = noop as Socket['unref'];
  // a request head is a string written with the first body chunk: see buffersOnly()
  buffersOnly(s);
  return s;
}

function onConnectAnswer(this: ClientHttp2Stream, h: IncomingHttpHeaders): void {
  const status = Number(h[':status']);
  if (status !== 200) refusals.set(this, status);
}

function refusal(t: MeshTarget, status: number): UpstreamError {
  return new UpstreamError('connect-failure', `tunnel to ${t.peer.name}: ${t.dst} refused the connection (${status})`, { refused: status });
}

/** the peer node a pool key names (its part before '>'): idle streams are bounded per peer */
function peerOf(key: string): string {
  return key.slice(0, key.indexOf('>'));
}

/**
 * node:http's keep-alive agent over CONNECT streams, for larger request bodies: a pool per
 * source workload and pod (getName), a new stream when none is free (createConnection).
 * Its idle streams are bounded per peer node as the lean pool's are (tunnelIdleStreamsPerPeer).
 */
class MeshAgent extends Agent {
  private readonly tunnels: TunnelPool;
  private readonly idlePerPeer: number;
  /** each stream's peer (peerOf()) */
  private readonly peers = new WeakMap<object, string>();
  /** the streams in the free lists, and how many per peer */
  private readonly idle = new WeakSet<object>();
  private readonly idleOfPeer = new Map<string, number>();

  constructor(tunnels: TunnelPool, idlePerPeer: number) {
    super({ keepAlive: true, maxFreeSockets: IDLE_PER_KEY, scheduling: 'lifo', timeout: IDLE_MS });
    this.tunnels = tunnels;
    this.idlePerPeer = idlePerPeer;
  }

  /** node's agent asks before it puts a stream in a free list: not past the peer's bound */
  override keepSocketAlive(s: Duplex): boolean {
    const peer = this.peers.get(s) ?? '';
    const n = this.idleOfPeer.get(peer) ?? 0;
    // node's own rules next: its idle timeout, a server's Keep-Alive hint
    if (n >= this.idlePerPeer || (super.keepSocketAlive(s) as unknown) === false) return false;
    this.idleOfPeer.set(peer, n + 1);
    this.idle.add(s);
    return true;
  }

  /** a free stream taken for a request */
  override reuseSocket(s: Duplex, req: ClientRequest): void {
    this.leftIdle(s);
    super.reuseSocket(s, req);
  }

  /** a stream closed (node's agent also calls this as it moves a stream into a free list: it is still writable then) */
  removeSocket(s: Duplex, options: object): void {
    if (!s.writable) this.leftIdle(s);
    (Agent.prototype as unknown as { removeSocket(s: Duplex, o: object): void }).removeSocket.call(this, s, options);
  }

  private leftIdle(s: Duplex): void {
    if (!this.idle.delete(s)) return;
    const peer = this.peers.get(s) ?? '';
    const n = (this.idleOfPeer.get(peer) ?? 1) - 1;
    if (n > 0) this.idleOfPeer.set(peer, n);
    else this.idleOfPeer.delete(peer);
  }

  override getName(o: object): string {
    return (o as MeshOptions).meshKey;
  }

  override createConnection(o: object, done: (err: Error | null, s?: Duplex) => void): Duplex | undefined {
    try {
      const s = openStream(this.tunnels, (o as MeshOptions).meshTarget);
      s.once('response', onConnectAnswer);
      openedAt.set(s, Date.now());
      this.peers.set(s, peerOf((o as MeshOptions).meshKey));
      return s;
    } catch (err) {
      done(err as Error); // the session is unusable: a connect failure, nothing was sent
      return undefined;
    }
  }
}

/** the lean client's pool (pod-h1.ts) over CONNECT streams, for requests without a body or with a small whole one */
class MeshLeanPool extends LeanPool<MeshTarget> {
  private readonly tunnels: TunnelPool;
  private readonly maxAge: number;

  constructor(tunnels: TunnelPool, bounds: MeshPoolBounds) {
    super(IDLE_PER_KEY, bounds.idlePerPeer);
    this.tunnels = tunnels;
    this.maxAge = bounds.maxAgeMs;
  }

  /** a peer node's pools share one bound on idle streams (ProxyLimits tunnelIdleStreamsPerPeer) */
  protected override group(key: string): string {
    return peerOf(key);
  }

  send(key: string, t: MeshTarget, text: string, body: Buffer, method: string, signal: AbortSignal,
    resolve: (res: IncomingMessage | WholeAnswer) => void, reject: (err: UpstreamError) => void): void {
    try {
      this.request(key, t, text, body, method, signal, resolve, reject);
    } catch (err) {
      reject(new UpstreamError('connect-failure', `tunnel to ${t.peer.name}: ${errorText(err)}`, { cause: err }));
    }
  }

  describe(key: string): string {
    return `tunnel to ${key.slice(0, key.indexOf('@'))}`;
  }

  maxRequests(): number {
    return MAX_REQUESTS_PER_STREAM;
  }

  override maxAgeMs(): number {
    return this.maxAge;
  }

  /** no timer per connection: MeshRequests closes the idle ones every IDLE_MS */
  idleMs(): number {
    return 0;
  }

  protected connect(c: PodConnection, t: MeshTarget): Duplex {
    const s = openStream(this.tunnels, t);
    s.on('data', (chunk: Buffer) => c.parse(chunk));
    s.once('response', (h: IncomingHttpHeaders) => {
      const status = Number(h[':status']);
      if (status === 200) c.connected = true;
      else c.lastError = refusal(t, status);
    });
    return s;
  }
}

/** what node's agent calls on a socket it pools, which a stream has no use for */
function noop(): void {}

/** how many pooled streams stay, and for how long (ProxyLimits) */
export interface MeshPoolBounds {
  /** idle streams kept to one peer node (tunnelIdleStreamsPerPeer) */
  idlePerPeer: number;
  /** a stream is retired once it is this old (tunnelStreamMaxAgeMs); 0: never */
  maxAgeMs: number;
}

export class MeshRequests {
  private readonly agent: MeshAgent;
  private readonly lean: MeshLeanPool | undefined;
  private readonly sweep: NodeJS.Timeout;
  private readonly maxAge: number;

  constructor(tunnels: TunnelPool, bounds: MeshPoolBounds) {
    this.agent = new MeshAgent(tunnels, bounds.idlePerPeer);
    this.lean = leanClientAvailable ? new MeshLeanPool(tunnels, bounds) : undefined;
    this.maxAge = bounds.maxAgeMs;
    // the lean pool's idle streams: closed every IDLE_MS (one timer, not one per stream and request)
    this.sweep = setInterval(() => this.lean?.closeIdle(), IDLE_MS).unref();
  }

  /**
   * One request to the pod `to` on `peer`; resolves at the response headers. Fails with an
   * UpstreamError (pod-h1.ts); `refused` names the status of a CONNECT the destination
   * refused. An HTTP/2 request (head.protocol 'h2') comes with its whole body, `h2Body`.
   */
  send(peer: NodeInfo, to: { ip: string; port: number; identity: number }, src: SourceInfo, head: RequestHead, body: Readable,
    signal: AbortSignal, h2Body?: Buffer): Promise<L7Response> {
    const dst = formatAuthority(to.ip, to.port);
    const addr = formatAuthority(src.ip, src.port);
    const ep = src.endpoint;
    // the pod's identity too: an address another pod took over is another destination
    const key = `${peer.name}@${peer.tunnelIp}>${dst}#${to.identity}<${src.identity}/${ep ? `${ep.namespace}/${ep.name}` : ''}/${src.ip}`;
    const traceparent = String(head.headers.traceparent ?? '');
    const target: MeshTarget = { peer, dst, src, traceparent };
    const lean = this.lean;
    const h2 = head.protocol === 'h2';
    const whole = h2 ? h2Body ?? NO_BYTES : undefined;
    // an HTTP/2 request's body has no framing of its own on HTTP/1.1: it gets a length
    const length = whole && whole.length > 0 && head.headers['content-length'] === undefined ? `content-length: ${whole.length}\r\n` : '';
    const bytes = whole ?? (lean ? leanBody(head, body) : undefined);
    if (lean && bytes !== undefined && bytes.length <= MAX_LEAN_BODY) {
      return sendLean(body, (resolve, reject) => {
        // validated as node:http validates them: a bad name or value throws its own error
        const text = requestHead(head, traceparent, h2 ? `${Header.addr}: ${addr}\r\n${Header.protocol}: h2\r\n${length}` : `${Header.addr}: ${addr}\r\n`);
        lean.send(key, target, text, bytes, head.method, signal, resolve, reject);
      });
    }
    let stream: Duplex | undefined;
    const options: MeshOptions = { meshKey: key, meshTarget: target };
    return sendHttp1({
      agent: this.agent, host: peer.tunnelIp, port: 0, agentOptions: options, where: `tunnel to ${peer.name}`,
      add: h2 ? [Header.addr, addr, Header.protocol, 'h2'] : [Header.addr, addr],
      onSocket: (s) => {
        stream = s;
        const n = (carried.get(s) ?? 0) + 1;
        carried.set(s, n);
        // node's agent hands out a free stream however old: past its age it carries this
        // request, its last
        return n >= MAX_REQUESTS_PER_STREAM || (this.maxAge > 0 && Date.now() - (openedAt.get(s) ?? 0) >= this.maxAge);
      },
    }, head, traceparent, whole ? new WholeBody(whole) : body, signal).catch((err: unknown) => {
      const status = stream ? refusals.get(stream) : undefined;
      throw status === undefined ? err : refusal(target, status);
    });
  }

  close(): void {
    clearInterval(this.sweep);
    this.lean?.close();
    this.agent.destroy();
  }
}
