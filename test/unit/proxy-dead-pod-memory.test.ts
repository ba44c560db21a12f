// A pod that refuses connections must not make the proxy hold memory. Each HTTP/2 request to
// it waits on a new pod session that then fails. node 24 leaves a destroyed session's idle
// timer running (stream.ts clearSessionTimer), and that timer held the session and the
// requests queued on it for the whole idle timeout (5 minutes). Measured here as the heap
// after full GCs, around a batch of requests to the dead pod.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { createServer as netServer, type AddressInfo } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { Snapshot } from '../../control/api/types.ts';
import { NodeProxy, type Redirect } from '../../agent/proxy/index.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const TRUST = 'cluster.local';
// 127.0.96.0–127.0.96.255: this file's own
const NODE_IP = '127.0.96.1';
const PROXY_IP = '127.0.96.2';
const BIND_IP = '127.0.96.3';
const DEAD_POD = '127.0.96.10';
const VIP = '127.0.96.100';
const REQUESTS = 300;

function heapAfterGc(): number {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

describe('proxy: a pod that refuses connections', () => {
  let proxy: NodeProxy;
  let client: ClientHttp2Session;
  let deadPort = 0;

  before(async () => {
    // a port nothing listens on: bound once, then closed
    const probe = netServer();
    deadPort = await new Promise<number>((r) => probe.listen(0, DEAD_POD, () => r((probe.address() as AddressInfo).port)));
    await new Promise<void>((r) => probe.close(() => r()));
    const snapshot: Snapshot = {
      version: 1, node: 'node-a', trustDomain: TRUST,
      nodes: [{ name: 'node-a', underlayIp: NODE_IP, tunnelIp: NODE_IP, podCidrs: [], wgPublicKey: '', proxyIp: PROXY_IP }],
      identities: [256, 257].map((id) => ({ id, namespace: 'app', serviceAccount: `sa${id}`, labels: {}, spiffeId: `spiffe://${TRUST}/ns/app/sa/sa${id}` })),
      endpoints: [
        { namespace: 'app', name: 'client', uid: 'u1', node: 'node-a', ip: '127.0.0.1', identity: 256, labels: {}, serviceAccount: 'sa256', enrolled: true },
        { namespace: 'app', name: 'dead', uid: 'u2', node: 'node-a', ip: DEAD_POD, identity: 257, labels: {}, serviceAccount: 'sa257', enrolled: true },
      ],
      services: [{
        namespace: 'app', name: 'dead', id: 1, clusterIp: VIP, identity: 257,
        ports: [{ name: 'h2', port: 80, targetPort: deadPort, protocol: 'TCP', appProtocol: 'h2c' }],
        backends: [{ ip: DEAD_POD, node: 'node-a', identity: 257, pod: 'dead' }],
      }],
      policies: [], l4: [],
    };
    const lookup = (): Redirect => ({ origIp: VIP, origPort: 80, endpointId: 7, srcIdentity: 256, dstIdentity: 0 });
    proxy = await NodeProxy.start({
      node: 'node-a', outbound: { host: PROXY_IP, port: 0 }, inbound: { host: NODE_IP, port: 0 }, upstreamBindIp: BIND_IP,
      peerTunnelPort: 15008, originalDestination: lookup, onFlow: () => {}, registry: new Registry(), logger: pino({ level: 'silent' }),
    });
    proxy.update(snapshot);
    client = h2connect(`http://${PROXY_IP}:${proxy.addresses.outbound.port}`);
    client.on('error', () => {});
  });

  after(async () => {
    client?.close();
    await proxy?.close();
  });

  /** one request after another; every answer must be the proxy's 503 */
  async function requests(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const status = await new Promise<number>((resolve, reject) => {
        const r = client.request({ ':path': `/item/${i}` }, { endStream: true });
        let code = 0;
        r.on('response', (h) => { code = Number(h[':status']); });
        r.on('error', reject);
        r.on('close', () => resolve(code));
        r.resume();
      });
      assert.equal(status, 503);
    }
  }

  it(`answers 503 to each of ${REQUESTS} requests and holds no memory for them afterwards`, async () => {
    // twice as many first: V8 compiles and optimizes the code these requests run, some
    // hundred KiB of it, over the first few hundred
    await requests(2 * REQUESTS);
    const start = heapAfterGc();
    await requests(REQUESTS);
    const grown = heapAfterGc() - start;
    // what each failed attempt held (its session and the request queued on it) was 10 KiB
    assert.ok(grown < 1024 * 1024, `the heap grew ${Math.round(grown / 1024)} KiB over ${REQUESTS} failed requests`);
  });
});
