// Verdict events from the kernel ring buffer, decoded into the mesh's words.
// This is the agent's hottest loop (every connection verdict of the node passes here), so
// the decoder is written out by hand instead of walking StructCodec's field list: offsets
// still come from the one layout in codec.ts (checked against the BTF), names from
// tables indexed by number, and IPv4 address strings from a small cache.
import { bytesToAddr } from './addr.ts';
import { verdictEvent } from './codec.ts';
import {
  Direction, Hook, Reason, Verdict, type HookName, type ReasonName, type VerdictName,
} from './constants.ts';

export interface VerdictEvent {
  /** wall-clock time in nanoseconds since the epoch */
  timeNs: bigint;
  /** the same instant split as a protobuf Timestamp; decodeVerdictEvent fills it */
  time?: { seconds: number; nanos: number };
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
const wallOffSec = Number(monoToWall / 1_000_000_000n);
const wallOffNs = Number(monoToWall % 1_000_000_000n);

export const EVENT_SIZE = verdictEvent.size;

function offsetOf(name: string): number {
  const f = verdictEvent.fields.find((x) => x.name === name);
  if (!f) throw new Error(`verdict_event has no field ${name}`);
  return f.offset;
}
const O_TS = offsetOf('ts_ns');
const O_COOKIE = offsetOf('cookie');
const O_CGROUP = offsetOf('cgroup_id');
const O_SADDR = offsetOf('saddr');
const O_DADDR = offsetOf('daddr');
const O_SPORT = offsetOf('sport');
const O_DPORT = offsetOf('dport');
const O_FAMILY = offsetOf('family');
const O_PROTO = offsetOf('proto');
const O_VERDICT = offsetOf('verdict');
const O_REASON = offsetOf('reason');
const O_HOOK = offsetOf('hook');
const O_DIRECTION = offsetOf('direction');
const O_RULE = offsetOf('rule');
const O_ENDPOINT = offsetOf('endpoint_id');
const O_SRC_ID = offsetOf('src_identity');
const O_DST_ID = offsetOf('dst_identity');
const O_POLICY = offsetOf('policy_id');

/** name by number for a u8 field: every unlisted value is 'UNKNOWN' */
function byNumber<N extends string>(table: Readonly<Record<string, number>>, unknown: N): N[] {
  const out = new Array<N>(256).fill(unknown);
  for (const [k, v] of Object.entries(table)) if (v >= 0 && v < 256) out[v] = k as N;
  return out;
}
const VERDICTS = byNumber<VerdictName>(Verdict, 'UNKNOWN');
const REASONS = byNumber<ReasonName>(Reason, 'UNKNOWN');
const HOOKS = byNumber<HookName>({ connect4: Hook.CONNECT4, connect6: Hook.CONNECT6, ingress: Hook.INGRESS }, 'unknown');

// A node talks to a bounded set of addresses most of the time: reuse their strings rather
// than build two per event. Bounded, so a scan from many sources cannot grow it forever.
const V4_CACHE_MAX = 16_384;
const v4Cache = new Map<number, string>();

// plain byte reads: Buffer's read methods check their arguments on every call
const u16 = (b: Buffer, o: number): number => b[o]! | (b[o + 1]! << 8);
const u32 = (b: Buffer, o: number): number => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16)) + b[o + 3]! * 0x1000000;

/** a 16-byte address at `off`: IPv4-mapped as dotted quad (cached), else IPv6 text */
function addrAt(b: Buffer, off: number): string {
  if (u32(b, off) !== 0 || u32(b, off + 4) !== 0 || u16(b, off + 8) !== 0) return bytesToAddr(b, off);
  if (b[off + 10] !== 0xff || b[off + 11] !== 0xff) {
    // all zero: the unbound source of a connect() (the hook runs before the socket has an address)
    return (b[off + 10]! | b[off + 11]! | u32(b, off + 12)) === 0 ? '::' : bytesToAddr(b, off);
  }
  const v4 = b[off + 12]! * 0x1000000 + ((b[off + 13]! << 16) | (b[off + 14]! << 8) | b[off + 15]!);
  let s = v4Cache.get(v4);
  if (s === undefined) {
    if (v4Cache.size >= V4_CACHE_MAX) v4Cache.clear();
    s = `${v4 >>> 24}.${(v4 >>> 16) & 255}.${(v4 >>> 8) & 255}.${v4 & 255}`;
    v4Cache.set(v4, s);
  }
  return s;
}

/**
 * The wall time of a monotonic timestamp as seconds + nanos, in plain numbers while the
 * uptime fits in 2^53 ns (104 days), exact either way.
 */
function wallTime(lo: number, hi: number): { seconds: number; nanos: number } {
  let seconds: number, nanos: number;
  if (hi < 0x200000) {
    const mono = hi * 4294967296 + lo;
    seconds = Math.floor(mono / 1e9);
    nanos = mono - seconds * 1e9;
    // the division may round up across a second boundary; the subtraction is exact
    if (nanos < 0) { seconds--; nanos += 1e9; }
  } else {
    const mono = (BigInt(hi) << 32n) | BigInt(lo);
    seconds = Number(mono / 1_000_000_000n);
    nanos = Number(mono % 1_000_000_000n);
  }
  seconds += wallOffSec;
  nanos += wallOffNs;
  if (nanos >= 1e9) { seconds++; nanos -= 1e9; } else if (nanos < 0) { seconds--; nanos += 1e9; }
  return { seconds, nanos };
}

/** one verdict_event record, at `off` in `b` (a batch of records needs no view per record) */
export function decodeVerdictEvent(b: Buffer, off = 0): VerdictEvent {
  if (b.length - off < EVENT_SIZE) throw new RangeError(`verdict event of ${b.length - off} bytes at ${off}, expected ${EVENT_SIZE}`);
  return {
    timeNs: b.readBigUInt64LE(off + O_TS) + monoToWall,
    time: wallTime(u32(b, off + O_TS), u32(b, off + O_TS + 4)),
    cookie: b.readBigUInt64LE(off + O_COOKIE),
    cgroupId: b.readBigUInt64LE(off + O_CGROUP),
    source: { ip: addrAt(b, off + O_SADDR), port: u16(b, off + O_SPORT) },
    destination: { ip: addrAt(b, off + O_DADDR), port: u16(b, off + O_DPORT) },
    family: b[off + O_FAMILY] === 6 ? 6 : 4,
    proto: b[off + O_PROTO]!,
    verdict: VERDICTS[b[off + O_VERDICT]!]!,
    reason: REASONS[b[off + O_REASON]!]!,
    hook: HOOKS[b[off + O_HOOK]!]!,
    direction: b[off + O_DIRECTION] === Direction.INGRESS ? 'INGRESS' : 'EGRESS',
    rule: u16(b, off + O_RULE),
    endpointId: u32(b, off + O_ENDPOINT),
    srcIdentity: u32(b, off + O_SRC_ID),
    dstIdentity: u32(b, off + O_DST_ID),
    policyId: u32(b, off + O_POLICY),
  };
}
