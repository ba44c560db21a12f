// HTTP/1.1 carried as a byte stream to the destination: llhttp (through a node:http Server
// that never listens) parses the requests of a connection that arrived as a CONNECT stream
// on the tunnel or in-process as bytes (an HTTP Upgrade the source side replayed, or a peer
// that does not send requests as tunnel streams). Each request goes through the same
// Destination path as every other request: policy, flow, metrics, the pod pool.

import { createServer, request, type ClientRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { InboundConn, ProxyContext } from './context.ts';
import { UPSTREAM_FAILURE_HEADER, type Destination } from './destination.ts';
import { errorText } from './errors.ts';
import { endToEnd, h1Request, writeH1 } from './exchange.ts';
import { applyDecision, newFlow } from './flows.ts';
import { guardRequest, guardUpgrade, hardenHttpServer, http1ServerOptions } from './limits.ts';
import { buffersOnly, isHttp2Stream, splice } from './stream.ts';
import { leanServerAvailable, serveLean } from './client-h1.ts';
import { childSpan, parseTraceparent } from './trace.ts';
import { Header, parseAuthority } from './tunnel.ts';

export class HttpIngress {
  private readonly ctx: ProxyContext;
  private readonly dest: Destination;
  private readonly server: Server;
  /** the connection each parsed request arrived on; weak so a closed stream frees it */
  private readonly conns = new WeakMap<object, InboundConn>();
  /** the pods' connections of upgrade requests, answered or not, until they close */
  private readonly upstreams = new Set<Socket>();

  constructor(ctx: ProxyContext, dest: Destination) {
    this.ctx = ctx;
    this.dest = dest;
    const limits = ctx.limits;
    this.server = hardenHttpServer(createServer({ ...http1ServerOptions(limits), requireHostHeader: false }, guardRequest(limits, (req, res) => this.onRequest(req, res))), limits);
    this.server.on('upgrade', guardUpgrade(limits, (req: IncomingMessage, down: Duplex, head: Buffer) => this.onUpgrade(req, down, head)));
  }

  /** stops the timeout checks hardenHttpServer() started; ends the pods' side of every upgrade */
  close(): void {
    this.server.close();
    for (const s of this.upstreams) s.destroy();
    this.upstreams.clear();
  }

  /**
   * A pooled tunnel connection (mesh.ts): its plain requests are served by the lean server
   * (client-h1.ts), the rest by the parser, as on the outbound side
   */
  servePooled(down: Duplex, conn: InboundConn): void {
    buffersOnly(down);
    if (!leanServerAvailable) {
      this.attach(down, conn);
      return;
    }
    serveLean(down as Socket, this.ctx.limits, (head, body, signal) => this.dest.exchange(withClientPort(conn, head.clientAddr), head, body, signal),
      (s) => this.attach(s, conn), true);
  }

  /** hand a connection to the parser; the stream may be paused by detection */
  attach(down: Duplex, conn: InboundConn): void {
    this.conns.set(down, conn);
    down.once('close', () => this.conns.delete(down)); // see egress.ts toNodeHttp
    if (isHttp2Stream(down)) buffersOnly(down);
    this.server.emit('connection', down);
    down.resume();
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const conn = this.conns.get(req.socket);
    if (!conn || !this.ctx.view()) {
      res.destroy();
      return;
    }
    const { head, signal } = h1Request(req, res);
    // on a pooled stream, a request whose client spoke HTTP/2 (mesh.ts): so does the destination to the pod
    if (conn.pooled && req.headers[Header.protocol] === 'h2') head.protocol = 'h2';
    this.dest.exchange(conn.pooled ? withClientPort(conn, req.headers[Header.addr]) : conn, head, req, signal).then((r) => {
      // for a source side that retries; on a connection of its own, this client is the pod's caller itself
      if (!conn.pooled) delete r.headers[UPSTREAM_FAILURE_HEADER];
      writeH1(res, r);
    }, (err) => {
      this.ctx.log.error({ err: errorText(err) }, 'request failed unexpectedly');
      res.destroy();
    });
  }

  /**
   * Upgrade (WebSocket and the like): one policy decision on the upgrade request, which is
   * then sent to the pod on a connection of its own. Only a 101 makes the connection a byte
   * pipe: the client's bytes after the request head are held until then, because a pod that
   * declines (RFC 9110 §7.8 lets it answer 200 and go on reading HTTP/1.1) would read them
   * as requests no policy judged. Any other answer goes back to the client, and the
   * connection is closed with the held bytes dropped. A pod that does not answer within
   * limits.upgradeTimeoutMs gets the client a 504. The pipe stays subject to policy: a
   * snapshot that no longer allows it closes it.
   */
  private onUpgrade(req: IncomingMessage, down: Duplex, head: Buffer): void {
    const conn = this.conns.get(req.socket);
    if (!conn || !this.ctx.view()) {
      down.destroy();
      return;
    }
    // node:http took its own error listener off with the parser
    down.on('error', noop);
    const start = process.hrtime.bigint();
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const q = path.indexOf('?');
    const trace = parseTraceparent(req.headers.traceparent) ?? childSpan(conn.trace);
    const { decision, input } = this.dest.decide(conn, {
      method, path: q < 0 ? path : path.slice(0, q), host: req.headers.host ?? '', headers: endToEnd(req.headers, true), grpc: false,
    });
    const flow = (code: number, verdict: 'FORWARDED' | 'DROPPED' | 'ERROR', summary?: string): void => {
      const f = newFlow(this.ctx.node, verdict, 'L7', 'INGRESS', { ip: conn.src.ip, port: conn.src.port }, { ip: conn.dst.ip, port: conn.port });
      f.source = conn.src.flow;
      const view = this.ctx.view();
      if (view) f.destination = view.flowEndpoint(conn.dst);
      const url = `http://${req.headers.host ?? ''}${path}`;
      f.l7 = {
        type: verdict === 'FORWARDED' ? 'RESPONSE' : 'REQUEST', latencyNs: Number(process.hrtime.bigint() - start),
        http: code > 0 ? { code, method, url, protocol: 'HTTP/1.1' } : { method, url, protocol: 'HTTP/1.1' },
      };
      f.traceContext = { parent: { traceId: trace.traceId, spanId: trace.spanId } };
      if (summary) f.summary = summary;
      applyDecision(f, decision);
      this.ctx.emit(f);
    };
    if (!decision.allowed) {
      const p = decision.policy;
      flow(403, 'DROPPED');
      this.closeWith(down, '403 Forbidden', `RBAC: access denied by ${p ? `${p.namespace}/${p.name}` : 'policy'}\n`);
      return;
    }
    const raw: string[] = [];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!.toLowerCase();
      if (UPGRADE_DROPPED.has(name) || name.startsWith('x-nodal-')) continue;
      raw.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
    }
    raw.push('traceparent', trace.header);
    const where = `upstream ${conn.dst.ip}:${conn.port}`;
    let up: ClientRequest;
    try {
      up = request({
        host: conn.dst.ip, port: conn.port, method, path, headers: raw, setHost: false,
        // a connection of its own (an upgraded one is never given back to a pool), from the
        // proxy address; half-open, so that once upgraded a FIN travels one way only
        agent: false,
        createConnection: () => this.upstream(conn),
      });
    } catch (err) {
      // what llhttp let through but node:http will not send (its checks are not llhttp's)
      flow(400, 'ERROR', `upgrade request not forwardable: ${errorText(err)}`);
      this.closeWith(down, '400 Bad Request', 'upgrade request not forwardable\n');
      return;
    }
    let answered = false;
    const settle = (): boolean => {
      if (answered) return false;
      answered = true;
      clearTimeout(timer);
      down.off('close', onClientGone);
      return true;
    };
    const timer = setTimeout(() => {
      if (!settle()) return;
      const why = `${where} did not answer the upgrade within ${this.ctx.limits.upgradeTimeoutMs} ms`;
      flow(504, 'ERROR', why);
      up.destroy();
      this.closeWith(down, '504 Gateway Timeout', `${why}\n`);
    }, this.ctx.limits.upgradeTimeoutMs);
    // a client that leaves before the pod answers takes the pod's connection with it
    const onClientGone = (): void => { if (settle()) up.destroy(); };
    down.once('close', onClientGone);
    // keep reading (into the stream's own buffer, up to its highWaterMark, nothing consumed):
    // a connection nobody reads never learns that its client reset it
    down.read(0);
    up.on('error', (err) => {
      if (!settle()) return; // after the answer the pipe or the response owns errors
      const why = `${where}: ${errorText(err)}`;
      flow(503, 'ERROR', why);
      this.closeWith(down, '503 Service Unavailable', 'upstream connect error or disconnect/reset before headers\n');
    });
    up.on('upgrade', (res: IncomingMessage, socket: Socket, upHead: Buffer) => {
      if (!settle()) {
        socket.destroy();
        return;
      }
      flow(101, 'FORWARDED');
      let lines = `HTTP/1.1 101 ${res.statusMessage ?? 'Switching Protocols'}\r\n`;
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) lines += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`;
      down.write(Buffer.from(`${lines}\r\n`, 'latin1'));
      if (upHead.length > 0) down.write(upHead);
      // now, and only now, what the client sent after its request head
      if (head.length > 0) socket.write(head);
      this.dest.track({ conn, request: input, close: () => { socket.destroy(); down.destroy(); } }, down);
      splice(down, socket);
    });
    up.on('response', (res: IncomingMessage) => {
      if (!settle()) {
        res.destroy();
        return;
      }
      flow(res.statusCode ?? 0, 'FORWARDED', `upgrade declined by the pod (${res.statusCode})`);
      this.relayDeclined(down, res, () => up.destroy());
    });
    up.end();
  }

  /** a connection to the pod for an upgrade request, kept until it closes so that close() can end it */
  private upstream(conn: InboundConn): Socket {
    const s = connect({ host: conn.dst.ip, port: conn.port, localAddress: this.ctx.upstreamBindIp, allowHalfOpen: true });
    this.ctx.countBytes(s, 'inbound');
    // a proxied connection once the pod took it, as opaque ones are counted
    s.once('connect', () => this.ctx.metrics.carried('inbound', s, conn.src.identity, conn.dst.identity, false));
    this.upstreams.add(s);
    s.once('close', () => this.upstreams.delete(s));
    return s;
  }

  /**
   * The pod's answer to an upgrade it declined, to the client, and the connection closed:
   * the client's bytes after the upgrade request are dropped, never parsed as requests.
   */
  private relayDeclined(down: Duplex, res: IncomingMessage, done: () => void): void {
    let lines = `HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ''}\r\n`;
    for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
      const name = res.rawHeaders[i]!.toLowerCase();
      // node decoded the framing: a chunked body goes on delimited by the close
      if (DECLINED_HOP_BY_HOP.has(name)) continue;
      lines += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`;
    }
    down.write(Buffer.from(`${lines}connection: close\r\n\r\n`, 'latin1'));
    res.on('error', () => down.destroy());
    // a client that leaves during the answer takes the pod's connection with it
    down.once('close', done);
    res.once('end', () => {
      done();
      this.linger(down);
    });
    res.pipe(down, { end: false });
  }

  /** a one-line answer of the proxy's own, then the connection closed */
  private closeWith(down: Duplex, status: string, body: string): void {
    const b = Buffer.from(body);
    down.write(Buffer.from(`HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\ncontent-length: ${b.length}\r\nconnection: close\r\n\r\n`, 'latin1'));
    down.write(b);
    this.linger(down);
  }

  /** FIN after the answer; the client's remaining bytes are read and dropped until it closes or errorLinger runs out */
  private linger(down: Duplex): void {
    if (down.destroyed) return;
    down.end();
    down.resume();
    const t = setTimeout(() => down.destroy(), this.ctx.limits.errorLingerMs);
    down.once('close', () => clearTimeout(t));
  }
}

/**
 * Request headers an upgrade request does not carry to the pod: the proxy's own, and
 * hop-by-hop ones other than Connection and Upgrade. Its body is not read as one (node:http
 * skips it, as the pod's parser would): those bytes are the new protocol's, sent only
 * after a 101, so no framing header goes with the head.
 */
const UPGRADE_DROPPED = new Set(['traceparent', 'content-length', 'transfer-encoding', 'trailer', 'te', 'keep-alive', 'proxy-connection']);

/** the pod's connection-level headers, replaced by `connection: close` in a declined upgrade's answer */
const DECLINED_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection']);

/**
 * A pooled connection's request as its client's connection: the stream names the source
 * workload, the request its client's port (from the peer's proxy; the source side drops
 * every x-nodal-* header its clients send)
 */
function withClientPort(conn: InboundConn, addr: string | string[] | undefined): InboundConn {
  const a = parseAuthority(addr);
  if (!a || a.ip !== conn.src.ip || a.port === conn.src.port) return conn;
  return { ...conn, src: { ...conn.src, port: a.port } };
}

function noop(): void {}
