// Addresses as the datapath stores them: 16 bytes, IPv4 as IPv4-mapped IPv6
// (::ffff:a.b.c.d), network byte order (bpf/api/nodal.h).
import { isIPv4, isIPv6 } from 'node:net';

export const ADDR_LEN = 16;

export class AddressError extends Error {
  readonly code = 'NODAL_ERR_ADDRESS';
}

export function addrToBytes(ip: string, out: Buffer = Buffer.alloc(ADDR_LEN), off = 0): Buffer {
  if (isIPv4(ip)) {
    out.fill(0, off, off + 10);
    out[off + 10] = 0xff;
    out[off + 11] = 0xff;
    const parts = ip.split('.');
    for (let i = 0; i < 4; i++) out[off + 12 + i] = Number(parts[i]);
    return out;
  }
  const bare = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  if (!isIPv6(bare)) throw new AddressError(`not an IP address: ${JSON.stringify(ip)}`);
  const v4tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(bare);
  let text = bare;
  if (v4tail?.[1]) {
    const p = v4tail[1].split('.').map(Number);
    const hi = (((p[0] ?? 0) << 8) | (p[1] ?? 0)).toString(16);
    const lo = (((p[2] ?? 0) << 8) | (p[3] ?? 0)).toString(16);
    text = bare.slice(0, -v4tail[1].length) + `${hi}:${lo}`;
  }
  const [head = '', tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  for (let i = 0; i < 8; i++) out.writeUInt16BE(parseInt(groups[i] ?? '0', 16), off + i * 2);
  return out;
}

export function isMappedV4(b: Buffer, off = 0): boolean {
  for (let i = 0; i < 10; i++) if (b[off + i] !== 0) return false;
  return b[off + 10] === 0xff && b[off + 11] === 0xff;
}

export function bytesToAddr(b: Buffer, off = 0): string {
  if (isMappedV4(b, off)) return `${b[off + 12]}.${b[off + 13]}.${b[off + 14]}.${b[off + 15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(b.readUInt16BE(off + i * 2).toString(16));
  // compress the longest run of zero groups, as inet_ntop does
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** a CIDR as an LPM key: prefix length counted over the 16 stored bytes */
export function parseCidr(cidr: string): { addr: Buffer; prefixlen: number } {
  const slash = cidr.lastIndexOf('/');
  const ip = slash < 0 ? cidr : cidr.slice(0, slash);
  const v4 = isIPv4(ip);
  const max = v4 ? 32 : 128;
  const len = slash < 0 ? max : Number(cidr.slice(slash + 1));
  if (!Number.isInteger(len) || len < 0 || len > max) {
    throw new AddressError(`bad prefix length in ${JSON.stringify(cidr)}: expected 0..${max}`);
  }
  const addr = addrToBytes(ip);
  const prefixlen = v4 ? 96 + len : len;
  // zero the host bits so equal prefixes make equal keys
  for (let bit = prefixlen; bit < 128; bit++) {
    const byte = bit >> 3;
    addr[byte] = (addr[byte] ?? 0) & ~(0x80 >> (bit & 7));
  }
  return { addr, prefixlen };
}
