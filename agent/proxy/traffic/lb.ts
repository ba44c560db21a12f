// Load balancing across one Service's endpoints, the algorithms a TrafficPolicy names:
// - ROUND_ROBIN: the next available endpoint in order;
// - LEAST_REQUEST: power of two choices (Mitzenmacher; Envoy's default choice_count 2): two
//   distinct random endpoints, the one with fewer active requests (ties: the first drawn);
// - PEAK_EWMA (Finagle / Linkerd): per endpoint an EWMA of latency that jumps to any
//   higher observation (peak-sensitive) and decays towards new ones with time constant
//   DECAY_MS; load = ewma × (active + 1); an endpoint never measured but busy costs
//   PENALTY_MS + active (Finagle) and an idle unmeasured one costs 0, so it gets tried;
//   two random choices, the lower load wins;
// - CONSISTENT_HASH: a ring (Ketama-style, RING_POINTS_PER_ENDPOINT points per endpoint,
//   murmur3 finalizer over FNV-1a) looked up by binary search on the key's hash; adding or
//   removing one endpoint moves only the keys that land on its points. An unavailable
//   endpoint is skipped by walking the ring on, so its keys spread and come back to it.
//   No key (no header, cookie, ...): a random endpoint, as Envoy does.
// Availability: endpoints in `exclude` (already tried by this request) and those the
// injected `isAvailable` rejects (outlier-ejected or failing active checks) are skipped. If
// that leaves none, we go into panic mode like Envoy at a 0 % panic threshold: health is
// ignored (still honouring `exclude`), the request goes somewhere rather than failing, and
// `panics` counts it. Only an empty or fully excluded set returns undefined.
// Per-pick work walks the endpoint array without allocating (except the ring lookup).

import type { CompiledTrafficPolicy } from '../../../control/api/types.ts';

export type Algorithm = NonNullable<CompiledTrafficPolicy['loadBalancer']>['algorithm'];
export type HashOn = NonNullable<NonNullable<CompiledTrafficPolicy['loadBalancer']>['hashOn']>;

/** Finagle's default decay window: old latency counts for about ten seconds */
export const DECAY_MS = 10_000;
/** Finagle's penalty for a busy endpoint with no latency yet: large enough to avoid piling on it */
export const PENALTY_MS = 1_000_000;
/** Ketama's 160 points per server: keeps the load within a few percent of even at 10+ endpoints */
export const RING_POINTS_PER_ENDPOINT = 160;

export interface BalancedEndpoint { key: string }

export interface BalancerOptions {
  algorithm: Algorithm;
  random: () => number;
  now: () => number;
  /** false: skip the endpoint (outlier-ejected, unhealthy); absent: all available */
  isAvailable?: (key: string) => boolean;
}

/** per-endpoint state kept across update() for endpoints that remain */
class EndpointState<E extends BalancedEndpoint> {
  ep: E;
  active = 0;
  /** peak EWMA latency in ms; 0 = not measured yet */
  ewma = 0;
  stamp: number;

  constructor(ep: E, now: number) {
    this.ep = ep;
    this.stamp = now;
  }
}

/** one request on one endpoint; done() once it ends */
export class BalancerRequest<E extends BalancedEndpoint> {
  readonly endpoint: E;
  private readonly balancer: Balancer<E>;
  private readonly state: EndpointState<E>;
  private readonly startedAt: number;
  private finished = false;

  constructor(balancer: Balancer<E>, state: EndpointState<E>, startedAt: number) {
    this.balancer = balancer;
    this.state = state;
    this.endpoint = state.ep;
    this.startedAt = startedAt;
  }

  /** latencyMs defaults to the time since start(); a failure is not a latency sample (a fast error must not make an endpoint look fast: outlier detection handles errors) */
  done(result: { latencyMs?: number; ok: boolean }): void {
    if (this.finished) return;
    this.finished = true;
    this.state.active--;
    const now = this.balancer.now();
    if (result.ok) observe(this.state, result.latencyMs ?? now - this.startedAt, now);
  }
}

function observe(s: EndpointState<BalancedEndpoint>, rtt: number, now: number): void {
  const td = Math.max(now - s.stamp, 0);
  s.stamp = now;
  if (rtt > s.ewma) s.ewma = rtt;
  else {
    const w = Math.exp(-td / DECAY_MS);
    s.ewma = s.ewma * w + rtt * (1 - w);
  }
}

/** the load PEAK_EWMA compares: decayed EWMA × (active + 1) */
function ewmaLoad(s: EndpointState<BalancedEndpoint>, now: number): number {
  if (s.ewma === 0) return s.active === 0 ? 0 : PENALTY_MS + s.active;
  // decay towards 0 while nothing is observed (Finagle's observe(0) on read) without storing it
  const w = Math.exp(-Math.max(now - s.stamp, 0) / DECAY_MS);
  return s.ewma * w * (s.active + 1);
}

/** 32-bit FNV-1a, then murmur3's fmix32 so nearby keys spread over the ring */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class Balancer<E extends BalancedEndpoint> {
  readonly algorithm: Algorithm;
  readonly now: () => number;
  /** picks made in panic mode (every endpoint unavailable) */
  panics = 0;
  private readonly random: () => number;
  private readonly isAvailable: ((key: string) => boolean) | undefined;
  private states: EndpointState<E>[] = [];
  private byKey = new Map<string, EndpointState<E>>();
  private cursor = 0;
  private ringHashes = new Uint32Array(0);
  private ringOwners: EndpointState<E>[] = [];

  constructor(opts: BalancerOptions) {
    this.algorithm = opts.algorithm;
    this.random = opts.random;
    this.now = opts.now;
    this.isAvailable = opts.isAvailable;
  }

  get endpoints(): E[] {
    return this.states.map((s) => s.ep);
  }

  /** replace the endpoint set; state (active, latency) survives for keys that remain */
  update(endpoints: readonly E[]): void {
    const now = this.now();
    const next = new Map<string, EndpointState<E>>();
    const states: EndpointState<E>[] = [];
    for (const ep of endpoints) {
      if (next.has(ep.key)) continue;
      let s = this.byKey.get(ep.key);
      if (s) s.ep = ep;
      else s = new EndpointState(ep, now);
      next.set(ep.key, s);
      states.push(s);
    }
    // the ring depends only on the key set: a snapshot that keeps the endpoints keeps the ring
    const sameKeys = next.size === this.byKey.size && states.every((s) => this.byKey.get(s.ep.key) === s);
    this.states = states;
    this.byKey = next;
    if (this.algorithm === 'CONSISTENT_HASH' && (!sameKeys || this.ringOwners.length === 0)) this.buildRing();
  }

  /** an endpoint for one attempt; undefined only when none is left outside `exclude` */
  pick(ctx?: { hashKey?: string }, exclude?: ReadonlySet<string>): E | undefined {
    const n = this.states.length;
    if (n === 0) return undefined;
    let avail = this.countAvailable(exclude, true);
    let health = true;
    if (avail === 0) {
      avail = this.countAvailable(exclude, false);
      if (avail === 0) return undefined;
      health = false;
      this.panics++;
    }
    switch (this.algorithm) {
      case 'ROUND_ROBIN': return this.roundRobin(exclude, health);
      case 'CONSISTENT_HASH':
        if (ctx?.hashKey !== undefined) return this.ringLookup(ctx.hashKey, exclude, health);
        return this.nth(Math.floor(this.random() * avail), avail, exclude, health).ep;
      default: return this.twoChoices(avail, exclude, health);
    }
  }

  /** count a request as active on `ep` until done() */
  start(ep: E): BalancerRequest<E> {
    let s = this.byKey.get(ep.key);
    if (!s) s = new EndpointState(ep, this.now()); // removed meanwhile: track nothing that matters
    s.active++;
    return new BalancerRequest(this, s, this.now());
  }

  /** active requests on an endpoint (metrics, tests) */
  active(key: string): number {
    return this.byKey.get(key)?.active ?? 0;
  }

  private usable(s: EndpointState<E>, exclude: ReadonlySet<string> | undefined, health: boolean): boolean {
    if (exclude !== undefined && exclude.has(s.ep.key)) return false;
    return !health || this.isAvailable === undefined || this.isAvailable(s.ep.key);
  }

  private countAvailable(exclude: ReadonlySet<string> | undefined, health: boolean): number {
    if (exclude === undefined && (!health || this.isAvailable === undefined)) return this.states.length;
    let c = 0;
    for (const s of this.states) if (this.usable(s, exclude, health)) c++;
    return c;
  }

  /** the k-th usable endpoint in array order; `avail` usable in all */
  private nth(k: number, avail: number, exclude: ReadonlySet<string> | undefined, health: boolean): EndpointState<E> {
    if (avail === this.states.length) return this.states[k]!; // the common case: all usable
    for (const s of this.states) {
      if (!this.usable(s, exclude, health)) continue;
      if (k-- === 0) return s;
    }
    throw new Error('balancer: nth beyond the available count');
  }

  private roundRobin(exclude: ReadonlySet<string> | undefined, health: boolean): E | undefined {
    const n = this.states.length;
    for (let i = 0; i < n; i++) {
      const s = this.states[(this.cursor + i) % n]!;
      if (!this.usable(s, exclude, health)) continue;
      this.cursor = (this.cursor + i + 1) % n;
      return s.ep;
    }
    return undefined;
  }

  private twoChoices(avail: number, exclude: ReadonlySet<string> | undefined, health: boolean): E {
    const k1 = Math.floor(this.random() * avail);
    if (avail === 1) return this.nth(0, avail, exclude, health).ep;
    let k2 = Math.floor(this.random() * (avail - 1));
    if (k2 >= k1) k2++;
    const a = this.nth(k1, avail, exclude, health), b = this.nth(k2, avail, exclude, health);
    if (this.algorithm === 'PEAK_EWMA') {
      const now = this.now();
      return ewmaLoad(b, now) < ewmaLoad(a, now) ? b.ep : a.ep;
    }
    return b.active < a.active ? b.ep : a.ep;
  }

  private buildRing(): void {
    const points: Array<[number, EndpointState<E>]> = [];
    for (const st of this.states) {
      for (let p = 0; p < RING_POINTS_PER_ENDPOINT; p++) points.push([hash32(`${st.ep.key}-${p}`), st]);
    }
    // ties (rare) ordered by key so the ring does not depend on the endpoints' order
    points.sort((a, b) => a[0] - b[0] || (a[1].ep.key < b[1].ep.key ? -1 : 1));
    this.ringHashes = Uint32Array.from(points, (p) => p[0]);
    this.ringOwners = points.map((p) => p[1]);
  }

  private ringLookup(key: string, exclude: ReadonlySet<string> | undefined, health: boolean): E | undefined {
    const h = hash32(key);
    const hashes = this.ringHashes;
    let lo = 0, hi = hashes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (hashes[mid]! < h) lo = mid + 1; else hi = mid;
    }
    for (let i = 0; i < hashes.length; i++) {
      const s = this.ringOwners[(lo + i) % hashes.length]!;
      if (this.usable(s, exclude, health)) return s.ep;
    }
    return undefined;
  }
}

/**
 * The consistent-hash key of a request from a TrafficPolicy's hashOn (first that is set:
 * header, cookie, query parameter, source IP); undefined when the request lacks it.
 */
export function hashKeyFor(hashOn: HashOn | undefined, req: { headers: Record<string, string>; path: string; sourceIp?: string }): string | undefined {
  if (!hashOn) return undefined;
  if (hashOn.header) return req.headers[hashOn.header.toLowerCase()];
  if (hashOn.cookie) return cookieValue(req.headers.cookie, hashOn.cookie);
  if (hashOn.queryParameter) {
    const q = req.path.indexOf('?');
    if (q < 0) return undefined;
    for (const part of req.path.slice(q + 1).split('&')) {
      const eq = part.indexOf('=');
      if ((eq < 0 ? part : part.slice(0, eq)) === hashOn.queryParameter) return eq < 0 ? '' : part.slice(eq + 1);
    }
    return undefined;
  }
  if (hashOn.sourceIP) return req.sourceIp;
  return undefined;
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
