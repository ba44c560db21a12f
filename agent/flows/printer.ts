// Flows as text, the way Hubble's printer writes them, so `nodal observe` reads like
// `hubble observe`: compact lines, dict blocks and an aligned table. Times are printed as
// Go's StampMilli in UTC ("Jan _2 15:04:05.000"), as Hubble does.
import { isIP } from 'node:net';
import { eventTypeOf, MessageType, type Flow, type FlowPolicy, type FlowTime } from './flow.ts';
import { RESERVED_IDENTITY_NAMES } from './from-datapath.ts';
import type { WireGetFlowsResponse } from './proto.ts';

export interface PrintOptions {
  /** append the deciding policy to the verdict (Hubble's --print-policy-names) */
  policyNames?: boolean;
  /** print [node] after the time (Hubble's --print-node-name) */
  nodeName?: boolean;
  /** show IPs instead of pod and Service names */
  noIpTranslation?: boolean;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const p2 = (n: number): string => String(n).padStart(2, '0');

/** Go's time.StampMilli in UTC: the day is space-padded, milliseconds truncated */
export function formatTime(t: FlowTime | undefined): string {
  if (!t || (t.seconds === 0 && t.nanos === 0)) return 'N/A';
  const d = new Date(t.seconds * 1000);
  const ms = String(Math.floor(t.nanos / 1e6)).padStart(3, '0');
  return `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())}.${ms}`;
}

/** Cilium's texts for the drop reasons nodal emits (api.DropReason) */
const DROP_TEXT: Readonly<Record<number, string>> = {
  133: 'Policy denied', 139: 'Unsupported L3 protocol', 171: 'Invalid identity', 172: 'Unknown sender',
  181: 'Policy denied by denylist', 189: 'Authentication required',
};

/** Cilium's trace observation point names (api.TraceObservationPoint) */
const TRACE_TEXT = ['to-endpoint', 'to-proxy', 'to-host', 'to-stack', 'to-overlay', 'from-endpoint', 'from-proxy',
  'from-host', 'from-stack', 'from-overlay', 'from-network', 'to-network', 'from-crypto', 'to-crypto'];

function portsOf(f: Flow): [string, string] {
  const p = f.l4?.TCP ?? f.l4?.UDP;
  return p ? [String(p.sourcePort), String(p.destinationPort)] : ['', ''];
}

function hostname(ip: string, port: string, ns: string | undefined, pod: string | undefined, svc: string | undefined, o: PrintOptions): string {
  let host = ip;
  if (!o.noIpTranslation) {
    // path.Join semantics: no slash when the namespace is empty
    if (pod) host = ns ? `${ns}/${pod}` : pod;
    else if (svc) host = ns ? `${ns}/${svc}` : svc;
  }
  if (port !== '' && port !== '0') return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
  return host;
}

/** source and destination as Hubble prints them: ns/pod:port, ns/service:port or ip:port */
export function hostNames(f: Flow, o: PrintOptions = {}): [string, string] {
  const [sp, dp] = portsOf(f);
  const src = f.source;
  const dst = f.destination;
  // no IP (an L7 record without addresses): the pod names are all there is
  const sip = f.IP?.source ?? '';
  const dip = f.IP?.destination ?? '';
  const sns = f.sourceService ? f.sourceService.namespace : src?.namespace;
  const dns = f.destinationService && !dst?.podName ? f.destinationService.namespace : dst?.namespace;
  return [
    hostname(sip, sp, sns, src?.podName, f.sourceService?.name, o),
    hostname(dip, dp, dns, dst?.podName, f.destinationService?.name, o),
  ];
}

function identityText(id: number | undefined): string {
  const n = id ?? 0;
  if (n > 0 && n < 256) return `(${RESERVED_IDENTITY_NAMES[n] ?? n})`;
  return `(ID:${n})`;
}

/** Hubble's TYPE column: http-request, a drop reason, a trace point, policy-verdict:... */
export function flowTypeText(f: Flow): string {
  if (f.l7) {
    const type = (f.l7.type ?? 'UNKNOWN_L7_TYPE').toLowerCase();
    return `${f.l7.http ? 'http' : 'l7'}-${type}`;
  }
  const et = eventTypeOf(f);
  const sub = et.subType ?? 0;
  switch (et.type) {
    case MessageType.DROP: return DROP_TEXT[sub] ?? String(sub);
    case MessageType.TRACE: return TRACE_TEXT[sub] ?? 'unknown trace';
    case MessageType.POLICY_VERDICT: return `policy-verdict:none ${f.trafficDirection}`;
    default: return 'UNKNOWN';
  }
}

function policyList(f: Flow, denied: boolean): FlowPolicy[] {
  const eg = (denied ? f.egressDeniedBy : f.egressAllowedBy) ?? [];
  const ing = (denied ? f.ingressDeniedBy : f.ingressAllowedBy) ?? [];
  if (f.trafficDirection === 'EGRESS') return eg;
  if (f.trafficDirection === 'INGRESS') return ing;
  return [...eg, ...ing];
}

/** the verdict, as ALLOWED/DENIED for policy-verdict events, with `BY name (Kind)` on request */
export function verdictText(f: Flow, o: PrintOptions = {}): string {
  const policyVerdict = eventTypeOf(f).type === MessageType.POLICY_VERDICT;
  const denied = f.verdict === 'DROPPED' || f.verdict === 'ERROR';
  let msg: string = f.verdict;
  if (policyVerdict) {
    if (f.verdict === 'FORWARDED' || f.verdict === 'REDIRECTED') msg = 'ALLOWED';
    else if (denied) msg = 'DENIED';
    else if (f.verdict === 'AUDIT') msg = 'AUDITED';
  }
  if (o.policyNames) {
    const names = policyList(f, denied).filter((p) => p.kind && p.name).map((p) => `${p.name} (${p.kind})`);
    if (names.length > 0) msg += ` BY ${names.join(', ')}`;
  }
  return msg;
}

/** Cilium's L7 HTTP summary: `HTTP/1.1 GET url`, `HTTP/1.1 200 3ms (GET url)` */
function httpSummary(f: Flow): string | undefined {
  const h = f.l7?.http;
  if (!h) return undefined;
  const req = `${h.method ?? ''} ${h.url ?? ''}`;
  if (f.l7!.type === 'REQUEST') return `${h.protocol ?? ''} ${req}`;
  if (f.l7!.type === 'RESPONSE') return `${h.protocol ?? ''} ${h.code ?? 0} ${Math.floor((f.l7!.latencyNs ?? 0) / 1e6)}ms (${req})`;
  return undefined;
}

function summaryText(f: Flow): string {
  const http = httpSummary(f);
  const own = f.summary ?? '';
  if (http) return own && own !== http ? `${http}; ${own}` : http;
  if (own) return own;
  return f.l4?.TCP ? 'TCP' : f.l4?.UDP ? 'UDP' : '';
}

/** one compact line (no newline) */
export function formatCompact(f: Flow, o: PrintOptions = {}): string {
  let [src, dst] = hostNames(f, o);
  let srcId = identityText(f.source?.identity);
  let dstId = identityText(f.destination?.identity);
  let arrow = '->';
  if (f.isReply === undefined) {
    arrow = '<>';
  } else if (f.isReply) {
    // a reply is shown from the requester's side, pointing back
    [src, dst] = [dst, src];
    [srcId, dstId] = [dstId, srcId];
    arrow = '<-';
  }
  const node = o.nodeName ? ` [${f.nodeName}]` : '';
  return `${formatTime(f.time)}${node}: ${src} ${srcId} ${arrow} ${dst} ${dstId} ${flowTypeText(f)} ${verdictText(f, o)} (${summaryText(f)})`;
}

export const DICT_SEPARATOR = '------------';

/** one dict block (no trailing newline); pass `first` false to get the separator above it */
export function formatDict(f: Flow, o: PrintOptions = {}, first = true): string {
  const [src, dst] = hostNames(f, o);
  const lines = first ? [] : [DICT_SEPARATOR];
  lines.push(`  TIMESTAMP: ${formatTime(f.time)}`);
  if (o.nodeName) lines.push(`       NODE: ${f.nodeName}`);
  lines.push(
    `     SOURCE: ${src}`,
    `DESTINATION: ${dst}`,
    `       TYPE: ${flowTypeText(f)}`,
    `    VERDICT: ${verdictText(f, o)}`,
    `    SUMMARY: ${summaryText(f)}`,
  );
  return lines.join('\n');
}

/** rows of the table output, header first; align them with alignTable */
export function formatTableRows(flows: Flow[], o: PrintOptions = {}): string[][] {
  const header = ['TIMESTAMP', ...(o.nodeName ? ['NODE'] : []), 'SOURCE', 'DESTINATION', 'TYPE', 'VERDICT', 'SUMMARY'];
  const rows = flows.map((f) => {
    const [src, dst] = hostNames(f, o);
    return [formatTime(f.time), ...(o.nodeName ? [f.nodeName] : []), src, dst, flowTypeText(f), verdictText(f, o), summaryText(f)];
  });
  return [header, ...rows];
}

/** Go tabwriter(minwidth 2, padding 3): every column but the last padded to its widest cell */
export function alignTable(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => { widths[i] = Math.max(widths[i] ?? 2, c.length); });
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3))).join('')).join('\n');
}

/** a lost-events notice: loss is printed, never silent */
export function formatLost(res: WireGetFlowsResponse): string {
  return `EVENTS LOST: ${res.lostEvents?.numEventsLost ?? 0} events lost on node ${res.nodeName ?? ''}`;
}

/** a node status line (stderr), as Hubble prints it; undefined for routine connects */
export function formatNodeStatus(res: WireGetFlowsResponse, verbose = false): string | undefined {
  const s = res.nodeStatus;
  if (!s) return undefined;
  const names = s.nodeNames ?? [];
  const t = res.time ? { seconds: Number(res.time.seconds ?? 0), nanos: Number(res.time.nanos ?? 0) } : undefined;
  const prefix = `${formatTime(t)} [${res.nodeName ?? ''}]`;
  switch (s.stateChange) {
    case 'NODE_CONNECTED': return verbose ? `${prefix}: Receiving flows from ${names.length} nodes: ${names.join(', ')}` : undefined;
    case 'NODE_UNAVAILABLE': return `${prefix}: ${names.length} nodes are unavailable: ${names.join(', ')}${s.message ? ` (${s.message})` : ''}`;
    case 'NODE_GONE': return `${prefix}: ${names.length} nodes removed from cluster: ${names.join(', ')}`;
    case 'NODE_ERROR': return `${prefix}: Error ${JSON.stringify(s.message ?? '')} on ${names.length} nodes: ${names.join(', ')}`;
    default: return verbose ? `${prefix}: unknown node status event: ${JSON.stringify(s)}` : undefined;
  }
}
