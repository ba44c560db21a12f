// Spans over OTLP/HTTP with protobuf (https://opentelemetry.io/docs/specs/otlp/#otlphttp):
// `POST {endpoint}/v1/traces`, body an ExportTraceServiceRequest encoded with protobufjs
// from the vendored opentelemetry-proto subset in ./proto, so any OpenTelemetry
// Collector (or Jaeger, Tempo...) accepts it.
//
// The batch processor follows the OpenTelemetry SDK's: a bounded queue (a full queue drops
// and counts, never grows), an export every `scheduledDelayMs` or as soon as
// `maxExportBatchSize` spans wait, never more than one export in flight, retries with
// bounded backoff on 429/502/503/504 (Retry-After honoured) and on connection errors, and
// shutdown() that exports what is queued.

import { request as httpRequest, Agent as HttpAgent, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { Counter, Gauge, type Registry } from 'prom-client';
import { repoRoot } from '../flows/index.ts';

/** the request type every OTLP receiver decodes */
export const EXPORT_REQUEST_TYPE = 'opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest';
export const EXPORT_RESPONSE_TYPE = 'opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse';
export const TRACE_SERVICE_PROTO = 'opentelemetry/proto/collector/trace/v1/trace_service.proto';

/** the folder that holds opentelemetry/proto/... (the include root, as for protoc -I) */
export function otlpProtoDir(): string {
  return join(repoRoot(), 'agent/telemetry/proto');
}

let rootCache: protobuf.Root | undefined;
/** the vendored OTLP schema, loaded once */
export function otlpRoot(): protobuf.Root {
  if (rootCache) return rootCache;
  const dir = otlpProtoDir();
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => join(dir, target);
  try {
    r.loadSync(TRACE_SERVICE_PROTO, { keepCase: false });
    r.resolveAll();
  } catch (err) {
    throw Object.assign(new Error(`load ${TRACE_SERVICE_PROTO} from ${dir}: ${(err as Error).message}`, { cause: err }), { code: 'NODAL_ERR_OTLP_PROTO' });
  }
  return (rootCache = r);
}

/** OTLP Span.SpanKind values */
export const SPAN_KIND = { internal: 1, server: 2, client: 3 } as const;
/** OTLP Status.StatusCode values */
export const STATUS_CODE = { unset: 0, ok: 1, error: 2 } as const;

export type AttributeValue = string | number | boolean;

/** one finished span, as the batch processor queues it */
export interface FinishedSpan {
  /** 32 hex digits */
  traceId: string;
  /** 16 hex digits */
  spanId: string;
  /** 16 hex digits; absent for a root span */
  parentSpanId?: string | undefined;
  /** the W3C trace flags byte */
  flags: number;
  name: string;
  kind: 'client' | 'server' | 'internal';
  /** unix epoch nanoseconds */
  startNs: bigint;
  endNs: bigint;
  /** integers are sent as int_value, other numbers as double_value */
  attributes: Record<string, AttributeValue | undefined>;
  status?: { code: 'error' | 'ok'; message?: string };
}

/** unix epoch nanoseconds now, with sub-millisecond precision (performance clock anchored at its origin) */
export function nowUnixNano(): bigint {
  const ms = performance.timeOrigin + performance.now();
  const whole = Math.floor(ms);
  return BigInt(whole) * 1_000_000n + BigInt(Math.floor((ms - whole) * 1e6));
}

function fixed64(ns: bigint): { low: number; high: number; unsigned: boolean } {
  return { low: Number(ns & 0xffffffffn) | 0, high: Number((ns >> 32n) & 0xffffffffn) | 0, unsigned: true };
}

function anyValue(v: AttributeValue): Record<string, unknown> {
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  return Number.isSafeInteger(v) ? { intValue: v } : { doubleValue: v };
}

/** the plain object protobufjs encodes: ExportTraceServiceRequest with one resource and one scope */
export function exportRequest(spans: readonly FinishedSpan[], resource: Record<string, AttributeValue>, scope: { name: string; version: string }): Record<string, unknown> {
  const attrs = (a: Record<string, AttributeValue | undefined>): Array<Record<string, unknown>> => {
    const out: Array<Record<string, unknown>> = [];
    for (const key in a) {
      const v = a[key];
      if (v !== undefined && v !== '') out.push({ key, value: anyValue(v) });
    }
    return out;
  };
  return {
    resourceSpans: [{
      resource: { attributes: attrs(resource) },
      scopeSpans: [{
        scope: { name: scope.name, version: scope.version },
        spans: spans.map((s) => {
          const o: Record<string, unknown> = {
            traceId: Buffer.from(s.traceId, 'hex'),
            spanId: Buffer.from(s.spanId, 'hex'),
            name: s.name,
            kind: SPAN_KIND[s.kind],
            startTimeUnixNano: fixed64(s.startNs),
            endTimeUnixNano: fixed64(s.endNs),
            attributes: attrs(s.attributes),
            flags: s.flags & 0xff,
          };
          if (s.parentSpanId) o.parentSpanId = Buffer.from(s.parentSpanId, 'hex');
          if (s.status) o.status = { code: STATUS_CODE[s.status.code], ...(s.status.message ? { message: s.status.message } : {}) };
          return o;
        }),
      }],
    }],
  };
}

export interface OtlpExporterOptions {
  /** base URL of the collector's OTLP/HTTP receiver, e.g. http://otel-collector:4318; /v1/traces is appended */
  endpoint: string;
  /** resource attributes of every span (service.name, k8s.node.name...) */
  resource: Record<string, AttributeValue>;
  scope?: { name: string; version: string };
  /** spans waiting for export; past it new spans are dropped (default 2048) */
  maxQueueSize?: number;
  /** spans per request (default 512) */
  maxExportBatchSize?: number;
  /** how often a partial batch goes out (default 5000 ms) */
  scheduledDelayMs?: number;
  /** one HTTP attempt (default 10000 ms) */
  exportTimeoutMs?: number;
  /** attempts per batch, the first included (default 5) */
  maxAttempts?: number;
  /** first backoff, doubled per retry (default 1000 ms) */
  initialBackoffMs?: number;
  /** ceiling for a backoff or a Retry-After (default 30000 ms) */
  maxBackoffMs?: number;
  /** how long shutdown() keeps exporting what is queued (default 10000 ms) */
  shutdownTimeoutMs?: number;
  /** extra request headers (authentication for a hosted backend) */
  headers?: Record<string, string>;
  registry?: Registry;
  /** called when a batch is given up or partly rejected (at most once per export) */
  onError?: (err: Error) => void;
}

const RETRYABLE_STATUS = new Set([429, 502, 503, 504]);
/** bytes of an error response kept for the message: enough for a collector's reason */
const MAX_ERROR_BODY = 1024;

class ExportError extends Error {
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  constructor(message: string, retryable: boolean, retryAfterMs?: number) {
    super(message);
    this.retryable = retryable;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * The batch span processor and the OTLP/HTTP exporter in one: the proxy hands it finished
 * spans (add() is O(1) and never blocks), it sends them.
 */
export class OtlpExporter {
  private readonly url: URL;
  private readonly opts: Required<Omit<OtlpExporterOptions, 'registry' | 'onError' | 'headers'>> & Pick<OtlpExporterOptions, 'onError' | 'headers'>;
  private readonly requestType: protobuf.Type;
  private readonly responseType: protobuf.Type;
  private readonly agent: HttpAgent;
  /** ring buffer of queued spans: index arithmetic, no shift() */
  private readonly ring: Array<FinishedSpan | undefined>;
  private head = 0;
  private count = 0;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private shuttingDown = false;
  /** shutdown ran out of time: no new attempt, no new batch */
  private abandoned = false;
  private current: ClientRequest | undefined;
  private wake: (() => void) | undefined;
  private readonly exported: Counter;
  private readonly dropped: Counter;
  private readonly failed: Counter;
  private readonly queued: Gauge;

  constructor(opts: OtlpExporterOptions) {
    let url: URL;
    try {
      url = new URL(opts.endpoint);
    } catch {
      throw Object.assign(new Error(`otlp endpoint ${JSON.stringify(opts.endpoint)} is not a URL`), { code: 'NODAL_ERR_OTLP_CONFIG' });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw Object.assign(new Error(`otlp endpoint ${opts.endpoint}: only http and https are supported`), { code: 'NODAL_ERR_OTLP_CONFIG' });
    }
    // the OTLP/HTTP convention: the signal path is appended to the base endpoint
    url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/traces`;
    this.url = url;
    this.opts = {
      endpoint: opts.endpoint,
      resource: opts.resource,
      scope: opts.scope ?? { name: 'nodal-proxy', version: '0' },
      maxQueueSize: opts.maxQueueSize ?? 2048,
      maxExportBatchSize: opts.maxExportBatchSize ?? 512,
      scheduledDelayMs: opts.scheduledDelayMs ?? 5000,
      exportTimeoutMs: opts.exportTimeoutMs ?? 10_000,
      maxAttempts: opts.maxAttempts ?? 5,
      initialBackoffMs: opts.initialBackoffMs ?? 1000,
      maxBackoffMs: opts.maxBackoffMs ?? 30_000,
      shutdownTimeoutMs: opts.shutdownTimeoutMs ?? 10_000,
      onError: opts.onError,
      headers: opts.headers,
    };
    if (this.opts.maxExportBatchSize > this.opts.maxQueueSize) this.opts.maxExportBatchSize = this.opts.maxQueueSize;
    const root = otlpRoot();
    this.requestType = root.lookupType(EXPORT_REQUEST_TYPE);
    this.responseType = root.lookupType(EXPORT_RESPONSE_TYPE);
    // one connection is all a single in-flight export needs
    this.agent = url.protocol === 'https:' ? new HttpsAgent({ keepAlive: true, maxSockets: 1 }) : new HttpAgent({ keepAlive: true, maxSockets: 1 });
    this.ring = new Array<FinishedSpan | undefined>(this.opts.maxQueueSize);
    const registers = opts.registry ? [opts.registry] : [];
    this.exported = new Counter({ name: 'nodal_otlp_spans_exported_total', help: 'spans accepted by the OTLP receiver', registers });
    this.dropped = new Counter({ name: 'nodal_otlp_spans_dropped_total', help: 'spans dropped because the export queue was full', registers });
    this.failed = new Counter({
      name: 'nodal_otlp_spans_failed_total',
      help: 'spans given up: export failed after retries, a non-retryable answer, or rejected by the receiver (partial success)',
      registers,
    });
    this.queued = new Gauge({ name: 'nodal_otlp_queue_spans', help: 'spans waiting for export', registers, collect: () => this.queued.set(this.count) });
    this.timer = setInterval(() => this.kick(), this.opts.scheduledDelayMs);
    // the exporter never keeps the agent alive on its own
    this.timer.unref();
  }

  /** spans in the queue now */
  get pending(): number { return this.count; }

  /** queue a finished span; a full queue (or a shut-down exporter) drops it and counts it */
  add(span: FinishedSpan): void {
    if (this.shuttingDown || this.count >= this.ring.length) {
      this.dropped.inc();
      return;
    }
    this.ring[(this.head + this.count) % this.ring.length] = span;
    this.count++;
    if (this.count >= this.opts.maxExportBatchSize) this.kick();
  }

  /** export everything queued now (one batch after another); resolves when the queue is empty or a batch failed */
  async forceFlush(): Promise<void> {
    for (;;) {
      // an export ending may start the next batch itself: wait for whichever is in flight
      if (this.inFlight) {
        await this.inFlight;
        continue;
      }
      if (this.count === 0 || this.abandoned) return;
      this.kick();
    }
  }

  /** stop taking spans, export what is queued (bounded by shutdownTimeoutMs), release the connection */
  async shutdown(): Promise<void> {
    if (this.shuttingDown) {
      if (this.inFlight) await this.inFlight;
      return;
    }
    this.shuttingDown = true;
    clearInterval(this.timer);
    this.timer = undefined;
    let timedOut = false;
    let deadlineTimer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      deadlineTimer = setTimeout(() => { timedOut = true; resolve(); }, this.opts.shutdownTimeoutMs);
    });
    await Promise.race([this.forceFlush(), deadline]);
    clearTimeout(deadlineTimer);
    if (timedOut) {
      // a retry sleeping or a request hanging past the deadline gives up now
      this.abandoned = true;
      this.wake?.();
      this.current?.destroy(new ExportError('shutdown timeout', false));
      if (this.inFlight) await this.inFlight;
      if (this.count > 0) {
        this.failed.inc(this.count);
        this.count = 0;
      }
    }
    this.agent.destroy();
  }

  /** start an export if none is in flight and there is something to send */
  private kick(): void {
    if (this.inFlight || this.count === 0 || this.abandoned) return;
    const n = Math.min(this.count, this.opts.maxExportBatchSize);
    const batch = new Array<FinishedSpan>(n);
    for (let i = 0; i < n; i++) {
      const at = (this.head + i) % this.ring.length;
      batch[i] = this.ring[at]!;
      this.ring[at] = undefined;
    }
    this.head = (this.head + n) % this.ring.length;
    this.count -= n;
    this.inFlight = this.exportWithRetry(batch).finally(() => {
      this.inFlight = undefined;
      // a full batch waiting goes out at once; a partial one waits for the timer
      if (this.count >= this.opts.maxExportBatchSize || (this.shuttingDown && this.count > 0)) this.kick();
    });
  }

  private async exportWithRetry(batch: FinishedSpan[]): Promise<void> {
    const body = this.requestType.encode(exportRequest(batch, this.opts.resource, this.opts.scope)).finish();
    let backoff = this.opts.initialBackoffMs;
    for (let attempt = 1; ; attempt++) {
      try {
        const rejected = await this.post(body);
        this.exported.inc(batch.length - rejected);
        if (rejected > 0) this.failed.inc(rejected);
        return;
      } catch (err) {
        const e = err instanceof ExportError ? err : new ExportError(String(err), false);
        if (!e.retryable || attempt >= this.opts.maxAttempts || this.abandoned) {
          this.failed.inc(batch.length);
          this.opts.onError?.(new Error(`otlp export of ${batch.length} spans to ${this.url.href} failed after ${attempt} attempt(s): ${e.message}`));
          return;
        }
        const wait = Math.min(e.retryAfterMs ?? backoff, this.opts.maxBackoffMs);
        backoff = Math.min(backoff * 2, this.opts.maxBackoffMs);
        const gaveUp = await this.sleep(wait);
        if (gaveUp) {
          this.failed.inc(batch.length);
          return;
        }
      }
    }
  }

  /** resolves true when shutdown cut the wait short */
  private sleep(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.wake = undefined; resolve(false); }, ms);
      this.wake = () => { clearTimeout(t); this.wake = undefined; resolve(true); };
    });
  }

  /** one POST; resolves with the receiver's rejected span count (partial success) */
  private post(body: Uint8Array): Promise<number> {
    const send = this.url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(this.url, {
        method: 'POST',
        agent: this.agent,
        headers: { ...this.opts.headers, 'content-type': 'application/x-protobuf', 'content-length': body.length },
        timeout: this.opts.exportTimeoutMs,
      }, (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          // an answer is small; a huge one is cut, not buffered
          if (size < 64 * 1024) chunks.push(c);
          size += c.length;
        });
        res.on('error', (err) => reject(new ExportError(`response: ${err.message}`, true)));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const raw = Buffer.concat(chunks);
          if (status >= 200 && status < 300) {
            resolve(this.rejectedSpans(raw, res.headers['content-type']));
            return;
          }
          const text = raw.subarray(0, MAX_ERROR_BODY).toString('utf8').replace(/[^\x20-\x7e]+/g, ' ').trim();
          reject(new ExportError(`HTTP ${status}${text ? `: ${text}` : ''}`, RETRYABLE_STATUS.has(status), retryAfterMs(res.headers['retry-after'])));
        });
      });
      this.current = req;
      req.on('close', () => { if (this.current === req) this.current = undefined; });
      req.on('timeout', () => req.destroy(new ExportError(`no answer within ${this.opts.exportTimeoutMs} ms`, true)));
      req.on('error', (err: NodeJS.ErrnoException) => {
        reject(err instanceof ExportError ? err : new ExportError(err.code ?? err.message, true));
      });
      req.end(body);
    });
  }

  private rejectedSpans(raw: Buffer, contentType: string | undefined): number {
    if (raw.length === 0 || !(contentType ?? '').includes('protobuf')) return 0;
    try {
      const res = this.responseType.toObject(this.responseType.decode(raw), { longs: Number }) as { partialSuccess?: { rejectedSpans?: number; errorMessage?: string } };
      const n = res.partialSuccess?.rejectedSpans ?? 0;
      if (n > 0) this.opts.onError?.(new Error(`otlp receiver rejected ${n} spans: ${res.partialSuccess?.errorMessage ?? ''}`));
      return n;
    } catch {
      return 0;
    }
  }
}

/** Retry-After: delay-seconds or an HTTP date (RFC 9110 §10.2.3) */
export function retryAfterMs(v: string | undefined): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}
