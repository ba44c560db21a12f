// One proxy worker thread (ProxyWorkers, workers.ts): a whole NodeProxy whose listeners
// share the node's two ports with the other workers (SO_REUSEPORT, the kernel spreads new
// connections), reading original destinations from the datapath's pinned redirect map
// itself. It owns its telemetry (access log, spans) and its Prometheus registry; flows go
// to the agent thread in batches, metrics when the agent thread asks.
import { parentPort, workerData, threadId } from 'node:worker_threads';
import { pino } from 'pino';
import { Counter, Registry } from 'prom-client';
import type { Snapshot } from '../../control/api/types.ts';
import type { Flow } from '../flows/flow.ts';
import { constants, lookupRedirectIn, openAgentMap } from '../datapath/index.ts';
import { AccessLog, OtlpExporter, Tracer } from '../telemetry/index.ts';
import type { Redirect } from './context.ts';
import { GcWatch } from './gc.ts';
import { NodeProxy } from './proxy.ts';
import type { FromWorker, ToWorker, WorkerInit } from './workers.ts';

/** flows are posted at most this long after they happened, or when this many wait */
const FLOW_BATCH_MS = 20;
const FLOW_BATCH_MAX = 256;

const init = workerData as WorkerInit;
const port = parentPort!;
const post = (m: FromWorker): void => port.postMessage(m);
const logger = pino({ name: 'nodal-agent', level: init.logLevel, base: { node: init.node, worker: init.id } });
const registry = new Registry();
const accepted = new Counter({
  name: 'nodal_proxy_worker_connections_total',
  help: 'connections accepted by each proxy worker thread, by side of the proxy (the kernel spreads them over the workers)',
  labelNames: ['worker', 'direction'],
  registers: [registry],
});
// this thread's GC pauses, which every request it carries waits out
const gc = new GcWatch(registry, String(init.id));

let pending: Flow[] = [];
let flushTimer: NodeJS.Timeout | undefined;
function flushFlows(): void {
  if (flushTimer) clearTimeout(flushTimer);
  flushTimer = undefined;
  if (pending.length === 0) return;
  const flows = pending;
  pending = [];
  post({ t: 'flows', flows });
}
function onFlow(f: Flow): void {
  pending.push(f);
  if (pending.length >= FLOW_BATCH_MAX) flushFlows();
  else flushTimer ??= setTimeout(flushFlows, FLOW_BATCH_MS);
}

async function start(): Promise<void> {
  const redirects = init.originalDestinationModule ? undefined : openAgentMap(init.pinRoot, constants.MapName.redirectsBySocket);
  const lookup: (ip: string, port: number) => Redirect | undefined = redirects
    ? (ip, p) => lookupRedirectIn(redirects, ip, p, { remove: true })
    : ((await import(init.originalDestinationModule!)) as { originalDestination: (ip: string, port: number) => Redirect | undefined }).originalDestination;
  const accessLog = init.accessLog ? await AccessLog.open({ ...init.accessLog, registry }) : undefined;
  const tracer = new Tracer({
    sampleRatio: init.tracing.sampleRatio,
    exporter: init.tracing.otlp === undefined ? undefined : new OtlpExporter({
      ...init.tracing.otlp, registry, onError: (err) => logger.warn({ err: err.message }, 'span export failed'),
    }),
  });
  const worker = String(init.id);
  const proxy = await NodeProxy.start({
    node: init.node, outbound: init.outbound, inbound: init.inbound, upstreamBindIp: init.upstreamBindIp,
    ...(init.peerTunnelPort === undefined ? {} : { peerTunnelPort: init.peerTunnelPort }),
    reusePort: true,
    originalDestination: lookup,
    onFlow,
    onAccept: (side) => accepted.inc({ worker, direction: side }),
    registry,
    logger,
    telemetry: { accessLog, tracer },
  });

  port.on('message', (m: ToWorker) => {
    switch (m.t) {
      case 'snapshot':
        apply(proxy, m.snapshot);
        break;
      case 'metrics':
        registry.getMetricsAsJSON().then(
          (metrics) => post({ t: 'metrics', id: m.id, metrics }),
          (err: Error) => post({ t: 'metrics', id: m.id, error: err.message }),
        );
        break;
      case 'close':
        void (async () => {
          await proxy.close();
          flushFlows();
          // after the proxy: the last requests' lines and spans are in
          await Promise.all([accessLog?.close(), tracer.shutdown()]);
          redirects?.close();
          gc.stop();
          post({ t: 'closed' });
          port.close();
        })();
        break;
    }
  });
  post({ t: 'listening', threadId });
}

function apply(proxy: NodeProxy, s: Snapshot): void {
  try {
    proxy.update(s);
    post({ t: 'applied', version: s.version });
  } catch (err) {
    logger.error({ err, version: s.version }, 'snapshot not applied');
  }
}

start().catch((err: NodeJS.ErrnoException) => {
  post({ t: 'failed', code: err.code ?? 'NODAL_ERR_PROXY_WORKER', message: err.message });
  port.close();
});
