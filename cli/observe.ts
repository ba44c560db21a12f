// `nodal observe`: flows from an Observer (the relay by default, or one agent), with
// Hubble's flags and Hubble's output, so operators who know `hubble observe` know this.
// Filters are built in the order given, as Hubble does: `--not` negates the next filter,
// and an either-direction flag (--pod, --namespace, --label, ...) becomes two filters,
// one for each side, that every other flag is added to.
import { existsSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import * as grpc from '@grpc/grpc-js';
import {
  alignTable, compareTime, compileFilters, connectOrFail, cutToNumber, DICT_SEPARATOR, flowFromWire, formatCompact, formatDict, formatLost, formatNodeStatus,
  formatTableRows, MessageType, observerClient, parseRfc3339, responseFromJson, responseToJson, timeFromMs,
  type Flow, type FlowFilter, type FlowTime, type PrintOptions, type WireFlow, type WireGetFlowsRequest, type WireGetFlowsResponse,
} from '../agent/flows/index.ts';

/** where `nodal dev up` puts the relay's socket */
export const DEFAULT_SERVER = 'unix:/run/nodal/sandbox/relay.sock';
/** Hubble prints the last 20 flows when asked for nothing in particular */
const DEFAULT_LAST = 20;
const OUTPUTS = ['compact', 'json', 'jsonpb', 'dict', 'table'] as const;
type Output = (typeof OUTPUTS)[number];

export interface ObserveOptions {
  server?: string;
  follow?: boolean;
  last?: string;
  first?: string;
  all?: boolean;
  since?: string;
  until?: string;
  output?: string;
  printPolicyNames?: boolean;
  printNodeName?: boolean;
  ipTranslation?: boolean;
  inputFile?: string;
  timeout?: string;
  debug?: boolean;
}

/** one filter flag as given on the command line, in order */
export interface FilterOp {
  name: string;
  value?: string;
}

export class ObserveUsageError extends Error {
  readonly code = 'NODAL_ERR_OBSERVE_USAGE';
  constructor(message: string) {
    super(message);
    this.name = 'ObserveUsageError';
  }
}

// flag -> [source-side field, destination-side field]; shared flags name one field
const EITHER: Record<string, [keyof FlowFilter, keyof FlowFilter]> = {
  namespace: ['sourcePod', 'destinationPod'], pod: ['sourcePod', 'destinationPod'], ip: ['sourceIp', 'destinationIp'],
  label: ['sourceLabel', 'destinationLabel'], identity: ['sourceIdentity', 'destinationIdentity'],
  port: ['sourcePort', 'destinationPort'], service: ['sourceService', 'destinationService'],
};
const FROM: Record<string, keyof FlowFilter> = {
  'from-namespace': 'sourcePod', 'from-pod': 'sourcePod', 'from-ip': 'sourceIp', 'from-label': 'sourceLabel',
  'from-identity': 'sourceIdentity', 'from-port': 'sourcePort', 'from-service': 'sourceService',
};
const TO: Record<string, keyof FlowFilter> = {
  'to-namespace': 'destinationPod', 'to-pod': 'destinationPod', 'to-ip': 'destinationIp', 'to-label': 'destinationLabel',
  'to-identity': 'destinationIdentity', 'to-port': 'destinationPort', 'to-service': 'destinationService',
};
const SHARED: Record<string, keyof FlowFilter> = {
  verdict: 'verdict', type: 'eventType', protocol: 'protocol', 'http-status': 'httpStatusCode', 'http-method': 'httpMethod',
  'http-path': 'httpPath', 'http-url': 'httpUrl', 'node-name': 'nodeName', 'traffic-direction': 'trafficDirection',
  'drop-reason-desc': 'dropReasonDesc', uuid: 'uuid', 'trace-id': 'traceId',
};
export const FILTER_FLAGS = [...Object.keys(EITHER), ...Object.keys(FROM), ...Object.keys(TO), ...Object.keys(SHARED)];

const TRACE_POINTS = ['to-endpoint', 'to-proxy', 'to-host', 'to-stack', 'to-overlay', 'from-endpoint', 'from-proxy',
  'from-host', 'from-stack', 'from-overlay', 'from-network', 'to-network'];
const EVENT_TYPES: Record<string, number> = {
  drop: MessageType.DROP, trace: MessageType.TRACE, 'policy-verdict': MessageType.POLICY_VERDICT, l7: MessageType.ACCESS_LOG,
};

function eventTypeFilter(v: string): { type: number; matchSubType?: boolean; subType?: number } {
  const [t, sub] = v.toLowerCase().split(':', 2);
  const type = EVENT_TYPES[t ?? ''];
  if (type === undefined) throw new ObserveUsageError(`--type: "${v}" is not one of ${Object.keys(EVENT_TYPES).join(', ')} (optionally type:subtype)`);
  if (sub === undefined) return { type };
  const n = /^\d+$/.test(sub) ? Number(sub) : type === MessageType.TRACE ? TRACE_POINTS.indexOf(sub) : -1;
  if (n < 0) throw new ObserveUsageError(`--type: unknown subtype "${sub}" of ${t}`);
  return { type, matchSubType: true, subType: n };
}

/** a filter tracker: one filter, or a source-side and a destination-side pair */
class FilterSet {
  private filters: FlowFilter[] = [{}];
  private split = false;
  used = false;

  private add(f: FlowFilter, key: keyof FlowFilter, value: unknown): void {
    const list = ((f as Record<string, unknown[]>)[key] ??= []);
    list.push(value);
  }
  shared(key: keyof FlowFilter, value: unknown): void {
    this.used = true;
    for (const f of this.filters) this.add(f, key, value);
  }
  either(src: keyof FlowFilter, dst: keyof FlowFilter, value: unknown): void {
    this.used = true;
    if (!this.split) {
      this.split = true;
      this.filters = [this.filters[0]!, structuredClone(this.filters[0]!)];
    }
    this.add(this.filters[0]!, src, value);
    this.add(this.filters[1]!, dst, value);
  }
  build(): FlowFilter[] {
    return this.used ? this.filters : [];
  }
}

function podArg(flag: string, v: string, defaultNs: string): string {
  if (flag.endsWith('namespace')) return `${v.replace(/\/$/, '')}/`;
  return v.includes('/') ? v : `${defaultNs}/${v}`;
}

function valueFor(flag: string, v: string, defaultNs: string): unknown {
  if (flag.endsWith('identity')) {
    if (!/^\d+$/.test(v)) throw new ObserveUsageError(`--${flag}: "${v}" is not a numeric identity`);
    return Number(v);
  }
  if (flag.endsWith('namespace') || flag.endsWith('pod') || flag.endsWith('service')) return podArg(flag, v, defaultNs);
  if (flag === 'type') return eventTypeFilter(v);
  if (flag === 'verdict' || flag === 'traffic-direction' || flag === 'drop-reason-desc') return v.toUpperCase();
  return v;
}

const DURATION = /^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$/;
const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** RFC 3339, or a Go-style duration before now (5m, 1h30m, 500ms) */
export function parseTimeArg(flag: string, v: string, nowMs = Date.now()): FlowTime {
  const t = parseRfc3339(v);
  if (t) return t;
  if (DURATION.test(v)) {
    let ms = 0;
    for (const m of v.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
    return timeFromMs(nowMs - ms);
  }
  throw new ObserveUsageError(`--${flag}: "${v}" is neither an RFC 3339 time nor a duration such as 5m`);
}

function count(flag: string, v: string): number {
  if (!/^\d+$/.test(v)) throw new ObserveUsageError(`--${flag}: "${v}" is not a count`);
  return Number(v);
}

/** the GetFlowsRequest for these flags (filters in the order given) */
export function buildRequest(o: ObserveOptions, ops: FilterOp[], nowMs = Date.now()): WireGetFlowsRequest {
  const white = new FilterSet();
  const black = new FilterSet();
  const hasPod = ops.some((op) => /(^|-)pod$/.test(op.name));
  const nsOp = ops.find((op) => op.name === 'namespace');
  // with a pod flag, -n is the namespace of bare pod names rather than a filter of its own
  const defaultNs = hasPod && nsOp?.value ? nsOp.value : 'default';
  let negate = false;
  for (const op of ops) {
    if (op.name === 'not') { negate = true; continue; }
    if (op.name === 'namespace' && hasPod) continue;
    const set = negate ? black : white;
    negate = false;
    const v = valueFor(op.name, op.value ?? '', defaultNs);
    const either = EITHER[op.name];
    if (either) set.either(either[0], either[1], v);
    else if (FROM[op.name]) set.shared(FROM[op.name]!, v);
    else if (TO[op.name]) set.shared(TO[op.name]!, v);
    else if (SHARED[op.name]) set.shared(SHARED[op.name]!, v);
    else throw new ObserveUsageError(`unknown filter flag --${op.name}`);
  }
  if (negate) throw new ObserveUsageError('--not must be followed by a filter flag');
  const req: WireGetFlowsRequest = { whitelist: white.build(), blacklist: black.build() };
  if (o.last !== undefined && o.first !== undefined) throw new ObserveUsageError('--last and --first exclude each other');
  if (o.first !== undefined && o.follow) throw new ObserveUsageError('--first cannot be combined with --follow');
  if (o.since) req.since = parseTimeArg('since', o.since, nowMs);
  if (o.until) req.until = parseTimeArg('until', o.until, nowMs);
  if (o.follow) req.follow = true;
  if (o.last !== undefined) req.number = count('last', o.last);
  else if (o.first !== undefined) { req.number = count('first', o.first); req.first = true; }
  else if (!o.follow && !o.all && !o.since && !o.until) req.number = DEFAULT_LAST;
  // catch a bad regex, CIDR or selector here, with the flag's own words
  compileFilters(req.whitelist as FlowFilter[], req.blacklist as FlowFilter[]);
  return req;
}

export interface ObserveIO {
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

/** prints responses in the chosen format; table output is aligned per block */
class Printer {
  private readonly output: Output;
  private readonly opts: PrintOptions;
  private readonly io: ObserveIO;
  private readonly debug: boolean;
  private lines = 0;
  private table: Flow[] = [];
  private tableHeader = true;
  private tableTimer: NodeJS.Timeout | undefined;

  constructor(output: Output, opts: PrintOptions, io: ObserveIO, debug: boolean) {
    this.output = output;
    this.opts = opts;
    this.io = io;
    this.debug = debug;
  }

  write(res: WireGetFlowsResponse): void {
    if (this.output === 'json' || this.output === 'jsonpb') {
      (res.nodeStatus ? this.io.err : this.io.out).write(`${JSON.stringify(responseToJson(res))}\n`);
      return;
    }
    if (res.flow) {
      const f = flowFromWire(res.flow as WireFlow);
      if (this.output === 'compact') this.io.out.write(`${formatCompact(f, this.opts)}\n`);
      else if (this.output === 'dict') this.io.out.write(`${formatDict(f, this.opts, this.lines === 0)}\n`);
      else this.queueRow(f);
      this.lines++;
    } else if (res.lostEvents) {
      this.flushTable();
      if (this.output === 'dict' && this.lines > 0) this.io.out.write(`${DICT_SEPARATOR}\n`);
      this.io.out.write(`${formatLost(res)}\n`);
      this.lines++;
    } else if (res.nodeStatus) {
      const line = formatNodeStatus(res, this.debug);
      if (line) this.io.err.write(`${line}\n`);
    }
  }

  private queueRow(f: Flow): void {
    this.table.push(f);
    // a live table is printed in aligned blocks whenever the stream pauses
    clearTimeout(this.tableTimer);
    this.tableTimer = setTimeout(() => this.flushTable(), 200);
  }

  flushTable(): void {
    clearTimeout(this.tableTimer);
    if (this.table.length === 0) return;
    const rows = formatTableRows(this.table, this.opts);
    this.io.out.write(`${alignTable(this.tableHeader ? rows : rows.slice(1))}\n`);
    this.tableHeader = false;
    this.table = [];
  }
}

function outputOf(o: ObserveOptions): Output {
  const v = (o.output ?? 'compact').toLowerCase();
  if (!(OUTPUTS as readonly string[]).includes(v)) throw new ObserveUsageError(`-o: "${v}" is not one of ${OUTPUTS.join(', ')}`);
  return v as Output;
}

/** a server argument as grpc-js wants it: host:port or unix:/path (a bare path is a socket) */
export function normalizeServer(s: string): string {
  if (s.startsWith('/')) return `unix:${s}`;
  return s.replace(/^(?:https?|grpc):\/\//, '');
}

function socketPathOf(server: string): string | undefined {
  if (!server.startsWith('unix:')) return undefined;
  return server.replace(/^unix:(\/\/)?/, '');
}

function readInput(file: string): WireGetFlowsResponse[] {
  const text = readFileSync(file === '-' ? 0 : file, 'utf8');
  const out: WireGetFlowsResponse[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    try {
      out.push(responseFromJson(line));
    } catch (err) {
      throw new ObserveUsageError(`${file}:${i + 1}: ${(err as Error).message}`);
    }
  });
  return out;
}

/** the server's work, done locally over a file of JSON flows */
function selectLocal(all: WireGetFlowsResponse[], req: WireGetFlowsRequest): WireGetFlowsResponse[] {
  const match = compileFilters(req.whitelist as FlowFilter[], req.blacklist as FlowFilter[]);
  const since = req.since as FlowTime | undefined;
  const until = req.until as FlowTime | undefined;
  const picked = all.filter((r) => {
    if (!r.flow) return true;
    const f = flowFromWire(structuredClone(r.flow) as WireFlow);
    if (since && compareTime(f.time, since) < 0) return false;
    if (until && compareTime(f.time, until) > 0) return false;
    return !match || match(f);
  });
  // the same cut a server makes: the first/last N flows and the notices among them
  return cutToNumber(picked, req.number ?? 0, Boolean(req.first));
}

/** run one observe; resolves with the exit code */
export async function runObserve(o: ObserveOptions, ops: FilterOp[], io: ObserveIO = { out: process.stdout, err: process.stderr }): Promise<number> {
  let req: WireGetFlowsRequest;
  let output: Output;
  try {
    output = outputOf(o);
    req = buildRequest(o, ops);
  } catch (err) {
    io.err.write(`nodal observe: ${(err as Error).message}\n`);
    return 1;
  }
  const printer = new Printer(output, {
    policyNames: Boolean(o.printPolicyNames), nodeName: Boolean(o.printNodeName), noIpTranslation: o.ipTranslation === false,
  }, io, Boolean(o.debug));

  if (o.inputFile) {
    try {
      for (const r of selectLocal(readInput(o.inputFile), req)) printer.write(r);
    } catch (err) {
      io.err.write(`nodal observe: --input-file ${o.inputFile}: ${(err as Error).message}\n`);
      return 1;
    }
    printer.flushTable();
    return 0;
  }

  const server = normalizeServer(o.server || process.env.NODAL_SERVER || DEFAULT_SERVER);
  const timeoutMs = o.timeout ? parseDurationMs(o.timeout) : 5000;
  const unreachable = (why: string): number => {
    io.err.write(`nodal observe: cannot reach the Observer at ${server}: ${why}\n` +
      '  (start the sandbox with `nodal dev up`, or point --server / NODAL_SERVER at a relay or agent)\n');
    return 1;
  };
  const sock = socketPathOf(server);
  if (sock && !existsSync(sock)) return unreachable(`socket ${sock} does not exist`);

  const client = observerClient(server);
  try {
    const notReady = await connectOrFail(client, timeoutMs);
    if (notReady) return unreachable(notReady);
    const call = client.GetFlows(req);
    let interrupted = false;
    const onSignal = (): void => { interrupted = true; call.cancel(); };
    process.once('SIGINT', onSignal);
    // `nodal observe -f | head`: a closed pipe ends the stream quietly, as Ctrl-C does
    const onOutError = (err: NodeJS.ErrnoException): void => { if (err.code === 'EPIPE') onSignal(); };
    io.out.on('error', onOutError);
    const code = await new Promise<number>((resolve) => {
      call.on('data', (r: WireGetFlowsResponse) => printer.write(r));
      call.on('end', () => resolve(0));
      call.on('error', (err: grpc.ServiceError) => {
        if (interrupted && err.code === grpc.status.CANCELLED) return resolve(0);
        if (err.code === grpc.status.UNAVAILABLE) return resolve(unreachable(err.details || err.message));
        io.err.write(`nodal observe: ${server}: ${grpc.status[err.code] ?? err.code}: ${err.details || err.message}\n`);
        resolve(1);
      });
    });
    process.off('SIGINT', onSignal);
    io.out.off('error', onOutError);
    printer.flushTable();
    return code;
  } finally {
    client.close();
  }
}

function parseDurationMs(v: string): number {
  if (!DURATION.test(v)) throw new ObserveUsageError(`--timeout: "${v}" is not a duration such as 5s`);
  let ms = 0;
  for (const m of v.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return ms;
}

/** `nodal observe`: flows from the relay or an agent, Hubble's flags and output */
export function registerObserve(program: Command): void {
  const cmd = program.command('observe')
    .description('watch flows: every connection verdict and request, across the mesh (Hubble-compatible)')
    .option('--server <address>', `Observer to ask: host:port or unix:/path (env NODAL_SERVER, default ${DEFAULT_SERVER})`)
    .option('--timeout <duration>', 'how long to wait for the connection', '5s')
    .option('--input-file <file>', 'read JSON flows (one per line, - for stdin) instead of a server')
    .option('-f, --follow', 'keep printing flows as they happen')
    .option('--last <n>', `the last N flows (default ${DEFAULT_LAST} without --follow/--since)`)
    .option('--first <n>', 'the first N flows in the buffer')
    .option('--all', 'every flow in the buffer')
    .option('--since <time>', 'flows since this RFC 3339 time or duration ago (5m)')
    .option('--until <time>', 'flows until this RFC 3339 time or duration ago')
    .option('-o, --output <format>', `${OUTPUTS.join(' | ')}`, 'compact')
    .option('--print-policy-names', 'print the policy that allowed or denied each flow')
    .option('--print-node-name', 'print the node each flow was seen on')
    .option('--no-ip-translation', 'print IPs instead of pod and Service names')
    .option('--debug', 'also print routine node status events')
    // filters: events below record them in order, so --not applies to the next one
    .option('--not', 'negate the next filter flag')
    .option('-n, --namespace <ns>', 'flows from or to this namespace')
    .option('--from-namespace <ns>', 'flows from this namespace')
    .option('--to-namespace <ns>', 'flows to this namespace')
    .option('--pod <[ns/]pod>', 'flows from or to pods with this name prefix (namespace default: -n or "default")')
    .option('--from-pod <[ns/]pod>', 'flows from this pod name prefix')
    .option('--to-pod <[ns/]pod>', 'flows to this pod name prefix')
    .option('--service <[ns/]svc>', 'flows from or to this Service')
    .option('--from-service <[ns/]svc>', 'flows from this Service')
    .option('--to-service <[ns/]svc>', 'flows to this Service')
    .option('--ip <ip|cidr>', 'flows from or to this IP or CIDR')
    .option('--from-ip <ip|cidr>', 'flows from this IP or CIDR')
    .option('--to-ip <ip|cidr>', 'flows to this IP or CIDR')
    .option('-l, --label <selector>', 'flows from or to endpoints matching this label selector')
    .option('--from-label <selector>', 'flows from endpoints matching this label selector')
    .option('--to-label <selector>', 'flows to endpoints matching this label selector')
    .option('--identity <id>', 'flows from or to this numeric identity')
    .option('--from-identity <id>', 'flows from this identity')
    .option('--to-identity <id>', 'flows to this identity')
    .option('--port <port>', 'flows from or to this L4 port')
    .option('--from-port <port>', 'flows from this L4 port')
    .option('--to-port <port>', 'flows to this L4 port')
    .option('--verdict <verdict>', 'FORWARDED | DROPPED | REDIRECTED | ERROR | AUDIT')
    .option('-t, --type <type>', 'event type: l7, drop, trace[:to-proxy], policy-verdict')
    .option('--protocol <proto>', 'tcp, udp, http, ...')
    .option('--http-status <code>', 'HTTP status code or prefix (404, 5+)')
    .option('--http-method <method>', 'HTTP method')
    .option('--http-path <regex>', 'HTTP path regular expression')
    .option('--http-url <regex>', 'HTTP URL regular expression')
    .option('--node-name <pattern>', 'node name pattern (node-*)')
    .option('--traffic-direction <dir>', 'ingress | egress')
    .option('--drop-reason-desc <reason>', 'Hubble drop reason, e.g. POLICY_DENIED')
    .option('--uuid <uuid>', 'one flow by its uuid')
    .option('--trace-id <id>', 'flows of one W3C trace');

  let ops: FilterOp[] = [];
  cmd.on('option:not', () => ops.push({ name: 'not' }));
  for (const name of FILTER_FLAGS) cmd.on(`option:${name}`, (value: string) => ops.push({ name, value }));
  cmd.action(async (o: ObserveOptions) => {
    const taken = ops;
    ops = [];
    process.exitCode = await runObserve(o, taken);
  });
}
