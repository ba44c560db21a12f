// The pure half of the peer set: validate a desired peer list, compute each peer's allowed
// IPs, diff it against what the device holds, build the one `wg set` that applies the
// diff, and parse `wg show <iface> dump`. No kernel, no processes: unit-tested as is.
import { isIPv4, isIPv6 } from 'node:net';
import { WG_ERR, WireGuardError } from './errors.ts';
import { isWireGuardKey } from './keys.ts';

/* NAT and stateful firewalls on the underlay forget a UDP flow after ~30 s; 25 s is what
   WireGuard's own docs recommend to keep it open */
export const PERSISTENT_KEEPALIVE_S = 25;

export interface WireGuardPeer {
  node: string;
  publicKey: string;
  /** underlayIp:51871 ([v6]:51871 for IPv6) */
  endpoint: string;
  tunnelIp: string;
  podCidrs: string[];
}

/** a validated peer with its allowed IPs in canonical form */
export interface DesiredPeer {
  node: string;
  publicKey: string;
  endpoint: string;
  allowedIps: string[];
}

/** one peer as the device reports it */
export interface PeerStatus {
  publicKey: string;
  endpoint?: string;
  /** unix seconds, 0 = never */
  latestHandshake: number;
  rxBytes: number;
  txBytes: number;
  allowedIps: string[];
  /** seconds, 0 = off */
  persistentKeepalive: number;
}

export interface PeerDiff {
  /** public keys to remove from the device */
  remove: string[];
  /** peers to create or whose endpoint, allowed IPs or keepalive changed */
  upsert: DesiredPeer[];
  unchanged: number;
}

export interface Cidr { family: 4 | 6; text: string; prefix: number }

/** parse "a.b.c.d/n" or "v6/n" (a bare address is a host route); canonical text, host bits must be zero */
export function parseCidr(s: string): Cidr {
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const lenText = slash < 0 ? undefined : s.slice(slash + 1);
  const family = isIPv4(addr) ? 4 : isIPv6(addr) ? 6 : 0;
  if (family === 0) throw new Error(`"${s}" is not an IP prefix`);
  const max = family === 4 ? 32 : 128;
  const prefix = lenText === undefined ? max : Number(lenText);
  if (lenText !== undefined && (!/^\d{1,3}$/.test(lenText) || prefix > max)) throw new Error(`"${s}" has an invalid prefix length`);
  const bytes = family === 4 ? v4Bytes(addr) : v6Bytes(addr);
  for (let bit = prefix; bit < max; bit++) {
    if ((bytes[bit >> 3]! >> (7 - (bit & 7))) & 1) throw new Error(`"${s}" has host bits set (the network is not ${addr})`);
  }
  return { family, prefix, text: `${family === 4 ? addr : canonicalV6(addr)}/${prefix}` };
}

/** the host prefix (/32 or /128) of one address, canonical */
export function hostPrefix(ip: string): string {
  if (isIPv4(ip)) return `${ip}/32`;
  if (isIPv6(ip)) return `${canonicalV6(ip)}/128`;
  throw new Error(`"${ip}" is not an IP address`);
}

function v4Bytes(a: string): number[] {
  return a.split('.').map(Number);
}

function v6Bytes(a: string): number[] {
  // the WHATWG URL parser expands and validates IPv6 text for us
  const full = new URL(`http://[${a}]/`).hostname.slice(1, -1);
  const [head = '', tail] = full.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out: number[] = [];
  for (const g of groups) { const n = parseInt(g, 16); out.push(n >> 8, n & 0xff); }
  return out;
}

/** RFC 5952 text (lowercase, longest zero run compressed), as iproute2 and wg print it */
function canonicalV6(a: string): string {
  return new URL(`http://[${a}]/`).hostname.slice(1, -1);
}

/** tunnel address + pod CIDRs, canonical, in that order, without duplicates */
export function allowedIpsOf(peer: Pick<WireGuardPeer, 'tunnelIp' | 'podCidrs'>): string[] {
  const out = [hostPrefix(peer.tunnelIp)];
  for (const c of peer.podCidrs) {
    const t = parseCidr(c).text;
    if (!out.includes(t)) out.push(t);
  }
  return out;
}

function canonicalEndpoint(ep: string): string {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(ep);
  const port = Number(m?.[3]);
  const host = m?.[1] ?? m?.[2] ?? '';
  if (!m || port < 1 || port > 65535) throw new Error(`endpoint "${ep}" is not ip:port (or [ipv6]:port)`);
  if (m[1] !== undefined ? !isIPv6(host) : !isIPv4(host)) throw new Error(`endpoint "${ep}" does not hold an IP address`);
  return m[1] !== undefined ? `[${canonicalV6(host)}]:${port}` : `${host}:${port}`;
}

/**
 * Validate the whole list before anything touches the device: a bad entry rejects the
 * list (the last good peer set stays in force), naming the node and the field.
 */
export function validatePeers(peers: readonly WireGuardPeer[], ownPublicKey: string): DesiredPeer[] {
  const out: DesiredPeer[] = [];
  const byKey = new Map<string, string>();
  const byPrefix = new Map<string, string>();
  for (const p of peers) {
    const who = `peer ${JSON.stringify(p.node)}`;
    const fail = (msg: string): never => { throw new WireGuardError(WG_ERR.PEERS, `${who}: ${msg}`); };
    if (typeof p.publicKey !== 'string' || !isWireGuardKey(p.publicKey)) fail(`public key ${JSON.stringify(p.publicKey)} is not a WireGuard key (44 base64 characters)`);
    if (p.publicKey === ownPublicKey) fail('has this node\'s own public key');
    const other = byKey.get(p.publicKey);
    if (other !== undefined) fail(`has the same public key as peer ${JSON.stringify(other)}`);
    byKey.set(p.publicKey, p.node);
    let endpoint = '';
    let allowedIps: string[] = [];
    try {
      endpoint = canonicalEndpoint(p.endpoint);
      allowedIps = allowedIpsOf(p);
    } catch (err) {
      fail((err as Error).message);
    }
    for (const a of allowedIps) {
      // WireGuard would silently move a prefix to whichever peer was set last
      const owner = byPrefix.get(a);
      if (owner !== undefined) fail(`${a} is also claimed by peer ${JSON.stringify(owner)}`);
      byPrefix.set(a, p.node);
    }
    out.push({ node: p.node, publicKey: p.publicKey, endpoint, allowedIps });
  }
  return out;
}

const sameSet = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && a.every((x) => b.includes(x));

/** what must change on the device so its peers are exactly `desired` */
export function diffPeers(current: readonly PeerStatus[], desired: readonly DesiredPeer[]): PeerDiff {
  const want = new Set(desired.map((d) => d.publicKey));
  const have = new Map(current.map((c) => [c.publicKey, c]));
  const remove = current.filter((c) => !want.has(c.publicKey)).map((c) => c.publicKey);
  const upsert: DesiredPeer[] = [];
  let unchanged = 0;
  for (const d of desired) {
    const c = have.get(d.publicKey);
    if (c && c.endpoint === d.endpoint && c.persistentKeepalive === PERSISTENT_KEEPALIVE_S && sameSet(c.allowedIps, d.allowedIps)) unchanged++;
    else upsert.push(d);
  }
  return { remove, upsert, unchanged };
}

/**
 * One `wg set` for the whole diff, so the kernel (one netlink message) or wireguard-go
 * (one UAPI set transaction) applies it at once. `allowed-ips` replaces a peer's list.
 * Returns undefined when there is nothing to do.
 */
export function wgSetArgs(iface: string, diff: PeerDiff): string[] | undefined {
  if (diff.remove.length === 0 && diff.upsert.length === 0) return undefined;
  const args = ['set', iface];
  for (const k of diff.remove) args.push('peer', k, 'remove');
  for (const p of diff.upsert) {
    args.push('peer', p.publicKey, 'endpoint', p.endpoint, 'allowed-ips', p.allowedIps.join(','),
      'persistent-keepalive', String(PERSISTENT_KEEPALIVE_S));
  }
  return args;
}

/**
 * Parse `wg show <iface> dump`. The first line describes the interface and carries the
 * PRIVATE key: it is dropped here, unread, and no error ever quotes a line.
 */
export function parseDump(text: string): PeerStatus[] {
  const lines = text.split('\n').filter((l) => l.length > 0);
  const out: PeerStatus[] = [];
  for (let i = 1; i < lines.length; i++) {
    const f = lines[i]!.split('\t');
    if (f.length !== 8) throw new Error(`wg show dump: peer line ${i} has ${f.length} fields, expected 8`);
    const [publicKey, , endpoint, allowed, handshake, rx, tx, keepalive] = f as [string, string, string, string, string, string, string, string];
    const num = (v: string, what: string): number => {
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < 0) throw new Error(`wg show dump: peer line ${i}: ${what} is not a count`);
      return n;
    };
    out.push({
      publicKey,
      ...(endpoint === '(none)' ? {} : { endpoint }),
      allowedIps: allowed === '(none)' ? [] : allowed.split(','),
      latestHandshake: num(handshake, 'latest handshake'),
      rxBytes: num(rx, 'rx bytes'),
      txBytes: num(tx, 'tx bytes'),
      persistentKeepalive: keepalive === 'off' ? 0 : num(keepalive, 'persistent keepalive'),
    });
  }
  return out;
}
