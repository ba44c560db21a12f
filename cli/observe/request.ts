// `nodal observe` flags into a GetFlowsRequest, the way Hubble's CLI builds one
// (cilium/cilium hubble/cmd/observe/flows_filter.go), so the same command line asks the
// same question of nodal as of Hubble:
//   - filters are applied in the order given; `--not` sends the next one to the
//     blacklist (each negated filter needs its own --not);
//   - an either-direction flag (--pod, --ip, --label, ...) fills a left (source) and a
//     right (destination) filter, and every other flag is added to both, so the request
//     means "left OR right"; when both come out equal only one is sent;
//   - namespaces (-n, --from-namespace, --to-namespace, -A) are applied last, to the pod
//     and Service filters (bare names gain the namespace), or stand alone as "ns/";
//   - flags that cannot mean anything together are refused (--ip with --pod, -n with
//     --to-pod, --label with --from-label, ...), with Hubble's wording.
// A bare pod or Service name is left bare: the server reads it as namespace "default".
import { isDeepStrictEqual } from 'node:util';
import YAML from 'yaml';
import {
  compileFilters, jsonRoot, messageFromJson, messageToJson, parseRfc3339, RESERVED_IDENTITY_NAMES, timeFromMs,
  type FlowFilter, type FlowTime, type WireGetFlowsRequest,
} from '../../agent/flows/index.ts';

export class ObserveUsageError extends Error {
  readonly code = 'NODAL_ERR_OBSERVE_USAGE';
  constructor(message: string) {
    super(message);
    this.name = 'ObserveUsageError';
  }
}

/** one filter flag as given on the command line, in order (`not` has no value) */
export interface FilterOp {
  name: string;
  value?: string;
}

/** what decides how many flows and from when */
export interface SelectOptions {
  follow?: boolean;
  last?: string;
  first?: string;
  all?: boolean;
  since?: string;
  until?: string;
  /** reading a file: no default --last (as Hubble) */
  inputFile?: string;
  /** raw FlowFilters as JSON (Hubble's --allowlist / --denylist) */
  allowlist?: string[];
  denylist?: string[];
}

/** Hubble prints the last 20 flows when asked for nothing in particular */
export const DEFAULT_LAST = 20;

// --- the flags ---

/** value flags that fill a left (source) and a right (destination) filter */
const EITHER: Record<string, [keyof FlowFilter, keyof FlowFilter]> = {
  pod: ['sourcePod', 'destinationPod'], ip: ['sourceIp', 'destinationIp'], label: ['sourceLabel', 'destinationLabel'],
  identity: ['sourceIdentity', 'destinationIdentity'], port: ['sourcePort', 'destinationPort'],
  service: ['sourceService', 'destinationService'],
};
/** value flags that set one field on every filter */
const ONE_SIDED: Record<string, keyof FlowFilter> = {
  'from-pod': 'sourcePod', 'to-pod': 'destinationPod', 'from-ip': 'sourceIp', 'to-ip': 'destinationIp',
  'from-label': 'sourceLabel', 'to-label': 'destinationLabel', 'from-identity': 'sourceIdentity', 'to-identity': 'destinationIdentity',
  'from-port': 'sourcePort', 'to-port': 'destinationPort', 'from-service': 'sourceService', 'to-service': 'destinationService',
  verdict: 'verdict', type: 'eventType', protocol: 'protocol', 'http-status': 'httpStatusCode', 'http-method': 'httpMethod',
  'http-path': 'httpPath', 'http-url': 'httpUrl', 'http-header': 'httpHeader', 'node-name': 'nodeName',
  'traffic-direction': 'trafficDirection', 'drop-reason-desc': 'dropReasonDesc', uuid: 'uuid', 'trace-id': 'traceId',
  'tcp-flags': 'tcpFlags', 'ip-version': 'ipVersion', ipv4: 'ipVersion', ipv6: 'ipVersion',
};
const NAMESPACE_FLAGS = ['namespace', 'from-namespace', 'to-namespace'];
/** flags without a value (commander reports them as true) */
export const SWITCH_FILTER_FLAGS = ['all-namespaces', 'from-all-namespaces', 'to-all-namespaces', 'ipv4', 'ipv6'];
export const FILTER_FLAGS = [...Object.keys(EITHER), ...Object.keys(ONE_SIDED), ...NAMESPACE_FLAGS, ...SWITCH_FILTER_FLAGS]
  .filter((f, i, all) => all.indexOf(f) === i);

/** Hubble's conflict groups, as far as nodal has the flags: any two of a group are refused */
const CONFLICTS: string[][] = [
  ['from-ip', 'ip', 'from-namespace', 'namespace', 'from-all-namespaces', 'all-namespaces'],
  ['from-ip', 'ip', 'from-pod', 'pod'],
  ['to-ip', 'ip', 'to-namespace', 'namespace', 'to-all-namespaces', 'all-namespaces'],
  ['to-ip', 'ip', 'to-pod', 'pod'],
  ['to-pod', 'namespace', 'all-namespaces'],
  ['from-pod', 'namespace', 'all-namespaces'],
  ['to-service', 'namespace', 'all-namespaces'],
  ['from-service', 'namespace', 'all-namespaces'],
  ['label', 'from-label'], ['label', 'to-label'],
  ['service', 'from-service'], ['service', 'to-service'],
  ['port', 'to-port'], ['port', 'from-port'],
  ['identity', 'to-identity'], ['identity', 'from-identity'],
];

/** Cilium monitor message types by Hubble's --type names (pkg/monitor/api MessageTypeNames) */
export const EVENT_TYPES: Readonly<Record<string, number>> = {
  drop: 1, debug: 2, capture: 3, trace: 4, 'policy-verdict': 5, recorder: 6, 'trace-sock': 7, l7: 129, agent: 130,
};
/** Cilium trace observation points, in sub-type order (api.TraceObservationPoints) */
const TRACE_POINTS = ['to-endpoint', 'to-proxy', 'to-host', 'to-stack', 'to-overlay', 'from-endpoint', 'from-proxy',
  'from-host', 'from-stack', 'from-overlay', 'from-network', 'to-network', 'from-crypto', 'to-crypto'];
/** Hubble's --verdict values */
const VERDICTS = ['FORWARDED', 'DROPPED', 'AUDIT', 'REDIRECTED', 'ERROR', 'TRACED', 'TRANSLATED'];
const TCP_FLAGS = ['SYN', 'FIN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'];

// --- value parsing ---

function eventTypeFilter(v: string): { type: number; matchSubType?: boolean; subType?: number } {
  const colon = v.indexOf(':');
  const t = colon < 0 ? v : v.slice(0, colon);
  const sub = colon < 0 ? undefined : v.slice(colon + 1);
  const type = EVENT_TYPES[t] ?? (/^\d+$/.test(t) ? Number(t) : undefined);
  if (type === undefined) {
    throw new ObserveUsageError(`--type: unable to parse type '${t}', not a known type name (${Object.keys(EVENT_TYPES).join(', ')}) and not a number`);
  }
  if (sub === undefined) return { type };
  const named = type === EVENT_TYPES.trace ? TRACE_POINTS.indexOf(sub) : -1;
  if (named >= 0) return { type, matchSubType: true, subType: named };
  if (!/^\d+$/.test(sub)) {
    throw new ObserveUsageError(`--type: unable to parse event sub-type '${sub}', not a known sub-type name and not a number`);
  }
  return { type, matchSubType: true, subType: Number(sub) };
}

function identityOf(flag: string, v: string): number {
  const reserved = Object.entries(RESERVED_IDENTITY_NAMES).find(([, name]) => name === v);
  if (reserved) return Number(reserved[0]);
  if (!/^\d+$/.test(v) || Number(v) > 0xffffffff) {
    throw new ObserveUsageError(`--${flag}: invalid security identity "${v}", expected one of ${Object.values(RESERVED_IDENTITY_NAMES).join(', ')} or a numeric value`);
  }
  return Number(v);
}

function verdictOf(v: string): string {
  const u = v.toUpperCase();
  if (!VERDICTS.includes(u)) throw new ObserveUsageError(`invalid --verdict value: ${v} (one of ${VERDICTS.join(', ')})`);
  return u;
}

function dropReasonOf(v: string): string {
  if (v === '') throw new ObserveUsageError('empty --drop-reason-desc value');
  const names = jsonRoot().lookupEnum('flow.DropReason').values;
  const u = v.toUpperCase();
  if (names[u] === undefined) throw new ObserveUsageError(`invalid --drop-reason-desc value: ${v} (e.g. POLICY_DENIED, POLICY_DENY)`);
  return u;
}

function trafficDirectionOf(v: string): string {
  const l = v.toLowerCase();
  if (l !== 'ingress' && l !== 'egress') throw new ObserveUsageError(`--traffic-direction: ${l}: invalid traffic direction, expected ingress or egress`);
  return l.toUpperCase();
}

function tcpFlagsOf(v: string): Record<string, boolean> {
  const out: Record<string, boolean> = {};
  for (const f of v.split(',')) {
    const u = f.toUpperCase();
    if (!TCP_FLAGS.includes(u)) throw new ObserveUsageError(`--tcp-flags: unknown tcp flag: ${f}`);
    out[u] = true;
  }
  return out;
}

function ipVersionOf(v: string): string {
  switch (v.toLowerCase()) {
    case '4': case 'v4': case 'ipv4': case 'ip4': return 'IPv4';
    case '6': case 'v6': case 'ipv6': case 'ip6': return 'IPv6';
    // Hubble: anything else means "not IP"
    default: return 'IP_NOT_USED';
  }
}

function httpHeaderOf(v: string): { key: string; value: string } {
  const colon = v.indexOf(':');
  if (colon < 0) throw new ObserveUsageError(`--http-header: invalid value "${v}", expected name:value`);
  return { key: v.slice(0, colon), value: v.slice(colon + 1) };
}

function valueFor(flag: string, v: string): unknown {
  switch (flag) {
    case 'identity': case 'from-identity': case 'to-identity': return identityOf(flag, v);
    case 'type': return eventTypeFilter(v);
    case 'verdict': return verdictOf(v);
    case 'drop-reason-desc': return dropReasonOf(v);
    case 'traffic-direction': return trafficDirectionOf(v);
    case 'tcp-flags': return tcpFlagsOf(v);
    case 'ip-version': return ipVersionOf(v);
    case 'ipv4': return 'IPv4';
    case 'ipv6': return 'IPv6';
    case 'http-header': return httpHeaderOf(v);
    default: return v;
  }
}

// --- the filter tracker (Hubble's filterTracker) ---

type Filter = Record<string, unknown[]>;

function namespaceOf(name: string): string {
  const slash = name.indexOf('/');
  return slash < 0 ? '' : name.slice(0, slash);
}

/** bare names get each namespace; names that carry one keep it */
function withNamespaces(names: unknown[] | undefined, nss: string[]): unknown[] | undefined {
  if (!names || names.length === 0 || nss.length === 0) return names;
  const out: string[] = [];
  for (const n of names as string[]) {
    if (n.includes('/')) out.push(n);
    else for (const ns of nss) out.push(`${ns}/${n}`);
  }
  return out;
}

function applyNamespaces(f: Filter, nss: string[], side: 'source' | 'destination'): void {
  const pod = side === 'source' ? 'sourcePod' : 'destinationPod';
  const svc = side === 'source' ? 'sourceService' : 'destinationService';
  // a namespace alone is the whole namespace: "ns/"
  if (!f[pod]?.length && !f[svc]?.length) f[pod] = [''];
  const pods = withNamespaces(f[pod], nss);
  const svcs = withNamespaces(f[svc], nss);
  if (pods) f[pod] = pods;
  if (svcs) f[svc] = svcs;
}

class FilterTracker {
  private left: Filter | undefined;
  private right: Filter | undefined;
  private ns: string[] = [];
  private srcNs: string[] = [];
  private dstNs: string[] = [];
  private readonly changed: string[] = [];

  private side(which: 'left' | 'right'): Filter {
    return (this[which] ??= {});
  }
  private push(f: Filter, key: string, value: unknown): void {
    (f[key] ??= []).push(value);
  }

  set(flag: string, raw: string): void {
    if (!this.changed.includes(flag)) this.changed.push(flag);
    this.checkConflicts();
    const value = valueFor(flag, raw);
    const either = EITHER[flag];
    if (either) {
      this.push(this.side('left'), either[0], value);
      this.push(this.side('right'), either[1], value);
    } else if (ONE_SIDED[flag]) {
      this.push(this.side('left'), ONE_SIDED[flag], value);
      this.push(this.side('right'), ONE_SIDED[flag], value);
    } else if (flag === 'namespace') this.ns.push(raw);
    else if (flag === 'from-namespace') this.srcNs.push(raw);
    else if (flag === 'to-namespace') this.dstNs.push(raw);
    // "any namespace": pod names match in every namespace ("/name"), "/" is any pod
    else if (flag === 'all-namespaces') this.ns.push('');
    else if (flag === 'from-all-namespaces') this.srcNs.push('');
    else if (flag === 'to-all-namespaces') this.dstNs.push('');
    else throw new ObserveUsageError(`unknown filter flag --${flag}`);
    this.checkNamespaces(this.left);
    this.checkNamespaces(this.right);
  }

  private checkConflicts(): void {
    for (const group of CONFLICTS) {
      for (const flag of group) {
        if (!this.changed.includes(flag)) continue;
        const other = group.find((c) => c !== flag && this.changed.includes(c));
        if (other) throw new ObserveUsageError(`filters --${flag} and --${other} cannot be combined`);
      }
    }
  }

  private checkNamespaces(f: Filter | undefined): void {
    if (!f) return;
    const conflicts = (nss: string[], names: unknown[] | undefined): void => {
      for (const ns of nss) {
        for (const n of (names ?? []) as string[]) {
          const nn = namespaceOf(n);
          if (nn !== '' && nn !== ns) throw new ObserveUsageError(`namespace conflict: "${ns}" does not contain "${n}"`);
        }
      }
    };
    conflicts(this.ns, f.sourcePod); conflicts(this.ns, f.sourceService);
    conflicts(this.ns, f.destinationPod); conflicts(this.ns, f.destinationService);
    conflicts(this.srcNs, f.sourcePod); conflicts(this.srcNs, f.sourceService);
    conflicts(this.dstNs, f.destinationPod); conflicts(this.dstNs, f.destinationService);
    for (const [pods, svcs] of [[f.sourcePod, f.sourceService], [f.destinationPod, f.destinationService]] as const) {
      for (const p of (pods ?? []) as string[]) {
        const podNs = namespaceOf(p);
        if (podNs === '') continue;
        for (const s of (svcs ?? []) as string[]) {
          if (namespaceOf(s) !== podNs) throw new ObserveUsageError(`namespace of service "${s}" conflicts with pod "${p}"`);
        }
      }
    }
  }

  /** the filters this tracker stands for: none, one, or a left and a right */
  flowFilters(): FlowFilter[] {
    if (!this.left && !this.right && this.ns.length === 0 && this.srcNs.length === 0 && this.dstNs.length === 0) return [];
    const left = structuredClone(this.left ?? {});
    const right = structuredClone(this.right ?? {});
    if (this.dstNs.length > 0) { applyNamespaces(left, this.dstNs, 'destination'); applyNamespaces(right, this.dstNs, 'destination'); }
    if (this.srcNs.length > 0) { applyNamespaces(left, this.srcNs, 'source'); applyNamespaces(right, this.srcNs, 'source'); }
    if (this.ns.length > 0) { applyNamespaces(left, this.ns, 'source'); applyNamespaces(right, this.ns, 'destination'); }
    return (isDeepStrictEqual(left, right) ? [left] : [left, right]) as FlowFilter[];
  }
}

/** whitelist and blacklist from the filter flags, in order */
export function filtersFromOps(ops: FilterOp[]): { whitelist: FlowFilter[]; blacklist: FlowFilter[] } {
  const white = new FilterTracker();
  const black = new FilterTracker();
  let negate = false;
  for (const op of ops) {
    if (op.name === 'not') {
      if (negate) throw new ObserveUsageError('consecutive --not statements');
      negate = true;
      continue;
    }
    (negate ? black : white).set(op.name, op.value ?? '');
    negate = false;
  }
  if (negate) throw new ObserveUsageError('trailing --not found in the arguments');
  return { whitelist: white.flowFilters(), blacklist: black.flowFilters() };
}

function rawFilters(flag: string, values: string[] | undefined): FlowFilter[] {
  const type = jsonRoot().lookupType('flow.FlowFilter');
  return (values ?? []).map((v) => {
    let json: unknown;
    try {
      json = JSON.parse(v);
    } catch (err) {
      throw new ObserveUsageError(`invalid --${flag} flag: failed to decode '${v}': ${(err as Error).message}`);
    }
    if (!json || typeof json !== 'object' || Array.isArray(json)) throw new ObserveUsageError(`invalid --${flag} flag: '${v}' is not a JSON FlowFilter object`);
    try {
      return messageFromJson(type, json as Record<string, unknown>, 'FlowFilter') as FlowFilter;
    } catch (err) {
      throw new ObserveUsageError(`invalid --${flag} flag: ${(err as Error).message}`);
    }
  });
}

/** the filters of a request as Hubble's --print-raw-filters shows them (YAML of JSON strings) */
export function rawFiltersYaml(req: WireGetFlowsRequest): string {
  const type = jsonRoot().lookupType('flow.FlowFilter');
  const json = (list: object[] | undefined): string[] => (list ?? []).map((f) => JSON.stringify(messageToJson(type, f as Record<string, unknown>)));
  const doc: Record<string, string[]> = {};
  const allow = json(req.whitelist);
  const deny = json(req.blacklist);
  if (allow.length > 0) doc.allowlist = allow;
  if (deny.length > 0) doc.denylist = deny;
  return allow.length + deny.length === 0 ? '{}\n' : YAML.stringify(doc, { indent: 4, defaultStringType: 'QUOTE_SINGLE', defaultKeyType: 'PLAIN' });
}

// --- times ---

/** Go's time.ParseDuration syntax: 300ms, 1.5h, 2h45m, -1m; "0" alone */
const GO_DURATION = /^[-+]?(?:0|(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)$/;
const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, μs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** a Go-style duration in milliseconds, or undefined when it is not one */
export function parseGoDuration(v: string): number | undefined {
  if (!GO_DURATION.test(v)) return undefined;
  let ms = 0;
  for (const m of v.matchAll(/(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return v.startsWith('-') ? -ms : ms;
}

const MONTH_NAMES = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function offsetMinutes(z: string): number {
  if (z === 'Z' || z === 'z') return 0;
  const m = /^([+-])(\d{2}):?(\d{2})$/.exec(z)!;
  return (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3]));
}

/** a UTC time from fields, or undefined when a field is out of range (Go refuses those too) */
function utcTime(y: number, mo: number, d: number, h: number, mi: number, s: number, offsetMin: number): FlowTime | undefined {
  const ms = Date.UTC(y, mo - 1, d, h, mi, s);
  const back = new Date(ms);
  if (back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || h > 23 || mi > 59 || s > 59) return undefined;
  return { seconds: ms / 1000 - offsetMin * 60, nanos: 0 };
}

/** Hubble's layouts other than RFC 3339: 2006-01-02, 2006-01-02T15Z07:00, 2006-01-02T15:04Z07:00, RFC 1123Z */
function parseHubbleLayouts(v: string): FlowTime | undefined {
  let m: RegExpExecArray | null;
  if ((m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v))) return utcTime(+m[1]!, +m[2]!, +m[3]!, 0, 0, 0, 0);
  if ((m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2})(?::(\d{2}))?(Z|[+-]\d{2}:\d{2})$/.exec(v))) {
    return utcTime(+m[1]!, +m[2]!, +m[3]!, +m[4]!, +(m[5] ?? 0), 0, offsetMinutes(m[6]!));
  }
  if ((m = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-]\d{4})$/.exec(v))) {
    const mo = MONTH_NAMES.indexOf(m[2]!);
    if (mo < 0) return undefined;
    return utcTime(+m[3]!, mo + 1, +m[1]!, +m[4]!, +m[5]!, +m[6]!, offsetMinutes(m[7]!));
  }
  return undefined;
}

/** Hubble's hubtime.FromString: a duration before now (5m, 1h30m), or a time in one of its layouts */
export function parseTimeArg(flag: string, v: string, nowMs = Date.now()): FlowTime {
  const d = parseGoDuration(v);
  if (d !== undefined) return timeFromMs(nowMs - d);
  const t = parseRfc3339(v) ?? parseHubbleLayouts(v);
  if (t) return t;
  throw new ObserveUsageError(`--${flag}: "${v}" is neither a duration (3s, 4m, 1h30m) nor a time (RFC 3339, 2006-01-02, 2006-01-02T15:04Z, RFC 1123Z)`);
}

function count(flag: string, v: string): number {
  if (!/^\d+$/.test(v)) throw new ObserveUsageError(`--${flag}: "${v}" is not a count`);
  return Number(v);
}

/** the GetFlowsRequest for these options and filter flags */
export function buildRequest(o: SelectOptions, ops: FilterOp[], nowMs = Date.now()): WireGetFlowsRequest {
  const { whitelist, blacklist } = filtersFromOps(ops);
  whitelist.push(...rawFilters('allowlist', o.allowlist));
  blacklist.push(...rawFilters('denylist', o.denylist));
  const first = o.first !== undefined ? count('first', o.first) : 0;
  const last = o.last !== undefined ? count('last', o.last) : 0;
  if (first > 0 && last > 0) throw new ObserveUsageError('cannot set both --first and --last');
  if (first > 0 && o.all) throw new ObserveUsageError('cannot set both --first and --all');
  if (first > 0 && o.follow) throw new ObserveUsageError('cannot set both --first and --follow');
  if (last > 0 && o.all) throw new ObserveUsageError('cannot set both --last and --all');

  const req: WireGetFlowsRequest = { whitelist, blacklist };
  if (o.since) req.since = parseTimeArg('since', o.since, nowMs);
  // unlike Hubble, --until is kept with --follow: the server then ends the stream there
  if (o.until) req.until = parseTimeArg('until', o.until, nowMs);
  if (o.follow) req.follow = true;
  if (first > 0) {
    req.number = first;
    req.first = true;
  } else if (last > 0) {
    req.number = last;
  } else if (!o.all && !o.follow && !o.since && !o.until && !o.inputFile) {
    req.number = DEFAULT_LAST;
  }
  // a bad regex, CIDR, port or selector is refused here, before any connection
  compileFilters(req.whitelist as FlowFilter[], req.blacklist as FlowFilter[]);
  return req;
}
