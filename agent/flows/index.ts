// agent/flows: flows as Hubble shapes them — the record, the per-node store, Hubble's
// filters, the Observer gRPC server, the conversions to wire and JSON, and the printer
// `nodal observe` uses. The relay (control/relay) and the CLI reach in only through here.
export type { Flow, FlowEndpoint, FlowPolicy, FlowL7Http, FlowVerdict, FlowType, TrafficDirection, FlowEventType, FlowService, FlowTime } from './flow.ts';
export { MessageType, TracePoint, DropReasonCode, eventTypeOf, compareTime, timeFromNs, timeFromMs, nowTime } from './flow.ts';
export { FlowStore, FlowSubscription, DEFAULT_CAPACITY, DEFAULT_FOLLOWER_QUEUE } from './store.ts';
export type { FlowPredicate, FlowQuery, FollowEvent, FollowSink, FlowStoreOptions, LostSource } from './store.ts';
export { compileFilter, compileFilters, parseLabelSelector, urlPath } from './filter.ts';
export type { FlowFilter } from './filter.ts';
export { flowFromVerdictEvent, endpointLabels, RESERVED_IDENTITY_NAMES } from './from-datapath.ts';
export { startObserver, flowResponse } from './observer.ts';
export type { ObserverOptions, ObserverServer } from './observer.ts';
export { bindListeners, prepareSocket, shutdown, parseFlowsRequest, waitDrain, statusError } from './listen.ts';
export type { FlowLogger, FlowsRequest } from './listen.ts';
export { observerClient, connectOrFail, observerService, jsonRoot, protoDir, repoRoot, nodalVersion, LOADER_OPTIONS } from './proto.ts';
export type { ObserverClient, WireGetFlowsRequest, WireGetFlowsResponse, WireNodeStatus, WireLostEvent, WireServerStatus, WireNode, WireTimestamp } from './proto.ts';
export { cutToNumber, flowToWire, flowFromWire, flowToJson, responseToJson, responseFromJson, messageToJson, messageFromJson, rfc3339, parseRfc3339, timeFromWire } from './wire.ts';
export type { WireFlow } from './wire.ts';
export { formatCompact, formatDict, formatTableRows, alignTable, formatTime, formatLost, formatNodeStatus, flowTypeText, verdictText, hostNames, DICT_SEPARATOR } from './printer.ts';
export type { PrintOptions } from './printer.ts';
export { FlowFilterError, ObserverBindError, FlowProtoError, FlowJsonError } from './errors.ts';
