// The Kubernetes source against a fake API server on 127.0.0.1:0 that the real
// @kubernetes/client-node talks to over HTTP. Tests wait on the source's change callback
// or on the fake's request log, each under a deadline; nothing asserts on timing.
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import { DirectorySource, buildModel, startControlPlaneWith, type ClusterState } from '../../control/index.ts';
import { KubernetesSource, type KubernetesSourceOptions } from '../../control/cluster/kubernetes.ts';
import { PersistentIds } from '../../control/model/ids.ts';
import { FakeKubeApiServer, type FakeKubeApiServerOptions, type KubeObj } from '../fakes/kube-apiserver.ts';
import { TempDirs, Waiter, fixture, silent } from '../fixtures/control/helpers.ts';
import { repoRoot } from '../helpers/paths.ts';

const tmp = new TempDirs();
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => {});
});
after(() => tmp.cleanup());

const TOKEN = 'nodal-test-token';
/** small delays so restarts and debounces happen within the test's deadlines */
const FAST: Partial<KubernetesSourceOptions> = { debounceMs: 5, backoff: { baseMs: 10, maxMs: 200 }, requestTimeoutMs: 10_000 };

/** a deadline around a wait: fails the test with what it waited for, never asserts on time */
async function within<T>(p: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

function docsOf(file: string): KubeObj[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((d) => d.toJS() as KubeObj | null).filter((d): d is KubeObj => d !== null);
}

const examples = (): KubeObj[] => {
  const dir = join(repoRoot, 'deploy/local/examples');
  return readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort().flatMap((f) => docsOf(join(dir, f)));
};

interface Rig {
  fake: FakeKubeApiServer;
  src: KubernetesSource;
  changed: Waiter;
  /** resolves when pred holds after a change callback (or at once), under a deadline */
  until: (pred: (s: ClusterState) => boolean, what: string) => Promise<void>;
}

async function rig(o: { objects?: KubeObj[]; fake?: FakeKubeApiServerOptions; source?: Partial<KubernetesSourceOptions>; start?: boolean; before?: (fake: FakeKubeApiServer) => void } = {}): Promise<Rig> {
  const fake = await FakeKubeApiServer.start({ token: TOKEN, ...o.fake });
  closers.push(() => fake.close());
  for (const obj of o.objects ?? []) fake.apply(obj);
  o.before?.(fake);
  const kc = new KubeConfig();
  kc.loadFromOptions(fake.kubeConfigOptions());
  const src = new KubernetesSource({ kubeConfig: kc, logger: silent, ...FAST, ...o.source });
  closers.push(() => src.close());
  const changed = new Waiter();
  if (o.start !== false) await within(src.start(changed.notify), 'the initial list of every kind');
  return { fake, src, changed, until: (pred, what) => within(changed.until(() => pred(src.state())), what) };
}

const podObj = (namespace: string, name: string, o: { ip?: string; labels?: Record<string, string>; node?: string; sa?: string; hostNetwork?: boolean } = {}): KubeObj => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name, namespace, labels: o.labels ?? { app: name } },
  spec: { nodeName: o.node ?? 'node-a', serviceAccountName: o.sa ?? name, containers: [{ name: 'c', image: 'x' }], ...(o.hostNetwork ? { hostNetwork: true } : {}) },
  status: { phase: 'Running', ...(o.ip ? { podIP: o.ip } : {}) },
});

const meshPolicy = (name: string, spec: Record<string, unknown>): KubeObj => ({
  apiVersion: 'nodal.io/v1alpha1', kind: 'MeshPolicy', metadata: { name, namespace: 'demo' }, spec,
});

const podNames = (s: ClusterState): string[] => s.pods.map((p) => `${p.namespace}/${p.name}`);

interface Condition { type: string; status: string; reason: string; message: string; observedGeneration?: number; lastTransitionTime: string }
const acceptedOf = (o: KubeObj | undefined): Condition | undefined =>
  ((o?.status as { conditions?: Condition[] } | undefined)?.conditions ?? []).find((c) => c.type === 'Accepted');

describe('kubernetes source: initial list', () => {
  for (const [what, load] of [['test/fixtures/control/cluster.yaml', () => docsOf(fixture('cluster.yaml'))], ['deploy/local/examples', examples]] as const) {
    it(`builds the same ClusterState and model as the directory source (${what})`, async () => {
      const { fake, src } = await rig({ objects: load() });
      // the directory source reads the very objects the API server holds (uid, resourceVersion, timestamps and all)
      const dir = tmp.make();
      const stored = load().map((d) => fake.get(d.kind!, d.metadata.namespace ?? 'default', d.metadata.name)!);
      writeFileSync(join(dir, 'cluster.yaml'), stored.map((d) => stringify(d)).join('---\n'));
      const dirSrc = new DirectorySource({ dir, logger: silent });
      await dirSrc.start(() => {});
      closers.push(() => dirSrc.close());

      assert.deepEqual(dirSrc.errors(), []);
      assert.deepEqual(src.errors(), []);
      assert.ok(src.state().pods.length > 0 && src.state().namespaces.length > 0);
      assert.deepEqual(src.state(), dirSrc.state());
      const model = (state: ClusterState) => buildModel({ state, trustDomain: 'cluster.local', ids: new PersistentIds(tmp.make()) });
      assert.deepEqual(model(src.state()), model(dirSrc.state()));
    });
  }

  it('lists each kind once, then watches it from the list\'s resourceVersion with bookmarks, authenticated', async () => {
    const { fake, src } = await rig({ objects: docsOf(fixture('cluster.yaml')) });
    await fake.until(() => fake.openWatches() === src.health().length, 'a watch per kind');
    for (const h of src.health()) {
      const plural = fake.resource(h.kind).plural;
      assert.equal(fake.count({ verb: 'list', resource: plural }), 1, `${h.kind} listed once`);
      const w = fake.requests.find((r) => r.verb === 'watch' && r.resource === plural)!;
      assert.equal(w.query.allowWatchBookmarks, 'true', `${h.kind} asks for bookmarks`);
      assert.equal(w.query.resourceVersion, h.resourceVersion, `${h.kind} watches from the list`);
      assert.equal(w.namespace, undefined, `${h.kind} is watched cluster-wide`);
      assert.ok(h.synced && h.served);
    }
  });

  it('caches every kind it watches, and skips a route without a Service parent without rejecting it', async () => {
    const { src } = await rig({
      objects: [
        { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'np', namespace: 'demo', managedFields: [{ manager: 'kubectl' }] }, spec: { podSelector: {} } },
        { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'web-x1', namespace: 'demo', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4', endpoints: [] },
        { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r', namespace: 'demo' }, spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web' }] } },
        { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name: 'g', namespace: 'demo' }, spec: { parentRefs: [{ name: 'a-gateway' }] } },
        { apiVersion: 'nodal.io/v1alpha1', kind: 'TrafficPolicy', metadata: { name: 't', namespace: 'demo' }, spec: { targetRef: { kind: 'Service', name: 'web' } } },
      ],
    });
    for (const kind of ['NetworkPolicy', 'EndpointSlice', 'HTTPRoute', 'GRPCRoute', 'TrafficPolicy']) assert.equal(src.objects(kind).length, 1, kind);
    assert.equal(src.objects('NetworkPolicy')[0]!.metadata!.managedFields, undefined, 'managedFields is not cached');
    assert.deepEqual(src.errors(), []);
    assert.deepEqual(src.state().routes?.map((r) => `${r.kind} ${r.name}`), ['HTTPRoute r']);
    assert.deepEqual(src.state().trafficPolicies?.map((p) => p.name), ['t']);
  });

  it('reads every page of a long list', async () => {
    const pods = Array.from({ length: 1201 }, (_, i) => podObj('demo', `p-${String(i).padStart(4, '0')}`, { ip: `10.1.${i >> 8}.${i & 255}` }));
    const { fake, src } = await rig({ objects: pods });
    assert.equal(src.state().pods.length, 1201);
    assert.equal(fake.count({ verb: 'list', resource: 'pods' }), 3);
    assert.ok(fake.requests.filter((r) => r.verb === 'list' && r.resource === 'pods').every((r) => r.query.limit === '500'));
  });

  it('does not wait for a CRD that is not installed, and picks it up once it is', async () => {
    const { fake, src, until } = await rig({ before: (f) => f.serve('MeshPolicy', false) });
    assert.equal(src.health().find((h) => h.kind === 'MeshPolicy')!.served, false);
    fake.serve('MeshPolicy', true);
    fake.apply(meshPolicy('late', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['x'] } }] }] }));
    await until((s) => s.policies.some((p) => p.name === 'late'), 'the policy once the CRD is served');
  });

  it('reads a pod\'s controller ownerReference into its workload', async () => {
    const owned = podObj('demo', 'api-5d8f7-abcde', { ip: '10.1.0.7', labels: { app: 'api', 'pod-template-hash': '5d8f7' } });
    owned.metadata.ownerReferences = [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'api-5d8f7', uid: 'rs-uid', controller: true, blockOwnerDeletion: true }];
    const { src } = await rig({ objects: [owned, podObj('demo', 'bare', { ip: '10.1.0.8' })] });
    assert.deepEqual(src.state().pods.find((p) => p.name === 'api-5d8f7-abcde')!.workload, { kind: 'Deployment', name: 'api' });
    assert.equal(src.state().pods.find((p) => p.name === 'bare')!.workload, undefined);
    assert.deepEqual(src.errors(), []);
  });

  it('leaves host-network pods out (they are the host) and ignores SCTP service ports', async () => {
    const svc: KubeObj = {
      apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'demo' },
      spec: { clusterIP: '10.96.0.9', selector: { app: 'a' }, ports: [{ name: 'sig', port: 3868, protocol: 'SCTP' }, { name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
    };
    const { src } = await rig({ objects: [podObj('kube-system', 'proxy', { ip: '192.168.50.11', hostNetwork: true }), podObj('demo', 'a', { ip: '10.1.0.1' }), svc] });
    assert.deepEqual(podNames(src.state()), ['demo/a']);
    assert.deepEqual(src.state().services[0]!.ports.map((p) => p.name), ['http']);
    assert.deepEqual(src.errors(), []);
  });
});

describe('kubernetes source: watch', () => {
  it('propagates added, modified and deleted objects', async () => {
    const { fake, src, until } = await rig({ objects: [podObj('demo', 'a', { ip: '10.1.0.1' })] });
    fake.apply(podObj('demo', 'b', { ip: '10.1.0.2' }));
    await until((s) => podNames(s).includes('demo/b'), 'pod b added');
    fake.apply(podObj('demo', 'b', { ip: '10.1.0.3', labels: { app: 'b', v: '2' } }));
    await until((s) => s.pods.find((p) => p.name === 'b')?.podIp === '10.1.0.3', 'pod b modified');
    assert.deepEqual(src.state().pods.find((p) => p.name === 'b')!.labels, { app: 'b', v: '2' });
    fake.remove('Pod', 'demo', 'a');
    await until((s) => !podNames(s).includes('demo/a'), 'pod a deleted');
    assert.deepEqual(podNames(src.state()), ['demo/b']);
  });

  it('accepts bookmarks: a reconnect resumes from the bookmark\'s resourceVersion, without a relist', async () => {
    const { fake, src, until } = await rig({ objects: [podObj('demo', 'a', { ip: '10.1.0.1' })] });
    const listedAt = src.health().find((h) => h.kind === 'Pod')!.resourceVersion;
    // move the global resourceVersion on without any pod event
    fake.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'elsewhere' } });
    await until((s) => s.namespaces.some((n) => n.name === 'elsewhere'), 'the namespace');
    await fake.until(() => fake.openWatches('pods') === 1, 'the pods watch'); // start() waits for lists, not watches
    assert.equal(fake.bookmark('pods'), 1);
    const at = String(fake.store.resourceVersion);
    assert.notEqual(at, listedAt);
    fake.dropWatches({ resource: 'pods' });
    await fake.until(() => fake.count({ verb: 'watch', resource: 'pods' }) === 2, 'the pods watch to reconnect');
    const again = fake.requests.filter((r) => r.verb === 'watch' && r.resource === 'pods')[1]!;
    assert.equal(again.query.resourceVersion, at);
    assert.equal(fake.count({ verb: 'list', resource: 'pods' }), 1);
    assert.equal(src.health().find((h) => h.kind === 'Pod')!.bookmarks, 1);
  });

  for (const goneAs of ['event', 'http'] as const) {
    it(`relists after 410 Gone (${goneAs === 'event' ? 'an ERROR event' : 'an HTTP 410'}) and ends up with exactly the server's objects`, async () => {
      const { fake, src, until } = await rig({ fake: { goneAs }, objects: [podObj('demo', 'a', { ip: '10.1.0.1' }), podObj('demo', 'b', { ip: '10.1.0.2' })] });
      await fake.until(() => fake.openWatches('pods') === 1, 'the pods watch');
      // the watch is away while pods change and history is compacted: only a relist can catch up
      const gate = fake.stall({ verb: 'watch', resource: 'pods' });
      fake.dropWatches({ resource: 'pods' });
      await fake.until(() => fake.pending({ verb: 'watch', resource: 'pods' }) === 1, 'the reconnect to wait');
      fake.remove('Pod', 'demo', 'a');
      fake.apply(podObj('demo', 'b', { ip: '10.1.0.22' }));
      fake.apply(podObj('demo', 'c', { ip: '10.1.0.3' }));
      fake.compact();
      gate.release();
      await until((s) => podNames(s).join() === 'demo/b,demo/c' && s.pods.find((p) => p.name === 'b')!.podIp === '10.1.0.22', 'the relisted pods');
      assert.equal(fake.count({ verb: 'list', resource: 'pods' }), 2);
      // and it watches on from the new list
      fake.apply(podObj('demo', 'd', { ip: '10.1.0.4' }));
      await until((s) => podNames(s).includes('demo/d'), 'a pod after the relist');
    });
  }

  it('relists when the server expires a live watch (ERROR 410 mid-stream)', async () => {
    const { fake, until } = await rig({ objects: [podObj('demo', 'a', { ip: '10.1.0.1' })] });
    await fake.until(() => fake.openWatches('pods') === 1, 'the pods watch');
    fake.compact();
    assert.equal(fake.expireWatches('pods'), 1);
    await fake.until(() => fake.count({ verb: 'list', resource: 'pods' }) === 2, 'a second list of pods');
    fake.apply(podObj('demo', 'b', { ip: '10.1.0.2' }));
    await until((s) => podNames(s).join() === 'demo/a,demo/b', 'the pods after the relist');
  });

  for (const abrupt of [false, true]) {
    it(`reconnects watches the server ${abrupt ? 'resets' : 'ends'}, from the last resourceVersion`, async () => {
      const { fake, src, until } = await rig({ objects: [podObj('demo', 'a', { ip: '10.1.0.1' })] });
      const kinds = src.health().length;
      await fake.until(() => fake.openWatches() === kinds, 'every watch');
      assert.equal(fake.dropWatches({ abrupt }), kinds);
      await fake.until(() => fake.openWatches() === kinds, 'every watch back');
      fake.apply(podObj('demo', 'b', { ip: '10.1.0.2' }));
      await until((s) => podNames(s).includes('demo/b'), 'a pod after the reconnect');
      for (const h of src.health()) {
        assert.equal(fake.count({ verb: 'list', resource: fake.resource(h.kind).plural }), 1, `${h.kind}: no relist`);
        // ListWatch reconnects a watch that ended by itself; a reset stops it, and the source restarts it
        if (abrupt) assert.ok(h.restarts >= 1, `${h.kind} restarted`);
        else assert.equal(h.restarts, 0, `${h.kind} not restarted`);
      }
    });
  }

  it('a slow kind holds up no other kind', async () => {
    const { fake, until } = await rig({ objects: [podObj('demo', 'a', { ip: '10.1.0.1' })] });
    await fake.until(() => fake.openWatches('pods') === 1, 'the pods watch');
    const slow = fake.stall({ resource: 'pods' });
    fake.compact();
    fake.expireWatches('pods'); // pods must relist, and the relist hangs
    await fake.until(() => fake.pending({ verb: 'list', resource: 'pods' }) === 1, 'the pods relist to hang');
    fake.apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'demo' }, spec: { clusterIP: '10.96.0.5', selector: { app: 'a' }, ports: [{ port: 80 }] } });
    fake.apply(podObj('demo', 'b', { ip: '10.1.0.2' }));
    await until((s) => s.services.some((x) => x.name === 'web'), 'the service while pods hang');
    slow.release();
    await until((s) => podNames(s).includes('demo/b'), 'the pods once the list answers');
  });

  it('start() waits for a slow first list, while the other kinds are listed', async () => {
    const { fake, src } = await rig({ start: false, objects: [podObj('demo', 'a', { ip: '10.1.0.1' })] });
    const slow = fake.stall({ verb: 'list', resource: 'pods' });
    let started = false;
    const starting = src.start(() => {}).then(() => { started = true; });
    await fake.until(() => fake.pending({ verb: 'list', resource: 'pods' }) === 1 && fake.openWatches('services') === 1, 'pods to hang and services to be watched');
    assert.equal(started, false);
    assert.equal(src.health().find((h) => h.kind === 'Service')!.synced, true);
    slow.release();
    await within(starting, 'start() once pods answer');
    assert.deepEqual(podNames(src.state()), ['demo/a']);
  });
});

describe('kubernetes source: failures', () => {
  it('restarts a failing list with exponential backoff, then recovers', async () => {
    const { fake, src } = await rig({ before: (f) => f.failNext({ verb: 'list', resource: 'services' }, 4, 500) });
    assert.equal(fake.count({ verb: 'list', resource: 'services' }), 5);
    const h = src.health().find((x) => x.kind === 'Service')!;
    assert.deepEqual(h.backoffs, [10, 20, 40, 80]);
    assert.equal(h.restarts, 4);
    assert.equal(h.failures, 0);
    assert.match(h.lastError ?? '', /500 InternalError: injected failure/);
  });

  it('restarts a refused watch with backoff, resuming from its resourceVersion', async () => {
    const { fake, src, until } = await rig({ objects: [podObj('demo', 'a', { ip: '10.1.0.1' })] });
    await fake.until(() => fake.openWatches('pods') === 1, 'the pods watch');
    fake.failNext({ verb: 'watch', resource: 'pods' }, 3, 503);
    fake.dropWatches({ resource: 'pods' });
    fake.apply(podObj('demo', 'b', { ip: '10.1.0.2' }));
    await until((s) => podNames(s).includes('demo/b'), 'the pod once the watch is back');
    assert.equal(fake.count({ verb: 'watch', resource: 'pods' }), 5);
    assert.equal(fake.count({ verb: 'list', resource: 'pods' }), 1);
    assert.deepEqual(src.health().find((x) => x.kind === 'Pod')!.backoffs, [10, 20, 40]);
  });

  it('keeps retrying when the API refuses the credentials, and says why', async () => {
    const fake = await FakeKubeApiServer.start({ token: TOKEN });
    closers.push(() => fake.close());
    const kc = new KubeConfig();
    kc.loadFromOptions({ ...fake.kubeConfigOptions(), users: [{ name: 'fake', token: 'wrong' }] });
    const src = new KubernetesSource({ kubeConfig: kc, logger: silent, ...FAST });
    closers.push(() => src.close());
    const starting = src.start(() => {});
    starting.catch(() => {});
    await fake.until(() => fake.count({ verb: 'list', resource: 'pods' }) >= 3, 'retries of the pods list');
    const h = src.health().find((x) => x.kind === 'Pod')!;
    assert.equal(h.synced, false);
    assert.match(h.lastError ?? '', /401 Unauthorized.*credentials/);
    await src.close();
    await assert.rejects(starting, /closed before the first list/);
  });
});

describe('kubernetes source: invalid objects', () => {
  const good = { selector: { matchLabels: { app: 'backend' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/demo/sa/frontend'] } }] }] };

  it('marks an invalid MeshPolicy Accepted=False naming the field, keeps the last good version, and writes no more than needed', async () => {
    const { fake, src, until } = await rig({ objects: [meshPolicy('api', good)] });
    await fake.until(() => acceptedOf(fake.get('MeshPolicy', 'demo', 'api'))?.status === 'True', 'Accepted=True');
    const ok = acceptedOf(fake.get('MeshPolicy', 'demo', 'api'))!;
    assert.equal(ok.reason, 'Accepted');
    assert.equal(ok.observedGeneration, 1);

    fake.apply(meshPolicy('api', { ...good, action: 'PERMIT' }));
    await fake.until(() => acceptedOf(fake.get('MeshPolicy', 'demo', 'api'))?.status === 'False', 'Accepted=False');
    const bad = acceptedOf(fake.get('MeshPolicy', 'demo', 'api'))!;
    assert.equal(bad.reason, 'Invalid');
    assert.equal(bad.observedGeneration, 2);
    assert.match(bad.message, /^spec\.action: "PERMIT" is not one of ALLOW, DENY, AUDIT; the last accepted version \(generation 1\) stays in force$/);
    // the same message the directory source gives, and the policy in force is still the good one
    await until(() => src.errors().length === 1, 'the error listed');
    assert.equal(src.errors()[0]!.message, 'kubernetes: MeshPolicy demo/api: spec.action: "PERMIT" is not one of ALLOW, DENY, AUDIT');
    assert.equal(src.errors()[0]!.field, 'spec.action');
    assert.equal(src.state().policies.length, 1);
    assert.equal(src.state().policies[0]!.action, 'ALLOW');

    // our own writes come back as watch events; none of them causes another write
    const writes = fake.count({ verb: 'patch', subresource: 'status' });
    assert.equal(writes, 2);
    src.resync();
    fake.apply(podObj('demo', 'x', { ip: '10.1.0.9' }));
    await until((s) => podNames(s).includes('demo/x'), 'an unrelated change');
    assert.equal(src.pendingStatusWrites, 0);
    assert.equal(fake.count({ verb: 'patch', subresource: 'status' }), writes);
    assert.ok(fake.requests.filter((r) => r.subresource === 'status').every((r) => r.contentType === 'application/merge-patch+json'));

    // fixed: the new version is in force and Accepted again
    fake.apply(meshPolicy('api', { ...good, action: 'DENY' }));
    await until((s) => s.policies[0]?.action === 'DENY', 'the fixed policy in force');
    await fake.until(() => acceptedOf(fake.get('MeshPolicy', 'demo', 'api'))?.status === 'True', 'Accepted=True again');
    assert.deepEqual(src.errors(), []);
    fake.remove('MeshPolicy', 'demo', 'api');
    await until((s) => s.policies.length === 0, 'the policy deleted');
  });

  it('a MeshPolicy that was never valid is not in force, and says so', async () => {
    const { fake, src } = await rig({ objects: [meshPolicy('typo', { rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/8'] } }] }] })] });
    await fake.until(() => acceptedOf(fake.get('MeshPolicy', 'demo', 'typo'))?.status === 'False', 'Accepted=False');
    assert.match(acceptedOf(fake.get('MeshPolicy', 'demo', 'typo'))!.message, /^spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks: unknown field .*; not in force$/);
    assert.equal(src.state().policies.length, 0);
  });

  it('retries a failed status write with backoff, and writes nothing when told it is not the leader', async () => {
    let leader = false;
    const { fake, src } = await rig({ source: { writeStatus: () => leader }, objects: [meshPolicy('api', good)] });
    assert.equal(fake.count({ verb: 'patch', subresource: 'status' }), 0);
    leader = true;
    fake.failNext({ verb: 'patch', subresource: 'status' }, 2, 500);
    src.resync();
    await fake.until(() => acceptedOf(fake.get('MeshPolicy', 'demo', 'api'))?.status === 'True', 'Accepted=True');
    assert.equal(fake.count({ verb: 'patch', subresource: 'status' }), 3);
  });

  it('rejects an invalid Node the same way, keeping its last good version', async () => {
    const node = (ip: string): KubeObj => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1' }, status: { addresses: [{ type: 'InternalIP', address: ip }] } });
    const { fake, src, until } = await rig({ objects: [node('192.168.0.1')] });
    fake.apply(node('192.168.0'));
    await until(() => src.errors().length === 1, 'the node rejected');
    assert.equal(src.errors()[0]!.field, 'status.addresses[0].address');
    assert.equal(src.state().nodes[0]!.internalIp, '192.168.0.1');
  });
});

describe('kubernetes source: routes and TrafficPolicies', () => {
  const svc = (name: string): KubeObj => ({
    apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'demo' },
    spec: { clusterIP: '10.96.0.30', selector: { app: name }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
  });
  const route = (spec: Record<string, unknown>): KubeObj => ({
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'split', namespace: 'demo' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'backend', port: 80 }, { name: 'edge' }], ...spec },
  });
  const tp = (name: string, spec: Record<string, unknown>): KubeObj => ({
    apiVersion: 'nodal.io/v1alpha1', kind: 'TrafficPolicy', metadata: { name, namespace: 'demo' },
    spec: { targetRef: { group: '', kind: 'Service', name: 'backend' }, ...spec },
  });
  interface ParentStatus { parentRef: Record<string, unknown>; controllerName: string; conditions: Condition[] }
  const parentsOf = (o: KubeObj | undefined): ParentStatus[] => ((o?.status as { parents?: ParentStatus[] } | undefined)?.parents ?? []);
  const ours = (o: KubeObj | undefined): ParentStatus | undefined => parentsOf(o).find((p) => p.controllerName === 'nodal.io/mesh');
  const cond = (p: ParentStatus | undefined, type: string): Condition | undefined => p?.conditions.find((c) => c.type === type);
  const split = { rules: [{ backendRefs: [{ name: 'backend-v1', port: 80, weight: 90 }, { name: 'backend-v2', port: 80, weight: 10 }] }] };

  it('reports a route in Gateway API status.parents: ResolvedRefs False for a missing backend (weight 0), True once it exists; keeps another controller\'s entry', async () => {
    const gatewayEntry = { parentRef: { name: 'edge' }, controllerName: 'example.com/gateway', conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: 'theirs', lastTransitionTime: '2026-01-01T00:00:00Z' }] };
    const { fake, src, until } = await rig({ objects: [svc('backend'), svc('backend-v1'), { ...route(split), status: { parents: [gatewayEntry] } }] });
    await until((s) => s.routes?.length === 1, 'the route in the state');
    await fake.until(() => cond(ours(fake.get('HTTPRoute', 'demo', 'split')), 'ResolvedRefs')?.status === 'False', 'ResolvedRefs=False');
    const o = fake.get('HTTPRoute', 'demo', 'split');
    const mine = ours(o)!;
    assert.deepEqual(mine.parentRef, { group: '', kind: 'Service', name: 'backend', port: 80 });
    assert.equal(cond(mine, 'Accepted')?.status, 'True');
    assert.equal(cond(mine, 'ResolvedRefs')?.reason, 'BackendNotFound');
    assert.match(cond(mine, 'ResolvedRefs')!.message, /spec\.rules\[0\]\.backendRefs\[1\]: Service demo\/backend-v2 not found/);
    assert.deepEqual(parentsOf(o).find((p) => p.controllerName === 'example.com/gateway'), gatewayEntry);
    const model = buildModel({ state: src.state(), trustDomain: 'cluster.local', ids: new PersistentIds(tmp.make()) });
    assert.deepEqual(model.routes?.[0]?.rules[0]?.backends.map((b) => b.weight), [90, 0]);

    fake.apply(svc('backend-v2'));
    await fake.until(() => cond(ours(fake.get('HTTPRoute', 'demo', 'split')), 'ResolvedRefs')?.status === 'True', 'ResolvedRefs=True');
    // an edit of the route rebuilds the model like any other object
    fake.apply(route({ rules: [{ backendRefs: [{ name: 'backend-v1', port: 80, weight: 50 }, { name: 'backend-v2', port: 80, weight: 50 }] }] }));
    await until((s) => s.routes?.[0]?.rules[0]?.backends[0]?.weight === 50, 'the edited route in the state');
    await fake.until(() => cond(ours(fake.get('HTTPRoute', 'demo', 'split')), 'Accepted')?.observedGeneration === 2, 'status for generation 2');
    const writes = fake.count({ verb: 'patch', subresource: 'status' });
    src.resync();
    fake.apply(podObj('demo', 'x', { ip: '10.1.0.9' }));
    await until((s) => podNames(s).includes('demo/x'), 'an unrelated change');
    assert.equal(src.pendingStatusWrites, 0);
    assert.equal(fake.count({ verb: 'patch', subresource: 'status' }), writes);
  });

  it('marks an invalid route Accepted=False naming the field and keeps its last good version in force', async () => {
    const { fake, src, until } = await rig({ objects: [svc('backend'), svc('backend-v1'), svc('backend-v2'), route(split)] });
    await fake.until(() => cond(ours(fake.get('HTTPRoute', 'demo', 'split')), 'Accepted')?.status === 'True', 'Accepted=True');
    fake.apply(route({ rules: [{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'backend-v2', port: 80 } } }] }] }));
    await fake.until(() => cond(ours(fake.get('HTTPRoute', 'demo', 'split')), 'Accepted')?.status === 'False', 'Accepted=False');
    const accepted = cond(ours(fake.get('HTTPRoute', 'demo', 'split')), 'Accepted')!;
    assert.equal(accepted.reason, 'UnsupportedValue');
    assert.equal(accepted.observedGeneration, 2);
    assert.match(accepted.message, /^spec\.rules\[0\]\.filters\[0\]\.type: "RequestMirror" is not supported by nodal .*; the last accepted version \(generation 1\) stays in force$/);
    await until(() => src.errors().length === 1, 'the error listed');
    assert.equal(src.state().routes?.[0]?.rules[0]?.backends.length, 2);
  });

  it('marks TrafficPolicies Accepted: True in force, False Invalid naming the field, False Conflicted for the newer of two', async () => {
    // created in name order, so within one second of creationTimestamp the tie-break agrees
    const { fake, src, until } = await rig({ objects: [svc('backend'), tp('first', { loadBalancer: { algorithm: 'LEAST_REQUEST' } })] });
    await fake.until(() => acceptedOf(fake.get('TrafficPolicy', 'demo', 'first'))?.status === 'True', 'Accepted=True');
    fake.apply(tp('second', { loadBalancer: { algorithm: 'PEAK_EWMA' } }));
    await fake.until(() => acceptedOf(fake.get('TrafficPolicy', 'demo', 'second'))?.status === 'False', 'the newer one Accepted=False');
    assert.equal(acceptedOf(fake.get('TrafficPolicy', 'demo', 'second'))!.reason, 'Conflicted');
    fake.apply(tp('first', { outlierDetection: { interval: 'ten seconds' } }));
    await fake.until(() => acceptedOf(fake.get('TrafficPolicy', 'demo', 'first'))?.status === 'False', 'Accepted=False');
    const bad = acceptedOf(fake.get('TrafficPolicy', 'demo', 'first'))!;
    assert.equal(bad.reason, 'Invalid');
    assert.match(bad.message, /^spec\.outlierDetection\.interval: "ten seconds" is not a duration .*; the last accepted version \(generation 1\) stays in force$/);
    await until(() => src.errors().length === 1, 'the error listed');
    // the last good version of "first" stays in force, and still wins over "second"
    assert.deepEqual(src.state().trafficPolicies?.map((p) => `${p.name}:${p.loadBalancer?.algorithm}`), ['first:LEAST_REQUEST', 'second:PEAK_EWMA']);
    const model = buildModel({ state: src.state(), trustDomain: 'cluster.local', ids: new PersistentIds(tmp.make()) });
    assert.deepEqual(model.trafficPolicies?.map((p) => p.name), ['first']);
  });
});

describe('kubernetes source in the control plane', () => {
  it('feeds startControlPlaneWith: a watch event rebuilds the model', async () => {
    const { fake, src } = await rig({ start: false, objects: docsOf(fixture('cluster.yaml')) });
    const cp = await startControlPlaneWith(src, { stateDir: tmp.make(), listen: '127.0.0.1:0', logger: silent });
    closers.push(() => cp.close());
    const changed = new Waiter();
    cp.on('change', changed.notify);
    const before = cp.state().endpoints.length;
    assert.ok(before > 0);
    fake.apply(podObj('demo', 'late', { ip: '10.244.1.99', node: 'node-a' }));
    await within(changed.until(() => cp.state().endpoints.length === before + 1), 'the new endpoint in the model');
    assert.equal(cp.snapshotFor('node-a').endpoints.some((e) => e.name === 'late'), true);
  });
});

describe('kubernetes source: EndpointSlices as Service backends', () => {
  const webSvc: KubeObj = {
    apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'demo' },
    spec: { clusterIP: '10.96.0.20', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }] },
  };
  const slice = (name: string, eps: Array<{ ip: string; pod: string; ready?: boolean }>, port = 8080): KubeObj => ({
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
    metadata: { name, namespace: 'demo', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port, protocol: 'TCP' }],
    endpoints: eps.map((e) => ({
      addresses: [e.ip], nodeName: 'node-a', targetRef: { kind: 'Pod', namespace: 'demo', name: e.pod },
      ...(e.ready === undefined ? {} : { conditions: { ready: e.ready } }),
    })),
  });
  const backendsOf = (s: ClusterState) => {
    const m = buildModel({ state: s, trustDomain: 'cluster.local', ids: new PersistentIds(tmp.make()) });
    const web = m.services.find((x) => x.name === 'web')!;
    return { pods: web.backends.map((b) => b.pod), targetPort: web.ports[0]!.targetPort, nodes: web.backends.map((b) => b.node) };
  };
  const pods = (): KubeObj[] => [
    podObj('demo', 'web-1', { ip: '10.1.0.1', labels: { app: 'web' }, node: 'node-a' }),
    podObj('demo', 'web-2', { ip: '10.1.0.2', labels: { app: 'web' }, node: 'node-b' }),
    podObj('demo', 'other', { ip: '10.1.0.3', labels: { app: 'other' }, node: 'node-b' }),
  ];

  it('without slices, backends come from pods + selector (the directory source path)', async () => {
    const { src } = await rig({ objects: [...pods(), webSvc] });
    assert.equal(src.state().endpointSlices, undefined);
    // no container port is named http: the named targetPort resolves to nothing
    assert.deepEqual(backendsOf(src.state()), { pods: ['web-1', 'web-2'], targetPort: 0, nodes: ['node-a', 'node-b'] });
  });

  it('reads slices into ClusterState: ready condition, targetRef, ports by name', async () => {
    const { src } = await rig({ objects: [...pods(), webSvc, slice('web-abc', [{ ip: '10.1.0.1', pod: 'web-1' }, { ip: '10.1.0.2', pod: 'web-2', ready: false }])] });
    assert.deepEqual(src.state().endpointSlices, [{
      namespace: 'demo', name: 'web-abc', serviceName: 'web', addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [
        { addresses: ['10.1.0.1'], ready: true, podName: 'web-1', nodeName: 'node-a' },
        { addresses: ['10.1.0.2'], ready: false, podName: 'web-2', nodeName: 'node-a' },
      ],
    }]);
  });

  it('excludes a not-ready endpoint, takes node and identity from the pod and targetPort from the slice', async () => {
    const { src } = await rig({ objects: [...pods(), webSvc, slice('web-abc', [{ ip: '10.1.0.2', pod: 'web-2' }, { ip: '10.1.0.1', pod: 'web-1', ready: false }])] });
    // the slice says node-a for both; the pod (web-2 on node-b) is what counts
    assert.deepEqual(backendsOf(src.state()), { pods: ['web-2'], targetPort: 8080, nodes: ['node-b'] });
  });

  it('ignores addresses that are no known pod, and includes a ready pod outside the selector (the slice is the truth)', async () => {
    const { src } = await rig({ objects: [...pods(), webSvc, slice('web-abc', [{ ip: '10.9.9.9', pod: 'gone' }, { ip: '10.1.0.3', pod: 'other' }])] });
    assert.deepEqual(backendsOf(src.state()).pods, ['other']);
  });

  it('a slice change updates the backends; several slices of one service add up', async () => {
    const { fake, until } = await rig({ objects: [...pods(), webSvc, slice('web-abc', [{ ip: '10.1.0.1', pod: 'web-1' }, { ip: '10.1.0.2', pod: 'web-2', ready: false }])] });
    fake.apply(slice('web-abc', [{ ip: '10.1.0.1', pod: 'web-1' }, { ip: '10.1.0.2', pod: 'web-2', ready: true }], 9090));
    await until((s) => backendsOf(s).pods.length === 2, 'web-2 ready in the slice');
    await until((s) => backendsOf(s).targetPort === 9090, 'the new slice port');
    fake.apply(slice('web-abc', [{ ip: '10.1.0.1', pod: 'web-1', ready: false }]));
    await until((s) => backendsOf(s).pods.length === 0, 'no ready endpoint left');
    fake.apply(slice('web-def', [{ ip: '10.1.0.2', pod: 'web-2' }]));
    await until((s) => backendsOf(s).pods.join() === 'web-2', 'a second slice');
    fake.remove('EndpointSlice', 'demo', 'web-abc');
    fake.remove('EndpointSlice', 'demo', 'web-def');
    // no slices at all: back to pods + selector
    await until((s) => s.endpointSlices === undefined && backendsOf(s).pods.length === 2, 'fallback to pods + selector');
  });
});
