// `nodal policy check`: the verdict the mesh would give a connection (and a request) from
// one pod to another pod or a Service, and which policy and rule decide it, explained by
// the control plane from the same compiled policy the agents enforce. The explanation is
// the output, so allowed and denied both exit 0; 2 means the question was malformed (an
// unknown pod: the close matches are listed), 1 that the control plane did not answer.
import type { Command } from 'commander';
import type { BackendVerdict, Explanation, ExplainRequest, Stage } from '../control/admin/index.ts';
import { Exit, outputOf, serverOf, timeoutOf, withAdmin, type CliIO } from './status.ts';

export interface PolicyCheckOptions {
  from?: string;
  to?: string;
  port?: string;
  httpMethod?: string;
  httpPath?: string;
  httpHost?: string;
  server?: string;
  output?: string;
  timeout?: string;
}

/** the request the flags describe; throws with the flag to fix */
export function checkRequest(o: PolicyCheckOptions): ExplainRequest {
  const missing = (['from', 'to', 'port'] as const).filter((k) => !o[k]);
  if (missing.length > 0) throw new Error(`${missing.map((m) => `--${m}`).join(', ')} ${missing.length === 1 ? 'is' : 'are'} required`);
  const port = Number(o.port);
  if (!/^\d+$/.test(o.port!) || port < 1 || port > 65535) throw new Error(`--port: "${o.port}" is not a port (1-65535)`);
  return { from: o.from!, to: o.to!, port, method: o.httpMethod ?? '', path: o.httpPath ?? '', host: o.httpHost ?? '' };
}

export async function runPolicyCheck(o: PolicyCheckOptions, io: CliIO = { out: process.stdout, err: process.stderr }): Promise<number> {
  let req: ExplainRequest;
  let output: 'table' | 'json';
  let timeoutMs: number;
  try {
    req = checkRequest(o);
    output = outputOf(o.output);
    timeoutMs = timeoutOf(o.timeout);
  } catch (err) {
    io.err.write(`nodal policy check: ${(err as Error).message}\n`);
    return Exit.USAGE;
  }
  return withAdmin('policy check', serverOf(o.server), timeoutMs, io, async (c) => {
    const e = await c.explain(req, { deadlineMs: timeoutMs });
    // the verdict first: proto-loader puts repeated fields ahead of everything else
    const { verdict, summary, ...rest } = e;
    io.out.write(output === 'json' ? `${JSON.stringify({ verdict, summary, ...rest }, null, 2)}\n` : `${formatExplanation(e)}\n`);
    return Exit.OK;
  });
}

// ---- human output ----

/** labels are padded to one column so the reasons line up */
const LABEL = 13;
const row = (label: string, text: string, indent = ''): string => `${indent}${label.padEnd(LABEL - indent.length)}${text}`;

function ruleLines(s: Stage, indent: string): string[] {
  return s.rules.map((r, i) => row(i === 0 ? 'rules' : '',
    `${r.policy} ${r.action} rule ${r.rule}: from ${r.from}, to ${r.to}, when ${r.when}${r.matched ? ' → matches' : ''}`, indent));
}

function stageLines(label: string, s: Stage, indent = ''): string[] {
  const lines = [row(label, `${s.verdict}: ${s.text}`, indent)];
  if (s.lookup) lines.push(row('', `lookup ${s.lookup}`, indent));
  lines.push(...ruleLines(s, indent));
  return lines;
}

/** how the destination proxy reads the port, and whether this request was judged at L7 */
function protocolText(g: BackendVerdict, appProtocol: string): string {
  switch (g.protocol) {
    case 'http':
      return `HTTP/1.1 (appProtocol ${appProtocol || 'http'}): ${g.l7 ? 'this request judged at L7' : 'requests are judged one by one at L7; without --http-method/--http-path, judged at L4 here'}`;
    case 'opaque':
      return `opaque TCP (appProtocol ${appProtocol || '?'}): one L4 decision per connection`;
    case 'detect':
      return `detected from the first bytes (no appProtocol): HTTP/1.1 is judged per request, anything else once at L4; ${g.l7 ? 'this request judged at L7' : 'judged at L4 here'}`;
  }
}

function backendLines(g: BackendVerdict, e: Explanation): string[] {
  const lines: string[] = [];
  const who = g.pods.length === 1 ? g.pods[0]!.pod : `${g.pods.length} pods`;
  lines.push(row('backend', `${who}, identity ${g.identity} (${g.identityName}), port ${g.port}`));
  for (const [i, p] of g.pods.entries()) {
    lines.push(row(i === 0 ? 'path' : '', `${g.pods.length > 1 ? `${p.pod}: ` : ''}${p.path}: ${p.route}${p.enrolled ? '' : ' [not enrolled]'}`, '  '));
  }
  if (e.source.enrolled) lines.push(row('protocol', protocolText(g, e.destination.appProtocol), '  '));
  const where = g.decision.where === 'ingress-guard' ? 'ingress' : g.decision.where === 'none' ? 'decision' : 'proxy';
  lines.push(...stageLines(where, g.decision, '  '));
  return lines;
}

export function formatExplanation(e: Explanation): string {
  const d = e.destination;
  const dst = d.kind === 'service' ? `Service ${d.namespace}/${d.name} (${d.ip}:${d.port})` : `${d.namespace}/${d.name} (${d.ip}:${d.port})`;
  const http = e.request.method ? `  ${e.request.method} ${e.request.path}${e.request.host ? ` (host ${e.request.host})` : ''}` : '';
  const lines = [
    `${e.source.namespace}/${e.source.name} → ${dst}${http}`,
    `${e.verdict}: ${e.summary}`,
    '',
    row('source', `${e.source.namespace}/${e.source.name} on ${e.source.node} (${e.source.ip}), identity ${e.source.identity} (${e.source.identityName}), ${e.source.enrolled ? 'enrolled' : 'not enrolled (outside the mesh)'}`),
  ];
  if (d.kind === 'service') {
    lines.push(row('destination', `Service ${d.namespace}/${d.name} ${d.ip}:${d.port} → target port ${d.targetPort}` +
      `${d.appProtocol ? `, appProtocol ${d.appProtocol}` : ''}, ${d.backendCount} backend${d.backendCount === 1 ? '' : 's'}` +
      `${e.connect ? `, identity ${d.identity || 'none shared'}` : ''}`));
  } else {
    lines.push(row('destination', `pod ${d.namespace}/${d.name} ${d.ip}:${d.port}, identity ${d.identity}${d.appProtocol ? `, appProtocol ${d.appProtocol}` : ''}`));
  }
  if (e.connect) lines.push(...stageLines('connect()', e.connect));
  for (const g of e.backends) lines.push(...backendLines(g, e));
  for (const n of e.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}

export function registerPolicy(program: Command): void {
  const policy = program.command('policy').description('explain the mesh\'s policy decisions');
  policy.command('check')
    .description('the verdict the mesh would give a connection (and request), and which policy and rule decide it')
    .option('--from <ns/pod>', 'the client pod')
    .option('--to <ns/pod|ns/service>', 'the destination pod or Service (pod:ns/name or svc:ns/name when both exist)')
    .option('--port <port>', 'the port the client connects to (a Service port for a Service)')
    .option('--http-method <method>', 'judge one HTTP request with this method (L7)')
    .option('--http-path <path>', 'and this path')
    .option('--http-host <host>', 'and this Host header')
    .option('--server <address>', 'control plane admin API: unix:/path or host:port (env NODAL_CONTROL)')
    .option('-o, --output <format>', 'table | json', 'table')
    .option('--timeout <duration>', 'how long to wait for the control plane', '5s')
    // a malformed command line is a usage error (2), like an unknown pod
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : Exit.USAGE))
    .action(async (o: PolicyCheckOptions) => {
      process.exitCode = await runPolicyCheck(o);
    });
}
