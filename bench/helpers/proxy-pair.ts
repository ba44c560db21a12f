// Two NodeProxy instances (node-a, node-b) in one process for bench/proxy.ts, so the
// bench can pin the whole proxy to one CPU and read its CPU time and RSS from /proc.
// The client pod is 127.0.0.1 on node-a (any load tool can be it); the stubbed datapath
// lookup hands every connection the original destination the bench set last.
//
// argv[2]: JSON Topology. stdout: one JSON line when listening, then one line per command.
// stdin commands, one per line:
//   target <ip> <port>   the original destination of the next connections → "ok"
//   mem                  a full GC, then process.memoryUsage() as JSON
//   gc                   the GC pauses since the last `gc` (GcWatch.take(), agent/proxy/gc.ts) as JSON
// The process exits when stdin ends, so a bench that dies takes its proxy with it.
import { createInterface } from 'node:readline';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { EndpointInfo, IdentityInfo, NodeInfo, ServiceInfo, Snapshot } from '../../control/api/types.ts';
import { GcWatch, NodeProxy, type Redirect } from '../../agent/proxy/index.ts';

export interface PairNode { name: string; tunnelIp: string; outboundIp: string; upstreamBindIp: string }
export interface PairService { name: string; vip: string; port: number; targetPort: number; appProtocol: string; backendIp: string; node: string }
export interface Topology { tunnelPort: number; outboundPort: number; nodes: [PairNode, PairNode]; services: PairService[] }

const TRUST = 'cluster.local';
const CLIENT = { ip: '127.0.0.1', identity: 256 };

function identity(id: number, sa: string): IdentityInfo {
  return { id, namespace: 'bench', serviceAccount: sa, labels: { app: sa }, spiffeId: `spiffe://${TRUST}/ns/bench/sa/${sa}` };
}

function snapshot(topo: Topology, node: string): Snapshot {
  const nodes: NodeInfo[] = topo.nodes.map((n) => ({
    name: n.name, underlayIp: n.tunnelIp, tunnelIp: n.tunnelIp, podCidrs: [], wgPublicKey: '', proxyIp: n.outboundIp,
  }));
  const endpoints: EndpointInfo[] = [{
    namespace: 'bench', name: 'client', uid: 'uid-client', node: topo.nodes[0].name, ip: CLIENT.ip, identity: CLIENT.identity,
    labels: { app: 'client' }, serviceAccount: 'client', enrolled: true,
  }];
  const identities = [identity(CLIENT.identity, 'client')];
  const services: ServiceInfo[] = topo.services.map((s, i) => {
    const id = CLIENT.identity + 1 + i;
    identities.push(identity(id, s.name));
    endpoints.push({
      namespace: 'bench', name: s.name, uid: `uid-${s.name}`, node: s.node, ip: s.backendIp, identity: id,
      labels: { app: s.name }, serviceAccount: s.name, enrolled: true,
    });
    return {
      namespace: 'bench', name: s.name, id: i + 1, clusterIp: s.vip, identity: id,
      ports: [{ name: 'p', port: s.port, targetPort: s.targetPort, protocol: 'TCP', appProtocol: s.appProtocol }],
      backends: [{ ip: s.backendIp, node: s.node, identity: id, pod: s.name }],
    };
  });
  // no MeshPolicy: every request is allowed, after the policy lookup that finds none
  return { version: 1, node, trustDomain: TRUST, nodes, identities, endpoints, services, policies: [], l4: [] };
}

async function main(): Promise<void> {
  const topo = JSON.parse(process.argv[2] ?? '') as Topology;
  let next: Redirect = { origIp: '', origPort: 0, endpointId: 7, srcIdentity: CLIENT.identity, dstIdentity: 0 };
  const logger = pino({ level: 'silent' });
  // flows go nowhere: the agent's flow store is measured by bench/flows.ts, not here
  const onFlow = (): void => {};
  const proxies = await Promise.all(topo.nodes.map((n) => NodeProxy.start({
    node: n.name, outbound: { host: n.outboundIp, port: topo.outboundPort }, inbound: { host: n.tunnelIp, port: topo.tunnelPort },
    upstreamBindIp: n.upstreamBindIp, peerTunnelPort: topo.tunnelPort, originalDestination: () => next, onFlow,
    registry: new Registry(), logger,
  })));
  for (const [i, p] of proxies.entries()) p.update(snapshot(topo, topo.nodes[i]!.name));
  // both proxies run on this one thread: one watch sees the pauses they both wait out
  const pauses = new GcWatch(new Registry(), 'pair');

  const out = (v: unknown): void => { process.stdout.write(`${typeof v === 'string' ? v : JSON.stringify(v)}\n`); };
  out({ ready: true, pid: process.pid });
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [cmd, a, b] = line.trim().split(/\s+/);
    if (cmd === 'target') {
      next = { ...next, origIp: a!, origPort: Number(b) };
      out('ok');
    } else if (cmd === 'gc') {
      out(pauses.take());
    } else if (cmd === 'mem') {
      globalThis.gc?.();
      out(process.memoryUsage());
    } else {
      out({ error: `unknown command ${JSON.stringify(line)}` });
    }
  }
  await Promise.all(proxies.map((p) => p.close()));
  process.exit(0);
}

await main();
