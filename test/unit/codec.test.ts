import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeVerdictEvent } from '../../agent/datapath/index.ts';
import { nodalConfig, verdictEvent } from '../../agent/datapath/codec.ts';

describe('codecs', () => {
  it('decodes a verdict event into the mesh\'s words', () => {
    const raw = verdictEvent.encode({
      ts_ns: process.hrtime.bigint(), cookie: 42n, cgroup_id: 7n, saddr: '10.0.0.2', daddr: '10.96.0.10',
      sport: 40000, dport: 80, family: 4, proto: 6, verdict: 2, reason: 1, hook: 1, direction: 1, rule: 3,
      endpoint_id: 5, src_identity: 300, dst_identity: 301, policy_id: 9,
    });
    const e = decodeVerdictEvent(raw);
    assert.equal(e.verdict, 'DROPPED');
    assert.equal(e.reason, 'POLICY_DENY');
    assert.equal(e.hook, 'connect4');
    assert.equal(e.direction, 'EGRESS');
    assert.deepEqual(e.destination, { ip: '10.96.0.10', port: 80 });
    assert.equal(e.policyId, 9);
    // monotonic kernel time becomes wall time close to now
    const nowNs = BigInt(Date.now()) * 1_000_000n;
    assert.ok(e.timeNs > nowNs - 5_000_000_000n && e.timeNs <= nowNs + 5_000_000_000n);
  });

  it('encodes the proxy tunable with the address bytes in network order', () => {
    const b = nodalConfig.encode({ proxy_addr4: '10.77.0.1', proxy_addr6: '::', proxy_port: 15001 });
    assert.equal(b.length, 24);
    assert.deepEqual([...b.subarray(0, 4)], [10, 77, 0, 1]);
    assert.equal(b.readUInt16LE(20), 15001);
  });
});
