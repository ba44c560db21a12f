// W3C trace context (https://www.w3.org/TR/trace-context/): the proxy keeps a caller's
// traceparent, and starts one per connection when the caller sent none, so that a flow,
// the access log and the workload's own spans can be joined on the trace id.

import { randomSpanId, randomTraceId } from '../telemetry/index.ts';

export interface TraceParent {
  traceId: string;
  /** the parent span id as carried in the header */
  spanId: string;
  flags: string;
  /** the header value, as it goes on the wire */
  header: string;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/** a valid traceparent header, else undefined (an invalid one is dropped, per the spec) */
export function parseTraceparent(value: string | string[] | undefined): TraceParent | undefined {
  if (typeof value !== 'string') return undefined;
  const m = TRACEPARENT.exec(value.trim().toLowerCase());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags] = m as unknown as [string, string, string, string, string];
  if (version === 'ff' || traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId, spanId, flags, header: `00-${traceId}-${spanId}-${flags}` };
}

/** a new trace, sampled (flags 01) so that a tracing backend records what the mesh started */
export function newTrace(): TraceParent {
  const traceId = randomTraceId();
  const spanId = randomSpanId();
  return { traceId, spanId, flags: '01', header: `00-${traceId}-${spanId}-01` };
}

/** a new span in the same trace: one request on a connection whose trace the proxy started */
export function childSpan(parent: TraceParent): TraceParent {
  const spanId = randomSpanId();
  return { traceId: parent.traceId, spanId, flags: parent.flags, header: `00-${parent.traceId}-${spanId}-${parent.flags}` };
}
