// Codecs for every struct in bpf/api/nodal.h. The layout is declared once per struct;
// offsets follow C's natural alignment, and test/unit/codec-layout.test.ts compares
// them with the BTF of the compiled objects, so a change on one side fails a test.
import { endianness } from 'node:os';
import { ADDR_LEN, addrToBytes, bytesToAddr } from './addr.ts';

if (endianness() !== 'LE') throw new Error('nodal datapath codecs assume a little-endian host');

type Kind = 'u8' | 'u16' | 'u32' | 'u64' | 'addr' | 'addr4' | 'pad';
const KIND_SIZE: Record<Kind, number> = { u8: 1, u16: 2, u32: 4, u64: 8, addr: ADDR_LEN, addr4: 4, pad: 0 };
const KIND_ALIGN: Record<Kind, number> = { u8: 1, u16: 2, u32: 4, u64: 8, addr: 1, addr4: 1, pad: 1 };

type FieldSpec = readonly [name: string, kind: Kind, padBytes?: number];
export interface FieldLayout { name: string; kind: Kind; offset: number; size: number }

type Value = number | bigint | string;
export type Decoded = Record<string, Value>;

export class StructCodec<T extends Decoded> {
  readonly cName: string;
  readonly fields: readonly FieldLayout[];
  readonly size: number;

  constructor(cName: string, spec: readonly FieldSpec[]) {
    this.cName = cName;
    let off = 0, maxAlign = 1;
    const fields: FieldLayout[] = [];
    for (const [name, kind, padBytes] of spec) {
      const size = kind === 'pad' ? (padBytes ?? 0) : KIND_SIZE[kind];
      const align = KIND_ALIGN[kind];
      maxAlign = Math.max(maxAlign, align);
      off = Math.ceil(off / align) * align;
      fields.push({ name, kind, offset: off, size });
      off += size;
    }
    this.size = Math.ceil(off / maxAlign) * maxAlign;
    this.fields = fields;
  }

  encode(v: Partial<T>, out: Buffer = Buffer.alloc(this.size), base = 0): Buffer {
    out.fill(0, base, base + this.size);
    for (const f of this.fields) {
      const x = v[f.name as keyof T] as Value | undefined;
      if (x === undefined || f.kind === 'pad') continue;
      const at = base + f.offset;
      switch (f.kind) {
        case 'u8': out.writeUInt8(Number(x), at); break;
        case 'u16': out.writeUInt16LE(Number(x), at); break;
        case 'u32': out.writeUInt32LE(Number(x), at); break;
        case 'u64': out.writeBigUInt64LE(BigInt(x), at); break;
        case 'addr': addrToBytes(String(x), out, at); break;
        case 'addr4': {
          const parts = String(x).split('.').map(Number);
          for (let i = 0; i < 4; i++) out[at + i] = parts[i] ?? 0;
          break;
        }
      }
    }
    return out;
  }

  decode(b: Buffer, base = 0): T {
    const o: Decoded = {};
    for (const f of this.fields) {
      if (f.kind === 'pad' || f.name.startsWith('_')) continue;
      const at = base + f.offset;
      switch (f.kind) {
        case 'u8': o[f.name] = b.readUInt8(at); break;
        case 'u16': o[f.name] = b.readUInt16LE(at); break;
        case 'u32': o[f.name] = b.readUInt32LE(at); break;
        case 'u64': o[f.name] = b.readBigUInt64LE(at); break;
        case 'addr': o[f.name] = bytesToAddr(b, at); break;
        case 'addr4': o[f.name] = `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`; break;
      }
    }
    return o as T;
  }
}

export interface EndpointValue extends Decoded {
  endpoint_id: number; identity: number; flags: number; egress_policy_id: number; ingress_policy_id: number;
}
export const endpointValue = new StructCodec<EndpointValue>('endpoint_value', [
  ['endpoint_id', 'u32'], ['identity', 'u32'], ['flags', 'u32'],
  ['egress_policy_id', 'u32'], ['ingress_policy_id', 'u32'], ['_pad', 'u32'],
]);

/** endpoints are keyed by cgroup id, a bare u64 */
export function endpointKey(cgroupId: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(cgroupId);
  return b;
}

export interface IpcacheKey extends Decoded { prefixlen: number; addr: string }
export const ipcacheKey = new StructCodec<IpcacheKey>('ipcache_key', [['prefixlen', 'u32'], ['addr', 'addr']]);
export interface IpcacheValue extends Decoded { identity: number; flags: number }
export const ipcacheValue = new StructCodec<IpcacheValue>('ipcache_value', [['identity', 'u32'], ['flags', 'u32']]);

export interface ServiceKey extends Decoded { addr: string; port: number; proto: number }
export const serviceKey = new StructCodec<ServiceKey>('service_key', [
  ['addr', 'addr'], ['port', 'u16'], ['proto', 'u8'], ['_pad', 'u8'],
]);
export interface ServiceValue extends Decoded { service_id: number; identity: number }
export const serviceValue = new StructCodec<ServiceValue>('service_value', [['service_id', 'u32'], ['identity', 'u32']]);

export interface PolicyKey extends Decoded {
  local_identity: number; peer_identity: number; port: number; proto: number; direction: number;
}
export const policyKey = new StructCodec<PolicyKey>('policy_key', [
  ['local_identity', 'u32'], ['peer_identity', 'u32'], ['port', 'u16'], ['proto', 'u8'], ['direction', 'u8'],
]);
export interface PolicyValue extends Decoded { action: number; flags: number; rule: number; policy_id: number }
export const policyValue = new StructCodec<PolicyValue>('policy_value', [
  ['action', 'u8'], ['flags', 'u8'], ['rule', 'u16'], ['policy_id', 'u32'],
]);

/** dst_guard is keyed by the destination identity, a bare u32 */
export function guardKey(identity: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(identity);
  return b;
}
export interface GuardValue extends Decoded { policy_id: number }
export const guardValue = new StructCodec<GuardValue>('guard_value', [['policy_id', 'u32']]);

export interface RedirectValue extends Decoded {
  orig_addr: string; orig_port: number; endpoint_id: number; src_identity: number; dst_identity: number;
}
export const redirectValue = new StructCodec<RedirectValue>('redirect_value', [
  ['orig_addr', 'addr'], ['orig_port', 'u16'], ['_pad', 'u16'],
  ['endpoint_id', 'u32'], ['src_identity', 'u32'], ['dst_identity', 'u32'],
]);
export interface SockKey extends Decoded { addr: string; port: number }
export const sockKey = new StructCodec<SockKey>('sock_key', [['addr', 'addr'], ['port', 'u16'], ['_pad', 'u16']]);

export interface RawVerdictEvent extends Decoded {
  ts_ns: bigint; cookie: bigint; cgroup_id: bigint; saddr: string; daddr: string; sport: number; dport: number;
  family: number; proto: number; verdict: number; reason: number; hook: number; direction: number; rule: number;
  endpoint_id: number; src_identity: number; dst_identity: number; policy_id: number;
}
export const verdictEvent = new StructCodec<RawVerdictEvent>('verdict_event', [
  ['ts_ns', 'u64'], ['cookie', 'u64'], ['cgroup_id', 'u64'], ['saddr', 'addr'], ['daddr', 'addr'],
  ['sport', 'u16'], ['dport', 'u16'], ['family', 'u8'], ['proto', 'u8'], ['verdict', 'u8'], ['reason', 'u8'],
  ['hook', 'u8'], ['direction', 'u8'], ['rule', 'u16'],
  ['endpoint_id', 'u32'], ['src_identity', 'u32'], ['dst_identity', 'u32'], ['policy_id', 'u32'],
]);

export interface NodalConfig extends Decoded { proxy_addr4: string; proxy_addr6: string; proxy_port: number }
export const nodalConfig = new StructCodec<NodalConfig>('nodal_config', [
  ['proxy_addr4', 'addr4'], ['proxy_addr6', 'addr'], ['proxy_port', 'u16'], ['_pad', 'u16'],
]);

export const ALL_CODECS: readonly StructCodec<Decoded>[] = [
  endpointValue, ipcacheKey, ipcacheValue, serviceKey, serviceValue, policyKey, policyValue, guardValue,
  redirectValue, sockKey, verdictEvent, nodalConfig,
] as unknown as readonly StructCodec<Decoded>[];
