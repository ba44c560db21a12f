// The sandbox's address and naming plan, as pure functions: which names and addresses a
// node or pod gets, where a pod is scheduled, which address it takes. Nothing here touches
// the machine, so all of it is unit-tested.
import { SandboxError, SandboxErrorCode } from './errors.ts';

/** one host per sandbox node; eight keep two cores responsive with an agent each */
export const MAX_NODES = 8;
export const DEFAULT_NODES = 2;

export const UNDERLAY_NETNS = 'nodal-underlay';
export const UNDERLAY_BRIDGE = 'nodal-br0';
export const UNDERLAY_GATEWAY = '10.10.0.1';
export const UNDERLAY_PREFIX = 24;
export const POD_BRIDGE = 'nodal-pods';
export const CLUSTER_CIDR = '10.96.0.0/16';

/** DESIGN §11 */
export const Ports = {
  CONTROL: 15012,
  HEALTH: 15021,
  AGENT_OBSERVER: 4244,
  RELAY: 4245,
} as const;

/** names of what the sandbox creates globally (netns, cgroup, pins): `down` finds leftovers by them */
export const NETNS_PREFIX_NODE = 'nodal-node-';
export const NETNS_PREFIX_POD = 'nodal-pod-';
export const CGROUP_ROOT_NAME = 'nodal-sandbox';
export const CGROUP_SYSTEM = 'system';
export const BPF_PIN_DIR = 'nodal';

export interface NodePlan {
  /** node-<i> */
  name: string;
  /** 1-based */
  index: number;
  netns: string;
  /** the veth end inside the underlay netns (the node's end is eth0) */
  underlayLink: string;
  underlayIp: string;
  tunnelIp: string;
  podCidr: string;
  /** the pod bridge's address: the pods' gateway and the node proxy's IP */
  proxyIp: string;
}

export function planNode(index: number): NodePlan {
  if (!Number.isInteger(index) || index < 1 || index > MAX_NODES) {
    throw new SandboxError(SandboxErrorCode.SCHEDULE, `node index ${index} is out of range 1..${MAX_NODES}`);
  }
  const name = `node-${index}`;
  return {
    name,
    index,
    netns: `${NETNS_PREFIX_NODE}${index}`,
    underlayLink: `vn-${name}`,
    underlayIp: `10.10.0.${10 + index}`,
    tunnelIp: `10.99.0.${index}`,
    podCidr: `10.244.${index}.0/24`,
    proxyIp: `10.244.${index}.1`,
  };
}

export function planNodes(count: number): NodePlan[] {
  if (!Number.isInteger(count) || count < 1 || count > MAX_NODES) {
    throw new SandboxError(SandboxErrorCode.SCHEDULE, `--nodes must be a whole number from 1 to ${MAX_NODES}, got ${String(count)}`);
  }
  return Array.from({ length: count }, (_, i) => planNode(i + 1));
}

/** the first 8 hex digits of a uid: short enough for a 15-byte interface name */
export function shortUid(uid: string): string {
  const hex = uid.replaceAll('-', '').toLowerCase();
  if (!/^[0-9a-f]{8,}$/.test(hex)) throw new Error(`not a uid: "${uid}"`);
  return hex.slice(0, 8);
}

export function podNetnsName(uid: string): string {
  return `${NETNS_PREFIX_POD}${shortUid(uid)}`;
}

/** the pod veth's end in the node netns (the pod's end is eth0) */
export function podHostLink(uid: string): string {
  return `vp${shortUid(uid)}`;
}

// --- IPv4 arithmetic -------------------------------------------------------------------

export function ipToInt(ip: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) throw new Error(`not an IPv4 address: "${ip}"`);
  let n = 0;
  for (const part of m.slice(1)) {
    const o = Number(part);
    if (o > 255) throw new Error(`not an IPv4 address: "${ip}"`);
    n = n * 256 + o;
  }
  return n;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function isIpv4(s: string): boolean {
  try {
    ipToInt(s);
    return true;
  } catch {
    return false;
  }
}

export function parseCidr(cidr: string): { base: number; size: number; prefix: number } {
  const [ip, len] = cidr.split('/');
  const prefix = Number(len);
  if (!ip || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) throw new Error(`not an IPv4 CIDR: "${cidr}"`);
  const size = 2 ** (32 - prefix);
  const base = ipToInt(ip) - (ipToInt(ip) % size);
  return { base, size, prefix };
}

export function cidrContains(cidr: string, ip: string): boolean {
  const { base, size } = parseCidr(cidr);
  const n = ipToInt(ip);
  return n >= base && n < base + size;
}

/**
 * A pod address from a node's pod CIDR: the requested one if it is free and a host
 * address, else the lowest free one from .2 (.1 is the bridge), so freed addresses are
 * reused the way a node-local IPAM would.
 */
export function allocatePodIp(podCidr: string, used: Iterable<string>, requested?: string): string {
  const { base, size } = parseCidr(podCidr);
  const taken = new Set(used);
  const first = base + 2;
  const last = base + size - 2; // the broadcast address stays unused
  if (requested !== undefined) {
    if (!isIpv4(requested) || !cidrContains(podCidr, requested)) {
      throw new SandboxError(SandboxErrorCode.SCHEDULE, `requested pod IP ${requested} is not in the node's pod CIDR ${podCidr}`);
    }
    const n = ipToInt(requested);
    if (n < first || n > last) {
      throw new SandboxError(SandboxErrorCode.SCHEDULE, `requested pod IP ${requested} is reserved in ${podCidr} (usable: ${intToIp(first)}..${intToIp(last)})`);
    }
    if (taken.has(requested)) throw new SandboxError(SandboxErrorCode.SCHEDULE, `requested pod IP ${requested} is already in use`);
    return requested;
  }
  for (let n = first; n <= last; n++) {
    const ip = intToIp(n);
    if (!taken.has(ip)) return ip;
  }
  throw new SandboxError(SandboxErrorCode.SCHEDULE, `no free pod address left in ${podCidr}`);
}

/** FNV-1a: a stable spread of service names over the cluster range */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/**
 * A ClusterIP for a Service without one: derived from namespace/name so the same Service
 * gets the same address after delete and re-apply; probes forward on a collision.
 * 10.96.0.0/24 is left to addresses users pick by hand (the examples use 10.96.0.20).
 */
export function allocateClusterIp(namespace: string, name: string, used: Iterable<string>): string {
  const { base, size } = parseCidr(CLUSTER_CIDR);
  const taken = new Set(used);
  const low = base + 256;
  const span = size - 256 - 1; // last address (broadcast) left out
  const start = fnv1a(`${namespace}/${name}`) % span;
  for (let i = 0; i < span; i++) {
    const ip = intToIp(low + ((start + i) % span));
    if (!taken.has(ip)) return ip;
  }
  throw new SandboxError(SandboxErrorCode.SCHEDULE, `no free ClusterIP left in ${CLUSTER_CIDR}`);
}

/**
 * Where a pod runs: the node it names (which must exist), else the node with the fewest
 * pods, the lowest index breaking ties so a run is reproducible.
 */
export function schedule(nodeName: string | undefined, nodes: readonly NodePlan[], podsPerNode: ReadonlyMap<string, number>): NodePlan {
  if (nodeName !== undefined) {
    const node = nodes.find((n) => n.name === nodeName);
    if (!node) {
      throw new SandboxError(SandboxErrorCode.SCHEDULE,
        `spec.nodeName "${nodeName}" is not a sandbox node (nodes: ${nodes.map((n) => n.name).join(', ')})`);
    }
    return node;
  }
  let best: NodePlan | undefined;
  for (const n of nodes) {
    if (!best || (podsPerNode.get(n.name) ?? 0) < (podsPerNode.get(best.name) ?? 0)) best = n;
  }
  if (!best) throw new SandboxError(SandboxErrorCode.SCHEDULE, 'the sandbox has no nodes');
  return best;
}
