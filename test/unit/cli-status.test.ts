// `nodal status` and `nodal policy check` against a fake admin server (nodal.v1.Admin on
// a unix socket, canned answers): the human and JSON output, and the exit codes: 0 for
// any explanation, allowed or denied; 1 when the control plane cannot be reached, with
// its address named; 2 for a malformed question (an unknown pod, with the close match).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { Command } from 'commander';
import { buildModel } from '../../control/index.ts';
import { adminService, explain, ExplainError, type ClusterStatus, type Explanation } from '../../control/admin/index.ts';
import { registerPolicy, runPolicyCheck } from '../../cli/policy.ts';
import { formatBytes, formatDuration, registerStatus, runStatus, type CliIO } from '../../cli/status.ts';
import { cluster, node, ns, pod, policy, svc } from '../fixtures/control/helpers.ts';

function capture(): CliIO & { stdout(): string; stderr(): string } {
  const out: string[] = [];
  const err: string[] = [];
  const sink = (into: string[]): Writable => new Writable({ write(chunk, _enc, cb) { into.push(String(chunk)); cb(); } });
  return { out: sink(out), err: sink(err), stdout: () => out.join(''), stderr: () => err.join('') };
}

const NOW_S = 1_700_000_000;

/** what the control plane would answer for a two-node cluster whose node-2 agent is down */
const STATUS: ClusterStatus = {
  version: 'nodal v0.1.0', modelVersion: 12, trustDomain: 'cluster.local', identities: 5, services: 2,
  nodes: [
    {
      name: 'node-1', listed: true, underlayIp: '10.10.0.11', tunnelIp: '10.99.0.1', proxyIp: '10.244.1.1', podCidrs: ['10.244.1.0/24'],
      wgPublicKey: 'AAAAkey1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', agentError: '', agentUrl: 'http://10.10.0.11:15021/status',
      connection: { seen: true, connected: true, peer: '10.10.0.11:40000', connectedAt: '2023-11-14T22:10:00.000Z', sentVersion: 12, ackedVersion: 12 },
      agent: {
        node: 'node-1', version: 'nodal v0.1.0', snapshotVersion: 12, uptimeSeconds: 3725,
        datapath: {
          pinRoot: '/sys/fs/bpf/nodal/node-1', cgroup: '/sys/fs/cgroup/nodal-sandbox/node-1', error: '',
          hooks: [
            { hook: 'connect4', programIds: [41], adopted: false, error: '' },
            { hook: 'connect6', programIds: [42], adopted: false, error: '' },
            { hook: 'sock_ops', programIds: [43], adopted: false, error: '' },
            { hook: 'ingress', programIds: [44], adopted: false, error: '' },
          ],
          counters: { dropConnect: 3, dropIngress: 17, eventsLost: 0, redirects: 1234 },
        },
        wireguard: {
          mode: 'userspace', publicKey: 'AAAAkey1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', error: '',
          peers: [{ node: 'node-2', publicKey: 'BBBBkey2', endpoint: '10.10.0.12:51871', latestHandshake: NOW_S - 42, rxBytes: 1536, txBytes: 3 << 20, allowedIps: ['10.99.0.2/32', '10.244.2.0/24'] }],
        },
        endpoints: { enrolled: ['demo/frontend'] },
        flows: { seen: 5000, stored: 5000, capacity: 65_536, lost: 7, ratePerSecond: 2.5, rateWindowSeconds: 10 },
      },
    },
    {
      name: 'node-2', listed: true, underlayIp: '10.10.0.12', tunnelIp: '10.99.0.2', proxyIp: '10.244.2.1', podCidrs: ['10.244.2.0/24'],
      wgPublicKey: 'BBBBkey2', agentError: 'unreachable: connect ECONNREFUSED 10.10.0.12:15021', agentUrl: 'http://10.10.0.12:15021/status',
      connection: { seen: true, connected: false, peer: '10.10.0.12:40001', connectedAt: '2023-11-14T22:10:00.000Z', sentVersion: 12, ackedVersion: 11,
        lastNack: { version: 12, error: 'reconcile: map update EPERM', at: '2023-11-14T22:11:00.000Z' } },
    },
  ],
  endpoints: [
    { namespace: 'demo', name: 'frontend', node: 'node-1', ip: '10.244.1.2', identity: 257, enrolled: true },
    { namespace: 'legacy', name: 'client', node: 'node-1', ip: '10.244.1.3', identity: 260, enrolled: false },
    { namespace: 'demo', name: 'backend', node: 'node-2', ip: '10.244.2.10', identity: 256, enrolled: true },
  ],
  policies: [{ id: 1, namespace: 'demo', name: 'api-allow', action: 'ALLOW', selects: [256], rules: 1 }],
  errors: [{ file: 'config/MeshPolicy.demo.bad.yaml', object: 'MeshPolicy demo/bad', field: 'spec.action', message: 'must be one of ALLOW, DENY, AUDIT' }],
};

// an explanation computed by the real explain() over a small model
const ids = new Map<string, number>();
const MODEL = {
  ...buildModel({
    trustDomain: 'cluster.local',
    ids: { id: (kind, key) => {
      const k = `${kind}/${key}`;
      if (!ids.has(k)) ids.set(k, (kind === 'identities' ? 256 : 1) + [...ids.keys()].filter((x) => x.startsWith(`${kind}/`)).length);
      return ids.get(k)!;
    } },
    state: cluster({
      namespaces: [ns('demo', { 'nodal.io/mesh': 'enabled' })],
      nodes: [node('node-1', '10.10.0.11', { tunnelIp: '10.99.0.1' }), node('node-2', '10.10.0.12', { tunnelIp: '10.99.0.2' })],
      pods: [
        pod('demo', 'frontend', { serviceAccount: 'frontend', labels: { app: 'frontend' }, podIp: '10.244.1.2', nodeName: 'node-1' }),
        pod('demo', 'backend', { serviceAccount: 'backend', labels: { app: 'backend' }, podIp: '10.244.2.10', nodeName: 'node-2' }),
      ],
      services: [svc('demo', 'backend', { clusterIp: '10.96.0.20', selector: { app: 'backend' }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', appProtocol: 'http' }] })],
      policies: [policy('demo', 'api-allow', { matchLabels: { app: 'backend' }, rules: [{ from: [{ principals: ['cluster.local/ns/demo/sa/frontend'] }], to: [{ methods: ['GET'], paths: ['/api/*'] }], when: [] }] })],
    }),
  }),
  version: 12,
};

describe('nodal status / policy check against a fake admin server', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nodal-cli-'));
  const socket = join(dir, 'control.sock');
  const server = `unix:${socket}`;
  const fake = new grpc.Server();
  const asked: Array<Record<string, unknown>> = [];

  before(async () => {
    fake.addService(adminService(), {
      Status: (call: grpc.ServerUnaryCall<Record<string, unknown>, ClusterStatus>, cb: grpc.sendUnaryData<ClusterStatus>) => {
        asked.push(call.request);
        cb(null, STATUS);
      },
      Explain: (call: grpc.ServerUnaryCall<Record<string, unknown>, Explanation>, cb: grpc.sendUnaryData<Explanation>) => {
        try {
          cb(null, explain(MODEL, call.request as never));
        } catch (err) {
          cb({ code: err instanceof ExplainError && err.code === 'NODAL_ERR_EXPLAIN_NOT_FOUND' ? grpc.status.NOT_FOUND : grpc.status.INVALID_ARGUMENT, details: (err as Error).message });
        }
      },
    });
    await new Promise<void>((resolve, reject) => fake.bindAsync(server, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  });
  after(async () => {
    await new Promise<void>((r) => fake.tryShutdown(() => r()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('status: the human summary', async () => {
    const io = capture();
    assert.equal(await runStatus({ server }, io, NOW_S * 1000), 0);
    assert.equal(io.stderr(), '');
    assert.equal(io.stdout(), `Control plane:  nodal v0.1.0 at ${server}, model version 12, trust domain cluster.local
Cluster:        2 nodes (1 agent connected), 3 endpoints (2 enrolled), 5 identities, 2 services, 1 policy
Config:         1 rejected document (the last good version stays in force):
  config/MeshPolicy.demo.bad.yaml: MeshPolicy demo/bad: spec.action: must be one of ALLOW, DENY, AUDIT

NODES
NAME     UNDERLAY     TUNNEL      AGENT          SNAPSHOT               UPTIME   ENDPOINTS
node-1   10.10.0.11   10.99.0.1   connected      12                     1h2m     2, 1 enrolled
node-2   10.10.0.12   10.99.0.2   disconnected   11 (sent 12) NACK 12   -        1, 1 enrolled

DATAPATH (program ids attached at the node's pod cgroup)
NODE     CONNECT4   CONNECT6   SOCK_OPS   INGRESS   REDIRECTS   DROPS CONNECT/INGRESS   LOST EVENTS
node-1   41         42         43         44        1234        3/17                    0

WIREGUARD
NODE     MODE        PUBLIC KEY    PEER     ENDPOINT           HANDSHAKE   RX        TX
node-1   userspace   AAAAkey1AA…   node-2   10.10.0.12:51871   42s ago     1.5 KiB   3.0 MiB

FLOWS
NODE     RATE          SEEN   STORED       LOST
node-1   2.5/s (10s)   5000   5000/65536   7

ENROLLED (redirection in place, as each agent reports)
node-1   demo/frontend

AGENTS NOT REPORTING
node-2   unreachable: connect ECONNREFUSED 10.10.0.12:15021
`);
    assert.deepEqual(asked.at(-1), { skipAgents: false, agentTimeoutMs: 0 });
  });

  it('status -o json: the response as it came, every field present', async () => {
    const io = capture();
    assert.equal(await runStatus({ server, output: 'json', agents: false, agentTimeout: '300ms' }, io), 0);
    assert.deepEqual(JSON.parse(io.stdout()), STATUS);
    assert.deepEqual(asked.at(-1), { skipAgents: true, agentTimeoutMs: 300 });
  });

  it('policy check: allowed, explained', async () => {
    const io = capture();
    const code = await runPolicyCheck({ server, from: 'demo/frontend', to: 'demo/backend', port: '80', httpMethod: 'GET', httpPath: '/api/x' }, io);
    assert.equal(code, 0);
    assert.equal(io.stdout(), `demo/frontend → Service demo/backend (10.96.0.20:80)  GET /api/x
ALLOWED: allowed by demo/api-allow rule 0 (at the node-2 proxy)

source       demo/frontend on node-1 (10.244.1.2), identity 257 (demo/frontend), enrolled
destination  Service demo/backend 10.96.0.20:80 → target port 8080, appProtocol http, 1 backend, identity 256
connect()    ALLOW: redirected to the node-1 proxy (:15001): an ALLOW rule could admit it past the destination's guard, the destination proxy decides
             lookup EGRESS 257 ↔ 256 port 80: entry (peer 256, port any) ALLOW to the proxy
backend      demo/backend, identity 256 (demo/backend), port 8080
  path       cross-node: node-1 proxy → WireGuard → node-2 proxy (10.99.0.2:15008) → pod 10.244.2.10:8080
  protocol   HTTP/1.1 (appProtocol http): this request judged at L7
  proxy      ALLOW: allowed by demo/api-allow rule 0
  rules      demo/api-allow ALLOW rule 0: from match, to match, when any → matches
`);
  });

  it('policy check: denied is an explanation too (exit 0)', async () => {
    const io = capture();
    assert.equal(await runPolicyCheck({ server, from: 'demo/frontend', to: 'demo/backend', port: '80', httpMethod: 'GET', httpPath: '/admin' }, io), 0);
    assert.match(io.stdout(), /^DENIED: no ALLOW rule of demo\/api-allow matches \(at the node-2 proxy\)$/m);
    assert.match(io.stdout(), /rules {6}demo\/api-allow ALLOW rule 0: from match, to no match, when any$/m);
  });

  it('policy check -o json: the explanation as it came', async () => {
    const io = capture();
    assert.equal(await runPolicyCheck({ server, from: 'demo/frontend', to: 'demo/backend', port: '80', output: 'json' }, io), 0);
    const e = JSON.parse(io.stdout()) as Explanation;
    assert.equal(e.verdict, 'DENIED');
    assert.equal(e.backends[0]!.decision.reason, 'NO_ALLOW_MATCHED');
    assert.deepEqual(e, explain(MODEL, { from: 'demo/frontend', to: 'demo/backend', port: 80, method: '', path: '', host: '' }));
  });

  it('policy check of an unknown pod: exit 2, the server\'s message with the close match', async () => {
    const io = capture();
    assert.equal(await runPolicyCheck({ server, from: 'demo/frontnd', to: 'demo/backend', port: '80' }, io), 2);
    assert.equal(io.stderr(), 'nodal policy check: --from: no pod demo/frontnd (did you mean demo/frontend?)\n');
    assert.equal(io.stdout(), '');
  });

  it('bad arguments are exit 2 before any connection', async () => {
    for (const [o, re] of [
      [{ from: 'demo/frontend', to: 'demo/backend' }, /--port is required/],
      [{ to: 'demo/backend', port: '80' }, /--from is required/],
      [{ from: 'demo/frontend', to: 'demo/backend', port: 'http' }, /--port: "http" is not a port/],
      [{ from: 'demo/frontend', to: 'demo/backend', port: '80', output: 'yaml' }, /-o: "yaml" is not one of table, json/],
    ] as const) {
      const io = capture();
      assert.equal(await runPolicyCheck({ server: 'unix:/nonexistent/x.sock', ...o }, io), 2);
      assert.match(io.stderr(), re);
    }
    const io = capture();
    assert.equal(await runStatus({ server, output: 'wide' }, io), 2);
  });

  it('no control plane: exit 1, naming the address', async () => {
    const missing = join(dir, 'nobody.sock');
    for (const run of [
      (io: CliIO) => runStatus({ server: missing }, io),
      (io: CliIO) => runPolicyCheck({ server: `unix:${missing}`, from: 'a/b', to: 'c/d', port: '80' }, io),
    ]) {
      const io = capture();
      assert.equal(await run(io), 1);
      assert.match(io.stderr(), new RegExp(`cannot reach the control plane at unix:${missing}: socket ${missing} does not exist`));
    }
  });

  it('NODAL_CONTROL names the server when --server is not given', async () => {
    const before = process.env.NODAL_CONTROL;
    process.env.NODAL_CONTROL = server;
    try {
      const io = capture();
      assert.equal(await runStatus({ output: 'json' }, io), 0);
    } finally {
      if (before === undefined) delete process.env.NODAL_CONTROL;
      else process.env.NODAL_CONTROL = before;
    }
  });
});

describe('nodal status / policy: registration and helpers', () => {
  it('registers `status` and `policy check` with their flags', () => {
    const program = new Command('nodal');
    registerStatus(program);
    registerPolicy(program);
    const status = program.commands.find((c) => c.name() === 'status')!;
    assert.ok(status.options.some((o) => o.long === '--server'));
    const check = program.commands.find((c) => c.name() === 'policy')!.commands.find((c) => c.name() === 'check')!;
    assert.deepEqual(check.options.map((o) => o.long),
      ['--from', '--to', '--port', '--http-method', '--http-path', '--http-host', '--server', '--output', '--timeout']);
  });

  it('formats sizes and durations compactly', () => {
    assert.deepEqual([0, 1023, 1536, 3 << 20, 50 * 1024 * 1024 * 1024].map(formatBytes), ['0 B', '1023 B', '1.5 KiB', '3.0 MiB', '50 GiB']);
    assert.deepEqual([5, 60, 125, 3725, 90_000].map(formatDuration), ['5s', '1m', '2m5s', '1h2m', '1d1h']);
  });
});
