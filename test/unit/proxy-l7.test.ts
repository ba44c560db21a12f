// The proxy's L7 path with clients and servers nobody here wrote: curl (HTTP/1.1 and
// --http2-prior-knowledge), nghttp and h2load (nghttp2), a Python grpcio client against a
// grpc-js server. Two NodeProxy instances stand in for two nodes on 127.0.0.0/8:
//   node-a: tunnel 127.0.10.1, outbound 127.0.11.1, upstream bind 127.0.20.1 (the client's node)
//   node-b: tunnel 127.0.10.2, outbound 127.0.11.2, upstream bind 127.0.20.2
// The client pod is 127.0.0.1 so that any tool can be it; the stubbed datapath lookup
// hands every connection the original destination the test set last.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { Agent, createServer as httpServer, request as httpRequest, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { connect as h2connect, createServer as h2server, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import { connect, createServer as netServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import type { CompiledPolicy, EndpointInfo, IdentityInfo, NodeInfo, ServiceInfo, Snapshot } from '../../control/api/types.ts';
import type { Flow } from '../../agent/flows/flow.ts';
import type { NodeProxy, Redirect } from '../../agent/proxy/index.ts';
import { FlowSink } from '../helpers/flow-sink.ts';
import { startProxyPair } from '../helpers/two-nodes.ts';

const run = promisify(execFile);
const TRUST = 'cluster.local';
const ID = { client: 256, h2web: 257, web: 258, greeter: 259, echo: 260 } as const;
const IP = {
  client: '127.0.0.1',
  h2web1: '127.0.31.1', h2web2: '127.0.31.2', web1: '127.0.31.3', web2: '127.0.31.4', greeter: '127.0.31.5', echo: '127.0.31.6',
  h2webVip: '127.0.41.1', webVip: '127.0.41.2', greeterVip: '127.0.41.3', echoVip: '127.0.41.4',
} as const;
/** the system's Python: Debian's python3-grpcio is installed for it, not for other interpreters on PATH */
const PYTHON = '/usr/bin/python3';


function listen(server: Server | HttpServer | Http2Server, host: string, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

function identity(id: number, ns: string, sa: string): IdentityInfo {
  return { id, namespace: ns, serviceAccount: sa, labels: { app: sa }, spiffeId: `spiffe://${TRUST}/ns/${ns}/sa/${sa}` };
}
function endpoint(name: string, node: string, ip: string, id: number, app: string): EndpointInfo {
  return { namespace: 'app', name, uid: `uid-${name}`, node, ip, identity: id, labels: { app }, serviceAccount: app, enrolled: true };
}

/** raw-bytes gRPC methods: no .proto needed on either side */
const raw = { requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b };
const GREETER = {
  Hello: { path: '/demo.Greeter/Hello', requestStream: false, responseStream: false, ...raw },
  Count: { path: '/demo.Greeter/Count', requestStream: false, responseStream: true, ...raw },
  Admin: { path: '/demo.Greeter/Admin', requestStream: false, responseStream: false, ...raw },
};

describe('proxy L7: HTTP/2, gRPC and per-request routing with real clients', () => {
  const sinkA = new FlowSink();
  const sinkB = new FlowSink();
  let next: { ip: string; port: number } = { ip: '', port: 0 };
  const lookup = (_ip: string, _port: number): Redirect => ({ origIp: next.ip, origPort: next.port, endpointId: 7, srcIdentity: ID.client, dstIdentity: 0 });
  const servers: Array<Server | HttpServer | Http2Server> = [];
  const sockets = new Set<Socket>();
  /** per pod: requests seen, and the distinct upstream connections they came on */
  const seen = new Map<string, { requests: number; conns: Set<string> }>();
  const registryA = new Registry();
  let grpcServer: grpc.Server;
  let a: NodeProxy;
  let b: NodeProxy;
  let version = 1;
  let snapshot: (node: string, policies: CompiledPolicy[]) => Snapshot;
  const basePolicies: CompiledPolicy[] = [
    {
      id: 21, namespace: 'app', name: 'greeter-allow', action: 'ALLOW', selects: [ID.greeter],
      rules: [{ index: 0, from: [{ identities: [ID.client] }], to: [{ paths: ['/demo.Greeter/Hello', '/demo.Greeter/Count'] }], when: [] }],
    },
  ];
  const ports = { h2: 0, web: 0, greeter: 0, echo: 0 };

  function note(pod: string, remote: string): void {
    const s = seen.get(pod) ?? { requests: 0, conns: new Set<string>() };
    s.requests++;
    s.conns.add(remote);
    seen.set(pod, s);
  }

  function h2web(pod: string): Http2Server {
    const srv = h2server();
    srv.on('stream', (stream: ServerHttp2Stream, headers) => {
      stream.on('error', () => {});
      note(pod, `${stream.session?.socket?.remoteAddress}:${stream.session?.socket?.remotePort}`);
      if (headers[':path'] === '/stream') {
        // never ends by itself: a long-lived stream for the policy-change test
        stream.respond({ ':status': 200 });
        stream.write('tick\n');
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(JSON.stringify({ pod, path: headers[':path'], authority: headers[':authority'], endAfterHeaders: stream.endAfterHeaders }));
    });
    return srv;
  }
  function web(pod: string): HttpServer {
    return httpServer((req, res) => {
      note(pod, `${req.socket.remoteAddress}:${req.socket.remotePort}`);
      if (req.url === '/trailers') {
        res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-digest' });
        res.write('part one, ');
        res.addTrailers({ 'x-digest': 'abc123' });
        res.end('part two');
        return;
      }
      const body = JSON.stringify({ pod, url: req.url });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  }

  before(async () => {
    const h2a = h2web('h2web-1');
    const h2b = h2web('h2web-2');
    const w1 = web('web-1');
    const w2 = web('web-2');
    const echo = netServer({ allowHalfOpen: true }, (s) => { s.on('error', () => {}); s.pipe(s); });
    servers.push(h2a, h2b, w1, w2, echo);
    ports.h2 = await listen(h2a, IP.h2web1);
    await listen(h2b, IP.h2web2, ports.h2);
    ports.web = await listen(w1, IP.web1);
    await listen(w2, IP.web2, ports.web);
    ports.echo = await listen(echo, IP.echo);

    grpcServer = new grpc.Server();
    grpcServer.addService(GREETER, {
      Hello: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from(`hello ${call.request.toString()}`)),
      Count: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        for (let i = 1; i <= 3; i++) call.write(Buffer.from(String(i)));
        call.end();
      },
      Admin: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from('admin')),
    });
    ports.greeter = await new Promise<number>((resolve, reject) => {
      grpcServer.bindAsync(`${IP.greeter}:0`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port)));
    });

    const probe = netServer();
    const tunnelPort = await listen(probe, '127.0.10.1');
    await new Promise<void>((r) => probe.close(() => r()));

    const nodes: NodeInfo[] = [
      { name: 'node-a', underlayIp: '127.0.9.1', tunnelIp: '127.0.10.1', podCidrs: [], wgPublicKey: '', proxyIp: '127.0.11.1' },
      { name: 'node-b', underlayIp: '127.0.9.2', tunnelIp: '127.0.10.2', podCidrs: [], wgPublicKey: '', proxyIp: '127.0.11.2' },
    ];
    const endpoints: EndpointInfo[] = [
      endpoint('client', 'node-a', IP.client, ID.client, 'client'),
      endpoint('h2web-1', 'node-b', IP.h2web1, ID.h2web, 'h2web'),
      endpoint('h2web-2', 'node-a', IP.h2web2, ID.h2web, 'h2web'),
      endpoint('web-1', 'node-b', IP.web1, ID.web, 'web'),
      endpoint('web-2', 'node-b', IP.web2, ID.web, 'web'),
      endpoint('greeter', 'node-b', IP.greeter, ID.greeter, 'greeter'),
      endpoint('echo', 'node-b', IP.echo, ID.echo, 'echo'),
    ];
    const svc = (name: string, id: number, vip: string, port: number, targetPort: number, backends: EndpointInfo[], appProtocol?: string): ServiceInfo => ({
      namespace: 'app', name, id, clusterIp: vip, identity: backends[0]!.identity,
      ports: [{ name: 'p', port, targetPort, protocol: 'TCP', ...(appProtocol ? { appProtocol } : {}) }],
      backends: backends.map((e) => ({ ip: e.ip, node: e.node, identity: e.identity, pod: e.name })),
    });
    const byName = (n: string): EndpointInfo => endpoints.find((e) => e.name === n)!;
    const services: ServiceInfo[] = [
      // no appProtocol: HTTP/2 prior knowledge is detected from the connection preface
      svc('h2web', 1, IP.h2webVip, 80, ports.h2, [byName('h2web-1'), byName('h2web-2')]),
      svc('web', 2, IP.webVip, 80, ports.web, [byName('web-1'), byName('web-2')]),
      svc('greeter', 3, IP.greeterVip, 9090, ports.greeter, [byName('greeter')], 'grpc'),
      svc('echo', 4, IP.echoVip, 7, ports.echo, [byName('echo')], 'tcp'),
    ];
    const identities = [identity(ID.client, 'app', 'client'), identity(ID.h2web, 'app', 'h2web'), identity(ID.web, 'app', 'web'),
      identity(ID.greeter, 'app', 'greeter'), identity(ID.echo, 'app', 'echo')];
    snapshot = (node, policies) => ({ version, node, trustDomain: TRUST, nodes, identities, endpoints, services, policies, l4: [] });

    [a, b] = await startProxyPair({
      at: { inbound: (i) => `127.0.10.${i}`, outbound: (i) => `127.0.11.${i}`, upstream: (i) => `127.0.20.${i}` },
      tunnelPort, lookup, onFlow: [sinkA.push, sinkB.push], registries: [registryA, new Registry()],
    });
    a.update(snapshot('node-a', basePolicies));
    b.update(snapshot('node-b', basePolicies));
  });

  after(async () => {
    for (const s of sockets) s.destroy();
    await Promise.all([a?.close(), b?.close()]);
    grpcServer?.forceShutdown();
    await Promise.all(servers.map((s) => new Promise<void>((r) => {
      if ('closeAllConnections' in s) s.closeAllConnections();
      s.close(() => r());
    })));
  });

  const outbound = (): string => `${a.addresses.outbound.address}:${a.addresses.outbound.port}`;

  it('curl --http2-prior-knowledge: HTTP/2 is detected from the preface and carried across nodes', async () => {
    next = { ip: IP.h2webVip, port: 80 };
    // one URL per curl: curl 7.88 reusing a connection to any node:http2 server fails with
    // "Error in the HTTP2 framing layer" (seen against a bare http2.createServer as well)
    const url = `http://${outbound()}/hello`;
    const pods: string[] = [];
    for (let i = 0; i < 2; i++) {
      const { stdout } = await run('curl', ['-sS', '--http2-prior-knowledge', '-w', '\n%{http_version}\n', url]);
      const [body, version] = stdout.trim().split('\n');
      assert.equal(version, '2');
      const got = JSON.parse(body!) as { pod: string; path: string };
      assert.equal(got.path, '/hello');
      pods.push(got.pod);
    }
    assert.deepEqual(pods.sort(), ['h2web-1', 'h2web-2'], 'one backend on the other node, one on this node');
    const f = await sinkB.waitFor((x) => x.Type === 'L7' && x.l7?.http?.url?.endsWith('/hello') === true && x.destination?.podName === 'h2web-1');
    assert.equal(f.verdict, 'FORWARDED');
    assert.equal(f.l7?.http?.protocol, 'HTTP/2');
    assert.equal(f.l7?.http?.code, 200);
    assert.equal(f.source?.podName, 'client');
  });

  it('nghttp: the streams of one HTTP/2 connection are routed on their own, over both backends', async () => {
    next = { ip: IP.h2webVip, port: 80 };
    const { stdout } = await run('nghttp', [`http://${outbound()}/a`, `http://${outbound()}/b`]);
    const pods = [...stdout.matchAll(/"pod":"([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(pods.sort(), ['h2web-1', 'h2web-2'], stdout);
  });

  it('an HTTP/2 request without a body reaches the pod ended by its HEADERS frame, on this node and across the tunnel', async () => {
    // OPTIONS, not GET: node:http2 ends a GET's stream at once by itself; for other methods
    // the proxy has to say so, or the pod waits for a DATA frame carrying END_STREAM
    next = { ip: IP.h2webVip, port: 80 };
    const session = h2connect(`http://${outbound()}`);
    session.on('error', () => {});
    try {
      const got = new Map<string, boolean>();
      for (let i = 0; i < 2; i++) {
        const s = session.request({ ':method': 'OPTIONS', ':path': '/ended' }, { endStream: true });
        s.setEncoding('utf8');
        let text = '';
        s.on('data', (c: string) => { text += c; });
        await once(s, 'end');
        const body = JSON.parse(text) as { pod: string; endAfterHeaders: boolean };
        got.set(body.pod, body.endAfterHeaders);
      }
      // round robin: h2web-2 on this node (pod client), h2web-1 across the tunnel
      assert.deepEqual(Object.fromEntries(got), { 'h2web-1': true, 'h2web-2': true });
    } finally {
      session.close();
    }
  });

  it('curl HTTP/1.1 keep-alive: requests on one client connection are spread over the backends', async () => {
    next = { ip: IP.webVip, port: 80 };
    const url = `http://${outbound()}/one`;
    const { stdout } = await run('curl', ['-sS', '-w', '\\n', url, url, url, url]);
    const pods = stdout.trim().split('\n').map((l) => (JSON.parse(l) as { pod: string }).pod);
    assert.equal(pods.length, 4);
    assert.deepEqual([...new Set(pods)].sort(), ['web-1', 'web-2']);
  });

  it('an answer that crosses the tunnel whole reaches an HTTP/1.1 client sized, or chunked with its trailers', async () => {
    next = { ip: IP.webVip, port: 80 };
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
    const get = (path: string, agent: Agent | false): Promise<{ res: IncomingMessage; body: string }> => new Promise((resolve, reject) => {
      const req = httpRequest({ host: a.addresses.outbound.address, port: a.addresses.outbound.port, path, agent }, (res) => {
        let body = '';
        res.setEncoding('latin1');
        res.on('data', (c: string) => { body += c; });
        res.on('end', () => resolve({ res, body }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
    try {
      // the pods are on node-b: every answer here came over the tunnel as one HTTP/2 stream.
      // A keep-alive client is served by client-h1, a closing one by node:http (writeH1)
      for (const agent of [keepAlive, false as const]) {
        const small = await get('/whole', agent);
        assert.equal(small.res.statusCode, 200);
        assert.equal(small.res.headers['transfer-encoding'], undefined);
        assert.equal(small.res.headers['content-length'], String(Buffer.byteLength(small.body)));
        assert.match(small.body, /"url":"\/whole"/);
        const withTrailers = await get('/trailers', agent);
        assert.equal(withTrailers.body, 'part one, part two');
        assert.equal(withTrailers.res.headers['transfer-encoding'], 'chunked');
        assert.equal(withTrailers.res.trailers['x-digest'], 'abc123');
      }
    } finally {
      keepAlive.destroy();
    }
  });

  it('pools upstream connections: ten client connections reuse a couple of pod connections', async () => {
    next = { ip: IP.webVip, port: 80 };
    const before = new Map([...seen].map(([k, v]) => [k, { requests: v.requests, conns: new Set(v.conns) }]));
    for (let i = 0; i < 10; i++) await run('curl', ['-sS', '-o', '/dev/null', `http://${outbound()}/pool`]);
    for (const pod of ['web-1', 'web-2']) {
      const now = seen.get(pod)!;
      const was = before.get(pod) ?? { requests: 0, conns: new Set<string>() };
      assert.equal(now.requests - was.requests, 5, `${pod} got half of the ten requests`);
      const fresh = [...now.conns].filter((c) => !was.conns.has(c)).length;
      assert.ok(fresh <= 1, `${pod}: ${fresh} new upstream connections for 5 requests from 5 client connections`);
    }
  });

  it('nghttp: twenty concurrent streams on one connection all succeed', async () => {
    next = { ip: IP.h2webVip, port: 80 };
    const urls = Array.from({ length: 20 }, (_, i) => `http://${outbound()}/multi/${i}`);
    const { stdout } = await run('nghttp', ['-n', '-s', ...urls]);
    // nghttp -s prints one statistics line per stream: "<id> ... <status> ..." → count 200s
    const ok = stdout.split('\n').filter((l) => /\s200\s/.test(l) && /\/multi\/\d+/.test(l)).length;
    assert.equal(ok, 20, stdout);
  });

  it('h2load: 400 requests over 4 connections, 10 streams each, all answered 2xx', async () => {
    next = { ip: IP.h2webVip, port: 80 };
    const { stdout } = await run('h2load', ['-n', '400', '-c', '4', '-m', '10', `http://${outbound()}/load`]);
    const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(stdout);
    assert.ok(m, stdout);
    assert.deepEqual(m.slice(1, 7).map(Number), [400, 400, 400, 400, 0, 0]);
    assert.match(stdout, /status codes: 400 2xx/);
  });

  it('gRPC with Python grpcio: unary and server streaming pass with trailers; a method the policy does not allow gets PERMISSION_DENIED naming it', async () => {
    next = { ip: IP.greeterVip, port: 9090 };
    const script = [
      'import grpc, json, sys',
      'ch = grpc.insecure_channel(sys.argv[1])',
      'out = {}',
      "out['hello'] = ch.unary_unary('/demo.Greeter/Hello')(b'mesh', timeout=10).decode()",
      "out['count'] = [m.decode() for m in ch.unary_stream('/demo.Greeter/Count')(b'', timeout=10)]",
      'try:',
      "    ch.unary_unary('/demo.Greeter/Admin')(b'', timeout=10)",
      "    out['admin'] = 'allowed'",
      'except grpc.RpcError as e:',
      "    out['admin'] = [e.code().name, e.details()]",
      'print(json.dumps(out))',
    ].join('\n');
    const { stdout } = await run(PYTHON, ['-c', script, outbound()]);
    const out = JSON.parse(stdout) as { hello: string; count: string[]; admin: [string, string] };
    assert.equal(out.hello, 'hello mesh');
    assert.deepEqual(out.count, ['1', '2', '3']);
    assert.equal(out.admin[0], 'PERMISSION_DENIED');
    assert.match(out.admin[1], /app\/greeter-allow/);
    const ok = await sinkB.waitFor((x) => x.Type === 'L7' && x.l7?.http?.url?.endsWith('/demo.Greeter/Count') === true);
    assert.equal(ok.verdict, 'FORWARDED');
    assert.deepEqual(ok.l7?.http?.headers, [{ key: 'grpc-status', value: '0' }]);
    const denied = await sinkB.waitFor((x) => x.Type === 'L7' && x.l7?.http?.url?.endsWith('/demo.Greeter/Admin') === true);
    assert.equal(denied.verdict, 'DROPPED');
    assert.deepEqual(denied.l7?.http?.headers, [{ key: 'grpc-status', value: '7' }]);
    assert.deepEqual(denied.ingressDeniedBy?.map((p) => p.name), ['greeter-allow']);
  });

  it('a policy change closes the live connections and streams it no longer allows, and leaves the others open', async () => {
    // an opaque TCP connection to echo and a long HTTP/2 stream to h2web, both allowed now
    next = { ip: IP.echoVip, port: 7 };
    const tcp = connect({ host: a.addresses.outbound.address, port: a.addresses.outbound.port });
    sockets.add(tcp);
    tcp.on('error', () => {});
    tcp.write('ping');
    const [echoed] = await once(tcp, 'data') as [Buffer];
    assert.equal(echoed.toString(), 'ping');

    next = { ip: IP.h2webVip, port: 80 };
    const session = h2connect(`http://${outbound()}`);
    session.on('error', () => {});
    // round robin: one stream on each backend, one on each node
    const streams = [session.request({ ':path': '/stream' }), session.request({ ':path': '/stream' })];
    for (const s of streams) {
      s.on('error', () => {});
      s.setEncoding('utf8');
      const [chunk] = await once(s, 'data') as [string];
      assert.equal(chunk, 'tick\n');
    }
    // new policy: echo denies the client outright; h2web allows only /hello
    version++;
    const policies: CompiledPolicy[] = [...basePolicies,
      { id: 22, namespace: 'app', name: 'echo-deny', action: 'DENY', selects: [ID.echo], rules: [{ index: 0, from: [{ identities: [ID.client] }], to: [], when: [] }] },
      { id: 23, namespace: 'app', name: 'h2web-hello-only', action: 'ALLOW', selects: [ID.h2web], rules: [{ index: 0, from: [], to: [{ paths: ['/hello'] }], when: [] }] },
    ];
    const tcpClosed = once(tcp, 'close');
    const streamsClosed = streams.map((s) => once(s, 'close'));
    a.update(snapshot('node-a', policies));
    b.update(snapshot('node-b', policies));
    await tcpClosed;
    await Promise.all(streamsClosed);
    const drop = await sinkB.waitFor((x) => x.verdict === 'DROPPED' && /policy changed/.test(x.summary ?? '') && x.destination?.podName === 'echo');
    assert.deepEqual(drop.ingressDeniedBy?.map((p) => p.name), ['echo-deny']);
    const dropStream = sinkA.flows.concat(sinkB.flows).find((x) => x.Type === 'L7' && /policy changed/.test(x.summary ?? ''));
    assert.ok(dropStream, 'the closed HTTP/2 stream has a DROPPED L7 flow');
    // a GET /hello on the same HTTP/2 connection still works: the connection was not the offender
    const ok = session.request({ ':path': '/hello' });
    const [h] = await once(ok, 'response') as [Record<string, unknown>];
    assert.equal(h[':status'], 200);
    ok.resume();
    await once(ok, 'end');
    session.close();
  });
});
