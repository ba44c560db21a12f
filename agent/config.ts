// The agent's configuration: parsed and validated once, at the edge; the rest of the
// agent takes these typed values.
import { Command, InvalidArgumentError } from 'commander';
import { isIP } from 'node:net';
import { CGROUP_LAYOUTS, type CgroupLayout } from './cgroups.ts';
import { proxyWorkerCount } from './proxy/workers.ts';
import { ALL_ACCESS_LOG_FIELDS, type AccessLogField } from './telemetry/index.ts';

export interface AgentConfig {
  node: string;
  control: string;
  stateDir: string;
  cgroup: string;
  /** where pods' cgroups are found under --cgroup and the cgroup2 mount (agent/cgroups.ts) */
  cgroupLayout: CgroupLayout;
  proxyIp: string;
  tunnelIp: string;
  underlayIp: string;
  podCidrs: string[];
  observerSocket: string;
  bpfObjects: string;
  wgMode: 'auto' | 'kernel' | 'userspace';
  flowCapacity: number;
  /** proxy worker threads, one per core by default (agent/proxy/workers.ts) */
  proxyWorkers: number;
  logLevel: string;
  /** write to the Kubernetes API (agent/kube.ts): the Node's nodal.io/wg-pub-key, enrolled pods' nodal.io/redirected */
  kubernetes: boolean;
  ports: { outbound: number; inbound: number; health: number; metrics: number; observer: number };
  /** one JSON line per request; absent = off (the default) */
  accessLog?: { destination: string; fields: AccessLogField[] };
  /** spans per proxy hop: exported only when otlpEndpoint is set */
  tracing: { otlpEndpoint?: string; sampleRatio: number };
}

const ip = (v: string): string => {
  if (!isIP(v)) throw new InvalidArgumentError(`"${v}" is not an IP address`);
  return v;
};
const port = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new InvalidArgumentError(`"${v}" is not a port`);
  return n;
};

export function parseAgentArgs(argv: readonly string[]): AgentConfig {
  const cmd = new Command('nodal-agent')
    .description('the nodal node agent: datapath, proxy, WireGuard, flows')
    .requiredOption('--node <name>', 'this node\'s name')
    .requiredOption('--control <host:port>', 'control plane gRPC address (port 15012)')
    .requiredOption('--state-dir <dir>', 'keys and the last good snapshot live here')
    .requiredOption('--cgroup <dir>', 'cgroup-v2 directory holding this node\'s pods')
    .option('--cgroup-layout <layout>', 'auto | sandbox | kubelet: where pods\' cgroups are found', 'auto')
    .requiredOption('--proxy-ip <ip>', 'the proxy address pods reach (redirect target)', ip)
    .requiredOption('--tunnel-ip <ip>', 'this node\'s WireGuard tunnel address', ip)
    .requiredOption('--underlay-ip <ip>', 'the address peers reach this node at', ip)
    .option('--pod-cidr <cidr...>', 'pod CIDRs of this node', [])
    .option('--observer-socket <path>', 'Observer API unix socket', '/run/nodal/observer.sock')
    .option('--bpf-objects <dir>', 'compiled BPF objects', 'bpf/build')
    .option('--wg-mode <mode>', 'auto | kernel | userspace', 'auto')
    .option('--flow-capacity <n>', 'flows kept in the per-node ring', '65536')
    .option('--proxy-workers <n|auto>', 'proxy worker threads sharing the listeners; auto: one per CPU the agent may use (its cgroup CPU limit, else the CPUs it may run on)', 'auto')
    .option('--log-level <level>', 'pino log level', 'info')
    .option('--kubernetes', 'publish the WireGuard key on this Node and annotate enrolled pods (credentials: in-cluster ServiceAccount, else $KUBECONFIG)', false)
    .option('--outbound-port <port>', 'proxy outbound listener', port, 15001)
    .option('--inbound-port <port>', 'proxy inbound tunnel listener', port, 15008)
    .option('--health-port <port>', '/healthz and /readyz', port, 15021)
    .option('--metrics-port <port>', 'Prometheus metrics', port, 9964)
    .option('--observer-port <port>', 'Observer gRPC', port, 4244)
    .option('--access-log <path|stdout>', 'write one JSON line per proxied request to this file, or to stdout (default: off)')
    .option('--access-log-fields <list>', `comma-separated access log fields (default: all): ${ALL_ACCESS_LOG_FIELDS.join(',')}`)
    .option('--otlp-endpoint <url>', 'export a span per proxy hop over OTLP/HTTP protobuf to this collector, e.g. http://otel-collector:4318 (default: off)')
    .option('--trace-sample-ratio <ratio>', 'share of the traces the proxy starts that are sampled, 0..1; a caller\'s traceparent decides for its own', '1')
    .exitOverride();
  cmd.parse(argv, { from: 'user' });
  const o = cmd.opts<Record<string, unknown>>();
  const wgMode = String(o.wgMode);
  if (!['auto', 'kernel', 'userspace'].includes(wgMode)) throw new InvalidArgumentError(`--wg-mode must be auto, kernel or userspace, not "${wgMode}"`);
  const cgroupLayout = String(o.cgroupLayout) as CgroupLayout;
  if (!CGROUP_LAYOUTS.includes(cgroupLayout)) throw new InvalidArgumentError(`--cgroup-layout must be auto, sandbox or kubelet, not "${cgroupLayout}"`);
  const flowCapacity = Number(o.flowCapacity);
  const accessLog = parseAccessLog(o.accessLog, o.accessLogFields);
  const sampleRatio = Number(o.traceSampleRatio);
  if (!(sampleRatio >= 0 && sampleRatio <= 1)) throw new InvalidArgumentError(`--trace-sample-ratio must be a number within 0..1, not "${String(o.traceSampleRatio)}"`);
  const otlpEndpoint = o.otlpEndpoint === undefined ? undefined : String(o.otlpEndpoint);
  if (otlpEndpoint !== undefined && !/^https?:\/\/[^/]/.test(otlpEndpoint)) {
    throw new InvalidArgumentError(`--otlp-endpoint must be an http:// or https:// URL (the OTLP/HTTP receiver, port 4318), not "${otlpEndpoint}"`);
  }
  if (!Number.isInteger(flowCapacity) || flowCapacity < 16) throw new InvalidArgumentError('--flow-capacity must be an integer >= 16');
  const proxyWorkers = o.proxyWorkers === 'auto' ? proxyWorkerCount() : Number(o.proxyWorkers);
  if (!Number.isInteger(proxyWorkers) || proxyWorkers < 1 || proxyWorkers > 256) {
    throw new InvalidArgumentError(`--proxy-workers must be auto or a whole number within 1..256, not "${String(o.proxyWorkers)}"`);
  }
  return {
    node: String(o.node), control: String(o.control), stateDir: String(o.stateDir), cgroup: String(o.cgroup), cgroupLayout,
    proxyIp: String(o.proxyIp), tunnelIp: String(o.tunnelIp), underlayIp: String(o.underlayIp),
    podCidrs: o.podCidr as string[], observerSocket: String(o.observerSocket), bpfObjects: String(o.bpfObjects),
    wgMode: wgMode as AgentConfig['wgMode'], flowCapacity, proxyWorkers, logLevel: String(o.logLevel),
    kubernetes: o.kubernetes === true,
    ports: {
      outbound: o.outboundPort as number, inbound: o.inboundPort as number, health: o.healthPort as number,
      metrics: o.metricsPort as number, observer: o.observerPort as number,
    },
    ...(accessLog ? { accessLog } : {}),
    tracing: { ...(otlpEndpoint ? { otlpEndpoint } : {}), sampleRatio },
  };
}

function parseAccessLog(destination: unknown, fieldList: unknown): AgentConfig['accessLog'] {
  if (destination === undefined) {
    if (fieldList !== undefined) throw new InvalidArgumentError('--access-log-fields needs --access-log');
    return undefined;
  }
  const dest = String(destination);
  if (dest === '') throw new InvalidArgumentError('--access-log needs a file path or "stdout"');
  if (fieldList === undefined) return { destination: dest, fields: [...ALL_ACCESS_LOG_FIELDS] };
  const fields = String(fieldList).split(',').map((f) => f.trim()).filter((f) => f !== '');
  const unknown = fields.filter((f) => !(ALL_ACCESS_LOG_FIELDS as string[]).includes(f));
  if (unknown.length > 0) throw new InvalidArgumentError(`--access-log-fields: unknown field(s) ${unknown.join(', ')}; known: ${ALL_ACCESS_LOG_FIELDS.join(', ')}`);
  if (fields.length === 0) throw new InvalidArgumentError('--access-log-fields is empty');
  return { destination: dest, fields: fields as AccessLogField[] };
}
