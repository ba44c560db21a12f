// The node's WireGuard interface: key, device (kernel or wireguard-go), peers, routes and
// strict-mode guards, composed here from the pure planners (peers.ts, routes.ts) and the
// kernel-facing helpers (link.ts, userspace.ts).
//
// The device is configured with `wg`, not by speaking UAPI ourselves: `wg` talks netlink
// to kernel WireGuard and the UAPI socket to wireguard-go (it picks whichever exists), so
// both modes share one code path; and it takes the private key as a file path, so the key
// never appears on a command line, a pipe we write, or in our memory beyond keys.ts.
import type { Logger } from 'pino';
import { WG_ERR, WireGuardError } from './errors.ts';
import { must, toWireGuardError } from './exec.ts';
import { loadOrCreateKey, type NodeKey } from './keys.ts';
import { applyRoutePlan, configureLink, createKernelLink, deleteLink, readLink, readOurRoutes, readUnderlayMtu, WG_OVERHEAD } from './link.ts';
import { diffPeers, hostPrefix, parseDump, validatePeers, wgSetArgs, type DesiredPeer, type PeerStatus, type WireGuardPeer } from './peers.ts';
import { planRoutes } from './routes.ts';
import { evictStaleDaemon, UserspaceDevice } from './userspace.ts';

export const DEFAULT_IFACE = 'nodal-wg0';
export const DEFAULT_LISTEN_PORT = 51871;

export interface WireGuardOptions {
  /** default nodal-wg0 */
  iface?: string;
  /** default 51871 */
  listenPort?: number;
  /** the private key file (private.key, mode 0600) lives here */
  keyDir: string;
  /** this node's tunnel address, e.g. 10.99.0.1 */
  tunnelIp: string;
  /** default 'auto': kernel WireGuard if the kernel has it, wireguard-go otherwise */
  mode?: 'auto' | 'kernel' | 'userspace';
  /** default: the MTU of the default route's device, else 1500 */
  underlayMtu?: number;
  logger: Logger;
}

export interface WireGuardStatus {
  peers: Array<{ publicKey: string; endpoint?: string; latestHandshake: number; rxBytes: number; txBytes: number; allowedIps: string[] }>;
}

interface Settings { iface: string; listenPort: number; tunnelIp: string; mtu: number }

export class WireGuard {
  readonly publicKey: string;
  readonly mode: 'kernel' | 'userspace';
  private readonly settings: Settings;
  private readonly key: NodeKey;
  private readonly logger: Logger;
  private userspace: UserspaceDevice | undefined;
  /** the last peer list given to setPeers, re-applied after a wireguard-go restart */
  private desired: DesiredPeer[] = [];
  /** every prefix a peer ever announced here (also in earlier runs): guarded until the interface is removed */
  private readonly guarded = new Set<string>();
  /** serializes setPeers, the supervisor's reconfigure and close */
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(settings: Settings, key: NodeKey, mode: 'kernel' | 'userspace', logger: Logger) {
    this.settings = settings;
    this.key = key;
    this.publicKey = key.publicKey;
    this.mode = mode;
    this.logger = logger;
  }

  static async setup(opts: WireGuardOptions): Promise<WireGuard> {
    const iface = opts.iface ?? DEFAULT_IFACE;
    const listenPort = opts.listenPort ?? DEFAULT_LISTEN_PORT;
    const wanted = opts.mode ?? 'auto';
    validateOptions(iface, listenPort, opts.tunnelIp, wanted, opts.underlayMtu);
    const logger = opts.logger.child({ component: 'wireguard', iface });
    // the key first: a key problem must stop start-up before the network is touched
    const key = loadOrCreateKey(opts.keyDir, logger);
    const underlayMtu = opts.underlayMtu ?? (await readUnderlayMtu(logger));
    const settings: Settings = { iface, listenPort, tunnelIp: opts.tunnelIp, mtu: underlayMtu - WG_OVERHEAD };

    const mode = await chooseDevice(iface, wanted, logger);
    const wg = new WireGuard(settings, key, mode, logger);
    try {
      if (mode === 'userspace') {
        wg.userspace = await UserspaceDevice.start(iface, logger, () => wg.serialize(() => wg.reapply()));
      }
      await wg.configureDevice();
      for (const r of await readOurRoutes()) if (r.kind === 'guard') wg.guarded.add(r.dst);
    } catch (err) {
      await wg.userspace?.stop();
      throw err;
    }
    logger.info({ mode, publicKey: key.publicKey, listenPort, mtu: settings.mtu, tunnelIp: opts.tunnelIp, guards: wg.guarded.size },
      'WireGuard interface ready');
    return wg;
  }

  /**
   * Make the device's peers, their routes and guards exactly `peers`. If applying fails
   * (e.g. wireguard-go is being restarted) the list is still the desired one: the
   * supervisor re-applies it, and so does the next call.
   */
  async setPeers(peers: WireGuardPeer[]): Promise<void> {
    this.assertOpen();
    // validate before queueing: a bad list is rejected whole and the last good one stays
    const desired = validatePeers(peers, this.publicKey);
    await this.serialize(async () => {
      this.assertOpen();
      this.desired = desired;
      await this.applyPeers();
    });
  }

  async status(): Promise<WireGuardStatus> {
    this.assertOpen();
    const peers = await this.readPeers(WG_ERR.STATUS);
    return {
      peers: peers.map((p) => ({
        publicKey: p.publicKey,
        ...(p.endpoint !== undefined ? { endpoint: p.endpoint } : {}),
        latestHandshake: p.latestHandshake,
        rxBytes: p.rxBytes,
        txBytes: p.txBytes,
        allowedIps: p.allowedIps,
      })),
    };
  }

  /**
   * Stop managing the interface. Userspace: wireguard-go is stopped, so the device goes.
   * Kernel: the device stays unless removeInterface, so traffic survives an agent restart.
   * Guards stay unless removeInterface: strict mode outlives the agent.
   */
  async close(opts: { removeInterface?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    await this.serialize(async () => {
      if (this.closed) return;
      this.closed = true;
      await this.userspace?.stop();
      if (opts.removeInterface) {
        if (this.mode === 'kernel' && (await readLink(this.settings.iface))) await deleteLink(this.settings.iface);
        // with the link gone its tunnel routes are gone; now the guards and anything left of ours
        await applyRoutePlan(planRoutes(await readOurRoutes(), [], [], this.settings.iface, this.settings.tunnelIp));
        this.guarded.clear();
      }
      this.logger.info({ removeInterface: opts.removeInterface === true }, 'WireGuard closed');
    });
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private assertOpen(): void {
    if (this.closed) throw new WireGuardError(WG_ERR.CLOSED, 'WireGuard is closed');
  }

  /** private key, listen port, address, MTU, up: idempotent, also on an adopted device */
  private async configureDevice(): Promise<void> {
    const { iface, listenPort, tunnelIp, mtu } = this.settings;
    // key rotation goes here: set the new private key, publish the new public key, and
    // keep accepting the old one on peers until every peer has switched (DESIGN §6)
    await must(WG_ERR.SETUP, `configuring ${iface}`, 'wg',
      ['set', iface, 'private-key', this.key.privateKeyFile, 'listen-port', String(listenPort)]);
    await configureLink(iface, tunnelIp, mtu, this.logger);
  }

  /** after wireguard-go restarted: its new device is blank */
  private async reapply(): Promise<void> {
    if (this.closed) return;
    await this.configureDevice();
    await this.applyPeers();
  }

  private async readPeers(code: typeof WG_ERR.PEERS | typeof WG_ERR.STATUS): Promise<PeerStatus[]> {
    const dump = await must(code, `reading peers of ${this.settings.iface}`, 'wg', ['show', this.settings.iface, 'dump']);
    try {
      return parseDump(dump);
    } catch (err) {
      throw toWireGuardError(code, `reading peers of ${this.settings.iface}`, err);
    }
  }

  private async applyPeers(): Promise<void> {
    const { iface, tunnelIp } = this.settings;
    const diff = diffPeers(await this.readPeers(WG_ERR.PEERS), this.desired);
    const tunnelPrefixes = this.desired.flatMap((p) => p.allowedIps);
    for (const p of tunnelPrefixes) this.guarded.add(p);
    const plan = planRoutes(await readOurRoutes(), tunnelPrefixes, this.guarded, iface, tunnelIp);
    // guards go in before the device learns a peer, tunnel routes after it can carry them
    const guards = plan.replace.filter((r) => r.kind === 'guard');
    await applyRoutePlan({ replace: guards, remove: [] });
    const args = wgSetArgs(iface, diff);
    if (args) await must(WG_ERR.PEERS, `setting peers of ${iface}`, 'wg', args);
    await applyRoutePlan({ replace: plan.replace.filter((r) => r.kind === 'tunnel'), remove: plan.remove });
    if (args || plan.replace.length > 0 || plan.remove.length > 0) {
      this.logger.info({
        peers: this.desired.map((p) => p.node),
        upserted: diff.upsert.map((p) => p.node),
        removed: diff.remove,
        routesInstalled: plan.replace.length,
        routesRemoved: plan.remove.length,
      }, 'WireGuard peers applied');
    }
  }
}

function validateOptions(iface: string, port: number, tunnelIp: string, mode: string, underlayMtu: number | undefined): void {
  const bad = (msg: string): never => { throw new WireGuardError(WG_ERR.SETUP, msg); };
  // IFNAMSIZ is 16 with the NUL
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/.test(iface)) bad(`interface name ${JSON.stringify(iface)} is not a valid Linux interface name (1-15 characters)`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) bad(`listen port ${port} is not a port`);
  try { hostPrefix(tunnelIp); } catch { bad(`tunnel IP ${JSON.stringify(tunnelIp)} is not an IP address`); }
  if (!['auto', 'kernel', 'userspace'].includes(mode)) bad(`mode ${JSON.stringify(mode)} is not auto, kernel or userspace`);
  // 1280 is the IPv6 minimum the tunnel must still carry
  if (underlayMtu !== undefined && (!Number.isInteger(underlayMtu) || underlayMtu - WG_OVERHEAD < 1280)) {
    bad(`underlay MTU ${underlayMtu} leaves less than 1280 bytes inside the tunnel`);
  }
}

/**
 * Create or adopt the device. An existing link of the same name from an earlier run is
 * adopted when it is kernel WireGuard; a tun device is an earlier wireguard-go, which is
 * replaced by a supervised one. Returns the mode in use.
 */
async function chooseDevice(iface: string, wanted: 'auto' | 'kernel' | 'userspace', logger: Logger): Promise<'kernel' | 'userspace'> {
  const existing = await readLink(iface);
  if (existing) {
    if (existing.kind === 'wireguard' && wanted !== 'userspace') {
      logger.info({ iface }, 'adopting the kernel WireGuard link of an earlier run');
      return 'kernel';
    }
    if (existing.kind === 'wireguard') {
      logger.warn({ iface }, 'userspace mode asked for: deleting the kernel WireGuard link of an earlier run');
      await deleteLink(iface);
    } else if (existing.kind === 'tun') {
      await evictStaleDaemon(iface, logger);
    } else {
      throw new WireGuardError(WG_ERR.SETUP,
        `an interface named ${iface} exists and is not WireGuard (kind ${existing.kind ?? 'unknown'}): remove it or choose another name`);
    }
  }
  if (wanted === 'userspace') return 'userspace';
  const made = await createKernelLink(iface);
  if (made.ok) return 'kernel';
  if (wanted === 'kernel') {
    throw new WireGuardError(WG_ERR.SETUP,
      `kernel WireGuard is not available: \`${made.command}\` failed: ${made.stderr} (load the wireguard module, or use mode auto or userspace for wireguard-go)`,
      { command: made.command, stderr: made.stderr });
  }
  logger.info({ command: made.command, stderr: made.stderr }, 'the kernel has no WireGuard: using wireguard-go');
  return 'userspace';
}
