// nodal-agent: one per node. Composes the datapath (BPF state), the shared proxy,
// WireGuard, flows (store + Observer API), the control-plane client and the admin
// endpoints. Start order: bind and load everything, then connect to the control plane;
// the last good snapshot on disk is applied first, so a restart while the control plane
// is away keeps enforcing.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { AgentControlClient, loadKubeClient } from '../control/index.ts';
import { cgroupQuery, probe } from '../native/index.ts';
import type { EndpointInfo, Snapshot } from '../control/api/types.ts';
import { parseAgentArgs } from './config.ts';
import { Datapath } from './datapath/index.ts';
import { PodCgroups } from './cgroups.ts';
import { desiredFromSnapshot } from './enrollment.ts';
import { FlowStore, flowFromVerdictEvent, nodalVersion, startObserver } from './flows/index.ts';
import { ProxyWorkers } from './proxy/index.ts';
import { WireGuard } from './wireguard/index.ts';
import { startAdmin } from './admin.ts';
import { agentStatus, FlowRate } from './status.ts';
import { KubeAnnotator } from './kube.ts';

/** how often enrollment is re-derived even without a snapshot change (pod restarts) */
const RECONCILE_INTERVAL_MS = 1000;

const cfg = parseAgentArgs(process.argv.slice(2));
const logger = pino({ name: 'nodal-agent', level: cfg.logLevel, base: { node: cfg.node } });
mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });

const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'nodal_agent_' });
const verdicts = new Counter({ name: 'nodal_datapath_verdicts_total', help: 'connection verdicts from the kernel datapath', labelNames: ['verdict', 'hook'], registers: [registry] });
const drops = new Gauge({ name: 'nodal_datapath_drops', help: 'drops counted by the kernel datapath', labelNames: ['hook'], registers: [registry] });
const lost = new Gauge({ name: 'nodal_datapath_lost_events', help: 'verdict events lost because the ring buffer was full', registers: [registry] });
const enrolledGauge = new Gauge({ name: 'nodal_enrolled_endpoints', help: 'local endpoints with redirection in place', registers: [registry] });

let current: Snapshot | undefined;
let lastEnrolled: string[] = [];
let lostReported = 0n;
let byCgroup = new Map<bigint, EndpointInfo>();

const datapath = await Datapath.open({
  node: cfg.node, cgroupPath: cfg.cgroup, objectDir: cfg.bpfObjects,
  proxy: { ipv4: cfg.proxyIp, port: cfg.ports.outbound },
});
logger.info({ adopted: datapath.report.adopted, attached: datapath.report.attached, pinRoot: datapath.pinRoot }, 'datapath ready');
// the datapath has attached at --cgroup, so a cgroup2 mount exists; --cgroup stands in if
// /proc/mounts could not say where
const podCgroups = new PodCgroups({ cgroup2: probe().cgroup2 ?? cfg.cgroup, nodeCgroup: cfg.cgroup, layout: cfg.cgroupLayout });

const wg = await WireGuard.setup({ keyDir: cfg.stateDir, tunnelIp: cfg.tunnelIp, mode: cfg.wgMode, logger });
/** readers (nodal dev status) must never see half a file: write aside, then rename */
function writeStateFile(name: string, data: string): void {
  const tmp = join(cfg.stateDir, `.${name}.tmp`);
  writeFileSync(tmp, data);
  renameSync(tmp, join(cfg.stateDir, name));
}

writeStateFile('wg-public.key', `${wg.publicKey}\n`);
logger.info({ mode: wg.mode, publicKey: wg.publicKey }, 'wireguard ready');

// --kubernetes: the key goes on this Node, enrollment on the pods (asynchronous, retried;
// the data path never waits on the API server)
let annotator: KubeAnnotator | undefined;
if (cfg.kubernetes) {
  // loaded only here: @kubernetes/client-node takes most of a second to import
  const [{ KubeConfig }, { KubeClient }] = await Promise.all([import('@kubernetes/client-node'), loadKubeClient()]);
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromDefault();
  annotator = new KubeAnnotator({ client: new KubeClient(kubeConfig, { timeoutMs: 10_000 }), node: cfg.node, logger });
  logger.info({ server: kubeConfig.getCurrentCluster()?.server }, 'kubernetes: publishing the WireGuard key and pod enrollment');
  annotator.setPublicKey(wg.publicKey);
}

// the proxy on every core it is given (--proxy-workers): each worker thread opens its own
// access log and span exporter from this configuration (both off unless asked for)
if (cfg.accessLog || cfg.tracing.otlpEndpoint) logger.info({ accessLog: cfg.accessLog?.destination, otlp: cfg.tracing.otlpEndpoint, sampleRatio: cfg.tracing.sampleRatio }, 'proxy telemetry');

const store = new FlowStore({ capacity: cfg.flowCapacity });
const flowRate = new FlowRate(() => store.seen).start();
const proxy = await ProxyWorkers.start({
  workers: cfg.proxyWorkers,
  node: cfg.node,
  logLevel: cfg.logLevel,
  outbound: { host: cfg.proxyIp, port: cfg.ports.outbound },
  inbound: { host: cfg.tunnelIp, port: cfg.ports.inbound },
  upstreamBindIp: cfg.proxyIp,
  pinRoot: datapath.pinRoot,
  onFlow: (f) => store.add(f),
  logger,
  accessLog: cfg.accessLog,
  tracing: {
    sampleRatio: cfg.tracing.sampleRatio,
    otlp: cfg.tracing.otlpEndpoint === undefined ? undefined : {
      endpoint: cfg.tracing.otlpEndpoint,
      resource: { 'service.name': 'nodal-proxy', 'service.version': nodalVersion(), 'k8s.node.name': cfg.node },
      scope: { name: 'nodal-proxy', version: nodalVersion() },
    },
  },
});
new Counter({
  name: 'nodal_proxy_worker_restarts_total', help: 'proxy worker threads started again after one died', registers: [registry],
  collect() { this.reset(); this.inc(proxy.restartCount); },
});

// one context for every kernel verdict, updated when a snapshot applies: ingest makes no
// object per event beyond the flow itself
const flowContext: { node: string; snapshot?: Snapshot; localEndpoint: (cgroupId: bigint) => EndpointInfo | undefined } = {
  node: cfg.node, localEndpoint: (id) => byCgroup.get(id),
};

datapath.subscribe((events) => {
  for (const ev of events) {
    verdicts.inc({ verdict: ev.verdict, hook: ev.hook });
    store.add(flowFromVerdictEvent(ev, flowContext));
  }
});

const observer = await startObserver({ store, node: cfg.node, tcp: `0.0.0.0:${cfg.ports.observer}`, socketPath: cfg.observerSocket, logger });

function reconcile(reason: string): void {
  if (!current) return;
  const r = desiredFromSnapshot(current, cfg.node, podCgroups.ids);
  podCgroups.retain(current.endpoints.filter((e) => e.node === cfg.node).map((e) => e.uid));
  const diff = datapath.reconcile(r.desired);
  byCgroup = r.byCgroup;
  const changed = Object.values(diff).some((d) => d.added + d.updated + d.removed > 0);
  if (changed || r.enrolled.join() !== lastEnrolled.join()) {
    logger.info({ reason, diff, enrolled: r.enrolled, pending: r.pending }, 'datapath reconciled');
    // DESIGN §9: enrollment is visible once redirection is in place
    writeStateFile('enrolled.json', `${JSON.stringify({ version: current.version, enrolled: r.enrolled })}\n`);
  }
  lastEnrolled = r.enrolled;
  annotator?.enrolled(current.version, r.enrolled, current.endpoints.filter((e) => e.node === cfg.node).map((e) => `${e.namespace}/${e.name}`));
  enrolledGauge.set(r.enrolled.length);
  const c = datapath.counters();
  drops.set({ hook: 'connect' }, Number(c.dropConnect));
  drops.set({ hook: 'ingress' }, Number(c.dropIngress));
  lost.set(Number(c.eventsLost));
  // kernel-side loss reaches flow readers as lost_events, never silently
  if (c.eventsLost > lostReported) {
    store.addLost(Number(c.eventsLost - lostReported), 'PERF_EVENT_RING_BUFFER');
    lostReported = c.eventsLost;
  }
}

async function apply(s: Snapshot): Promise<void> {
  current = s;
  flowContext.snapshot = s;
  reconcile(`snapshot ${s.version}`);
  proxy.update(s);
  await wg.setPeers(s.nodes.filter((n) => n.name !== cfg.node && n.wgPublicKey).map((n) => ({
    node: n.name, publicKey: n.wgPublicKey, endpoint: `${n.underlayIp}:51871`, tunnelIp: n.tunnelIp, podCidrs: n.podCidrs,
  })));
}

const client = new AgentControlClient({
  address: cfg.control, node: cfg.node, stateDir: cfg.stateDir, logger,
  hello: () => ({ wgPublicKey: wg.publicKey }),
  apply,
});

const admin = await startAdmin({
  host: '0.0.0.0', healthPort: cfg.ports.health, metricsPort: cfg.ports.metrics,
  // the agent's own metrics and every proxy worker's, summed per series
  metrics: async () => AggregatorRegistry.aggregate([await registry.getMetricsAsJSON(), ...await proxy.metrics()]).metrics(),
  contentType: registry.contentType,
  readiness: {
    ready: () => {
      const reasons: string[] = [];
      if (!current) reasons.push('no snapshot yet');
      if (!proxy.ready) reasons.push('proxy has no configuration');
      return { ok: reasons.length === 0, reasons };
    },
  },
  status: () => agentStatus({
    node: cfg.node, version: nodalVersion(), snapshot: () => current, datapath, cgroupQuery, wireguard: wg,
    enrolled: () => lastEnrolled, flows: store, flowRate,
  }),
});

client.start();
const timer = setInterval(() => {
  try {
    reconcile('periodic');
  } catch (err) {
    logger.error({ err }, 'reconcile failed');
  }
}, RECONCILE_INTERVAL_MS);

let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'stopping: pinned programs keep enforcing');
  clearInterval(timer);
  await client.close();
  await annotator?.close();
  await admin.close();
  await observer.close();
  // each worker drains its access log and spans before it exits
  await proxy.close();
  await wg.close({ removeInterface: false });
  await datapath.close();
  process.exit(0);
}
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
logger.info({ control: cfg.control }, 'agent started');
