import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { AgentControlClient, startControlPlane, type ControlPlane, type Snapshot } from '../../control/index.ts';
import { writeJsonAtomic } from '../../control/persist.ts';
import { SnapshotStore } from '../../control/grpc/persisted.ts';
import { loadAgentControl, snapshotFromWire, snapshotToWire, type WireSnapshotMessage } from '../../control/grpc/proto.ts';
import { TempDirs, Waiter, configDirWithCluster, silent, write } from '../fixtures/control/helpers.ts';

const tmp = new TempDirs();
const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => {});
  tmp.cleanup();
});

const denyPolicy = (name: string) => `apiVersion: nodal.io/v1alpha1
kind: MeshPolicy
metadata: { name: ${name}, namespace: demo }
spec:
  action: DENY
  selector: { matchLabels: { app: api } }
  rules:
    - from: [{ source: { principals: [cluster.local/ns/demo/sa/client] } }]
`;

async function plane(configDir: string, stateDir: string, listen = '127.0.0.1:0'): Promise<{ cp: ControlPlane; changed: Waiter }> {
  const cp = await startControlPlane({ configDir, stateDir, listen, logger: silent });
  closers.push(() => cp.close());
  const changed = new Waiter();
  cp.on('change', changed.notify);
  return { cp, changed };
}

interface Agent { client: AgentControlClient; applied: Snapshot[]; waiter: Waiter }

function agent(address: string, node: string, stateDir: string, o: { key?: () => string; reject?: (s: Snapshot) => string | undefined } = {}): Agent {
  const applied: Snapshot[] = [];
  const waiter = new Waiter();
  const client = new AgentControlClient({
    address, node, stateDir, logger: silent,
    hello: () => ({ wgPublicKey: o.key?.() ?? '' }),
    apply: (s) => {
      const why = o.reject?.(s);
      if (why) {
        waiter.notify();
        throw new Error(why);
      }
      applied.push(s);
      waiter.notify();
    },
  });
  closers.push(() => client.close());
  client.start();
  return { client, applied, waiter };
}

const agentStatus = (cp: ControlPlane, node: string) => cp.state().agents.find((a) => a.node === node);
const acked = (cp: ControlPlane, node: string) => () => agentStatus(cp, node)?.ackedVersion === cp.snapshotFor(node).version;

describe('snapshot protobuf', () => {
  it('round-trips every field of the model, optional ones staying absent', () => {
    const full: Snapshot = {
      version: 42, node: 'node-a', trustDomain: 'example.org',
      nodes: [{ name: 'node-a', underlayIp: '192.168.0.1', tunnelIp: '10.99.0.1', podCidrs: ['10.244.1.0/24', 'fd00::/64'], wgPublicKey: 'K=', proxyIp: '10.244.1.1' }],
      identities: [{ id: 256, namespace: 'demo', serviceAccount: 'api', labels: { app: 'api', tier: 'be' }, spiffeId: 'spiffe://example.org/ns/demo/sa/api' }],
      endpoints: [
        { namespace: 'demo', name: 'api-1', uid: 'u1', node: 'node-a', ip: '10.244.1.5', identity: 256, labels: { app: 'api' }, serviceAccount: 'api', enrolled: true, defaultDenyPolicyId: 3, workload: { kind: 'Deployment', name: 'api' } },
        { namespace: 'demo', name: 'api-2', uid: 'u2', node: 'node-b', ip: '10.244.2.5', identity: 256, labels: {}, serviceAccount: 'api', enrolled: false },
      ],
      services: [{
        namespace: 'demo', name: 'api', id: 7, clusterIp: '10.96.0.10', identity: 256,
        ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', appProtocol: 'http' }, { port: 53, targetPort: 53, protocol: 'UDP' }],
        backends: [{ ip: '10.244.1.5', node: 'node-a', identity: 256, pod: 'api-1' }],
      }],
      policies: [{
        id: 3, namespace: 'demo', name: 'p', action: 'AUDIT', selects: [256, 257],
        rules: [{
          index: 0,
          from: [{ identities: [], principals: ['a'], namespaces: ['b'], notPrincipals: ['c'], notNamespaces: ['d'] }, { any: true, identities: [256] }],
          to: [{ ports: [80], notPorts: [81], methods: ['GET'], notMethods: ['PUT'], paths: ['/x*'], notPaths: ['/y'], hosts: ['h'] }, {}],
          when: [{ key: 'k', values: ['v'] }, { key: 'k2', notValues: ['n'] }],
        }, { index: 1, from: [], to: [], when: [] }],
      }],
      l4: [
        { direction: 'EGRESS', localIdentity: 256, peerIdentity: 257, port: 0, action: 'DENY', policyId: 3, rule: 0 },
        { direction: 'INGRESS', localIdentity: 256, peerIdentity: 0, port: 53, proto: 'UDP', action: 'ALLOW', policyId: 0 },
        { direction: 'EGRESS', localIdentity: 256, peerIdentity: 258, port: 0, action: 'ALLOW', policyId: 0, rule: 0, toProxy: true },
      ],
      guards: [{ identity: 257, policyId: 3 }, { identity: 258, policyId: 4 }],
    };
    const method = loadAgentControl().definition.Stream!;
    const bytes = method.responseSerialize(snapshotToWire(full));
    assert.deepEqual(snapshotFromWire(method.responseDeserialize(bytes) as WireSnapshotMessage), full);
  });

  it('refuses a snapshot with an unknown enum value', () => {
    const wire = snapshotToWire({ version: 1, node: 'n', trustDomain: 't', nodes: [], identities: [], endpoints: [], services: [], policies: [], l4: [] });
    (wire.snapshot.l4 as unknown[]) = [{ direction: 'DIRECTION_UNSPECIFIED', action: 'L4_ACTION_DENY' }];
    assert.throws(() => snapshotFromWire(wire), { code: 'NODAL_ERR_SNAPSHOT_DECODE' });
  });
});

describe('agent control stream', { timeout: 30_000 }, () => {
  it('sends the node its snapshot, intact through protobuf, and pushes directory changes', async () => {
    const configDir = configDirWithCluster(tmp);
    const { cp, changed } = await plane(configDir, tmp.make());
    assert.match(cp.address, /^127\.0\.0\.1:\d+$/);
    const agentDir = tmp.make();
    const a = agent(cp.address, 'node-a', agentDir);
    await changed.until(acked(cp, 'node-a'));
    assert.equal(a.applied.length, 1);
    assert.deepEqual(a.applied[0], cp.snapshotFor('node-a'));
    assert.ok(a.applied[0]!.l4.length > 0);
    assert.equal(a.client.connected(), true);

    write(configDir, 'policy.yaml', denyPolicy('no-client'));
    await a.waiter.until(() => a.applied.some((s) => s.policies.some((p) => p.name === 'no-client')));
    const latest = a.applied.at(-1)!;
    assert.ok(latest.version > a.applied[0]!.version);
    assert.ok(latest.l4.some((e) => e.direction === 'EGRESS' && e.action === 'DENY' && e.policyId === latest.policies[0]!.id && e.rule === 0));
    await changed.until(acked(cp, 'node-a'));
    assert.deepEqual(a.client.current(), cp.snapshotFor('node-a'));
    assert.deepEqual(new SnapshotStore(agentDir).load(), latest);
  });

  it('publishes a node\'s new WireGuard key to the other nodes and keeps it across a restart', async () => {
    const configDir = configDirWithCluster(tmp);
    const stateDir = tmp.make();
    const { cp, changed } = await plane(configDir, stateDir);
    const a = agent(cp.address, 'node-a', tmp.make());
    await changed.until(acked(cp, 'node-a'));
    const b = agent(cp.address, 'node-b', tmp.make(), { key: () => 'B-KEY=' });
    await a.waiter.until(() => a.applied.some((s) => s.nodes.find((n) => n.name === 'node-b')?.wgPublicKey === 'B-KEY='));
    await changed.until(acked(cp, 'node-b'));
    assert.equal(b.client.current()!.nodes.find((n) => n.name === 'node-b')!.wgPublicKey, 'B-KEY=');
    await cp.close();
    const again = await plane(configDir, stateDir);
    assert.equal(again.cp.state().nodes.find((n) => n.name === 'node-b')!.wgPublicKey, 'B-KEY=');
  });

  it('NACKs a snapshot the agent cannot apply and keeps the previous one', async () => {
    const configDir = configDirWithCluster(tmp);
    const { cp, changed } = await plane(configDir, tmp.make());
    const agentDir = tmp.make();
    const a = agent(cp.address, 'node-a', agentDir, { reject: (s) => (s.policies.some((p) => p.name === 'poison') ? 'map update: E2BIG (policy map full?)' : undefined) });
    await changed.until(acked(cp, 'node-a'));
    const good = a.client.current()!;
    write(configDir, 'poison.yaml', denyPolicy('poison'));
    await changed.until(() => agentStatus(cp, 'node-a')?.lastNack !== undefined);
    const status = agentStatus(cp, 'node-a')!;
    assert.equal(status.lastNack!.error, 'map update: E2BIG (policy map full?)');
    assert.equal(status.lastNack!.version, cp.snapshotFor('node-a').version);
    assert.equal(status.ackedVersion, good.version);
    assert.deepEqual(a.client.current(), good);
    assert.equal(new SnapshotStore(agentDir).load()!.version, good.version);
  });

  it('keeps enforcing the persisted snapshot while the control plane is down, and resumes when it returns', async () => {
    const configDir = configDirWithCluster(tmp);
    const cpState = tmp.make();
    const agentDir = tmp.make();
    const first = await plane(configDir, cpState);
    const address = first.cp.address;
    const a1 = agent(address, 'node-a', agentDir);
    await first.changed.until(acked(first.cp, 'node-a'));
    const v1 = a1.client.current()!.version;
    await a1.client.close();
    await first.cp.close();

    // a restarted agent, control plane still down: the last good snapshot is applied first
    const a2 = agent(address, 'node-a', agentDir);
    await a2.waiter.until(() => a2.applied.length === 1);
    assert.equal(a2.applied[0]!.version, v1);
    assert.equal(a2.client.connected(), false);

    const second = await plane(configDir, cpState, address);
    await second.changed.until(() => agentStatus(second.cp, 'node-a')?.connected === true);
    // resumption: same content, same version, nothing resent
    assert.equal(second.cp.snapshotFor('node-a').version, v1);
    assert.equal(agentStatus(second.cp, 'node-a')!.sentVersion, v1);
    write(configDir, 'policy.yaml', denyPolicy('later'));
    await a2.waiter.until(() => a2.applied.some((s) => s.policies.some((p) => p.name === 'later')));
    assert.ok(a2.applied.at(-1)!.version > v1);
    assert.equal(a2.applied.length, 2);
    assert.equal(a2.client.connected(), true);
  });

  it('never lets versions go backwards across a control-plane restart', async () => {
    const configDir = configDirWithCluster(tmp);
    const stateDir = tmp.make();
    const one = await plane(configDir, stateDir);
    const s1 = one.cp.snapshotFor('node-a');
    const v1 = s1.version;
    write(configDir, 'policy.yaml', denyPolicy('p1'));
    await one.changed.until(() => one.cp.snapshotFor('node-a').version > v1);
    const v2 = one.cp.snapshotFor('node-a').version;
    await one.cp.close();

    const two = await plane(configDir, stateDir);
    assert.equal(two.cp.snapshotFor('node-a').version, v2);
    assert.ok(two.cp.state().version >= v2);
    rmSync(join(configDir, 'policy.yaml'));
    await two.changed.until(() => two.cp.snapshotFor('node-a').version > v2);
    // the content is what v1 was, but its version is new
    const v3 = two.cp.snapshotFor('node-a').version;
    assert.ok(v3 > v2);
    assert.deepEqual({ ...two.cp.snapshotFor('node-a'), version: 0 }, { ...s1, version: 0 });
  });

  it('moves past a version an agent holds that this control plane never issued (lost state)', async () => {
    const agentDir = tmp.make();
    const { cp, changed } = await plane(configDirWithCluster(tmp), tmp.make());
    const held: Snapshot = { ...cp.snapshotFor('node-a'), version: 1000 };
    // the layout agents wrote before sections had files of their own: the whole snapshot in snapshot.json
    writeJsonAtomic(join(agentDir, 'snapshot.json'), held);
    const a = agent(cp.address, 'node-a', agentDir);
    await changed.until(acked(cp, 'node-a'));
    assert.equal(a.applied[0]!.version, 1000);
    assert.ok(a.client.current()!.version > 1000);
    assert.ok(cp.state().version > 1000);
  });
});
