// What the three directions (outbound, tunnel, inbound) share, composed once in proxy.ts.

import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { EndpointInfo } from '../../control/api/types.ts';
import type { Flow, FlowEndpoint } from '../flows/flow.ts';
import type { ProxyLimits } from './limits.ts';
import type { Direction, ProxyMetrics } from './metrics.ts';
import type { AccessLog, Tracer } from '../telemetry/index.ts';
import type { TraceParent } from './trace.ts';
import type { MeshView } from './view.ts';

/** the datapath's record of a redirected connection (agent/datapath lookupRedirect) */
export interface Redirect { origIp: string; origPort: number; endpointId: number; srcIdentity: number; dstIdentity: number }

export interface ProxyContext {
  readonly node: string;
  readonly upstreamBindIp: string;
  /** the current view; undefined until the first snapshot */
  view(): MeshView | undefined;
  emit(flow: Flow): void;
  readonly metrics: ProxyMetrics;
  readonly log: Logger;
  /** bounds on what clients and peers may send (limits.ts) */
  readonly limits: ProxyLimits;
  /** count a connection of this side, keep it for close(), and forget it when it closes */
  track(conn: Duplex, direction: Direction): void;
  /** add a socket's bytes (both ways) to the side's counter when it closes */
  countBytes(socket: import('node:net').Socket, direction: Direction): void;
  /** per-hop spans (exported only with --otlp-endpoint); always present for propagation */
  readonly tracer: Tracer;
  /** the access log, absent when off */
  readonly accessLog: AccessLog | undefined;
}

/** the workload that opened the connection, as the destination side knows it */
export interface SourceInfo {
  identity: number;
  endpoint: EndpointInfo | undefined;
  /** flow form of the source, with the endpoint ID when the datapath gave one */
  flow: FlowEndpoint;
  ip: string;
  port: number;
  /** Istio principal form of the SPIFFE id */
  principal: string | undefined;
  namespace: string | undefined;
}

/** one connection handed to the destination side, by the tunnel or by the local outbound */
export interface InboundConn {
  src: SourceInfo;
  /** the local pod the connection is for */
  dst: EndpointInfo;
  port: number;
  /** Service appProtocol declared for this pod port, if any */
  appProtocol: string | undefined;
  /** the connection's trace: from the tunnel header, or started by the outbound side */
  trace: TraceParent;
  via: 'tunnel' | 'local';
  /** the peer node for tunnel connections */
  peer: string | undefined;
  /**
   * The connection carries the source proxy's own HTTP/1.1 requests (mesh.ts): each names its
   * client's port (x-nodal-source-addr), and answers keep x-nodal-upstream-failure, which the
   * source side reads for its retries and outlier detection
   */
  pooled?: true;
  /** an opaque connection could not reach its pod: the source side's outlier detection hears it */
  upstreamFailed?(): void;
}

export function sourceFlowEndpoint(view: MeshView, endpoint: EndpointInfo | undefined, identity: number, endpointId?: number): FlowEndpoint {
  const base = view.flowEndpoint(endpoint, identity);
  // the datapath's endpoint id is per connection knowledge; the shared object stays frozen
  if (endpointId === undefined || endpointId === 0) return base.identity === identity ? base : { ...base, identity };
  return { ...base, ID: endpointId, identity };
}
