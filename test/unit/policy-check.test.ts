// `nodal policy check` / Admin.Explain over a model built from the sandbox's example
// manifests (deploy/local/examples) plus two nodes: the verdicts the demo is built to show,
// each naming the stage and the policy (and rule) that decides it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { buildModel, startControlPlane, type ClusterView, type ControlPlane } from '../../control/index.ts';
import { AdminErrorCode, explain, ExplainError, type Explanation } from '../../control/admin/index.ts';
import { repoRoot } from '../helpers/paths.ts';
import { TempDirs, cluster, node, ns, pod, policy, silent, svc } from '../fixtures/control/helpers.ts';

const tmp = new TempDirs();

const NODES = `apiVersion: v1
kind: Node
metadata:
  name: node-1
  annotations: { nodal.io/tunnel-ip: 10.99.0.1, nodal.io/proxy-ip: 10.244.1.1 }
spec: { podCIDR: 10.244.1.0/24 }
status: { addresses: [{ type: InternalIP, address: 10.10.0.11 }] }
---
apiVersion: v1
kind: Node
metadata:
  name: node-2
  annotations: { nodal.io/tunnel-ip: 10.99.0.2, nodal.io/proxy-ip: 10.244.2.1 }
spec: { podCIDR: 10.244.2.0/24 }
status: { addresses: [{ type: InternalIP, address: 10.10.0.12 }] }
`;

/** an enrolled pod whose service account no rule of demo/api-allow admits */
const SNEAKY = `apiVersion: v1
kind: Pod
metadata: { name: sneaky, namespace: demo, labels: { app: sneaky } }
spec:
  nodeName: node-1
  serviceAccountName: sneaky
  containers: [{ name: c, command: ["true"] }]
status: { podIP: 10.244.1.30 }
`;

/**
 * the example manifests as the sandbox hands them to the control plane: every pod gets
 * an address (its sandbox.nodal.io/ip hint, else the next one on its node)
 */
function examplesConfigDir(): string {
  const dir = tmp.make('nodal-explain-');
  const src = join(repoRoot, 'deploy/local/examples');
  const next: Record<string, number> = {};
  for (const f of readdirSync(src).filter((n) => n.endsWith('.yaml')).sort()) {
    const docs = parseAllDocuments(readFileSync(join(src, f), 'utf8')).map((d) => d.toJS() as Record<string, any>);
    for (const d of docs) {
      if (d.kind !== 'Pod') continue;
      const node = String(d.spec.nodeName);
      const i = node.split('-')[1];
      next[node] = (next[node] ?? 1) + 1;
      d.status = { podIP: d.metadata.annotations?.['sandbox.nodal.io/ip'] ?? `10.244.${i}.${next[node]}` };
    }
    writeFileSync(join(dir, f), docs.map((d) => stringify(d)).join('---\n'));
  }
  writeFileSync(join(dir, 'nodes.yaml'), NODES);
  writeFileSync(join(dir, 'sneaky.yaml'), SNEAKY);
  return dir;
}

let cp: ControlPlane;
let view: ClusterView;
before(async () => {
  cp = await startControlPlane({ configDir: examplesConfigDir(), stateDir: tmp.make(), listen: '127.0.0.1:0', logger: silent });
  view = cp.state();
  assert.deepEqual(view.errors, []);
});
after(async () => {
  await cp.close();
  tmp.cleanup();
});

const check = (from: string, to: string, port: number, method = '', path = ''): Explanation => explain(view, { from, to, port, method, path, host: '' });

function explainError(fn: () => unknown): ExplainError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ExplainError, `expected an ExplainError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected an ExplainError');
}

describe('explain: the demo verdicts', () => {
  it('frontend → Service backend, GET /api/x: allowed by demo/api-allow rule 0 at the node-2 proxy, through the tunnel', () => {
    const e = check('demo/frontend', 'demo/backend', 80, 'get', '/api/x?q=1');
    assert.equal(e.verdict, 'ALLOWED');
    assert.match(e.summary, /^allowed by demo\/api-allow rule 0 \(at the node-2 proxy\)$/);
    assert.equal(e.destination.kind, 'service');
    assert.equal(e.destination.targetPort, 8080);
    // normalized as the proxy sees a request: method upper-cased, the query string dropped
    assert.deepEqual(e.request, { from: 'demo/frontend', to: 'demo/backend', port: 80, method: 'GET', path: '/api/x', host: '' });
    assert.equal(e.connect?.verdict, 'ALLOW');
    // admitted past backend's guard by the entry some ALLOW rule's `from` earns it
    assert.equal(e.connect?.reason, 'TO_PROXY');
    assert.match(e.connect!.lookup, /^EGRESS \d+ ↔ \d+ port 80: entry \(peer \d+, port any\) ALLOW to the proxy$/);
    assert.equal(e.backends.length, 1);
    const b = e.backends[0]!;
    assert.deepEqual(b.pods.map((p) => [p.pod, p.node, p.path]), [['demo/backend', 'node-2', 'cross-node']]);
    assert.match(b.pods[0]!.route, /node-1 proxy → WireGuard → node-2 proxy \(10\.99\.0\.2:15008\)/);
    assert.equal(b.protocol, 'http');
    assert.equal(b.l7, true);
    assert.equal(b.port, 8080);
    assert.equal(b.decision.where, 'proxy');
    assert.equal(b.decision.reason, 'ALLOW_MATCHED');
    assert.deepEqual([b.decision.policy?.namespace, b.decision.policy?.name, b.decision.hasRule, b.decision.rule], ['demo', 'api-allow', true, 0]);
    assert.deepEqual(b.decision.rules.map((r) => [r.policy, r.rule, r.from, r.to, r.matched]), [['demo/api-allow', 0, 'match', 'match', true]]);
  });

  it('frontend → backend, GET /admin: denied at the proxy, no ALLOW rule of demo/api-allow matches', () => {
    const e = check('demo/frontend', 'demo/backend', 80, 'GET', '/admin');
    assert.equal(e.verdict, 'DENIED');
    assert.equal(e.connect?.verdict, 'ALLOW');
    const d = e.backends[0]!.decision;
    assert.equal(d.reason, 'NO_ALLOW_MATCHED');
    assert.equal(d.text, 'no ALLOW rule of demo/api-allow matches');
    assert.match(e.summary, /no ALLOW rule of demo\/api-allow matches \(at the node-2 proxy\)/);
    // the principal matches, the operation does not
    assert.deepEqual(d.rules.map((r) => [r.from, r.to, r.matched]), [['match', 'no match', false]]);
  });

  it('legacy/client → backend pod: refused by the ingress guard, outside the mesh, default deny of demo/api-allow', () => {
    const e = check('legacy/client', 'demo/backend', 8080);
    assert.equal(e.destination.kind, 'pod', 'the Service has no port 8080, so the pod is meant');
    assert.equal(e.verdict, 'DENIED');
    assert.equal(e.source.enrolled, false);
    assert.equal(e.connect, undefined, 'an unenrolled source has no connect() hook');
    const b = e.backends[0]!;
    assert.equal(b.pods[0]!.path, 'direct');
    assert.equal(b.decision.where, 'ingress-guard');
    assert.equal(b.decision.reason, 'DEFAULT_DENY');
    assert.equal(b.decision.policy?.name, 'api-allow');
    assert.equal(b.decision.text, 'dropped by the ingress guard of demo/backend on node-2: default deny, demo/api-allow selects it and none of its rules admits legacy/client (cluster.local/ns/legacy/sa/default, outside the mesh)');
    assert.match(b.decision.lookup, /^INGRESS \d+ ↔ \d+ port 8080: entry \(peer \d+, port any\) DENY$/);
    assert.equal(e.summary, b.decision.text);
  });

  it('legacy/client → Service backend: the same guard on the target port, and a note that kube-proxy translates the VIP', () => {
    const e = check('legacy/client', 'demo/backend', 80);
    assert.equal(e.destination.kind, 'service');
    assert.equal(e.verdict, 'DENIED');
    assert.equal(e.backends[0]!.port, 8080);
    assert.equal(e.backends[0]!.decision.reason, 'DEFAULT_DENY');
    assert.ok(e.notes.some((n) => /kube-proxy/.test(n)));
  });

  it('an enrolled pod with another service account: refused at connect() by the default deny of demo/api-allow', () => {
    const e = check('demo/sneaky', 'demo/backend', 80, 'GET', '/api/x');
    assert.equal(e.verdict, 'DENIED');
    assert.equal(e.connect?.where, 'connect');
    assert.equal(e.connect?.verdict, 'DENY');
    assert.equal(e.connect?.reason, 'DEFAULT_DENY');
    assert.equal(e.connect?.policy?.name, 'api-allow');
    assert.equal(e.connect!.text, 'refused at connect() (EPERM) on node-1: default deny, demo/api-allow selects Service demo/backend and none of its rules admits demo/sneaky (cluster.local/ns/demo/sa/sneaky)');
    // denied by absence: no entry, the destination's guard
    assert.match(e.connect!.lookup, /^EGRESS \d+ ↔ \d+ port 80: no entry; guard of \d+ \(demo\/api-allow\) DENY$/);
    assert.deepEqual(e.connect!.rules.map((r) => [r.policy, r.from, r.to]), [['demo/api-allow', 'no match', 'n/a']]);
    assert.equal(e.summary, e.connect!.text);
    assert.deepEqual(e.backends, [], 'a refused connect() reaches no backend');
  });

  it('the same pod asked for explicitly: pod:demo/backend 8080', () => {
    const e = check('demo/frontend', 'pod:demo/backend', 8080, 'GET', '/api/items');
    assert.equal(e.destination.kind, 'pod');
    assert.equal(e.destination.appProtocol, 'http', 'the Service declares the pod\'s port');
    assert.equal(e.verdict, 'ALLOWED');
  });

  it('without a method or path: an L4-only decision, with a hint that the port speaks HTTP', () => {
    const e = check('demo/frontend', 'demo/backend', 80);
    assert.equal(e.verdict, 'DENIED');
    assert.equal(e.backends[0]!.l7, false);
    assert.equal(e.backends[0]!.decision.reason, 'NO_ALLOW_MATCHED');
    assert.ok(e.notes.some((n) => /--http-method/.test(n)));
  });

  it('a declared gRPC port: parsed per request like HTTP; no policy selects the greeter', () => {
    const e = check('demo/frontend', 'demo/greeter', 9090, 'POST', '/demo.Greeter/Hello');
    assert.equal(e.verdict, 'ALLOWED');
    const b = e.backends[0]!;
    assert.equal(b.protocol, 'http');
    assert.equal(b.l7, true);
    assert.equal(b.decision.reason, 'NO_POLICY');
    assert.equal(b.decision.text, 'no policy selects demo/greeter: allowed');
  });

  it('same node: backend → greeter stays on node-2, in-process', () => {
    const e = check('demo/backend', 'demo/greeter', 9090);
    assert.equal(e.verdict, 'ALLOWED');
    assert.equal(e.backends[0]!.pods[0]!.path, 'same-node');
  });

  it('outside the mesh to a pod no policy selects: admitted by the ingress guard', () => {
    const e = check('legacy/client', 'pod:demo/greeter', 9090);
    assert.equal(e.verdict, 'ALLOWED');
    assert.equal(e.backends[0]!.decision.where, 'ingress-guard');
    assert.match(e.backends[0]!.decision.text, /no policy selects demo\/greeter/);
  });

  it('neither side in the mesh: not enforced', () => {
    const e = check('legacy/client', 'legacy/client', 8080);
    assert.equal(e.verdict, 'ALLOWED');
    assert.equal(e.backends[0]!.decision.reason, 'NOT_ENFORCED');
  });
});

describe('explain: questions it cannot answer say what to ask instead', () => {
  it('an unknown pod: NOT_FOUND with the close match', () => {
    const err = explainError(() => check('demo/frontnd', 'demo/backend', 80));
    assert.equal(err.code, AdminErrorCode.NOT_FOUND);
    assert.deepEqual(err.suggestions, ['demo/frontend']);
    assert.equal(err.message, '--from: no pod demo/frontnd (did you mean demo/frontend?)');
  });

  it('the right name in the wrong namespace', () => {
    const err = explainError(() => check('default/frontend', 'demo/backend', 80));
    assert.deepEqual(err.suggestions, ['demo/frontend']);
  });

  it('nothing close: the pods of that namespace', () => {
    const err = explainError(() => check('demo/zzzzzzzzzz', 'demo/backend', 80));
    assert.match(err.message, /no pod demo\/zzzzzzzzzz; pods in demo: backend, frontend, greeter, sneaky/);
  });

  it('an unknown namespace: the namespaces that have pods', () => {
    const err = explainError(() => check('nowhere/frontend-zz', 'demo/backend', 80));
    assert.match(err.message, /namespace nowhere has none \(namespaces that have: demo, legacy\)/);
  });

  it('an unknown destination, pod or Service', () => {
    const err = explainError(() => check('demo/frontend', 'demo/backnd', 80));
    assert.equal(err.code, AdminErrorCode.NOT_FOUND);
    assert.match(err.message, /^--to: no pod or Service demo\/backnd \(did you mean demo\/backend\?\)$/);
  });

  it('a bare name: INVALID, naming the namespaces that hold it', () => {
    const err = explainError(() => check('frontend', 'demo/backend', 80));
    assert.equal(err.code, AdminErrorCode.INVALID);
    assert.match(err.message, /--from: "frontend" is not namespace\/pod \(did you mean demo\/frontend\?\)/);
  });

  it('a Service port that does not exist lists the ports', () => {
    const err = explainError(() => check('demo/frontend', 'svc:demo/backend', 81));
    assert.equal(err.code, AdminErrorCode.INVALID);
    assert.match(err.message, /Service demo\/backend has no TCP port 81 \(ports: 80\/http\)/);
  });

  it('a bad port or path', () => {
    assert.equal(explainError(() => check('demo/frontend', 'demo/backend', 0)).code, AdminErrorCode.INVALID);
    assert.match(explainError(() => check('demo/frontend', 'demo/backend', 80, 'GET', 'api')).message, /--http-path: "api" must start with \//);
  });
});

describe('explain: a Service whose backends differ', () => {
  const ids = new Map<string, number>();
  const alloc = { id: (kind: string, key: string): number => {
    const k = `${kind}/${key}`;
    if (!ids.has(k)) ids.set(k, (kind === 'identities' ? 256 : 1) + [...ids.keys()].filter((x) => x.startsWith(`${kind}/`)).length);
    return ids.get(k)!;
  } };
  const enrolled = { 'nodal.io/mesh': 'enabled' };
  const m = buildModel({
    trustDomain: 'cluster.local', ids: alloc,
    state: cluster({
      namespaces: [ns('shop', enrolled)],
      nodes: [node('node-a', '192.168.0.1', { tunnelIp: '10.99.0.1' }), node('node-b', '192.168.0.2', { tunnelIp: '10.99.0.2' })],
      pods: [
        pod('shop', 'web', { serviceAccount: 'web', labels: { app: 'web' }, podIp: '10.0.1.5', nodeName: 'node-a' }),
        pod('shop', 'api-v1', { serviceAccount: 'api', labels: { app: 'api', track: 'stable' }, podIp: '10.0.1.6', nodeName: 'node-a' }),
        pod('shop', 'api-v2', { serviceAccount: 'api-canary', labels: { app: 'api', track: 'canary' }, podIp: '10.0.2.6', nodeName: 'node-b' }),
      ],
      services: [svc('shop', 'api', { clusterIp: '10.96.1.1', selector: { app: 'api' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP', appProtocol: 'http' }] })],
      policies: [policy('shop', 'canary-no-admin', { action: 'DENY', matchLabels: { track: 'canary' }, rules: [{ from: [], to: [{ paths: ['/admin*'] }], when: [] }] })],
    }),
  });
  const mv = { ...m, version: 1 };

  it('explains each backend identity: MIXED, the canary denied by its DENY rule, the stable one allowed', () => {
    const e = explain(mv, { from: 'shop/web', to: 'shop/api', port: 80, method: 'GET', path: '/admin/x', host: '' });
    assert.equal(e.verdict, 'MIXED');
    assert.equal(e.destination.identity, 0);
    assert.ok(e.notes.some((n) => /different identities/.test(n)));
    const by = Object.fromEntries(e.backends.map((b) => [b.pods[0]!.pod, b]));
    assert.equal(by['shop/api-v1']!.decision.reason, 'NO_POLICY');
    assert.equal(by['shop/api-v1']!.pods[0]!.path, 'same-node');
    assert.equal(by['shop/api-v2']!.decision.text, 'denied by shop/canary-no-admin rule 0');
    assert.equal(by['shop/api-v2']!.pods[0]!.path, 'cross-node');
    assert.match(e.summary, /^allowed to 1 of 2 backends; /);
  });

  it('the same request elsewhere: allowed to both', () => {
    const e = explain(mv, { from: 'shop/web', to: 'shop/api', port: 80, method: 'GET', path: '/', host: '' });
    assert.equal(e.verdict, 'ALLOWED');
    assert.equal(e.backends.length, 2, 'two identities, two groups');
  });
});

describe('explain: with a Kubernetes NetworkPolicy', () => {
  let npCp: ControlPlane;
  before(async () => {
    const dir = examplesConfigDir();
    writeFileSync(join(dir, 'netpol.yaml'), `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: frontend-no-egress, namespace: demo }
spec:
  podSelector: { matchLabels: { app: frontend } }
  policyTypes: [Egress]
`);
    npCp = await startControlPlane({ configDir: dir, stateDir: tmp.make(), listen: '127.0.0.1:0', logger: silent });
    assert.deepEqual(npCp.state().errors, []);
  });
  after(async () => { await npCp.close(); });

  it('refuses at connect() what a NetworkPolicy isolates, naming it, from the entries the agent holds', () => {
    const v = npCp.state();
    const snap = (n: string) => npCp.snapshotFor(n);
    const e = explain({ ...v, l4For: (n) => snap(n).l4, networkPolicies: snap('node-1').networkPolicies ?? [] },
      { from: 'demo/frontend', to: 'demo/backend', port: 80, method: 'GET', path: '/api/x', host: '' });
    assert.equal(e.verdict, 'DENIED');
    assert.equal(e.connect?.verdict, 'DENY');
    assert.equal(e.connect?.policy?.name, 'frontend-no-egress');
  });
});
