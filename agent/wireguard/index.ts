// agent/wireguard: the node's WireGuard interface (DESIGN §6): key, device (kernel or
// wireguard-go), peers, the routes into the tunnel and the strict-mode guards.
export { WireGuard, DEFAULT_IFACE, DEFAULT_LISTEN_PORT } from './wireguard.ts';
export type { WireGuardOptions, WireGuardStatus } from './wireguard.ts';
export type { WireGuardPeer } from './peers.ts';
export { WireGuardError, WG_ERR } from './errors.ts';
export type { WireGuardErrorCode } from './errors.ts';
