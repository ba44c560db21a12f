// The destination proxy's request path: every HTTP request for a local pod, whether it came
// as a stream on a tunnel session, in-process from this node's source side, or parsed from
// an HTTP/1.1 connection, is decided here: MeshPolicy per request (DESIGN §4), the L7 flow
// and metrics, then the request goes to the pod over the pod pool.
//
// Requests and connections still running are kept so that a new snapshot can close the
// ones its policy no longer allows (an open gRPC stream or WebSocket must not outlive the
// policy that let it in).

import type { Readable } from 'node:stream';
import { describeDecision, evaluate, type Decision, type PolicyRequest } from '../policy/index.ts';
import type { InboundConn, ProxyContext } from './context.ts';
import { errorText } from './errors.ts';
import {
  answerBytes, declaredLength, flatHeaders, grpcMethodOf, grpcStatusOf, headerValue, isGrpc, localResponse, type Headers, type L7Response, type RequestHead,
} from './exchange.ts';
import { applyDecision, newFlow } from './flows.ts';
import { policyLabel, type RequestVerdict } from './metrics.ts';
import { ReservedIdentity } from '../../control/api/types.ts';
import type { HopSpan } from '../telemetry/index.ts';
import { bodiless, drain, PodPool, UpstreamError } from './pods.ts';
import { childSpan, parseTraceparent, type TraceParent } from './trace.ts';

/** something live that a policy let in and that must end when a policy no longer does */
export interface Live {
  conn: InboundConn;
  /** the policy question that admitted it (L4 for an opaque connection, the request for L7) */
  request: PolicyRequest;
  /** end it, telling the client as well as the protocol can */
  close(reason: string): void;
}

/**
 * On the destination's own 503 when the pod could not be reached: 'connect-failure' (the
 * pod never saw the request) or 'reset'. The source side reads it to decide a retry, and
 * removes it before the client sees the answer.
 */
export const UPSTREAM_FAILURE_HEADER = 'x-nodal-upstream-failure';

/** the same, for answers that stay in-process (same node) */
export const upstreamFailure = new WeakMap<L7Response, 'connect-failure' | 'reset'>();

export class Destination {
  private readonly ctx: ProxyContext;
  readonly pods: PodPool;
  private readonly live = new Set<Live>();

  constructor(ctx: ProxyContext) {
    this.ctx = ctx;
    const counted = new WeakSet<object>();
    this.pods = new PodPool(ctx.upstreamBindIp, (s) => {
      // once per socket, not per request: pooled sockets carry many
      if (counted.has(s)) return;
      counted.add(s);
      ctx.countBytes(s, 'inbound');
    });
  }

  /** the policy decision for a request or (no method) a connection */
  decide(conn: InboundConn, req?: { method: string; path: string; host: string; headers: Headers; grpc: boolean }): { decision: Decision; input: PolicyRequest } {
    const view = this.ctx.view();
    const input = l4Input(conn);
    const policies = view ? view.policiesForSource(conn.dst.identity, input.src) : [];
    if (req) {
      input.method = req.method;
      input.path = req.path;
      input.host = req.host;
      // copied only when a policy could look at them (now, or after a snapshot: revalidate)
      if (policies.length > 0 || (view && view.policiesFor(conn.dst.identity).length > 0)) input.headers = flatHeaders(req.headers);
      if (req.grpc) {
        const m = grpcMethodOf(req.path);
        if (m) (input as PolicyRequest & { grpc?: { service: string; method: string } }).grpc = m;
      }
    }
    // a health probe of a source node's proxy is admitted like a kubelet probe, under any policy
    const decision = conn.src.identity === ReservedIdentity.HEALTH ? HEALTH_PROBE : evaluate(policies, input);
    this.ctx.metrics.verdict(decision.verdict, policyLabel(decision.policy));
    return { decision, input };
  }

  /** one request for the local pod of `conn`; resolves with what the client must get */
  async exchange(conn: InboundConn, head: RequestHead, body: Readable, signal: AbortSignal): Promise<L7Response> {
    const start = process.hrtime.bigint();
    const grpc = isGrpc(head.headers);
    const q = head.path.indexOf('?');
    const path = q < 0 ? head.path : head.path.slice(0, q);
    const hop = this.ctx.tracer.start(parentOf(headerValue(head.headers.traceparent), conn.trace), 'server');
    const trace = hop.context;
    const { decision, input } = this.decide(conn, { method: head.method, path, host: head.authority, headers: head.headers, grpc });
    const rec: RequestRecord = {
      conn, head, grpc, trace, start, decision, hop,
      startMs: this.ctx.accessLog ? Date.now() : 0,
      bytesIn: this.ctx.accessLog ? (bodiless(body) ? 0 : declaredLength(head.headers)) : undefined,
    };

    if (!decision.allowed) {
      drain(body); // the body is not wanted; drained so the client's side can finish
      const p = decision.policy;
      const res = localResponse(403, `RBAC: access denied by ${p ? `${p.namespace}/${p.name}` : 'policy'}`, grpc);
      // the flow goes out before the answer: whoever sees the 403 can already find its flow
      this.finish(rec, res, 403, grpc ? grpcStatusOf(res) : undefined, 'DROPPED');
      return res;
    }

    let res: L7Response;
    try {
      res = await this.pods.send(conn.dst.ip, conn.port, head, trace.header, body, signal);
    } catch (err) {
      const kind = err instanceof UpstreamError ? err.kind : 'reset';
      const res503 = localResponse(503, 'upstream connect error or disconnect/reset before headers', grpc, { [UPSTREAM_FAILURE_HEADER]: kind });
      upstreamFailure.set(res503, kind);
      this.finish(rec, res503, 503, grpc ? grpcStatusOf(res503) : undefined, 'ERROR', `upstream ${conn.dst.ip}:${conn.port}: ${errorText(err)}`);
      return res503;
    }

    // an answer here whole is over: its outcome is known (a gRPC answer's trailers came with
    // it, and its body stream is never read, so it would never end), and no policy change
    // can cut it off any more
    if (res.whole !== undefined) {
      this.finish(rec, res, res.status, grpc ? grpcStatusOf(res) : undefined, 'FORWARDED');
      return res;
    }
    // plain HTTP's outcome is known at the response head; gRPC's (grpc-status) at the end
    if (!grpc) {
      this.finish(rec, res, res.status, undefined, 'FORWARDED');
      const live = new LiveRequest(conn, input, res.body);
      this.live.add(live);
      res.body.once('close', () => this.live.delete(live));
      return res;
    }
    const live = new LiveRequest(conn, input, res.body);
    this.live.add(live);
    let recorded = false;
    res.body.once('end', () => {
      if (recorded) return;
      recorded = true;
      this.finish(rec, res, res.status, grpcStatusOf(res), 'FORWARDED');
    });
    res.body.once('close', () => {
      this.live.delete(live);
      if (!recorded) {
        recorded = true;
        this.finish(rec, res, res.status, grpcStatusOf(res), 'ERROR', 'stream ended before its trailers');
      }
    });
    return res;
  }

  /** what revalidate() would ask again now */
  get liveCount(): number {
    return this.live.size;
  }

  /** keep an opaque connection or an upgraded stream for revalidation until it closes */
  track(live: Live, closed: { once(ev: 'close', cb: () => void): unknown }): void {
    this.live.add(live);
    closed.once('close', () => this.live.delete(live));
  }

  /**
   * After a new snapshot: everything live is asked again; what the policy now denies is
   * closed with a DROPPED flow naming the policy.
   */
  revalidate(): number {
    const view = this.ctx.view();
    if (!view) return 0;
    let closed = 0;
    for (const l of [...this.live]) {
      const d = evaluate(view.policiesFor(l.conn.dst.identity), l.request);
      if (d.allowed) continue;
      this.live.delete(l);
      closed++;
      const why = `closed: ${describeDecision(d)} (policy changed)`;
      const f = newFlow(this.ctx.node, 'DROPPED', l.request.method ? 'L7' : 'L3_L4', 'INGRESS',
        { ip: l.conn.src.ip, port: l.conn.src.port }, { ip: l.conn.dst.ip, port: l.conn.port });
      f.source = l.conn.src.flow;
      f.destination = view.flowEndpoint(l.conn.dst);
      f.summary = why;
      applyDecision(f, d);
      this.ctx.emit(f);
      l.close(why);
    }
    return closed;
  }

  close(): void {
    this.pods.close();
  }

  private finish(rec: RequestRecord, res: L7Response, code: number, grpcStatus: number | undefined, verdict: RequestVerdict, summary?: string): void {
    const { conn, head } = rec;
    const elapsed = process.hrtime.bigint() - rec.start;
    this.ctx.metrics.request({
      direction: 'inbound', src: conn.src.identity, dst: conn.dst.identity, route: '', code, grpcStatus, verdict, seconds: Number(elapsed) / 1e9,
    });
    const protocolName = head.protocol === 'h2' ? 'HTTP/2' : 'HTTP/1.1';
    // span details and the access log line are built only for a span that is exported and a log that is on
    if (this.ctx.tracer.records(rec.hop)) {
      const q = head.path.indexOf('?');
      const path = q < 0 ? head.path : head.path.slice(0, q);
      this.ctx.tracer.end(rec.hop, {
        method: head.method, path, status: code, grpcStatus, ...(rec.grpc ? { grpcMethod: path.slice(1) } : {}),
        serverAddress: head.authority, protocol: protocolName,
        src: { identity: conn.src.identity, namespace: conn.src.endpoint?.namespace, pod: conn.src.endpoint?.name },
        dst: { identity: conn.dst.identity, namespace: conn.dst.namespace, pod: conn.dst.name },
        verdict, policy: policyLabel(rec.decision.policy), ...(verdict === 'ERROR' && summary ? { error: summary } : {}),
      });
    }
    this.ctx.accessLog?.write({
      startMs: rec.startMs, direction: 'inbound', traceId: rec.trace.traceId, spanId: rec.trace.spanId,
      src: { identity: conn.src.identity, ...(conn.src.endpoint ? { workload: `${conn.src.endpoint.namespace}/${conn.src.endpoint.name}` } : {}) },
      dst: { identity: conn.dst.identity, workload: `${conn.dst.namespace}/${conn.dst.name}` },
      method: head.method, authority: head.authority, path: head.path, protocol: rec.grpc ? 'gRPC' : protocolName,
      status: code, grpcStatus, route: '', upstream: `${conn.dst.ip}:${conn.port}`, bytesIn: rec.bytesIn, bytesOut: answerBytes(res),
      durationMs: Number(elapsed) / 1e6, retries: 0, verdict, policy: policyLabel(rec.decision.policy),
    });
    // health probes are not traffic anyone asked to see
    if (conn.src.identity === ReservedIdentity.HEALTH) return;

    const f = newFlow(this.ctx.node, verdict, 'L7', 'INGRESS',
      { ip: conn.src.ip, port: conn.src.port }, { ip: conn.dst.ip, port: conn.port });
    const view = this.ctx.view();
    f.source = conn.src.flow;
    if (view) f.destination = view.flowEndpoint(conn.dst);
    const url = `http://${head.authority}${head.path}`;
    f.l7 = {
      type: verdict === 'FORWARDED' ? 'RESPONSE' : 'REQUEST',
      latencyNs: Number(elapsed),
      http: code > 0 ? { code, method: head.method, url, protocol: protocolName } : { method: head.method, url, protocol: protocolName },
    };
    if (grpcStatus !== undefined) f.l7.http!.headers = [{ key: 'grpc-status', value: String(grpcStatus) }];
    f.traceContext = { parent: { traceId: rec.trace.traceId, spanId: rec.trace.spanId } };
    if (summary) f.summary = summary;
    applyDecision(f, rec.decision);
    this.ctx.emit(f);
  }
}

/** a forwarded request a new policy may have to cut off: closing it destroys the answer's body */
class LiveRequest implements Live {
  readonly conn: InboundConn;
  readonly request: PolicyRequest;
  private readonly body: Readable;
  constructor(conn: InboundConn, request: PolicyRequest, body: Readable) {
    this.conn = conn;
    this.request = request;
    this.body = body;
  }
  close(): void { this.body.destroy(); }
}

interface RequestRecord {
  conn: InboundConn;
  head: RequestHead;
  grpc: boolean;
  trace: TraceParent;
  start: bigint;
  startMs: number;
  decision: Decision;
  hop: HopSpan;
  /** the request body's length for the access log (when it is on and the length is known) */
  bytesIn: number | undefined;
}

/**
 * The parent of a request's hop: the traceparent it carries, else a span of its
 * connection's trace. In-process (and from a source proxy) the header is the one the
 * connection's trace was made from: no need to parse it back.
 */
function parentOf(header: string | undefined, connTrace: TraceParent): TraceParent {
  if (header !== undefined && header === connTrace.header) return connTrace;
  return parseTraceparent(header) ?? childSpan(connTrace);
}

const HEALTH_PROBE: Decision = Object.freeze({ allowed: true, verdict: 'ALLOW', reason: 'NO_POLICY' }) as Decision;

/** the policy question of a connection, before anything of a request is known */
export function l4Input(conn: InboundConn): PolicyRequest {
  return {
    dstIdentity: conn.dst.identity,
    src: { identity: conn.src.identity, namespace: conn.src.namespace, principal: conn.src.principal, ip: conn.src.ip },
    port: conn.port,
    dstIp: conn.dst.ip,
  };
}

