// Two NodeProxy instances standing in for two nodes, real sockets on 127.0.0.0/8:
//   node-a: tunnel 127.0.10.1, outbound 127.0.11.1, upstream bind 127.0.20.1
//   node-b: tunnel 127.0.10.2, outbound 127.0.11.2, upstream bind 127.0.20.2
//   pods 127.0.30.x (real servers), service VIPs 127.0.40.x, outside world 127.0.50.1.
// A client "pod" connects to its node's outbound listener from its pod IP; the stubbed
// datapath lookup hands out the original destination queued for that pod IP.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Agent, createServer as httpServer, request, type IncomingHttpHeaders, type Server as HttpServer } from 'node:http';
import { connect as h2connect } from 'node:http2';
import { connect, createServer as netServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { CompiledPolicy, EndpointInfo, IdentityInfo, NodeInfo, ServiceInfo, Snapshot } from '../../control/api/types.ts';
import type { Flow } from '../../agent/flows/flow.ts';
import { NodeProxy, type Redirect } from '../../agent/proxy/index.ts';
import { FlowSink } from '../helpers/flow-sink.ts';
import { AccessLog } from '../../agent/telemetry/accesslog.ts';
import { Tracer } from '../../agent/telemetry/index.ts';

const TRUST = 'cluster.local';
const ID = { client: 256, web: 257, echo: 258, intruder: 259 } as const;
const IP = {
  client: '127.0.30.1', web1: '127.0.30.2', web2: '127.0.30.3', echo: '127.0.30.4', banner: '127.0.30.5', intruder: '127.0.30.6',
  far: '127.0.30.7', gone: '127.0.30.8',
  webVip: '127.0.40.1', echoVip: '127.0.40.2', world: '127.0.50.1',
} as const;
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';


/** the datapath stand-in: original destinations queued per client pod IP */
class RedirectStub {
  private readonly queue = new Map<string, Array<{ ip: string; port: number }>>();
  private readonly identityOf: Record<string, number>;
  constructor(identityOf: Record<string, number>) { this.identityOf = identityOf; }
  push(clientIp: string, ip: string, port: number): void {
    const q = this.queue.get(clientIp) ?? [];
    q.push({ ip, port });
    this.queue.set(clientIp, q);
  }
  lookup = (clientIp: string, _clientPort: number): Redirect | undefined => {
    const next = this.queue.get(clientIp)?.shift();
    if (!next) return undefined;
    return { origIp: next.ip, origPort: next.port, endpointId: 7, srcIdentity: this.identityOf[clientIp] ?? 0, dstIdentity: 0 };
  };
}

function listen(server: Server | HttpServer, host: string, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

function close(server: Server | HttpServer): Promise<void> {
  return new Promise((resolve) => {
    if ('closeAllConnections' in server) server.closeAllConnections();
    server.close(() => resolve());
  });
}

/** resolves on 'close' whatever error came first (events.once would reject on 'error') */
function closed(e: NodeJS.EventEmitter): Promise<void> {
  e.on('error', () => {});
  return new Promise((resolve) => { e.once('close', () => resolve()); });
}

function identity(id: number, ns: string, sa: string, app: string): IdentityInfo {
  return { id, namespace: ns, serviceAccount: sa, labels: { app }, spiffeId: `spiffe://${TRUST}/ns/${ns}/sa/${sa}` };
}
function endpoint(name: string, ns: string, node: string, ip: string, id: number, app: string): EndpointInfo {
  return { namespace: ns, name, uid: `uid-${name}`, node, ip, identity: id, labels: { app }, serviceAccount: app, enrolled: true };
}

/** an 8 MiB answer, every byte value, in a pattern a truncation or reorder would break */
const BIG = Buffer.alloc(8 * 1024 * 1024);
for (let i = 0; i < BIG.length; i++) BIG[i] = (i * 7 + (i >> 12)) & 0xff;

describe('node proxy: two nodes', () => {
  const sinkA = new FlowSink();
  const sinkB = new FlowSink();
  const stubA = new RedirectStub({ [IP.client]: ID.client });
  const stubB = new RedirectStub({ [IP.intruder]: ID.intruder });
  const servers: Array<Server | HttpServer> = [];
  const sockets = new Set<Socket>();
  const agents: Agent[] = [];
  const seen: Array<{ pod: string; url: string; headers: IncomingHttpHeaders; remote: string; remotePort: number }> = [];
  const registryA = new Registry();
  const registryB = new Registry();
  let a: NodeProxy;
  let b: NodeProxy;
  let webPort = 0;
  let echoPort = 0;
  let bannerPort = 0;
  let worldPort = 0;
  let tunnelPort = 0;
  let snapshot: (node: string) => Snapshot;
  const logDir = mkdtempSync(join(tmpdir(), 'nodal-mesh-log-'));
  const logs: AccessLog[] = [];

  function web(pod: string): HttpServer {
    const srv = httpServer((req, res) => {
      seen.push({ pod, url: req.url ?? '', headers: req.headers, remote: req.socket.remoteAddress ?? '', remotePort: req.socket.remotePort ?? 0 });
      if (req.url === '/api/big' || req.url === '/api/big-chunked') {
        // sized, or chunked (no length): either way more than the tunnel's windows hold
        res.writeHead(200, req.url === '/api/big' ? { 'content-length': BIG.length } : {});
        for (let off = 0; off < BIG.length; off += 256 * 1024) res.write(BIG.subarray(off, off + 256 * 1024));
        res.end();
        return;
      }
      const body = JSON.stringify({ pod, url: req.url, traceparent: req.headers.traceparent ?? null });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    // an upgrade to a toy echo protocol, the way a WebSocket server switches protocols
    srv.on('upgrade', (req, socket: Socket, head: Buffer) => {
      seen.push({ pod, url: req.url ?? '', headers: req.headers, remote: socket.remoteAddress ?? '', remotePort: socket.remotePort ?? 0 });
      socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: Upgrade\r\n\r\n');
      if (head.length > 0) socket.write(head);
      socket.pipe(socket);
    });
    return srv;
  }
  function echo(): Server {
    return netServer({ allowHalfOpen: true }, (s) => { s.on('error', () => {}); s.pipe(s); });
  }

  before(async () => {
    const web1 = web('web-1');
    const web2 = web('web-2');
    const echoSrv = echo();
    const world = echo();
    // server speaks first: a banner, whatever the client does
    const banner = netServer((s) => { s.on('error', () => {}); s.end('220 banner ready\r\n'); });
    servers.push(web1, web2, echoSrv, world, banner);
    webPort = await listen(web1, IP.web1);
    await listen(web2, IP.web2, webPort); // a Service has one targetPort for every backend
    echoPort = await listen(echoSrv, IP.echo);
    bannerPort = await listen(banner, IP.banner);
    worldPort = await listen(world, IP.world);
    // one tunnel port for both nodes, as in a cluster: take a free one on node-a's address
    const probe = netServer();
    tunnelPort = await listen(probe, '127.0.10.1');
    await close(probe);

    const nodes: NodeInfo[] = [
      { name: 'node-a', underlayIp: '127.0.9.1', tunnelIp: '127.0.10.1', podCidrs: [], wgPublicKey: '', proxyIp: '127.0.11.1' },
      { name: 'node-b', underlayIp: '127.0.9.2', tunnelIp: '127.0.10.2', podCidrs: [], wgPublicKey: '', proxyIp: '127.0.11.2' },
      // a node whose proxy is down: nothing listens on its tunnel address
      { name: 'node-c', underlayIp: '127.0.9.3', tunnelIp: '127.0.10.3', podCidrs: [], wgPublicKey: '', proxyIp: '127.0.11.3' },
    ];
    const endpoints: EndpointInfo[] = [
      endpoint('client', 'app', 'node-a', IP.client, ID.client, 'client'),
      endpoint('web-1', 'app', 'node-b', IP.web1, ID.web, 'web'),
      endpoint('web-2', 'app', 'node-a', IP.web2, ID.web, 'web'),
      endpoint('echo', 'app', 'node-b', IP.echo, ID.echo, 'echo'),
      endpoint('banner', 'app', 'node-b', IP.banner, ID.echo, 'echo'),
      endpoint('intruder', 'other', 'node-b', IP.intruder, ID.intruder, 'intruder'),
      endpoint('far', 'app', 'node-c', IP.far, ID.echo, 'echo'),
      // a pod whose process is not listening
      endpoint('gone', 'app', 'node-b', IP.gone, ID.echo, 'echo'),
    ];
    const services: ServiceInfo[] = [
      {
        namespace: 'app', name: 'web', id: 1, clusterIp: IP.webVip, identity: ID.web,
        ports: [{ name: 'http', port: 80, targetPort: webPort, protocol: 'TCP' }],
        backends: [
          { ip: IP.web1, node: 'node-b', identity: ID.web, pod: 'web-1' },
          { ip: IP.web2, node: 'node-a', identity: ID.web, pod: 'web-2' },
        ],
      },
      {
        namespace: 'app', name: 'echo', id: 2, clusterIp: IP.echoVip, identity: ID.echo,
        ports: [{ name: 'echo', port: 7, targetPort: echoPort, protocol: 'TCP', appProtocol: 'tcp' }],
        backends: [{ ip: IP.echo, node: 'node-b', identity: ID.echo, pod: 'echo' }],
      },
    ];
    const policies: CompiledPolicy[] = [
      {
        id: 11, namespace: 'app', name: 'web-allow', action: 'ALLOW', selects: [ID.web],
        rules: [{ index: 0, from: [{ identities: [ID.client] }], to: [{ methods: ['GET'], paths: ['/api/*'] }], when: [] }],
      },
      {
        id: 12, namespace: 'app', name: 'echo-deny-other', action: 'DENY', selects: [ID.echo],
        rules: [{ index: 0, from: [{ namespaces: ['other'] }], to: [], when: [] }],
      },
    ];
    const identities = [
      identity(ID.client, 'app', 'client', 'client'), identity(ID.web, 'app', 'web', 'web'),
      identity(ID.echo, 'app', 'echo', 'echo'), identity(ID.intruder, 'other', 'intruder', 'intruder'),
    ];
    snapshot = (node: string): Snapshot => ({ version: 1, node, trustDomain: TRUST, nodes, identities, endpoints, services, policies, l4: [] });

    const logger = pino({ level: 'silent' });
    for (const n of ['a', 'b']) logs.push(await AccessLog.open({ destination: join(logDir, `${n}.log`) }));
    a = await NodeProxy.start({
      node: 'node-a', outbound: { host: '127.0.11.1', port: 0 }, inbound: { host: '127.0.10.1', port: tunnelPort },
      upstreamBindIp: '127.0.20.1', peerTunnelPort: tunnelPort,
      originalDestination: stubA.lookup, onFlow: sinkA.push, registry: registryA, logger,
      telemetry: { accessLog: logs[0], tracer: new Tracer() },
    });
    b = await NodeProxy.start({
      node: 'node-b', outbound: { host: '127.0.11.2', port: 0 }, inbound: { host: '127.0.10.2', port: tunnelPort },
      upstreamBindIp: '127.0.20.2', peerTunnelPort: tunnelPort,
      originalDestination: stubB.lookup, onFlow: sinkB.push, registry: registryB, logger,
      telemetry: { accessLog: logs[1], tracer: new Tracer() },
    });
    assert.equal(a.ready, false);
    a.update(snapshot('node-a'));
    b.update(snapshot('node-b'));
    assert.equal(a.ready, true);
  });

  after(async () => {
    for (const s of sockets) s.destroy();
    for (const ag of agents) ag.destroy();
    await Promise.all([a?.close(), b?.close()]);
    await Promise.all(servers.map(close));
    await Promise.all(logs.map((l) => l.close()));
    rmSync(logDir, { recursive: true, force: true });
  });

  /** a TCP connection from a pod to its node's proxy, as if redirected from ip:port */
  function dial(proxy: NodeProxy, stub: RedirectStub, podIp: string, origIp: string, origPort: number): Socket {
    stub.push(podIp, origIp, origPort);
    const s = connect({ host: proxy.addresses.outbound.address, port: proxy.addresses.outbound.port, localAddress: podIp });
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    return s;
  }

  /** an HTTP client in pod `client` whose connections all go through node-a's outbound */
  function clientAgent(origIp: string, origPort: number): { agent: Agent; connections: () => number } {
    let n = 0;
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    (agent as unknown as { createConnection: () => Socket }).createConnection = () => {
      n++;
      return dial(a, stubA, IP.client, origIp, origPort);
    };
    agents.push(agent);
    return { agent, connections: () => n };
  }

  function get(agent: Agent, path: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = request({ agent, host: 'web.app', port: 80, path, method: opts.method ?? 'GET', headers: opts.headers ?? {} }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => { body += c; });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
  }

  async function exchange(s: Socket, send?: string): Promise<string> {
    if (send !== undefined) s.end(send);
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (c: string) => { out += c; });
    await once(s, 'end');
    return out;
  }

  it('keeps an HTTP/1.1 connection alive through outbound → tunnel → inbound', async () => {
    const { agent, connections } = clientAgent(IP.web1, webPort);
    const before = seen.length;
    const r1 = await get(agent, '/api/one');
    const r2 = await get(agent, '/api/two');
    assert.equal(r1.status, 200);
    assert.equal(r2.status, 200);
    assert.equal(JSON.parse(r1.body).pod, 'web-1');
    assert.equal(JSON.parse(r2.body).pod, 'web-1');
    assert.equal(connections(), 1, 'both requests went over one client connection');
    const got = seen.slice(before);
    assert.deepEqual(got.map((g) => g.url), ['/api/one', '/api/two']);
    // the pod is reached from node-b's proxy address, which the ingress guard admits
    assert.equal(got[0]!.remote, '127.0.20.2');
  });

  it('carries cross-node HTTP/1.1 requests on a pooled CONNECT stream; each flow names its own client, the pod sees no x-nodal header', async () => {
    const value = async (r: Registry, name: string, labels: Record<string, string>): Promise<number> => {
      const m = (await r.getMetricsAsJSON()).find((x) => x.name === name);
      return m?.values.find((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want))?.value ?? 0;
    };
    const inbound = (): Promise<number> => value(registryB, 'nodal_proxy_connections_total', { direction: 'inbound' });
    const one = clientAgent(IP.web1, webPort);
    const two = clientAgent(IP.web1, webPort);
    const before = await inbound();
    const first = seen.length;
    for (let i = 0; i < 10; i++) {
      assert.equal((await get(one.agent, `/api/pooled-${i}-one`)).status, 200);
      assert.equal((await get(two.agent, `/api/pooled-${i}-two`)).status, 200);
    }
    assert.equal(one.connections() + two.connections(), 2);
    // an idle stream from an earlier test may carry them all
    assert.ok(await inbound() - before <= 1, 'twenty requests, one at a time, from two client connections: at most one new CONNECT stream');
    const got = seen.slice(first);
    assert.equal(got.length, 20);
    for (const g of got) assert.deepEqual(Object.keys(g.headers).filter((k) => k.startsWith('x-nodal-')), [], g.url);
    const ports = new Set<number>();
    for (const tag of ['one', 'two']) {
      const f = await sinkB.waitFor((x) => x.Type === 'L7' && (x.l7?.http?.url ?? '').endsWith(`/api/pooled-9-${tag}`));
      assert.equal(f.IP?.source, IP.client);
      ports.add(f.l4?.TCP?.sourcePort ?? 0);
    }
    assert.equal(ports.size, 2, 'the two client connections have two ports');
    assert.ok(!ports.has(0));
  });

  /** node-b's open inbound connections and streams */
  const activeB = async (): Promise<number> => {
    const m = (await registryB.getMetricsAsJSON()).find((x) => x.name === 'nodal_proxy_active_connections');
    return m?.values.find((v) => v.labels.direction === 'inbound')?.value ?? 0;
  };
  const openedB = async (): Promise<number> => {
    const m = (await registryB.getMetricsAsJSON()).find((x) => x.name === 'nodal_proxy_connections_total');
    return m?.values.find((v) => v.labels.direction === 'inbound')?.value ?? 0;
  };

  /**
   * Wait for node-b to close a stream (its open count falls below `active`). A request node-a
   * sends on it before the reset arrives goes once more on a new stream (pod-h1.ts replay).
   */
  const closedOnB = async (active: number): Promise<void> => {
    for (let i = 0; i < 100 && await activeB() >= active; i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(await activeB() < active, 'node-b closed the pooled stream');
  };

  it('a snapshot that changes nothing a pooled stream rests on leaves the stream open on both nodes', async () => {
    const { agent } = clientAgent(IP.web1, webPort);
    assert.equal((await get(agent, '/api/before-snapshot')).status, 200);
    const opened = await openedB();
    // the same cluster again, as a change elsewhere pushes it
    a.update(snapshot('node-a'));
    b.update(snapshot('node-b'));
    for (let i = 0; i < 5; i++) assert.equal((await get(agent, `/api/after-snapshot-${i}`)).status, 200);
    assert.equal(await openedB() - opened, 0, 'the requests after the snapshot rode the stream opened before it');
  });

  it('node-b closes a pooled stream whose pod address now names another pod: the next request opens a new stream, judged as the new pod', async () => {
    const { agent } = clientAgent(IP.web1, webPort);
    assert.equal((await get(agent, '/api/before-replace')).status, 200);
    const active = await activeB();
    // web-1 deleted and its address given to a new pod, as node-b sees it; node-a's view,
    // still the old one, would send the next request on the same stream
    const replaced = (node: string): Snapshot => {
      const snap = snapshot(node);
      return { ...snap, endpoints: snap.endpoints.map((e) => (e.name === 'web-1' ? { ...e, name: 'web-1b', uid: 'uid-web-1b' } : e)) };
    };
    b.update(replaced('node-b'));
    try {
      await closedOnB(active);
      assert.equal((await get(agent, '/api/after-replace')).status, 200);
      const f = await sinkB.waitFor((x) => x.Type === 'L7' && (x.l7?.http?.url ?? '').endsWith('/api/after-replace'));
      assert.equal(f.destination?.podName, 'web-1b');
    } finally {
      b.update(snapshot('node-b'));
    }
  });

  it('an 8 MiB answer crosses the pooled stream byte for byte, sized or chunked, and the stream carries the next request', async () => {
    const { agent } = clientAgent(IP.web1, webPort);
    for (const path of ['/api/big', '/api/big-chunked']) {
      const got = await new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
        const req = request({ agent, host: 'web.app', port: 80, path }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        });
        req.on('error', reject);
        req.end();
      });
      assert.equal(got.status, 200, path);
      assert.equal(got.body.length, BIG.length, path);
      assert.ok(got.body.equals(BIG), `${path}: byte for byte`);
    }
    assert.equal((await get(agent, '/api/after-big')).status, 200);
  });

  it('answers 403 when the destination refuses the pooled stream: a source identity that, as node-b sees it, does not run on node-a', async () => {
    const moved = (node: string): Snapshot => {
      const snap = snapshot(node);
      return { ...snap, endpoints: snap.endpoints.map((e) => (e.name === 'client' ? { ...e, node: 'node-c' } : e)) };
    };
    assert.equal((await get(clientAgent(IP.web1, webPort).agent, '/api/before-move')).status, 200);
    const active = await activeB();
    // node-b closes the pooled streams of a source it no longer places on node-a
    b.update(moved('node-b'));
    try {
      await closedOnB(active);
      const { agent } = clientAgent(IP.web1, webPort);
      const r = await get(agent, '/api/refused');
      assert.equal(r.status, 403);
      assert.match(r.body, /tunnel to node-b: .* refused the connection \(403\)/);
      const f = await sinkB.waitFor((x) => x.verdict === 'DROPPED' && x.summary === `spoofed source identity ${ID.client} from node node-a`);
      assert.equal(f.source?.identity, ID.client);
      const g = await sinkA.waitFor((x) => x.Type === 'L7' && x.verdict === 'DROPPED' && (x.l7?.http?.url ?? '').endsWith('/api/refused'));
      assert.equal(g.l7?.http?.code, 403);
    } finally {
      b.update(snapshot('node-b'));
    }
    const { agent } = clientAgent(IP.web1, webPort);
    assert.equal((await get(agent, '/api/accepted-again')).status, 200);
  });

  it('writes an access log line on each node for a cross-node request, with the bytes each way that are known', async () => {
    const line = async (file: string, path: string): Promise<Record<string, unknown>> => {
      for (let i = 0; i < 100; i++) {
        const text = readFileSync(join(logDir, file), 'utf8');
        const hit = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.path === path);
        if (hit) return hit;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`no access log line for ${path} in ${file}`);
    };
    const { agent } = clientAgent(IP.web1, webPort);
    const r = await get(agent, '/api/logged');
    assert.equal(r.status, 200);
    const out = await line('a.log', '/api/logged');
    const inb = await line('b.log', '/api/logged');
    for (const [l, direction] of [[out, 'outbound'], [inb, 'inbound']] as const) {
      assert.equal(l.direction, direction);
      assert.equal(l.method, 'GET');
      assert.equal(l.status, 200);
      assert.equal(l.src_identity, ID.client);
      assert.equal(l.bytes_in, 0, `${direction}: a GET has no body`);
      assert.equal(l.bytes_out, Buffer.byteLength(r.body), `${direction}: the answer's body`);
    }
    assert.equal(out.upstream, `${IP.web1}:${webPort}`);
    assert.equal(inb.trace_id, out.trace_id, 'one trace across both hops');
    // a body that streams without a length: its size is not known when the line is written
    await new Promise<void>((resolve, reject) => {
      const req = request({ agent, host: 'web.app', port: 80, path: '/api/big-chunked' }, (res) => { res.resume(); res.on('end', () => resolve()); });
      req.on('error', reject);
      req.end();
    });
    assert.equal('bytes_out' in (await line('a.log', '/api/big-chunked')), false);
  });

  it('regression: a request answered through the tunnel cancels nothing (no AbortError per request)', async () => {
    // an h2 stream can close before 'finish' although its answer was written whole: the
    // tunnel's cancel-on-close aborted upstream for almost every completed request
    const { agent } = clientAgent(IP.web1, webPort);
    await get(agent, '/api/warm');
    const abort = AbortController.prototype.abort;
    let aborted = 0;
    AbortController.prototype.abort = function (this: AbortController, reason?: unknown) {
      aborted++;
      return abort.call(this, reason);
    };
    try {
      for (let i = 0; i < 20; i++) assert.equal((await get(agent, `/api/${i}`)).status, 200);
      await new Promise((r) => setTimeout(r, 50)); // the streams' 'close' comes after the answer
    } finally {
      AbortController.prototype.abort = abort;
    }
    assert.equal(aborted, 0);
  });

  it('gives a FORWARDED L7 flow with the status code and the allowing policy', async () => {
    const { agent } = clientAgent(IP.web1, webPort);
    assert.equal((await get(agent, '/api/flow-ok')).status, 200);
    const f = await sinkB.waitFor((x) => x.Type === 'L7' && (x.l7?.http?.url ?? '').endsWith('/api/flow-ok'));
    assert.equal(f.verdict, 'FORWARDED');
    assert.equal(f.nodeName, 'node-b');
    assert.equal(f.trafficDirection, 'INGRESS');
    assert.equal(f.l7?.http?.code, 200);
    assert.equal(f.l7?.http?.method, 'GET');
    assert.ok((f.l7?.latencyNs ?? -1) >= 0);
    assert.equal(f.source?.identity, ID.client);
    assert.equal(f.source?.podName, 'client');
    assert.equal(f.destination?.podName, 'web-1');
    assert.ok(f.destination?.labels?.includes('k8s:app=web'));
    assert.deepEqual(f.ingressAllowedBy, [{ name: 'web-allow', namespace: 'app', kind: 'MeshPolicy', labels: ['rule=0'] }]);
    assert.equal(f.IP?.destination, IP.web1);
    assert.equal(f.l4?.TCP?.destinationPort, webPort);
    // and the outbound side recorded the connection it carried
    const egress = await sinkA.waitFor((x) => x.Type === 'L3_L4' && x.trafficDirection === 'EGRESS' && x.destination?.podName === 'web-1');
    assert.equal(egress.verdict, 'FORWARDED');
    assert.equal(egress.source?.ID, 7);
  });

  it('answers 403 naming the policy for a denied path, with a DROPPED L7 flow', async () => {
    const { agent } = clientAgent(IP.web1, webPort);
    const before = seen.length;
    const r = await get(agent, '/admin/users');
    assert.equal(r.status, 403);
    assert.match(r.body, /RBAC: access denied by app\/web-allow/);
    const f = await sinkB.waitFor((x) => x.Type === 'L7' && (x.l7?.http?.url ?? '').endsWith('/admin/users'));
    assert.equal(f.verdict, 'DROPPED');
    assert.equal(f.l7?.http?.code, 403);
    assert.equal(f.dropReasonDesc, 'POLICY_DENIED');
    assert.deepEqual(f.ingressDeniedBy?.map((p) => `${p.namespace}/${p.name}`), ['app/web-allow']);
    // the connection stays usable, and the denied request never reached the pod
    assert.equal((await get(agent, '/api/after-deny')).status, 200);
    assert.deepEqual(seen.slice(before).map((g) => g.url), ['/api/after-deny']);
  });

  it('denies a method the policy does not allow', async () => {
    const { agent } = clientAgent(IP.web1, webPort);
    const r = await get(agent, '/api/x', { method: 'POST' });
    assert.equal(r.status, 403);
  });

  it('spreads service connections round robin over both backends', async () => {
    const pods = new Set<string>();
    for (let i = 0; i < 2; i++) {
      const { agent } = clientAgent(IP.webVip, 80);
      const r = await get(agent, `/api/rr-${i}`);
      assert.equal(r.status, 200);
      pods.add(JSON.parse(r.body).pod as string);
      agent.destroy();
    }
    assert.deepEqual([...pods].sort(), ['web-1', 'web-2']);
  });

  it('serves a same-node backend in-process, without the tunnel', async () => {
    const { agent } = clientAgent(IP.web2, webPort);
    const before = seen.length;
    const r = await get(agent, '/api/local');
    assert.equal(JSON.parse(r.body).pod, 'web-2');
    assert.equal(seen[before]!.remote, '127.0.20.1', 'node-a proxy address, not node-b');
    const f = await sinkA.waitFor((x) => x.Type === 'L7' && (x.l7?.http?.url ?? '').endsWith('/api/local'));
    assert.equal(f.verdict, 'FORWARDED');
    assert.equal(f.nodeName, 'node-a');
    assert.equal(sinkB.flows.some((x) => (x.l7?.http?.url ?? '').endsWith('/api/local')), false);
  });

  it('continues the caller trace to the backend and the flow, one span per proxy hop', async () => {
    const { agent } = clientAgent(IP.web1, webPort);
    const r = await get(agent, '/api/traced', { headers: { traceparent: TRACEPARENT } });
    const seenByPod = String(JSON.parse(r.body).traceparent);
    const [, traceId, parentSpan, flags] = seenByPod.split('-');
    assert.equal(traceId, TRACEPARENT.split('-')[1], 'the same trace');
    assert.equal(flags, '01', 'still sampled');
    assert.notEqual(parentSpan, TRACEPARENT.split('-')[2], 'the pod\'s parent is the destination proxy\'s span, not the caller\'s');
    const f = await sinkB.waitFor((x) => (x.l7?.http?.url ?? '').endsWith('/api/traced'));
    assert.equal(f.traceContext?.parent.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  });

  it('starts a trace for a request that carries none', async () => {
    const { agent } = clientAgent(IP.web1, webPort);
    const r = await get(agent, '/api/untraced');
    const tp = JSON.parse(r.body).traceparent as string;
    assert.match(tp, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const f = await sinkB.waitFor((x) => (x.l7?.http?.url ?? '').endsWith('/api/untraced'));
    assert.equal(f.traceContext?.parent.traceId, tp.split('-')[1]);
  });

  it('carries an HTTP Upgrade (WebSocket-style) through the tunnel after one policy decision', async () => {
    const { agent } = clientAgent(IP.web1, webPort);
    const req = request({ agent, host: 'web.app', port: 80, path: '/api/ws', headers: { connection: 'Upgrade', upgrade: 'echo', traceparent: TRACEPARENT } });
    req.end();
    const [res, socket] = (await once(req, 'upgrade')) as [{ statusCode: number }, Socket];
    sockets.add(socket);
    assert.equal(res.statusCode, 101);
    socket.end('ping over the upgrade');
    assert.equal(await exchange(socket), 'ping over the upgrade');
    const f = await sinkB.waitFor((x) => x.Type === 'L7' && (x.l7?.http?.url ?? '').endsWith('/api/ws'));
    assert.equal(f.verdict, 'FORWARDED');
    assert.equal(f.l7?.http?.code, 101);
    assert.equal(seen.find((x) => x.url === '/api/ws')?.headers.traceparent, TRACEPARENT);
  });

  it('carries opaque TCP through the tunnel (declared appProtocol tcp), with half-close', async () => {
    const s = dial(a, stubA, IP.client, IP.echoVip, 7);
    assert.equal(await exchange(s, 'hello through the tunnel'), 'hello through the tunnel');
    const f = await sinkB.waitFor((x) => x.Type === 'L3_L4' && x.trafficDirection === 'INGRESS' && x.destination?.podName === 'echo' && x.verdict === 'FORWARDED');
    assert.equal(f.source?.identity, ID.client);
    assert.equal(f.ingressAllowedBy, undefined, 'no policy selects echo for this source: allowed without a name');
  });

  it('counts a carried connection per identity pair on both nodes: opened, bytes each way, closed', async () => {
    const value = async (r: Registry, name: string, direction: string): Promise<number> => {
      const m = (await r.getMetricsAsJSON()).find((x) => x.name === name);
      const hit = m?.values.find((v) => v.labels.direction === direction && v.labels.source_identity === String(ID.client) && v.labels.destination_identity === String(ID.echo));
      return hit?.value ?? 0;
    };
    const names = ['opened', 'closed', 'sent_bytes', 'received_bytes'].map((n) => `nodal_proxy_tcp_${n.includes('bytes') ? n : `connections_${n}`}_total`);
    const read = async (): Promise<number[]> => [
      ...(await Promise.all(names.map((n) => value(registryA, n, 'outbound')))),
      ...(await Promise.all(names.map((n) => value(registryB, n, 'inbound')))),
    ];
    const before = await read();
    const s = dial(a, stubA, IP.client, IP.echoVip, 7);
    const text = 'twenty bytes of echo';
    assert.equal(await exchange(s, text), text);
    let delta: number[] = [];
    for (let i = 0; i < 100; i++) {
      delta = (await read()).map((v, j) => v - before[j]!);
      if (delta[1] === 1 && delta[5] === 1) break; // both sides saw the close
      await new Promise((r) => setTimeout(r, 20));
    }
    // outbound (node-a): opened, closed, sent, received; then the same inbound (node-b)
    assert.deepEqual(delta, [1, 1, text.length, text.length, 1, 1, text.length, text.length]);
  });

  it('detects opaque TCP from the first bytes', async () => {
    const s = dial(a, stubA, IP.client, IP.echo, echoPort);
    assert.equal(await exchange(s, '\x16\x03\x01 not http at all'), '\x16\x03\x01 not http at all');
  });

  it('turns a silent client into opaque TCP so a server-speaks-first banner gets through', async () => {
    const s = dial(a, stubA, IP.client, IP.banner, bannerPort);
    assert.equal(await exchange(s), '220 banner ready\r\n');
    s.end();
  });

  it('resets a denied opaque connection on the same node, with a DROPPED flow naming the DENY', async () => {
    const s = dial(b, stubB, IP.intruder, IP.echoVip, 7);
    await closed(s);
    const f = await sinkB.waitFor((x) => x.verdict === 'DROPPED' && x.trafficDirection === 'INGRESS' && x.source?.podName === 'intruder');
    assert.equal(f.Type, 'L3_L4');
    assert.deepEqual(f.ingressDeniedBy?.map((p) => p.name), ['echo-deny-other']);
  });

  it('passes traffic for destinations outside the mesh straight through', async () => {
    const s = dial(a, stubA, IP.client, IP.world, worldPort);
    assert.equal(await exchange(s, 'to the world'), 'to the world');
    const f = await sinkA.waitFor((x) => x.destination?.identity === 2 && x.verdict === 'FORWARDED');
    assert.equal(f.trafficDirection, 'EGRESS');
    assert.equal(f.IP?.destination, IP.world);
  });

  it('closes a connection without an original destination, with an ERROR flow', async () => {
    const s = connect({ host: a.addresses.outbound.address, port: a.addresses.outbound.port, localAddress: IP.client });
    sockets.add(s);
    await closed(s);
    const f = await sinkA.waitFor((x) => x.verdict === 'ERROR' && x.summary === 'no original destination');
    assert.equal(f.source?.podName, 'client');
    assert.equal(f.trafficDirection, 'EGRESS');
  });

  it('refuses a claimed identity that does not run on the peer node (403 + DROPPED flow)', async () => {
    const session = h2connect(`http://127.0.10.2:${tunnelPort}`, {
      createConnection: () => connect({ host: '127.0.10.2', port: tunnelPort, localAddress: '127.0.10.1' }),
    });
    try {
      // identity 258 (echo) runs only on node-b: node-a cannot have sent it
      const stream = session.request({
        ':method': 'CONNECT', ':authority': `${IP.echo}:${echoPort}`,
        'x-nodal-source-identity': String(ID.echo), 'x-nodal-source-endpoint': 'app/echo',
      });
      const [headers] = await once(stream, 'response');
      assert.equal(headers[':status'], 403);
      const f = await sinkB.waitFor((x) => x.verdict === 'DROPPED' && x.summary === `spoofed source identity ${ID.echo} from node node-a`);
      assert.equal(f.source?.identity, ID.echo);

      // a CONNECT for pooled requests (mesh.ts) is checked the same way
      const pooled = session.request({
        ':method': 'CONNECT', ':authority': `${IP.web1}:${webPort}`,
        'x-nodal-source-identity': String(ID.echo), 'x-nodal-protocol': 'http1-requests',
      });
      const [pooledHeaders] = await once(pooled, 'response');
      assert.equal(pooledHeaders[':status'], 403);

      // the same session with an identity that does run on node-a is accepted
      const ok = session.request({
        ':method': 'CONNECT', ':authority': `${IP.echo}:${echoPort}`, 'x-nodal-source-identity': String(ID.client),
      });
      const [okHeaders] = await once(ok, 'response');
      assert.equal(okHeaders[':status'], 200);
      ok.end('ping');
      let echoed = '';
      ok.setEncoding('utf8');
      ok.on('data', (c: string) => { echoed += c; });
      await once(ok, 'end');
      assert.equal(echoed, 'ping');
    } finally {
      session.destroy();
    }
  });

  it('still serves an HTTP/1.1 request sent as a tunnel request stream, as a proxy from before pooled streams sends it (rolling upgrade)', async () => {
    const session = h2connect(`http://127.0.10.2:${tunnelPort}`, {
      createConnection: () => connect({ host: '127.0.10.2', port: tunnelPort, localAddress: '127.0.10.1' }),
    });
    session.on('error', () => {});
    try {
      const stream = session.request({
        ':method': 'GET', ':path': '/api/older-peer', ':authority': 'web.app',
        'x-nodal-destination': `${IP.web1}:${webPort}`, 'x-nodal-protocol': 'http1',
        'x-nodal-source-identity': String(ID.client), 'x-nodal-source-endpoint': 'app/client', 'x-nodal-source-addr': `${IP.client}:40000`,
      }, { endStream: true });
      const [headers] = await once(stream, 'response');
      assert.equal(headers[':status'], 200);
      let body = '';
      stream.setEncoding('utf8');
      stream.on('data', (c: string) => { body += c; });
      await once(stream, 'end');
      assert.equal(JSON.parse(body).pod, 'web-1');
      const f = await sinkB.waitFor((x) => x.Type === 'L7' && (x.l7?.http?.url ?? '').endsWith('/api/older-peer'));
      assert.equal(f.verdict, 'FORWARDED');
      assert.equal(f.l4?.TCP?.sourcePort, 40000);
    } finally {
      session.destroy();
    }
  });

  it('refuses a tunnel connection from an address that is not a peer node', async () => {
    const session = h2connect(`http://127.0.10.2:${tunnelPort}`, {
      createConnection: () => connect({ host: '127.0.10.2', port: tunnelPort, localAddress: '127.0.10.9' }),
    });
    session.on('error', () => {});
    const stream = session.request({ ':method': 'CONNECT', ':authority': `${IP.echo}:${echoPort}`, 'x-nodal-source-identity': String(ID.client) });
    stream.on('error', () => {});
    let answered = false;
    stream.on('response', () => { answered = true; });
    await closed(session);
    assert.equal(answered, false);
    const f = await sinkB.waitFor((x) => x.summary === 'tunnel from unknown peer');
    assert.equal(f.verdict, 'DROPPED');
    assert.equal(f.IP?.source, '127.0.10.9');
  });

  it('resets the client with an ERROR flow when the peer node proxy is unreachable', async () => {
    const s = dial(a, stubA, IP.client, IP.far, 80);
    await closed(s);
    const f = await sinkA.waitFor((x) => x.verdict === 'ERROR' && x.destination?.podName === 'far');
    assert.match(f.summary ?? '', /^tunnel to node-c: ECONNREFUSED/);
  });

  it('answers 503 with an ERROR flow when the destination pod refuses the connection', async () => {
    const { agent } = clientAgent(IP.gone, webPort);
    const r = await get(agent, '/gone');
    assert.equal(r.status, 503);
    const f = await sinkB.waitFor((x) => x.Type === 'L7' && (x.l7?.http?.url ?? '').endsWith('/gone'));
    assert.equal(f.verdict, 'ERROR');
    assert.match(f.summary ?? '', /ECONNREFUSED/);
  });

  it('counts requests by identity, class and verdict, and connections by side', async () => {
    const value = async (r: Registry, name: string, labels: Record<string, string>): Promise<number> => {
      const m = (await r.getMetricsAsJSON()).find((x) => x.name === name);
      const hit = m?.values.find((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want));
      return hit?.value ?? 0;
    };
    const req = 'nodal_proxy_requests_total';
    assert.ok(await value(registryB, req, { source_identity: '256', destination_identity: '257', code_class: '2xx', verdict: 'FORWARDED' }) >= 2);
    assert.ok(await value(registryB, req, { source_identity: '256', destination_identity: '257', code_class: '4xx', verdict: 'DROPPED' }) >= 1);
    assert.ok(await value(registryB, 'nodal_proxy_policy_verdicts_total', { verdict: 'DENY' }) >= 1);
    assert.ok(await value(registryA, 'nodal_proxy_connections_total', { direction: 'outbound' }) >= 1);
    assert.ok(await value(registryB, 'nodal_proxy_connections_total', { direction: 'inbound' }) >= 1);
    assert.ok(await value(registryA, 'nodal_proxy_bytes_total', { direction: 'outbound' }) > 0);
  });
});
