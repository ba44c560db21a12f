// Verdict events from the kernel ring buffer, decoded into the mesh's words.
import { verdictEvent } from './codec.ts';
import {
  Direction, hookName, reasonName, verdictName, type HookName, type ReasonName, type VerdictName,
} from './constants.ts';

export interface VerdictEvent {
  /** wall-clock time in nanoseconds since the epoch */
  timeNs: bigint;
  cookie: bigint;
  cgroupId: bigint;
  source: { ip: string; port: number };
  destination: { ip: string; port: number };
  family: 4 | 6;
  proto: number;
  verdict: VerdictName;
  reason: ReasonName;
  hook: HookName;
  direction: 'EGRESS' | 'INGRESS';
  endpointId: number;
  srcIdentity: number;
  dstIdentity: number;
  /** 0 when no policy decided (default allow, or not from the proxy) */
  policyId: number;
  rule: number;
}

// bpf_ktime_get_ns() and process.hrtime() both read CLOCK_MONOTONIC
const monoToWall = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();

export const EVENT_SIZE = verdictEvent.size;

export function decodeVerdictEvent(b: Buffer): VerdictEvent {
  const r = verdictEvent.decode(b);
  return {
    timeNs: r.ts_ns + monoToWall,
    cookie: r.cookie,
    cgroupId: r.cgroup_id,
    source: { ip: r.saddr, port: r.sport },
    destination: { ip: r.daddr, port: r.dport },
    family: r.family === 6 ? 6 : 4,
    proto: r.proto,
    verdict: verdictName(r.verdict),
    reason: reasonName(r.reason),
    hook: hookName(r.hook),
    direction: r.direction === Direction.INGRESS ? 'INGRESS' : 'EGRESS',
    endpointId: r.endpoint_id,
    srcIdentity: r.src_identity,
    dstIdentity: r.dst_identity,
    policyId: r.policy_id,
    rule: r.rule,
  };
}
