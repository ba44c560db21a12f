// NodeProxy life cycle: binding, options, snapshots, close.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { Snapshot } from '../../control/api/types.ts';
import type { Flow } from '../../agent/flows/flow.ts';
import { NodeProxy, ProxyError, type ProxyOptions } from '../../agent/proxy/index.ts';

function listen(server: Server, host: string, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

function options(over: Partial<ProxyOptions> = {}): ProxyOptions {
  return {
    node: 'n1', outbound: { host: '127.0.12.1', port: 0 }, inbound: { host: '127.0.12.2', port: 0 },
    upstreamBindIp: '127.0.12.3', originalDestination: () => undefined, onFlow: () => {},
    registry: new Registry(), logger: pino({ level: 'silent' }), ...over,
  };
}

const empty = (node: string, version: number): Snapshot => ({
  version, node, trustDomain: 'cluster.local', nodes: [], identities: [], endpoints: [], services: [], policies: [], l4: [],
});

describe('node proxy start and close', () => {
  const servers: Server[] = [];
  const proxies: NodeProxy[] = [];
  after(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });

  it('rejects start() with NODAL_ERR_PROXY_BIND naming the address, and leaves nothing bound', async () => {
    const taken = createServer();
    servers.push(taken);
    const port = await listen(taken, '127.0.12.1');
    const probe = createServer();
    const inboundPort = await listen(probe, '127.0.12.2');
    await new Promise((r) => probe.close(r));

    await assert.rejects(
      NodeProxy.start(options({ outbound: { host: '127.0.12.1', port }, inbound: { host: '127.0.12.2', port: inboundPort } })),
      (err: unknown) => {
        assert.ok(err instanceof ProxyError);
        assert.equal(err.code, 'NODAL_ERR_PROXY_BIND');
        assert.match(err.message, new RegExp(`outbound listener 127\\.0\\.12\\.1:${port}: EADDRINUSE`));
        return true;
      },
    );
    // the listener that did bind was closed again
    const again = createServer();
    servers.push(again);
    assert.equal(await listen(again, '127.0.12.2', inboundPort), inboundPort);
  });

  it('rejects options that cannot work with NODAL_ERR_PROXY_CONFIG', async () => {
    await assert.rejects(NodeProxy.start(options({ upstreamBindIp: 'proxy' })), { code: 'NODAL_ERR_PROXY_CONFIG' });
    await assert.rejects(NodeProxy.start(options({ inbound: { host: 'localhost', port: 15008 } })), { code: 'NODAL_ERR_PROXY_CONFIG' });
  });

  it('is not ready before a snapshot for its own node, and closes connections meanwhile with an ERROR flow', async () => {
    const flows: Flow[] = [];
    const p = await NodeProxy.start(options({ onFlow: (f) => flows.push(f) }));
    proxies.push(p);
    assert.equal(p.ready, false);
    p.update(empty('another-node', 5));
    assert.equal(p.ready, false, 'a snapshot for another node is ignored');

    const s = connect({ host: '127.0.12.1', port: p.addresses.outbound.port });
    s.on('error', () => {});
    await new Promise((r) => s.once('close', r));
    assert.equal(flows[0]?.verdict, 'ERROR');
    assert.equal(flows[0]?.summary, 'no snapshot yet');

    p.update(empty('n1', 5));
    assert.equal(p.ready, true);
  });

  it('registers its metrics on the given registry', async () => {
    const registry = new Registry();
    const p = await NodeProxy.start(options({ registry }));
    proxies.push(p);
    const names = (await registry.getMetricsAsJSON()).map((m) => m.name).sort();
    assert.deepEqual(names, [
      'nodal_proxy_active_connections', 'nodal_proxy_bytes_total', 'nodal_proxy_connections_total',
      'nodal_proxy_outlier_ejected_endpoints', 'nodal_proxy_outlier_ejections_total',
      'nodal_proxy_policy_verdicts_total', 'nodal_proxy_rate_limited_total', 'nodal_proxy_request_duration_seconds',
      'nodal_proxy_requests_total', 'nodal_proxy_retries_total',
      'nodal_proxy_tcp_connections_closed_total', 'nodal_proxy_tcp_connections_opened_total',
      'nodal_proxy_tcp_received_bytes_total', 'nodal_proxy_tcp_sent_bytes_total',
    ]);
  });

  it('close() is idempotent, frees the ports, and update() afterwards fails with NODAL_ERR_PROXY_CLOSED', async () => {
    const p = await NodeProxy.start(options());
    const port = p.addresses.outbound.port;
    await p.close();
    await p.close();
    assert.throws(() => p.update(empty('n1', 1)), { code: 'NODAL_ERR_PROXY_CLOSED' });
    const again = createServer();
    servers.push(again);
    assert.equal(await listen(again, '127.0.12.1', port), port);
  });
});
