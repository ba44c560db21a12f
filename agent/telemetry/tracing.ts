// A span per proxy hop (DESIGN §8, W3C trace context). The source node's proxy records a
// CLIENT span, the destination's a SERVER span; each hop forwards its own span id in the
// traceparent it sends on, so a tracing backend shows app → source proxy → destination
// proxy → app as one tree.
//
// Sampling is parent-based, the OpenTelemetry SDK default: a caller's traceparent decides
// (its sampled flag is honoured both ways, and forwarded unchanged); a trace the proxy
// starts is sampled with the configured ratio, decided from the trace id so every hop of
// the trace agrees.

import { randomFillSync } from 'node:crypto';
import { nowUnixNano, type AttributeValue, type FinishedSpan, type OtlpExporter } from './otlp.ts';

/** a W3C trace context; agent/proxy/trace.ts's TraceParent has this shape */
export interface SpanContext {
  /** 32 hex digits */
  traceId: string;
  /** 16 hex digits */
  spanId: string;
  /** 2 hex digits; bit 0 = sampled */
  flags: string;
  /** the traceparent header value */
  header: string;
}

/** one hop in progress: forward `context.header` as the traceparent, then end() it */
export interface HopSpan {
  readonly context: SpanContext;
  /** the caller's span, absent when this hop started the trace */
  readonly parentSpanId: string | undefined;
  readonly kind: 'client' | 'server';
  readonly sampled: boolean;
  /** unix ns; 0n when the tracer exports nothing (the clock is read only for spans that can leave) */
  readonly startNs: bigint;
}

/** what the proxy knows about the request when it ends a hop */
export interface HopDetails {
  method: string;
  /** path without the query */
  path: string;
  /** HTTP status sent back; 0 when none was */
  status: number;
  /** `package.Service/Method` for gRPC: the span is named after it and gets rpc.* attributes */
  grpcMethod?: string | undefined;
  grpcStatus?: number | undefined;
  /** the authority the client addressed (host without port) and its port */
  serverAddress: string;
  serverPort?: number | undefined;
  /** HTTP/1.1, HTTP/2 */
  protocol?: string | undefined;
  src: { identity: number; namespace?: string | undefined; pod?: string | undefined };
  dst: { identity: number; namespace?: string | undefined; pod?: string | undefined };
  /** `namespace/name#rule` of the matched route */
  route?: string | undefined;
  verdict?: 'FORWARDED' | 'DROPPED' | 'ERROR' | undefined;
  /** `namespace/name` of the policy that decided */
  policy?: string | undefined;
  /** why the hop failed (upstream connect error...), the span status message */
  error?: string | undefined;
  /** default: now */
  endNs?: bigint | undefined;
}

export interface TracerOptions {
  /** where sampled spans go; without one the tracer only makes contexts (propagation without export) */
  exporter?: OtlpExporter | undefined;
  /** share of the traces the proxy starts that are sampled, 0..1 (default 1, like the SDK's parentbased_always_on) */
  sampleRatio?: number;
}

/** gRPC codes a server reports as its own failure (OpenTelemetry gRPC semantic conventions) */
const GRPC_SERVER_ERRORS = new Set([2, 4, 12, 13, 14, 15]);

export class Tracer {
  private readonly exporter: OtlpExporter | undefined;
  /** a root trace is sampled when its id's low 52 bits fall under this */
  private readonly threshold: number;

  constructor(opts: TracerOptions = {}) {
    const ratio = opts.sampleRatio ?? 1;
    if (!(ratio >= 0 && ratio <= 1)) throw Object.assign(new Error(`trace sample ratio ${ratio} is not within 0..1`), { code: 'NODAL_ERR_OTLP_CONFIG' });
    this.exporter = opts.exporter;
    this.threshold = ratio * 2 ** 52;
  }

  /** true when spans go somewhere */
  get exporting(): boolean { return this.exporter !== undefined; }

  /**
   * Begin a hop under the caller's context (undefined: no valid traceparent came in, so
   * this hop starts a trace).
   */
  start(parent: SpanContext | undefined, kind: 'client' | 'server'): HopSpan {
    const startNs = this.exporter ? nowUnixNano() : 0n;
    if (parent) {
      const spanId = randomSpanId();
      const context = { traceId: parent.traceId, spanId, flags: parent.flags, header: `00-${parent.traceId}-${spanId}-${parent.flags}` };
      return { context, parentSpanId: parent.spanId, kind, sampled: (Number.parseInt(parent.flags, 16) & 1) === 1, startNs };
    }
    const traceId = randomTraceId();
    const spanId = randomSpanId();
    const sampled = this.sampleRoot(traceId);
    const flags = sampled ? '01' : '00';
    return { context: { traceId, spanId, flags, header: `00-${traceId}-${spanId}-${flags}` }, parentSpanId: undefined, kind, sampled, startNs };
  }

  /**
   * Will end() export this hop? The caller builds the HopDetails only then: most hops of a
   * busy proxy are never exported, and the details are a dozen fields per request.
   */
  records(hop: HopSpan): boolean {
    return hop.sampled && this.exporter !== undefined;
  }

  /** finish a hop: a sampled one is queued for export (O(1), never blocks) */
  end(hop: HopSpan, d: HopDetails): void {
    if (!hop.sampled || !this.exporter) return;
    this.exporter.add(finishedSpan(hop, d));
  }

  /** export what is queued and stop */
  async shutdown(): Promise<void> {
    await this.exporter?.shutdown();
  }

  private sampleRoot(traceId: string): boolean {
    if (this.threshold >= 2 ** 52) return true;
    if (this.threshold <= 0) return false;
    // the rightmost bits are the random part of a W3C trace id (trace-context level 2)
    return Number.parseInt(traceId.slice(-13), 16) < this.threshold;
  }
}

/** the OTLP span of a hop, attributes after the OpenTelemetry HTTP / RPC / k8s semantic conventions */
export function finishedSpan(hop: HopSpan, d: HopDetails): FinishedSpan {
  const client = hop.kind === 'client';
  // the pod this hop acts for: the caller on the source node, the callee on the destination
  const local = client ? d.src : d.dst;
  const attributes: Record<string, AttributeValue | undefined> = {
    'http.request.method': d.method,
    'url.path': d.path,
    'http.response.status_code': d.status > 0 ? d.status : undefined,
    'server.address': d.serverAddress,
    'server.port': d.serverPort,
    'network.protocol.version': protocolVersion(d.protocol),
    'k8s.namespace.name': local.namespace,
    'k8s.pod.name': local.pod,
    'nodal.source.identity': d.src.identity,
    'nodal.destination.identity': d.dst.identity,
    'nodal.source.namespace': d.src.namespace,
    'nodal.source.pod': d.src.pod,
    'nodal.destination.namespace': d.dst.namespace,
    'nodal.destination.pod': d.dst.pod,
    'nodal.route': d.route,
    'nodal.verdict': d.verdict,
    'nodal.policy': d.policy,
  };
  let name = d.method;
  let failed = client ? d.status >= 400 : d.status >= 500;
  if (d.grpcMethod) {
    name = d.grpcMethod;
    const slash = d.grpcMethod.lastIndexOf('/');
    attributes['rpc.system'] = 'grpc';
    attributes['rpc.service'] = slash > 0 ? d.grpcMethod.slice(0, slash) : d.grpcMethod;
    attributes['rpc.method'] = slash > 0 ? d.grpcMethod.slice(slash + 1) : '';
    if (d.grpcStatus !== undefined) {
      attributes['rpc.grpc.status_code'] = d.grpcStatus;
      failed ||= client ? d.grpcStatus !== 0 : GRPC_SERVER_ERRORS.has(d.grpcStatus);
    }
  }
  if (d.verdict === 'ERROR' || d.error) failed = true;
  if (failed) attributes['error.type'] = d.status > 0 ? String(d.status) : '_OTHER';
  const span: FinishedSpan = {
    traceId: hop.context.traceId,
    spanId: hop.context.spanId,
    parentSpanId: hop.parentSpanId,
    flags: Number.parseInt(hop.context.flags, 16),
    name,
    kind: hop.kind,
    startNs: hop.startNs,
    endNs: d.endNs ?? nowUnixNano(),
    attributes,
  };
  if (failed) span.status = { code: 'error', ...(d.error ? { message: d.error } : {}) };
  return span;
}

/**
 * Trace and span ids are cut from one buffer of random bytes, refilled when it runs out:
 * one randomFillSync and one hex conversion per 256 span ids instead of one randomBytes
 * (a Buffer and a call into C++) per id, three of which a proxied request used to make.
 * As random as before; ids are identifiers, not secrets (Node's randomUUID() buffers the
 * same way).
 */
const ID_POOL_BYTES = 2048;
const idPool = Buffer.allocUnsafeSlow(ID_POOL_BYTES);
/** idPool in hex, made once per refill: an id is a slice of it (V8 shares the characters) */
let idHex = '';
let idOffset = ID_POOL_BYTES;

function randomHex(bytes: number): string {
  if (idOffset + bytes > ID_POOL_BYTES) {
    randomFillSync(idPool);
    idHex = idPool.toString('hex');
    idOffset = 0;
  }
  const hex = idHex.slice(2 * idOffset, 2 * (idOffset + bytes));
  idOffset += bytes;
  return hex;
}

/** 32 random hex digits (W3C trace-id) */
export function randomTraceId(): string { return randomHex(16); }

/** 16 random hex digits (W3C parent-id / span id) */
export function randomSpanId(): string { return randomHex(8); }

function protocolVersion(p: string | undefined): string | undefined {
  if (!p) return undefined;
  if (p === 'HTTP/2' || p === 'h2' || p === 'h2c' || p === 'gRPC') return '2';
  const m = /^HTTP\/(\d(?:\.\d)?)$/.exec(p);
  return m ? m[1] : undefined;
}
