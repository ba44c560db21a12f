// A unary gRPC answer that arrives whole (headers, message and trailers in one read, as a
// small unary answer usually does) is taken as a WholeResponse: its body stream is never
// read. Its outcome (grpc-status, in trailers already here) must still be recorded at once
// on both sides: the destination's flow and both proxies' request metrics. Nothing of the
// request may stay behind in what the proxies track (the policy recheck's live set), or
// memory grows with every call. The gRPC pods write each answer in one write (h2-frames.ts
// wholeGrpcPod; node:http2's server would leave that to timing); the client is @grpc/grpc-js.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as netServer, type Server as NetServer } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import type { EndpointInfo, IdentityInfo, NodeInfo, ServiceInfo, Snapshot } from '../../control/api/types.ts';
import type { NodeProxy, Redirect } from '../../agent/proxy/index.ts';
import { FlowSink } from '../helpers/flow-sink.ts';
import { wholeGrpcPod } from '../helpers/h2-frames.ts';
import { closeServer, listen, startProxyPair } from '../helpers/two-nodes.ts';

const TRUST = 'cluster.local';
const ID = { client: 256, near: 257, far: 258 } as const;
// 127.0.92.0–127.0.95.255: this file's own
const IP = { client: '127.0.0.1', near: '127.0.95.1', far: '127.0.95.2', nearVip: '127.0.95.101', farVip: '127.0.95.102' } as const;
const CALLS = 40;
const METHOD = '/demo.Greeter/Hello';

function identity(id: number, sa: string): IdentityInfo {
  return { id, namespace: 'app', serviceAccount: sa, labels: { app: sa }, spiffeId: `spiffe://${TRUST}/ns/app/sa/${sa}` };
}
function endpoint(name: string, node: string, ip: string, id: number): EndpointInfo {
  return { namespace: 'app', name, uid: `uid-${name}`, node, ip, identity: id, labels: { app: name }, serviceAccount: name, enrolled: true };
}

async function counted(r: Registry, labels: Record<string, string>): Promise<number> {
  const m = (await r.getMetricsAsJSON()).find((x) => x.name === 'nodal_proxy_requests_total');
  let n = 0;
  for (const v of m?.values ?? []) if (Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want)) n += v.value;
  return n;
}

describe('proxy: gRPC answers that arrive whole', () => {
  const sinkA = new FlowSink();
  const sinkB = new FlowSink();
  const registryA = new Registry();
  const registryB = new Registry();
  let next = { ip: '', port: 0 };
  const lookup = (): Redirect => ({ origIp: next.ip, origPort: next.port, endpointId: 7, srcIdentity: ID.client, dstIdentity: 0 });
  const pods: NetServer[] = [];
  let a: NodeProxy;
  let b: NodeProxy;

  before(async () => {
    const near = wholeGrpcPod();
    const far = wholeGrpcPod();
    pods.push(near, far);
    const nearPort = await listen(near, IP.near);
    const farPort = await listen(far, IP.far);
    const probe = netServer();
    const tunnelPort = await listen(probe, '127.0.92.1');
    await closeServer(probe);

    const nodes: NodeInfo[] = [
      { name: 'node-a', underlayIp: '127.0.92.1', tunnelIp: '127.0.92.1', podCidrs: [], wgPublicKey: '', proxyIp: '127.0.93.1' },
      { name: 'node-b', underlayIp: '127.0.92.2', tunnelIp: '127.0.92.2', podCidrs: [], wgPublicKey: '', proxyIp: '127.0.93.2' },
    ];
    const endpoints = [endpoint('client', 'node-a', IP.client, ID.client), endpoint('near', 'node-a', IP.near, ID.near), endpoint('far', 'node-b', IP.far, ID.far)];
    const svc = (name: string, id: number, vip: string, targetPort: number, e: EndpointInfo): ServiceInfo => ({
      namespace: 'app', name, id, clusterIp: vip, identity: e.identity,
      ports: [{ name: 'grpc', port: 9090, targetPort, protocol: 'TCP', appProtocol: 'grpc' }],
      backends: [{ ip: e.ip, node: e.node, identity: e.identity, pod: e.name }],
    });
    const services = [svc('near', 1, IP.nearVip, nearPort, endpoints[1]!), svc('far', 2, IP.farVip, farPort, endpoints[2]!)];
    const snapshot = (node: string): Snapshot => ({
      version: 1, node, trustDomain: TRUST, nodes, identities: [identity(ID.client, 'client'), identity(ID.near, 'near'), identity(ID.far, 'far')],
      endpoints, services, policies: [], l4: [],
    });
    [a, b] = await startProxyPair({
      at: { inbound: (i) => `127.0.92.${i}`, outbound: (i) => `127.0.93.${i}`, upstream: (i) => `127.0.94.${i}` },
      tunnelPort, lookup, onFlow: [sinkA.push, sinkB.push], registries: [registryA, registryB],
    });
    a.update(snapshot('node-a'));
    b.update(snapshot('node-b'));
  });

  after(async () => {
    // the proxies' pooled connections to the pods go with them, so the pods can close
    await Promise.all([a?.close(), b?.close()]);
    await Promise.all(pods.map(closeServer));
  });

  /** CALLS unary calls, one after another, on one grpc-js channel to node-a's outbound listener */
  async function calls(): Promise<string[]> {
    const client = new grpc.Client(`${a.addresses.outbound.address}:${a.addresses.outbound.port}`, grpc.credentials.createInsecure());
    try {
      const answers: string[] = [];
      for (let i = 0; i < CALLS; i++) {
        answers.push(await new Promise<string>((resolve, reject) => {
          client.makeUnaryRequest(METHOD, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(`n${i}`), (err, res) => (err ? reject(err) : resolve(res!.toString())));
        }));
      }
      return answers;
    } finally {
      client.close();
    }
  }

  for (const where of ['same node', 'cross-node'] as const) {
    it(`${where}: every call has its flow with grpc-status, is counted on both sides, and leaves nothing tracked`, async () => {
      const far = where === 'cross-node';
      next = { ip: far ? IP.farVip : IP.nearVip, port: 9090 };
      const dstSink = far ? sinkB : sinkA;
      const dstRegistry = far ? registryB : registryA;
      const dstIdentity = String(far ? ID.far : ID.near);
      const before = dstSink.flows.length;
      const answers = await calls();
      assert.deepEqual(answers, Array.from({ length: CALLS }, (_, i) => `hello n${i}`));

      // the destination proxy's flow of each call, FORWARDED with the call's grpc-status: each
      // is out before its answer is written, so all are here once the last answer came
      const flows = dstSink.flows.slice(before).filter((f) => f.Type === 'L7' && f.l7?.http?.url?.endsWith(METHOD) === true);
      assert.equal(flows.length, CALLS);
      for (const f of flows) {
        assert.equal(f.verdict, 'FORWARDED');
        assert.deepEqual(f.l7?.http?.headers, [{ key: 'grpc-status', value: '0' }]);
      }
      // counted as OK at the source (outbound) and at the destination (inbound)
      const ok = { source_identity: String(ID.client), destination_identity: dstIdentity, grpc_status: '0', verdict: 'FORWARDED' };
      assert.equal(await counted(registryA, { ...ok, direction: 'outbound' }), CALLS);
      assert.equal(await counted(dstRegistry, { ...ok, direction: 'inbound' }), CALLS);
      // nothing of the finished calls is held for the policy recheck
      assert.equal(a.trackedLive + b.trackedLive, 0);
    });
  }
});
