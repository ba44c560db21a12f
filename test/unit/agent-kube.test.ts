// agent --kubernetes (agent/kube.ts): the WireGuard key on the Node and the
// nodal.io/redirected mark on enrolled pods, written through the real KubeClient to the
// fake API server on 127.0.0.1:0 (no privileges). Every wait is bounded and waits on the
// fake's request log or the annotator going idle, never on a sleep; request counts prove
// that nothing is written twice.
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeClient } from '../../control/cluster/kube-http.ts';
import { KubernetesSource } from '../../control/cluster/kubernetes.ts';
import { buildModel } from '../../control/index.ts';
import { PersistentIds } from '../../control/model/ids.ts';
import { KubeAnnotator, REDIRECTED_ANNOTATION, WG_KEY_ANNOTATION, type KubeAnnotatorOptions } from '../../agent/kube.ts';
import { parseAgentArgs } from '../../agent/config.ts';
import { FakeKubeApiServer, type KubeObj } from '../fakes/kube-apiserver.ts';
import { TempDirs, Waiter, silent } from '../fixtures/control/helpers.ts';

const tmp = new TempDirs();
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => {});
  tmp.cleanup();
});

async function within<T>(p: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

const KEY_1 = 'AAAAkey1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';
const KEY_2 = 'BBBBkey2BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=';

const nodeObj = (name: string, annotations: Record<string, string> = {}): KubeObj => ({
  apiVersion: 'v1', kind: 'Node', metadata: { name, annotations },
  spec: { podCIDR: '10.244.1.0/24' },
  status: { addresses: [{ type: 'InternalIP', address: '192.168.50.11' }] },
});

const podObj = (namespace: string, name: string, annotations: Record<string, string> = {}): KubeObj => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, labels: { app: name }, annotations },
  spec: { nodeName: 'node-a', serviceAccountName: name, containers: [{ name: 'c', image: 'x' }] },
  status: { phase: 'Running', podIP: '10.244.1.9' },
});

interface Rig {
  fake: FakeKubeApiServer;
  kubeConfig: () => KubeConfig;
  annotator: (o?: Partial<KubeAnnotatorOptions>) => KubeAnnotator;
}

async function rig(objects: KubeObj[] = []): Promise<Rig> {
  const fake = await FakeKubeApiServer.start({ token: 'agent-token' });
  closers.push(() => fake.close());
  for (const o of objects) fake.apply(o);
  const kubeConfig = (): KubeConfig => {
    const kc = new KubeConfig();
    kc.loadFromOptions(fake.kubeConfigOptions());
    return kc;
  };
  return {
    fake, kubeConfig,
    annotator: (o = {}) => {
      const a = new KubeAnnotator({ client: new KubeClient(kubeConfig(), { timeoutMs: 5_000 }), node: 'node-a', logger: silent, backoff: { baseMs: 20, maxMs: 200 }, ...o });
      closers.push(() => a.close());
      return a;
    },
  };
}

const annotationsOf = (fake: FakeKubeApiServer, kind: string, ns: string, name: string): Record<string, string> =>
  fake.get(kind, ns, name)?.metadata.annotations ?? {};
const podPatches = (fake: FakeKubeApiServer): number => fake.count({ verb: 'patch', resource: 'pods' });
const nodePatches = (fake: FakeKubeApiServer): number => fake.count({ verb: 'patch', resource: 'nodes' });

describe('agent config: --kubernetes', () => {
  const required = ['--node', 'n', '--control', 'c:1', '--state-dir', '/tmp/x', '--cgroup', '/sys/fs/cgroup', '--proxy-ip', '10.0.0.1', '--tunnel-ip', '10.99.0.1', '--underlay-ip', '192.168.0.1'];
  it('is off by default and on with the flag', () => {
    assert.equal(parseAgentArgs(required).kubernetes, false);
    assert.equal(parseAgentArgs([...required, '--kubernetes']).kubernetes, true);
  });
});

describe('agent kube annotator: the Node\'s WireGuard key', () => {
  it('writes nodal.io/wg-pub-key once, with a merge patch, keeping other annotations; again only when the key changes', async () => {
    const { fake, annotator } = await rig([nodeObj('node-a', { 'other.io/keep': 'yes' })]);
    const a = annotator();
    a.setPublicKey(KEY_1);
    await within(a.idle(), 'the node patch');
    assert.equal(nodePatches(fake), 1);
    assert.deepEqual(annotationsOf(fake, 'Node', '', 'node-a'), { 'other.io/keep': 'yes', [WG_KEY_ANNOTATION]: KEY_1 });
    const rec = fake.requests.find((r) => r.verb === 'patch' && r.resource === 'nodes')!;
    assert.equal(rec.name, 'node-a');
    assert.equal(rec.contentType, 'application/merge-patch+json');

    for (let i = 0; i < 20; i++) a.setPublicKey(KEY_1);
    await within(a.idle(), 'idle');
    assert.equal(nodePatches(fake), 1, 'an unchanged key is not written again');

    a.setPublicKey(KEY_2);
    await within(a.idle(), 'the new key');
    assert.equal(nodePatches(fake), 2);
    assert.equal(annotationsOf(fake, 'Node', '', 'node-a')[WG_KEY_ANNOTATION], KEY_2);
  });

  it('retries a refused write with backoff until it lands', async () => {
    const { fake, annotator } = await rig([nodeObj('node-a')]);
    fake.failNext({ verb: 'patch', resource: 'nodes' }, 3, 503);
    const a = annotator({ backoff: { baseMs: 40, maxMs: 1000 } });
    const t0 = Date.now();
    a.setPublicKey(KEY_1);
    await within(fake.until(() => annotationsOf(fake, 'Node', '', 'node-a')[WG_KEY_ANNOTATION] === KEY_1, 'the key after three failures'), 'the key');
    // three failures: retries after at least 20, 40 and 80 ms (half to all of 40, 80, 160; timers may fire a little early)
    assert.ok(Date.now() - t0 >= 120, `retried after ${Date.now() - t0} ms, sooner than the backoff allows`);
    assert.equal(nodePatches(fake), 4);
    await within(a.idle(), 'idle');
    assert.equal(a.outstanding, 0);
  });

  it('feeds the control plane: a Node with the annotation yields NodeInfo.wgPublicKey; a key from a Hello wins', async () => {
    const { fake, kubeConfig, annotator } = await rig([nodeObj('node-a')]);
    const src = new KubernetesSource({ kubeConfig: kubeConfig(), logger: silent, debounceMs: 5 });
    closers.push(() => src.close());
    const changed = new Waiter();
    await within(src.start(changed.notify), 'the initial list');
    assert.equal(src.state().nodes[0]!.wgPublicKey, '');

    const a = annotator();
    a.setPublicKey(KEY_1);
    await within(changed.until(() => src.state().nodes[0]?.wgPublicKey === KEY_1), 'the key in the cluster state');
    const model = (wgKeys?: Record<string, string>) =>
      buildModel({ state: src.state(), trustDomain: 'cluster.local', ids: new PersistentIds(tmp.make()), ...(wgKeys ? { wgKeys } : {}) });
    assert.equal(model().nodes.find((n) => n.name === 'node-a')!.wgPublicKey, KEY_1);
    assert.equal(model({ 'node-a': KEY_2 }).nodes.find((n) => n.name === 'node-a')!.wgPublicKey, KEY_2);
    assert.ok(fake.count({ verb: 'patch', resource: 'nodes' }) === 1);
  });
});

describe('agent kube annotator: enrolled pods', () => {
  const pods = (): KubeObj[] => ['a', 'b', 'c'].map((n) => podObj('demo', n, { 'other.io/keep': n }));

  it('marks enrolled pods with the snapshot version that enrolled them and unmarks pods that leave', async () => {
    const { fake, annotator } = await rig(pods());
    const a = annotator();
    const local = ['demo/a', 'demo/b', 'demo/c'];
    a.enrolled(7, ['demo/a', 'demo/b'], local);
    await within(a.idle(), 'the first writes');
    assert.equal(annotationsOf(fake, 'Pod', 'demo', 'a')[REDIRECTED_ANNOTATION], '7');
    assert.equal(annotationsOf(fake, 'Pod', 'demo', 'b')[REDIRECTED_ANNOTATION], '7');
    assert.equal(annotationsOf(fake, 'Pod', 'demo', 'c')[REDIRECTED_ANNOTATION], undefined);
    assert.equal(annotationsOf(fake, 'Pod', 'demo', 'a')['other.io/keep'], 'a', 'a merge patch keeps the other annotations');
    // a fresh annotator does not know what a previous run wrote: one patch per local pod
    assert.equal(podPatches(fake), 3);

    // later snapshots (and periodic reconciles) with the same enrollment write nothing
    for (let v = 8; v < 30; v++) a.enrolled(v, ['demo/a', 'demo/b'], local);
    await within(a.idle(), 'idle');
    assert.equal(podPatches(fake), 3);
    assert.equal(annotationsOf(fake, 'Pod', 'demo', 'a')[REDIRECTED_ANNOTATION], '7');

    // b leaves the mesh: its mark goes (a null in the merge patch), a's stays
    a.enrolled(30, ['demo/a'], local);
    await within(a.idle(), 'b unmarked');
    assert.equal(podPatches(fake), 4);
    assert.deepEqual(annotationsOf(fake, 'Pod', 'demo', 'b'), { 'other.io/keep': 'b' });
    assert.equal(annotationsOf(fake, 'Pod', 'demo', 'a')[REDIRECTED_ANNOTATION], '7');

    // c comes in at 31
    a.enrolled(31, ['demo/a', 'demo/c'], local);
    await within(a.idle(), 'c marked');
    assert.equal(podPatches(fake), 5);
    assert.equal(annotationsOf(fake, 'Pod', 'demo', 'c')[REDIRECTED_ANNOTATION], '31');
    assert.equal(a.outstanding, 0);
  });

  it('a pod that leaves the node: unmarked if it was marked, forgotten once gone, never asked about again', async () => {
    const { fake, annotator } = await rig(pods());
    const a = annotator();
    a.enrolled(1, ['demo/a', 'demo/b'], ['demo/a', 'demo/b', 'demo/c']);
    await within(a.idle(), 'marked');
    assert.equal(podPatches(fake), 3);

    // c (never marked) leaves: nothing to write. a (marked) moves away but still exists: unmarked.
    // b (marked) was deleted: its removal gets a 404, which ends it.
    fake.remove('Pod', 'demo', 'b');
    a.enrolled(2, [], []);
    await within(a.idle(), 'a unmarked, b found gone');
    assert.equal(podPatches(fake), 5);
    assert.equal(annotationsOf(fake, 'Pod', 'demo', 'a')[REDIRECTED_ANNOTATION], undefined);
    for (let i = 0; i < 10; i++) a.enrolled(3 + i, [], []);
    await within(a.idle(), 'idle');
    assert.equal(podPatches(fake), 5);
    assert.equal(a.outstanding, 0);
  });

  it('a pod the snapshot names but the API server does not have is asked about once', async () => {
    const { fake, annotator } = await rig([]);
    const a = annotator();
    for (let v = 1; v <= 10; v++) a.enrolled(v, ['demo/ghost'], ['demo/ghost', 'demo/other']);
    await within(a.idle(), 'idle');
    assert.equal(podPatches(fake), 2);
    assert.equal(a.outstanding, 0);
  });

  it('retries refused writes with backoff', async () => {
    const { fake, annotator } = await rig(pods());
    fake.failNext({ verb: 'patch', resource: 'pods' }, 2, 500);
    fake.failNext({ verb: 'patch', resource: 'pods' }, 1, 429);
    const a = annotator({ concurrency: 1 });
    a.enrolled(5, ['demo/a'], ['demo/a']);
    await within(fake.until(() => annotationsOf(fake, 'Pod', 'demo', 'a')[REDIRECTED_ANNOTATION] === '5', 'the mark after three failures'), 'the mark');
    assert.equal(podPatches(fake), 4);
    await within(a.idle(), 'idle');
    assert.equal(a.outstanding, 0);
    a.enrolled(6, ['demo/a'], ['demo/a']);
    await within(a.idle(), 'idle');
    assert.equal(podPatches(fake), 4);
  });

  it('keeps at most `concurrency` patches in flight and never makes the caller wait', async () => {
    const names = Array.from({ length: 10 }, (_, i) => `p${i}`);
    const { fake, annotator } = await rig(names.map((n) => podObj('demo', n)));
    const gate = fake.stall({ verb: 'patch', resource: 'pods' });
    const a = annotator({ concurrency: 3 });
    const t0 = Date.now();
    a.enrolled(1, names.map((n) => `demo/${n}`), names.map((n) => `demo/${n}`));
    assert.ok(Date.now() - t0 < 100, 'enrolled() returns at once');
    await within(fake.until(() => fake.pending({ verb: 'patch', resource: 'pods' }) === 3, 'three patches in flight'), 'in flight');
    await sleep(50);
    assert.equal(fake.pending({ verb: 'patch', resource: 'pods' }), 3, 'no more than three');
    gate.release();
    await within(a.idle(), 'all written');
    assert.equal(podPatches(fake), 10);
    for (const n of names) assert.equal(annotationsOf(fake, 'Pod', 'demo', n)[REDIRECTED_ANNOTATION], '1');
  });

  it('close() ends in-flight writes and stops retrying', async () => {
    const { fake, annotator } = await rig(pods());
    fake.stall({ verb: 'patch', resource: 'pods' });
    const a = annotator();
    a.enrolled(1, ['demo/a'], ['demo/a']);
    await within(fake.until(() => fake.pending({ verb: 'patch', resource: 'pods' }) === 1, 'in flight'), 'in flight');
    await within(a.close(), 'close');
    const n = fake.count();
    a.enrolled(2, ['demo/b'], ['demo/b']);
    a.setPublicKey(KEY_1);
    await sleep(50);
    assert.equal(fake.count(), n);
  });
});
