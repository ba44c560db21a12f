import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildModel, identityLabels, DirectorySource, type ClusterState } from '../../control/index.ts';
import { PersistentIds } from '../../control/model/ids.ts';
import { TempDirs, cluster, configDirWithCluster, ns, pod, silent, svc } from '../fixtures/control/helpers.ts';

const tmp = new TempDirs();
after(() => tmp.cleanup());

const build = (state: ClusterState, stateDir = tmp.make()) => {
  const ids = new PersistentIds(stateDir);
  const model = buildModel({ state, trustDomain: 'cluster.local', ids });
  ids.flush();
  return model;
};

describe('identity', () => {
  it('drops rollout, per-pod and nodal labels from the identity', () => {
    assert.deepEqual(identityLabels({
      app: 'api', version: 'v1', 'pod-template-hash': '7f9c', 'controller-revision-hash': 'abc',
      'statefulset.kubernetes.io/pod-name': 'db-0', 'pod-template-generation': '3', 'nodal.io/mesh': 'disabled', 'nodal.io/anything': 'x',
    }), { app: 'api', version: 'v1' });
  });

  it('gives pods of one workload one identity across rollouts, and others their own', () => {
    const m = build(cluster({
      pods: [
        pod('demo', 'api-1', { labels: { app: 'api', 'pod-template-hash': 'a' }, serviceAccount: 'api', podIp: '10.0.0.1' }),
        pod('demo', 'api-2', { labels: { app: 'api', 'pod-template-hash': 'b' }, serviceAccount: 'api', podIp: '10.0.0.2' }),
        pod('demo', 'api-other-sa', { labels: { app: 'api' }, serviceAccount: 'other', podIp: '10.0.0.3' }),
        pod('prod', 'api-1', { labels: { app: 'api' }, serviceAccount: 'api', podIp: '10.0.0.4' }),
      ],
    }));
    const id = (name: string, n = 'demo') => m.endpoints.find((e) => e.name === name && e.namespace === n)!.identity;
    assert.equal(id('api-1'), id('api-2'));
    assert.notEqual(id('api-1'), id('api-other-sa'));
    assert.notEqual(id('api-1'), id('api-1', 'prod'));
    assert.ok(m.identities.every((i) => i.id >= 256));
    const api = m.identities.find((i) => i.id === id('api-1'))!;
    assert.deepEqual(api, { id: api.id, namespace: 'demo', serviceAccount: 'api', labels: { app: 'api' }, spiffeId: 'spiffe://cluster.local/ns/demo/sa/api' });
  });

  it('defaults the service account to "default" and uses the trust domain', async () => {
    const stateDir = tmp.make();
    const ids = new PersistentIds(stateDir);
    const m = buildModel({ state: cluster({ pods: [pod('demo', 'p', { podIp: '10.0.0.1' })] }), trustDomain: 'example.org', ids });
    assert.equal(m.identities[0]!.spiffeId, 'spiffe://example.org/ns/demo/sa/default');
    // and from YAML: a pod without serviceAccountName gets "default"
    const src = new DirectorySource({ dir: configDirWithCluster(tmp), logger: silent });
    await src.start(() => {});
    assert.equal(src.state().pods.find((p) => p.name === 'outsider')!.serviceAccount, 'default');
    await src.close();
  });

  it('keeps ids stable across a restart over the same state directory, whatever the order', () => {
    const stateDir = tmp.make();
    const pods = ['a', 'b', 'c', 'd'].map((n, i) => pod('demo', n, { labels: { app: n }, podIp: `10.0.0.${i + 1}` }));
    const svcs = [svc('demo', 's1'), svc('demo', 's2')];
    const first = build(cluster({ pods, services: svcs }), stateDir);
    const saved = JSON.parse(readFileSync(join(stateDir, 'identities.json'), 'utf8')) as { identities: Record<string, number> };
    assert.equal(Object.keys(saved.identities).length, 4);
    // a new instance, objects delivered in another order, one workload gone and a new one added
    const again = build(cluster({
      pods: [pods[3]!, pods[1]!, pods[0]!, pod('demo', 'e', { labels: { app: 'e' }, podIp: '10.0.0.9' })],
      services: [svcs[1]!, svcs[0]!],
    }), stateDir);
    for (const e of again.endpoints.filter((x) => x.name !== 'e')) {
      assert.equal(e.identity, first.endpoints.find((x) => x.name === e.name)!.identity, e.name);
    }
    // the gone workload's id is never handed to another
    const gone = first.endpoints.find((x) => x.name === 'c')!.identity;
    assert.ok(again.endpoints.find((x) => x.name === 'e')!.identity > gone);
    assert.deepEqual(again.services.map((s) => [s.name, s.id]), first.services.map((s) => [s.name, s.id]));
  });

  it('allocates identities to pods outside the mesh too (they are peers), not to finished pods', () => {
    const m = build(cluster({
      namespaces: [ns('other')],
      pods: [pod('other', 'o', { podIp: '10.0.0.1' }), pod('other', 'done', { labels: { job: 'x' }, phase: 'Succeeded', podIp: '10.0.0.2' })],
    }));
    assert.equal(m.endpoints.length, 1);
    assert.equal(m.endpoints[0]!.enrolled, false);
    assert.equal(m.identities.length, 1);
  });
});

describe('enrollment', () => {
  const pods = [
    pod('demo', 'in', { podIp: '10.0.0.1' }),
    pod('demo', 'opted-out', { labels: { 'nodal.io/mesh': 'disabled' }, podIp: '10.0.0.2' }),
    pod('other', 'out', { podIp: '10.0.0.3' }),
    pod('demo', 'no-ip'),
  ];
  const enrolled = (state: ClusterState) => Object.fromEntries(build(state).endpoints.map((e) => [e.name, e.enrolled]));

  it('enrolls by namespace label and honours the pod opt-out', () => {
    assert.deepEqual(enrolled(cluster({ namespaces: [ns('demo', { 'nodal.io/mesh': 'enabled' }), ns('other')], pods })),
      { in: true, 'opted-out': false, out: false });
  });

  it('unenrolls when the namespace label is removed, keeping identities', () => {
    const stateDir = tmp.make();
    const on = build(cluster({ namespaces: [ns('demo', { 'nodal.io/mesh': 'enabled' })], pods }), stateDir);
    const off = build(cluster({ namespaces: [ns('demo', {})], pods }), stateDir);
    assert.deepEqual(off.endpoints.map((e) => e.enrolled), [false, false, false]);
    assert.deepEqual(off.endpoints.map((e) => e.identity), on.endpoints.map((e) => e.identity));
    // the opt-out label is not part of the identity
    assert.equal(on.endpoints.find((e) => e.name === 'in')!.identity, on.endpoints.find((e) => e.name === 'opted-out')!.identity);
  });

  it('treats a namespace without a Namespace object, or another label value, as not enrolled', () => {
    assert.deepEqual(enrolled(cluster({ namespaces: [ns('demo', { 'nodal.io/mesh': 'true' })], pods })), { in: false, 'opted-out': false, out: false });
  });
});

describe('services', () => {
  it('selects running addressed pods of its namespace and resolves named target ports', () => {
    const m = build(cluster({
      pods: [
        pod('demo', 'api-1', { labels: { app: 'api', 'pod-template-hash': 'x' }, podIp: '10.0.0.1', nodeName: 'node-b', namedPorts: { http: 8080 } }),
        pod('demo', 'api-2', { labels: { app: 'api' }, podIp: '10.0.0.2', namedPorts: { http: 8080 } }),
        pod('demo', 'api-pending', { labels: { app: 'api' }, phase: 'Pending' }),
        pod('demo', 'api-no-ip', { labels: { app: 'api' } }),
        pod('prod', 'api', { labels: { app: 'api' }, podIp: '10.0.0.3' }),
        pod('demo', 'web', { labels: { app: 'web' }, podIp: '10.0.0.4' }),
      ],
      services: [svc('demo', 'api', {
        clusterIp: '10.96.0.10', selector: { app: 'api' },
        ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP', appProtocol: 'http' }, { port: 81, targetPort: 'nope', protocol: 'TCP' }],
      })],
    }));
    const [s] = m.services;
    const apiId = m.endpoints.find((e) => e.name === 'api-1')!.identity;
    assert.deepEqual(s!.backends, [
      { ip: '10.0.0.1', node: 'node-b', identity: apiId, pod: 'api-1' },
      { ip: '10.0.0.2', node: 'node-a', identity: apiId, pod: 'api-2' },
    ]);
    assert.equal(s!.identity, apiId);
    assert.deepEqual(s!.ports, [
      { name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', appProtocol: 'http' },
      { port: 81, targetPort: 0, protocol: 'TCP' },
    ]);
    assert.ok(s!.id >= 1);
  });

  it('has identity 0 when backends differ, and no backends without a selector', () => {
    const m = build(cluster({
      pods: [pod('demo', 'a', { labels: { tier: 'x', app: 'a' }, podIp: '10.0.0.1' }), pod('demo', 'b', { labels: { tier: 'x', app: 'b' }, podIp: '10.0.0.2' })],
      services: [svc('demo', 'mixed', { selector: { tier: 'x' } }), svc('demo', 'manual')],
    }));
    assert.equal(m.services.find((s) => s.name === 'mixed')!.backends.length, 2);
    assert.equal(m.services.find((s) => s.name === 'mixed')!.identity, 0);
    assert.deepEqual(m.services.find((s) => s.name === 'manual')!.backends, []);
    assert.equal(m.services.find((s) => s.name === 'manual')!.identity, 0);
  });
});

describe('nodes', () => {
  it('carries underlay, tunnel and proxy addresses, pod CIDRs, and reported keys over the record', async () => {
    const src = new DirectorySource({ dir: configDirWithCluster(tmp), logger: silent });
    await src.start(() => {});
    const ids = new PersistentIds(tmp.make());
    const m = buildModel({ state: src.state(), trustDomain: 'cluster.local', ids, wgKeys: { 'node-b': 'KEY-B' } });
    assert.deepEqual(m.nodes, [
      { name: 'node-a', underlayIp: '192.168.50.11', tunnelIp: '10.99.0.1', podCidrs: ['10.244.1.0/24'], wgPublicKey: '', proxyIp: '10.244.1.1' },
      { name: 'node-b', underlayIp: '192.168.50.12', tunnelIp: '10.99.0.2', podCidrs: ['10.244.2.0/24'], wgPublicKey: 'KEY-B', proxyIp: '10.244.2.1' },
    ]);
    assert.deepEqual(src.errors(), []);
    await src.close();
  });
});
