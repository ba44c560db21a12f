// Active health checks against real loopback servers: TCP, HTTP and gRPC probes, the
// healthy/unhealthy thresholds, timeouts, the injected connector, jitter and close().
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as httpServer, type Server as HttpServer } from 'node:http';
import { createServer as h2server, type Http2Server } from 'node:http2';
import { createServer as netServer, type AddressInfo, type Server } from 'node:net';
import { HealthChecker, grpcServingStatus, netConnector, probe, type HealthConfig, type HealthEndpoint } from '../../agent/proxy/traffic/health.ts';

const servers: Array<Server | HttpServer | Http2Server> = [];
after(() => { for (const s of servers) s.close(); });

async function listen<S extends Server | HttpServer | Http2Server>(s: S, port = 0): Promise<S> {
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(port, '127.0.0.1', () => resolve()); });
  servers.push(s);
  return s;
}
const portOf = (s: Server | HttpServer | Http2Server) => (s.address() as AddressInfo).port;
const endpoint = (s: Server | HttpServer | Http2Server, key = 'ep'): HealthEndpoint => ({ key, address: '127.0.0.1', port: portOf(s) });

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const cfg = (c: Partial<HealthConfig>): HealthConfig => ({ protocol: 'TCP', intervalMs: 20, timeoutMs: 300, healthyThreshold: 2, unhealthyThreshold: 2, ...c });
const never = new AbortController().signal;

describe('health probes', () => {
  it('TCP: passes when the port accepts, fails when refused', async () => {
    const s = await listen(netServer((c) => c.destroy()));
    const ep = endpoint(s);
    assert.equal(await probe(cfg({}), ep, netConnector('127.0.0.1'), never), true);
    await new Promise<void>((r) => s.close(() => r()));
    assert.equal(await probe(cfg({}), ep, netConnector(), never), false);
  });

  it('HTTP: GETs the path and accepts 200-399 by default or exactly the expected statuses', async () => {
    const seen: string[] = [];
    const s = await listen(httpServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.host}`);
      res.statusCode = req.url === '/ok' ? 200 : req.url === '/moved' ? 302 : req.url === '/empty' ? 204 : 503;
      res.end();
    }));
    const ep = endpoint(s);
    const c = netConnector();
    assert.equal(await probe(cfg({ protocol: 'HTTP', path: '/ok' }), ep, c, never), true);
    assert.equal(await probe(cfg({ protocol: 'HTTP', path: '/moved' }), ep, c, never), true);
    assert.equal(await probe(cfg({ protocol: 'HTTP', path: '/down' }), ep, c, never), false);
    assert.equal(await probe(cfg({ protocol: 'HTTP', path: '/ok', expectedStatuses: [204] }), ep, c, never), false);
    assert.equal(await probe(cfg({ protocol: 'HTTP', path: '/empty', expectedStatuses: [204] }), ep, c, never), true);
    assert.equal(await probe(cfg({ protocol: 'HTTP', path: '/ok' }), ep, c, never, 'cart.shop:80'), true);
    assert.deepEqual(seen.at(-1), 'GET /ok cart.shop:80');
  });

  it('HTTP: fails a probe the endpoint does not answer within the timeout', async () => {
    const s = await listen(httpServer(() => { /* never answers */ }));
    const t0 = Date.now();
    assert.equal(await probe(cfg({ protocol: 'HTTP', timeoutMs: 100 }), endpoint(s), netConnector(), never), false);
    const took = Date.now() - t0;
    assert.ok(took >= 90 && took < 1000, `took ${took} ms`);
    s.closeAllConnections();
  });

  it('GRPC: Check must answer SERVING with grpc-status 0 for the named service', async () => {
    const statuses: Record<string, number> = { '': 1, 'shop.Cart': 1, 'shop.Down': 2 };
    const s = await listen(h2server());
    s.on('stream', (stream, headers) => {
      const body: Buffer[] = [];
      stream.on('data', (c: Buffer) => body.push(c));
      stream.on('end', () => {
        if (headers[':path'] !== '/grpc.health.v1.Health/Check') { stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12' }, { endStream: true }); return; }
        const req = Buffer.concat(body);
        const service = req.length > 5 ? req.subarray(7).toString() : '';
        const status = statuses[service];
        if (status === undefined) { stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '5' }, { endStream: true }); return; }
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(Buffer.from([0, 0, 0, 0, 2, 0x08, status]));
      });
    });
    const ep = endpoint(s);
    const c = netConnector();
    assert.equal(await probe(cfg({ protocol: 'GRPC' }), ep, c, never), true);
    assert.equal(await probe(cfg({ protocol: 'GRPC', grpcService: 'shop.Cart' }), ep, c, never), true);
    assert.equal(await probe(cfg({ protocol: 'GRPC', grpcService: 'shop.Down' }), ep, c, never), false);
    assert.equal(await probe(cfg({ protocol: 'GRPC', grpcService: 'shop.Unknown' }), ep, c, never), false);
  });

  it('reads the serving status past other fields', () => {
    assert.equal(grpcServingStatus(Buffer.from([0, 0, 0, 0, 2, 0x08, 1])), 1);
    assert.equal(grpcServingStatus(Buffer.from([0, 0, 0, 0, 5, 0x12, 1, 0x41, 0x08, 3])), 3);
    assert.equal(grpcServingStatus(Buffer.from([0, 0, 0, 0, 0])), 0);
  });
});

describe('health checker', () => {
  it('turns unhealthy after unhealthyThreshold failures and healthy after healthyThreshold successes', async () => {
    let status = 200;
    const served = { 200: 0, 503: 0 };
    const s = await listen(httpServer((_req, res) => { served[status as 200 | 503]++; res.statusCode = status; res.end(); }));
    const changes: string[] = [];
    const hc = new HealthChecker(cfg({ protocol: 'HTTP', healthyThreshold: 3, unhealthyThreshold: 2 }), {
      connect: netConnector(), random: () => 0, onChange: (k, h) => changes.push(`${k}:${h ? 'up' : 'down'}`),
    });
    after(() => hc.close());
    hc.update([endpoint(s, 'a')]);
    assert.equal(hc.isHealthy('a'), true);
    await until(() => served[200] >= 2, 'two probes');
    status = 503;
    await until(() => !hc.isHealthy('a'), 'unhealthy');
    assert.ok(served[503] >= 2, 'went down before unhealthyThreshold failures');
    served[200] = 0;
    status = 200;
    await until(() => hc.isHealthy('a'), 'healthy again');
    assert.ok(served[200] >= 3, 'came back before healthyThreshold successes');
    assert.deepEqual(changes, ['a:down', 'a:up']);
  });

  it('probes through the injected connector and stops probing on close()', async () => {
    let accepted = 0;
    const s = await listen(netServer((c) => { accepted++; c.destroy(); }));
    let dialed = 0;
    const base = netConnector();
    const hc = new HealthChecker(cfg({}), { connect: (ep) => { dialed++; return base(ep); }, random: () => 0 });
    hc.update([endpoint(s, 'a'), endpoint(s, 'b')]);
    await until(() => accepted >= 4, 'probes of both endpoints');
    assert.ok(dialed >= 4);
    hc.close();
    await new Promise((r) => setTimeout(r, 30));
    const settled = accepted;
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(accepted, settled, 'probes continued after close()');
  });

  it('marks an endpoint that stops listening unhealthy, and stops probing removed endpoints', async () => {
    const s = await listen(netServer((c) => c.destroy()));
    const ep = endpoint(s, 'a');
    const hc = new HealthChecker(cfg({ unhealthyThreshold: 1 }), { connect: netConnector(), random: () => 0 });
    after(() => hc.close());
    hc.update([ep]);
    await until(() => hc.probes >= 1, 'first probe');
    await new Promise<void>((r) => s.close(() => r()));
    await until(() => !hc.isHealthy('a'), 'unhealthy after the port closed');
    hc.update([]);
    const n = hc.probes;
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(hc.probes, n);
    assert.equal(hc.isHealthy('a'), true, 'a removed endpoint is not reported down');
  });

  it('spreads first probes over the interval instead of firing them all at once', async () => {
    const s = await listen(netServer((c) => c.destroy()));
    const hc = new HealthChecker(cfg({ intervalMs: 60_000 }), { connect: netConnector(), random: () => 0.5 });
    hc.update([endpoint(s, 'a'), endpoint(s, 'b')]);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(hc.probes, 0, 'a probe ran before its jittered start');
    hc.close();
  });
});
