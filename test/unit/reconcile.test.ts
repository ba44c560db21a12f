import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { reconcileMap, reconcileTogether, type ReconcilableMap } from '../../agent/datapath/reconcile.ts';
import { encodeEndpoints, encodeGuards, encodePolicy } from '../../agent/datapath/state.ts';
import { endpointValue, guardKey, guardValue, policyValue } from '../../agent/datapath/codec.ts';

/** an in-memory map that records every write, standing in for a kernel map */
class FakeMap implements ReconcilableMap {
  readonly name: string;
  readonly log: string[];
  constructor(name = 'fake', log: string[] = []) {
    this.name = name;
    this.log = log;
  }
  readonly data = new Map<string, Buffer>();
  writes = 0;
  deletes = 0;
  keys(): Buffer[] { return [...this.data.keys()].map((k) => Buffer.from(k, 'hex')); }
  lookup(key: Buffer): Buffer | undefined { return this.data.get(key.toString('hex')); }
  update(key: Buffer, value: Buffer): void { this.writes++; this.log.push(`${this.name} write`); this.data.set(key.toString('hex'), Buffer.from(value)); }
  delete(key: Buffer): boolean { this.deletes++; this.log.push(`${this.name} delete`); return this.data.delete(key.toString('hex')); }
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

  it('encodes an admit-to-proxy entry and a guard with the policy a default deny names', () => {
    const [adm] = encodePolicy([{ direction: 'EGRESS', localIdentity: 300, peerIdentity: 301, port: 0, action: 'ALLOW', policyId: 0, toProxy: true }]).values();
    assert.deepEqual(policyValue.decode(adm!.value), { action: 1, flags: 2, rule: 0, policy_id: 0 });
    const [g] = encodeGuards([{ identity: 301, policyId: 5 }]).values();
    assert.deepEqual(g!.key, guardKey(301));
    assert.deepEqual(guardValue.decode(g!.value), { policy_id: 5 });
    assert.throws(() => encodeGuards([{ identity: 301, policyId: 5 }, { identity: 301, policyId: 6 }]), /identity 301 is guarded twice/);
  });

  it('writes admit entries before the guards that need them, and deletes guards before the entries that made exceptions to them', () => {
    const log: string[] = [];
    const policy = new FakeMap('policy', log), guards = new FakeMap('guards', log);
    const admit = encodePolicy([{ direction: 'EGRESS', localIdentity: 300, peerIdentity: 301, port: 0, action: 'ALLOW', policyId: 0, toProxy: true }]);
    // 301 becomes guarded, 300 admitted: the admit entry is in place before the guard
    reconcileTogether([[policy, admit], [guards, encodeGuards([{ identity: 301, policyId: 5 }])]]);
    assert.deepEqual(log, ['policy write', 'guards write']);
    // and no longer: the guard goes first, so 300 is never refused in between
    log.length = 0;
    const diffs = reconcileTogether([[policy, encodePolicy([])], [guards, encodeGuards([])]]);
    assert.deepEqual(log, ['guards delete', 'policy delete']);
    assert.deepEqual(diffs, [{ added: 0, updated: 0, removed: 1 }, { added: 0, updated: 0, removed: 1 }]);
  });
});
