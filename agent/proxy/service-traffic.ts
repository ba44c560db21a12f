// The source side's per-Service traffic state, kept across snapshots: the load balancer
// (with what it learned about each backend), passive outlier detection, active health
// checks, the retry budget, the rate-limit bucket and the concurrency limits of the
// Service's TrafficPolicy. A snapshot updates the backends in place; a changed
// TrafficPolicy rebuilds what it configures. Routes (HTTPRoute/GRPCRoute) are compiled
// once per snapshot into a RouteTable.

import type { CompiledTrafficPolicy, ServiceInfo } from '../../control/api/types.ts';
import type { ProxyContext } from './context.ts';
import {
  Balancer, HealthChecker, OutlierDetector, PoolLimits, RetryBudget, RouteTable, TokenBucket,
  type Connector, type HealthEndpoint,
} from './traffic/index.ts';
import type { MeshView } from './view.ts';

export interface Backend { key: string; ip: string; node: string; identity: number; pod: string }

/** Envoy's default retry budget: 20% of active requests, and 3 retries a second whatever the load */
const DEFAULT_BUDGET = { budgetPercent: 20, minRetriesPerSecond: 3 };
/** how often ejected endpoints are looked at for their return */
const SWEEP_MS = 1000;

const now = (): number => performance.now();

export class ServiceTraffic {
  readonly name: string;
  policy: CompiledTrafficPolicy | undefined;
  balancer: Balancer<Backend>;
  outlier: OutlierDetector | undefined;
  health: HealthChecker | undefined;
  budget: RetryBudget;
  bucket: TokenBucket | undefined;
  limits: PoolLimits;
  /** requests waiting for a concurrency slot (maxPendingRequests) */
  private readonly waiting: Array<() => void> = [];
  private sweeper: NodeJS.Timeout | undefined;
  private fingerprint = '';
  private readonly ctx: ProxyContext;
  private readonly connector: Connector;

  constructor(ctx: ProxyContext, name: string, connector: Connector) {
    this.ctx = ctx;
    this.name = name;
    this.connector = connector;
    this.balancer = this.newBalancer(undefined);
    this.budget = new RetryBudget(DEFAULT_BUDGET, now);
    this.limits = new PoolLimits(undefined);
  }

  update(svc: ServiceInfo, policy: CompiledTrafficPolicy | undefined): void {
    const fp = policy ? JSON.stringify(policy) : '';
    if (fp !== this.fingerprint) {
      this.fingerprint = fp;
      this.configure(policy);
    }
    const backends: Backend[] = svc.backends.map((b) => ({ key: b.ip, ip: b.ip, node: b.node, identity: b.identity, pod: b.pod }));
    this.balancer.update(backends);
    this.outlier?.update(backends.map((b) => b.key));
    const port = svc.ports.find((p) => p.protocol === 'TCP')?.targetPort ?? 0;
    this.health?.update(backends.map((b): HealthEndpoint => ({ key: b.key, address: b.ip, port })));
  }

  /**
   * A concurrency slot for one request (connectionPool.maxConnections requests at once, up
   * to maxPendingRequests more waiting); false: overflow, answer 503 at once. A promise
   * only when the request has to wait: the common case costs no await.
   */
  acquire(): boolean | Promise<boolean> {
    if (this.limits.connections.tryAcquire()) return true;
    if (!this.limits.pending.tryAcquire()) return false;
    return new Promise<boolean>((resolve) => this.waiting.push(() => {
      this.limits.pending.release();
      resolve(true);
    }));
  }

  release(): void {
    const next = this.waiting.shift();
    // the slot passes straight to the next waiter: the count stays where it is
    if (next) next();
    else this.limits.connections.release();
  }

  close(): void {
    this.health?.close();
    if (this.sweeper) clearInterval(this.sweeper);
    for (const w of this.waiting.splice(0)) w();
  }

  private configure(policy: CompiledTrafficPolicy | undefined): void {
    const old = this.policy;
    this.policy = policy;
    if (old?.loadBalancer?.algorithm !== policy?.loadBalancer?.algorithm || !old !== !policy) this.balancer = this.newBalancer(policy);
    this.health?.close();
    this.health = undefined;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.outlier = undefined;
    const od = policy?.outlierDetection;
    if (od) {
      const m = this.ctx.metrics;
      this.outlier = new OutlierDetector(od, {
        now,
        onEvent: (e) => {
          m.ejection(this.name, e.key, e.type);
          this.ctx.log.info({ service: this.name, endpoint: e.key, event: e.type, ...(e.type === 'ejected' ? { reason: e.reason, ms: e.durationMs } : {}) }, 'outlier detection');
        },
      });
      this.sweeper = setInterval(() => this.outlier?.sweep(), Math.min(SWEEP_MS, od.intervalMs));
      this.sweeper.unref();
    }
    const hc = policy?.healthCheck;
    if (hc) {
      this.health = new HealthChecker(hc, {
        connect: this.connector, random: Math.random,
        onChange: (key, healthy) => this.ctx.log.info({ service: this.name, endpoint: key, healthy }, 'active health check'),
      });
    }
    this.budget = new RetryBudget(policy?.retry ?? DEFAULT_BUDGET, now);
    this.bucket = policy?.rateLimit ? new TokenBucket(policy.rateLimit, now) : undefined;
    for (const w of this.waiting.splice(0)) w();
    this.limits = new PoolLimits(policy?.connectionPool);
  }

  private newBalancer(policy: CompiledTrafficPolicy | undefined): Balancer<Backend> {
    return new Balancer<Backend>({
      algorithm: policy?.loadBalancer?.algorithm ?? 'ROUND_ROBIN',
      random: Math.random,
      now,
      isAvailable: (key) => !(this.outlier?.isEjected(key) ?? false) && (this.health?.isHealthy(key) ?? true),
    });
  }
}

/** every Service's traffic state and the routes, as of the last snapshot */
export class TrafficState {
  routes = new RouteTable([]);
  private readonly services = new Map<string, ServiceTraffic>();
  /** of()'s answers for the current snapshot */
  private byInfo = new WeakMap<ServiceInfo, ServiceTraffic>();
  private readonly ctx: ProxyContext;
  private readonly connector: Connector;

  constructor(ctx: ProxyContext, connector: Connector) {
    this.ctx = ctx;
    this.connector = connector;
  }

  update(view: MeshView): void {
    const snap = view.snapshot;
    this.routes = new RouteTable(snap.routes ?? []);
    this.byInfo = new WeakMap();
    const policies = new Map<string, CompiledTrafficPolicy>();
    for (const p of snap.trafficPolicies ?? []) policies.set(`${p.target.namespace}/${p.target.name}`, p);
    const seen = new Set<string>();
    for (const svc of snap.services) {
      const key = `${svc.namespace}/${svc.name}`;
      seen.add(key);
      let st = this.services.get(key);
      if (!st) this.services.set(key, (st = new ServiceTraffic(this.ctx, key, this.connector)));
      st.update(svc, policies.get(key));
    }
    for (const [key, st] of this.services) {
      if (seen.has(key)) continue;
      st.close();
      this.services.delete(key);
    }
  }

  service(namespace: string, name: string): ServiceTraffic | undefined {
    return this.services.get(`${namespace}/${name}`);
  }

  /** the same, by the snapshot's Service object: no key built and hashed per request */
  of(info: ServiceInfo): ServiceTraffic | undefined {
    let st = this.byInfo.get(info);
    if (st === undefined) {
      st = this.service(info.namespace, info.name);
      if (st !== undefined) this.byInfo.set(info, st);
    }
    return st;
  }

  close(): void {
    for (const st of this.services.values()) st.close();
    this.services.clear();
  }
}
