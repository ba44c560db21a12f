// The proxy's memory stays bounded on the paths where a request fails or is refused: each
// path's requests, once done, leave nothing behind. Two proxies (node-a, node-b) in this
// process, every request cross-node; for each path, twice as many requests first (V8
// compiles the code they run), then a batch measured by the heap after full GCs. Two leaks
// this caught: gRPC answers that came whole stayed tracked for the policy recheck, and a
// dead pod's failed HTTP/2 sessions were held by their idle timers for 5 minutes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, createServer as httpServer, request as httpRequest, type Server as HttpServer } from 'node:http';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { connect, createServer as netServer, type Server } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { CompiledPolicy, EndpointInfo, ServiceInfo, Snapshot } from '../../control/api/types.ts';
import type { NodeProxy, Redirect } from '../../agent/proxy/index.ts';
import { wholeGrpcPod } from '../helpers/h2-frames.ts';
import { closeServer, listen, startProxyPair } from '../helpers/two-nodes.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const TRUST = 'cluster.local';
// 127.0.97.0–127.0.98.255: this file's own
const IP = { web: '127.0.98.1', grpc: '127.0.98.2', dead: '127.0.98.3' } as const;
const VIP = { web: '127.0.98.101', grpc: '127.0.98.102', deadH1: '127.0.98.103', deadH2: '127.0.98.104' } as const;
const ID = { client: 256, web: 257, grpc: 258, dead: 259 } as const;
const BATCH = 300;
/** what a batch may leave on the heap; each leak above held 5-10 KiB per request */
const MAX_GROWTH = 1024 * 1024;

function heapAfterGc(): number {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

describe('proxy: memory stays bounded on failing and refused requests', () => {
  let target: { ip: string; port: number } = { ip: '', port: 0 };
  const lookup = (): Redirect => ({ origIp: target.ip, origPort: target.port, endpointId: 7, srcIdentity: ID.client, dstIdentity: 0 });
  const servers: Array<Server | HttpServer> = [];
  let a: NodeProxy;
  let b: NodeProxy;
  let outbound = { host: '', port: 0 };
  // a path's clients: a connection's destination is fixed when it is accepted, so each path
  // opens its own
  let agent: Agent | undefined;
  let h2: ClientHttp2Session | undefined;

  before(async () => {
    const web = httpServer((_req, res) => res.end('ok'));
    const grpcPod = wholeGrpcPod();
    servers.push(web, grpcPod);
    const webPort = await listen(web, IP.web);
    const grpcPort = await listen(grpcPod, IP.grpc);
    // ports that are free: bound once, then closed (nothing listens on the dead pod's)
    const free = async (host: string): Promise<number> => {
      const probe = netServer();
      const port = await listen(probe, host);
      await closeServer(probe);
      return port;
    };
    const deadPort = await free(IP.dead);
    const tunnelPort = await free('127.0.97.1');

    const ep = (name: string, node: string, ip: string, id: number): EndpointInfo =>
      ({ namespace: 'app', name, uid: `uid-${name}`, node, ip, identity: id, labels: { app: name }, serviceAccount: name, enrolled: true });
    const endpoints = [ep('client', 'node-a', '127.0.0.1', ID.client), ep('web', 'node-b', IP.web, ID.web), ep('grpc', 'node-b', IP.grpc, ID.grpc),
      ep('dead', 'node-b', IP.dead, ID.dead)];
    const svc = (name: string, id: number, vip: string, targetPort: number, e: EndpointInfo, appProtocol: string): ServiceInfo => ({
      namespace: 'app', name, id, clusterIp: vip, identity: e.identity,
      ports: [{ name: 'p', port: 80, targetPort, protocol: 'TCP', appProtocol }],
      backends: [{ ip: e.ip, node: e.node, identity: e.identity, pod: e.name }],
    });
    const services = [svc('web', 1, VIP.web, webPort, endpoints[1]!, 'http'), svc('grpc', 2, VIP.grpc, grpcPort, endpoints[2]!, 'grpc'),
      svc('dead-h1', 3, VIP.deadH1, deadPort, endpoints[3]!, 'http'), svc('dead-h2', 4, VIP.deadH2, deadPort, endpoints[3]!, 'h2c')];
    const policies: CompiledPolicy[] = [{
      id: 1, namespace: 'app', name: 'web-allow', action: 'ALLOW', selects: [ID.web],
      rules: [{ index: 0, from: [{ identities: [ID.client] }], to: [{ paths: ['/ok'] }], when: [] }],
    }];
    const snapshot = (node: string): Snapshot => ({
      version: 1, node, trustDomain: TRUST,
      nodes: [
        { name: 'node-a', underlayIp: '127.0.97.1', tunnelIp: '127.0.97.1', podCidrs: [], wgPublicKey: '', proxyIp: '127.0.97.11' },
        { name: 'node-b', underlayIp: '127.0.97.2', tunnelIp: '127.0.97.2', podCidrs: [], wgPublicKey: '', proxyIp: '127.0.97.12' },
      ],
      identities: Object.entries(ID).map(([sa, id]) => ({ id, namespace: 'app', serviceAccount: sa, labels: { app: sa }, spiffeId: `spiffe://${TRUST}/ns/app/sa/${sa}` })),
      endpoints, services, policies, l4: [],
    });
    [a, b] = await startProxyPair({
      at: { inbound: (i) => `127.0.97.${i}`, outbound: (i) => `127.0.97.1${i}`, upstream: (i) => `127.0.97.2${i}` }, tunnelPort, lookup,
    });
    a.update(snapshot('node-a'));
    b.update(snapshot('node-b'));
    outbound = { host: a.addresses.outbound.address, port: a.addresses.outbound.port };
  });

  function closeClients(): void {
    agent?.destroy();
    agent = undefined;
    h2?.close();
    h2 = undefined;
  }

  after(async () => {
    closeClients();
    await Promise.all([a?.close(), b?.close()]);
    await Promise.all(servers.map(closeServer));
  });

  function h1(path: string): Promise<number> {
    return new Promise((resolve, reject) => {
      agent ??= new Agent({ keepAlive: true, maxSockets: 1 });
      const req = httpRequest({ host: outbound.host, port: outbound.port, path, agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
  }

  function h2req(headers: Record<string, string>, body?: Buffer): Promise<number> {
    if (h2 === undefined) {
      h2 = h2connect(`http://${outbound.host}:${outbound.port}`);
      h2.on('error', () => {});
    }
    const session = h2;
    return new Promise((resolve, reject) => {
      const r = session.request(headers, { endStream: body === undefined });
      let status = 0;
      r.on('response', (h) => { status = Number(h[':status']); });
      r.on('error', reject);
      r.on('close', () => resolve(status));
      r.resume();
      if (body !== undefined) r.end(body);
    });
  }

  /** a client that sends a request's head and resets the connection before its answer */
  function reset(): Promise<number> {
    return new Promise((resolve) => {
      const s = connect({ host: outbound.host, port: outbound.port }, () => {
        s.write('GET /ok HTTP/1.1\r\nhost: web\r\n\r\n', () => s.resetAndDestroy());
      });
      s.on('error', () => {});
      s.on('close', () => resolve(0));
    });
  }

  const GRPC_MESSAGE = Buffer.from([0, 0, 0, 0, 4, ...Buffer.from('soak')]);
  const paths: Array<{ name: string; to: { ip: string; port: number }; one: () => Promise<number>; status: number }> = [
    { name: 'HTTP/1.1 denied by policy', to: { ip: VIP.web, port: 80 }, one: () => h1('/denied'), status: 403 },
    { name: 'HTTP/1.1 to a pod that refuses connections', to: { ip: VIP.deadH1, port: 80 }, one: () => h1('/x'), status: 503 },
    { name: 'HTTP/2 to a pod that refuses connections', to: { ip: VIP.deadH2, port: 80 }, one: () => h2req({ ':path': '/x' }), status: 503 },
    {
      name: 'gRPC answered whole', to: { ip: VIP.grpc, port: 80 }, status: 200,
      one: () => h2req({ ':method': 'POST', ':path': '/demo.Greeter/Hello', 'content-type': 'application/grpc', te: 'trailers' }, GRPC_MESSAGE),
    },
    { name: 'HTTP/1.1 reset by the client mid-request', to: { ip: VIP.web, port: 80 }, one: reset, status: 0 },
  ];

  for (const path of paths) {
    it(`${path.name}: ${BATCH} requests leave less than ${MAX_GROWTH / 1024} KiB on the heap`, async () => {
      closeClients();
      target = path.to;
      const batch = async (n: number): Promise<void> => {
        for (let i = 0; i < n; i++) assert.equal(await path.one(), path.status);
      };
      await batch(2 * BATCH);
      const start = heapAfterGc();
      await batch(BATCH);
      const grown = heapAfterGc() - start;
      assert.ok(grown < MAX_GROWTH, `the heap grew ${Math.round(grown / 1024)} KiB over ${BATCH} requests`);
      assert.equal(a.trackedLive + b.trackedLive, 0);
    });
  }
});
