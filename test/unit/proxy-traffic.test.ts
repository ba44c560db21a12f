// Traffic management through two NodeProxy instances on 127.0.0.0/8, driven by the snapshot
// forms of Gateway API HTTPRoutes (GAMMA: the parent is a Service) and TrafficPolicies:
// redirects, rewrites, header matches and modifiers, weighted splits, timeouts, retries,
// outlier detection, rate limits, fault injection, consistent hashing and health checks.
// The client is curl on 127.0.0.1; the stubbed datapath hands every connection the
// original destination the test set last.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer as httpServer, type Server as HttpServer } from 'node:http';
import { createServer as netServer, type AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { Registry } from 'prom-client';
import type {
  CompiledRoute, CompiledTrafficPolicy, EndpointInfo, IdentityInfo, NodeInfo, RouteRule, ServiceInfo, Snapshot,
} from '../../control/api/types.ts';
import type { Flow } from '../../agent/flows/flow.ts';
import type { NodeProxy, Redirect } from '../../agent/proxy/index.ts';
import { startProxyPair } from '../helpers/two-nodes.ts';

const run = promisify(execFile);
const TRUST = 'cluster.local';
const ID = { client: 256, web: 257 } as const;
const POD = { 'web-1': '127.0.32.1', 'web-2': '127.0.32.2', 'web-3': '127.0.32.3', 'web-4': '127.0.32.4', 'web-5': '127.0.32.5' } as const;
type PodName = keyof typeof POD;
const NODE_OF: Record<PodName, string> = { 'web-1': 'node-b', 'web-2': 'node-b', 'web-3': 'node-a', 'web-4': 'node-b', 'web-5': 'node-b' };
const VIP = { web: '127.0.42.1', stable: '127.0.42.2', canary: '127.0.42.3', flaky: '127.0.42.4', limited: '127.0.42.5', faulty: '127.0.42.6', sticky: '127.0.42.7', probed: '127.0.42.8', tcpSticky: '127.0.42.9', tcpFlaky: '127.0.42.10', pooled: '127.0.42.11', idle: '127.0.42.12' } as const;
/** a pod on node-a whose process is gone: connections to it are refused */
const DEAD_POD = '127.0.32.9';
type SvcName = keyof typeof VIP;

interface Answer { status: number; headers: Record<string, string>; body: { pod?: string; path?: string; headers?: Record<string, string> } }

describe('proxy traffic management: routes and TrafficPolicy', () => {
  const flows: Flow[] = [];
  let next = { ip: '', port: 80 };
  const lookup = (): Redirect => ({ origIp: next.ip, origPort: next.port, endpointId: 1, srcIdentity: ID.client, dstIdentity: 0 });
  const servers: HttpServer[] = [];
  /** per key: how many times /once/<key> was asked for (the first answer is a 503) */
  const once = new Map<string, number>();
  /** requests each pod saw */
  const hits = new Map<string, number>();
  /** per pod: the proxy's source port of each request, in order (which pod connection carried it) */
  const conns = new Map<string, number[]>();
  /** pods that answer 503 to everything (a broken instance) */
  const broken = new Set<string>();
  let a: NodeProxy;
  let b: NodeProxy;
  let webPort = 0;
  let version = 1;
  const registryA = new Registry();

  function pod(name: PodName): HttpServer {
    return httpServer((req, res) => {
      const path = req.url ?? '/';
      // active health probes (the `probed` Service) are not requests anyone sent
      if (path !== '/healthz') hits.set(name, (hits.get(name) ?? 0) + 1);
      conns.set(name, [...conns.get(name) ?? [], req.socket.remotePort ?? 0]);
      const send = (status: number): void => {
        const body = JSON.stringify({ pod: name, path, headers: req.headers });
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      };
      if (broken.has(name)) return send(503);
      if (path.startsWith('/once/')) {
        const n = (once.get(path) ?? 0) + 1;
        once.set(path, n);
        return send(n === 1 ? 503 : 200);
      }
      if (path === '/slow') {
        const t = setTimeout(() => send(200), 2000);
        res.on('close', () => clearTimeout(t));
        return;
      }
      send(200);
    });
  }

  const backends = (...names: PodName[]): ServiceInfo['backends'] => names.map((n) => ({ ip: POD[n], node: NODE_OF[n], identity: ID.web, pod: n }));
  const rule = (index: number, r: Partial<RouteRule>): RouteRule => ({ index, matches: [], filters: [], backends: [], ...r });
  const to = (name: SvcName, weight = 1): RouteRule['backends'][number] => ({ service: { namespace: 'app', name }, port: 80, weight });

  const routes: CompiledRoute[] = [{
    kind: 'HTTPRoute', namespace: 'app', name: 'web-routes', parent: { namespace: 'app', name: 'web' }, hostnames: [], createdAt: '2026-01-01T00:00:00Z',
    rules: [
      rule(0, { matches: [{ path: { type: 'Exact', value: '/old' } }], filters: [{ type: 'RequestRedirect', path: { type: 'ReplaceFullPath', value: '/new' }, statusCode: 302 }] }),
      rule(1, { matches: [{ path: { type: 'PathPrefix', value: '/v1' } }], filters: [{ type: 'URLRewrite', path: { type: 'ReplacePrefixMatch', value: '/v2' } }], backends: [to('stable')] }),
      rule(2, {
        matches: [{ headers: [{ type: 'Exact', name: 'x-canary', value: 'yes' }] }],
        filters: [
          { type: 'RequestHeaderModifier', modifier: { add: [{ name: 'x-route', value: 'canary' }], remove: ['x-secret'] } },
          { type: 'ResponseHeaderModifier', modifier: { set: [{ name: 'x-served-by', value: 'canary' }] } },
        ],
        backends: [to('canary')],
      }),
      rule(3, { matches: [{ path: { type: 'PathPrefix', value: '/split' } }], backends: [to('stable', 1), to('canary', 1)] }),
      rule(4, { matches: [{ path: { type: 'Exact', value: '/slow' } }], backends: [to('stable')], timeouts: { requestMs: 300 } }),
      rule(5, { matches: [{ path: { type: 'PathPrefix', value: '/none' } }], backends: [to('stable', 0)] }),
      rule(6, { matches: [{ path: { type: 'PathPrefix', value: '/' } }], backends: [to('stable')] }),
    ],
  }];
  const policy = (name: SvcName, p: Partial<CompiledTrafficPolicy>): CompiledTrafficPolicy => ({ namespace: 'app', name: `${name}-policy`, target: { namespace: 'app', name }, ...p });
  const trafficPolicies: CompiledTrafficPolicy[] = [
    policy('stable', { retry: { attempts: 2, budgetPercent: 20, minRetriesPerSecond: 10, retryOn: ['5xx'], retryNonIdempotent: false } }),
    policy('flaky', { outlierDetection: { consecutive5xxErrors: 2, intervalMs: 1000, baseEjectionMs: 60_000, maxEjectionPercent: 50 } }),
    policy('limited', { rateLimit: { requests: 2, unit: 'Minute', burst: 0 } }),
    policy('faulty', { faultInjection: { abort: { percent: 100, httpStatus: 418 } } }),
    policy('sticky', { loadBalancer: { algorithm: 'CONSISTENT_HASH', hashOn: { header: 'x-user' } } }),
    policy('probed', { healthCheck: { protocol: 'HTTP', path: '/healthz', intervalMs: 100, timeoutMs: 500, healthyThreshold: 1, unhealthyThreshold: 1 } }),
    // opaque TCP Services (appProtocol: tcp): the same balancer and outlier detection per connection
    policy('tcpSticky', { loadBalancer: { algorithm: 'CONSISTENT_HASH', hashOn: { sourceIP: true } } }),
    policy('pooled', { connectionPool: { maxRequestsPerConnection: 2 } }),
    policy('idle', { connectionPool: { idleTimeoutMs: 150 } }),
    policy('tcpFlaky', { outlierDetection: { consecutive5xxErrors: 1, intervalMs: 1000, baseEjectionMs: 60_000, maxEjectionPercent: 50 } }),
  ];

  before(async () => {
    for (const name of Object.keys(POD) as PodName[]) {
      const srv = pod(name);
      servers.push(srv);
      await new Promise<void>((resolve) => srv.listen(webPort, POD[name], () => resolve()));
      webPort = (srv.address() as AddressInfo).port;
    }
    const probe = netServer();
    const tunnelPort = await new Promise<number>((resolve) => probe.listen(0, '127.0.10.1', () => resolve((probe.address() as AddressInfo).port)));
    await new Promise<void>((r) => probe.close(() => r()));

    const nodes: NodeInfo[] = [
      { name: 'node-a', underlayIp: '127.0.9.1', tunnelIp: '127.0.10.1', podCidrs: [], wgPublicKey: '', proxyIp: '127.0.11.1' },
      { name: 'node-b', underlayIp: '127.0.9.2', tunnelIp: '127.0.10.2', podCidrs: [], wgPublicKey: '', proxyIp: '127.0.11.2' },
    ];
    const ep = (name: string, node: string, ip: string, id: number): EndpointInfo =>
      ({ namespace: 'app', name, uid: name, node, ip, identity: id, labels: { app: name }, serviceAccount: name, enrolled: true });
    const endpoints = [
      ep('client', 'node-a', '127.0.0.1', ID.client), ...(Object.keys(POD) as PodName[]).map((n) => ep(n, NODE_OF[n], POD[n], ID.web)),
      ep('dead', 'node-a', DEAD_POD, ID.web),
    ];
    const svc = (name: SvcName, id: number, b: ServiceInfo['backends'], appProtocol = 'http'): ServiceInfo => ({
      namespace: 'app', name, id, clusterIp: VIP[name], identity: ID.web, ports: [{ name: 'http', port: 80, targetPort: webPort, protocol: 'TCP', appProtocol }], backends: b,
    });
    const services = [
      svc('web', 1, backends('web-1', 'web-2', 'web-3')), svc('stable', 2, backends('web-1', 'web-2')), svc('canary', 3, backends('web-3')),
      svc('flaky', 4, backends('web-1', 'web-3')), svc('limited', 5, backends('web-3')), svc('faulty', 6, backends('web-3')),
      svc('sticky', 7, backends('web-1', 'web-2', 'web-3')), svc('probed', 8, backends('web-1', 'web-3')),
      svc('pooled', 11, backends('web-4')), svc('idle', 12, backends('web-5')),
      svc('tcpSticky', 9, backends('web-1', 'web-2', 'web-3'), 'tcp'),
      svc('tcpFlaky', 10, [{ ip: DEAD_POD, node: 'node-a', identity: ID.web, pod: 'dead' }, ...backends('web-3')], 'tcp'),
    ];
    const identities: IdentityInfo[] = [ID.client, ID.web].map((id) => ({ id, namespace: 'app', serviceAccount: String(id), labels: {}, spiffeId: `spiffe://${TRUST}/ns/app/sa/${id}` }));
    const snapshot = (node: string): Snapshot => ({ version, node, trustDomain: TRUST, nodes, identities, endpoints, services, policies: [], l4: [], routes, trafficPolicies });
    [a, b] = await startProxyPair({
      at: { inbound: (i) => `127.0.10.${i}`, outbound: (i) => `127.0.11.${i}`, upstream: (i) => `127.0.20.${i}` },
      tunnelPort, lookup, onFlow: [(f) => flows.push(f), () => {}], registries: [registryA, new Registry()],
    });
    a.update(snapshot('node-a'));
    b.update(snapshot('node-b'));
  });

  after(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await Promise.all(servers.map((s) => new Promise<void>((r) => { s.closeAllConnections(); s.close(() => r()); })));
  });

  /** one request with curl through node-a's outbound listener, as if to `svc`'s VIP */
  async function curl(svc: SvcName, path: string, args: string[] = []): Promise<Answer> {
    next = { ip: VIP[svc], port: 80 };
    const url = `http://${a.addresses.outbound.address}:${a.addresses.outbound.port}${path}`;
    const { stdout } = await run('curl', ['-sS', '-D', '-', ...args, url]);
    const [head, ...rest] = stdout.split('\r\n\r\n');
    const lines = head!.split('\r\n');
    const status = Number(lines[0]!.split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    const text = rest.join('\r\n\r\n');
    let body: Answer['body'] = {};
    try { body = JSON.parse(text) as Answer['body']; } catch { body = {}; }
    return { status, headers, body };
  }

  it('RequestRedirect: 302 with the new Location, answered by the proxy', async () => {
    const r = await curl('web', '/old?x=1');
    assert.equal(r.status, 302);
    assert.match(r.headers.location ?? '', /^http:\/\/127\.0\.11\.1:\d+\/new\?x=1$/, 'path replaced, query kept');
  });

  it('URLRewrite ReplacePrefixMatch: /v1/items reaches the pod as /v2/items', async () => {
    const r = await curl('web', '/v1/items');
    assert.equal(r.status, 200);
    assert.equal(r.body.path, '/v2/items');
  });

  it('a header match sends the request to the canary, with request and response headers modified', async () => {
    const r = await curl('web', '/anything', ['-H', 'x-canary: yes', '-H', 'x-secret: s3cr3t']);
    assert.equal(r.body.pod, 'web-3');
    assert.equal(r.body.headers?.['x-route'], 'canary');
    assert.equal(r.body.headers?.['x-secret'], undefined, 'removed before it left the node');
    assert.equal(r.headers['x-served-by'], 'canary');
    const plain = await curl('web', '/anything');
    assert.notEqual(plain.body.pod, 'web-3', 'without the header: the stable backends');
  });

  it('weighted backendRefs split the traffic between the Services (50/50 here)', async () => {
    const pods: string[] = [];
    for (let i = 0; i < 40; i++) pods.push((await curl('web', '/split')).body.pod ?? '');
    const canary = pods.filter((p) => p === 'web-3').length;
    assert.ok(canary > 5 && canary < 35, `canary got ${canary} of 40`);
    assert.ok(pods.every((p) => p.startsWith('web-')));
  });

  it('a backend of weight 0 takes nothing: 500', async () => {
    const r = await curl('web', '/none');
    assert.equal(r.status, 500);
  });

  it('the route timeout answers 504 when the backend is slower', async () => {
    const r = await curl('web', '/slow');
    assert.equal(r.status, 504);
  });

  it('retries a 503 on another endpoint, within the retry budget: the client sees 200', async () => {
    const r = await curl('stable', '/once/a');
    assert.equal(r.status, 200);
    assert.equal(once.get('/once/a'), 2, 'one failed try, one retry');
    const text = await registryA.metrics();
    assert.match(text, /nodal_proxy_retries_total\{service="app\/stable",outcome="success"\} [1-9]/);
  });

  it('with no endpoint left to retry on, answers with the last upstream answer and counts that retry limit_exceeded', async () => {
    const count = async (outcome: string): Promise<number> => {
      const m = (await registryA.getMetricsAsJSON()).find((x) => x.name === 'nodal_proxy_retries_total');
      return m?.values.find((v) => v.labels.service === 'app/stable' && v.labels.outcome === outcome)?.value ?? 0;
    };
    const before = await Promise.all(['success', 'failure', 'limit_exceeded'].map(count));
    broken.add('web-1');
    broken.add('web-2');
    try {
      // two backends, two retries allowed: the first try and the first retry use both, and
      // a second retry would find no endpoint left to try
      const r = await curl('stable', '/all-broken');
      assert.equal(r.status, 503);
      // the pod's own answer, not one the proxy made up ("no healthy upstream")
      assert.ok(['web-1', 'web-2'].includes(r.body.pod ?? ''), JSON.stringify(r.body));
      assert.equal(r.body.path, '/all-broken');
    } finally {
      broken.delete('web-1');
      broken.delete('web-2');
    }
    const after = await Promise.all(['success', 'failure', 'limit_exceeded'].map(count));
    assert.deepEqual(after.map((v, i) => v - before[i]!), [0, 0, 1], 'success, failure, limit_exceeded: the one retry made');
  });

  it('never retries a POST whose body was sent', async () => {
    const r = await curl('stable', '/once/post', ['-X', 'POST', '-d', 'payload']);
    assert.equal(r.status, 503);
    assert.equal(once.get('/once/post'), 1);
  });

  it('outlier detection ejects an endpoint after consecutive 5xx, and traffic goes to the others', async () => {
    broken.add('web-1');
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 12; i++) statuses.push((await curl('flaky', '/x')).status);
      // round robin hits web-1 every other request until its second failure ejects it
      assert.equal(statuses.filter((s) => s === 503).length, 2, statuses.join(','));
      assert.ok(statuses.slice(-6).every((s) => s === 200), statuses.join(','));
      const text = await registryA.metrics();
      assert.match(text, /nodal_proxy_outlier_ejections_total\{service="app\/flaky",event="ejected"\} 1/);
    } finally {
      broken.delete('web-1');
    }
  });

  it('the local rate limit answers 429 with Retry-After once the bucket is empty', async () => {
    assert.equal((await curl('limited', '/')).status, 200);
    assert.equal((await curl('limited', '/')).status, 200);
    const r = await curl('limited', '/');
    assert.equal(r.status, 429);
    assert.ok(Number(r.headers['retry-after']) >= 1);
    assert.ok(flows.some((f) => f.verdict === 'DROPPED' && /rate limited by TrafficPolicy app\/limited-policy/.test(f.summary ?? '')));
  });

  it('fault injection aborts with the configured status, and the pod never sees the request', async () => {
    const before = hits.get('web-3') ?? 0;
    const r = await curl('faulty', '/');
    assert.equal(r.status, 418);
    assert.equal(hits.get('web-3') ?? 0, before);
  });

  it('consistent hashing on a header keeps a user on one endpoint', async () => {
    for (const user of ['alice', 'bob', 'carol']) {
      const pods = new Set<string>();
      for (let i = 0; i < 6; i++) pods.add((await curl('sticky', '/', ['-H', `x-user: ${user}`])).body.pod ?? '');
      assert.equal(pods.size, 1, `${user} went to ${[...pods].join(', ')}`);
    }
  });

  it('active HTTP health checks take a failing endpoint out of rotation', async () => {
    broken.add('web-1');
    try {
      // probes every 100 ms, unhealthy after one failure: wait until one went round
      await new Promise((r) => setTimeout(r, 400));
      const pods = new Set<string>();
      for (let i = 0; i < 6; i++) {
        const r = await curl('probed', '/');
        assert.equal(r.status, 200);
        pods.add(r.body.pod ?? '');
      }
      assert.deepEqual([...pods], ['web-3']);
    } finally {
      broken.delete('web-1');
    }
  });

  it('opaque TCP: a TrafficPolicy\'s source-IP hash keeps every connection of a client on one endpoint', async () => {
    const pods = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const r = await curl('tcpSticky', '/');
      assert.equal(r.status, 200);
      pods.add(r.body.pod ?? '');
    }
    assert.equal(pods.size, 1, `one client, one endpoint: went to ${[...pods].join(', ')}`);
  });

  it('opaque TCP: a refused connection ejects its endpoint, and the next connections go to the others', async () => {
    const results: string[] = [];
    for (let i = 0; i < 8; i++) {
      try {
        results.push((await curl('tcpFlaky', '/')).body.pod ?? '?');
      } catch {
        results.push('refused');
      }
    }
    assert.ok(results.filter((r) => r === 'refused').length <= 1, `at most the first connection to the dead pod fails: ${results.join(', ')}`);
    assert.deepEqual(results.slice(-6), Array(6).fill('web-3'), results.join(', '));
    const ejected = flows.filter((f) => f.Type === 'L3_L4' && f.verdict === 'ERROR' && f.IP?.destination === DEAD_POD);
    assert.ok(ejected.length <= 1, 'the ejected endpoint is not tried again');
  });

  it('connectionPool.maxRequestsPerConnection: the pod sees a new connection every 2 requests', async () => {
    for (let i = 0; i < 6; i++) assert.equal((await curl('pooled', `/pooled/${i}`)).status, 200);
    const ports = conns.get('web-4') ?? [];
    assert.equal(ports.length, 6);
    // without the limit the keep-alive pool would carry all six on one connection
    assert.deepEqual([ports[0] === ports[1], ports[2] === ports[3], ports[4] === ports[5]], [true, true, true], `pairs share a connection: ${ports.join(', ')}`);
    assert.equal(new Set(ports).size, 3, `three connections for six requests: ${ports.join(', ')}`);
  });

  it('connectionPool.idleTimeoutMs: a pod connection idle longer than that is closed, the next request opens another', async () => {
    assert.equal((await curl('idle', '/idle/1')).status, 200);
    assert.equal((await curl('idle', '/idle/2')).status, 200);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await curl('idle', '/idle/3')).status, 200);
    const ports = conns.get('web-5') ?? [];
    assert.equal(ports.length, 3);
    // curl's next request follows within the idle time here; the one after the pause cannot
    assert.notEqual(ports[2], ports[1], `a new connection after the idle time: ${ports.join(', ')}`);
  });
});
