// HTTP/1.1 carried as a byte stream to the destination: llhttp (through a node:http Server
// that never listens) parses the requests of a connection that arrived as a CONNECT stream
// on the tunnel or in-process as bytes (an HTTP Upgrade the source side replayed, or a peer
// that does not send requests as tunnel streams). Each request goes through the same
// Destination path as every other request: policy, flow, metrics, the pod pool.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import type { InboundConn, ProxyContext } from './context.ts';
import { UPSTREAM_FAILURE_HEADER, type Destination } from './destination.ts';
import { errorText } from './errors.ts';
import { endToEnd, h1Request, writeH1 } from './exchange.ts';
import { applyDecision, newFlow } from './flows.ts';
import { isHttp2Stream, splice } from './stream.ts';
import { childSpan, parseTraceparent } from './trace.ts';

/**
 * Idle time before the proxy closes a client's keep-alive connection. Long, like Envoy's
 * one-hour idle timeout: the proxy must not be the first to drop an idle connection the
 * application expects to reuse (that races with the next request).
 */
export const CLIENT_IDLE_MS = 60 * 60 * 1000;

export class HttpIngress {
  private readonly ctx: ProxyContext;
  private readonly dest: Destination;
  private readonly server: Server;
  /** the connection each parsed request arrived on; weak so a closed stream frees it */
  private readonly conns = new WeakMap<object, InboundConn>();

  constructor(ctx: ProxyContext, dest: Destination) {
    this.ctx = ctx;
    this.dest = dest;
    this.server = createServer({ keepAliveTimeout: CLIENT_IDLE_MS, requireHostHeader: false }, (req, res) => this.onRequest(req, res));
    this.server.on('upgrade', (req: IncomingMessage, down: Duplex, head: Buffer) => this.onUpgrade(req, down, head));
  }

  /** hand a connection to the parser; the stream may be paused by detection */
  attach(down: Duplex, conn: InboundConn): void {
    this.conns.set(down, conn);
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
    this.dest.exchange(conn, head, req, signal).then((r) => {
      delete r.headers[UPSTREAM_FAILURE_HEADER]; // for a source side that retries; this client is the pod's caller itself
      writeH1(res, r);
    }, (err) => {
      this.ctx.log.error({ err: errorText(err) }, 'request failed unexpectedly');
      res.destroy();
    });
  }

  /**
   * Upgrade (WebSocket and the like): one policy decision on the upgrade request, then the
   * request head is replayed to the pod and the connection becomes a byte pipe. The
   * response status is read from the pod's first bytes for the flow, then left in place.
   * The pipe stays subject to policy: a snapshot that no longer allows it closes it.
   */
  private onUpgrade(req: IncomingMessage, down: Duplex, head: Buffer): void {
    const conn = this.conns.get(req.socket);
    if (!conn || !this.ctx.view()) {
      down.destroy();
      return;
    }
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
      const body = Buffer.from(`RBAC: access denied by ${p ? `${p.namespace}/${p.name}` : 'policy'}\n`);
      flow(403, 'DROPPED');
      down.end(Buffer.concat([
        Buffer.from(`HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`, 'latin1'),
        body,
      ]));
      return;
    }
    const up = connect({ host: conn.dst.ip, port: conn.port, localAddress: this.ctx.upstreamBindIp, allowHalfOpen: true });
    this.ctx.countBytes(up, 'inbound');
    let lines = `${method} ${path} HTTP/${req.httpVersion}\r\n`;
    const raw = req.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      if (name !== 'traceparent' && !name.startsWith('x-nodal-')) lines += `${raw[i]}: ${raw[i + 1]}\r\n`;
    }
    lines += `traceparent: ${trace.header}\r\n\r\n`;
    up.write(Buffer.from(lines, 'latin1'));
    if (head.length > 0) up.write(head);
    let answered = false;
    const fail = (why: string): void => {
      if (answered) return; // after the answer the pipe owns errors
      answered = true;
      flow(503, 'ERROR', `upstream ${conn.dst.ip}:${conn.port}: ${why}`);
      up.destroy();
      down.destroy();
    };
    up.once('data', (first: Buffer) => {
      answered = true;
      up.pause();
      up.unshift(first);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(first.toString('latin1', 0, 16));
      flow(m ? Number(m[1]) : 0, 'FORWARDED');
      this.dest.track({ conn, request: input, close: () => { up.destroy(); down.destroy(); } }, down);
      splice(down, up);
    });
    up.once('error', (err) => fail(errorText(err)));
    up.once('end', () => fail('closed before answering the upgrade'));
  }
}

/**
 * Node 24 bug workaround: string chunks in a vectored write to an Http2Stream can reach
 * the wire after their native copy was freed: the first 16 bytes of the response head
 * arrive as allocator garbage (tcache pointers). node:http writes its head as a latin1
 * string corked with the first body chunk, which is exactly that case. Converting strings
 * to Buffers before the write keeps the bytes alive in JS until the write completes.
 * Repro: an http.Server fed an h2 CONNECT stream via emit('connection'), response
 * writeHead() then upstream.pipe(res). Set once per stream; the function is shared.
 */
function buffersOnly(stream: Duplex): void {
  const s = stream as unknown as WritableInternals;
  if (s._writev === writevBuffers) return;
  protoWritev ??= s._writev;
  protoWrite ??= s._write;
  s._writev = writevBuffers;
  s._write = writeBuffer;
}

interface WriteChunk { chunk: Buffer | string; encoding: BufferEncoding | 'buffer' }
type WritevFn = (this: Duplex, chunks: WriteChunk[] & { allBuffers?: boolean }, cb: (err?: Error | null) => void) => unknown;
type WriteFn = (this: Duplex, chunk: Buffer | string, encoding: BufferEncoding | 'buffer', cb: (err?: Error | null) => void) => unknown;
interface WritableInternals { _writev: WritevFn; _write: WriteFn }
let protoWritev: WritevFn | undefined;
let protoWrite: WriteFn | undefined;

function writevBuffers(this: Duplex, chunks: WriteChunk[] & { allBuffers?: boolean }, cb: (err?: Error | null) => void): unknown {
  for (const c of chunks) {
    if (typeof c.chunk === 'string') {
      c.chunk = Buffer.from(c.chunk, c.encoding === 'buffer' ? 'utf8' : c.encoding);
      c.encoding = 'buffer';
    }
  }
  chunks.allBuffers = true;
  return protoWritev!.call(this, chunks, cb);
}

function writeBuffer(this: Duplex, chunk: Buffer | string, encoding: BufferEncoding | 'buffer', cb: (err?: Error | null) => void): unknown {
  if (typeof chunk === 'string') return protoWrite!.call(this, Buffer.from(chunk, encoding === 'buffer' ? 'utf8' : encoding), 'buffer', cb);
  return protoWrite!.call(this, chunk, encoding, cb);
}

