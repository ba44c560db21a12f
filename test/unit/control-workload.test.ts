// A pod's workload, as Hubble's flow.Endpoint.workloads names it: from the pod's
// controller ownerReference, a Deployment's ReplicaSet taken back to the Deployment.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildModel } from '../../control/index.ts';
import { parseDocument, workloadOf } from '../../control/cluster/kinds.ts';
import type { PodObject } from '../../control/cluster/state.ts';
import { PersistentIds } from '../../control/model/ids.ts';
import { TempDirs, cluster } from '../fixtures/control/helpers.ts';

const tmp = new TempDirs();
after(() => tmp.cleanup());

/** controller null: the field left out */
const owner = (kind: string, name: string, controller: boolean | null = true): Record<string, unknown> => ({
  apiVersion: kind === 'Job' ? 'batch/v1' : 'apps/v1', kind, name, uid: `uid-${name}`,
  ...(controller !== null ? { controller } : {}), blockOwnerDeletion: true,
});

const podDoc = (name: string, labels: Record<string, string>, ownerReferences?: unknown[]): Record<string, unknown> => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name, namespace: 'demo', labels, ...(ownerReferences ? { ownerReferences } : {}) },
  spec: { nodeName: 'node-a', serviceAccountName: 'sa' },
  status: { podIP: '10.0.0.9', phase: 'Running' },
});

function parsePod(doc: Record<string, unknown>): PodObject {
  const r = parseDocument(doc, 'pods.yaml', 0);
  assert.equal(r.result, 'ok', JSON.stringify(r));
  assert.ok(r.result === 'ok' && r.object.kind === 'Pod');
  return r.object.value;
}

describe('pod workload from its controller', () => {
  const cases: Array<[string, Record<string, string>, unknown[] | undefined, { kind: string; name: string } | undefined]> = [
    ['a Deployment, through a ReplicaSet named <deployment>-<pod-template-hash>',
      { app: 'api', 'pod-template-hash': '7f9c5d' }, [owner('ReplicaSet', 'api-server-7f9c5d')], { kind: 'Deployment', name: 'api-server' }],
    ['a ReplicaSet whose name does not end in the pod-template-hash',
      { app: 'api', 'pod-template-hash': '7f9c5d' }, [owner('ReplicaSet', 'api-server-abc12')], { kind: 'ReplicaSet', name: 'api-server-abc12' }],
    ['a ReplicaSet without a pod-template-hash label (not made by a Deployment)',
      { app: 'api' }, [owner('ReplicaSet', 'api-server-7f9c5d')], { kind: 'ReplicaSet', name: 'api-server-7f9c5d' }],
    ['a ReplicaSet named exactly -<hash> leaves no Deployment name',
      { 'pod-template-hash': 'x1' }, [owner('ReplicaSet', '-x1')], { kind: 'ReplicaSet', name: '-x1' }],
    ['a StatefulSet', { app: 'db' }, [owner('StatefulSet', 'db')], { kind: 'StatefulSet', name: 'db' }],
    ['a DaemonSet', { app: 'agent' }, [owner('DaemonSet', 'node-agent')], { kind: 'DaemonSet', name: 'node-agent' }],
    // a CronJob's Job: the CronJob is not visible from the pod, so it stays a Job
    ['a Job', { 'job-name': 'backup-28999' }, [owner('Job', 'backup-28999')], { kind: 'Job', name: 'backup-28999' }],
    ['a bare pod (no ownerReferences)', { app: 'debug' }, undefined, undefined],
    ['a pod whose only owner is not its controller', { app: 'x' }, [owner('StatefulSet', 'db', false), owner('DaemonSet', 'ds', null)], undefined],
    ['the controller among several owners', { app: 'x', 'pod-template-hash': 'h1' },
      [owner('StatefulSet', 'other', false), owner('ReplicaSet', 'web-h1')], { kind: 'Deployment', name: 'web' }],
  ];
  for (const [what, labels, refs, want] of cases) {
    it(what, () => {
      assert.deepEqual(workloadOf(refs, labels), want);
      const p = parsePod(podDoc('p', labels, refs));
      assert.deepEqual(p.workload, want);
      if (want === undefined) assert.ok(!('workload' in p), 'absent, not present-and-undefined');
    });
  }

  it('rejects a malformed ownerReference with its field path', () => {
    const r = parseDocument(podDoc('p', {}, [{ apiVersion: 'apps/v1', name: 'db', controller: true }]), 'pods.yaml', 0);
    assert.equal(r.result, 'error');
    assert.ok(r.result === 'error');
    assert.equal(r.error.field, 'metadata.ownerReferences[0].kind');
    const r2 = parseDocument(podDoc('p', {}, [{ kind: 'StatefulSet', name: 'db', controller: 'yes' }]), 'pods.yaml', 0);
    assert.ok(r2.result === 'error');
    assert.equal(r2.error.field, 'metadata.ownerReferences[0].controller');
  });

  it('reaches the model\'s EndpointInfo, absent for a bare pod', () => {
    const deployed = parsePod(podDoc('api-7f9c5d-x2x', { app: 'api', 'pod-template-hash': '7f9c5d' }, [owner('ReplicaSet', 'api-7f9c5d')]));
    const bare = { ...parsePod(podDoc('debug', { app: 'debug' })), podIp: '10.0.0.10' };
    const m = buildModel({ state: cluster({ pods: [deployed, bare] }), trustDomain: 'cluster.local', ids: new PersistentIds(tmp.make()) });
    assert.deepEqual(m.endpoints.find((e) => e.name === 'api-7f9c5d-x2x')!.workload, { kind: 'Deployment', name: 'api' });
    assert.ok(!('workload' in m.endpoints.find((e) => e.name === 'debug')!));
  });
});
