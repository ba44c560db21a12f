// HTTP/1.1 at the destination: llhttp (through a node:http Server that never listens) parses
// the requests of a connection handed over by the tunnel or the local outbound side; each
// request gets a policy decision, a flow and metrics, and is forwarded to the pod over a
// keep-alive agent bound to the proxy address (the ingress guard admits only that source).

import { Agent, createServer, request, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';
import { evaluate, type Decision } from '../policy/index.ts';
import type { Flow } from '../flows/flow.ts';
import type { InboundConn, ProxyContext } from './context.ts';
import { errorText } from './errors.ts';
import { applyDecision, newFlow } from './flows.ts';
import { guardRequest, guardUpgrade, hardenHttpServer, http1ServerOptions } from './limits.ts';
import { codeClass } from './metrics.ts';
import { isHttp2Stream, splice } from './stream.ts';
import { childSpan, parseTraceparent, type TraceParent } from './trace.ts';

/** idle upstream sockets kept per pod: enough for bursts, few enough to not pin pod memory */
const UPSTREAM_IDLE_SOCKETS = 64;

/** hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, never forwarded */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization',
  'te', 'trailer', 'transfer-encoding', 'upgrade',
]);

export class HttpIngress {
  private readonly ctx: ProxyContext;
  private readonly server: Server;
  private readonly agent: Agent;
  /** the connection each parsed request arrived on; weak so a closed stream frees it */
  private readonly conns = new WeakMap<object, InboundConn>();
  private readonly countedSockets = new WeakSet<Socket>();

  constructor(ctx: ProxyContext) {
    this.ctx = ctx;
    const limits = ctx.limits;
    this.server = hardenHttpServer(createServer({ ...http1ServerOptions(limits), requireHostHeader: false }, guardRequest(limits, (req, res) => this.onRequest(req, res))), limits);
    this.server.on('upgrade', guardUpgrade(limits, (req: IncomingMessage, down: Duplex, head: Buffer) => this.onUpgrade(req, down, head)));
    this.agent = new Agent({ keepAlive: true, maxFreeSockets: UPSTREAM_IDLE_SOCKETS, localAddress: ctx.upstreamBindIp });
  }

  /** hand a connection to the parser; the stream may be paused by detection */
  attach(down: Duplex, conn: InboundConn): void {
    this.conns.set(down, conn);
    if (isHttp2Stream(down)) buffersOnly(down);
    this.server.emit('connection', down);
    down.resume();
  }

  close(): void {
    this.server.close();
    this.agent.destroy();
  }

  /** the policy decision and the record of one request; undefined when its connection is unknown */
  private begin(req: IncomingMessage): RequestRecord | undefined {
    const conn = this.conns.get(req.socket);
    const view = this.ctx.view();
    if (!conn || !view) return undefined;
    const start = process.hrtime.bigint();
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const host = req.headers.host ?? '';
    const trace = parseTraceparent(req.headers.traceparent) ?? childSpan(conn.trace);
    const policies = view.policiesFor(conn.dst.identity);
    const decision = evaluate(policies, {
      dstIdentity: conn.dst.identity,
      src: { identity: conn.src.identity, namespace: conn.src.namespace, principal: conn.src.principal, ip: conn.src.ip },
      port: conn.port, method, path, host, dstIp: conn.dst.ip,
      // headers are copied only when a policy could look at them
      headers: policies.length > 0 ? flatHeaders(req.headers) : undefined,
    });
    this.ctx.metrics.verdicts.labels(decision.verdict).inc();
    return { conn, method, path: url, url: `http://${host}${url}`, trace, start, decision };
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const rec = this.begin(req);
    if (!rec) {
      res.destroy();
      return;
    }
    const { conn } = rec;
    if (!rec.decision.allowed) {
      const body = deniedBody(rec.decision);
      // the flow goes out before the answer: whoever sees the 403 can already find its flow
      this.finishRecord(rec, 403, 'DROPPED');
      res.writeHead(403, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(body);
      return;
    }

    const headers = forwardHeaders(req.headers);
    headers.traceparent = rec.trace.header;
    const up = request({
      host: conn.dst.ip, port: conn.port, method: rec.method, path: rec.path, headers,
      agent: this.agent, localAddress: this.ctx.upstreamBindIp, setHost: false,
    });
    up.on('socket', (s: Socket) => this.countUpstream(s));
    up.on('response', (upRes) => {
      const code = upRes.statusCode ?? 502;
      this.finishRecord(rec, code, 'FORWARDED');
      res.writeHead(code, upRes.statusMessage, forwardHeaders(upRes.headers));
      pipeline(upRes, res, noop);
    });
    up.on('error', (err) => {
      if (res.headersSent) {
        res.destroy(err);
        return;
      }
      const code = 503;
      this.finishRecord(rec, code, 'ERROR', `upstream ${conn.dst.ip}:${conn.port}: ${errorText(err)}`);
      const body = 'upstream connect error or disconnect/reset before headers\n';
      res.writeHead(code, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    // a client that goes away mid-request must not leave the upstream request hanging
    res.on('close', () => { if (!res.writableFinished) up.destroy(); });
    // pipe, not pipeline: an upstream failure must not destroy the client's connection,
    // which stays open for the 503 and the next keep-alive request
    req.pipe(up);
  }

  /**
   * Upgrade (WebSocket and the like): one policy decision on the upgrade request, then the
   * request head is replayed to the pod and the connection becomes a byte pipe. The
   * response status is read from the pod's first bytes for the flow, then left in place.
   */
  private onUpgrade(req: IncomingMessage, down: Duplex, head: Buffer): void {
    const rec = this.begin(req);
    if (!rec) {
      down.destroy();
      return;
    }
    const { conn } = rec;
    if (!rec.decision.allowed) {
      const body = deniedBody(rec.decision);
      this.finishRecord(rec, 403, 'DROPPED');
      down.end(Buffer.concat([
        Buffer.from(`HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`, 'latin1'),
        body,
      ]));
      return;
    }
    const up = connect({ host: conn.dst.ip, port: conn.port, localAddress: this.ctx.upstreamBindIp, allowHalfOpen: true });
    this.ctx.countBytes(up, 'inbound');
    let lines = `${rec.method} ${rec.path} HTTP/${req.httpVersion}\r\n`;
    const raw = req.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      if (raw[i]!.toLowerCase() !== 'traceparent') lines += `${raw[i]}: ${raw[i + 1]}\r\n`;
    }
    lines += `traceparent: ${rec.trace.header}\r\n\r\n`;
    up.write(Buffer.from(lines, 'latin1'));
    if (head.length > 0) up.write(head);
    let answered = false;
    const fail = (why: string): void => {
      if (answered) return; // after the answer the pipe owns errors
      answered = true;
      this.finishRecord(rec, 503, 'ERROR', `upstream ${conn.dst.ip}:${conn.port}: ${why}`);
      up.destroy();
      down.destroy();
    };
    up.once('data', (first: Buffer) => {
      answered = true;
      up.pause();
      up.unshift(first);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(first.toString('latin1', 0, 16));
      this.finishRecord(rec, m ? Number(m[1]) : 0, 'FORWARDED');
      splice(down, up);
    });
    up.once('error', (err) => fail(errorText(err)));
    up.once('end', () => fail('closed before answering the upgrade'));
  }

  private finishRecord(rec: RequestRecord, code: number, verdict: Flow['verdict'], summary?: string): void {
    const { conn } = rec;
    const elapsed = process.hrtime.bigint() - rec.start;
    const m = this.ctx.metrics;
    const src = String(conn.src.identity);
    const dst = String(conn.dst.identity);
    m.requests.labels(src, dst, codeClass(code), verdict).inc();
    if (verdict === 'FORWARDED') m.duration.labels(src, dst).observe(Number(elapsed) / 1e9);

    const f = newFlow(this.ctx.node, verdict, 'L7', 'INGRESS',
      { ip: conn.src.ip, port: conn.src.port }, { ip: conn.dst.ip, port: conn.port });
    const view = this.ctx.view();
    f.source = conn.src.flow;
    if (view) f.destination = view.flowEndpoint(conn.dst);
    f.l7 = {
      type: verdict === 'FORWARDED' ? 'RESPONSE' : 'REQUEST',
      latencyNs: Number(elapsed),
      http: code > 0 ? { code, method: rec.method, url: rec.url, protocol: 'HTTP/1.1' } : { method: rec.method, url: rec.url, protocol: 'HTTP/1.1' },
    };
    f.traceContext = { parent: { traceId: rec.trace.traceId, spanId: rec.trace.spanId } };
    if (summary) f.summary = summary;
    applyDecision(f, rec.decision);
    this.ctx.emit(f);
  }

  /** once per upstream socket, not per request: agent sockets are reused */
  private countUpstream(s: Socket): void {
    if (this.countedSockets.has(s)) return;
    this.countedSockets.add(s);
    this.ctx.countBytes(s, 'inbound');
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

interface RequestRecord {
  conn: InboundConn;
  method: string;
  /** request target as sent (path and query) */
  path: string;
  /** full URL for the flow */
  url: string;
  trace: TraceParent;
  start: bigint;
  decision: Decision;
}

function deniedBody(d: Decision): Buffer {
  const p = d.policy;
  return Buffer.from(`RBAC: access denied by ${p ? `${p.namespace}/${p.name}` : 'policy'}\n`);
}

function forwardHeaders(h: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  // headers named by Connection are hop-by-hop too (RFC 9110 §7.6.1)
  const named = typeof h.connection === 'string' ? h.connection.toLowerCase().split(',').map((s) => s.trim()) : [];
  for (const k in h) {
    if (HOP_BY_HOP.has(k) || named.includes(k)) continue;
    const v = h[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

function flatHeaders(h: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k in h) {
    const v = h[k];
    if (v !== undefined) out[k] = Array.isArray(v) ? v.join(',') : v;
  }
  return out;
}

function noop(): void {}
