// Hubble's FlowFilter semantics: a flow is returned when it matches ANY whitelist filter
// (or there is none) and NO blacklist filter. Within one filter every field that is set
// must match (AND); within one field any of its values may (OR). Filters are compiled
// once per request, so a bad regex or CIDR is an error for the caller, not per flow.
import { BlockList, isIP } from 'node:net';
import { FlowFilterError } from './errors.ts';
import { DropReasonCode, eventTypeOf, type Flow, type FlowEndpoint } from './flow.ts';
import type { FlowPredicate } from './store.ts';

/** flow.FlowFilter as protobufjs renders it (camelCase); enums as names or numbers */
export interface FlowFilter {
  uuid?: string[];
  sourceIp?: string[];
  sourcePod?: string[];
  sourceFqdn?: string[];
  sourceLabel?: string[];
  sourceService?: string[];
  sourceWorkload?: Array<{ name?: string; kind?: string }>;
  destinationIp?: string[];
  destinationPod?: string[];
  destinationFqdn?: string[];
  destinationLabel?: string[];
  destinationService?: string[];
  destinationWorkload?: Array<{ name?: string; kind?: string }>;
  trafficDirection?: Array<string | number>;
  verdict?: Array<string | number>;
  dropReasonDesc?: Array<string | number>;
  eventType?: Array<{ type?: number; matchSubType?: boolean; subType?: number }>;
  httpStatusCode?: string[];
  protocol?: string[];
  sourcePort?: string[];
  destinationPort?: string[];
  reply?: boolean[];
  dnsQuery?: string[];
  sourceIdentity?: number[];
  destinationIdentity?: number[];
  httpMethod?: string[];
  httpPath?: string[];
  httpUrl?: string[];
  httpHeader?: Array<{ key?: string; value?: string }>;
  tcpFlags?: Array<Record<string, boolean>>;
  nodeName?: string[];
  ipVersion?: Array<string | number>;
  traceId?: string[];
  // Hubble fields about data nodal's flows never carry: declared so that a filter naming
  // them matches nothing (or is refused) instead of being ignored and matching more
  sourceIpXlated?: string[];
  sourceClusterName?: string[];
  destinationClusterName?: string[];
  interface?: Array<{ index?: number; name?: string }>;
  nodeLabels?: string[];
  experimental?: { celExpression?: string[] };
}

const VERDICTS = ['VERDICT_UNKNOWN', 'FORWARDED', 'DROPPED', 'ERROR', 'AUDIT', 'REDIRECTED', 'TRACED', 'TRANSLATED'];
const DIRECTIONS = ['TRAFFIC_DIRECTION_UNKNOWN', 'INGRESS', 'EGRESS'];
const IP_VERSIONS = ['IP_NOT_USED', 'IPv4', 'IPv6'];
const PROTOCOLS = new Set(['tcp', 'udp', 'sctp', 'icmp', 'icmpv4', 'icmpv6', 'http', 'dns', 'kafka']);

function enumSet(field: string, values: Array<string | number>, names: string[]): Set<string> {
  const out = new Set<string>();
  for (const v of values) {
    const name = typeof v === 'number' ? names[v] : names.find((n) => n.toUpperCase() === String(v).toUpperCase());
    if (name === undefined) throw new FlowFilterError(field, `"${v}" is not one of ${names.join(', ')}`);
    out.add(name);
  }
  return out;
}

// --- pods, services, IPs, ports ---

/**
 * Hubble's [namespace/][name-prefix]: the namespace is exact, the name a prefix; "ns/" is
 * the whole namespace and a bare name is in namespace "default" (k8s.ParseNamespaceName).
 * An empty namespace ("/name", "/", what `hubble observe -A` sends) means any namespace.
 */
function nameFilter(field: string, values: string[], get: (f: Flow) => { ns: string; name: string } | undefined): FlowPredicate {
  const wanted = values.map((v) => {
    const parts = v.split('/');
    if (v === '' || parts.length > 2) throw new FlowFilterError(field, `"${v}" must be [namespace/][name-prefix]`);
    return parts.length === 1 ? { ns: 'default', prefix: v } : { ns: parts[0]!, prefix: parts[1]! };
  });
  return (f) => {
    const x = get(f);
    if (!x || (x.ns === '' && x.name === '')) return false;
    return wanted.some((w) => (w.ns === '' ? x.ns !== '' : w.ns === x.ns) && x.name.startsWith(w.prefix));
  };
}

const podOf = (ep: FlowEndpoint | undefined): { ns: string; name: string } | undefined =>
  ep ? { ns: ep.namespace ?? '', name: ep.podName ?? '' } : undefined;

function ipFilter(field: string, values: string[], get: (f: Flow) => string | undefined): FlowPredicate {
  const list = new BlockList();
  for (const v of values) {
    const [addr, bits, extra] = v.split('/');
    const family = addr ? isIP(addr) : 0;
    if (!family || extra !== undefined) throw new FlowFilterError(field, `"${v}" is not an IP address or CIDR`);
    const type = family === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) {
      list.addAddress(addr!, type);
    } else {
      const prefix = Number(bits);
      if (!/^\d+$/.test(bits) || prefix > (family === 6 ? 128 : 32)) throw new FlowFilterError(field, `"${v}" has an invalid prefix length`);
      list.addSubnet(addr!, prefix, type);
    }
  }
  return (f) => {
    const ip = get(f);
    if (!ip) return false;
    const family = isIP(ip);
    return family !== 0 && list.check(ip, family === 6 ? 'ipv6' : 'ipv4');
  };
}

function portsOf(f: Flow): { src: number; dst: number } | undefined {
  const p = f.l4?.TCP ?? f.l4?.UDP;
  return p ? { src: p.sourcePort, dst: p.destinationPort } : undefined;
}

function portFilter(field: string, values: string[], side: 'src' | 'dst'): FlowPredicate {
  const ports = new Set<number>();
  for (const v of values) {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || n > 65535) throw new FlowFilterError(field, `"${v}" is not a port number`);
    ports.add(n);
  }
  return (f) => {
    const p = portsOf(f);
    return p !== undefined && ports.has(p[side]);
  };
}

// --- labels: Kubernetes selector syntax over Cilium-style `source:key=value` labels ---

interface LabelRequirement {
  /** label source (k8s, reserved, ...); undefined or "any" matches every source */
  source: string | undefined;
  key: string;
  op: 'exists' | 'absent' | 'eq' | 'ne' | 'in' | 'notin';
  values: string[];
}

function splitKey(raw: string): { source: string | undefined; key: string } {
  const k = raw.trim();
  const colon = k.indexOf(':');
  if (colon <= 0) return { source: undefined, key: k };
  const source = k.slice(0, colon);
  return { source: source === 'any' ? undefined : source, key: k.slice(colon + 1) };
}

/** split on commas outside parentheses (`a in (x,y),b`) */
function splitTerms(sel: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of sel) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) { out.push(cur); cur = ''; } else cur += ch;
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter((t) => t !== '');
}

export function parseLabelSelector(field: string, sel: string): LabelRequirement[] {
  const reqs: LabelRequirement[] = [];
  for (const term of splitTerms(sel)) {
    let m: RegExpExecArray | null;
    if ((m = /^!\s*([^\s=!(),]+)$/.exec(term))) {
      reqs.push({ ...splitKey(m[1]!), op: 'absent', values: [] });
    } else if ((m = /^([^\s=!(),]+)\s+(in|notin)\s+\(([^()]*)\)$/.exec(term))) {
      const values = m[3]!.split(',').map((v) => v.trim()).filter((v) => v !== '');
      reqs.push({ ...splitKey(m[1]!), op: m[2] === 'in' ? 'in' : 'notin', values });
    } else if ((m = /^([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)$/.exec(term))) {
      reqs.push({ ...splitKey(m[1]!), op: m[2] === '!=' ? 'ne' : 'eq', values: [m[3]!] });
    } else if ((m = /^([^\s=!(),]+)$/.exec(term))) {
      reqs.push({ ...splitKey(m[1]!), op: 'exists', values: [] });
    } else {
      throw new FlowFilterError(field, `"${sel}" is not a label selector (bad term "${term}")`);
    }
  }
  if (reqs.length === 0) throw new FlowFilterError(field, 'empty label selector');
  return reqs;
}

interface ParsedLabel { source: string; key: string; value: string }
function parseLabel(l: string): ParsedLabel {
  const colon = l.indexOf(':');
  const eq = l.indexOf('=');
  const hasSource = colon > 0 && (eq < 0 || colon < eq);
  const source = hasSource ? l.slice(0, colon) : 'unspec';
  const rest = hasSource ? l.slice(colon + 1) : l;
  const e = rest.indexOf('=');
  return e < 0 ? { source, key: rest, value: '' } : { source, key: rest.slice(0, e), value: rest.slice(e + 1) };
}

function matchesSelector(reqs: LabelRequirement[], labels: ParsedLabel[]): boolean {
  return reqs.every((r) => {
    const vals = labels.filter((l) => l.key === r.key && (r.source === undefined || r.source === l.source)).map((l) => l.value);
    switch (r.op) {
      case 'exists': return vals.length > 0;
      case 'absent': return vals.length === 0;
      case 'eq': return vals.includes(r.values[0]!);
      case 'ne': return !vals.includes(r.values[0]!);
      case 'in': return vals.some((v) => r.values.includes(v));
      case 'notin': return !vals.some((v) => r.values.includes(v));
    }
  });
}

function labelFilter(field: string, selectors: string[], get: (f: Flow) => FlowEndpoint | undefined): FlowPredicate {
  const sels = selectors.map((s) => parseLabelSelector(field, s));
  return (f) => {
    const labels = (get(f)?.labels ?? []).map(parseLabel);
    return sels.some((s) => matchesSelector(s, labels));
  };
}

// --- HTTP ---

const STATUS_FULL = /^\d{3}$/;
const STATUS_PREFIX = /^\d{1,2}\+$/;

function statusFilter(values: string[]): FlowPredicate {
  const prefixes = values.map((v) => {
    if (!STATUS_FULL.test(v) && !STATUS_PREFIX.test(v)) throw new FlowFilterError('http_status_code', `"${v}" is neither a status code (404) nor a prefix (4+, 50+)`);
    return v.replace(/\+$/, '');
  });
  return (f) => {
    const code = f.l7?.http?.code;
    // only responses carry a status
    if (!code) return false;
    const s = String(code).padStart(3, '0');
    return prefixes.some((p) => s.startsWith(p));
  };
}

function regexes(field: string, values: string[]): RegExp[] {
  return values.map((v) => {
    try {
      return new RegExp(v);
    } catch (err) {
      throw new FlowFilterError(field, `"${v}" is not a regular expression: ${(err as Error).message}`, { cause: err });
    }
  });
}

/** the path of a request URL (absolute, or origin-form as HTTP/1.1 carries it) */
export function urlPath(url: string): string {
  if (url.startsWith('/')) return url.replace(/[?#].*$/, '');
  try {
    return new URL(url).pathname;
  } catch {
    return url.replace(/[?#].*$/, '');
  }
}

// --- nodes ---

function nodeFilter(values: string[]): FlowPredicate {
  const res = values.map((v) => {
    if (v === '') throw new FlowFilterError('node_name', 'empty node name pattern');
    // [cluster/]node: nodal has one cluster, so the cluster part is not checked
    const slash = v.indexOf('/');
    const node = slash < 0 ? v : v.slice(slash + 1) || '*';
    const body = node.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*');
    return new RegExp(`^${body}$`);
  });
  return (f) => res.some((r) => r.test(f.nodeName));
}

// --- the compiler ---

const has = <T>(v: T[] | undefined): v is T[] => Array.isArray(v) && v.length > 0;

/** one FlowFilter as a predicate: every set field must match */
export function compileFilter(ff: FlowFilter): FlowPredicate {
  const p: FlowPredicate[] = [];
  if (has(ff.uuid)) { const s = new Set(ff.uuid); p.push((f) => s.has(f.uuid)); }
  if (has(ff.sourceIp)) p.push(ipFilter('source_ip', ff.sourceIp, (f) => f.IP?.source));
  if (has(ff.destinationIp)) p.push(ipFilter('destination_ip', ff.destinationIp, (f) => f.IP?.destination));
  if (has(ff.sourcePod)) p.push(nameFilter('source_pod', ff.sourcePod, (f) => podOf(f.source)));
  if (has(ff.destinationPod)) p.push(nameFilter('destination_pod', ff.destinationPod, (f) => podOf(f.destination)));
  if (has(ff.sourceService)) p.push(nameFilter('source_service', ff.sourceService, (f) => f.sourceService && { ns: f.sourceService.namespace, name: f.sourceService.name }));
  if (has(ff.destinationService)) p.push(nameFilter('destination_service', ff.destinationService, (f) => f.destinationService && { ns: f.destinationService.namespace, name: f.destinationService.name }));
  // nodal does not resolve DNS names, translate source addresses, name clusters on
  // endpoints or see interfaces (it observes sockets): such a filter matches nothing
  if (has(ff.sourceFqdn) || has(ff.destinationFqdn) || has(ff.dnsQuery) || has(ff.sourceIpXlated)
    || has(ff.sourceClusterName) || has(ff.destinationClusterName) || has(ff.interface)) p.push(() => false);
  // flows carry no node labels: selectors are judged against none ("!key" matches)
  if (has(ff.nodeLabels)) {
    const sels = ff.nodeLabels.map((sel) => parseLabelSelector('node_labels', sel));
    const matches = sels.some((sel) => matchesSelector(sel, []));
    p.push(() => matches);
  }
  if (has(ff.experimental?.celExpression)) {
    throw new FlowFilterError('experimental.cel_expression', 'CEL expressions are not supported by nodal (the filter would otherwise be ignored)');
  }
  if (has(ff.sourceLabel)) p.push(labelFilter('source_label', ff.sourceLabel, (f) => f.source));
  if (has(ff.destinationLabel)) p.push(labelFilter('destination_label', ff.destinationLabel, (f) => f.destination));
  for (const [list, side] of [[ff.sourceWorkload, 'source'], [ff.destinationWorkload, 'destination']] as const) {
    if (!has(list)) continue;
    p.push((f) => {
      const ws = f[side]?.workloads ?? [];
      return list.some((w) => ws.some((x) => (!w.name || w.name === x.name) && (!w.kind || w.kind === x.kind)));
    });
  }
  if (has(ff.trafficDirection)) { const s = enumSet('traffic_direction', ff.trafficDirection, DIRECTIONS); p.push((f) => s.has(f.trafficDirection)); }
  if (has(ff.verdict)) { const s = enumSet('verdict', ff.verdict, VERDICTS); p.push((f) => s.has(f.verdict)); }
  if (has(ff.dropReasonDesc)) {
    const s = new Set(ff.dropReasonDesc.map((v) => (typeof v === 'number' ? Object.keys(DropReasonCode).find((k) => DropReasonCode[k] === v) ?? String(v) : v)));
    p.push((f) => f.dropReasonDesc !== undefined && s.has(f.dropReasonDesc));
  }
  if (has(ff.eventType)) {
    const types = ff.eventType;
    p.push((f) => {
      const et = eventTypeOf(f);
      return types.some((t) => (t.type ?? 0) === et.type && (!t.matchSubType || (t.subType ?? 0) === (et.subType ?? 0)));
    });
  }
  if (has(ff.httpStatusCode)) p.push(statusFilter(ff.httpStatusCode));
  if (has(ff.protocol)) {
    const protos = ff.protocol.map((v) => v.toLowerCase());
    for (const v of protos) if (!PROTOCOLS.has(v)) throw new FlowFilterError('protocol', `"${v}" is not one of ${[...PROTOCOLS].join(', ')}`);
    p.push((f) => protos.some((x) =>
      (x === 'tcp' && !!f.l4?.TCP) || (x === 'udp' && !!f.l4?.UDP) || (x === 'http' && !!f.l7?.http)));
  }
  if (has(ff.sourcePort)) p.push(portFilter('source_port', ff.sourcePort, 'src'));
  if (has(ff.destinationPort)) p.push(portFilter('destination_port', ff.destinationPort, 'dst'));
  if (has(ff.reply)) { const want = ff.reply; p.push((f) => f.isReply !== undefined && want.includes(f.isReply)); }
  if (has(ff.sourceIdentity)) { const s = new Set(ff.sourceIdentity.map(Number)); p.push((f) => s.has(f.source?.identity ?? 0)); }
  if (has(ff.destinationIdentity)) { const s = new Set(ff.destinationIdentity.map(Number)); p.push((f) => s.has(f.destination?.identity ?? 0)); }
  if (has(ff.httpMethod)) {
    const s = new Set(ff.httpMethod.map((m) => m.toUpperCase()));
    p.push((f) => !!f.l7?.http?.method && s.has(f.l7.http.method.toUpperCase()));
  }
  if (has(ff.httpPath)) {
    const rs = regexes('http_path', ff.httpPath);
    p.push((f) => { const u = f.l7?.http?.url; return u !== undefined && rs.some((r) => r.test(urlPath(u))); });
  }
  if (has(ff.httpUrl)) {
    const rs = regexes('http_url', ff.httpUrl);
    p.push((f) => { const u = f.l7?.http?.url; return u !== undefined && rs.some((r) => r.test(u)); });
  }
  if (has(ff.httpHeader)) {
    const want = ff.httpHeader;
    p.push((f) => {
      const hs = f.l7?.http?.headers ?? [];
      return want.some((w) => hs.some((h) => h.key.toLowerCase() === (w.key ?? '').toLowerCase() && h.value === (w.value ?? '')));
    });
  }
  if (has(ff.tcpFlags)) {
    const sets = ff.tcpFlags.map((s) => Object.keys(s).filter((k) => s[k]));
    p.push((f) => { const fl = f.l4?.TCP?.flags; return !!fl && sets.some((s) => s.every((k) => fl[k])); });
  }
  if (has(ff.nodeName)) p.push(nodeFilter(ff.nodeName));
  if (has(ff.ipVersion)) { const s = enumSet('ip_version', ff.ipVersion, IP_VERSIONS); p.push((f) => s.has(f.IP?.ipVersion ?? 'IP_NOT_USED')); }
  if (has(ff.traceId)) { const s = new Set(ff.traceId); p.push((f) => !!f.traceContext && s.has(f.traceContext.parent.traceId)); }
  if (p.length === 0) return () => true;
  if (p.length === 1) return p[0]!;
  return (f) => p.every((x) => x(f));
}

/**
 * whitelist/blacklist as one predicate; undefined when there is nothing to filter, so
 * the store can skip the call entirely.
 */
export function compileFilters(whitelist: FlowFilter[] = [], blacklist: FlowFilter[] = []): FlowPredicate | undefined {
  const white = whitelist.map(compileFilter);
  const black = blacklist.map(compileFilter);
  if (white.length === 0 && black.length === 0) return undefined;
  return (f) => (white.length === 0 || white.some((w) => w(f))) && !black.some((b) => b(f));
}
