// nodal-control: the control plane process (the Kubernetes API, or in standalone mode a directory of YAML) plus
// the flow relay that merges every agent's Observer stream, and the admin API
// (`nodal status`, `nodal policy check`) on a unix socket.
import { dirname, join } from 'node:path';
import { Command, Option } from 'commander';
import { pino } from 'pino';
import { nodalVersion } from '../agent/flows/index.ts';
import { ADMIN_SOCKET_NAME, DEFAULT_ADMIN_SOCKET, startAdminServer } from './admin/index.ts';
import { DirectorySource, loadKubernetesSource, startControlPlaneWith, type ClusterSource } from './index.ts';
import { startRelay } from './relay/index.ts';

const cmd = new Command('nodal-control')
  .description('the nodal control plane: reads the cluster from the Kubernetes API, or (standalone) from a directory of Kubernetes YAML')
  .addOption(new Option('--source <source>', 'where the cluster comes from: a directory of YAML, or the Kubernetes API (in-cluster, or $KUBECONFIG)').choices(['directory', 'kubernetes']).default('directory'))
  .option('--config-dir <dir>', 'directory of YAML documents to watch (--source directory)')
  .requiredOption('--state-dir <dir>', 'identities, ids and versions persist here')
  .option('--listen <host:port>', 'gRPC for agents', '0.0.0.0:15012')
  .option('--relay-listen <host:port>', 'relay Observer gRPC', '0.0.0.0:4245')
  .option('--relay-socket <path>', 'relay Observer unix socket')
  .option('--admin-socket <path>', `admin API unix socket (default: ${ADMIN_SOCKET_NAME} beside --relay-socket, else ${DEFAULT_ADMIN_SOCKET})`)
  .option('--no-admin-socket', 'do not serve the admin API')
  .option('--agents <list>', 'node=host:port,... Observer addresses (default: each node\'s underlay IP, port 4244)')
  .option('--trust-domain <domain>', 'SPIFFE trust domain', 'cluster.local')
  .option('--log-level <level>', 'pino log level', 'info');
cmd.parse(process.argv);
const o = cmd.opts<{ source: 'directory' | 'kubernetes'; configDir?: string; stateDir: string; listen: string; relayListen: string; relaySocket?: string; adminSocket?: string | false; agents?: string; trustDomain: string; logLevel: string }>();
const logger = pino({ name: 'nodal-control', level: o.logLevel });

const explicitAgents = o.agents?.split(',').filter(Boolean).map((pair) => {
  const [node, address] = pair.split('=');
  if (!node || !address) throw new Error(`--agents: "${pair}" is not node=host:port`);
  return { node, address };
});

/** the cluster as the control plane reads it */
async function clusterSource(): Promise<ClusterSource> {
  if (o.source === 'kubernetes') {
    // imported only here: @kubernetes/client-node takes most of a second to load
    const { KubernetesSource } = await loadKubernetesSource();
    return new KubernetesSource({ logger });
  }
  if (o.configDir === undefined) return cmd.error('error: --config-dir <dir> is required with --source directory');
  return new DirectorySource({ dir: o.configDir, logger });
}

const cp = await startControlPlaneWith(await clusterSource(), { stateDir: o.stateDir, listen: o.listen, trustDomain: o.trustDomain, logger });
const relay = await startRelay({
  agents: () => explicitAgents ?? cp.state().nodes.map((n) => ({ node: n.name, address: `${n.underlayIp}:4244` })),
  tcp: o.relayListen,
  ...(o.relaySocket ? { socketPath: o.relaySocket } : {}),
  logger,
});
const adminSocket = o.adminSocket === false ? undefined : o.adminSocket ?? (o.relaySocket ? join(dirname(o.relaySocket), ADMIN_SOCKET_NAME) : DEFAULT_ADMIN_SOCKET);
const admin = adminSocket ? await startAdminServer({ plane: cp, socketPath: adminSocket, logger, version: nodalVersion() }) : undefined;
logger.info({ address: cp.address, relay: o.relayListen, admin: adminSocket }, 'control plane started');

async function stop(signal: string): Promise<void> {
  logger.info({ signal }, 'stopping');
  await admin?.close();
  await relay.close();
  await cp.close();
  process.exit(0);
}
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
