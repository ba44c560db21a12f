// Conversions between the three shapes a flow takes:
//   Flow (flow.ts)  <->  wire object (protobufjs camelCase, what grpc-js serializes)
//   wire object     <->  protojson with .proto field names (Hubble's `-o json` lines)
// The wire <-> JSON half walks the schema by reflection, so it stays true to the .proto.
import protobuf from 'protobufjs';
import { FlowJsonError } from './errors.ts';
import { DropReasonCode, eventTypeOf, type Flow, type FlowTime } from './flow.ts';
import { jsonRoot, type WireGetFlowsResponse, type WireTimestamp } from './proto.ts';

export type WireFlow = Record<string, unknown>;

const wireCache = new WeakMap<Flow, WireFlow>();

/** the wire form of a flow; cached, since every follower sends the same flow */
export function flowToWire(f: Flow): WireFlow {
  const hit = wireCache.get(f);
  if (hit) return hit;
  const { summary, isReply, ...rest } = f;
  const w: WireFlow = { ...rest, eventType: eventTypeOf(f) };
  if (summary) w.Summary = summary;
  if (isReply !== undefined) w.isReply = { value: isReply };
  // the deprecated numeric field, for Hubble clients that predate drop_reason_desc
  if (f.dropReasonDesc) w.dropReason = DropReasonCode[f.dropReasonDesc] ?? 0;
  wireCache.set(f, w);
  return w;
}

const num = (v: unknown): number => (typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : 0);
const obj = (v: unknown): Record<string, unknown> | undefined => (v && typeof v === 'object' ? v as Record<string, unknown> : undefined);

export function timeFromWire(t: WireTimestamp | undefined): FlowTime {
  return { seconds: num(t?.seconds), nanos: num(t?.nanos) };
}

/** a decoded wire flow back into a Flow: proto3 leaves zero values out, put them back */
export function flowFromWire(w: WireFlow): Flow {
  const { Summary, isReply, dropReason: _deprecated, ...rest } = w as WireFlow & { Summary?: string; isReply?: { value?: boolean } };
  const f = rest as unknown as Flow;
  f.time = timeFromWire(w.time as WireTimestamp | undefined);
  f.uuid = typeof w.uuid === 'string' ? w.uuid : '';
  f.verdict = (w.verdict as Flow['verdict'] | undefined) ?? 'VERDICT_UNKNOWN';
  f.Type = (w.Type as Flow['Type'] | undefined) ?? 'UNKNOWN_TYPE';
  f.nodeName = typeof w.nodeName === 'string' ? w.nodeName : '';
  f.trafficDirection = (w.trafficDirection as Flow['trafficDirection'] | undefined) ?? 'TRAFFIC_DIRECTION_UNKNOWN';
  if (typeof Summary === 'string' && Summary !== '') f.summary = Summary;
  // an empty BoolValue is `false` on the wire, not "unknown"
  if (isReply && typeof isReply === 'object') f.isReply = Boolean(isReply.value);
  const l4 = obj(w.l4);
  if (l4) {
    for (const p of ['TCP', 'UDP'] as const) {
      const x = obj(l4[p]);
      if (x) { x.sourcePort = num(x.sourcePort); x.destinationPort = num(x.destinationPort); }
    }
    delete l4.protocol;
  }
  const l7 = obj(w.l7);
  if (l7) {
    l7.type ??= 'UNKNOWN_L7_TYPE';
    delete l7.record;
  }
  const ip = obj(w.IP);
  if (ip) { ip.source ??= ''; ip.destination ??= ''; ip.ipVersion ??= 'IP_NOT_USED'; }
  const et = obj(w.eventType);
  if (et) { et.type = num(et.type); et.subType = num(et.subType); }
  return f;
}

// --- protojson (field names as in the .proto, the way Hubble prints JSON) ---

const INT64 = new Set(['int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);
const WRAPPERS = new Set([
  '.google.protobuf.BoolValue', '.google.protobuf.UInt32Value', '.google.protobuf.Int32Value',
  '.google.protobuf.UInt64Value', '.google.protobuf.Int64Value', '.google.protobuf.StringValue',
  '.google.protobuf.DoubleValue', '.google.protobuf.FloatValue',
]);
const camel = (name: string): string => protobuf.util.camelCase(name);

const pad = (n: number, w: number): string => String(n).padStart(w, '0');

/** RFC 3339 with 0, 3, 6 or 9 fractional digits, as protojson writes a Timestamp */
export function rfc3339(t: FlowTime): string {
  const base = new Date(t.seconds * 1000).toISOString().slice(0, 19);
  const n = t.nanos;
  const frac = n === 0 ? '' : n % 1e6 === 0 ? `.${pad(n / 1e6, 3)}` : n % 1e3 === 0 ? `.${pad(n / 1e3, 6)}` : `.${pad(n, 9)}`;
  return `${base}${frac}Z`;
}

const RFC3339 = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/i;
/** parse RFC 3339 (any offset, up to nanoseconds); undefined when it is not one */
export function parseRfc3339(s: string): FlowTime | undefined {
  const m = RFC3339.exec(s.trim());
  if (!m) return undefined;
  const ms = Date.parse(`${m[1]}${m[3]!.toUpperCase()}`);
  if (Number.isNaN(ms)) return undefined;
  return { seconds: Math.floor(ms / 1000), nanos: Number((m[2] ?? '').padEnd(9, '0')) };
}

function isDefault(field: protobuf.Field, v: unknown): boolean {
  if (field.resolvedType instanceof protobuf.Enum) {
    return (typeof v === 'number' ? v : field.resolvedType.values[String(v)]) === 0;
  }
  if (field.resolvedType) return false;
  return v === 0 || v === '0' || v === '' || v === false;
}

function valueToJson(field: protobuf.Field, v: unknown): unknown {
  const t = field.resolvedType;
  if (t instanceof protobuf.Enum) return typeof v === 'number' ? (t.valuesById[v] ?? v) : v;
  if (t instanceof protobuf.Type) {
    if (t.fullName === '.google.protobuf.Timestamp') return rfc3339(timeFromWire(v as WireTimestamp));
    if (WRAPPERS.has(t.fullName)) {
      const inner = obj(v) ? (v as { value?: unknown }).value : v;
      if (t.fullName.endsWith('BoolValue')) return Boolean(inner);
      if (t.fullName.endsWith('StringValue')) return inner ?? '';
      return /Int64Value$/.test(t.fullName) ? String(inner ?? 0) : (inner ?? 0);
    }
    return messageToJson(t, v as Record<string, unknown>);
  }
  if (INT64.has(field.type)) return String(v);
  return v;
}

/** a wire (camelCase) message as protojson with .proto names; zero values left out */
export function messageToJson(type: protobuf.Type, msg: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    const v = msg[camel(field.name)] ?? msg[field.name];
    if (v === undefined || v === null) continue;
    if (field.repeated) {
      if (!Array.isArray(v) || v.length === 0) continue;
      out[field.name] = v.map((x) => valueToJson(field, x));
    } else {
      if (isDefault(field, v)) continue;
      out[field.name] = valueToJson(field, v);
    }
  }
  return out;
}

function valueFromJson(field: protobuf.Field, v: unknown, path: string): unknown {
  const t = field.resolvedType;
  if (t instanceof protobuf.Enum) {
    if (typeof v === 'number') return t.valuesById[v] ?? v;
    if (typeof v === 'string' && t.values[v] !== undefined) return v;
    throw new FlowJsonError(`${path}: "${String(v)}" is not a ${t.name}`);
  }
  if (t instanceof protobuf.Type) {
    if (t.fullName === '.google.protobuf.Timestamp') {
      if (typeof v === 'string') {
        const ts = parseRfc3339(v);
        if (!ts) throw new FlowJsonError(`${path}: "${v}" is not an RFC 3339 time`);
        return ts;
      }
      return timeFromWire(v as WireTimestamp);
    }
    if (WRAPPERS.has(t.fullName)) {
      const inner = obj(v) ? (v as { value?: unknown }).value : v;
      return { value: /Int64Value$/.test(t.fullName) ? num(inner) : inner };
    }
    if (!obj(v)) throw new FlowJsonError(`${path}: expected an object`);
    return messageFromJson(t, v as Record<string, unknown>, path);
  }
  if (INT64.has(field.type)) return num(v);
  return v;
}

/** protojson (either .proto names or lowerCamelCase, as protojson accepts) to wire form */
export function messageFromJson(type: protobuf.Type, json: Record<string, unknown>, path = type.name): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    const key = camel(field.name);
    const v = json[field.name] ?? json[key];
    if (v === undefined || v === null) continue;
    const p = `${path}.${field.name}`;
    if (field.repeated) {
      if (!Array.isArray(v)) throw new FlowJsonError(`${p}: expected an array`);
      out[key] = v.map((x, i) => valueFromJson(field, x, `${p}[${i}]`));
    } else {
      out[key] = valueFromJson(field, v, p);
    }
  }
  return out;
}

/**
 * Keep the first (or last) `number` flows of a time-ordered list, with the notices
 * (lost events) that fall among them; 0 keeps everything.
 */
export function cutToNumber<T extends { flow?: unknown }>(list: T[], number: number, first: boolean): T[] {
  if (number <= 0) return list;
  const flowIdx: number[] = [];
  list.forEach((r, i) => { if (r.flow) flowIdx.push(i); });
  if (flowIdx.length <= number) return list;
  return first ? list.slice(0, flowIdx[number - 1]! + 1) : list.slice(flowIdx[flowIdx.length - number]!);
}

const responseType = (): protobuf.Type => jsonRoot().lookupType('observer.GetFlowsResponse');
const flowType = (): protobuf.Type => jsonRoot().lookupType('flow.Flow');

/** one `-o json` line: the GetFlowsResponse as Hubble prints it */
export function responseToJson(res: WireGetFlowsResponse): Record<string, unknown> {
  return messageToJson(responseType(), res as Record<string, unknown>);
}

/** a flow as a GetFlowsResponse JSON object */
export function flowToJson(f: Flow): Record<string, unknown> {
  return responseToJson({ flow: flowToWire(f), nodeName: f.nodeName, time: f.time });
}

/** one JSON line: a GetFlowsResponse (`{"flow": ...}`) or a bare Flow */
export function responseFromJson(line: string): WireGetFlowsResponse {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (err) {
    throw new FlowJsonError(`not JSON: ${(err as Error).message}`, { cause: err });
  }
  const o = obj(v);
  if (!o) throw new FlowJsonError('expected a JSON object');
  if ('flow' in o || 'lost_events' in o || 'lostEvents' in o || 'node_status' in o || 'nodeStatus' in o) {
    return messageFromJson(responseType(), o) as WireGetFlowsResponse;
  }
  const flow = messageFromJson(flowType(), o);
  return { flow, nodeName: typeof flow.nodeName === 'string' ? flow.nodeName : '', ...(flow.time ? { time: flow.time as WireTimestamp } : {}) };
}
