import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { addrToBytes, bytesToAddr, parseCidr } from '../../agent/datapath/index.ts';

describe('datapath addresses', () => {
  it('stores IPv4 as IPv4-mapped IPv6 and reads it back as dotted quad', () => {
    const b = addrToBytes('10.1.2.3');
    assert.equal(b.toString('hex'), '00000000000000000000ffff0a010203');
    assert.equal(bytesToAddr(b), '10.1.2.3');
  });

  it('round-trips IPv6 in canonical compressed form', () => {
    for (const ip of ['fd00::1', '2001:db8::8:800:200c:417a', '::1', '::', 'fe80::1:2']) {
      assert.equal(bytesToAddr(addrToBytes(ip)), ip);
    }
    assert.equal(bytesToAddr(addrToBytes('::ffff:192.0.2.1')), '192.0.2.1');
  });

  it('rejects what is not an address with a clear error', () => {
    assert.throws(() => addrToBytes('10.0.0'), /not an IP address: "10.0.0"/);
  });

  it('turns CIDRs into LPM keys over 16 bytes with host bits cleared', () => {
    const v4 = parseCidr('10.244.1.77/24');
    assert.equal(v4.prefixlen, 120);
    assert.equal(bytesToAddr(v4.addr), '10.244.1.0');
    assert.equal(parseCidr('10.0.0.1').prefixlen, 128);
    assert.equal(parseCidr('fd00:1::5/64').prefixlen, 64);
    assert.equal(bytesToAddr(parseCidr('fd00:1::5/64').addr), 'fd00:1::');
    assert.throws(() => parseCidr('10.0.0.0/33'), /bad prefix length in "10.0.0.0\/33": expected 0..32/);
  });
});
