// Leader election with a coordination.k8s.io/v1 Lease (DESIGN §7), as client-go's
// leaderelection does it: every replica serves agents, one replica (the holder of the
// Lease) writes — status conditions and new NodalIdentity objects.
//   - acquire when the Lease is absent, released (holderIdentity empty) or expired;
//   - the holder renews every retry period; every write carries the resourceVersion it
//     read, so two replicas racing for one Lease get one 200 and one 409 (the loser re-reads);
//   - a holder that could not renew for the renew deadline steps down on its own, before
//     the others may take over (renew deadline < lease duration), so two replicas never
//     both believe they lead while their clocks agree;
//   - close() releases the Lease (holderIdentity empty, renewTime in the past) so another
//     replica takes over at its next retry instead of after the lease duration.
// Expiry: renewTime + leaseDurationSeconds < now by the local clock, or — protecting against
// a holder whose clock runs behind — the record unchanged for the lease duration since we
// first saw it (client-go's rule). A clock more than the lease duration ahead could take
// over a live Lease early; the harm is bounded: id allocation is guarded by create-409,
// status writes are idempotent.
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { KubeApiError, type KubeClient, type KubeObject } from './kube-http.ts';

export const DEFAULT_LEASE_NAME = 'nodal-control';
export const DEFAULT_LEASE_NAMESPACE = 'nodal-system';
/** how long a Lease holds without renewal: failover takes at most this (client-go: 15 s) */
export const LEASE_DURATION_MS = 15_000;
/** a leader that could not renew for this long steps down; must be < the lease duration so it does before others take over (client-go: 10 s) */
export const RENEW_DEADLINE_MS = 10_000;
/** how often the leader renews and a follower retries (client-go: 2 s): several renewals fit in one deadline */
export const RETRY_PERIOD_MS = 2_000;

export interface LeaderElectorOptions {
  client: KubeClient;
  logger: Logger;
  /** holderIdentity: default $POD_NAME, else the hostname */
  identity?: string;
  name?: string;
  namespace?: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

type LeaseObject = KubeObject & { spec?: LeaseSpec };

/** MicroTime: RFC 3339 with six fractional digits, as the API server writes and parses it */
export const microTime = (ms: number): string => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

export const defaultIdentity = (): string => process.env.POD_NAME || hostname();

export interface LeaderElector {
  on(event: 'leader' | 'follower', fn: () => void): this;
  once(event: 'leader' | 'follower', fn: () => void): this;
}

export class LeaderElector extends EventEmitter {
  readonly identity: string;
  readonly #client: KubeClient;
  readonly #log: Logger;
  readonly #path: string;
  readonly #collection: string;
  readonly #name: string;
  readonly #namespace: string;
  readonly #durationMs: number;
  readonly #deadlineMs: number;
  readonly #retryMs: number;
  readonly #stop = new AbortController();
  #leader = false;
  /** the Lease as last read or written */
  #lease: LeaseObject | undefined;
  /** when we first saw the current record (holder + renewTime): the skew-proof half of expiry */
  #observed: { key: string; at: number } | undefined;
  #lastRenew = 0;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;

  constructor(opts: LeaderElectorOptions) {
    super();
    this.identity = opts.identity ?? defaultIdentity();
    this.#client = opts.client;
    this.#name = opts.name ?? DEFAULT_LEASE_NAME;
    this.#namespace = opts.namespace ?? DEFAULT_LEASE_NAMESPACE;
    this.#durationMs = opts.leaseDurationMs ?? LEASE_DURATION_MS;
    this.#deadlineMs = opts.renewDeadlineMs ?? RENEW_DEADLINE_MS;
    this.#retryMs = opts.retryPeriodMs ?? RETRY_PERIOD_MS;
    if (!(this.#deadlineMs < this.#durationMs)) throw new Error('leader election: the renew deadline must be shorter than the lease duration');
    if (!(this.#retryMs < this.#deadlineMs)) throw new Error('leader election: the retry period must be shorter than the renew deadline');
    this.#collection = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.#namespace)}/leases`;
    this.#path = `${this.#collection}/${encodeURIComponent(this.#name)}`;
    this.#log = opts.logger.child({ component: 'leader-election', lease: `${this.#namespace}/${this.#name}`, identity: this.identity });
  }

  isLeader(): boolean {
    return this.#leader;
  }

  /** who holds the Lease as last seen ('' when free or unknown) */
  holder(): string {
    return this.#lease?.spec?.holderIdentity ?? '';
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /**
   * stop; a leader releases the Lease so another replica takes over at once.
   * `release: false` stops as a crash would (tests: the others wait for expiry).
   */
  async close(o: { release?: boolean } = {}): Promise<void> {
    if (this.#stop.signal.aborted) return;
    this.#stop.abort();
    this.#wake?.();
    await this.#loop;
    if (this.#leader) {
      if (o.release !== false) await this.#release().catch((err: unknown) => this.#log.warn({ err }, 'could not release the lease; the others take over when it expires'));
      this.#transition(false);
    }
    this.removeAllListeners();
  }

  async #run(): Promise<void> {
    while (!this.#stop.signal.aborted) {
      try {
        await this.#attempt();
      } catch (err) {
        this.#log.warn({ err }, this.#leader ? 'could not renew the lease' : 'could not read or acquire the lease');
      }
      if (this.#leader && Date.now() - this.#lastRenew > this.#deadlineMs) {
        this.#log.error({ deadlineMs: this.#deadlineMs }, 'lease not renewed within the renew deadline; stepping down');
        this.#transition(false);
      }
      // followers retry with up to 20% jitter (client-go's JitterFactor 1.2) so they do not race in lockstep
      const wait = this.#leader ? this.#retryMs : Math.round(this.#retryMs * (1 + Math.random() * 0.2));
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, wait);
        this.#wake = () => { clearTimeout(t); resolve(); };
      });
      this.#wake = undefined;
    }
  }

  #signal(): AbortSignal {
    return AbortSignal.any([this.#stop.signal, AbortSignal.timeout(Math.max(this.#retryMs, this.#deadlineMs - this.#retryMs))]);
  }

  /** one round: renew what we hold, or take the Lease if it is free or expired */
  async #attempt(): Promise<void> {
    const now = Date.now();
    if (this.#leader && this.#lease?.spec?.holderIdentity === this.identity) {
      // renew from what we wrote last: no read in the common case; a 409 means someone else wrote
      if (await this.#write(this.#renewed(this.#lease, now))) return;
    }
    let current: LeaseObject | undefined;
    try {
      current = await this.#client.request<LeaseObject>('GET', this.#path, { signal: this.#signal() });
    } catch (err) {
      if (!(err instanceof KubeApiError && err.statusCode === 404)) throw err;
    }
    if (!current) {
      const body: LeaseObject = {
        apiVersion: 'coordination.k8s.io/v1', kind: 'Lease',
        metadata: { name: this.#name, namespace: this.#namespace },
        spec: { holderIdentity: this.identity, leaseDurationSeconds: this.#durationSeconds(), acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 },
      };
      try {
        this.#lease = await this.#client.request<LeaseObject>('POST', this.#collection, { body, signal: this.#signal() });
      } catch (err) {
        if (err instanceof KubeApiError && err.statusCode === 409) return; // another replica created it first
        throw err;
      }
      this.#lastRenew = now;
      this.#transition(true);
      return;
    }
    this.#lease = current;
    const spec = current.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    if (holder === this.identity) {
      // ours (a restart with the same pod name, or our renewal raced a read): renew
      if (await this.#write(this.#renewed(current, now))) return;
      this.#transition(false);
      return;
    }
    if (holder !== '' && !this.#expired(spec, now)) {
      this.#transition(false);
      return;
    }
    const taken: LeaseObject = {
      ...current,
      spec: {
        ...spec, holderIdentity: this.identity, leaseDurationSeconds: this.#durationSeconds(),
        acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: (spec.leaseTransitions ?? 0) + (holder === '' && !spec.renewTime ? 0 : 1),
      },
    };
    if (!(await this.#write(taken))) this.#transition(false);
  }

  #renewed(lease: LeaseObject, now: number): LeaseObject {
    return { ...lease, spec: { ...lease.spec, holderIdentity: this.identity, leaseDurationSeconds: this.#durationSeconds(), renewTime: microTime(now) } };
  }

  /** PUT with the resourceVersion read: true when it took; false on 409 (someone else wrote first: re-read next round) */
  async #write(lease: LeaseObject): Promise<boolean> {
    try {
      this.#lease = await this.#client.request<LeaseObject>('PUT', this.#path, { body: lease, signal: this.#signal() });
    } catch (err) {
      if (err instanceof KubeApiError && (err.statusCode === 409 || err.statusCode === 404)) {
        this.#lease = undefined;
        return false;
      }
      throw err;
    }
    this.#lastRenew = Date.now();
    this.#transition(true);
    return true;
  }

  #expired(spec: LeaseSpec, now: number): boolean {
    const durationMs = (spec.leaseDurationSeconds ?? Math.ceil(this.#durationMs / 1000)) * 1000;
    const key = `${spec.holderIdentity ?? ''}@${spec.renewTime ?? ''}`;
    if (this.#observed?.key !== key) this.#observed = { key, at: now };
    const renewed = spec.renewTime ? Date.parse(spec.renewTime) : Number.NaN;
    if (!Number.isNaN(renewed) && renewed + durationMs < now) return true;
    return this.#observed.at + durationMs < now;
  }

  /** whole seconds, as the API has it; at least 1 */
  #durationSeconds(): number {
    return Math.max(1, Math.ceil(this.#durationMs / 1000));
  }

  /** read, then write it free: the renewal close() cut short may have landed, so what we hold locally may be stale */
  async #release(): Promise<void> {
    const signal = AbortSignal.timeout(Math.max(2000, this.#retryMs));
    const lease = await this.#client.request<LeaseObject>('GET', this.#path, { signal });
    if (lease.spec?.holderIdentity !== this.identity) return;
    const past = Date.now() - this.#durationMs - 1000;
    const released: LeaseObject = { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: microTime(past) } };
    this.#lease = await this.#client.request<LeaseObject>('PUT', this.#path, { body: released, signal });
    this.#log.info('released the lease');
  }

  #transition(leader: boolean): void {
    if (leader === this.#leader) return;
    this.#leader = leader;
    this.#log.info(leader ? 'became the leader' : 'following');
    this.emit(leader ? 'leader' : 'follower');
  }
}
