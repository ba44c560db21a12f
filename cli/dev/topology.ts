// The sandbox's network: an underlay netns with a bridge, one netns per node joined to it
// by a veth, one netns per pod joined to its node's pod bridge. Every link is created with
// both ends already inside sandbox namespaces, so nothing ever appears in the machine's
// own namespace and deleting the namespaces deletes every link.
import { ipBatch, netnsExists, run } from './system.ts';
import { POD_BRIDGE, UNDERLAY_BRIDGE, UNDERLAY_GATEWAY, UNDERLAY_NETNS, UNDERLAY_PREFIX, type NodePlan } from './plan.ts';

/**
 * A bridge with no address of its own takes its lowest port's MAC, and takes another when
 * a port with a lower one joins: every pod's ARP entry for its gateway then names a MAC
 * the bridge no longer accepts, and the node (with its proxy) is out of the pods' reach
 * until the entry expires, 20 to 50 s. A bridge whose address was set never changes it.
 * Locally administered (02:...), one per bridge: 0 the underlay, i the pod bridge of node-i.
 */
function bridgeMac(index: number): string {
  return `02:6e:64:00:00:${index.toString(16).padStart(2, '0')}`;
}

export async function addNetns(name: string): Promise<void> {
  await run('ip', ['netns', 'add', name]);
}

export async function deleteNetns(name: string): Promise<void> {
  if (!netnsExists(name)) return;
  await run('ip', ['netns', 'del', name]);
}

/**
 * A pod's network, its veth first: deleting one end from the node's side removes both at
 * once. Deleting the pod's netns alone leaves the veth to the kernel's namespace cleanup,
 * which runs later on a workqueue: the node lists the link for a while after. A link that
 * is already gone is no error, and the netns deletion takes what is left either way.
 */
export async function deletePodNetwork(pod: PodNetwork, nodeNetns: string | undefined): Promise<void> {
  if (nodeNetns !== undefined && netnsExists(nodeNetns)) await run('ip', ['-n', nodeNetns, 'link', 'del', pod.hostLink], { allowFail: true });
  await deleteNetns(pod.netns);
}

export async function createUnderlay(): Promise<void> {
  await addNetns(UNDERLAY_NETNS);
  await ipBatch(UNDERLAY_NETNS, [
    'link set lo up',
    `link add ${UNDERLAY_BRIDGE} address ${bridgeMac(0)} type bridge`,
    `addr add ${UNDERLAY_GATEWAY}/${UNDERLAY_PREFIX} dev ${UNDERLAY_BRIDGE}`,
    `link set ${UNDERLAY_BRIDGE} up`,
  ]);
}

export async function createNode(node: NodePlan): Promise<void> {
  await addNetns(node.netns);
  await ipBatch(UNDERLAY_NETNS, [
    `link add ${node.underlayLink} type veth peer name eth0 netns ${node.netns}`,
    `link set ${node.underlayLink} master ${UNDERLAY_BRIDGE} up`,
  ]);
  await ipBatch(node.netns, [
    'link set lo up',
    `addr add ${node.underlayIp}/${UNDERLAY_PREFIX} dev eth0`,
    'link set eth0 up',
    `link add ${POD_BRIDGE} address ${bridgeMac(node.index)} type bridge`,
    `addr add ${node.proxyIp}/24 dev ${POD_BRIDGE}`,
    `link set ${POD_BRIDGE} up`,
  ]);
  // the node routes between its pods, the tunnel and the underlay, as a real node does
  await inNetns(node.netns, ['sh', '-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward']);
}

export interface PodNetwork {
  netns: string;
  hostLink: string;
  ip: string;
}

export async function createPodNetwork(pod: PodNetwork, node: NodePlan): Promise<void> {
  await addNetns(pod.netns);
  try {
    await ipBatch(node.netns, [
      `link add ${pod.hostLink} type veth peer name eth0 netns ${pod.netns}`,
      `link set ${pod.hostLink} master ${POD_BRIDGE} up`,
    ]);
    await ipBatch(pod.netns, [
      'link set lo up',
      `addr add ${pod.ip}/24 dev eth0`,
      'link set eth0 up',
      `route add default via ${node.proxyIp}`,
    ]);
  } catch (err) {
    await deleteNetns(pod.netns); // its veth goes with it
    throw err;
  }
}

export async function inNetns(netns: string, argv: readonly string[]): Promise<string> {
  return run('nsenter', [`--net=/run/netns/${netns}`, '--', ...argv]);
}
