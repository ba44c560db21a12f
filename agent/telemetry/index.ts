// agent/telemetry: what the proxy records beyond flows and metrics (DESIGN §8): the JSON
// access log (pino) and a span per hop exported over OTLP/HTTP. The proxy's Prometheus
// metrics live with the proxy (agent/proxy/metrics.ts).
import type { AccessLog } from './accesslog.ts';
import type { Tracer } from './tracing.ts';

export { AccessLog, ACCESS_LOG_FIELDS, ALL_ACCESS_LOG_FIELDS, DEFAULT_MAX_BUFFER_BYTES } from './accesslog.ts';
export type { AccessLogEntry, AccessLogField, AccessLogOptions } from './accesslog.ts';
export { OtlpExporter, otlpProtoDir, otlpRoot, nowUnixNano, retryAfterMs, EXPORT_REQUEST_TYPE, EXPORT_RESPONSE_TYPE } from './otlp.ts';
export type { FinishedSpan, OtlpExporterOptions, AttributeValue } from './otlp.ts';
export { Tracer, finishedSpan, randomSpanId, randomTraceId } from './tracing.ts';
export type { HopSpan, HopDetails, SpanContext, TracerOptions } from './tracing.ts';

/** what the agent hands the proxy (ProxyOptions.telemetry) */
export interface ProxyTelemetry {
  /** absent: access log off (the default) */
  accessLog?: AccessLog | undefined;
  /** always present: makes hop contexts; exports only with --otlp-endpoint */
  tracer: Tracer;
}
