// Kernel verdicts into flows: endpoints enriched from the snapshot, Hubble's drop reasons,
// and every verdict naming the policy (and rule) that decided it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Snapshot } from '../../control/api/types.ts';
import type { VerdictEvent } from '../../agent/datapath/index.ts';
import { flowFromVerdictEvent, formatCompact } from '../../agent/flows/index.ts';

const snapshot: Snapshot = {
  version: 42,
  node: 'node-a',
  trustDomain: 'cluster.local',
  nodes: [],
  identities: [
    { id: 256, namespace: 'backend', serviceAccount: 'api', labels: { app: 'api' }, spiffeId: 'spiffe://cluster.local/ns/backend/sa/api' },
    { id: 257, namespace: 'frontend', serviceAccount: 'web', labels: { app: 'web' }, spiffeId: 'spiffe://cluster.local/ns/frontend/sa/web' },
    { id: 300, namespace: 'remote', serviceAccount: 'job', labels: { app: 'job' }, spiffeId: 'spiffe://cluster.local/ns/remote/sa/job' },
  ],
  endpoints: [
    { namespace: 'frontend', name: 'web-1', uid: 'u1', node: 'node-a', ip: '10.0.1.5', identity: 257, labels: { app: 'web' }, serviceAccount: 'web', enrolled: true, workload: { kind: 'Deployment', name: 'web' } },
    { namespace: 'backend', name: 'api-7', uid: 'u2', node: 'node-a', ip: '10.0.1.9', identity: 256, labels: { app: 'api' }, serviceAccount: 'api', enrolled: true, defaultDenyPolicyId: 7 },
  ],
  services: [{ namespace: 'backend', name: 'api', id: 1, clusterIp: '10.96.0.10', ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], backends: [{ ip: '10.0.1.9', node: 'node-a', identity: 256, pod: 'api-7' }], identity: 256 }],
  policies: [
    { id: 7, namespace: 'backend', name: 'api-allow', action: 'ALLOW', selects: [256], rules: [] },
    { id: 9, namespace: 'backend', name: 'no-batch', action: 'DENY', selects: [256], rules: [] },
  ],
  l4: [],
};

function ev(over: Partial<VerdictEvent> = {}): VerdictEvent {
  return {
    timeNs: 1_700_000_000_123_456_789n, cookie: 1n, cgroupId: 2n,
    source: { ip: '10.0.1.5', port: 0 }, destination: { ip: '10.0.1.9', port: 8080 },
    family: 4, proto: 6, verdict: 'DROPPED', reason: 'POLICY_DENY', hook: 'connect4', direction: 'EGRESS',
    endpointId: 12, srcIdentity: 257, dstIdentity: 256, policyId: 9, rule: 1,
    ...over,
  };
}

describe('flowFromVerdictEvent', () => {
  it('a DENY rule at connect: POLICY_DENY, egress_denied_by names the policy and rule', () => {
    const f = flowFromVerdictEvent(ev(), { node: 'node-a', snapshot });
    assert.equal(f.verdict, 'DROPPED');
    assert.equal(f.dropReasonDesc, 'POLICY_DENY');
    assert.deepEqual(f.egressDeniedBy, [{ name: 'no-batch', namespace: 'backend', kind: 'MeshPolicy', labels: ['rule=1'], revision: 42 }]);
    assert.equal(f.ingressDeniedBy, undefined);
    assert.equal(f.summary, 'denied by MeshPolicy backend/no-batch rule 1');
    assert.deepEqual(f.time, { seconds: 1_700_000_000, nanos: 123_456_789 });
    assert.equal(f.nodeName, 'node-a');
    assert.equal(f.Type, 'L3_L4');
    assert.equal(f.trafficDirection, 'EGRESS');
    assert.equal(f.isReply, false);
    assert.deepEqual(f.IP, { source: '10.0.1.5', destination: '10.0.1.9', ipVersion: 'IPv4' });
    assert.deepEqual(f.l4, { TCP: { sourcePort: 0, destinationPort: 8080 } });
    assert.deepEqual(f.eventType, { type: 1, subType: 181 });
    assert.match(f.uuid, /^[0-9a-f-]{36}$/);
  });

  it('enriches both endpoints from the snapshot (pod, namespace, labels, identity, endpoint id)', () => {
    const f = flowFromVerdictEvent(ev(), { node: 'node-a', snapshot });
    assert.deepEqual(f.source, {
      identity: 257, ID: 12, namespace: 'frontend', podName: 'web-1',
      labels: ['k8s:app=web', 'k8s:io.kubernetes.pod.namespace=frontend'],
      workloads: [{ name: 'web', kind: 'Deployment' }],
    });
    // a pod without a controller has no workloads, as in Hubble
    assert.deepEqual(f.destination, {
      identity: 256, namespace: 'backend', podName: 'api-7',
      labels: ['k8s:app=api', 'k8s:io.kubernetes.pod.namespace=backend'],
    });
  });

  it('shares the frozen source endpoint, workloads included, across flows of one snapshot', () => {
    const a = flowFromVerdictEvent(ev(), { node: 'node-a', snapshot });
    const b = flowFromVerdictEvent(ev({ rule: 2 }), { node: 'node-a', snapshot });
    assert.equal(a.source, b.source);
    assert.ok(Object.isFrozen(a.source!.workloads) && Object.isFrozen(a.source!.workloads![0]));
  });

  it('default deny: Hubble POLICY_DENIED and the ALLOW policy that selects the workload', () => {
    const f = flowFromVerdictEvent(ev({ reason: 'DEFAULT_DENY', policyId: 7, rule: 0 }), { node: 'node-a', snapshot });
    assert.equal(f.dropReasonDesc, 'POLICY_DENIED');
    assert.equal(f.summary, 'default deny: no ALLOW rule of MeshPolicy backend/api-allow matches');
    assert.deepEqual(f.egressDeniedBy?.map((p) => [p.name, p.namespace, p.labels]), [['api-allow', 'backend', ['default-deny']]]);
    assert.deepEqual(f.eventType, { type: 1, subType: 133 });
    assert.equal(formatCompact(f, { policyNames: true }),
      'Nov 14 22:13:20.123: frontend/web-1 (ID:257) -> backend/api-7:8080 (ID:256) Policy denied DROPPED BY api-allow (MeshPolicy) (default deny: no ALLOW rule of MeshPolicy backend/api-allow matches)');
  });

  it('the ingress hook fills ingress_denied_by and puts the endpoint id on the destination', () => {
    const f = flowFromVerdictEvent(ev({ hook: 'ingress', direction: 'INGRESS', source: { ip: '192.168.7.20', port: 51000 }, srcIdentity: 2 }), { node: 'node-a', snapshot });
    assert.deepEqual(f.ingressDeniedBy?.map((p) => p.name), ['no-batch']);
    assert.equal(f.egressDeniedBy, undefined);
    assert.equal(f.trafficDirection, 'INGRESS');
    assert.equal(f.destination?.ID, 12);
    assert.equal(f.source?.ID, undefined);
    assert.deepEqual(f.source, { identity: 2, labels: ['reserved:world'] });
    assert.deepEqual(f.l4?.TCP?.flags, { SYN: true });
  });

  it('not from the proxy: a clear nodal summary, POLICY_DENIED', () => {
    const f = flowFromVerdictEvent(ev({ hook: 'ingress', direction: 'INGRESS', reason: 'NOT_FROM_PROXY', policyId: 0 }), { node: 'node-a', snapshot });
    assert.equal(f.dropReasonDesc, 'POLICY_DENIED');
    assert.match(f.summary!, /must come through its node proxy/);
    assert.equal(f.ingressDeniedBy, undefined);
  });

  it('allowed and redirected: egress_allowed_by with the rule, a trace to the proxy', () => {
    const f = flowFromVerdictEvent(ev({ verdict: 'REDIRECTED', reason: 'POLICY_ALLOW', policyId: 7, rule: 2 }), { node: 'node-a', snapshot });
    assert.equal(f.verdict, 'REDIRECTED');
    assert.equal(f.dropReasonDesc, undefined);
    assert.deepEqual(f.egressAllowedBy?.map((p) => [p.name, p.labels]), [['api-allow', ['rule=2']]]);
    assert.equal(f.summary, 'redirected to the node proxy: allowed by MeshPolicy backend/api-allow rule 2');
    assert.deepEqual(f.eventType, { type: 4, subType: 1 });
  });

  it('a redirect names no policy: the destination decides at its proxy', () => {
    const f = flowFromVerdictEvent(ev({ verdict: 'REDIRECTED', reason: 'DEFAULT_ALLOW', policyId: 0 }), { node: 'node-a', snapshot });
    assert.equal(f.summary, 'redirected to the node proxy');
    assert.equal(f.egressAllowedBy, undefined);
  });

  it('a source admitted past the destination\'s guard reads like any redirect: the proxy decides', () => {
    const f = flowFromVerdictEvent(ev({ verdict: 'REDIRECTED', reason: 'TO_PROXY', policyId: 0 }), { node: 'node-a', snapshot });
    assert.equal(f.summary, 'redirected to the node proxy');
    assert.equal(f.egressAllowedBy, undefined);
  });

  it('names the source pod of a connect() by its cgroup: the socket has no address yet', () => {
    const client = snapshot.endpoints[0]!;
    const f = flowFromVerdictEvent(ev({ source: { ip: '::', port: 0 }, verdict: 'REDIRECTED', reason: 'DEFAULT_ALLOW', policyId: 0 }),
      { node: 'node-a', snapshot, localEndpoint: () => client });
    assert.equal(f.IP?.source, client.ip);
    assert.equal(f.source?.podName, client.name);
  });

  it('names a Kubernetes NetworkPolicy behind a default deny by its kind', () => {
    const withNp: Snapshot = { ...snapshot, networkPolicies: [{ id: 77, namespace: 'backend', name: 'deny-all' }] };
    const f = flowFromVerdictEvent(ev({ reason: 'DEFAULT_DENY', policyId: 77 }), { node: 'node-a', snapshot: withNp });
    assert.deepEqual(f.egressDeniedBy?.map((p) => [p.kind, p.namespace, p.name]), [['NetworkPolicy', 'backend', 'deny-all']]);
    assert.equal(f.summary, 'default deny: no ALLOW rule of NetworkPolicy backend/deny-all matches');
  });

  it('a policy id the snapshot does not know is still named, not dropped', () => {
    const f = flowFromVerdictEvent(ev({ policyId: 99 }), { node: 'node-a', snapshot });
    assert.deepEqual(f.egressDeniedBy?.map((p) => p.name), ['policy-99']);
    assert.equal(f.summary, 'denied by policy id 99 (not in the current snapshot) rule 1');
  });

  it('a Service VIP destination names the Service; identity-only peers get namespace and labels', () => {
    const f = flowFromVerdictEvent(ev({ destination: { ip: '10.96.0.10', port: 80 }, verdict: 'REDIRECTED', reason: 'DEFAULT_ALLOW', policyId: 0 }), { node: 'node-a', snapshot });
    assert.deepEqual(f.destinationService, { name: 'api', namespace: 'backend' });
    assert.deepEqual(f.destination, { identity: 256, namespace: 'backend', labels: ['k8s:app=api', 'k8s:io.kubernetes.pod.namespace=backend'] });
    assert.match(formatCompact(f), /-> backend\/api:80 \(ID:256\) to-proxy REDIRECTED/);
  });

  it('without a snapshot: addresses and identities only, and IPv6/UDP handled', () => {
    const f = flowFromVerdictEvent(ev({ family: 6, proto: 17, source: { ip: 'fd00::5', port: 5353 }, destination: { ip: 'fd00::9', port: 53 } }), { node: 'node-a' });
    assert.equal(f.IP?.ipVersion, 'IPv6');
    assert.deepEqual(f.l4, { UDP: { sourcePort: 5353, destinationPort: 53 } });
    assert.deepEqual(f.source, { identity: 257, ID: 12 });
    assert.deepEqual(f.egressDeniedBy?.map((p) => p.name), ['policy-9']);
  });
});
