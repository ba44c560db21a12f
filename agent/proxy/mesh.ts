// Cross-node HTTP/1.1 requests on pooled CONNECT streams. The source side sends each
// HTTP/1.1 request it routed to a pod on another node as HTTP/1.1 inside a CONNECT stream
// to that pod (DESIGN §5's tunnel), and keeps the stream for the next request as a keep-alive
// connection is kept: one request at a time per stream, as many streams as requests in
// flight. A stream is the source workload's: identity, SPIFFE id and pod travel in its
// CONNECT headers, which the destination checks once, as for any CONNECT; each request adds
// only its client's port (x-nodal-source-addr), for flows. The destination parses the
// requests as it parses HTTP/1.1 on any CONNECT stream (http.ts), each through the same
// policy and flow path as every request.
//
// Why not a stream per request (as HTTP/2 clients' requests still go): node:http2 costs about
// as much per stream as the whole rest of a request, on both nodes, and every finished stream
// stays reachable until V8's next full GC (stream.ts releaseOnClose), so cross-node load made
// young-generation GC pauses of 10-20 ms. docs/benchmarks.md has the figures.

import { Agent } from 'node:http';
import type { ClientHttp2Stream, IncomingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import type { NodeInfo } from '../../control/api/types.ts';
import type { L7Response, RequestHead } from './exchange.ts';
import { sendHttp1 } from './pods.ts';
import { buffersOnly } from './stream.ts';
import { formatAuthority, Header, POOLED_REQUESTS, type TunnelPool } from './tunnel.ts';

/** an idle pooled stream is closed after this long */
const IDLE_MS = 30_000;
/** idle streams kept per source workload and pod */
const IDLE_PER_KEY = 64;

/** the source workload of a request, as its CONNECT stream names it */
export interface MeshSource {
  identity: number;
  spiffe: string | undefined;
  /** namespace/name of the source pod, when known */
  endpoint: string | undefined;
  ip: string;
  port: number;
}

/** what the agent's pool key and connections are made of (request options, read back by the agent) */
interface MeshOptions {
  meshKey: string;
  meshPeer: NodeInfo;
  meshTo: string;
  meshHeaders: Record<string, string>;
}

/** a CONNECT the destination refused (its status), for the request that opened it */
const refusals = new WeakMap<object, number>();

/**
 * node:http's keep-alive agent over CONNECT streams: a pool per source workload and pod
 * (getName), a new stream when none is free (createConnection)
 */
class MeshAgent extends Agent {
  private readonly open: (o: MeshOptions) => ClientHttp2Stream;

  constructor(open: (o: MeshOptions) => ClientHttp2Stream) {
    super({ keepAlive: true, maxFreeSockets: IDLE_PER_KEY, scheduling: 'lifo', timeout: IDLE_MS });
    this.open = open;
  }

  override getName(o: object): string {
    return (o as MeshOptions).meshKey;
  }

  override createConnection(o: object, done: (err: Error | null, s?: Duplex) => void): Duplex | undefined {
    let s: ClientHttp2Stream;
    try {
      s = this.open(o as MeshOptions);
    } catch (err) {
      done(err as Error); // the session is unusable: a connect failure, nothing was sent
      return undefined;
    }
    return s;
  }
}

/** what node's agent calls on a socket it pools, which a stream has no use for */
function noop(): void {}

export class MeshRequests {
  private readonly pool: TunnelPool;
  private readonly agent: MeshAgent;

  constructor(pool: TunnelPool) {
    this.pool = pool;
    this.agent = new MeshAgent((o) => this.open(o));
  }

  /**
   * One request to the pod `to` on `peer`; resolves at the response headers. Fails with an
   * UpstreamError (pods.ts), or a MeshRefusal when the destination refused the stream.
   */
  send(peer: NodeInfo, to: { ip: string; port: number }, src: MeshSource, head: RequestHead, body: Readable, signal: AbortSignal): Promise<L7Response> {
    const dst = formatAuthority(to.ip, to.port);
    const addr = formatAuthority(src.ip, src.port);
    const options: MeshOptions = {
      meshKey: `${peer.name}@${peer.tunnelIp}>${dst}<${src.identity}/${src.endpoint ?? ''}/${src.ip}`,
      meshPeer: peer, meshTo: dst,
      meshHeaders: connectHeaders(src, addr, head.headers.traceparent),
    };
    let stream: Duplex | undefined;
    return sendHttp1({
      agent: this.agent, host: peer.tunnelIp, port: 0, agentOptions: options, add: [Header.addr, addr], where: `tunnel to ${peer.name}`,
      onSocket: (s) => {
        stream = s;
        return false;
      },
    }, head, String(head.headers.traceparent ?? ''), body, signal).catch((err: unknown) => {
      const status = stream ? refusals.get(stream) : undefined;
      throw status === undefined ? err : new MeshRefusal(status, `tunnel to ${peer.name}: ${dst} refused (${status})`);
    });
  }

  /** close the idle streams: the next requests open new ones, which the destination checks against its current view */
  refresh(): void {
    for (const list of Object.values(this.agent.freeSockets)) for (const s of list ?? []) s.destroy();
  }

  close(): void {
    this.agent.destroy();
  }

  private open(o: MeshOptions): ClientHttp2Stream {
    const s = this.pool.open(o.meshPeer, o.meshTo, o.meshHeaders);
    // node's agent keeps a socket alive with these; a stream has no TCP keep-alive, and
    // holds the event loop only as its session does
    const pooled = s as ClientHttp2Stream & Pick<Socket, 'setKeepAlive' | 'ref' | 'unref'>;
    pooled.setKeepAlive = noop as Socket['setKeepAlive'];
    pooled.ref = noop as Socket['ref'];
    pooled.unref = noop as Socket['unref'];
    // node:http corks its head (a string) with the first body chunk: see buffersOnly()
    buffersOnly(s);
    s.once('response', onConnectAnswer);
    return s;
  }
}

function onConnectAnswer(this: ClientHttp2Stream, h: IncomingHttpHeaders): void {
  const status = Number(h[':status']);
  if (status !== 200) refusals.set(this, status);
}

/** a CONNECT the destination answered with something other than 200 (403: refused by its policy or identity check) */
export class MeshRefusal extends Error {
  readonly status: number;

  constructor(status: number, message: string) {
    super(message);
    this.name = 'MeshRefusal';
    this.status = status;
  }
}

function connectHeaders(src: MeshSource, addr: string, traceparent: string | string[] | undefined): Record<string, string> {
  const h: Record<string, string> = {
    [Header.identity]: String(src.identity),
    [Header.addr]: addr,
    [Header.protocol]: POOLED_REQUESTS,
  };
  if (src.spiffe) h[Header.spiffe] = src.spiffe;
  if (src.endpoint) h[Header.endpoint] = src.endpoint;
  if (typeof traceparent === 'string') h[Header.traceparent] = traceparent;
  return h;
}

