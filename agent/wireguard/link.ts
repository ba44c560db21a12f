// The kernel-facing half of the interface and its routes, through iproute2: read the
// link, create a kernel WireGuard link, set address/MTU/up, read the underlay MTU, and
// apply a route plan.
import type { Logger } from 'pino';
import { WG_ERR, WireGuardError } from './errors.ts';
import { CommandFailure, must, runCommand, toWireGuardError } from './exec.ts';
import { hostPrefix } from './peers.ts';
import { parseRoutes, ROUTE_PROTO, routeDelArgs, routeReplaceArgs, type RouteEntry, type RoutePlan } from './routes.ts';

/* WireGuard's worst case per packet: outer IPv6 header 40 + UDP 8 + WireGuard header 16 + tag 16 */
export const WG_OVERHEAD = 80;
/* what an Ethernet underlay carries when nothing else can be read */
export const DEFAULT_UNDERLAY_MTU = 1500;

export interface LinkState {
  /** rtnetlink kind: 'wireguard' (kernel), 'tun' (wireguard-go), anything else is not ours */
  kind: string | undefined;
  mtu: number;
  up: boolean;
  /** addresses as prefix text, link-local IPv6 left out */
  addrs: string[];
}

interface IpAddrRow {
  mtu?: number;
  flags?: string[];
  linkinfo?: { info_kind?: string };
  addr_info?: Array<{ family?: string; local?: string; prefixlen?: number; scope?: string }>;
}

/** the link named iface in this network namespace, or undefined if there is none */
export async function readLink(iface: string): Promise<LinkState | undefined> {
  let stdout: string;
  try {
    ({ stdout } = await runCommand('ip', ['-j', '-d', 'addr', 'show', 'dev', iface]));
  } catch (err) {
    if (err instanceof CommandFailure && /does not exist|Cannot find device/.test(err.stderr)) return undefined;
    throw toWireGuardError(WG_ERR.SETUP, `reading link ${iface}`, err);
  }
  const row = (JSON.parse(stdout) as IpAddrRow[])[0];
  if (!row) return undefined;
  return {
    kind: row.linkinfo?.info_kind,
    mtu: row.mtu ?? 0,
    up: (row.flags ?? []).includes('UP'),
    addrs: (row.addr_info ?? [])
      .filter((a) => a.local && a.scope !== 'link')
      .map((a) => `${a.local}/${a.prefixlen}`),
  };
}

/**
 * Try to create a kernel WireGuard link. Returns the reason when the kernel has no
 * WireGuard (so 'auto' can fall back), throws on any other failure.
 */
export async function createKernelLink(iface: string): Promise<{ ok: true } | { ok: false; command: string; stderr: string }> {
  try {
    await runCommand('ip', ['link', 'add', 'dev', iface, 'type', 'wireguard']);
    return { ok: true };
  } catch (err) {
    if (err instanceof CommandFailure && !err.missing && /Unknown device type|not supported|No such device/i.test(err.stderr)) {
      return { ok: false, command: err.commandLine, stderr: err.stderr };
    }
    throw toWireGuardError(WG_ERR.SETUP, `creating kernel WireGuard link ${iface}`, err);
  }
}

export async function deleteLink(iface: string): Promise<void> {
  await must(WG_ERR.SETUP, `deleting link ${iface}`, 'ip', ['link', 'del', 'dev', iface]);
}

/** MTU of the device the default route leaves through; DEFAULT_UNDERLAY_MTU if none */
export async function readUnderlayMtu(logger: Logger): Promise<number> {
  try {
    const routes = JSON.parse((await runCommand('ip', ['-j', 'route', 'show', 'default'])).stdout || '[]') as Array<{ dev?: string; metric?: number }>;
    routes.sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0));
    const dev = routes.find((r) => r.dev)?.dev;
    if (dev) {
      const link = JSON.parse((await runCommand('ip', ['-j', 'link', 'show', 'dev', dev])).stdout) as Array<{ mtu?: number }>;
      const mtu = link[0]?.mtu;
      if (mtu) return mtu;
    }
    logger.info({ assumed: DEFAULT_UNDERLAY_MTU }, 'no default route: assuming the underlay MTU');
  } catch (err) {
    logger.warn({ err: (err as Error).message, assumed: DEFAULT_UNDERLAY_MTU }, 'cannot read the underlay MTU: assuming it');
  }
  return DEFAULT_UNDERLAY_MTU;
}

/** address tunnelIp/32 (only), MTU, up; idempotent, so it also repairs an adopted link */
export async function configureLink(iface: string, tunnelIp: string, mtu: number, logger: Logger): Promise<void> {
  const link = await readLink(iface);
  if (!link) throw new WireGuardError(WG_ERR.SETUP, `link ${iface} disappeared while it was being configured`);
  if (link.mtu !== mtu) await must(WG_ERR.SETUP, `setting the MTU of ${iface}`, 'ip', ['link', 'set', 'dev', iface, 'mtu', String(mtu)]);
  const want = hostPrefix(tunnelIp);
  if (!link.addrs.includes(want)) await must(WG_ERR.SETUP, `addressing ${iface}`, 'ip', ['addr', 'replace', want, 'dev', iface]);
  for (const a of link.addrs) {
    if (a === want) continue;
    // a tunnel address from an earlier run with another tunnel IP
    logger.info({ iface, addr: a }, 'removing a stale address from the WireGuard link');
    await must(WG_ERR.SETUP, `removing stale address ${a} from ${iface}`, 'ip', ['addr', 'del', a, 'dev', iface]);
  }
  if (!link.up) await must(WG_ERR.SETUP, `bringing ${iface} up`, 'ip', ['link', 'set', 'dev', iface, 'up']);
}

/** every route of ours (proto 110) in the main table, both families */
export async function readOurRoutes(): Promise<RouteEntry[]> {
  const out: RouteEntry[] = [];
  for (const family of [4, 6] as const) {
    const args = [`-${family}`, '-j', 'route', 'show', 'table', 'main', 'proto', ROUTE_PROTO];
    try {
      out.push(...parseRoutes((await runCommand('ip', args)).stdout, family));
    } catch (err) {
      // a kernel booted with ipv6.disable=1 has no IPv6 routes of ours to find
      if (family === 6 && err instanceof CommandFailure && /not supported/i.test(err.stderr)) continue;
      throw toWireGuardError(WG_ERR.PEERS, 'listing nodal routes', err);
    }
  }
  return out;
}

export async function applyRoutePlan(plan: RoutePlan): Promise<void> {
  // guards before tunnel routes (planRoutes orders them), deletions last
  for (const r of plan.replace) await must(WG_ERR.PEERS, `installing ${r.kind} route ${r.dst}`, 'ip', routeReplaceArgs(r));
  for (const r of plan.remove) {
    try {
      await runCommand('ip', routeDelArgs(r));
    } catch (err) {
      // gone already (the kernel flushes routes of a deleted link): that is what we wanted
      if (err instanceof CommandFailure && /No such process|not found/i.test(err.stderr)) continue;
      throw toWireGuardError(WG_ERR.PEERS, `removing ${r.kind} route ${r.dst}`, err);
    }
  }
}
