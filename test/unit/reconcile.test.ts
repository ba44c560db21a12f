import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { reconcileMap, type ReconcilableMap } from '../../agent/datapath/reconcile.ts';
import { encodeEndpoints, encodePolicy } from '../../agent/datapath/state.ts';
import { endpointValue, policyValue } from '../../agent/datapath/codec.ts';

/** an in-memory map that records every write, standing in for a kernel map */
class FakeMap implements ReconcilableMap {
  readonly name = 'fake';
  readonly data = new Map<string, Buffer>();
  writes = 0;
  deletes = 0;
  keys(): Buffer[] { return [...this.data.keys()].map((k) => Buffer.from(k, 'hex')); }
  lookup(key: Buffer): Buffer | undefined { return this.data.get(key.toString('hex')); }
  update(key: Buffer, value: Buffer): void { this.writes++; this.data.set(key.toString('hex'), Buffer.from(value)); }
  delete(key: Buffer): boolean { this.deletes++; return this.data.delete(key.toString('hex')); }
}

describe('reconcile', () => {
  const eps = (ids: number[]) => encodeEndpoints(ids.map((i) => ({ cgroupId: BigInt(i), endpointId: i, identity: 256 + i, enrolled: true })));

  it('adds, updates and removes so the map holds exactly the desired entries', () => {
    const m = new FakeMap();
    assert.deepEqual(reconcileMap(m, eps([1, 2, 3])), { added: 3, updated: 0, removed: 0 });
    const next = encodeEndpoints([
      { cgroupId: 1n, endpointId: 1, identity: 257, enrolled: true },
      { cgroupId: 2n, endpointId: 2, identity: 999, enrolled: true },
      { cgroupId: 4n, endpointId: 4, identity: 260, enrolled: false },
    ]);
    assert.deepEqual(reconcileMap(m, next), { added: 1, updated: 1, removed: 1 });
    assert.equal(m.data.size, 3);
    const two = endpointValue.decode(m.lookup(Buffer.from('0200000000000000', 'hex'))!);
    assert.equal(two.identity, 999);
  });

  it('writes nothing when the state is unchanged', () => {
    const m = new FakeMap();
    reconcileMap(m, eps([1, 2]));
    m.writes = 0;
    assert.deepEqual(reconcileMap(m, eps([1, 2])), { added: 0, updated: 0, removed: 0 });
    assert.equal(m.writes, 0);
    assert.equal(m.deletes, 0);
  });

  it('encodes enrollment and default-deny flags the datapath reads', () => {
    const [entry] = encodeEndpoints([{ cgroupId: 9n, endpointId: 9, identity: 300, enrolled: true, egressPolicyId: 12 }]).values();
    const v = endpointValue.decode(entry!.value);
    assert.equal(v.flags, 1 | 2);
    assert.equal(v.egress_policy_id, 12);
  });

  it('encodes policy verdicts with the policy and rule that decide them', () => {
    const [entry] = encodePolicy([{ direction: 'INGRESS', localIdentity: 300, peerIdentity: 0, port: 8080, action: 'DENY', policyId: 77, rule: 3 }]).values();
    assert.deepEqual(policyValue.decode(entry!.value), { action: 2, flags: 0, rule: 3, policy_id: 77 });
    const [dflt] = encodePolicy([{ direction: 'EGRESS', localIdentity: 300, peerIdentity: 301, port: 0, action: 'DENY', policyId: 5, defaultDeny: true }]).values();
    assert.equal(policyValue.decode(dflt!.value).flags, 1);
  });
});
