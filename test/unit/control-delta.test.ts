// Snapshot deltas on the AgentControl stream: the server sends an agent that accepts them
// only the top-level sections that changed since the version it acked; the agent applies
// a delta only onto that very version and otherwise asks for the whole snapshot.
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { AgentControlClient, type Snapshot } from '../../control/index.ts';
import { encodeSnapshotMessage } from '../../control/grpc/encode.ts';
import { AgentControlServer } from '../../control/grpc/server.ts';
import {
  applyDelta, changedSections, deltaToWire, loadAgentControl, sectionEnum, sectionFingerprint, snapshotFromWire, snapshotToWire,
  type WireAgentMessage, type WireSnapshotMessage,
} from '../../control/grpc/proto.ts';
import { SnapshotStore } from '../../control/grpc/persisted.ts';
import { writeJsonAtomic } from '../../control/persist.ts';
import { TempDirs, silent } from '../fixtures/control/helpers.ts';

const tmp = new TempDirs();
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => {});
});
after(() => tmp.cleanup());

const method = loadAgentControl().definition.Stream!;
const wireBytes = (m: WireSnapshotMessage): number => method.responseSerialize(m).length;
/** what the wire hands the other side */
const overWire = (m: WireSnapshotMessage): WireSnapshotMessage => method.responseDeserialize(method.responseSerialize(m)) as WireSnapshotMessage;

async function eventually(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** a sizeable snapshot, so a one-policy change is small next to it */
function bigSnapshot(version: number, node = 'node-a'): Snapshot {
  const n = 200;
  return {
    version, node, trustDomain: 'cluster.local',
    nodes: [{ name: node, underlayIp: '192.168.0.1', tunnelIp: '10.99.0.1', podCidrs: ['10.244.1.0/24'], wgPublicKey: 'K=', proxyIp: '10.244.1.1' }],
    identities: Array.from({ length: n }, (_, i) => ({ id: 256 + i, namespace: 'demo', serviceAccount: `sa-${i}`, labels: { app: `app-${i}` }, spiffeId: `spiffe://cluster.local/ns/demo/sa/sa-${i}` })),
    endpoints: Array.from({ length: n }, (_, i) => ({
      namespace: 'demo', name: `pod-${i}`, uid: `uid-${i}`, node, ip: `10.244.${i >> 8}.${i & 255}`, identity: 256 + i,
      labels: { app: `app-${i}` }, serviceAccount: `sa-${i}`, enrolled: true,
    })),
    services: Array.from({ length: 50 }, (_, i) => ({
      namespace: 'demo', name: `svc-${i}`, id: i + 1, clusterIp: `10.96.0.${i + 1}`, identity: 256 + i,
      ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' as const }],
      backends: [{ ip: `10.244.0.${i}`, node, identity: 256 + i, pod: `pod-${i}` }],
    })),
    policies: [policy(1, 'p1', 256)],
    l4: Array.from({ length: n }, (_, i) => ({ direction: 'INGRESS' as const, localIdentity: 256 + i, peerIdentity: 257, port: 80, proto: 'TCP' as const, action: 'ALLOW' as const, policyId: 1, rule: 0 })),
    cidrIdentities: [{ cidr: '203.0.113.0/24', identity: 16_777_217 }],
  };
}

function policy(id: number, name: string, selects: number): Snapshot['policies'][number] {
  return { id, namespace: 'demo', name, action: 'DENY', selects: [selects], rules: [{ index: 0, from: [{ identities: [257] }], to: [], when: [] }] };
}

describe('snapshot deltas: encoding', () => {
  it('carries only the changed sections and rebuilds the whole snapshot from its base', () => {
    const base = bigSnapshot(1);
    const next: Snapshot = { ...bigSnapshot(2), policies: [policy(1, 'p1', 256), policy(2, 'p2', 300)] };
    delete next.cidrIdentities;
    next.networkPolicies = [{ id: 9, namespace: 'demo', name: 'np' }];
    const sections = changedSections(base, next);
    assert.deepEqual(sections, ['policies', 'cidrIdentities', 'networkPolicies']);
    const delta = overWire(deltaToWire(base, next, sections));
    assert.equal(delta.deltaFrom, 1);
    assert.deepEqual(delta.sections, ['SNAPSHOT_SECTION_POLICIES', 'SNAPSHOT_SECTION_CIDR_IDENTITIES', 'SNAPSHOT_SECTION_NETWORK_POLICIES']);
    assert.deepEqual(applyDelta(base, delta), next);
    // a whole snapshot says so (delta_from 0) and decodes as before
    const whole = overWire(snapshotToWire(next));
    assert.equal(whole.deltaFrom, 0);
    assert.deepEqual(snapshotFromWire(whole), next);
  });

  it('a change to one policy costs a small fraction of the whole snapshot', () => {
    const base = bigSnapshot(1);
    const next: Snapshot = { ...bigSnapshot(2), policies: [policy(1, 'p1', 257)] };
    const delta = deltaToWire(base, next, changedSections(base, next));
    const full = wireBytes(snapshotToWire(next));
    const small = wireBytes(delta);
    assert.deepEqual(delta.sections, ['SNAPSHOT_SECTION_POLICIES']);
    assert.ok(small * 20 < full, `delta ${small} bytes vs whole ${full} bytes`);
  });

  it('the server\'s piecewise encoding (each shared section once) reads back as the generic one', () => {
    const base = bigSnapshot(1);
    const next: Snapshot = { ...bigSnapshot(2), policies: [policy(1, 'p1', 257)], guards: [{ identity: 256, policyId: 1 }] };
    const read = (b: Buffer): WireSnapshotMessage => method.responseDeserialize(b) as WireSnapshotMessage;
    assert.deepEqual(read(encodeSnapshotMessage(next)), overWire(snapshotToWire(next)));
    const sections = changedSections(base, next);
    assert.deepEqual(sections, ['policies', 'guards']);
    assert.deepEqual(read(encodeSnapshotMessage(next, { from: 1, sections })), overWire(deltaToWire(base, next, sections)));
    assert.deepEqual(applyDelta(base, read(encodeSnapshotMessage(next, { from: 1, sections }))), next);
    // a second node of the same version shares every section but its own
    const other: Snapshot = { ...next, node: 'node-b', l4: [] };
    assert.deepEqual(snapshotFromWire(read(encodeSnapshotMessage(other))), other);
  });

  it('compares sections by content once per section array, not by identity', () => {
    const a = bigSnapshot(1), b = bigSnapshot(2);
    assert.notEqual(a.endpoints, b.endpoints);
    assert.deepEqual(changedSections(a, b), []);
    assert.equal(sectionFingerprint(a.endpoints), sectionFingerprint(b.endpoints));
    assert.equal(sectionFingerprint(undefined), sectionFingerprint([]));
  });

  it('refuses a delta naming an unknown section', () => {
    const base = bigSnapshot(1);
    const m = { ...deltaToWire(base, bigSnapshot(2), ['policies']), sections: ['SNAPSHOT_SECTION_BOGUS'] };
    assert.throws(() => applyDelta(base, m), { code: 'NODAL_ERR_SNAPSHOT_DECODE' });
  });
});

interface Sent { node: string; version: number; deltaFrom: number; bytes: number; sections: string[] }

async function server(initial: Snapshot): Promise<{ srv: AgentControlServer; address: string; sent: Sent[]; set: (s: Snapshot) => void }> {
  let current = initial;
  const sent: Sent[] = [];
  const srv = new AgentControlServer({
    logger: silent, snapshotFor: () => current, onHello: () => {},
    onSend: (s) => sent.push({ node: s.node, version: s.version, deltaFrom: s.deltaFrom, bytes: s.bytes.length, sections: (s.sections ?? []).map(sectionEnum) }),
  });
  const address = await srv.bind('127.0.0.1:0');
  closers.push(() => srv.close());
  return { srv, address, sent, set: (s) => { current = s; srv.push(); } };
}

function client(address: string, stateDir: string, o: { deltas?: boolean } = {}): { c: AgentControlClient; applied: Snapshot[] } {
  const applied: Snapshot[] = [];
  const c = new AgentControlClient({ address, node: 'node-a', stateDir, logger: silent, hello: () => ({ wgPublicKey: '' }), apply: (s) => { applied.push(s); }, ...o });
  closers.push(() => c.close());
  c.start();
  return { c, applied };
}

const ackedBy = (srv: AgentControlServer, v: number) => () => srv.agents().find((a) => a.node === 'node-a')?.ackedVersion === v;

describe('snapshot deltas on the stream', { timeout: 30_000 }, () => {
  it('sends a delta after an ack, which the agent applies to the same snapshot as a whole one', async () => {
    const s1 = bigSnapshot(1);
    const { srv, address, sent, set } = await server(s1);
    const { c, applied } = client(address, tmp.make());
    await eventually(ackedBy(srv, 1), 'ack of v1');
    assert.equal(sent[0]!.deltaFrom, 0);
    const s2: Snapshot = { ...bigSnapshot(2), policies: [policy(1, 'p1', 257)] };
    set(s2);
    await eventually(ackedBy(srv, 2), 'ack of v2');
    assert.deepEqual(sent.map((x) => [x.version, x.deltaFrom, x.sections]), [[1, 0, []], [2, 1, ['SNAPSHOT_SECTION_POLICIES']]]);
    assert.ok(sent[1]!.bytes * 20 < sent[0]!.bytes, `delta ${sent[1]!.bytes} bytes vs whole ${sent[0]!.bytes}`);
    assert.deepEqual(c.current(), s2);
    assert.deepEqual(applied.at(-1), s2);
    // a section that empties goes out as an (empty) listed section
    const s3: Snapshot = { ...s2, version: 3 };
    delete s3.cidrIdentities;
    set(s3);
    await eventually(ackedBy(srv, 3), 'ack of v3');
    assert.deepEqual(sent.at(-1)!.sections, ['SNAPSHOT_SECTION_CIDR_IDENTITIES']);
    assert.deepEqual(c.current(), s3);
  });

  it('delivers a whole snapshot larger than gRPC\'s default 4 MiB limit (tens of thousands of pods)', async () => {
    const s = bigSnapshot(1);
    const huge: Snapshot = {
      ...s,
      endpoints: Array.from({ length: 40_000 }, (_, i) => ({ ...s.endpoints[0]!, name: `pod-${i}-${'x'.repeat(40)}`, uid: `uid-${i}`, ip: `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}` })),
    };
    const { srv, address, sent } = await server(huge);
    const { applied } = client(address, tmp.make());
    await eventually(ackedBy(srv, 1), 'ack of v1', 20_000);
    assert.ok(sent[0]!.bytes > 4 * 1024 * 1024, `whole snapshot is ${sent[0]!.bytes} bytes`);
    assert.equal(sent.length, 1, 'received at the first attempt, not resent after a reconnect');
    assert.equal(applied[0]!.endpoints.length, 40_000);
  });

  it('an agent that does not take deltas gets whole snapshots', async () => {
    const { srv, address, sent, set } = await server(bigSnapshot(1));
    const { c } = client(address, tmp.make(), { deltas: false });
    await eventually(ackedBy(srv, 1), 'ack of v1');
    const s2: Snapshot = { ...bigSnapshot(2), policies: [] };
    set(s2);
    await eventually(ackedBy(srv, 2), 'ack of v2');
    assert.deepEqual(sent.map((x) => x.deltaFrom), [0, 0]);
    assert.deepEqual(c.current(), s2);
  });

  it('the agent asks for the whole snapshot when a delta\'s base is not what it holds', async () => {
    // a control plane that sends a delta from a version the agent never had
    const s1 = bigSnapshot(1);
    const s2: Snapshot = { ...bigSnapshot(2), policies: [policy(1, 'p1', 257)] };
    const received: WireAgentMessage[] = [];
    const raw = new grpc.Server();
    raw.addService(loadAgentControl().definition, {
      Stream: (call: grpc.ServerDuplexStream<WireAgentMessage, WireSnapshotMessage>) => {
        call.on('data', (m: WireAgentMessage) => {
          received.push(m);
          if (m.msg === 'hello') call.write(deltaToWire({ ...s1, version: 7 }, s2, ['policies']));
          else if (m.msg === 'nack' && m.nack.wantFull === true) call.write(snapshotToWire(s2));
        });
        call.on('end', () => call.end());
      },
    });
    const port = await new Promise<number>((res, rej) => raw.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    closers.push(async () => { raw.forceShutdown(); });
    const { c, applied } = client(`127.0.0.1:${port}`, tmp.make());
    await eventually(() => received.some((m) => m.msg === 'ack'), 'the ack of the whole snapshot');
    assert.equal(received[0]!.msg, 'hello');
    assert.equal((received[0] as { hello: { acceptsDeltas?: boolean } }).hello.acceptsDeltas, true);
    const nack = received.find((m) => m.msg === 'nack') as { nack: { version: number; wantFull?: boolean; error: string } };
    assert.equal(nack.nack.version, 2);
    assert.equal(nack.nack.wantFull, true);
    assert.match(nack.nack.error, /delta from version 7, but holding 0/);
    assert.deepEqual(applied, [s2]);
    assert.deepEqual(c.current(), s2);
  });

  it('the server resends whole on a want-full NACK, and not as an apply failure', async () => {
    const { srv, address, sent, set } = await server(bigSnapshot(1));
    const got: WireSnapshotMessage[] = [];
    const raw = new (loadAgentControl().client)(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & { Stream(): grpc.ClientDuplexStream<WireAgentMessage, WireSnapshotMessage> };
    closers.push(async () => raw.close());
    const stream = raw.Stream();
    stream.on('data', (m: WireSnapshotMessage) => got.push(m));
    stream.on('error', () => {});
    closers.push(async () => stream.cancel());
    stream.write({ msg: 'hello', hello: { node: 'node-a', wgPublicKey: '', lastVersion: 0, acceptsDeltas: true } });
    await eventually(() => got.length === 1, 'v1');
    stream.write({ msg: 'ack', ack: { version: 1 } });
    await eventually(ackedBy(srv, 1), 'ack of v1');
    set({ ...bigSnapshot(2), policies: [] });
    await eventually(() => got.length === 2, 'v2');
    assert.equal(Number(got[1]!.deltaFrom), 1);
    stream.write({ msg: 'nack', nack: { version: 2, error: 'not holding 1', wantFull: true } });
    await eventually(() => got.length === 3, 'v2 whole');
    assert.equal(Number(got[2]!.deltaFrom), 0);
    assert.deepEqual(snapshotFromWire(got[2]!), { ...bigSnapshot(2), policies: [] });
    assert.deepEqual(sent.map((x) => [x.version, x.deltaFrom]), [[1, 0], [2, 1], [2, 0]]);
    assert.equal(srv.agents()[0]!.lastNack, undefined);
  });

  it('resumes after a reconnect: nothing resent when current, a delta from the acked version when not', async () => {
    const { srv, address, sent, set } = await server(bigSnapshot(1));
    const agentDir = tmp.make();
    const first = client(address, agentDir);
    await eventually(ackedBy(srv, 1), 'ack of v1');
    await first.c.close();
    await eventually(() => srv.agents()[0]!.connected === false, 'the disconnect');

    // back with the version it holds: nothing to send
    const second = client(address, agentDir);
    await eventually(() => second.c.connected() && srv.agents()[0]!.connected, 'the reconnect');
    assert.equal(sent.length, 1);
    await second.c.close();
    await eventually(() => srv.agents()[0]!.connected === false, 'the disconnect');

    // a change while it was away goes out as a delta from the version it holds (persisted)
    const s2: Snapshot = { ...bigSnapshot(2), policies: [policy(1, 'p1', 258)] };
    set(s2);
    const third = client(address, agentDir);
    await eventually(ackedBy(srv, 2), 'ack of v2');
    assert.deepEqual(sent.map((x) => [x.version, x.deltaFrom]), [[1, 0], [2, 1]]);
    assert.deepEqual(third.c.current(), s2);
    assert.deepEqual(third.applied.at(-1), s2);
  });
});

describe('the agent\'s persisted snapshot', () => {
  it('writes a section file per section, and after a delta only the sections it changed', async () => {
    const dir = tmp.make();
    const store = new SnapshotStore(dir);
    const s1 = bigSnapshot(1);
    await store.save(s1);
    const files1 = readdirSync(join(dir, 'snapshot')).sort();
    assert.ok(files1.includes('endpoints.1.json') && files1.includes('policies.1.json'));
    // a delta leaves unchanged sections as the very same arrays
    const s2: Snapshot = applyDelta(s1, overWire(deltaToWire(s1, { ...bigSnapshot(2), policies: [policy(1, 'p1', 257)] }, ['policies'])));
    assert.equal(s2.endpoints, s1.endpoints);
    await store.save(s2);
    const files2 = readdirSync(join(dir, 'snapshot')).sort();
    assert.deepEqual(files2, files1.map((f) => (f === 'policies.1.json' ? 'policies.2.json' : f)).sort(), 'only policies rewritten, the old file gone');
    assert.deepEqual(new SnapshotStore(dir).load(), s2);
  });

  it('reads the whole-snapshot file agents wrote before, and replaces it on the next save', async () => {
    const dir = tmp.make();
    writeJsonAtomic(join(dir, 'snapshot.json'), bigSnapshot(7));
    const store = new SnapshotStore(dir);
    assert.deepEqual(store.load(), bigSnapshot(7));
    await store.save(bigSnapshot(8));
    assert.deepEqual(new SnapshotStore(dir).load(), bigSnapshot(8));
  });

  it('says which file is missing rather than loading half a snapshot', async () => {
    const dir = tmp.make();
    await new SnapshotStore(dir).save(bigSnapshot(3));
    rmSync(join(dir, 'snapshot', 'l4.3.json'));
    assert.throws(() => new SnapshotStore(dir).load(), { code: 'NODAL_ERR_CONTROL_STATE', message: /names l4\.3\.json, which is missing/ });
  });
});
