// agent/proxy: the node's shared L7 proxy (DESIGN §5): outbound :15001, inbound tunnel
// :15008, HTTP/1.1 with per-request MeshPolicy, opaque TCP with an L4 decision.
export { NodeProxy } from './proxy.ts';
export type { ProxyOptions } from './proxy.ts';
export { ProxyWorkers, proxyWorkerCount } from './workers.ts';
export type { ProxyWorkersOptions } from './workers.ts';
export type { Redirect } from './context.ts';
export { ProxyError } from './errors.ts';
export type { ProxyErrorCode } from './errors.ts';
export { GcWatch } from './gc.ts';
export type { GcTally } from './gc.ts';
export { DETECT_WAIT_MS } from './stream.ts';
export { DEFAULT_TUNNEL_PORT, Header as TunnelHeader } from './tunnel.ts';
