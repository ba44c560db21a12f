// The proxy on several cores: ProxyWorkers' threads share the two listeners (SO_REUSEPORT)
// and each reads original destinations from the datapath's real pinned redirect map, as
// the agent runs them. Here the test writes the map entries a redirected connect() would
// leave, then connects from that very address and port on loopback (127.0.64.0/24).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as httpServer, type Server as HttpServer } from 'node:http';
import { connect, createServer, type AddressInfo } from 'node:net';
import pino from 'pino';
import { AggregatorRegistry } from 'prom-client';
import type { EndpointInfo, IdentityInfo, Snapshot } from '../../control/api/types.ts';
import { Datapath, constants, openAgentMap } from '../../agent/datapath/index.ts';
import { redirectValue, sockKey } from '../../agent/datapath/codec.ts';
import type { Flow } from '../../agent/flows/flow.ts';
import { ProxyWorkers, type ProxyWorkersOptions } from '../../agent/proxy/index.ts';
import type { BpfMap } from '../../native/index.ts';
import { Lab } from '../helpers/lab.ts';
import { bpfObjectDir } from '../helpers/paths.ts';
import { requireKernel } from '../helpers/sys.ts';

const IP = { outbound: '127.0.61.1', inbound: '127.0.62.1', upstream: '127.0.63.1', client: '127.0.64.1', web: '127.0.64.2' };
const ID = { client: 256, web: 257 };
const TRUST = 'cluster.local';

const identity = (id: number, app: string): IdentityInfo =>
  ({ id, namespace: 'app', serviceAccount: app, labels: { app }, spiffeId: `spiffe://${TRUST}/ns/app/sa/${app}` });
const endpoint = (name: string, ip: string, id: number): EndpointInfo =>
  ({ namespace: 'app', name, uid: `uid-${name}`, node: 'node-a', ip, identity: id, labels: { app: name }, serviceAccount: name, enrolled: true });

function snapshot(version: number): Snapshot {
  return {
    version, node: 'node-a', trustDomain: TRUST,
    nodes: [{ name: 'node-a', underlayIp: '127.0.60.1', tunnelIp: IP.inbound, podCidrs: [], wgPublicKey: '', proxyIp: IP.outbound }],
    identities: [identity(ID.client, 'client'), identity(ID.web, 'web')],
    endpoints: [endpoint('client', IP.client, ID.client), endpoint('web', IP.web, ID.web)],
    services: [], policies: [], l4: [],
  };
}

describe('proxy workers: the listeners shared by threads, on the real redirect map', () => {
  requireKernel();
  const lab = new Lab(80);
  const silent = pino({ level: 'silent' });
  const flows: Flow[] = [];
  const seen: string[] = [];
  let dp: Datapath;
  let redirects: BpfMap;
  let web: HttpServer;
  let webPort = 0;
  let workers: ProxyWorkers | undefined;
  let base: ProxyWorkersOptions;
  let nextPort = 20_000 + Math.floor(Math.random() * 20_000);

  /** one GET on a new connection from the client pod's address, redirected as connect() would */
  async function get(path: string): Promise<string> {
    const localPort = nextPort++;
    redirects.update(sockKey.encode({ addr: IP.client, port: localPort }), redirectValue.encode({
      orig_addr: IP.web, orig_port: webPort, endpoint_id: 7, src_identity: ID.client, dst_identity: ID.web,
    }));
    const s = connect({ host: IP.outbound, port: workers!.addresses.outbound.port, localAddress: IP.client, localPort });
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.write(`GET ${path} HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n`);
    await new Promise<void>((resolve, reject) => { s.once('close', () => resolve()); s.once('error', reject); });
    return Buffer.concat(chunks).toString('latin1');
  }

  before(async () => {
    lab.create();
    dp = await Datapath.open({ node: `ktest-${lab.id}`, cgroupPath: lab.nodeCgroup, objectDir: bpfObjectDir, proxy: { ipv4: lab.gateway, port: 15001 } });
    redirects = openAgentMap(dp.pinRoot, constants.MapName.redirectsBySocket);
    web = httpServer((req, res) => {
      seen.push(req.url ?? '');
      const body = `web saw ${req.url}\n`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) }).end(body);
    });
    await new Promise<void>((r) => web.listen(0, IP.web, () => r()));
    webPort = (web.address() as AddressInfo).port;
    base = {
      workers: 2, node: 'node-a', logLevel: 'silent', logger: silent,
      outbound: { host: IP.outbound, port: 0 }, inbound: { host: IP.inbound, port: 0 }, upstreamBindIp: IP.upstream,
      pinRoot: dp.pinRoot, onFlow: (f) => flows.push(f), tracing: { sampleRatio: 1 }, restartDelayMs: 50,
    };
    workers = await ProxyWorkers.start(base);
    workers.update(snapshot(1));
    for (let i = 0; i < 200 && !workers.ready; i++) await new Promise((r) => setTimeout(r, 10));
  });

  after(async () => {
    await workers?.close();
    web?.close();
    redirects?.close();
    await dp?.destroy();
    await lab.destroy();
  });

  it('starts one thread per worker and is ready once every one applied the snapshot', () => {
    assert.equal(workers!.size, 2);
    assert.equal(new Set(workers!.threads().values()).size, 2, 'two distinct threads');
    assert.equal(workers!.ready, true);
  });

  it('serves through both workers: each reads and removes the original destination from the pinned map', async () => {
    const n = 32;
    for (let i = 0; i < n; i++) {
      const res = await get(`/spread/${i}`);
      assert.match(res, /^HTTP\/1\.1 200 /, `request ${i}: ${res.slice(0, 80)}`);
      assert.match(res, new RegExp(`web saw /spread/${i}\\n$`));
    }
    assert.equal(seen.filter((u) => u.startsWith('/spread/')).length, n, 'the backend got every request once');
    assert.equal(redirects.keys().length, 0, 'every entry was consumed by the worker that accepted its connection');

    const registry = AggregatorRegistry.aggregate(await workers!.metrics());
    const accepted = (await registry.getSingleMetric('nodal_proxy_worker_connections_total')!.get()).values
      .filter((v) => v.labels.direction === 'outbound');
    const byWorker = new Map(accepted.map((v) => [String(v.labels.worker), v.value]));
    // SO_REUSEPORT hashes each connection over the two listeners: all 32 on one is a 1-in-2^31 chance
    assert.deepEqual([...byWorker.keys()].sort(), ['0', '1'], JSON.stringify([...byWorker]));
    assert.equal([...byWorker.values()].reduce((a, b) => a + b, 0), n);
    for (const [w, c] of byWorker) assert.ok(c > 0, `worker ${w} served connections`);
  });

  it('merges the workers\' metrics into one series per label set, and their flows into the agent thread', async () => {
    const registry = AggregatorRegistry.aggregate(await workers!.metrics());
    const requests = (await registry.getSingleMetric('nodal_proxy_requests_total')!.get()).values
      .filter((v) => v.labels.direction === 'inbound' && v.labels.code_class === '2xx');
    assert.equal(requests.length, 1, `one series for client → web, not one per worker: ${JSON.stringify(requests)}`);
    assert.equal(requests[0]!.value, 32);
    // each worker is an isolate with a collector of its own, and exports its pauses
    assert.ok(registry.getSingleMetric('nodal_proxy_gc_pause_seconds'), 'the workers\' GC pause histogram is in the merged metrics');
    // flows arrive in batches within tens of milliseconds
    for (let i = 0; i < 100 && flows.filter((f) => f.Type === 'L7').length < 32; i++) await new Promise((r) => setTimeout(r, 10));
    const l7 = flows.filter((f) => f.Type === 'L7' && f.trafficDirection === 'INGRESS');
    assert.equal(l7.length, 32, 'one L7 flow per request, from both workers');
    assert.ok(l7.every((f) => f.verdict === 'FORWARDED' && f.l7?.http?.code === 200));
  });

  it('refuses a second set of workers on the same ports, naming the address (another agent)', async () => {
    await assert.rejects(ProxyWorkers.start({ ...base, outbound: { host: IP.outbound, port: workers!.addresses.outbound.port } }),
      (err: Error & { code?: string }) => err.code === 'NODAL_ERR_PROXY_BIND' && err.message.includes(`${IP.outbound}:${workers!.addresses.outbound.port}`)
        && err.message.includes('is another agent running?'));
  });

  it('starts a dead worker again with the last snapshot; the other one keeps serving meanwhile', async () => {
    const before = workers!.threads();
    workers!.update(snapshot(2));
    await workers!.terminateWorker(0);
    // the survivor alone: every new connection lands on it
    for (let i = 0; i < 4; i++) assert.match(await get(`/survivor/${i}`), /^HTTP\/1\.1 200 /);
    for (let i = 0; i < 300 && !(workers!.size === 2 && workers!.ready); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(workers!.size, 2, 'worker 0 is back');
    assert.equal(workers!.ready, true, 'and has the last snapshot');
    assert.notEqual(workers!.threads().get(0), before.get(0), 'in a new thread');
    assert.equal(workers!.threads().get(1), before.get(1), 'worker 1 was not touched');
    assert.equal(workers!.restartCount, 1);
    for (let i = 0; i < 8; i++) assert.match(await get(`/after/${i}`), /^HTTP\/1\.1 200 /);
  });

  it('close() ends every thread and frees both ports', async () => {
    const { outbound, inbound } = workers!.addresses;
    await workers!.close();
    assert.equal(workers!.size, 0);
    for (const a of [outbound, inbound]) {
      const s = createServer();
      await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen({ host: a.address, port: a.port, exclusive: true }, () => resolve()); });
      await new Promise((r) => s.close(r));
    }
    workers = undefined;
  });
});
