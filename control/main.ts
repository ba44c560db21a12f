// nodal-control: the control plane process in standalone mode (a directory of YAML) plus
// the flow relay that merges every agent's Observer stream.
import { Command } from 'commander';
import { pino } from 'pino';
import { startControlPlane } from './index.ts';
import { startRelay } from './relay/index.ts';

const cmd = new Command('nodal-control')
  .description('the nodal control plane (standalone: watches a directory of Kubernetes YAML)')
  .requiredOption('--config-dir <dir>', 'directory of YAML documents to watch')
  .requiredOption('--state-dir <dir>', 'identities, ids and versions persist here')
  .option('--listen <host:port>', 'gRPC for agents', '0.0.0.0:15012')
  .option('--relay-listen <host:port>', 'relay Observer gRPC', '0.0.0.0:4245')
  .option('--relay-socket <path>', 'relay Observer unix socket')
  .option('--agents <list>', 'node=host:port,... Observer addresses (default: each node\'s underlay IP, port 4244)')
  .option('--trust-domain <domain>', 'SPIFFE trust domain', 'cluster.local')
  .option('--log-level <level>', 'pino log level', 'info');
cmd.parse(process.argv);
const o = cmd.opts<{ configDir: string; stateDir: string; listen: string; relayListen: string; relaySocket?: string; agents?: string; trustDomain: string; logLevel: string }>();
const logger = pino({ name: 'nodal-control', level: o.logLevel });

const explicitAgents = o.agents?.split(',').filter(Boolean).map((pair) => {
  const [node, address] = pair.split('=');
  if (!node || !address) throw new Error(`--agents: "${pair}" is not node=host:port`);
  return { node, address };
});

const cp = await startControlPlane({ configDir: o.configDir, stateDir: o.stateDir, listen: o.listen, trustDomain: o.trustDomain, logger });
const relay = await startRelay({
  agents: () => explicitAgents ?? cp.state().nodes.map((n) => ({ node: n.name, address: `${n.underlayIp}:4244` })),
  tcp: o.relayListen,
  ...(o.relaySocket ? { socketPath: o.relaySocket } : {}),
  logger,
});
logger.info({ address: cp.address, relay: o.relayListen }, 'control plane started');

async function stop(signal: string): Promise<void> {
  logger.info({ signal }, 'stopping');
  await relay.close();
  await cp.close();
  process.exit(0);
}
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
