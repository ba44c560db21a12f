// Leader election on a coordination.k8s.io/v1 Lease and identity ids stored as
// NodalIdentity objects, against the fake API server on 127.0.0.1:0 (no privileges).
// Durations are short through options; every wait is bounded and waits on an event or on
// the fake's request log, never asserts on timing.
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeClient } from '../../control/cluster/kube-http.ts';
import { KubernetesSource } from '../../control/cluster/kubernetes.ts';
import { LeaderElector, microTime, type LeaderElectorOptions } from '../../control/cluster/lease.ts';
import { startControlPlaneWith } from '../../control/index.ts';
import { IDENTITY_KEY_ANNOTATION, KubernetesIds, identityObjectName, type KubernetesIdsOptions } from '../../control/model/ids-kubernetes.ts';
import { PersistentIds } from '../../control/model/ids.ts';
import { identityKey } from '../../control/model/identity.ts';
import { FakeKubeApiServer, type KubeObj } from '../fakes/kube-apiserver.ts';
import { TempDirs, silent } from '../fixtures/control/helpers.ts';

const tmp = new TempDirs();
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => {});
  tmp.cleanup();
});

/** short enough for tests; the same ratios as the defaults (deadline < duration, retry < deadline) */
const FAST: Partial<LeaderElectorOptions> = { leaseDurationMs: 1000, renewDeadlineMs: 600, retryPeriodMs: 100 };

async function within<T>(p: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function fakeServer(): Promise<{ fake: FakeKubeApiServer; client: () => KubeClient; kubeConfig: () => KubeConfig }> {
  const fake = await FakeKubeApiServer.start();
  closers.push(() => fake.close());
  const kubeConfig = (): KubeConfig => {
    const kc = new KubeConfig();
    kc.loadFromOptions(fake.kubeConfigOptions());
    return kc;
  };
  return { fake, kubeConfig, client: () => new KubeClient(kubeConfig(), { timeoutMs: 5_000 }) };
}

function elector(client: KubeClient, identity: string, o: Partial<LeaderElectorOptions> = {}): LeaderElector {
  const e = new LeaderElector({ client, logger: silent, identity, ...FAST, ...o });
  closers.push(() => e.close());
  return e;
}

const leaseOf = (fake: FakeKubeApiServer): KubeObj | undefined => fake.get('Lease', 'nodal-system', 'nodal-control');
const holderOf = (fake: FakeKubeApiServer): string | undefined => (leaseOf(fake)?.spec as { holderIdentity?: string } | undefined)?.holderIdentity;
const event = (e: LeaderElector, name: 'leader' | 'follower'): Promise<void> => new Promise((resolve) => e.once(name, resolve));

/** wait until exactly one leads and every other has read its holding */
async function oneLeader(fake: FakeKubeApiServer, all: LeaderElector[]): Promise<LeaderElector> {
  await fake.until(() => {
    const leaders = all.filter((e) => e.isLeader());
    return leaders.length === 1 && holderOf(fake) === leaders[0]!.identity && all.every((e) => e.holder() === leaders[0]!.identity);
  }, 'one leader that every elector sees');
  const leaders = all.filter((e) => e.isLeader());
  assert.equal(leaders.length, 1);
  return leaders[0]!;
}

describe('leader election (Lease)', () => {
  it('one of two electors leads; the Lease names it', async () => {
    const { fake, client } = await fakeServer();
    const a = elector(client(), 'replica-a');
    const b = elector(client(), 'replica-b');
    const led = Promise.race([event(a, 'leader'), event(b, 'leader')]);
    a.start();
    b.start();
    await within(led, 'a leader');
    const leader = await oneLeader(fake, [a, b]);
    // several renewals later it still leads, and the other still follows
    const renewals = fake.count({ verb: 'update', resource: 'leases' });
    await fake.until(() => fake.count({ verb: 'update', resource: 'leases' }) >= renewals + 3, 'three renewals');
    assert.ok(leader.isLeader());
    assert.equal([a, b].filter((e) => e.isLeader()).length, 1);
    const spec = leaseOf(fake)!.spec as { holderIdentity: string; leaseDurationSeconds: number; renewTime: string };
    assert.equal(spec.holderIdentity, leader.identity);
    assert.equal(spec.leaseDurationSeconds, 1);
    assert.match(spec.renewTime, /\.\d{6}Z$/, 'MicroTime: six fractional digits');
  });

  it('the other takes over when the leader stops renewing (crash, no release)', async () => {
    const { fake, client } = await fakeServer();
    const a = elector(client(), 'replica-a');
    a.start();
    await within(event(a, 'leader'), 'a leads');
    const b = elector(client(), 'replica-b');
    b.start();
    await fake.until(() => b.holder() === 'replica-a', 'b sees a leading');
    assert.equal(b.isLeader(), false);
    const took = event(b, 'leader');
    await a.close({ release: false }); // a crash: the Lease still names a until it expires
    await within(took, 'b takes over after the lease expires');
    assert.equal(holderOf(fake), 'replica-b');
    assert.ok((leaseOf(fake)!.spec as { leaseTransitions: number }).leaseTransitions >= 1);
  });

  it('a leader that releases on close hands over at once (well before the lease would expire)', async () => {
    const { fake, client } = await fakeServer();
    // a 60 s lease: only the release can explain a handover within the 10 s wait
    const slow = { leaseDurationMs: 60_000, renewDeadlineMs: 30_000, retryPeriodMs: 100 };
    const a = elector(client(), 'replica-a', slow);
    a.start();
    await within(event(a, 'leader'), 'a leads');
    const b = elector(client(), 'replica-b', slow);
    b.start();
    await fake.until(() => b.holder() === 'replica-a', 'b sees a leading');
    const took = event(b, 'leader');
    const stepped = event(a, 'follower');
    await a.close();
    await within(stepped, 'a reports that it no longer leads');
    assert.equal(a.isLeader(), false);
    await within(took, 'b takes over after the release');
    assert.equal(holderOf(fake), 'replica-b');
  });

  it('racing creates of an absent Lease: one 201, the others 409 and follow', async () => {
    const { fake, client } = await fakeServer();
    const all = ['r1', 'r2', 'r3'].map((id) => elector(client(), id, { leaseDurationMs: 5000, renewDeadlineMs: 3000, retryPeriodMs: 100 }));
    const gate = fake.stall({ verb: 'create', resource: 'leases' });
    for (const e of all) e.start();
    await fake.until(() => fake.pending({ verb: 'create', resource: 'leases' }) === 3, 'three creates in flight');
    gate.release();
    await oneLeader(fake, all);
  });

  it('racing takeovers of an expired Lease (same resourceVersion): one wins, the others get 409 and follow', async () => {
    const { fake, client } = await fakeServer();
    const past = Date.now() - 60_000;
    fake.apply({
      apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'nodal-control', namespace: 'nodal-system' },
      spec: { holderIdentity: 'gone', leaseDurationSeconds: 1, acquireTime: microTime(past), renewTime: microTime(past), leaseTransitions: 4 },
    });
    const all = ['r1', 'r2', 'r3'].map((id) => elector(client(), id, { leaseDurationMs: 5000, renewDeadlineMs: 3000, retryPeriodMs: 100 }));
    const gate = fake.stall({ verb: 'update', resource: 'leases' });
    for (const e of all) e.start();
    await fake.until(() => fake.pending({ verb: 'update', resource: 'leases' }) === 3, 'three takeovers in flight');
    gate.release();
    const leader = await oneLeader(fake, all);
    assert.equal((leaseOf(fake)!.spec as { leaseTransitions: number }).leaseTransitions, 5);
    assert.equal(holderOf(fake), leader.identity);
  });
});

// ---- identities ----

const keyA = identityKey('demo', 'web', { app: 'web' });
const keyB = identityKey('demo', 'api', { app: 'api', tier: 'back' });
const keyC = identityKey('other', 'db', {});
const keyCidr = 'cidr:10.1.0.0/16';

function allocator(client: KubeClient, o: Partial<KubernetesIdsOptions> = {}): KubernetesIds {
  const ids = new KubernetesIds({ client, logger: silent, isLeader: () => true, files: new PersistentIds(tmp.make()), refreshMs: 50, ...o });
  closers.push(() => ids.close());
  return ids;
}

/** one build: ask for keys; the misses go to the cluster (allocate as leader) */
function build(ids: KubernetesIds, keys: string[]): number[] {
  ids.startBuild();
  return keys.map((k) => ids.id('identities', k));
}

const identityObjects = (fake: FakeKubeApiServer): KubeObj[] => fake.store.list(fake.resource('NodalIdentity'));

describe('identity ids in the cluster (NodalIdentity)', () => {
  it('allocates by creating id-<n> with the key\'s spec; services and policies stay in the file', async () => {
    const { fake, client } = await fakeServer();
    const ids = allocator(client());
    await ids.refresh();
    assert.deepEqual(build(ids, [keyA, keyCidr]), [0, 0]);
    assert.equal(ids.missing(), 2);
    assert.equal(await ids.allocate(), true);
    const [a, cidr] = build(ids, [keyA, keyCidr]);
    assert.equal(ids.missing(), 0);
    assert.equal(a, 256);
    assert.equal(cidr, 257);
    const o = fake.get('NodalIdentity', '', identityObjectName(a!))!;
    assert.deepEqual(o.spec, { id: 256, namespace: 'demo', serviceAccount: 'web', labels: { app: 'web' } });
    assert.equal(o.metadata.annotations?.[IDENTITY_KEY_ANNOTATION], keyA);
    assert.equal((fake.get('NodalIdentity', '', 'id-257')!.spec as { namespace: string }).namespace, '-');
    assert.equal(ids.id('services', 'demo/web'), 1);
    assert.equal(identityObjects(fake).length, 2);
  });

  it('two allocators racing never give one id to two keys, and agree after a refresh', async () => {
    const { fake, client } = await fakeServer();
    const a = allocator(client());
    const b = allocator(client());
    await Promise.all([a.refresh(), b.refresh()]);
    build(a, [keyA, keyB]);
    build(b, [keyC, keyB]);
    // both creates of id-256 in flight at once: one 201, one 409
    const gate = fake.stall({ verb: 'create', resource: 'nodalidentities' });
    const both = Promise.all([a.allocate(), b.allocate()]);
    await fake.until(() => fake.pending({ verb: 'create', resource: 'nodalidentities' }) === 2, 'two creates in flight');
    gate.release();
    await within(both, 'both allocations');
    await Promise.all([a.refresh(), b.refresh()]);
    assert.deepEqual([...a.known()].sort(), [...b.known()].sort());
    const known = new Map(a.known());
    assert.deepEqual([...known.keys()].sort(), [keyA, keyB, keyC].sort());
    assert.equal(new Set(known.values()).size, 3, 'distinct ids for distinct keys');
    // every object's id is unique (the name is the id) and keyB, made twice, resolves to its lowest id everywhere
    const objs = identityObjects(fake);
    assert.equal(new Set(objs.map((o) => (o.spec as { id: number }).id)).size, objs.length);
    const bIds = objs.filter((o) => o.metadata.annotations?.[IDENTITY_KEY_ANNOTATION] === keyB).map((o) => (o.spec as { id: number }).id);
    assert.equal(known.get(keyB), Math.min(...bIds));
    for (const ids of [a, b]) assert.deepEqual(build(ids, [keyA, keyB, keyC]), [known.get(keyA), known.get(keyB), known.get(keyC)]);
  });

  it('a follower does not allocate; it sees the leader\'s ids after a refresh', async () => {
    const { fake, client } = await fakeServer();
    const leader = allocator(client());
    const follower = allocator(client(), { isLeader: () => false });
    await Promise.all([leader.refresh(), follower.refresh()]);
    build(follower, [keyA]);
    assert.equal(await follower.allocate(), false);
    assert.equal(identityObjects(fake).length, 0);
    build(leader, [keyA]);
    await leader.allocate();
    assert.equal(await follower.refresh(), true);
    assert.deepEqual(build(follower, [keyA]), [256]);
    assert.equal(follower.missing(), 0);
  });

  it('a restart (a new allocator over the same cluster) keeps every id', async () => {
    const { client } = await fakeServer();
    const first = allocator(client());
    await first.refresh();
    build(first, [keyA, keyB, keyC]);
    await first.allocate();
    const before = build(first, [keyA, keyB, keyC]);
    await first.close();
    const second = allocator(client());
    await second.start();
    assert.deepEqual(build(second, [keyC, keyB, keyA]), [...before].reverse());
    assert.equal(second.missing(), 0);
    // and the next new key gets a new number
    build(second, [identityKey('demo', 'new', {})]);
    await second.allocate();
    assert.deepEqual(build(second, [identityKey('demo', 'new', {})]), [Math.max(...before) + 1]);
  });

  it('GC deletes identities unused past the grace period, keeps used ones and the highest id', async () => {
    const { fake, client } = await fakeServer();
    const ids = allocator(client(), { gcGraceMs: 0 });
    await ids.refresh();
    build(ids, [keyA, keyB, keyC]);
    await ids.allocate();
    const [a, b, c] = build(ids, [keyA, keyB, keyC]);
    // the latest build uses A and C only
    build(ids, [keyA, keyC]);
    assert.equal(await ids.collect(), 1);
    assert.equal(fake.get('NodalIdentity', '', identityObjectName(b!)), undefined);
    assert.ok(fake.get('NodalIdentity', '', identityObjectName(a!)));
    assert.ok(fake.get('NodalIdentity', '', identityObjectName(c!)));
    // C unused now, but the highest id stays as the high-water mark
    build(ids, [keyA]);
    assert.equal(await ids.collect(), 0);
    assert.ok(fake.get('NodalIdentity', '', identityObjectName(c!)));
    // B is back: a new id, never B's old one
    build(ids, [keyB]);
    await ids.allocate();
    assert.deepEqual(build(ids, [keyB]), [c! + 1]);

    // within the grace period nothing goes, and a follower never deletes
    const patient = allocator(client(), { gcGraceMs: 600_000 });
    await patient.refresh();
    build(patient, []);
    assert.equal(await patient.collect(), 0);
    const follower = allocator(client(), { gcGraceMs: 0, isLeader: () => false });
    await follower.refresh();
    build(follower, []);
    assert.equal(await follower.collect(), 0);
    assert.equal(identityObjects(fake).length, 3);
  });
});

describe('two control-plane replicas over one cluster', () => {
  it('both serve the same identity ids; only the leader writes them', async () => {
    const { fake, client, kubeConfig } = await fakeServer();
    fake.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } });
    fake.apply({
      apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a' },
      status: { addresses: [{ type: 'InternalIP', address: '10.0.0.1' }] },
    } as KubeObj);
    fake.apply({
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'demo', labels: { app: 'web' } },
      spec: { nodeName: 'node-a', serviceAccountName: 'web', containers: [{ name: 'c', image: 'x' }] },
      status: { phase: 'Running', podIP: '10.244.0.5' },
    } as KubeObj);
    const replicas = await Promise.all(['replica-a', 'replica-b'].map(async (name) => {
      const e = elector(client(), name);
      const ids = allocator(client(), { isLeader: () => e.isLeader() });
      e.on('leader', () => ids.kick());
      e.start();
      await ids.start();
      const source = new KubernetesSource({ kubeConfig: kubeConfig(), logger: silent, debounceMs: 5, writeStatus: () => e.isLeader() });
      const cp = await within(startControlPlaneWith(source, { stateDir: tmp.make(), listen: '127.0.0.1:0', logger: silent, ids }), `${name} serving`);
      closers.push(() => cp.close());
      return { e, cp };
    }));
    const idsOf = (i: number): Array<[string, number]> => replicas[i]!.cp.state().identities.map((x) => [`${x.namespace}/${x.serviceAccount}`, x.id] as [string, number]);
    assert.ok(idsOf(0).some(([k, id]) => k === 'demo/web' && id >= 256), JSON.stringify(idsOf(0)));
    assert.deepEqual(idsOf(0), idsOf(1));
    assert.equal(replicas.filter((r) => r.e.isLeader()).length <= 1, true);
    assert.equal(identityObjects(fake).length, idsOf(0).filter(([, id]) => id >= 256).length);
  });
});
