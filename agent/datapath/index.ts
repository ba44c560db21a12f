// agent/datapath: the BPF state of one node.
export { Datapath, DatapathError, ATTACH_POINTS, destroyPinned, lookupRedirectIn, openAgentMap, pinRootFor } from './datapath.ts';
export type { DatapathConfig, Redirect, Counters, ReconcileResult, OpenReport, AttachPoint } from './datapath.ts';
export type { DesiredState, EndpointState, IpcacheEntry, ServiceEntry, PolicyEntry, GuardEntry } from './state.ts';
export { emptyState } from './state.ts';
export type { VerdictEvent } from './events.ts';
export { decodeVerdictEvent, EVENT_SIZE } from './events.ts';
export * as constants from './constants.ts';
export { addrToBytes, bytesToAddr, parseCidr } from './addr.ts';
