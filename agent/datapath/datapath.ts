// agent/datapath owns the node's BPF state: it loads the programs, attaches them to the
// node's pod cgroup (or adopts the links a previous agent pinned, swapping the program
// in place so enforcement never has a gap), and reconciles the maps against the desired
// state on every change. Everything lives under <bpffs>/nodal/<node>/ so it outlives
// the agent; destroy() removes all of it.
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  BpfError, openObject, openPinnedLink, openPinnedMap, probe, subscribeRingBuffer, unpin,
  type BpfLink, type BpfMap, type BpfObject, type RingBufferReader,
} from '../../native/index.ts';
import { nodalConfig, redirectValue, sockKey, type RedirectValue } from './codec.ts';
import { Counter, MapName } from './constants.ts';
import { decodeVerdictEvent, type VerdictEvent } from './events.ts';
import { reconcileMap, reconcileTogether, type MapDiff } from './reconcile.ts';
import { encodeEndpoints, encodeGuards, encodeIpcache, encodePolicy, encodeServices, type DesiredState } from './state.ts';

export interface DatapathConfig {
  /** node name: the pin folder is <bpffs>/nodal/<node> */
  node: string;
  /** the cgroup-v2 directory holding the node's pods; programs attach here */
  cgroupPath: string;
  /** folder holding the compiled *.bpf.o files */
  objectDir: string;
  /** the node proxy's outbound listener, the redirect target */
  proxy: { ipv4: string; ipv6?: string; port: number };
  /** ring buffer size in bytes (power of two, multiple of the page size) */
  eventsBytes?: number;
  /** bpffs mount; found in /proc/mounts when absent */
  bpffs?: string;
}

export interface AttachPoint { object: string; program: string; attachType: 'connect4' | 'connect6' | 'sock_ops' | 'ingress' }

/** one object per attach point, named after its hook (bpf/<object>.bpf.c) */
export const ATTACH_POINTS: readonly AttachPoint[] = [
  { object: 'cgroup_connect4', program: 'nodal_connect4', attachType: 'connect4' },
  { object: 'cgroup_connect6', program: 'nodal_connect6', attachType: 'connect6' },
  { object: 'sockops', program: 'nodal_sockops', attachType: 'sock_ops' },
  { object: 'cgroup_skb_ingress', program: 'nodal_ingress', attachType: 'ingress' },
];

export interface Redirect { origIp: string; origPort: number; endpointId: number; srcIdentity: number; dstIdentity: number }
export interface Counters { dropConnect: bigint; dropIngress: bigint; eventsLost: bigint; redirects: bigint }
export interface ReconcileResult { endpoints: MapDiff; ipcache: MapDiff; services: MapDiff; policy: MapDiff; guards: MapDiff }
export interface OpenReport { adopted: string[]; attached: string[] }

export class DatapathError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export function pinRootFor(node: string, bpffs: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(node)) {
    throw new DatapathError('NODAL_ERR_CONFIG', `node name ${JSON.stringify(node)} is not a valid pin folder name`);
  }
  return join(bpffs, 'nodal', node);
}

export class Datapath {
  private readonly maps = new Map<string, BpfMap>();
  private reader: RingBufferReader | undefined;
  private closed = false;

  readonly config: DatapathConfig;
  readonly pinRoot: string;
  readonly report: OpenReport;

  private constructor(config: DatapathConfig, pinRoot: string, report: OpenReport) {
    this.config = config;
    this.pinRoot = pinRoot;
    this.report = report;
  }

  /** load, then attach or adopt; on failure nothing this call created is left behind */
  static async open(config: DatapathConfig): Promise<Datapath> {
    const p = probe();
    const missing: string[] = [];
    if (!p.root) missing.push('root privileges (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)');
    if (!p.bpfSyscall) missing.push('the bpf() system call');
    if (!config.bpffs && !p.bpffs) missing.push('a bpf filesystem mount (mount -t bpf bpf /sys/fs/bpf)');
    if (missing.length) {
      throw new DatapathError('NODAL_ERR_DATAPATH_UNAVAILABLE',
        `the datapath needs ${missing.join(', ')}${p.reason ? ` (${p.reason})` : ''}`);
    }
    if (!existsSync(config.cgroupPath) || !statSync(config.cgroupPath).isDirectory()) {
      throw new DatapathError('NODAL_ERR_CGROUP_MISSING',
        `cgroup ${config.cgroupPath} does not exist: create it (mkdir) under the cgroup2 mount first`);
    }
    const pinRoot = pinRootFor(config.node, config.bpffs ?? p.bpffs ?? '/sys/fs/bpf');
    const createdRoot = !existsSync(pinRoot);
    mkdirSync(join(pinRoot, 'maps'), { recursive: true });
    mkdirSync(join(pinRoot, 'links'), { recursive: true });

    const objects: BpfObject[] = [];
    const created: BpfLink[] = [];
    const report: OpenReport = { adopted: [], attached: [] };
    const rodata = { nodal_cfg: nodalConfig.encode({
      proxy_addr4: config.proxy.ipv4, proxy_addr6: config.proxy.ipv6 ?? '::', proxy_port: config.proxy.port,
    }) };
    try {
      for (const ap of ATTACH_POINTS) {
        const path = join(config.objectDir, `${ap.object}.bpf.o`);
        const obj = openObject(path, {
          pinRoot: join(pinRoot, 'maps'),
          rodata,
          ...(config.eventsBytes ? { mapMaxEntries: { [MapName.events]: config.eventsBytes } } : {}),
        });
        objects.push(obj);
        await obj.load();
      }
      // every object is verified before any hook changes: a load failure touches nothing
      for (const [i, ap] of ATTACH_POINTS.entries()) {
        const obj = objects[i]!;
        const linkPath = join(pinRoot, 'links', ap.attachType);
        if (existsSync(linkPath)) {
          const link = openPinnedLink(linkPath);
          try {
            link.update(obj, ap.program); // atomic swap: no gap, no second attachment
          } finally {
            link.close();
          }
          report.adopted.push(ap.attachType);
        } else {
          const link = obj.attachCgroup(ap.program, config.cgroupPath);
          created.push(link);
          link.pin(linkPath);
          report.attached.push(ap.attachType);
        }
      }
      const dp = new Datapath(config, pinRoot, report);
      for (const name of Object.values(MapName)) dp.maps.set(name, objects[0]!.map(name));
      for (const l of created) l.close();
      return dp;
    } catch (err) {
      for (const l of created) {
        try { l.unpin(); l.detach(); l.close(); } catch { /* best effort: already failing */ }
      }
      if (createdRoot) rmSync(pinRoot, { recursive: true, force: true });
      throw err;
    } finally {
      for (const o of objects) o.close();
    }
  }

  private map(name: string): BpfMap {
    if (this.closed) throw new DatapathError('NODAL_ERR_DATAPATH_CLOSED', 'datapath is closed');
    const m = this.maps.get(name);
    if (!m) throw new DatapathError('NODAL_ERR_DATAPATH_CLOSED', `map ${name} is not open`);
    return m;
  }

  /** make the kernel maps hold exactly `desired` */
  reconcile(desired: DesiredState): ReconcileResult {
    // encode everything first: bad input fails before any map changes
    const eps = encodeEndpoints(desired.endpoints);
    const ipc = encodeIpcache(desired.ipcache);
    const svc = encodeServices(desired.services);
    const pol = encodePolicy(desired.policy);
    const grd = encodeGuards(desired.guards ?? []);
    // identities and policy before endpoints: a newly enrolled endpoint is judged by
    // its final policy from its first connection
    const ipcache = reconcileMap(this.map(MapName.ipcache), ipc);
    const services = reconcileMap(this.map(MapName.services), svc);
    const [policy, guards] = reconcileTogether([[this.map(MapName.policy), pol], [this.map(MapName.guards), grd]]) as [MapDiff, MapDiff];
    const endpoints = reconcileMap(this.map(MapName.endpoints), eps);
    return { endpoints, ipcache, services, policy, guards };
  }

  /** the original destination of a redirected connection, by the client's address */
  lookupRedirect(clientIp: string, clientPort: number, opts: { remove?: boolean } = {}): Redirect | undefined {
    return lookupRedirectIn(this.map(MapName.redirectsBySocket), clientIp, clientPort, opts);
  }

  counters(): Counters {
    const m = this.map(MapName.counters);
    const sum = (idx: number): bigint => {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(idx);
      const v = m.lookup(k);
      if (!v) return 0n;
      let total = 0n;
      // one u64 slot per possible CPU, 8-byte aligned
      for (let off = 0; off + 8 <= v.length; off += 8) total += v.readBigUInt64LE(off);
      return total;
    };
    return {
      dropConnect: sum(Counter.DROP_CONNECT), dropIngress: sum(Counter.DROP_INGRESS),
      eventsLost: sum(Counter.EVENTS_LOST), redirects: sum(Counter.REDIRECTS),
    };
  }

  /** verdict events in batches; one subscriber at a time */
  subscribe(onEvents: (events: VerdictEvent[]) => void, opts: { maxBatch?: number } = {}): RingBufferReader {
    if (this.reader) throw new DatapathError('NODAL_ERR_DATAPATH_BUSY', 'the event ring already has a subscriber');
    this.reader = subscribeRingBuffer(this.map(MapName.events), (records) => {
      const out = new Array<VerdictEvent>(records.length);
      for (let i = 0; i < records.length; i++) out[i] = decodeVerdictEvent(records[i]!);
      onEvents(out);
    }, opts);
    return this.reader;
  }

  /** stop reading and release file descriptors; pinned programs keep enforcing */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.reader) await this.reader.close();
    this.reader = undefined;
    for (const m of this.maps.values()) m.close();
    this.maps.clear();
    this.closed = true;
  }

  /** detach every program and remove every pin: the node is left as if nodal never ran */
  async destroy(): Promise<void> {
    await this.close();
    destroyPinned(this.pinRoot);
  }
}

/** a redirect lookup on any handle of the nodal_redir_sk map (the proxy may hold its own) */
export function lookupRedirectIn(m: BpfMap, clientIp: string, clientPort: number, opts: { remove?: boolean } = {}): Redirect | undefined {
  const key = sockKey.encode({ addr: clientIp, port: clientPort });
  const v = m.lookup(key);
  if (!v) return undefined;
  if (opts.remove) m.delete(key);
  const r: RedirectValue = redirectValue.decode(v);
  return { origIp: r.orig_addr, origPort: r.orig_port, endpointId: r.endpoint_id, srcIdentity: r.src_identity, dstIdentity: r.dst_identity };
}

/** detach and unpin whatever lives under a pin root; usable without an open Datapath */
export function destroyPinned(pinRoot: string): void {
  const links = join(pinRoot, 'links');
  if (existsSync(links)) {
    for (const name of readdirSync(links)) {
      const path = join(links, name);
      try {
        const l = openPinnedLink(path);
        l.detach();
        l.close();
      } catch (err) {
        if (!(err instanceof BpfError && err.errno === 2)) throw err;
      }
      unpin(path);
    }
  }
  rmSync(pinRoot, { recursive: true, force: true });
}

/** open a pinned map of a running (or stopped) agent, read-only use by CLI and tests */
export function openAgentMap(pinRoot: string, name: string): BpfMap {
  return openPinnedMap(join(pinRoot, 'maps', name));
}
