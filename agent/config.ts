// The agent's configuration: parsed and validated once, at the edge; the rest of the
// agent takes these typed values.
import { Command, InvalidArgumentError } from 'commander';
import { isIP } from 'node:net';
import { CGROUP_LAYOUTS, type CgroupLayout } from './cgroups.ts';

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
  logLevel: string;
  /** write to the Kubernetes API (agent/kube.ts): the Node's nodal.io/wg-pub-key, enrolled pods' nodal.io/redirected */
  kubernetes: boolean;
  ports: { outbound: number; inbound: number; health: number; metrics: number; observer: number };
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
    .option('--log-level <level>', 'pino log level', 'info')
    .option('--kubernetes', 'publish the WireGuard key on this Node and annotate enrolled pods (credentials: in-cluster ServiceAccount, else $KUBECONFIG)', false)
    .option('--outbound-port <port>', 'proxy outbound listener', port, 15001)
    .option('--inbound-port <port>', 'proxy inbound tunnel listener', port, 15008)
    .option('--health-port <port>', '/healthz and /readyz', port, 15021)
    .option('--metrics-port <port>', 'Prometheus metrics', port, 9964)
    .option('--observer-port <port>', 'Observer gRPC', port, 4244)
    .exitOverride();
  cmd.parse(argv, { from: 'user' });
  const o = cmd.opts<Record<string, unknown>>();
  const wgMode = String(o.wgMode);
  if (!['auto', 'kernel', 'userspace'].includes(wgMode)) throw new InvalidArgumentError(`--wg-mode must be auto, kernel or userspace, not "${wgMode}"`);
  const cgroupLayout = String(o.cgroupLayout) as CgroupLayout;
  if (!CGROUP_LAYOUTS.includes(cgroupLayout)) throw new InvalidArgumentError(`--cgroup-layout must be auto, sandbox or kubelet, not "${cgroupLayout}"`);
  const flowCapacity = Number(o.flowCapacity);
  if (!Number.isInteger(flowCapacity) || flowCapacity < 16) throw new InvalidArgumentError('--flow-capacity must be an integer >= 16');
  return {
    node: String(o.node), control: String(o.control), stateDir: String(o.stateDir), cgroup: String(o.cgroup), cgroupLayout,
    proxyIp: String(o.proxyIp), tunnelIp: String(o.tunnelIp), underlayIp: String(o.underlayIp),
    podCidrs: o.podCidr as string[], observerSocket: String(o.observerSocket), bpfObjects: String(o.bpfObjects),
    wgMode: wgMode as AgentConfig['wgMode'], flowCapacity, logLevel: String(o.logLevel),
    kubernetes: o.kubernetes === true,
    ports: {
      outbound: o.outboundPort as number, inbound: o.inboundPort as number, health: o.healthPort as number,
      metrics: o.metricsPort as number, observer: o.observerPort as number,
    },
  };
}
