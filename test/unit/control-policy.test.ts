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
  /** what cgroup/connect decides (bpf/lib/connect.h): the node's entry, else the destination's guard, else the proxy */
  const connect = (n: string, source: number, dest: number): L4Entry | 'PROXY' => {
    const e = egress(n).find((x) => x.localIdentity === source && x.peerIdentity === dest && x.port === 0);
    if (e) return e.toProxy ? 'PROXY' : e;
    const g = m.guards.find((x) => x.identity === dest);
    return g ? deny(source, dest, g.policyId) : 'PROXY';
  };
  return { m, id, pid, egress, ingress, connect };
}

/** a DENY rule matched: named after that rule */
const explicit = (localIdentity: number, peerIdentity: number, policyId: number, rule = 0, direction: L4Entry['direction'] = 'EGRESS'): L4Entry =>
  ({ direction, localIdentity, peerIdentity, port: 0, action: 'DENY', policyId, rule });
/** no ALLOW rule of the selecting policy admits the peer: a default deny naming that policy */
const deny = (localIdentity: number, peerIdentity: number, policyId: number, rule = 0, direction: L4Entry['direction'] = 'EGRESS'): L4Entry =>
  ({ ...explicit(localIdentity, peerIdentity, policyId, rule, direction), defaultDeny: true });
/** some ALLOW rule could admit the source: past the destination's guard, to the proxy */
const admit = (localIdentity: number, peerIdentity: number): L4Entry =>
  ({ direction: 'EGRESS', localIdentity, peerIdentity, port: 0, action: 'ALLOW', policyId: 0, rule: 0, toProxy: true });

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
    assert.deepEqual(c.m.guards, []);
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
    assert.equal(c.connect('node-a', c.id('client'), api), 'PROXY');
    assert.deepEqual(c.connect('node-a', api, api), deny(api, api, c.pid('api-allow')));
    // node-b's local enrolled sources are api and db
    assert.deepEqual(c.connect('node-b', api, api), deny(api, api, c.pid('api-allow')));
    assert.deepEqual(c.connect('node-b', c.id('db'), api), deny(c.id('db'), api, c.pid('api-allow')));
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
    assert.deepEqual(c.egress('node-a'), [explicit(c.id('client'), api, c.pid('no-client'), 1)]);
    assert.deepEqual(c.connect('node-a', api, api), deny(api, api, c.pid('api-allow')));
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
    const api = c.id('api-1'), db = c.id('db');
    // any source may reach db's proxy, which checks the port; api admits no one
    assert.deepEqual(c.egress('node-a'), sorted([admit(c.id('client'), db), admit(api, db)]));
    assert.deepEqual(c.connect('node-a', c.id('client'), api), deny(c.id('client'), api, c.pid('api-nothing')));
    assert.deepEqual(c.connect('node-a', api, api), deny(api, api, c.pid('api-nothing')));
  });

  it('admits when any of several ALLOW policies could, and names the first otherwise', () => {
    const c = compile([
      policy('demo', 'b-allow-db', { matchLabels: { app: 'api' }, rules: [{ from: [{ principals: ['cluster.local/ns/demo/sa/db'] }], to: [], when: [] }] }),
      policy('demo', 'a-allow-client', { matchLabels: { app: 'api' }, rules: [{ from: [{ principals: ['*/sa/client'] }], to: [], when: [] }] }),
    ]);
    const api = c.id('api-1');
    assert.deepEqual(c.egress('node-b'), [admit(c.id('db'), api)]);
    assert.deepEqual(c.connect('node-b', api, api), deny(api, api, c.pid('a-allow-client')));
    assert.deepEqual(c.m.guards, [{ identity: api, policyId: c.pid('a-allow-client') }]);
  });

  it('applies Istio source semantics: wildcards, namespaces and not-lists are ANDed', () => {
    const c = compile([policy('demo', 'api-demo', {
      matchLabels: { app: 'api' },
      rules: [{ from: [{ principals: ['cluster.local/ns/demo/*'], notPrincipals: ['cluster.local/ns/demo/sa/db'], notNamespaces: ['other'] }], to: [], when: [] }],
    })]);
    const api = c.id('api-1');
    assert.deepEqual(c.m.policies[0]!.rules[0]!.from[0]!.identities, [c.id('client'), api].sort((a, b) => a - b));
    assert.deepEqual(c.egress('node-b'), [admit(api, api)]);
    assert.deepEqual(c.connect('node-b', c.id('db'), api), deny(c.id('db'), api, c.pid('api-demo')));
  });

  it('ignores AUDIT policies for verdicts', () => {
    const c = compile([policy('demo', 'watch', { action: 'AUDIT', matchLabels: { app: 'api' } })]);
    assert.deepEqual(c.egress('node-a'), []);
    assert.deepEqual(c.m.guards, []);
    assert.equal(c.m.endpoints.find((e) => e.name === 'api-1')!.defaultDenyPolicyId, undefined);
  });

  it('compiles against identities, so a Service VIP is judged by the service identity', () => {
    const c = compile([onlyClient]);
    const s = c.m.services[0]!;
    assert.equal(s.identity, c.id('api-1'));
    assert.deepEqual(c.connect('node-b', c.id('db'), s.identity), deny(c.id('db'), s.identity, c.pid('api-allow')));
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

describe('recompiling after a change', () => {
  it('compiles only the changed policy again; the others stay the same objects', () => {
    const ids = new PersistentIds(tmp.make());
    const state = base();
    const other = policy('demo', 'db-demo', { matchLabels: { app: 'db' }, rules: [{ from: [{ namespaces: ['demo'] }], to: [], when: [] }] });
    const a = buildModel({ state: { ...state, policies: [onlyClient, other] }, trustDomain: 'cluster.local', ids });
    const changed = policy('demo', 'api-allow', { matchLabels: { app: 'api' }, rules: [{ from: [{ principals: ['cluster.local/ns/demo/sa/db'] }], to: [], when: [] }] });
    const b = buildModel({ state: { ...state, policies: [changed, other] }, trustDomain: 'cluster.local', ids });
    const find = (m: typeof a, name: string) => m.policies.find((p) => p.name === name)!;
    assert.equal(find(b, 'db-demo'), find(a, 'db-demo'));
    assert.notEqual(find(b, 'api-allow'), find(a, 'api-allow'));
    assert.deepEqual(find(b, 'api-allow').rules[0]!.from[0]!.identities, [b.endpoints.find((e) => e.name === 'db')!.identity]);
    // new identities: everything is compiled again, against them
    const grown = base();
    grown.pods.push(pod('demo', 'db-2', { labels: { app: 'db', extra: 'x' }, serviceAccount: 'db', podIp: '10.0.2.41', nodeName: 'node-b' }));
    const c = buildModel({ state: { ...grown, policies: [changed, other] }, trustDomain: 'cluster.local', ids });
    assert.notEqual(find(c, 'db-demo'), find(b, 'db-demo'));
    assert.equal(find(c, 'db-demo').rules[0]!.from[0]!.identities!.length, find(b, 'db-demo').rules[0]!.from[0]!.identities!.length + 1);
  });
});

describe('deny by absence: guards instead of per-pair default-deny entries', () => {
  it('a default-denied pair has no entry of its own, only the guard of its destination, naming the ALLOW policy', () => {
    const c = compile([onlyClient]);
    const api = c.id('api-1'), db = c.id('db');
    assert.deepEqual(c.m.guards, [{ identity: api, policyId: c.pid('api-allow') }]);
    assert.ok(!c.egress('node-b').some((e) => e.peerIdentity === api), 'no entry for db → api or api → api');
    assert.ok(c.egress('node-b').every((e) => !e.defaultDeny), 'no default-deny entry at all');
    assert.deepEqual(c.connect('node-b', db, api), deny(db, api, c.pid('api-allow')));
  });

  it('an admitted pair gets its admit entry, which names no policy (the proxy decides)', () => {
    const c = compile([onlyClient]);
    const api = c.id('api-1');
    assert.deepEqual(c.egress('node-a'), [admit(c.id('client'), api)]);
  });

  it('keeps the entries per node to the pairs some rule names, however many destinations are guarded', () => {
    // 40 guarded workloads, each admitting only demo/client: every other source is denied by the guards
    const state = base();
    const policies: MeshPolicyObject[] = [];
    for (let i = 0; i < 40; i++) {
      state.pods.push(pod('demo', `w-${i}`, { labels: { app: `w-${i}` }, serviceAccount: `w-${i}`, podIp: `10.0.3.${i + 1}`, nodeName: 'node-b' }));
      policies.push(policy('demo', `w-${i}-allow`, { matchLabels: { app: `w-${i}` }, rules: [{ from: [{ principals: ['cluster.local/ns/demo/sa/client'] }], to: [], when: [] }] }));
    }
    const c = compile(policies, state);
    assert.equal(c.m.guards.length, 40);
    // node-b runs 42 enrolled identities (api, db and the 40): none of them is admitted anywhere
    assert.deepEqual(c.egress('node-b'), []);
    // node-a's client is admitted to all 40, api to none
    assert.equal(c.egress('node-a').length, 40);
    assert.ok(c.egress('node-a').every((e) => e.localIdentity === c.id('client') && e.toProxy === true));
    assert.deepEqual(c.connect('node-a', c.id('api-2'), c.id('w-7')), deny(c.id('api-2'), c.id('w-7'), c.pid('w-7-allow')));
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
