import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildModel, l4ForNode, type ClusterState, type L4Entry, type MeshPolicyObject } from '../../control/index.ts';
import { PersistentIds } from '../../control/model/ids.ts';
import { TempDirs, cluster, ns, pod, policy, svc } from '../fixtures/control/helpers.ts';

const tmp = new TempDirs();
after(() => tmp.cleanup());

// demo is enrolled; node-a runs client and api-2, node-b runs api-1 and db; other/outsider is outside the mesh
const base = (): ClusterState => cluster({
  namespaces: [ns('demo', { 'nodal.io/mesh': 'enabled' }), ns('other')],
  pods: [
    pod('demo', 'client', { labels: { app: 'client' }, serviceAccount: 'client', podIp: '10.0.1.10', nodeName: 'node-a' }),
    pod('demo', 'api-2', { labels: { app: 'api', 'pod-template-hash': 'b' }, serviceAccount: 'api', podIp: '10.0.1.21', nodeName: 'node-a' }),
    pod('demo', 'api-1', { labels: { app: 'api', 'pod-template-hash': 'a' }, serviceAccount: 'api', podIp: '10.0.2.20', nodeName: 'node-b' }),
    pod('demo', 'db', { labels: { app: 'db' }, serviceAccount: 'db', podIp: '10.0.2.40', nodeName: 'node-b' }),
    pod('other', 'outsider', { labels: { app: 'outsider' }, podIp: '10.0.2.30', nodeName: 'node-b' }),
  ],
  services: [svc('demo', 'api', { clusterIp: '10.96.0.10', selector: { app: 'api' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] })],
});

function compile(policies: MeshPolicyObject[], state = base()) {
  const ids = new PersistentIds(tmp.make());
  const m = buildModel({ state: { ...state, policies }, trustDomain: 'cluster.local', ids });
  const id = (name: string) => m.endpoints.find((e) => e.name === name)!.identity;
  const pid = (name: string) => m.policies.find((p) => p.name === name)!.id;
  const egress = (n: string) => l4ForNode(n, m.endpoints, m.policies).filter((e) => e.direction === 'EGRESS');
  const ingress = (n: string) => l4ForNode(n, m.endpoints, m.policies).filter((e) => e.direction === 'INGRESS');
  return { m, id, pid, egress, ingress };
}

/** a DENY rule matched: named after that rule */
const explicit = (localIdentity: number, peerIdentity: number, policyId: number, rule = 0, direction: L4Entry['direction'] = 'EGRESS'): L4Entry =>
  ({ direction, localIdentity, peerIdentity, port: 0, action: 'DENY', policyId, rule });
/** no ALLOW rule of the selecting policy admits the peer: a default deny naming that policy */
const deny = (localIdentity: number, peerIdentity: number, policyId: number, rule = 0, direction: L4Entry['direction'] = 'EGRESS'): L4Entry =>
  ({ ...explicit(localIdentity, peerIdentity, policyId, rule, direction), defaultDeny: true });

/** the compiler's order: by local identity, then peer */
const sorted = (l: L4Entry[]): L4Entry[] => [...l].sort((x, y) => x.localIdentity - y.localIdentity || x.peerIdentity - y.peerIdentity);

const onlyClient = policy('demo', 'api-allow', {
  matchLabels: { app: 'api' },
  rules: [{ from: [{ principals: ['cluster.local/ns/demo/sa/client'] }], to: [{ ports: [8080], methods: ['GET'] }], when: [] }],
});

describe('MeshPolicy compile', () => {
  it('writes nothing for egress when no policy selects anything', () => {
    const c = compile([]);
    assert.deepEqual(c.egress('node-a'), []);
    assert.ok(c.m.endpoints.every((e) => e.defaultDenyPolicyId === undefined));
  });

  it('resolves selectors and Istio principals to identities', () => {
    const c = compile([onlyClient]);
    const [p] = c.m.policies;
    assert.deepEqual(p, {
      id: p!.id, namespace: 'demo', name: 'api-allow', action: 'ALLOW', selects: [c.id('api-1')],
      rules: [{
        index: 0,
        from: [{ identities: [c.id('client')], principals: ['cluster.local/ns/demo/sa/client'] }],
        to: [{ ports: [8080], methods: ['GET'] }],
        when: [],
      }],
    });
    assert.equal(c.id('api-1'), c.id('api-2'));
  });

  it('denies at connect() a source no ALLOW rule could admit, naming the policy (default deny)', () => {
    const c = compile([onlyClient]);
    const api = c.id('api-1');
    // client may reach api (the proxy checks port and method); api itself may not
    assert.deepEqual(c.egress('node-a'), [deny(api, api, c.pid('api-allow'))]);
    // node-b's local enrolled sources are api and db
    assert.deepEqual(c.egress('node-b'), sorted([deny(api, api, c.pid('api-allow')), deny(c.id('db'), api, c.pid('api-allow'))]));
    assert.equal(c.m.endpoints.find((e) => e.name === 'api-1')!.defaultDenyPolicyId, c.pid('api-allow'));
    assert.equal(c.m.endpoints.find((e) => e.name === 'client')!.defaultDenyPolicyId, undefined);
  });

  it('lets DENY win over ALLOW and names the DENY rule', () => {
    const c = compile([
      onlyClient,
      policy('demo', 'no-client', {
        action: 'DENY', matchLabels: { app: 'api' },
        rules: [
          { from: [{ namespaces: ['prod'] }], to: [], when: [] },
          { from: [{ principals: ['cluster.local/ns/demo/sa/client'] }], to: [], when: [] },
        ],
      }),
    ]);
    const api = c.id('api-1');
    assert.deepEqual(c.egress('node-a'), sorted([deny(api, api, c.pid('api-allow')), explicit(c.id('client'), api, c.pid('no-client'), 1)]));
  });

  it('leaves DENY rules that depend on the request to the proxy', () => {
    const c = compile([policy('demo', 'no-admin', {
      action: 'DENY', matchLabels: { app: 'api' },
      rules: [
        { from: [], to: [{ paths: ['/admin*'] }], when: [] },
        { from: [], to: [], when: [{ key: 'request.headers[x-user]', values: ['mallory'] }] },
      ],
    })]);
    assert.deepEqual(c.egress('node-a'), []);
  });

  it('carries operation headers and gRPC service/method into the compiled rule and leaves a DENY on them to the proxy', () => {
    const to = [{ headers: { 'x-tenant': ['acme', 'beta-*'] }, grpcServices: ['shop.v1.Cart'], grpcMethods: ['Delete*'] }];
    const c = compile([policy('demo', 'no-delete', { action: 'DENY', matchLabels: { app: 'api' }, rules: [{ from: [], to, when: [] }] })]);
    assert.deepEqual(c.egress('node-a'), []);
    assert.deepEqual(c.m.policies.find((p) => p.name === 'no-delete')!.rules[0]!.to, to);
  });

  it('treats a rule without from as any source, and a policy without rules as allow-nothing', () => {
    const c = compile([
      policy('demo', 'db-open', { matchLabels: { app: 'db' }, rules: [{ from: [], to: [{ ports: [5432] }], when: [] }] }),
      policy('demo', 'api-nothing', { matchLabels: { app: 'api' } }),
    ]);
    const api = c.id('api-1');
    assert.deepEqual(c.egress('node-a'), sorted([deny(c.id('client'), api, c.pid('api-nothing')), deny(api, api, c.pid('api-nothing'))]));
  });

  it('admits when any of several ALLOW policies could, and names the first otherwise', () => {
    const c = compile([
      policy('demo', 'b-allow-db', { matchLabels: { app: 'api' }, rules: [{ from: [{ principals: ['cluster.local/ns/demo/sa/db'] }], to: [], when: [] }] }),
      policy('demo', 'a-allow-client', { matchLabels: { app: 'api' }, rules: [{ from: [{ principals: ['*/sa/client'] }], to: [], when: [] }] }),
    ]);
    const api = c.id('api-1');
    assert.deepEqual(c.egress('node-b'), [deny(api, api, c.pid('a-allow-client'))]);
  });

  it('applies Istio source semantics: wildcards, namespaces and not-lists are ANDed', () => {
    const c = compile([policy('demo', 'api-demo', {
      matchLabels: { app: 'api' },
      rules: [{ from: [{ principals: ['cluster.local/ns/demo/*'], notPrincipals: ['cluster.local/ns/demo/sa/db'], notNamespaces: ['other'] }], to: [], when: [] }],
    })]);
    const api = c.id('api-1');
    assert.deepEqual(c.m.policies[0]!.rules[0]!.from[0]!.identities, [c.id('client'), api].sort((a, b) => a - b));
    assert.deepEqual(c.egress('node-b'), [deny(c.id('db'), api, c.pid('api-demo'))]);
  });

  it('ignores AUDIT policies for verdicts', () => {
    const c = compile([policy('demo', 'watch', { action: 'AUDIT', matchLabels: { app: 'api' } })]);
    assert.deepEqual(c.egress('node-a'), []);
    assert.equal(c.m.endpoints.find((e) => e.name === 'api-1')!.defaultDenyPolicyId, undefined);
  });

  it('compiles against identities, so a Service VIP is judged by the service identity', () => {
    const c = compile([onlyClient]);
    const s = c.m.services[0]!;
    assert.equal(s.identity, c.id('api-1'));
    assert.ok(c.egress('node-b').some((e) => e.peerIdentity === s.identity && e.localIdentity === c.id('db')));
  });

  it('only emits entries for local enrolled sources', () => {
    const state = base();
    state.pods.push(pod('demo', 'client-out', { labels: { app: 'client-out', 'nodal.io/mesh': 'disabled' }, serviceAccount: 'x', podIp: '10.0.1.99', nodeName: 'node-a' }));
    const c = compile([policy('demo', 'api-nothing', { matchLabels: { app: 'api' } })], state);
    assert.ok(c.egress('node-a').every((e) => e.localIdentity !== c.id('client-out')));
    assert.deepEqual(c.egress('node-c'), []);
  });

  it('is deterministic whatever the input order', () => {
    const policies = [onlyClient, policy('demo', 'no-db', { action: 'DENY', matchLabels: { app: 'db' }, rules: [{ from: [{ namespaces: ['demo'] }], to: [], when: [] }] })];
    const state = base();
    const a = compile(policies, state);
    const b = compile([...policies].reverse(), { ...state, pods: [...state.pods].reverse(), namespaces: [...state.namespaces].reverse() });
    assert.deepEqual(a.m, b.m);
    assert.deepEqual(l4ForNode('node-b', a.m.endpoints, a.m.policies), l4ForNode('node-b', b.m.endpoints, b.m.policies));
    const l4 = l4ForNode('node-b', a.m.endpoints, a.m.policies);
    assert.deepEqual(l4, [...l4].sort((x, y) => (x.direction === y.direction ? x.localIdentity - y.localIdentity || x.peerIdentity - y.peerIdentity : x.direction < y.direction ? -1 : 1)));
  });
});

describe('ingress entries for clients outside the mesh', () => {
  it('admits any peer and the host to a workload no policy selects', () => {
    const c = compile([]);
    const allow = (local: number, peer: number): L4Entry => ({ direction: 'INGRESS', localIdentity: local, peerIdentity: peer, port: 0, action: 'ALLOW', policyId: 0, rule: 0 });
    const [lo, hi] = [c.id('client'), c.id('api-1')].sort((x, y) => x - y) as [number, number];
    assert.deepEqual(c.ingress('node-a'), [allow(lo, 0), allow(lo, 1), allow(hi, 0), allow(hi, 1)]);
  });

  it('admits an outsider only through a pure L4 ALLOW rule, and names the denial otherwise', () => {
    const c = compile([policy('demo', 'api-from-other', {
      matchLabels: { app: 'api' },
      rules: [{ from: [{ namespaces: ['other'] }], to: [], when: [] }],
    }), policy('demo', 'db-client-only', { matchLabels: { app: 'db' }, rules: [{ from: [{ principals: ['cluster.local/ns/demo/sa/client'] }], to: [], when: [] }] })]);
    const api = c.id('api-1'), db = c.id('db'), outsider = c.id('outsider');
    const entries = c.ingress('node-b');
    assert.deepEqual(entries.filter((e) => e.peerIdentity === outsider), [
      { direction: 'INGRESS', localIdentity: api, peerIdentity: outsider, port: 0, action: 'ALLOW', policyId: c.pid('api-from-other'), rule: 0 },
      deny(db, outsider, c.pid('db-client-only'), 0, 'INGRESS'),
    ].sort((x, y) => x.localIdentity - y.localIdentity));
    // the host keeps probing, and no any-peer entry exists for selected workloads
    assert.ok(entries.some((e) => e.localIdentity === api && e.peerIdentity === 1 && e.action === 'ALLOW'));
    assert.ok(!entries.some((e) => e.peerIdentity === 0));
  });

  it('does not admit an outsider past a DENY rule that only the proxy could check', () => {
    const c = compile([policy('demo', 'no-admin', { action: 'DENY', matchLabels: { app: 'api' }, rules: [{ from: [], to: [{ paths: ['/admin'] }], when: [] }] })]);
    assert.ok(!c.ingress('node-b').some((e) => e.localIdentity === c.id('api-1') && e.peerIdentity !== 1));
  });
});
