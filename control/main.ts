// nodal-control: the control plane process (the Kubernetes API, or in standalone mode a directory of YAML) plus
// the flow relay that merges every agent's Observer stream, and the admin API
// (`nodal status`, `nodal policy check`) on a unix socket.
import { dirname, join } from 'node:path';
import { Command, Option } from 'commander';
import { pino } from 'pino';
import { nodalVersion } from '../agent/flows/index.ts';
import { ADMIN_SOCKET_NAME, DEFAULT_ADMIN_SOCKET, startAdminServer } from './admin/index.ts';
import { DirectorySource, loadKubernetesSource, startControlPlaneWith, type ClusterSource } from './index.ts';
import type { IdStore } from './model/ids-kubernetes.ts';
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
  .option('--lease-namespace <ns>', 'leader election Lease namespace (--source kubernetes; default $POD_NAMESPACE, else nodal-system)')
  .option('--lease-name <name>', 'leader election Lease name (--source kubernetes)', 'nodal-control')
  .option('--identity-gc-minutes <n>', 'delete NodalIdentity objects unused this long (--source kubernetes; leader only)', '10')
  .option('--log-level <level>', 'pino log level', 'info');
cmd.parse(process.argv);
const o = cmd.opts<{ source: 'directory' | 'kubernetes'; configDir?: string; stateDir: string; listen: string; relayListen: string; relaySocket?: string; adminSocket?: string | false; agents?: string; trustDomain: string; leaseNamespace?: string; leaseName: string; identityGcMinutes: string; logLevel: string }>();
const logger = pino({ name: 'nodal-control', level: o.logLevel });

const explicitAgents = o.agents?.split(',').filter(Boolean).map((pair) => {
  const [node, address] = pair.split('=');
  if (!node || !address) throw new Error(`--agents: "${pair}" is not node=host:port`);
  return { node, address };
});

interface Cluster {
  source: ClusterSource;
  /** ids from the cluster (--source kubernetes); default the state directory's file */
  ids?: IdStore;
  close: () => Promise<void>;
}

/**
 * the cluster as the control plane reads it. With the Kubernetes API every replica serves
 * agents from the same cluster state and the same (cluster-stored) ids; only the holder of
 * the Lease writes: status conditions and NodalIdentity objects.
 */
async function cluster(): Promise<Cluster> {
  if (o.source === 'kubernetes') {
    // imported only here: @kubernetes/client-node takes most of a second to load
    const [{ KubernetesSource }, { KubeConfig }, { KubeClient }, { LeaderElector }, { KubernetesIds }, { PersistentIds }] = await Promise.all([
      loadKubernetesSource(), import('@kubernetes/client-node'), import('./cluster/kube-http.ts'), import('./cluster/lease.ts'),
      import('./model/ids-kubernetes.ts'), import('./model/ids.ts'),
    ]);
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromDefault();
    const client = new KubeClient(kubeConfig, { timeoutMs: 30_000 });
    const gcMinutes = Number(o.identityGcMinutes);
    if (!Number.isFinite(gcMinutes) || gcMinutes <= 0) return cmd.error(`error: --identity-gc-minutes: "${o.identityGcMinutes}" is not a positive number`);
    const elector = new LeaderElector({ client, logger, name: o.leaseName, namespace: o.leaseNamespace ?? (process.env.POD_NAMESPACE || undefined) });
    const ids = new KubernetesIds({ client, logger, isLeader: () => elector.isLeader(), files: new PersistentIds(o.stateDir), gcGraceMs: gcMinutes * 60_000 });
    // a new leader allocates what the followers have been waiting for at once
    elector.on('leader', () => ids.kick());
    const source = new KubernetesSource({ logger, kubeConfig, writeStatus: () => elector.isLeader() });
    // and writes the status conditions the followers skipped, at once rather than at the next periodic resync
    elector.on('leader', () => source.resync());
    elector.start();
    await ids.start();
    return {
      source,
      ids,
      close: async () => {
        await ids.close();
        await elector.close();
      },
    };
  }
  if (o.configDir === undefined) return cmd.error('error: --config-dir <dir> is required with --source directory');
  return { source: new DirectorySource({ dir: o.configDir, logger }), close: async () => {} };
}

const c = await cluster();
// a signal while starting (a follower waits for the leader's identity ids): release the Lease and go
const early = (signal: NodeJS.Signals): void => {
  logger.info({ signal }, 'stopping before the start completed');
  void c.close().finally(() => process.exit(0));
};
process.on('SIGTERM', early);
process.on('SIGINT', early);
const cp = await startControlPlaneWith(c.source, { stateDir: o.stateDir, listen: o.listen, trustDomain: o.trustDomain, logger, ...(c.ids ? { ids: c.ids } : {}) });
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
  // releases the Lease: another replica leads at its next retry
  await c.close();
  process.exit(0);
}
process.off('SIGTERM', early);
process.off('SIGINT', early);
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
