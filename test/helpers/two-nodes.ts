// Two NodeProxy instances standing in for two nodes, with real pod servers, on one block
// of 127.0.0.0/8 per test file (files may run at the same time). With block N:
//   node-a: tunnel 127.0.N.1, outbound 127.0.N+1.1, upstream bind 127.0.N+2.1
//   node-b: tunnel 127.0.N.2, outbound 127.0.N+1.2, upstream bind 127.0.N+2.2
//   pods 127.0.N+3.x: the client pod (.1, on node-a) and the given pods from .2 on, all on one port.
// A client pod connects to node-a's outbound listener; the stubbed datapath lookup hands
// out the original destination queued for its connection.

import { connect, createServer as netServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Agent, request, type Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { EndpointInfo, NodeInfo, Snapshot } from '../../control/api/types.ts';
import { NodeProxy, type ProxyOptions, type Redirect } from '../../agent/proxy/index.ts';
import type { ProxyLimits } from '../../agent/proxy/limits.ts';

export const CLIENT_IDENTITY = 256;
export const POD_IDENTITY = 257;

export interface PodSpec { name: string; node: 'node-a' | 'node-b'; server: Server | HttpServer }

export interface TwoNodes {
  a: NodeProxy;
  b: NodeProxy;
  /** the client pod's address (on node-a) */
  clientIp: string;
  /** node-a's and node-b's tunnel addresses */
  tunnelA: string;
  tunnelB: string;
  tunnelPort: number;
  /** the one port every pod listens on */
  port: number;
  /** pod name → IP */
  ip: Record<string, string>;
  /** a connection from the client pod through node-a's outbound listener to a pod */
  dial(podIp: string): Socket;
  /** each node's Prometheus registry */
  registryA: Registry;
  registryB: Registry;
  close(): Promise<void>;
}

export function listen(server: Server | HttpServer, host: string, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

/** resolves when the socket (or stream) has closed, reset or not (events.once would reject on 'error') */
export function closed(s: Socket | Duplex): Promise<void> {
  if (s.closed) return Promise.resolve();
  return new Promise((resolve) => s.once('close', () => resolve()));
}

export function closeServer(server: Server | HttpServer): Promise<void> {
  return new Promise((resolve) => {
    if ('closeAllConnections' in server) server.closeAllConnections();
    server.close(() => resolve());
  });
}

/** where each node's proxy listens and binds: i is 1 for node-a, 2 for node-b */
export interface PairAddresses {
  inbound(i: 1 | 2): string;
  outbound(i: 1 | 2): string;
  upstream(i: 1 | 2): string;
}

export interface ProxyPairOptions {
  at: PairAddresses;
  /** the one tunnel port both nodes listen on, as in a cluster */
  tunnelPort: number;
  lookup: ProxyOptions['originalDestination'];
  /** node-a's and node-b's flow sinks; none by default */
  onFlow?: readonly [ProxyOptions['onFlow'], ProxyOptions['onFlow']];
  /** node-a's and node-b's registries; fresh ones by default */
  registries?: readonly [Registry, Registry];
  limits?: Partial<ProxyLimits>;
}

/**
 * node-a's and node-b's NodeProxy (logging off), sharing one tunnel port and one stubbed
 * datapath lookup. Not yet given a snapshot. If node-b's cannot start, node-a's is closed.
 */
export async function startProxyPair(o: ProxyPairOptions): Promise<[NodeProxy, NodeProxy]> {
  const logger = pino({ level: 'silent' });
  const start = (i: 1 | 2): Promise<NodeProxy> => NodeProxy.start({
    node: i === 1 ? 'node-a' : 'node-b', outbound: { host: o.at.outbound(i), port: 0 }, inbound: { host: o.at.inbound(i), port: o.tunnelPort },
    upstreamBindIp: o.at.upstream(i), peerTunnelPort: o.tunnelPort, ...(o.limits ? { limits: o.limits } : {}),
    originalDestination: o.lookup, onFlow: o.onFlow?.[i - 1] ?? (() => {}), registry: o.registries?.[i - 1] ?? new Registry(), logger,
  });
  const a = await start(1);
  try {
    return [a, await start(2)];
  } catch (err) {
    await a.close();
    throw err;
  }
}

export async function startTwoNodes(block: number, pods: PodSpec[], limits: Partial<ProxyLimits>): Promise<TwoNodes> {
  const net = (i: number, host: number): string => `127.0.${block + i}.${host}`;
  const tunnelA = net(0, 1);
  const tunnelB = net(0, 2);
  const clientIp = net(3, 1);
  const ip: Record<string, string> = {};
  const servers: Array<Server | HttpServer> = [];
  const sockets = new Set<Socket>();
  const queue: Array<{ ip: string; port: number }> = [];
  let a: NodeProxy | undefined;
  let b: NodeProxy | undefined;

  const close = async (): Promise<void> => {
    for (const s of sockets) s.destroy();
    await Promise.all([a?.close(), b?.close()]);
    await Promise.all(servers.map(closeServer));
  };
  try {
    let port = 0;
    for (const [i, pod] of pods.entries()) {
      ip[pod.name] = net(3, i + 2);
      servers.push(pod.server);
      port = await listen(pod.server, ip[pod.name]!, port);
    }
    // one tunnel port for both nodes, as in a cluster: take a free one on node-a's address
    const probe = netServer();
    const tunnelPort = await listen(probe, tunnelA);
    await closeServer(probe);

    const nodes: NodeInfo[] = [
      { name: 'node-a', underlayIp: net(-1, 1), tunnelIp: tunnelA, podCidrs: [], wgPublicKey: '', proxyIp: net(1, 1) },
      { name: 'node-b', underlayIp: net(-1, 2), tunnelIp: tunnelB, podCidrs: [], wgPublicKey: '', proxyIp: net(1, 2) },
    ];
    const endpoint = (name: string, node: string, podIp: string, identity: number): EndpointInfo => (
      { namespace: 'app', name, uid: `uid-${name}`, node, ip: podIp, identity, labels: { app: name }, serviceAccount: name, enrolled: true });
    const endpoints = [endpoint('client', 'node-a', clientIp, CLIENT_IDENTITY), ...pods.map((p) => endpoint(p.name, p.node, ip[p.name]!, POD_IDENTITY))];
    const identities = [CLIENT_IDENTITY, POD_IDENTITY].map((id) => ({
      id, namespace: 'app', serviceAccount: `sa-${id}`, labels: {}, spiffeId: `spiffe://cluster.local/ns/app/sa/sa-${id}`,
    }));
    const snapshot = (node: string): Snapshot => ({
      version: 1, node, trustDomain: 'cluster.local', nodes, identities, endpoints, services: [], policies: [], l4: [],
    });
    const lookup = (clientAddr: string): Redirect | undefined => {
      const next = clientAddr === clientIp ? queue.shift() : undefined;
      return next && { origIp: next.ip, origPort: next.port, endpointId: 7, srcIdentity: CLIENT_IDENTITY, dstIdentity: 0 };
    };
    const registries = [new Registry(), new Registry()] as const;
    [a, b] = await startProxyPair({
      at: { inbound: (i) => net(0, i), outbound: (i) => net(1, i), upstream: (i) => net(2, i) }, tunnelPort, lookup, registries, limits,
    });
    a.update(snapshot('node-a'));
    b.update(snapshot('node-b'));
    const proxyA = a;
    return {
      a, b, clientIp, tunnelA, tunnelB, tunnelPort, port, ip, close, registryA: registries[0], registryB: registries[1],
      dial(podIp: string): Socket {
        queue.push({ ip: podIp, port });
        const s = connect({ host: proxyA.addresses.outbound.address, port: proxyA.addresses.outbound.port, localAddress: clientIp });
        sockets.add(s);
        s.once('close', () => sockets.delete(s));
        // a reset after a client library let go of the socket must not end the test run;
        // whoever watches the socket still gets its errors
        s.on('error', () => {});
        return s;
      },
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** one GET on a connection of its own (`dial`), as a client library sends it */
export function httpGet(dial: () => Socket, path: string): Promise<{ status: number; body: string }> {
  return httpSend(dial, 'GET', path);
}

/** one request on a connection of its own (`dial`), with `body` (text/plain) if given */
export function httpSend(dial: () => Socket, method: string, path: string, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const agent = new Agent({ keepAlive: false });
    (agent as unknown as { createConnection: () => Socket }).createConnection = dial;
    const headers = body === undefined ? {} : { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) };
    const req = request({ agent, host: 'backend', method, path, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
