// Flows as text, the way Hubble's printer (cilium/cilium hubble/pkg/printer) writes them,
// so `nodal observe` reads like `hubble observe`: compact lines, dict blocks, an aligned
// table, lost-event notices and relay node status. Times are UTC; StampMilli
// ("Jan _2 15:04:05.000") unless another of Hubble's --time-format names is asked for.
// Colours are Hubble's (hosts cyan, ports yellow, identities magenta, verdicts green, red
// or yellow) and, as there, every other escape character a flow carries is defused.
import { isIP } from 'node:net';
import { eventTypeOf, MessageType, type Flow, type FlowPolicy, type FlowTime } from './flow.ts';
import { RESERVED_IDENTITY_NAMES } from './from-datapath.ts';
import type { WireGetFlowsResponse } from './proto.ts';

export interface PrintOptions {
  /** append the deciding policy to the verdict (Hubble's --print-policy-names) */
  policyNames?: boolean;
  /** print the node each flow was seen on (Hubble's --print-node-name) */
  nodeName?: boolean;
  /** show IPs instead of pod and Service names */
  noIpTranslation?: boolean;
  /** ANSI colours as Hubble's; the caller decides (--color auto|always|never) */
  color?: boolean;
  /** one of Hubble's --time-format names; StampMilli when absent or unknown (as Hubble) */
  timeFormat?: string;
}

/** Cilium's monitor message type of a policy verdict event (CILIUM_NOTIFY_POLICY_VERDICT) */
const POLICY_VERDICT_TYPE = MessageType.POLICY_VERDICT;

// --- colours (fatih/color sequences, as Hubble prints them) ---

const SGR = { red: 31, green: 32, yellow: 33, magenta: 35, cyan: 36 } as const;
const paint = (o: PrintOptions, c: keyof typeof SGR, s: string): string => (o.color ? `\x1b[${SGR[c]}m${s}\x1b[0m` : s);
/** our own colour sequences survive; any other ESC from a flow becomes ^[ and CR becomes \r */
const ALLOWED_SGR = /\x1b(\[(?:3[1-6]|0)m)?/g;

/** Hubble's terminal escaper: flows carry URLs and names chosen by whoever sent them */
function escapeTerminal(s: string, color: boolean | undefined): string {
  if (!s.includes('\x1b') && !s.includes('\r')) return s;
  return s.replace(ALLOWED_SGR, (m: string, seq: string | undefined) => (color && seq ? m : `^[${seq ?? ''}`)).replace(/\r/g, '\\r');
}

// --- time ---

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const p2 = (n: number): string => String(n).padStart(2, '0');

/** Go's ".999" fractions: up to `digits`, trailing zeros dropped, nothing when zero */
function trimmedFraction(nanos: number, digits: number): string {
  const f = String(nanos).padStart(9, '0').slice(0, digits).replace(/0+$/, '');
  return f === '' ? '' : `.${f}`;
}

/**
 * A flow time in UTC, laid out as Hubble's --time-format names it: StampMilli (default;
 * day space-padded, milliseconds truncated), YearMonthDay, YearMonthDayHour,
 * YearMonthDayHourMinute, RFC3339, RFC3339Milli, RFC3339Micro, RFC3339Nano, RFC1123Z.
 */
export function formatTime(t: FlowTime | undefined, format = 'StampMilli'): string {
  if (!t || (t.seconds === 0 && t.nanos === 0)) return 'N/A';
  const d = new Date(t.seconds * 1000);
  const date = `${d.getUTCFullYear()}-${p2(d.getUTCMonth() + 1)}-${p2(d.getUTCDate())}`;
  const hms = `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())}`;
  switch (format.toLowerCase()) {
    case 'yearmonthday': return date;
    case 'yearmonthdayhour': return `${date}T${p2(d.getUTCHours())}Z`;
    case 'yearmonthdayhourminute': return `${date}T${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}Z`;
    case 'rfc3339': return `${date}T${hms}Z`;
    case 'rfc3339milli': return `${date}T${hms}${trimmedFraction(t.nanos, 3)}Z`;
    case 'rfc3339micro': return `${date}T${hms}${trimmedFraction(t.nanos, 6)}Z`;
    case 'rfc3339nano': return `${date}T${hms}${trimmedFraction(t.nanos, 9)}Z`;
    case 'rfc1123z': return `${DAYS[d.getUTCDay()]}, ${p2(d.getUTCDate())} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${hms} +0000`;
    default: {
      const ms = String(Math.floor(t.nanos / 1e6)).padStart(3, '0');
      return `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ${hms}.${ms}`;
    }
  }
}

// --- endpoints ---

/** Cilium's texts for the drop reasons nodal emits (api.DropReason) */
const DROP_TEXT: Readonly<Record<number, string>> = {
  133: 'Policy denied', 139: 'Unsupported L3 protocol', 171: 'Invalid identity', 172: 'Unknown sender',
  181: 'Policy denied by denylist', 189: 'Authentication required',
};

/** Cilium's trace observation point names (api.TraceObservationPoint), by sub-type */
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
  if (port !== '' && port !== '0') {
    const p = paint(o, 'yellow', port);
    return paint(o, 'cyan', isIP(host) === 6 ? `[${host}]:${p}` : `${host}:${p}`);
  }
  return paint(o, 'cyan', host);
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

function identityText(id: number | undefined, o: PrintOptions): string {
  const n = id ?? 0;
  if (n > 0 && n < 256) return paint(o, 'magenta', `(${RESERVED_IDENTITY_NAMES[n] ?? n})`);
  return paint(o, 'magenta', `(ID:${n})`);
}

// --- type, verdict, summary ---

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
    case MessageType.TRACE: return TRACE_TEXT[sub] ?? String(sub);
    // nodal fills no policy_match_type: Cilium's name for 0 is "none"
    case POLICY_VERDICT_TYPE: return `policy-verdict:none ${f.trafficDirection}`;
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

/** Hubble's formatPolicyNames: " BY name (Kind), ..." for policies that have both */
function policyNames(list: FlowPolicy[]): string {
  const names = list.filter((p) => p.kind && p.name).map((p) => `${p.name} (${p.kind})`);
  return names.length > 0 ? ` BY ${names.join(', ')}` : '';
}

/**
 * The verdict, as ALLOWED/DENIED/AUDITED for policy-verdict events, coloured as Hubble's.
 * With policyNames, Hubble names the policies of policy-verdict events only; nodal's
 * verdicts are drop and trace events that carry the deciding policy, so it names them
 * for every flow that has one (an audit names the policy that would have denied).
 */
export function verdictText(f: Flow, o: PrintOptions = {}): string {
  const policyVerdict = eventTypeOf(f).type === POLICY_VERDICT_TYPE;
  let msg: string = f.verdict;
  let color: keyof typeof SGR | undefined;
  let denied = false;
  switch (f.verdict) {
    case 'FORWARDED': case 'REDIRECTED':
      if (policyVerdict) msg = 'ALLOWED';
      color = 'green';
      break;
    case 'DROPPED': case 'ERROR':
      if (policyVerdict) msg = 'DENIED';
      color = 'red';
      denied = true;
      break;
    case 'AUDIT':
      if (policyVerdict) msg = 'AUDITED';
      color = 'yellow';
      denied = true;
      break;
    default:
      // TRACED and TRANSLATED are yellow in Hubble; nodal emits neither
      if ((f.verdict as string) === 'TRACED' || (f.verdict as string) === 'TRANSLATED') color = 'yellow';
  }
  if (o.policyNames) msg += policyNames(policyList(f, denied));
  return color ? paint(o, color, msg) : msg;
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

// --- the formats ---

/** one compact line (no newline) */
export function formatCompact(f: Flow, o: PrintOptions = {}): string {
  let [src, dst] = hostNames(f, o);
  let srcId = identityText(f.source?.identity, o);
  let dstId = identityText(f.destination?.identity, o);
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
  return escapeTerminal(`${formatTime(f.time, o.timeFormat)}${node}: ${src} ${srcId} ${arrow} ${dst} ${dstId} ${flowTypeText(f)} ${verdictText(f, o)} (${summaryText(f)})`, o.color);
}

export const DICT_SEPARATOR = '------------';

/** one dict block (no trailing newline); pass `first` false to get the separator above it */
export function formatDict(f: Flow, o: PrintOptions = {}, first = true): string {
  const [src, dst] = hostNames(f, o);
  const lines = first ? [] : [DICT_SEPARATOR];
  lines.push(`  TIMESTAMP: ${formatTime(f.time, o.timeFormat)}`);
  if (o.nodeName) lines.push(`       NODE: ${f.nodeName}`);
  lines.push(
    `     SOURCE: ${src}`,
    `DESTINATION: ${dst}`,
    `       TYPE: ${flowTypeText(f)}`,
    `    VERDICT: ${verdictText(f, o)}`,
    `    SUMMARY: ${summaryText(f)}`,
  );
  return escapeTerminal(lines.join('\n'), o.color);
}

function lostTime(res: WireGetFlowsResponse): FlowTime | undefined {
  return res.time ? { seconds: Number(res.time.seconds ?? 0), nanos: Number(res.time.nanos ?? 0) } : undefined;
}

function lostParts(res: WireGetFlowsResponse): { source: string; cpu: number; count: number } {
  const l = res.lostEvents;
  return {
    source: String(l?.source ?? 'UNKNOWN_LOST_EVENT_SOURCE'),
    // an Int32Value: absent reads as 0, as Go's GetValue() does
    cpu: Number(l?.cpu?.value ?? 0),
    count: Number(l?.numEventsLost ?? 0),
  };
}

/**
 * Rows of the table output, header first; align them with alignTable. Lost-event notices
 * among the flows become Hubble's EVENTS LOST rows: loss is printed, never silent.
 */
export function formatTableRows(items: Array<Flow | WireGetFlowsResponse>, o: PrintOptions = {}): string[][] {
  const plain: PrintOptions = { ...o, color: false };
  const header = ['TIMESTAMP', ...(o.nodeName ? ['NODE'] : []), 'SOURCE', 'DESTINATION', 'TYPE', 'VERDICT', 'SUMMARY'];
  const rows = items.map((item) => {
    if ('lostEvents' in item && item.lostEvents) {
      const l = lostParts(item);
      return [formatTime(lostTime(item), o.timeFormat), ...(o.nodeName ? [item.nodeName ?? ''] : []), l.source, '-', 'EVENTS LOST', '-', `CPU(${l.cpu}) - ${l.count}`];
    }
    const f = item as Flow;
    const [src, dst] = hostNames(f, plain);
    return [formatTime(f.time, o.timeFormat), ...(o.nodeName ? [f.nodeName] : []), src, dst, flowTypeText(f), verdictText(f, plain), summaryText(f)]
      .map((c) => escapeTerminal(c, false));
  });
  return [header, ...rows];
}

/** Go tabwriter(minwidth 2, padding 3): every column but the last padded to its widest cell */
export function alignTable(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => { widths[i] = Math.max(widths[i] ?? 2, c.length + 3); });
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('')).join('\n');
}

/**
 * A lost-events notice, as Hubble prints one: a compact line
 * (`<time> EVENTS LOST: <source> CPU(<n>) <count>`) or, for dict output, a block (pass
 * `first` false to get the separator above it). Loss is printed, never silent.
 */
export function formatLost(res: WireGetFlowsResponse, o: PrintOptions = {}, style: 'compact' | 'dict' = 'compact', first = true): string {
  const l = lostParts(res);
  const time = formatTime(lostTime(res), o.timeFormat);
  if (style === 'compact') return `${time} EVENTS LOST: ${l.source} CPU(${l.cpu}) ${l.count}`;
  const lines = first ? [] : [DICT_SEPARATOR];
  lines.push(`  TIMESTAMP: ${time}`);
  if (o.nodeName) lines.push(`       NODE: ${res.nodeName ?? ''}`);
  lines.push(`     SOURCE: ${l.source}`, '       TYPE: EVENTS LOST', '    VERDICT: -', `    SUMMARY: CPU(${l.cpu}) - ${l.count}`);
  return lines.join('\n');
}

/** Hubble's joinWithCutOff: node names up to ~50 characters, then "(and N more)" */
const NODE_NAMES_CUTOFF = 50;
function joinNodeNames(names: string[]): string {
  let len = 0;
  let end = names.length;
  for (let i = 0; i < names.length; i++) {
    len += names[i]!.length + 2;
    if (len > NODE_NAMES_CUTOFF && i > 0) { end = i; break; }
  }
  const joined = names.slice(0, end).join(', ');
  return end === names.length ? joined : `${joined} (and ${names.length - end} more)`;
}

/**
 * A relay node status event for stderr, as Hubble prints it: a line (compact and table
 * output) or a block (dict; pass `first` false for the separator above it). Undefined for
 * the routine ones (nodes connected or gone) unless `verbose` (Hubble's --debug).
 */
export function formatNodeStatus(res: WireGetFlowsResponse, verbose = false, o: PrintOptions = {}, style: 'compact' | 'dict' = 'compact', first = true): string | undefined {
  const s = res.nodeStatus;
  if (!s) return undefined;
  const state = String(s.stateChange ?? 'UNKNOWN_NODE_STATE');
  if (!verbose && state !== 'NODE_UNAVAILABLE' && state !== 'NODE_ERROR') return undefined;
  const names = s.nodeNames ?? [];
  const time = formatTime(lostTime(res), o.timeFormat);
  if (style === 'dict') {
    const lines = first ? [] : [DICT_SEPARATOR];
    lines.push(`  TIMESTAMP: ${time}`, `      STATE: ${state}`, `      NODES: ${joinNodeNames(names)}`,
      `    MESSAGE: ${s.message ? JSON.stringify(s.message) : 'N/A'}`);
    return escapeTerminal(lines.join('\n'), false);
  }
  const prefix = `${time} [${res.nodeName ?? ''}]`;
  const list = joinNodeNames(names);
  switch (state) {
    case 'NODE_CONNECTED': return `${prefix}: Receiving flows from ${names.length} nodes: ${list}`;
    // nodal adds why a node is unavailable, which Hubble's relay does not tell
    case 'NODE_UNAVAILABLE': return escapeTerminal(`${prefix}: ${names.length} nodes are unavailable: ${list}${s.message ? ` (${s.message})` : ''}`, false);
    case 'NODE_GONE': return `${prefix}: ${names.length} nodes removed from cluster: ${list}`;
    case 'NODE_ERROR': return escapeTerminal(`${prefix}: Error ${JSON.stringify(s.message ?? '')} on ${names.length} nodes: ${list}`, false);
    default: return `${prefix}: unknown node status event: ${JSON.stringify(s)}`;
  }
}
