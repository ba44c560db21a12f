// The pure half of the WireGuard peer set: validation, allowed IPs, diffing against the
// device, the one `wg set` that applies a diff, and `wg show dump` parsing.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  allowedIpsOf, diffPeers, parseCidr, parseDump, validatePeers, wgSetArgs, PERSISTENT_KEEPALIVE_S,
  type PeerStatus, type WireGuardPeer,
} from '../../agent/wireguard/peers.ts';
import { WireGuardError } from '../../agent/wireguard/errors.ts';

const K = {
  own: 'hPiNrylwkXptv0O4D9fnHyfw0dTkMOlYjynxVF+MnQY=',
  a: 'wtfBMnCVvfG8Lxnb8o5GIsHHt2Ivz40vfpvYs8sulRM=',
  b: '8e0gVAGDOfm+OAcm4uUOB03K+YCfJc4+wrT8RgAlcns=',
  c: '6ReQ7z9Zv8EO1Zx9vzCicysl6yzy8Lm226sq4Gc7B2g=',
};
const peer = (node: string, publicKey: string, i: number, extra: Partial<WireGuardPeer> = {}): WireGuardPeer => ({
  node, publicKey, endpoint: `192.168.251.${10 + i}:51871`, tunnelIp: `10.99.0.${i}`, podCidrs: [`10.98.${i}.0/24`], ...extra,
});
const onDevice = (p: WireGuardPeer, extra: Partial<PeerStatus> = {}): PeerStatus => ({
  publicKey: p.publicKey, endpoint: p.endpoint, allowedIps: allowedIpsOf(p), latestHandshake: 0, rxBytes: 0, txBytes: 0,
  persistentKeepalive: PERSISTENT_KEEPALIVE_S, ...extra,
});

describe('wireguard allowed IPs', () => {
  it('are the tunnel address as a host prefix plus the pod CIDRs, canonical and deduplicated', () => {
    assert.deepEqual(allowedIpsOf({ tunnelIp: '10.99.0.2', podCidrs: ['10.98.2.0/24', '10.98.2.0/24', '10.97.0.0/16'] }),
      ['10.99.0.2/32', '10.98.2.0/24', '10.97.0.0/16']);
    assert.deepEqual(allowedIpsOf({ tunnelIp: 'fd00:0:0::2', podCidrs: ['FD00:0098:0002::/64'] }), ['fd00::2/128', 'fd00:98:2::/64']);
  });

  it('parseCidr rejects host bits, bad lengths and non-addresses', () => {
    assert.deepEqual(parseCidr('10.98.2.0/24'), { family: 4, prefix: 24, text: '10.98.2.0/24' });
    assert.equal(parseCidr('10.0.0.1').text, '10.0.0.1/32');
    assert.throws(() => parseCidr('10.98.2.1/24'), /host bits/);
    assert.throws(() => parseCidr('10.98.2.0/33'), /prefix length/);
    assert.throws(() => parseCidr('10.98.2.0/'), /prefix length/);
    assert.throws(() => parseCidr('fd00::1/64'), /host bits/);
    assert.throws(() => parseCidr('node-2/24'), /not an IP prefix/);
  });
});

describe('wireguard peer validation', () => {
  const reject = (peers: WireGuardPeer[], re: RegExp) =>
    assert.throws(() => validatePeers(peers, K.own), (e: WireGuardError) => e.code === 'NODAL_ERR_WG_PEERS' && re.test(e.message));

  it('accepts a good list and canonicalizes it', () => {
    const v = validatePeers([peer('n2', K.a, 2, { endpoint: '[FD00::0:12]:51871' })], K.own);
    assert.deepEqual(v, [{ node: 'n2', publicKey: K.a, endpoint: '[fd00::12]:51871', allowedIps: ['10.99.0.2/32', '10.98.2.0/24'] }]);
  });

  it('rejects the whole list, naming the node and the field', () => {
    reject([peer('n2', 'not-a-key', 2)], /peer "n2": public key "not-a-key" is not a WireGuard key/);
    reject([peer('n2', K.own, 2)], /peer "n2": has this node's own public key/);
    reject([peer('n2', K.a, 2), peer('n3', K.a, 3)], /peer "n3": has the same public key as peer "n2"/);
    reject([peer('n2', K.a, 2, { endpoint: '192.168.251.12' })], /peer "n2": endpoint "192.168.251.12" is not ip:port/);
    reject([peer('n2', K.a, 2, { endpoint: 'node-2:51871' })], /is not ip:port/);
    reject([peer('n2', K.a, 2, { endpoint: '192.168.251.12:0' })], /is not ip:port/);
    reject([peer('n2', K.a, 2, { tunnelIp: '10.99.0' })], /peer "n2": "10.99.0" is not an IP address/);
    reject([peer('n2', K.a, 2, { podCidrs: ['10.98.2.7/24'] })], /peer "n2": .*host bits/);
    reject([peer('n2', K.a, 2), peer('n3', K.b, 3, { podCidrs: ['10.98.2.0/24'] })], /peer "n3": 10.98.2.0\/24 is also claimed by peer "n2"/);
  });
});

describe('wireguard peer diff', () => {
  const p2 = peer('n2', K.a, 2);
  const p3 = peer('n3', K.b, 3);
  const p4 = peer('n4', K.c, 4);

  it('adds missing peers, removes unknown ones, leaves equal ones alone', () => {
    const d = diffPeers([onDevice(p2), onDevice(p3)], validatePeers([p2, p4], K.own));
    assert.deepEqual(d.remove, [K.b]);
    assert.deepEqual(d.upsert.map((p) => p.node), ['n4']);
    assert.equal(d.unchanged, 1);
  });

  it('updates a peer whose endpoint, allowed IPs or keepalive differ', () => {
    const want = validatePeers([p2], K.own);
    assert.equal(diffPeers([onDevice(p2, { endpoint: '192.168.251.99:51871' })], want).upsert.length, 1, 'endpoint');
    assert.equal(diffPeers([onDevice(p2, { allowedIps: ['10.99.0.2/32'] })], want).upsert.length, 1, 'allowed IPs');
    assert.equal(diffPeers([onDevice(p2, { persistentKeepalive: 0 })], want).upsert.length, 1, 'keepalive');
    assert.equal(diffPeers([onDevice(p2, { endpoint: undefined })], want).upsert.length, 1, 'no endpoint yet');
    // order of allowed IPs does not matter (the device may sort them)
    assert.equal(diffPeers([onDevice(p2, { allowedIps: ['10.98.2.0/24', '10.99.0.2/32'] })], want).unchanged, 1);
  });

  it('a node that changed its key is one removal and one addition', () => {
    const d = diffPeers([onDevice(p2)], validatePeers([{ ...p2, publicKey: K.c }], K.own));
    assert.deepEqual(d.remove, [K.a]);
    assert.deepEqual(d.upsert.map((p) => p.publicKey), [K.c]);
  });

  it('builds one wg set for the whole diff, and none when nothing changes', () => {
    const d = diffPeers([onDevice(p3)], validatePeers([p2], K.own));
    assert.deepEqual(wgSetArgs('nodal-wg0', d), [
      'set', 'nodal-wg0',
      'peer', K.b, 'remove',
      'peer', K.a, 'endpoint', '192.168.251.12:51871', 'allowed-ips', '10.99.0.2/32,10.98.2.0/24', 'persistent-keepalive', '25',
    ]);
    assert.equal(wgSetArgs('nodal-wg0', diffPeers([onDevice(p2)], validatePeers([p2], K.own))), undefined);
  });
});

describe('wg show dump parsing', () => {
  const PRIV = 'MCcy2SCnap7ZJCCbWKbqYZEaqP9cJZsz4vGDi0sqrns=';
  const dump = [
    `${PRIV}\t6ReQ7z9Zv8EO1Zx9vzCicysl6yzy8Lm226sq4Gc7B2g=\t51871\toff`,
    `${K.a}\t(none)\t192.168.251.12:51871\t10.99.0.2/32,10.98.2.0/24\t1795306592\t276\t352\t25`,
    `${K.b}\t(none)\t(none)\t(none)\t0\t0\t0\toff`,
    '',
  ].join('\n');

  it('reads peers and drops the interface line (it holds the private key)', () => {
    const peers = parseDump(dump);
    assert.deepEqual(peers, [
      { publicKey: K.a, endpoint: '192.168.251.12:51871', allowedIps: ['10.99.0.2/32', '10.98.2.0/24'], latestHandshake: 1795306592, rxBytes: 276, txBytes: 352, persistentKeepalive: 25 },
      { publicKey: K.b, allowedIps: [], latestHandshake: 0, rxBytes: 0, txBytes: 0, persistentKeepalive: 0 },
    ]);
    assert.equal(JSON.stringify(peers).includes(PRIV), false);
  });

  it('an interface without peers is an empty list', () => {
    assert.deepEqual(parseDump(`${PRIV}\tpub\t51871\toff\n`), []);
    assert.deepEqual(parseDump(''), []);
  });

  it('a malformed line is an error that quotes no line', () => {
    assert.throws(() => parseDump(`${PRIV}\tx\t1\toff\n${K.a}\t(none)\t1.2.3.4:1\n`), (e: Error) => {
      assert.match(e.message, /peer line 1 has 3 fields, expected 8/);
      assert.equal(e.message.includes(PRIV), false);
      return true;
    });
    assert.throws(() => parseDump(`${PRIV}\tx\t1\toff\n${K.a}\t(none)\t(none)\t(none)\tsoon\t0\t0\toff\n`), /latest handshake is not a count/);
  });
});
