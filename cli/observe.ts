// `nodal observe`: flows from an Observer (the relay by default, or one agent), or from a
// saved file of JSON flows, with Hubble's flags and Hubble's output, so operators who know
// `hubble observe` know this. The request is built in cli/observe/request.ts (Hubble's
// filter semantics), printed by cli/observe/output.ts (Hubble's formats).
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import * as grpc from '@grpc/grpc-js';
import { connectOrFail, observerClient, type WireGetFlowsRequest, type WireGetFlowsResponse } from '../agent/flows/index.ts';
import {
  ObservePrinter, outputOf, readFlowFile, timeFormatOf, TIME_FORMATS, useColor, OUTPUTS, type ObserveIO, type Output,
} from './observe/output.ts';
import {
  buildRequest, DEFAULT_LAST, FILTER_FLAGS, ObserveUsageError, parseGoDuration, rawFiltersYaml, SWITCH_FILTER_FLAGS,
  type FilterOp, type SelectOptions,
} from './observe/request.ts';

export { buildRequest, filtersFromOps, parseGoDuration, parseTimeArg, ObserveUsageError, FILTER_FLAGS } from './observe/request.ts';
export type { FilterOp, SelectOptions } from './observe/request.ts';
export type { ObserveIO } from './observe/output.ts';

/** where `nodal dev up` puts the relay's socket */
export const DEFAULT_SERVER = 'unix:/run/nodal/sandbox/relay.sock';
/** how long to wait for the connection: a local socket answers at once, a relay within a second */
const DEFAULT_TIMEOUT = '5s';

export interface ObserveOptions extends SelectOptions {
  server?: string;
  timeout?: string;
  output?: string;
  printPolicyNames?: boolean;
  printNodeName?: boolean;
  /** commander's --no-ip-translation */
  ipTranslation?: boolean;
  numeric?: boolean;
  color?: string;
  timeFormat?: string;
  debug?: boolean;
  silentErrors?: boolean;
  printRawFilters?: boolean;
}

/** a server argument as grpc-js wants it: host:port or unix:/path (a bare path is a socket) */
export function normalizeServer(s: string): string {
  if (s.startsWith('/')) return `unix:${s}`;
  return s.replace(/^(?:https?|grpc):\/\//, '');
}

/** the server to ask: --server, else NODAL_SERVER, else the sandbox relay */
export function serverOf(flag: string | undefined): string {
  return normalizeServer(flag || process.env.NODAL_SERVER || DEFAULT_SERVER);
}

function socketPathOf(server: string): string | undefined {
  if (!server.startsWith('unix:')) return undefined;
  return server.replace(/^unix:(\/\/)?/, '');
}

/** a --timeout / --window style duration in ms */
export function durationArg(flag: string, v: string): number {
  const ms = parseGoDuration(v);
  if (ms === undefined || ms <= 0) throw new ObserveUsageError(`--${flag}: "${v}" is not a duration such as 5s`);
  return ms;
}

/** stream a GetFlows call into `onData`; resolves with the exit code */
export async function streamFlows(
  server: string, timeoutMs: number, req: WireGetFlowsRequest, io: ObserveIO, cmd: string,
  onData: (r: WireGetFlowsResponse) => void, signal?: AbortSignal,
): Promise<number> {
  const unreachable = (why: string): number => {
    io.err.write(`nodal ${cmd}: cannot reach the Observer at ${server}: ${why}\n` +
      '  (start the sandbox with `nodal dev up`, or point --server / NODAL_SERVER at a relay or agent)\n');
    return 1;
  };
  const sock = socketPathOf(server);
  if (sock && !existsSync(sock)) return unreachable(`socket ${sock} does not exist`);
  const client = observerClient(server);
  try {
    const notReady = await connectOrFail(client, timeoutMs);
    if (notReady) return unreachable(notReady);
    if (signal?.aborted) return 0;
    const call = client.GetFlows(req);
    let interrupted = false;
    const stop = (): void => { interrupted = true; call.cancel(); };
    process.once('SIGINT', stop);
    signal?.addEventListener('abort', stop, { once: true });
    // `nodal observe -f | head`: a closed pipe ends the stream quietly, as Ctrl-C does
    const onOutError = (err: NodeJS.ErrnoException): void => { if (err.code === 'EPIPE') stop(); };
    io.out.on('error', onOutError);
    try {
      return await new Promise<number>((resolve) => {
        call.on('data', onData);
        call.on('end', () => resolve(0));
        call.on('error', (err: grpc.ServiceError) => {
          if (interrupted && err.code === grpc.status.CANCELLED) return resolve(0);
          if (err.code === grpc.status.UNAVAILABLE) return resolve(unreachable(err.details || err.message));
          io.err.write(`nodal ${cmd}: ${server}: ${grpc.status[err.code] ?? err.code}: ${err.details || err.message}\n`);
          resolve(1);
        });
      });
    } finally {
      process.off('SIGINT', stop);
      signal?.removeEventListener('abort', stop);
      io.out.off('error', onOutError);
    }
  } finally {
    client.close();
  }
}

/** run one observe; resolves with the exit code */
export async function runObserve(o: ObserveOptions, ops: FilterOp[], io: ObserveIO = { out: process.stdout, err: process.stderr }): Promise<number> {
  let req: WireGetFlowsRequest;
  let output: Output;
  let printer: ObservePrinter;
  let timeoutMs: number;
  try {
    output = outputOf(o.output);
    if (output === 'table' && o.follow) throw new ObserveUsageError('table output format is not compatible with follow mode');
    req = buildRequest(o, ops);
    timeoutMs = durationArg('timeout', o.timeout ?? DEFAULT_TIMEOUT);
    printer = new ObservePrinter(output, {
      policyNames: Boolean(o.printPolicyNames),
      nodeName: Boolean(o.printNodeName),
      noIpTranslation: o.ipTranslation === false || Boolean(o.numeric),
      color: output !== 'json' && output !== 'table' && useColor(o.color, io.out),
      timeFormat: timeFormatOf(o.timeFormat),
    }, io, { debug: Boolean(o.debug), silent: Boolean(o.silentErrors) });
  } catch (err) {
    io.err.write(`nodal observe: ${(err as Error).message}\n`);
    return 1;
  }
  if (o.printRawFilters) {
    io.out.write(rawFiltersYaml(req));
    return 0;
  }

  if (o.inputFile) {
    // as Hubble: a file is read as it is, --follow does not apply
    delete req.follow;
    // `nodal observe --input-file big.json | head`: a closed pipe stops the reading quietly
    const closed = new AbortController();
    const onOutError = (err: NodeJS.ErrnoException): void => { if (err.code === 'EPIPE') closed.abort(); };
    io.out.on('error', onOutError);
    try {
      await readFlowFile(o.inputFile, req, (r) => printer.write(r), (msg) => io.err.write(`nodal observe: ${msg}\n`), closed.signal);
      if (!closed.signal.aborted) printer.close();
    } catch (err) {
      io.err.write(`nodal observe: --input-file ${o.inputFile}: ${(err as Error).message}\n`);
      return 1;
    } finally {
      io.out.off('error', onOutError);
    }
    return 0;
  }

  const code = await streamFlows(serverOf(o.server), timeoutMs, req, io, 'observe', (r) => printer.write(r));
  printer.close();
  return code;
}

/** `nodal observe`: flows from the relay or an agent, Hubble's flags and output */
export function registerObserve(program: Command, io: ObserveIO = { out: process.stdout, err: process.stderr }): void {
  const cmd = program.command('observe')
    .description('watch flows: every connection verdict and request, across the mesh (Hubble-compatible)')
    .option('--server <address>', `Observer to ask: host:port or unix:/path (env NODAL_SERVER, default ${DEFAULT_SERVER})`)
    .option('--timeout <duration>', 'how long to wait for the connection', DEFAULT_TIMEOUT)
    .option('--input-file <file>', 'read JSON flows (as written by -o json; - for stdin) instead of a server')
    // selectors
    .option('-f, --follow', 'keep printing flows as they happen')
    .option('--last <n>', `the last N flows (default ${DEFAULT_LAST} without --follow, --since, --until or --input-file)`)
    .option('--first <n>', 'the first N flows in the buffer')
    .option('--all', 'every flow in the buffer')
    .option('--since <time>', 'flows since a time: a duration ago (3s, 4m, 1h30m), RFC 3339, 2006-01-02, 2006-01-02T15:04Z, RFC 1123Z')
    .option('--until <time>', 'flows until a time (same forms as --since); with --follow, the stream ends there')
    // formatting
    .option('-o, --output <format>', `${OUTPUTS.join(' | ')} (json is jsonpb: one GetFlowsResponse per line)`, 'compact')
    .option('--color <when>', 'colour compact and dict output: auto (only on a terminal), always, never', 'auto')
    .option('--time-format <name>', `${TIME_FORMATS.join(' | ')} (not for json)`, 'StampMilli')
    .option('--print-policy-names', 'print the policy that allowed or denied each flow')
    .option('--print-node-name', 'print the node each flow was seen on')
    .option('--no-ip-translation', 'print IPs instead of pod and Service names')
    .option('--numeric', 'all information in numeric form (no IP translation)')
    .option('--print-raw-filters', 'print the allowlist/denylist filters as YAML and exit without asking the server')
    .option('--allowlist <json>', 'a FlowFilter as JSON to add to the allowlist (repeatable)', collect, [])
    .option('--denylist <json>', 'a FlowFilter as JSON to add to the denylist (repeatable)', collect, [])
    .option('-s, --silent-errors', 'do not print node status errors and warnings')
    .option('--debug', 'also print routine node status events')
    // filters: events below record them in order, so --not applies to the next one
    .option('--not', 'negate the next filter flag (--not --from-ip 2.2.2.2)')
    .option('-n, --namespace <ns>', 'flows from or to this namespace')
    .option('--from-namespace <ns>', 'flows from this namespace')
    .option('--to-namespace <ns>', 'flows to this namespace')
    .option('-A, --all-namespaces', 'flows from or to pods in any namespace')
    .option('--from-all-namespaces', 'flows from pods in any namespace')
    .option('--to-all-namespaces', 'flows to pods in any namespace')
    .option('--pod <[ns/]pod>', 'flows from or to pods with this name prefix (namespace: -n, else "default")')
    .option('--from-pod <[ns/]pod>', 'flows from pods with this name prefix')
    .option('--to-pod <[ns/]pod>', 'flows to pods with this name prefix')
    .option('--service <[ns/]svc>', 'flows from or to this Service')
    .option('--from-service <[ns/]svc>', 'flows from this Service')
    .option('--to-service <[ns/]svc>', 'flows to this Service')
    .option('--ip <ip|cidr>', 'flows from or to this IP or CIDR')
    .option('--from-ip <ip|cidr>', 'flows from this IP or CIDR')
    .option('--to-ip <ip|cidr>', 'flows to this IP or CIDR')
    .option('-4, --ipv4', 'IPv4 flows only')
    .option('-6, --ipv6', 'IPv6 flows only')
    .option('--ip-version <v>', 'v4, v6 or none')
    .option('-l, --label <selector>', 'flows from or to endpoints matching this label selector (key=value, reserved:world)')
    .option('--from-label <selector>', 'flows from endpoints matching this label selector')
    .option('--to-label <selector>', 'flows to endpoints matching this label selector')
    .option('--identity <id>', 'flows from or to this identity (number or reserved name: host, world, ...)')
    .option('--from-identity <id>', 'flows from this identity')
    .option('--to-identity <id>', 'flows to this identity')
    .option('--port <port>', 'flows with this source or destination port')
    .option('--from-port <port>', 'flows from this port')
    .option('--to-port <port>', 'flows to this port')
    .option('--verdict <verdict>', 'FORWARDED | DROPPED | AUDIT | REDIRECTED | ERROR | TRACED | TRANSLATED')
    .option('--drop-reason-desc <reason>', 'drop reason, e.g. POLICY_DENIED, POLICY_DENY')
    .option('-t, --type <type[:subtype]>', 'event type: l7, drop, trace[:to-proxy|to-endpoint|to-stack|...], policy-verdict, or a number')
    .option('--protocol <proto>', 'L4 or L7 protocol: tcp, udp, sctp, icmp, http, dns, kafka')
    .option('--tcp-flags <flags>', 'TCP flags, comma separated: syn,ack,fin,rst,psh,urg,ece,cwr,ns')
    .option('--traffic-direction <dir>', 'ingress | egress')
    .option('--http-status <code>', 'HTTP status code or prefix (404, 5+)')
    .option('--http-method <method>', 'HTTP method (get, post)')
    .option('--http-path <regex>', 'HTTP path regular expression (/page/\\d+)')
    .option('--http-url <regex>', 'HTTP URL regular expression')
    .option('--http-header <key:value>', 'HTTP header key:value')
    .option('--node-name <pattern>', 'node name pattern (node-*, cluster/node-*)')
    .option('--uuid <uuid>', 'one flow by its uuid')
    .option('--trace-id <id>', 'flows of one W3C trace');

  let ops: FilterOp[] = [];
  cmd.on('option:not', () => ops.push({ name: 'not' }));
  for (const name of FILTER_FLAGS) {
    const isSwitch = SWITCH_FILTER_FLAGS.includes(name);
    cmd.on(`option:${name}`, (value: string) => ops.push(isSwitch ? { name, value: '' } : { name, value }));
  }
  cmd.action(async (o: ObserveOptions) => {
    const taken = ops;
    ops = [];
    process.exitCode = await runObserve(o, taken, io);
  });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
