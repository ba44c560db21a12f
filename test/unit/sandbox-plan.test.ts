import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  allocateClusterIp, allocatePodIp, cidrContains, planNode, planNodes, podHostLink, podNetnsName, schedule, shortUid,
} from '../../cli/dev/plan.ts';
import { SandboxErrorCode } from '../../cli/dev/errors.ts';

describe('sandbox plan: nodes', () => {
  it('names and addresses node i the way the agent and control plane expect', () => {
    assert.deepEqual(planNode(3), {
      name: 'node-3', index: 3, netns: 'nodal-node-3', underlayLink: 'vn-node-3', underlayIp: '10.10.0.13',
      tunnelIp: '10.99.0.3', podCidr: '10.244.3.0/24', proxyIp: '10.244.3.1',
    });
  });

  it('plans 1..8 nodes and refuses other counts with the range in the message', () => {
    assert.equal(planNodes(2).length, 2);
    assert.equal(planNodes(8).at(-1)!.name, 'node-8');
    for (const bad of [0, 9, 1.5, Number.NaN]) {
      assert.throws(() => planNodes(bad), (e: Error & { code?: string }) => e.code === SandboxErrorCode.SCHEDULE && /from 1 to 8/.test(e.message));
    }
  });

  it('derives pod netns and veth names that fit the 15-byte interface limit', () => {
    const uid = '9c2af80f-9bf6-4f94-8443-1b6bd52e98bc';
    assert.equal(shortUid(uid), '9c2af80f');
    assert.equal(podNetnsName(uid), 'nodal-pod-9c2af80f');
    assert.equal(podHostLink(uid), 'vp9c2af80f');
    assert.ok(podHostLink(uid).length <= 15);
    assert.throws(() => shortUid('not-a-uid'), /not a uid/);
  });
});

describe('sandbox plan: pod addresses', () => {
  it('starts at .2 (the bridge holds .1) and takes the lowest free address', () => {
    assert.equal(allocatePodIp('10.244.1.0/24', []), '10.244.1.2');
    assert.equal(allocatePodIp('10.244.1.0/24', ['10.244.1.2', '10.244.1.3']), '10.244.1.4');
  });

  it('reuses a freed address', () => {
    assert.equal(allocatePodIp('10.244.1.0/24', ['10.244.1.2', '10.244.1.4']), '10.244.1.3');
  });

  it('honours a requested address inside the CIDR and refuses taken, reserved or foreign ones', () => {
    assert.equal(allocatePodIp('10.244.2.0/24', [], '10.244.2.10'), '10.244.2.10');
    assert.throws(() => allocatePodIp('10.244.2.0/24', ['10.244.2.10'], '10.244.2.10'), /already in use/);
    assert.throws(() => allocatePodIp('10.244.2.0/24', [], '10.244.1.10'), /not in the node's pod CIDR 10.244.2.0\/24/);
    assert.throws(() => allocatePodIp('10.244.2.0/24', [], '10.244.2.1'), /reserved/);
    assert.throws(() => allocatePodIp('10.244.2.0/24', [], '10.244.2.255'), /reserved/);
  });

  it('says so when the pool is exhausted', () => {
    const all = Array.from({ length: 253 }, (_, i) => `10.244.1.${i + 2}`);
    assert.throws(() => allocatePodIp('10.244.1.0/24', all), (e: Error & { code?: string }) => e.code === SandboxErrorCode.SCHEDULE && /no free pod address/.test(e.message));
  });
});

describe('sandbox plan: cluster IPs', () => {
  it('gives a Service the same address every time, inside 10.96.0.0/16 and above the hand-picked /24', () => {
    const a = allocateClusterIp('demo', 'api', []);
    assert.equal(allocateClusterIp('demo', 'api', []), a);
    assert.ok(cidrContains('10.96.0.0/16', a));
    assert.ok(!cidrContains('10.96.0.0/24', a));
    assert.notEqual(allocateClusterIp('demo', 'web', []), a);
  });

  it('probes past an address another Service holds', () => {
    const a = allocateClusterIp('demo', 'api', []);
    const b = allocateClusterIp('demo', 'api', [a]);
    assert.notEqual(b, a);
    assert.ok(cidrContains('10.96.0.0/16', b));
  });
});

describe('sandbox plan: scheduling', () => {
  const nodes = planNodes(3);

  it('places a pod on the node it names', () => {
    assert.equal(schedule('node-2', nodes, new Map()).name, 'node-2');
  });

  it('refuses a node that does not exist, listing the ones that do', () => {
    assert.throws(() => schedule('node-9', nodes, new Map()), /"node-9" is not a sandbox node \(nodes: node-1, node-2, node-3\)/);
  });

  it('otherwise picks the node with the fewest pods, the lowest index on a tie', () => {
    assert.equal(schedule(undefined, nodes, new Map()).name, 'node-1');
    assert.equal(schedule(undefined, nodes, new Map([['node-1', 2], ['node-2', 1], ['node-3', 1]])).name, 'node-2');
    assert.equal(schedule(undefined, nodes, new Map([['node-1', 1], ['node-2', 1]])).name, 'node-3');
  });
});
