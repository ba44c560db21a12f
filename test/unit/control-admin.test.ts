// The admin API end to end without privileges: the agent's GET /status (agent/status.ts
// over agent/admin.ts, from fake dependencies), the control plane's Admin service on a
// unix socket (Explain over the wire is exactly explain(), Status joins the control
// plane's view with each agent's report and names the agent that does not answer), the
// socket's bind rules, and the flow-rate meter.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { startAdmin } from '../../agent/admin.ts';
import { agentStatus, FlowRate, type AgentStatusDeps, type AgentStatusReport } from '../../agent/status.ts';
import { AgentControlClient, startControlPlane, type ControlPlane, type Snapshot } from '../../control/index.ts';
import {
  adminClient, AdminErrorCode, explain, fetchReport, startAdminServer, type AdminClient, type AdminServer,
} from '../../control/admin/index.ts';
import { TempDirs, Waiter, configDirWithCluster, silent } from '../fixtures/control/helpers.ts';
import { freePort } from '../helpers/ports.ts';

const tmp = new TempDirs();
const closers: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  tmp.cleanup();
});

const NOW_S = 1_700_000_000;

function fakeDeps(o: { wgFails?: boolean } = {}): AgentStatusDeps & { clock: { ms: number }; seen: { n: number } } {
  const clock = { ms: NOW_S * 1000 };
  const seen = { n: 100 };
  const snapshot = {
    version: 7, node: 'node-a',
    nodes: [{ name: 'node-b', wgPublicKey: 'KEY-B', underlayIp: '192.168.50.12', tunnelIp: '10.99.0.2', podCidrs: [], proxyIp: '' }],
  } as unknown as Snapshot;
  const flowRate = new FlowRate(() => seen.n, { now: () => clock.ms });
  return {
    clock, seen,
    node: 'node-a', version: 'nodal v0.0.0-test', snapshot: () => snapshot,
    datapath: {
      pinRoot: '/sys/fs/bpf/nodal/node-a', report: { adopted: ['connect4'], attached: ['connect6', 'sock_ops', 'ingress'] },
      config: { cgroupPath: '/sys/fs/cgroup/nodal-sandbox/node-a' },
      counters: () => ({ dropConnect: 3n, dropIngress: 17n, eventsLost: 1n, redirects: 1234n }),
    },
    cgroupQuery: (_path, hook) => {
      if (hook === 'ingress') throw new Error('cgroup query ingress: EPERM');
      return hook === 'connect4' ? [41] : hook === 'connect6' ? [42] : [43];
    },
    wireguard: {
      mode: 'userspace', publicKey: 'KEY-A',
      status: async () => {
        if (o.wgFails) throw new Error('wg show nodal-wg0 dump: no such device');
        return {
          peers: [
            { publicKey: 'KEY-X', latestHandshake: 0, rxBytes: 0, txBytes: 0, allowedIps: [] },
            { publicKey: 'KEY-B', endpoint: '192.168.50.12:51871', latestHandshake: NOW_S - 30, rxBytes: 2048, txBytes: 4096, allowedIps: ['10.99.0.2/32', '10.244.2.0/24'] },
          ],
        };
      },
    },
    enrolled: () => ['demo/client', 'demo/api-2'],
    flows: { seen: 100, size: 100, capacity: 65_536, lost: 2 },
    flowRate,
    uptime: () => 12.34,
  };
}

describe('agent /status', () => {
  it('reports every section from its dependencies; a failed hook query is named, the rest still comes', async () => {
    const deps = fakeDeps();
    // 10 s later, 50 more flows: 5 flows/s over the window
    deps.clock.ms += 10_000;
    deps.seen.n += 50;
    const r = await agentStatus(deps);
    const want: AgentStatusReport = {
      node: 'node-a', version: 'nodal v0.0.0-test', snapshotVersion: 7, uptimeSeconds: 12.3,
      datapath: {
        pinRoot: '/sys/fs/bpf/nodal/node-a', cgroup: '/sys/fs/cgroup/nodal-sandbox/node-a',
        hooks: [
          { hook: 'connect4', programIds: [41], adopted: true },
          { hook: 'connect6', programIds: [42], adopted: false },
          { hook: 'sock_ops', programIds: [43], adopted: false },
          { hook: 'ingress', programIds: [], adopted: false, error: 'cgroup query ingress: EPERM' },
        ],
        counters: { dropConnect: 3, dropIngress: 17, eventsLost: 1, redirects: 1234 },
      },
      wireguard: {
        mode: 'userspace', publicKey: 'KEY-A',
        peers: [
          { node: 'node-b', publicKey: 'KEY-B', endpoint: '192.168.50.12:51871', latestHandshake: NOW_S - 30, rxBytes: 2048, txBytes: 4096, allowedIps: ['10.99.0.2/32', '10.244.2.0/24'] },
          { publicKey: 'KEY-X', latestHandshake: 0, rxBytes: 0, txBytes: 0, allowedIps: [] },
        ],
      },
      endpoints: { enrolled: ['demo/api-2', 'demo/client'] },
      flows: { seen: 100, stored: 100, capacity: 65_536, lost: 2, ratePerSecond: 5, rateWindowSeconds: 10 },
    };
    assert.deepEqual(r, want);
  });

  it('a WireGuard device that cannot be read is an error in its section, not a failed report', async () => {
    const r = await agentStatus(fakeDeps({ wgFails: true }));
    assert.equal(r.wireguard.error, 'wg show nodal-wg0 dump: no such device');
    assert.deepEqual(r.wireguard.peers, []);
    assert.equal(r.datapath.counters.redirects, 1234);
  });

  it('is served as JSON on the health listener, beside /healthz', async () => {
    const [health, metrics] = [await freePort(), await freePort()];
    const deps = fakeDeps();
    const admin = await startAdmin({
      host: '127.0.0.1', healthPort: health, metricsPort: metrics, metrics: () => new Registry().metrics(), contentType: new Registry().contentType,
      readiness: { ready: () => ({ ok: true, reasons: [] }) }, status: () => agentStatus(deps),
    });
    closers.push(() => admin.close());
    const res = await fetch(`http://127.0.0.1:${health}/status`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    const body = (await res.json()) as AgentStatusReport;
    assert.deepEqual(body, JSON.parse(JSON.stringify(await agentStatus(deps))));
    assert.equal((await fetch(`http://127.0.0.1:${health}/healthz`)).status, 200);
  });
});

describe('FlowRate', () => {
  it('averages over the window from the samples, counting flows since overwritten', () => {
    let now = 0;
    let seen = 0;
    const rate = new FlowRate(() => seen, { now: () => now, windowMs: 10_000, sampleMs: 1000 });
    assert.equal(rate.perSecond(), 0);
    for (let s = 1; s <= 30; s++) {
      now = s * 1000;
      seen += s <= 20 ? 10 : 100; // 10/s for 20 s, then 100/s
      rate.sample();
    }
    // the window (20 s..30 s) holds only the 100/s seconds
    assert.equal(rate.perSecond(), 100);
    // half a second later, nothing new: the oldest sample inside the window is now 21 s
    now += 500;
    assert.equal(rate.perSecond(), 900 / 9.5);
  });

  it('without samples inside the window, the newest one still gives a rate', () => {
    let now = 0;
    let seen = 0;
    const rate = new FlowRate(() => seen, { now: () => now });
    now = 60_000;
    seen = 600;
    assert.equal(rate.perSecond(), 10);
  });
});

describe('Admin on a unix socket', () => {
  let cp: ControlPlane;
  let server: AdminServer;
  let client: AdminClient;
  let socket: string;
  let agentPort: number;
  let deadPort: number;
  let configDir: string;
  const changed = new Waiter();

  before(async () => {
    configDir = configDirWithCluster(tmp);
    cp = await startControlPlane({ configDir, stateDir: tmp.make(), listen: '127.0.0.1:0', logger: silent });
    closers.push(() => cp.close());
    cp.on('change', changed.notify);

    // node-a's agent answers /status; node-b's does not listen
    [agentPort, deadPort] = [await freePort(), await freePort()];
    const deps = fakeDeps();
    const agent = await startAdmin({
      host: '127.0.0.1', healthPort: agentPort, metricsPort: await freePort(), metrics: () => new Registry().metrics(), contentType: new Registry().contentType,
      readiness: { ready: () => ({ ok: true, reasons: [] }) }, status: () => agentStatus(deps),
    });
    closers.push(() => agent.close());

    // node-a's agent also holds the control stream
    const stream = new AgentControlClient({
      address: cp.address, node: 'node-a', stateDir: tmp.make(), logger: silent, hello: () => ({ wgPublicKey: '' }), apply: () => {},
    });
    closers.push(() => stream.close());
    stream.start();
    await changed.until(() => cp.state().agents.some((a) => a.node === 'node-a' && a.ackedVersion === cp.snapshotFor('node-a').version));

    socket = join(tmp.make('nodal-admin-'), 'control.sock');
    server = await startAdminServer({
      plane: cp, socketPath: socket, logger: silent, version: 'nodal v0.0.0-test', agentTimeoutMs: 1000,
      agentUrl: (n) => `http://127.0.0.1:${n.name === 'node-a' ? agentPort : deadPort}/status`,
    });
    closers.push(() => server.close());
    client = adminClient(`unix:${socket}`);
    closers.push(() => client.close());
  });

  it('binds the socket it was given', () => {
    assert.deepEqual(server.addresses, [`unix:${socket}`]);
  });

  it('Explain over the wire is exactly explain() on the control plane\'s view', async () => {
    const req = { from: 'demo/client', to: 'demo/api', port: 80, method: 'GET', path: '/v1/items', host: '' };
    const local = explain(cp.state(), req);
    assert.deepEqual(await client.explain(req), local);
  });

  it('Explain of an unknown pod is NOT_FOUND with the close match in the message', async () => {
    await assert.rejects(client.explain({ from: 'demo/clinet', to: 'demo/api', port: 80 }), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.NOT_FOUND);
      assert.equal(err.details, '--from: no pod demo/clinet (did you mean demo/client?)');
      return true;
    });
    await assert.rejects(client.explain({ from: 'demo/client', to: 'demo/api', port: 0 }), (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT);
  });

  it('Status: the control plane\'s view, node-a\'s own report, node-b named as unreachable', async () => {
    const s = await client.status({});
    assert.equal(s.version, 'nodal v0.0.0-test');
    assert.equal(s.trustDomain, 'cluster.local');
    assert.equal(s.modelVersion, cp.state().version);
    assert.deepEqual(s.nodes.map((n) => [n.name, n.listed, n.underlayIp]), [['node-a', true, '192.168.50.11'], ['node-b', true, '192.168.50.12']]);
    const [a, b] = s.nodes;
    assert.equal(a!.connection?.connected, true);
    assert.equal(a!.connection?.ackedVersion, cp.snapshotFor('node-a').version);
    assert.equal(a!.agentError, '');
    // the agent's JSON crossed the wire whole, with the proto's defaults for what it left out
    assert.equal(a!.agent?.snapshotVersion, 7);
    assert.deepEqual(a!.agent?.datapath?.hooks.map((h) => [h.hook, h.programIds, h.adopted, h.error]),
      [['connect4', [41], true, ''], ['connect6', [42], false, ''], ['sock_ops', [43], false, ''], ['ingress', [], false, 'cgroup query ingress: EPERM']]);
    assert.deepEqual(a!.agent?.datapath?.counters, { dropConnect: 3, dropIngress: 17, eventsLost: 1, redirects: 1234 });
    assert.deepEqual(a!.agent?.wireguard?.peers.map((p) => [p.node, p.publicKey, p.latestHandshake]), [['node-b', 'KEY-B', NOW_S - 30], ['', 'KEY-X', 0]]);
    assert.deepEqual(a!.agent?.flows, { seen: 100, stored: 100, capacity: 65_536, lost: 2, ratePerSecond: 0, rateWindowSeconds: 10 });
    assert.deepEqual(a!.agent?.endpoints?.enrolled, ['demo/api-2', 'demo/client']);

    assert.equal(b!.connection?.seen, false);
    assert.equal(b!.agent, undefined);
    assert.match(b!.agentError, /^unreachable: connect ECONNREFUSED 127\.0\.0\.1:\d+$/);
    assert.equal(b!.agentUrl, `http://127.0.0.1:${deadPort}/status`);

    assert.ok(s.identities > 0);
    assert.ok(s.endpoints.some((e) => e.namespace === 'demo' && e.name === 'client' && e.enrolled));
    assert.deepEqual(s.errors, []);
  });

  it('Status without the agents asks none of them', async () => {
    const s = await client.status({ skipAgents: true });
    assert.ok(s.nodes.every((n) => n.agent === undefined && n.agentError === ''));
  });

  it('a rejected document shows in Status', async () => {
    writeFileSync(join(configDir, 'broken.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: { name: x, namespace: demo }\nspec: { nodeName: 7 }\n');
    await changed.until(() => cp.state().errors.length > 0);
    const s = await client.status({ skipAgents: true });
    assert.equal(s.errors.length, 1);
    assert.match(s.errors[0]!.file, /broken\.yaml$/);
    assert.equal(s.errors[0]!.object, 'Pod demo/x');
  });

  it('a second server refuses the live socket; a regular file in the way is never removed', async () => {
    await assert.rejects(startAdminServer({ plane: cp, socketPath: socket, logger: silent }), (err: Error & { code?: string }) =>
      err.code === AdminErrorCode.BIND && /in use/.test(err.message));
    const file = join(tmp.make(), 'control.sock');
    writeFileSync(file, 'not a socket');
    await assert.rejects(startAdminServer({ plane: cp, socketPath: file, logger: silent }), /exists and is not a socket/);
  });

  it('fetchReport: an agent without /status is told apart from one that is down', async () => {
    const r = await fetchReport(`http://127.0.0.1:${agentPort}/nothing`, 1000);
    assert.deepEqual(r, { error: 'HTTP 404: no agent /status there (not a nodal agent, or one older than this control plane)' });
  });
});
