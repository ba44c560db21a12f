// Fault injection (Envoy's HTTP fault filter, Istio's VirtualService fault): per request,
// independently, a fixed delay with probability delay.percent and an abort with
// probability abort.percent, each drawn from the injected random (percent in 0..100,
// fractions allowed). The delay comes first, then the abort, as in Envoy. For a gRPC request the
// abort is answered as HTTP 200 with a grpc-status mapped from the configured HTTP status
// by gRPC's "HTTP to gRPC status code mapping" (doc/http-grpc-status-mapping.md).

import type { CompiledTrafficPolicy } from '../../../control/api/types.ts';

export type FaultConfig = NonNullable<CompiledTrafficPolicy['faultInjection']>;

export interface FaultDecision {
  /** wait this long before handling the request (0: none) */
  delayMs: number;
  /** answer with this instead of forwarding; undefined: forward */
  abort: { httpStatus: number; grpcStatus: number } | undefined;
}

/** shared by every request without a fault: no allocation on the common path */
export const NO_FAULT: FaultDecision = Object.freeze({ delayMs: 0, abort: undefined }) as FaultDecision;

/** gRPC's HTTP → gRPC status mapping */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400: return 13; // INTERNAL
    case 401: return 16; // UNAUTHENTICATED
    case 403: return 7; // PERMISSION_DENIED
    case 404: return 12; // UNIMPLEMENTED
    case 429: case 502: case 503: case 504: return 14; // UNAVAILABLE
    default: return 2; // UNKNOWN
  }
}

function hit(percent: number, random: () => number): boolean {
  return percent > 0 && random() * 100 < percent;
}

export function decideFault(cfg: FaultConfig | undefined, random: () => number): FaultDecision {
  if (!cfg) return NO_FAULT;
  const delayMs = cfg.delay && hit(cfg.delay.percent, random) ? cfg.delay.delayMs : 0;
  const abort = cfg.abort && hit(cfg.abort.percent, random)
    ? { httpStatus: cfg.abort.httpStatus, grpcStatus: grpcStatusForHttp(cfg.abort.httpStatus) }
    : undefined;
  return delayMs === 0 && abort === undefined ? NO_FAULT : { delayMs, abort };
}
