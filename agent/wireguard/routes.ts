// The pure half of the routes: which tunnel routes and strict-mode guards the main table
// must hold, parsed from and planned against `ip -j route show proto nodal`.
//
// Strict mode, and why it is done this way: every prefix a peer ever announced gets two
// routes in the main table, both tagged with our route protocol:
//     <prefix> dev nodal-wg0 src <tunnelIp> metric 0   (tunnel route)
//     unreachable <prefix> metric 1                     (guard)
// For the same prefix the lower metric wins, so while the tunnel route exists traffic goes
// into the tunnel; when it is missing (peer removed, wireguard-go died and took its tun
// device and routes with it, interface down: the kernel flushes IPv4 routes of a downed
// link) the guard is the longest match and the kernel answers EHOSTUNREACH instead of
// falling through to the default route and the underlay in plaintext. This needs no
// ip rule, no extra table and no firewall: it is two routes per prefix, visible in
// `ip route`, and it composes with the node's own pod routes: a CIDR that later becomes
// local is reached through its connected or /32 pod routes, which beat the guard by
// metric (0 < 1) or prefix length. Guards stay after their peer leaves (that is the point)
// and go only with close({ removeInterface: true }).
import { hostPrefix } from './peers.ts';

/* an unassigned protocol number in iproute2's rt_protos, so a restarted agent finds
   exactly the routes it owns (`ip route show proto 110`), and nobody else's */
export const ROUTE_PROTO = '110';
/* IPv6 turns metric 0 into 1024, so IPv6 starts at 1; the guard is always one above */
export const TUNNEL_METRIC = { 4: 0, 6: 1 } as const;
export const GUARD_METRIC = { 4: 1, 6: 2 } as const;

export interface RouteEntry {
  kind: 'tunnel' | 'guard';
  family: 4 | 6;
  /** canonical prefix, always with a length */
  dst: string;
  metric: number;
  /** tunnel routes only */
  dev?: string;
  src?: string;
}

export interface RoutePlan {
  /** `ip route replace` these, guards first so there is never a gap */
  replace: RouteEntry[];
  /** `ip route del` these */
  remove: RouteEntry[];
}

const familyOf = (dst: string): 4 | 6 => (dst.includes(':') ? 6 : 4);

/** parse one family's `ip -j route show proto 110` output */
export function parseRoutes(json: string, family: 4 | 6): RouteEntry[] {
  const text = json.trim();
  if (text === '') return [];
  const rows = JSON.parse(text) as Array<{ type?: string; dst?: string; dev?: string; metric?: number; prefsrc?: string }>;
  const out: RouteEntry[] = [];
  for (const r of rows) {
    if (!r.dst || r.dst === 'default') continue;
    const dst = r.dst.includes('/') ? r.dst : hostPrefix(r.dst);
    const metric = r.metric ?? 0;
    if (r.type === 'unreachable') out.push({ kind: 'guard', family, dst, metric });
    else if (r.type === undefined || r.type === 'unicast') {
      out.push({ kind: 'tunnel', family, dst, metric, ...(r.dev ? { dev: r.dev } : {}), ...(r.prefsrc ? { src: r.prefsrc } : {}) });
    }
  }
  return out;
}

export function tunnelRoute(dst: string, iface: string, tunnelIp: string): RouteEntry {
  const family = familyOf(dst);
  // a source hint only for the family of the tunnel address
  const src = familyOf(tunnelIp) === family ? { src: tunnelIp } : {};
  return { kind: 'tunnel', family, dst, metric: TUNNEL_METRIC[family], dev: iface, ...src };
}

export function guardRoute(dst: string): RouteEntry {
  const family = familyOf(dst);
  return { kind: 'guard', family, dst, metric: GUARD_METRIC[family] };
}

const same = (a: RouteEntry, b: RouteEntry): boolean =>
  a.kind === b.kind && a.dst === b.dst && a.metric === b.metric && a.dev === b.dev && a.src === b.src;

/**
 * The routes that make the table hold exactly a tunnel route for every prefix in
 * `tunnelPrefixes` and a guard for every prefix in `guardPrefixes` (a superset: guards of
 * departed peers stay). Anything else of ours is removed.
 */
export function planRoutes(current: readonly RouteEntry[], tunnelPrefixes: readonly string[], guardPrefixes: Iterable<string>,
  iface: string, tunnelIp: string): RoutePlan {
  const guards = [...new Set(guardPrefixes)].map(guardRoute);
  const tunnels = [...new Set(tunnelPrefixes)].map((d) => tunnelRoute(d, iface, tunnelIp));
  const want = [...guards, ...tunnels];
  const replace = want.filter((w) => !current.some((c) => same(c, w)));
  // a route `replace` overwrites (same prefix and metric) must not be deleted afterwards
  const slot = (r: RouteEntry): string => `${r.family} ${r.dst} ${r.metric}`;
  const taken = new Set(want.map(slot));
  const remove = current.filter((c) => !taken.has(slot(c)));
  return { replace, remove };
}

/** argv for `ip` that installs a route (replace is idempotent) */
export function routeReplaceArgs(r: RouteEntry): string[] {
  const base = [`-${r.family}`, 'route', 'replace'];
  if (r.kind === 'guard') return [...base, 'unreachable', r.dst, 'proto', ROUTE_PROTO, 'metric', String(r.metric)];
  return [...base, r.dst, 'dev', r.dev ?? '', ...(r.src ? ['src', r.src] : []), 'proto', ROUTE_PROTO, 'metric', String(r.metric)];
}

/** argv for `ip` that deletes exactly this route of ours */
export function routeDelArgs(r: RouteEntry): string[] {
  const base = [`-${r.family}`, 'route', 'del'];
  if (r.kind === 'guard') return [...base, 'unreachable', r.dst, 'proto', ROUTE_PROTO, 'metric', String(r.metric)];
  return [...base, r.dst, ...(r.dev ? ['dev', r.dev] : []), 'proto', ROUTE_PROTO, 'metric', String(r.metric)];
}
