// control/relay: the cluster-wide Observer (TCP 4245) that merges every agent's flows.
export { startRelay } from './relay.ts';
export type { RelayAgent, RelayOptions, RelayServer } from './relay.ts';
export { mergeSorted, ReorderBuffer, responseTime } from './merge.ts';
export type { ReorderOptions } from './merge.ts';
