// The proxy on every core it is given: N worker threads (worker.ts), each a whole NodeProxy
// bound to the same two ports with SO_REUSEPORT, so the kernel spreads new connections
// over them and no thread hands sockets to another (Envoy's and ztunnel's shape: one
// listener per worker, connections stay on the worker that accepted them).
//
// The agent thread keeps what is per node: it sends every snapshot to every worker,
// receives their flows in batches for the one flow store, and merges their Prometheus
// registries into its own on a scrape. A worker that dies is started again with the last
// snapshot; the connections it held are lost, the other workers' are not.
import { availableParallelism } from 'node:os';
import { readFileSync } from 'node:fs';
import { createServer, isIP, type AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { Snapshot } from '../../control/api/types.ts';
import type { Flow } from '../flows/flow.ts';
import type { AccessLogOptions, OtlpExporterOptions } from '../telemetry/index.ts';
import { ProxyError, type ProxyErrorCode } from './errors.ts';
import { bindError } from './proxy.ts';

type Metrics = MetricObjectWithValues<MetricValue<string>>[];

/** what a worker thread is started with (workerData): plain data, no functions */
export interface WorkerInit {
  id: number;
  node: string;
  logLevel: string;
  outbound: { host: string; port: number };
  inbound: { host: string; port: number };
  upstreamBindIp: string;
  peerTunnelPort?: number | undefined;
  /** the datapath's pin root; the worker reads the redirect map under it */
  pinRoot: string;
  /**
   * instead of the pinned map: a module (file URL or path) whose `originalDestination(ip, port)`
   * export answers the lookup, for benchmarks and tests that run the workers without BPF
   */
  originalDestinationModule?: string | undefined;
  accessLog?: Omit<AccessLogOptions, 'registry'> | undefined;
  tracing: { sampleRatio: number; otlp?: Omit<OtlpExporterOptions, 'registry' | 'onError'> | undefined };
}

export type ToWorker =
  | { t: 'snapshot'; snapshot: Snapshot }
  | { t: 'metrics'; id: number }
  | { t: 'close' };

export type FromWorker =
  | { t: 'listening'; threadId: number }
  | { t: 'failed'; code: string; message: string }
  | { t: 'applied'; version: number }
  | { t: 'flows'; flows: Flow[] }
  | { t: 'metrics'; id: number; metrics?: Metrics; error?: string }
  | { t: 'closed' };

export interface ProxyWorkersOptions extends Omit<WorkerInit, 'id'> {
  /** how many worker threads (>= 1); proxyWorkerCount() says how many cores there are */
  workers: number;
  /** every flow of every worker, in the agent thread */
  onFlow(flow: Flow): void;
  logger: Logger;
  /** first wait before a dead worker is started again, doubled per death up to 5 s (default 100 ms) */
  restartDelayMs?: number;
  /** how long a scrape waits for a worker's metrics (default 2000 ms) */
  metricsTimeoutMs?: number;
}

/** a worker's thread and what the agent thread knows of it */
interface Slot {
  id: number;
  thread: Worker;
  /** the last snapshot version it applied */
  applied: number | undefined;
  listening: boolean;
}

const MAX_RESTART_DELAY_MS = 5000;
/** a worker that ran this long before dying starts again after the first delay */
const STABLE_MS = 30_000;

export class ProxyWorkers {
  private readonly opts: ProxyWorkersOptions;
  private readonly log: Logger;
  private readonly slots = new Map<number, Slot>();
  private readonly waiting = new Map<number, { resolve(m: Metrics | undefined): void; slot: number }>();
  private readonly restarts = new Map<number, { delay: number; startedAt: number }>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private last: Snapshot | undefined;
  private nextRequest = 1;
  private closing = false;
  private restarted = 0;

  private constructor(opts: ProxyWorkersOptions) {
    this.opts = opts;
    this.log = opts.logger.child({ component: 'proxy-workers', node: opts.node });
  }

  /**
   * Bind-check both addresses, then start every worker and wait until each listens. A
   * port another process holds (another agent) stops start-up here, not silently shared:
   * SO_REUSEPORT would let a second root process join the listeners.
   */
  static async start(opts: ProxyWorkersOptions): Promise<ProxyWorkers> {
    if (!Number.isInteger(opts.workers) || opts.workers < 1) {
      throw new ProxyError('NODAL_ERR_PROXY_CONFIG', `proxy workers: ${opts.workers} is not a whole number of at least 1`);
    }
    const outboundPort = await probeBind('outbound', opts.outbound);
    const inboundPort = await probeBind('inbound', opts.inbound);
    const resolved: ProxyWorkersOptions = {
      ...opts, outbound: { ...opts.outbound, port: outboundPort }, inbound: { ...opts.inbound, port: inboundPort },
    };
    const w = new ProxyWorkers(resolved);
    try {
      await Promise.all(Array.from({ length: opts.workers }, (_, id) => w.spawn(id)));
    } catch (err) {
      await w.close();
      throw err;
    }
    w.log.info({ workers: opts.workers, outbound: resolved.outbound, inbound: resolved.inbound }, 'proxy workers listening');
    return w;
  }

  /** true once every worker applied a snapshot */
  get ready(): boolean {
    if (this.slots.size === 0) return false;
    for (const s of this.slots.values()) if (s.applied === undefined) return false;
    return true;
  }

  /** the bound addresses (port 0 resolved before the workers started) */
  get addresses(): { outbound: AddressInfo; inbound: AddressInfo } {
    const info = (a: { host: string; port: number }): AddressInfo => ({ address: a.host, family: isIP(a.host) === 6 ? 'IPv6' : 'IPv4', port: a.port });
    return { outbound: info(this.opts.outbound), inbound: info(this.opts.inbound) };
  }

  /** how many times a dead worker was started again (nodal_proxy_worker_restarts_total) */
  get restartCount(): number { return this.restarted; }

  /** worker threads running now */
  get size(): number { return this.slots.size; }

  /** thread ids of the running workers, by worker id (tests, `nodal status`) */
  threads(): Map<number, number> {
    return new Map([...this.slots.values()].map((s) => [s.id, s.thread.threadId]));
  }

  /** end one worker thread the way a crash would (tests and failure drills): it is started again */
  async terminateWorker(id: number): Promise<void> {
    await this.slots.get(id)?.thread.terminate();
  }

  update(snapshot: Snapshot): void {
    if (this.closing) throw new ProxyError('NODAL_ERR_PROXY_CLOSED', 'proxy is closed');
    this.last = snapshot;
    for (const s of this.slots.values()) if (s.listening) this.send(s, { t: 'snapshot', snapshot });
  }

  /**
   * Every worker's registry as JSON, for AggregatorRegistry.aggregate(). A worker that does
   * not answer within metricsTimeoutMs is left out of this scrape (and logged), so one stuck
   * thread cannot hang /metrics.
   */
  async metrics(): Promise<Metrics[]> {
    const timeout = this.opts.metricsTimeoutMs ?? 2000;
    const asks = [...this.slots.values()].filter((s) => s.listening).map((s) => new Promise<Metrics | undefined>((resolve) => {
      const id = this.nextRequest++;
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        this.log.warn({ worker: s.id, timeoutMs: timeout }, 'proxy worker did not hand over its metrics in time');
        resolve(undefined);
      }, timeout);
      this.waiting.set(id, { slot: s.id, resolve: (m) => { clearTimeout(timer); resolve(m); } });
      this.send(s, { t: 'metrics', id });
    }));
    return (await Promise.all(asks)).filter((m): m is Metrics => m !== undefined);
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const w of this.waiting.values()) w.resolve(undefined);
    this.waiting.clear();
    await Promise.all([...this.slots.values()].map((s) => this.stop(s)));
    this.slots.clear();
  }

  private spawn(id: number): Promise<void> {
    const init: WorkerInit = { ...pick(this.opts), id };
    const thread = new Worker(new URL('./worker.js', import.meta.url), { workerData: init, stdout: false, stderr: false });
    const slot: Slot = { id, thread, applied: undefined, listening: false };
    this.slots.set(id, slot);
    return new Promise((resolve, reject) => {
      let settled = false;
      thread.on('message', (m: FromWorker) => {
        switch (m.t) {
          case 'listening':
            slot.listening = true;
            settled = true;
            if (this.last) this.send(slot, { t: 'snapshot', snapshot: this.last });
            resolve();
            break;
          case 'failed':
            settled = true;
            reject(new ProxyError(isProxyCode(m.code) ? m.code : 'NODAL_ERR_PROXY_WORKER', `proxy worker ${id}: ${m.message}`));
            break;
          case 'applied':
            slot.applied = m.version;
            break;
          case 'flows':
            for (const f of m.flows) this.flow(f);
            break;
          case 'metrics': {
            const w = this.waiting.get(m.id);
            if (!w) break;
            this.waiting.delete(m.id);
            if (m.error) this.log.warn({ worker: id, err: m.error }, 'proxy worker metrics failed');
            w.resolve(m.metrics);
            break;
          }
          case 'closed':
            // everything is drained and flushed: nothing left to wait for
            void thread.terminate();
            break;
        }
      });
      thread.on('error', (err) => {
        this.log.error({ err, worker: id }, 'proxy worker crashed');
        if (!settled) {
          settled = true;
          reject(new ProxyError('NODAL_ERR_PROXY_WORKER', `proxy worker ${id} failed to start: ${err.message}`, { cause: err }));
        }
      });
      thread.on('exit', (code) => {
        if (this.slots.get(id) === slot) this.slots.delete(id);
        for (const [rid, w] of this.waiting) if (w.slot === id) { this.waiting.delete(rid); w.resolve(undefined); }
        if (!settled) {
          settled = true;
          reject(new ProxyError('NODAL_ERR_PROXY_WORKER', `proxy worker ${id} exited with code ${code} before listening`));
          return;
        }
        if (!this.closing && slot.listening) this.restart(id, code);
      });
    });
  }

  private restart(id: number, code: number): void {
    const now = Date.now();
    const prev = this.restarts.get(id);
    const base = this.opts.restartDelayMs ?? 100;
    const delay = !prev || now - prev.startedAt > STABLE_MS ? base : Math.min(prev.delay * 2, MAX_RESTART_DELAY_MS);
    this.restarts.set(id, { delay, startedAt: now + delay });
    this.log.error({ worker: id, code, restartInMs: delay }, 'proxy worker exited; starting it again');
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (this.closing) return;
      this.restarted++;
      this.spawn(id).catch((err: Error) => {
        this.log.error({ err, worker: id }, 'proxy worker did not start again');
        if (!this.closing && !this.slots.has(id)) this.restart(id, -1);
      });
    }, delay);
    this.timers.add(timer);
  }

  private async stop(s: Slot): Promise<void> {
    const exited = new Promise<void>((resolve) => s.thread.once('exit', () => resolve()));
    if (s.listening) this.send(s, { t: 'close' });
    else void s.thread.terminate();
    // a worker drains its access log and spans; past this it is terminated
    const timer = setTimeout(() => void s.thread.terminate(), 12_000);
    await exited;
    clearTimeout(timer);
  }

  private send(s: Slot, m: ToWorker): void {
    try {
      s.thread.postMessage(m);
    } catch (err) {
      this.log.error({ err, worker: s.id, message: m.t }, 'could not reach a proxy worker');
    }
  }

  private flow(f: Flow): void {
    try {
      this.opts.onFlow(f);
    } catch (err) {
      // a failing consumer must not break the workers' flow delivery
      this.log.error({ err }, 'flow consumer threw');
    }
  }
}

const PROXY_CODES: ReadonlySet<string> = new Set<ProxyErrorCode>(['NODAL_ERR_PROXY_BIND', 'NODAL_ERR_PROXY_CONFIG', 'NODAL_ERR_PROXY_CLOSED', 'NODAL_ERR_PROXY_WORKER']);
const isProxyCode = (c: string): c is ProxyErrorCode => PROXY_CODES.has(c);

/** the WorkerInit fields of the options (no functions cross the thread boundary) */
function pick(o: ProxyWorkersOptions): Omit<WorkerInit, 'id'> {
  return {
    node: o.node, logLevel: o.logLevel, outbound: o.outbound, inbound: o.inbound, upstreamBindIp: o.upstreamBindIp,
    peerTunnelPort: o.peerTunnelPort, pinRoot: o.pinRoot, originalDestinationModule: o.originalDestinationModule, accessLog: o.accessLog, tracing: o.tracing,
  };
}

/**
 * Bind the address without SO_REUSEPORT and let it go: fails when anything holds the port
 * (another agent's workers included), and turns port 0 into the port every worker binds.
 */
function probeBind(side: 'outbound' | 'inbound', at: { host: string; port: number }): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', (err: NodeJS.ErrnoException) => reject(bindError(side, at, err)));
    s.listen({ host: at.host, port: at.port, exclusive: true }, () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * How many proxy workers `auto` means: the CPU quota of the agent's cgroup (a DaemonSet's
 * resources.limits.cpu, rounded up) when there is one, else the CPUs this process may run
 * on. Never less than 1.
 */
export function proxyWorkerCount(cpuMaxPath = '/sys/fs/cgroup/cpu.max'): number {
  const cpus = availableParallelism();
  let quota = Infinity;
  try {
    const [max, period] = readFileSync(cpuMaxPath, 'utf8').trim().split(/\s+/);
    if (max !== undefined && max !== 'max' && period !== undefined) quota = Math.ceil(Number(max) / Number(period));
  } catch {
    // no cgroup v2 cpu controller here: the CPU count decides
  }
  const n = Number.isFinite(quota) && quota > 0 ? Math.min(quota, cpus) : cpus;
  return Math.max(1, n);
}
