import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { desiredFromSnapshot } from '../../agent/enrollment.ts';
import type { Snapshot } from '../../control/api/types.ts';

const snapshot: Snapshot = {
  version: 3, node: 'node-1', trustDomain: 'cluster.local',
  nodes: [{ name: 'node-1', underlayIp: '10.10.0.11', tunnelIp: '10.99.0.1', podCidrs: ['10.244.1.0/24'], wgPublicKey: '', proxyIp: '10.244.1.1' }],
  identities: [],
  endpoints: [{ namespace: 'demo', name: 'web', uid: 'u1', node: 'node-1', ip: '10.244.1.5', identity: 300, labels: {}, serviceAccount: 'web', enrolled: true }],
  services: [], policies: [],
  l4: [{ direction: 'EGRESS', localIdentity: 300, peerIdentity: 301, port: 0, action: 'ALLOW', policyId: 0, rule: 0, toProxy: true }],
  guards: [{ identity: 301, policyId: 5 }],
  cidrIdentities: [{ cidr: '203.0.113.0/24', identity: 900 }],
};

describe('enrollment: the desired datapath state from a snapshot', () => {
  it('puts pods, node addresses and NetworkPolicy ipBlock prefixes in the ipcache', () => {
    const r = desiredFromSnapshot(snapshot, 'node-1', () => [42n]);
    const ipcache = new Map(r.desired.ipcache.map((e) => [e.cidr, e.identity]));
    assert.equal(ipcache.get('10.244.1.5/32'), 300);
    assert.equal(ipcache.get('10.10.0.11/32'), 1, 'node addresses are the host');
    assert.equal(ipcache.get('203.0.113.0/24'), 900, 'an ipBlock prefix carries its CIDR identity');
    assert.deepEqual(r.enrolled, ['demo/web']);
  });

  it('hands the guards and the admit entries that go with them to the datapath', () => {
    const r = desiredFromSnapshot(snapshot, 'node-1', () => [42n]);
    assert.deepEqual(r.desired.guards, [{ identity: 301, policyId: 5 }]);
    assert.deepEqual(r.desired.policy, snapshot.l4);
  });
});
