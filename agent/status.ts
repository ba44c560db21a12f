// The agent's own account of itself, served as JSON at GET /status on the health listener
// (:15021) and gathered by the control plane for `nodal status`: the snapshot it applied,
// the programs the kernel has attached at the node's pod cgroup, the datapath counters,
// WireGuard peers and handshakes, the enrolled endpoints and the flow rate.
//
// Pure apart from its injected dependencies, so it is tested without a kernel. One part
// of it fails on its own: a WireGuard or cgroup query error is reported in that section,
// and the rest of the report still comes back.
import type { Snapshot } from '../control/api/types.ts';
import { ATTACH_POINTS, type AttachPoint, type Counters, type OpenReport } from './datapath/index.ts';
import type { WireGuardStatus } from './wireguard/index.ts';

/** the hooks the datapath attaches at the node's pod cgroup */
export type StatusHook = AttachPoint['attachType'];
const STATUS_HOOKS: readonly StatusHook[] = ATTACH_POINTS.map((a) => a.attachType);

/** the window the flow rate is averaged over: long enough to smooth bursts, short enough to follow a change */
export const FLOW_RATE_WINDOW_MS = 10_000;
/** one sample per second: the window then holds ten and the rate lags a change by at most a second */
const FLOW_RATE_SAMPLE_MS = 1_000;

export interface AgentStatusReport {
  node: string;
  /** the nodal build, e.g. "nodal v0.1.0" */
  version: string;
  /** the snapshot version applied; 0 = none yet */
  snapshotVersion: number;
  uptimeSeconds: number;
  datapath: {
    pinRoot: string;
    cgroup: string;
    hooks: Array<{ hook: StatusHook; programIds: number[]; adopted: boolean; error?: string }>;
    counters: { dropConnect: number; dropIngress: number; eventsLost: number; redirects: number };
    /** the counters could not be read */
    error?: string;
  };
  wireguard: {
    mode: string;
    publicKey: string;
    peers: Array<{
      /** the node this key belongs to, from the snapshot; absent for a key no node publishes */
      node?: string;
      publicKey: string;
      endpoint?: string;
      /** unix seconds; 0 = never */
      latestHandshake: number;
      rxBytes: number;
      txBytes: number;
      allowedIps: string[];
    }>;
    /** the device could not be read (e.g. wireguard-go restarting) */
    error?: string;
  };
  endpoints: { enrolled: string[] };
  flows: {
    /** flows added since start */
    seen: number;
    /** flows held in the ring now */
    stored: number;
    capacity: number;
    /** flows reported lost upstream of the store (kernel ring buffer) */
    lost: number;
    ratePerSecond: number;
    rateWindowSeconds: number;
  };
}

export interface AgentStatusDeps {
  node: string;
  version: string;
  /** the snapshot in force, if any */
  snapshot: () => Snapshot | undefined;
  datapath: { readonly pinRoot: string; readonly report: OpenReport; readonly config: { cgroupPath: string }; counters(): Counters };
  /** program ids attached directly at a cgroup for one hook (native cgroupQuery) */
  cgroupQuery: (cgroupPath: string, hook: StatusHook) => number[];
  wireguard: { readonly mode: string; readonly publicKey: string; status(): Promise<WireGuardStatus> };
  /** local enrolled endpoints with redirection in place, ns/pod */
  enrolled: () => readonly string[];
  flows: { readonly seen: number; readonly size: number; readonly capacity: number; readonly lost: number };
  flowRate: FlowRate;
  /** seconds since the agent started; default process.uptime() */
  uptime?: () => number;
}

/** peers of known nodes by node name, then keys no node publishes */
function byNodeThenKey(a: { node?: string; publicKey: string }, b: { node?: string; publicKey: string }): number {
  if ((a.node === undefined) !== (b.node === undefined)) return a.node === undefined ? 1 : -1;
  const x = a.node ?? a.publicKey;
  const y = b.node ?? b.publicKey;
  return x < y ? -1 : x > y ? 1 : 0;
}

const errText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export async function agentStatus(deps: AgentStatusDeps): Promise<AgentStatusReport> {
  const snap = deps.snapshot();
  const cgroup = deps.datapath.config.cgroupPath;
  const adopted = new Set(deps.datapath.report.adopted);

  const hooks = STATUS_HOOKS.map((hook): AgentStatusReport['datapath']['hooks'][number] => {
    try {
      return { hook, programIds: [...deps.cgroupQuery(cgroup, hook)], adopted: adopted.has(hook) };
    } catch (err) {
      return { hook, programIds: [], adopted: adopted.has(hook), error: errText(err) };
    }
  });
  const datapath: AgentStatusReport['datapath'] = {
    pinRoot: deps.datapath.pinRoot, cgroup, hooks, counters: { dropConnect: 0, dropIngress: 0, eventsLost: 0, redirects: 0 },
  };
  try {
    const c = deps.datapath.counters();
    datapath.counters = {
      dropConnect: Number(c.dropConnect), dropIngress: Number(c.dropIngress), eventsLost: Number(c.eventsLost), redirects: Number(c.redirects),
    };
  } catch (err) {
    datapath.error = `counters: ${errText(err)}`;
  }

  const nodeByKey = new Map((snap?.nodes ?? []).filter((n) => n.wgPublicKey).map((n) => [n.wgPublicKey, n.name]));
  const wireguard: AgentStatusReport['wireguard'] = { mode: deps.wireguard.mode, publicKey: deps.wireguard.publicKey, peers: [] };
  try {
    const st = await deps.wireguard.status();
    wireguard.peers = st.peers.map((p) => {
      const node = nodeByKey.get(p.publicKey);
      return {
        ...(node !== undefined ? { node } : {}),
        publicKey: p.publicKey,
        ...(p.endpoint !== undefined ? { endpoint: p.endpoint } : {}),
        latestHandshake: p.latestHandshake, rxBytes: p.rxBytes, txBytes: p.txBytes, allowedIps: [...p.allowedIps],
      };
    }).sort(byNodeThenKey);
  } catch (err) {
    wireguard.error = errText(err);
  }

  return {
    node: deps.node,
    version: deps.version,
    snapshotVersion: snap?.version ?? 0,
    uptimeSeconds: Math.round((deps.uptime ?? process.uptime)() * 10) / 10,
    datapath,
    wireguard,
    endpoints: { enrolled: [...deps.enrolled()].sort() },
    flows: {
      seen: deps.flows.seen, stored: deps.flows.size, capacity: deps.flows.capacity, lost: deps.flows.lost,
      ratePerSecond: Math.round(deps.flowRate.perSecond() * 100) / 100, rateWindowSeconds: deps.flowRate.windowMs / 1000,
    },
  };
}

/**
 * Flows per second over the last window, from samples of the store's running count. The
 * count only grows, so overwritten flows are counted too (the ring's size would not be).
 * Samples live in a fixed ring; sampling and reading are O(window / interval).
 */
export class FlowRate {
  readonly windowMs: number;
  readonly #seen: () => number;
  readonly #now: () => number;
  /** (time, seen) pairs, oldest overwritten first */
  readonly #t: number[];
  readonly #n: number[];
  #next = 0;
  #count = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(seen: () => number, opts: { windowMs?: number; sampleMs?: number; now?: () => number } = {}) {
    this.#seen = seen;
    this.#now = opts.now ?? Date.now;
    this.windowMs = opts.windowMs ?? FLOW_RATE_WINDOW_MS;
    // one more slot than the window holds, so a full window is always available
    const slots = Math.ceil(this.windowMs / (opts.sampleMs ?? FLOW_RATE_SAMPLE_MS)) + 2;
    this.#t = new Array<number>(slots).fill(0);
    this.#n = new Array<number>(slots).fill(0);
    this.sample();
  }

  /** sample every `sampleMs` on an unref'd timer: the meter never keeps the process alive */
  start(sampleMs = FLOW_RATE_SAMPLE_MS): this {
    this.stop();
    this.#timer = setInterval(() => this.sample(), sampleMs);
    this.#timer.unref();
    return this;
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  sample(): void {
    this.#t[this.#next] = this.#now();
    this.#n[this.#next] = this.#seen();
    this.#next = (this.#next + 1) % this.#t.length;
    if (this.#count < this.#t.length) this.#count++;
  }

  /** flows per second between the oldest sample inside the window and now */
  perSecond(): number {
    const now = this.#now();
    const seen = this.#seen();
    let base: number | undefined;
    for (let i = 0; i < this.#count; i++) {
      // oldest first
      const at = (this.#next - this.#count + i + this.#t.length) % this.#t.length;
      if (this.#t[at]! >= now - this.windowMs) {
        base = at;
        break;
      }
    }
    // every sample is older than the window (no timer running): the newest one still gives a rate
    if (base === undefined) base = (this.#next - 1 + this.#t.length) % this.#t.length;
    const elapsed = now - this.#t[base]!;
    if (elapsed <= 0) return 0;
    return Math.max(0, seen - this.#n[base]!) / (elapsed / 1000);
  }
}
