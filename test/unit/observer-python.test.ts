// A client that is not ours reads flows from an agent's Observer and from the relay:
// Python grpcio with the stubs protoc generates from control/proto, printing protojson
// with the .proto field names (MessageToDict). Every field nodal fills is compared with
// what was stored, spelled out here by hand, so neither our serializers nor our JSON
// conversion grade their own work. Needs python3 + grpcio + protobuf, protoc and the
// gRPC Python plugin: missing tools fail the test (naming the Debian package), never skip.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Snapshot } from '../../control/api/types.ts';
import type { VerdictEvent } from '../../agent/datapath/index.ts';
import { FlowStore, flowFromVerdictEvent, nodalVersion, startObserver, type Flow, type ObserverServer } from '../../agent/flows/index.ts';
import { startRelay, type RelayServer } from '../../control/relay/index.ts';
import { repoRoot } from '../helpers/paths.ts';
import { quiet, tempDir, type Msg } from '../fixtures/flows/harness.ts';

const SCRIPT = join(repoRoot, 'test/fixtures/python/read_flows.py');
const PROTO_DIR = join(repoRoot, 'control/proto');

// --- the tools, found or named ---

const ok = (cmd: string, args: string[]): boolean => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;

interface Tools { python: string; protoc: string; plugin: string; wktInclude: string }

function findTools(): Tools {
  const missing: string[] = [];
  // Debian's grpcio lives with Debian's interpreter; a python3 earlier in PATH (pyenv) may lack it
  const python = ['/usr/bin/python3', 'python3'].find((p) => ok(p, ['-c', 'import grpc, google.protobuf.json_format']));
  if (!python) missing.push('python3 with grpcio and protobuf (Debian: python3-grpcio python3-protobuf)');
  if (!ok('protoc', ['--version'])) missing.push('protoc (Debian: protobuf-compiler)');
  const which = spawnSync('sh', ['-c', 'command -v grpc_python_plugin'], { encoding: 'utf8' });
  const plugin = which.status === 0 ? which.stdout.trim() : '';
  if (!plugin) missing.push('grpc_python_plugin (Debian: protobuf-compiler-grpc)');
  const wktInclude = ['/usr/include', '/usr/local/include'].find((d) => existsSync(join(d, 'google/protobuf/timestamp.proto')));
  if (!wktInclude) missing.push('google/protobuf/*.proto for protoc (Debian: libprotobuf-dev)');
  if (missing.length) throw new Error(`the Python client test needs ${missing.join('; ')}: run make setup`);
  return { python: python!, protoc: 'protoc', plugin, wktInclude: wktInclude! };
}

function generateStubs(t: Tools, out: string): void {
  const r = spawnSync(t.protoc, [
    `-I${PROTO_DIR}`, `-I${t.wktInclude}`, `--python_out=${out}`, `--grpc_python_out=${out}`,
    `--plugin=protoc-gen-grpc_python=${t.plugin}`,
    'flow/flow.proto', 'relay/relay.proto', 'observer/observer.proto',
  ], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`protoc failed on control/proto: ${r.stderr}`);
}

interface Call { name: string; method: 'GetFlows' | 'ServerStatus' | 'GetNodes'; request?: Msg }

/** async: the servers under test run in this process and must keep answering */
async function readWithPython(t: Tools, stubs: string, target: string, plan: Call[]): Promise<Record<string, Msg>> {
  const { stdout } = await promisify(execFile)(t.python, [SCRIPT, stubs, target, JSON.stringify(plan)], { timeout: 60_000, maxBuffer: 16 << 20 });
  return JSON.parse(stdout) as Record<string, Msg>;
}

// --- the flows: every field nodal fills, across five flows on two nodes ---

const T0 = 1_700_000_000; // 2023-11-14T22:13:20Z
const webLabels = ['k8s:app=web', 'k8s:io.kubernetes.pod.namespace=frontend'];
const apiLabels = ['k8s:app=api', 'k8s:io.kubernetes.pod.namespace=backend'];
const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

const snapshot: Snapshot = {
  version: 42, node: 'node-b', trustDomain: 'cluster.local', nodes: [],
  identities: [{ id: 256, namespace: 'backend', serviceAccount: 'api', labels: { app: 'api' }, spiffeId: 'spiffe://cluster.local/ns/backend/sa/api' }],
  endpoints: [{ namespace: 'frontend', name: 'web-1', uid: 'u1', node: 'node-b', ip: '10.0.1.5', identity: 257, labels: { app: 'web' }, serviceAccount: 'web', enrolled: true }],
  services: [{ namespace: 'backend', name: 'api', id: 1, clusterIp: '10.96.0.10', ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], backends: [], identity: 256 }],
  policies: [{ id: 11, namespace: 'frontend', name: 'web-egress', action: 'ALLOW', selects: [257], rules: [] }],
  l4: [],
};

/** an L3/L4 drop at an enrolled pod's ingress, from outside the mesh (IPv6) */
const f1: Flow = {
  time: { seconds: T0, nanos: 123_456_789 },
  uuid: '5f0c9c7e-7b8a-4c1e-9a41-0d2b6f3c1a01',
  verdict: 'DROPPED',
  dropReasonDesc: 'POLICY_DENIED',
  IP: { source: '2001:db8::7', destination: 'fd00::9', ipVersion: 'IPv6' },
  l4: { TCP: { sourcePort: 51000, destinationPort: 8080, flags: { SYN: true } } },
  source: { identity: 2, labels: ['reserved:world'] },
  destination: { ID: 12, identity: 256, namespace: 'backend', podName: 'api-7', labels: apiLabels, workloads: [{ name: 'api', kind: 'Deployment' }] },
  Type: 'L3_L4',
  nodeName: 'node-a',
  trafficDirection: 'INGRESS',
  isReply: false,
  ingressDeniedBy: [{ name: 'api-allow', namespace: 'backend', kind: 'MeshPolicy', labels: ['default-deny'], revision: 42 }],
  summary: 'default deny: no ALLOW rule of MeshPolicy backend/api-allow matches',
  eventType: { type: 1, subType: 133 },
};

/** an HTTP request through the proxy, allowed on both sides, with its trace */
const f2: Flow = {
  time: { seconds: T0 + 1, nanos: 500_000_000 },
  uuid: '5f0c9c7e-7b8a-4c1e-9a41-0d2b6f3c1a02',
  verdict: 'FORWARDED',
  IP: { source: '10.0.1.5', destination: '10.0.1.9', ipVersion: 'IPv4' },
  l4: { TCP: { sourcePort: 40312, destinationPort: 8080 } },
  source: { ID: 5, identity: 257, namespace: 'frontend', podName: 'web-1', labels: webLabels, workloads: [{ name: 'web', kind: 'Deployment' }] },
  destination: { ID: 12, identity: 256, namespace: 'backend', podName: 'api-7', labels: apiLabels },
  Type: 'L7',
  nodeName: 'node-a',
  l7: {
    type: 'REQUEST',
    http: { method: 'GET', url: 'http://api.backend/v1/items?limit=5', protocol: 'HTTP/1.1', headers: [{ key: 'user-agent', value: 'curl/8.5' }, { key: 'traceparent', value: traceparent }] },
  },
  trafficDirection: 'EGRESS',
  isReply: false,
  egressAllowedBy: [{ name: 'web-egress', namespace: 'frontend', kind: 'MeshPolicy', labels: ['rule=0'], revision: 42 }],
  ingressAllowedBy: [{ name: 'api-allow', namespace: 'backend', kind: 'MeshPolicy', labels: ['rule=2'], revision: 42 }],
  traceContext: { parent: { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7' } },
  summary: 'HTTP/1.1 GET http://api.backend/v1/items?limit=5',
  eventType: { type: 129, subType: 0 },
  sourceService: { name: 'web', namespace: 'frontend' },
  destinationService: { name: 'api', namespace: 'backend' },
};

/** its response: a reply, with status and latency */
const f3: Flow = {
  time: { seconds: T0 + 1, nanos: 504_000_000 },
  uuid: '5f0c9c7e-7b8a-4c1e-9a41-0d2b6f3c1a03',
  verdict: 'FORWARDED',
  IP: { source: '10.0.1.9', destination: '10.0.1.5', ipVersion: 'IPv4' },
  l4: { TCP: { sourcePort: 8080, destinationPort: 40312 } },
  source: { ID: 12, identity: 256, namespace: 'backend', podName: 'api-7', labels: apiLabels },
  destination: { ID: 5, identity: 257, namespace: 'frontend', podName: 'web-1', labels: webLabels },
  Type: 'L7',
  nodeName: 'node-b',
  l7: { type: 'RESPONSE', latencyNs: 2_000_000, http: { code: 200, method: 'GET', url: 'http://api.backend/v1/items?limit=5', protocol: 'HTTP/1.1' } },
  trafficDirection: 'INGRESS',
  isReply: true,
  traceContext: { parent: { traceId: '4bf92f3577b34da6a3ce929d0e0e4736' } },
  summary: 'HTTP/1.1 200 2ms (GET http://api.backend/v1/items?limit=5)',
  eventType: { type: 129, subType: 0 },
};

/** a kernel verdict made into a flow by the agent's own code: redirected to the proxy */
const verdict: VerdictEvent = {
  timeNs: BigInt(T0 + 2) * 1_000_000_000n, cookie: 77n, cgroupId: 9n,
  source: { ip: '0.0.0.0', port: 0 }, destination: { ip: '10.96.0.10', port: 80 },
  family: 4, proto: 6, verdict: 'REDIRECTED', reason: 'POLICY_ALLOW', hook: 'connect4', direction: 'EGRESS',
  endpointId: 5, srcIdentity: 257, dstIdentity: 256, policyId: 11, rule: 3,
};
const f4 = flowFromVerdictEvent(verdict, { node: 'node-b', snapshot, localEndpoint: () => snapshot.endpoints[0] });

/** an L3/L4 egress drop of UDP by a DENY rule */
const f5: Flow = {
  time: { seconds: T0 + 3, nanos: 7_000_000 },
  uuid: '5f0c9c7e-7b8a-4c1e-9a41-0d2b6f3c1a05',
  verdict: 'DROPPED',
  dropReasonDesc: 'POLICY_DENY',
  IP: { source: '10.0.1.5', destination: '10.0.1.2', ipVersion: 'IPv4' },
  l4: { UDP: { sourcePort: 5353, destinationPort: 53 } },
  source: { ID: 5, identity: 257, namespace: 'frontend', podName: 'web-1', labels: webLabels },
  destination: { identity: 1, labels: ['reserved:host'] },
  Type: 'L3_L4',
  nodeName: 'node-b',
  trafficDirection: 'EGRESS',
  isReply: false,
  egressDeniedBy: [{ name: 'no-dns', namespace: 'frontend', kind: 'MeshPolicy', labels: ['rule=1'], revision: 42 }],
  summary: 'denied by MeshPolicy frontend/no-dns rule 1',
  eventType: { type: 1, subType: 181 },
};

// --- what a protojson reader must see: written out, not derived from our code ---

const webEp = { ID: 5, identity: 257, namespace: 'frontend', labels: webLabels, pod_name: 'web-1' };
const apiEp = { ID: 12, identity: 256, namespace: 'backend', labels: apiLabels, pod_name: 'api-7' };

const expected: Record<string, Msg> = {
  f1: {
    time: '2023-11-14T22:13:20.123456789Z',
    uuid: f1.uuid,
    verdict: 'DROPPED',
    drop_reason: 133,
    IP: { source: '2001:db8::7', destination: 'fd00::9', ipVersion: 'IPv6' },
    l4: { TCP: { source_port: 51000, destination_port: 8080, flags: { SYN: true } } },
    source: { identity: 2, labels: ['reserved:world'] },
    destination: { ...apiEp, workloads: [{ name: 'api', kind: 'Deployment' }] },
    Type: 'L3_L4',
    node_name: 'node-a',
    event_type: { type: 1, sub_type: 133 },
    traffic_direction: 'INGRESS',
    drop_reason_desc: 'POLICY_DENIED',
    is_reply: false,
    ingress_denied_by: [{ name: 'api-allow', namespace: 'backend', labels: ['default-deny'], revision: '42', kind: 'MeshPolicy' }],
    Summary: 'default deny: no ALLOW rule of MeshPolicy backend/api-allow matches',
  },
  f2: {
    time: '2023-11-14T22:13:21.500Z',
    uuid: f2.uuid,
    verdict: 'FORWARDED',
    IP: { source: '10.0.1.5', destination: '10.0.1.9', ipVersion: 'IPv4' },
    l4: { TCP: { source_port: 40312, destination_port: 8080 } },
    source: { ...webEp, workloads: [{ name: 'web', kind: 'Deployment' }] },
    destination: apiEp,
    Type: 'L7',
    node_name: 'node-a',
    l7: {
      type: 'REQUEST',
      http: { method: 'GET', url: 'http://api.backend/v1/items?limit=5', protocol: 'HTTP/1.1', headers: [{ key: 'user-agent', value: 'curl/8.5' }, { key: 'traceparent', value: traceparent }] },
    },
    event_type: { type: 129 },
    source_service: { name: 'web', namespace: 'frontend' },
    destination_service: { name: 'api', namespace: 'backend' },
    traffic_direction: 'EGRESS',
    is_reply: false,
    trace_context: { parent: { trace_id: '4bf92f3577b34da6a3ce929d0e0e4736', span_id: '00f067aa0ba902b7' } },
    egress_allowed_by: [{ name: 'web-egress', namespace: 'frontend', labels: ['rule=0'], revision: '42', kind: 'MeshPolicy' }],
    ingress_allowed_by: [{ name: 'api-allow', namespace: 'backend', labels: ['rule=2'], revision: '42', kind: 'MeshPolicy' }],
    Summary: 'HTTP/1.1 GET http://api.backend/v1/items?limit=5',
  },
  f3: {
    time: '2023-11-14T22:13:21.504Z',
    uuid: f3.uuid,
    verdict: 'FORWARDED',
    IP: { source: '10.0.1.9', destination: '10.0.1.5', ipVersion: 'IPv4' },
    l4: { TCP: { source_port: 8080, destination_port: 40312 } },
    source: apiEp,
    destination: webEp,
    Type: 'L7',
    node_name: 'node-b',
    l7: { type: 'RESPONSE', latency_ns: '2000000', http: { code: 200, method: 'GET', url: 'http://api.backend/v1/items?limit=5', protocol: 'HTTP/1.1' } },
    event_type: { type: 129 },
    traffic_direction: 'INGRESS',
    is_reply: true,
    trace_context: { parent: { trace_id: '4bf92f3577b34da6a3ce929d0e0e4736' } },
    Summary: 'HTTP/1.1 200 2ms (GET http://api.backend/v1/items?limit=5)',
  },
  f4: {
    time: '2023-11-14T22:13:22Z',
    uuid: f4.uuid,
    verdict: 'REDIRECTED',
    IP: { source: '10.0.1.5', destination: '10.96.0.10', ipVersion: 'IPv4' },
    l4: { TCP: { destination_port: 80 } },
    source: { ID: 5, identity: 257, namespace: 'frontend', labels: webLabels, pod_name: 'web-1' },
    destination: { identity: 256, namespace: 'backend', labels: apiLabels },
    Type: 'L3_L4',
    node_name: 'node-b',
    event_type: { type: 4, sub_type: 1 },
    destination_service: { name: 'api', namespace: 'backend' },
    traffic_direction: 'EGRESS',
    is_reply: false,
    egress_allowed_by: [{ name: 'web-egress', namespace: 'frontend', labels: ['rule=3'], revision: '42', kind: 'MeshPolicy' }],
    Summary: 'redirected to the node proxy: allowed by MeshPolicy frontend/web-egress rule 3',
  },
  f5: {
    time: '2023-11-14T22:13:23.007Z',
    uuid: f5.uuid,
    verdict: 'DROPPED',
    drop_reason: 181,
    IP: { source: '10.0.1.5', destination: '10.0.1.2', ipVersion: 'IPv4' },
    l4: { UDP: { source_port: 5353, destination_port: 53 } },
    source: webEp,
    destination: { identity: 1, labels: ['reserved:host'] },
    Type: 'L3_L4',
    node_name: 'node-b',
    event_type: { type: 1, sub_type: 181 },
    traffic_direction: 'EGRESS',
    drop_reason_desc: 'POLICY_DENY',
    is_reply: false,
    egress_denied_by: [{ name: 'no-dns', namespace: 'frontend', labels: ['rule=1'], revision: '42', kind: 'MeshPolicy' }],
    Summary: 'denied by MeshPolicy frontend/no-dns rule 1',
  },
};

/** a GetFlowsResponse carrying flow `name`, as protojson */
const response = (name: string): Msg => ({ flow: expected[name], node_name: expected[name]!.node_name, time: expected[name]!.time });
const flowsOf = (responses: Msg[]): Msg[] => responses.filter((r) => r.flow);
const uuidsOf = (responses: Msg[]): string[] => flowsOf(responses).map((r) => r.flow.uuid as string);

/** compare field by field first, so a failure names the field, then the whole message */
function assertResponse(got: Msg | undefined, name: string): void {
  const want = response(name);
  assert.ok(got?.flow, `${name}: no flow in ${JSON.stringify(got)}`);
  for (const k of new Set([...Object.keys(want.flow), ...Object.keys(got.flow)])) {
    assert.deepEqual(got.flow[k], want.flow[k], `${name}: flow.${k}`);
  }
  assert.deepEqual(got, want, name);
}

describe('a Python grpcio client (protoc-generated stubs) reads nodal\'s Observer API', () => {
  const dir = tempDir('nodal-pyclient-');
  const stubs = join(dir, 'stubs');
  let tools: Tools;
  const storeA = new FlowStore();
  const storeB = new FlowStore();
  let agentA: ObserverServer;
  let agentB: ObserverServer;
  let relay: RelayServer;

  before(async () => {
    tools = findTools();
    mkdirSync(stubs);
    generateStubs(tools, stubs);
    storeA.add(f1);
    storeA.add(f2);
    storeB.add(f3);
    storeB.add(f4);
    storeB.add(f5);
    agentA = await startObserver({ store: storeA, node: 'node-a', tcp: '127.0.0.1:0', logger: quiet });
    agentB = await startObserver({ store: storeB, node: 'node-b', tcp: '127.0.0.1:0', logger: quiet });
    const agents = [{ node: 'node-a', address: agentA.addresses[0]! }, { node: 'node-b', address: agentB.addresses[0]! }];
    relay = await startRelay({ agents: () => agents, tcp: '127.0.0.1:0', logger: quiet, connectTimeoutMs: 2000 });
  });
  after(async () => {
    await relay?.close();
    await agentA?.close();
    await agentB?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('from an agent: GetFlows, every filled field as stored; number; ServerStatus; GetNodes', async () => {
    const got = await readWithPython(tools, stubs, agentA.addresses[0]!, [
      { name: 'all', method: 'GetFlows', request: {} },
      { name: 'last1', method: 'GetFlows', request: { number: 1 } },
      { name: 'status', method: 'ServerStatus' },
      { name: 'nodes', method: 'GetNodes' },
    ]);
    assert.equal(got.all!.length, 2, JSON.stringify(got.all));
    assertResponse(got.all![0], 'f1');
    assertResponse(got.all![1], 'f2');
    assert.deepEqual(uuidsOf(got.last1 as Msg[]), [f2.uuid]);

    const s = got.status!;
    assert.equal(s.num_flows, '2');
    assert.equal(s.max_flows, String(storeA.capacity));
    assert.equal(s.seen_flows, '2');
    assert.match(s.uptime_ns, /^\d+$/);
    assert.equal(s.version, nodalVersion());

    const nodes = got.nodes!.nodes as Msg[];
    assert.equal(nodes.length, 1);
    const { uptime_ns: uptime, ...node } = nodes[0]!;
    assert.match(uptime, /^\d+$/);
    assert.deepEqual(node, {
      name: 'node-a', version: nodalVersion(), address: agentA.addresses[0], state: 'NODE_CONNECTED', tls: {},
      num_flows: '2', max_flows: String(storeA.capacity), seen_flows: '2',
    });
  });

  it('a flow the agent made from a kernel verdict reads back the same way', async () => {
    const got = await readWithPython(tools, stubs, agentB.addresses[0]!, [{ name: 'all', method: 'GetFlows', request: {} }]);
    assert.deepEqual(uuidsOf(got.all as Msg[]), [f3.uuid, f4.uuid, f5.uuid]);
    assertResponse(got.all![1], 'f4');
  });

  it('from the relay: both nodes merged in time order, each flow as its agent stored it', async () => {
    const got = await readWithPython(tools, stubs, relay.addresses[0]!, [{ name: 'all', method: 'GetFlows', request: {} }]);
    const all = got.all as Msg[];
    const status = all.filter((r) => r.node_status);
    assert.equal(status.length, 1, JSON.stringify(status));
    assert.deepEqual(status[0]!.node_status, { state_change: 'NODE_CONNECTED', node_names: ['node-a', 'node-b'] });
    assert.equal(status[0]!.node_name, 'nodal-relay');
    const flows = flowsOf(all);
    assert.equal(flows.length, 5);
    ['f1', 'f2', 'f3', 'f4', 'f5'].forEach((name, i) => assertResponse(flows[i], name));
  });

  it('from the relay: whitelist and blacklist filters, number, written as protojson by the client', async () => {
    const got = await readWithPython(tools, stubs, relay.addresses[0]!, [
      { name: 'dropped', method: 'GetFlows', request: { whitelist: [{ verdict: ['DROPPED'] }] } },
      { name: 'fromFrontend', method: 'GetFlows', request: { whitelist: [{ source_pod: ['frontend/'] }] } },
      { name: 'http2xx', method: 'GetFlows', request: { whitelist: [{ http_status_code: ['2+'] }] } },
      { name: 'either', method: 'GetFlows', request: { whitelist: [{ destination_ip: ['fd00::/64'] }, { protocol: ['udp'] }] } },
      { name: 'notNodeA', method: 'GetFlows', request: { blacklist: [{ node_name: ['node-a'] }] } },
      { name: 'last2', method: 'GetFlows', request: { number: 2 } },
      { name: 'first2', method: 'GetFlows', request: { number: 2, first: true } },
      { name: 'deniedSpan', method: 'GetFlows', request: { whitelist: [{ verdict: ['DROPPED'], traffic_direction: ['EGRESS'] }], since: '2023-11-14T22:13:21Z' } },
      { name: 'badFilter', method: 'GetFlows', request: { whitelist: [{ source_ip: ['not-an-ip'] }] } },
    ]);
    assert.deepEqual(uuidsOf(got.dropped as Msg[]), [f1.uuid, f5.uuid]);
    assert.deepEqual(uuidsOf(got.fromFrontend as Msg[]), [f2.uuid, f4.uuid, f5.uuid]);
    assert.deepEqual(uuidsOf(got.http2xx as Msg[]), [f3.uuid]);
    assert.deepEqual(uuidsOf(got.either as Msg[]), [f1.uuid, f5.uuid]);
    assert.deepEqual(uuidsOf(got.notNodeA as Msg[]), [f3.uuid, f4.uuid, f5.uuid]);
    assert.deepEqual(uuidsOf(got.last2 as Msg[]), [f4.uuid, f5.uuid]);
    assert.deepEqual(uuidsOf(got.first2 as Msg[]), [f1.uuid, f2.uuid]);
    assert.deepEqual(uuidsOf(got.deniedSpan as Msg[]), [f5.uuid]);
    assert.match(got.badFilter!.error, /^INVALID_ARGUMENT: .*source_ip/);
  });

  it('from the relay: ServerStatus adds the nodes up; GetNodes lists both', async () => {
    const got = await readWithPython(tools, stubs, relay.addresses[0]!, [
      { name: 'status', method: 'ServerStatus' },
      { name: 'nodes', method: 'GetNodes' },
    ]);
    const s = got.status!;
    assert.equal(s.num_flows, '5');
    assert.equal(s.seen_flows, '5');
    assert.equal(s.max_flows, String(storeA.capacity + storeB.capacity));
    assert.equal(s.num_connected_nodes, 2);
    assert.equal(s.num_unavailable_nodes ?? 0, 0);
    assert.equal(s.unavailable_nodes, undefined);
    const nodes = got.nodes!.nodes as Msg[];
    assert.deepEqual(nodes.map((n) => [n.name, n.state, n.num_flows]), [['node-a', 'NODE_CONNECTED', '2'], ['node-b', 'NODE_CONNECTED', '3']]);
  });
});
