// Snapshot messages as bytes, for the server's stream. A model version's shared sections
// (nodes, identities, endpoints, services, policies, guards ...) are the same arrays in
// every node's snapshot, so each is converted and protobuf-encoded once per version and
// its bytes reused for every agent; only a node's own `l4` is encoded per node. Protobuf
// lets a message be written in pieces: the occurrences of a repeated field concatenate, so
// Snapshot = head (version, node, trust domain) ++ each section's own encoding.
import type { Snapshot } from '../api/types.ts';
import {
  SNAPSHOT_SECTIONS, loadAgentControl, sectionEnum, sectionToWire, type SnapshotSection, type WireSnapshotMessage,
} from './proto.ts';

let serializer: ((m: WireSnapshotMessage) => Buffer) | undefined;
/** SnapshotMessage → bytes, as the generic path would write it */
function serialize(m: Partial<WireSnapshotMessage>): Buffer {
  serializer ??= loadAgentControl().definition.Stream!.responseSerialize as (m: WireSnapshotMessage) => Buffer;
  return serializer(m as WireSnapshotMessage);
}

/** SnapshotMessage field 1 (snapshot), length-delimited: tag (1 << 3) | 2 */
const SNAPSHOT_TAG = 0x0a;

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return Buffer.from(out);
}

/** the bytes of a Snapshot message: encoded as the snapshot field of a SnapshotMessage, then unwrapped */
function snapshotBytes(snapshot: Record<string, unknown>): Buffer {
  const b = serialize({ snapshot });
  if (b[0] !== SNAPSHOT_TAG) throw new Error(`snapshot encoding: expected field 1 first, got byte ${b[0]}`);
  let len = 0, scale = 1, i = 1;
  for (;;) {
    const x = b[i++]!;
    len += (x & 0x7f) * scale;
    if (x < 0x80) break;
    scale *= 0x80;
  }
  if (i + len !== b.length) throw new Error(`snapshot encoding: length ${len} does not match ${b.length - i} bytes`);
  return b.subarray(i);
}

const NOTHING = Buffer.alloc(0);
const sectionCache = new Map<SnapshotSection, WeakMap<object, Buffer>>(SNAPSHOT_SECTIONS.map((k) => [k, new WeakMap()]));

/** one section's bytes within a Snapshot message, encoded once per section array */
function sectionBytes<K extends SnapshotSection>(k: K, v: Snapshot[K]): Buffer {
  if (v === undefined || v.length === 0) return NOTHING;
  const cache = sectionCache.get(k)!;
  let b = cache.get(v);
  if (b === undefined) cache.set(v, (b = snapshotBytes({ [k]: sectionToWire(k, v) })));
  return b;
}

/**
 * The SnapshotMessage for `s`: whole, or with `delta` only the sections it names (the
 * others are as in the version it builds on). The same bytes as serializing
 * snapshotToWire / deltaToWire, up to field order, which protobuf readers ignore.
 */
export function encodeSnapshotMessage(s: Snapshot, delta?: { from: number; sections: readonly SnapshotSection[] }): Buffer {
  const parts = [snapshotBytes({ version: s.version, node: s.node, trustDomain: s.trustDomain })];
  for (const k of delta ? delta.sections : SNAPSHOT_SECTIONS) parts.push(sectionBytes(k, s[k]));
  const inner = parts.reduce((n, b) => n + b.length, 0);
  const tail = delta ? serialize({ deltaFrom: delta.from, sections: delta.sections.map(sectionEnum) }) : NOTHING;
  return Buffer.concat([Buffer.from([SNAPSHOT_TAG]), varint(inner), ...parts, tail]);
}
