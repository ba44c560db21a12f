// Kubernetes NetworkPolicy enforced by identity: cases from the kubernetes.io "Network
// Policies" documentation, each asserted on the compiled BPF entries or on the verdict a
// small model of the kernel's first-match lookup gives for them.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildModel, l4ForNode, type ClusterState, type L4Entry, type MeshPolicyObject, type NetworkPolicyObject } from '../../control/index.ts';
import { parseDocument } from '../../control/cluster/kinds.ts';
import { PersistentIds } from '../../control/model/ids.ts';
import { lookupL4, selectorMatches } from '../../control/model/networkpolicy.ts';
import { modelHash, nodeL4, snapshotContent } from '../../control/model/snapshot.ts';
import { loadAgentControl, snapshotFromWire, snapshotToWire, type WireSnapshotMessage } from '../../control/grpc/proto.ts';
import { DirectorySource } from '../../control/cluster/directory.ts';
import { TempDirs, cluster, ns, pod, policy, silent, svc, write } from '../fixtures/control/helpers.ts';

const tmp = new TempDirs();
after(() => tmp.cleanup());

// prod and dev are enrolled; legacy is outside the mesh (its pods reach enrolled pods without a proxy)
const base = (): ClusterState => cluster({
  namespaces: [ns('prod', { 'nodal.io/mesh': 'enabled', team: 'prod' }), ns('dev', { 'nodal.io/mesh': 'enabled', team: 'dev' }), ns('legacy', { team: 'legacy' })],
  pods: [
    pod('prod', 'web', { labels: { app: 'web', tier: 'frontend' }, serviceAccount: 'web', podIp: '10.0.1.10', nodeName: 'node-a', namedPorts: { http: 8080 } }),
    pod('prod', 'db', { labels: { app: 'db', tier: 'backend' }, serviceAccount: 'db', podIp: '10.0.1.20', nodeName: 'node-a', namedPorts: { pg: 5432 } }),
    pod('dev', 'web', { labels: { app: 'web' }, serviceAccount: 'web', podIp: '10.0.2.10', nodeName: 'node-b' }),
    pod('dev', 'tool', { labels: { app: 'tool' }, podIp: '10.0.2.11', nodeName: 'node-b' }),
    pod('legacy', 'client', { labels: { app: 'client' }, podIp: '10.0.2.30', nodeName: 'node-b' }),
  ],
});

/** a NetworkPolicy written as its manifest, through the same validation as a file */
function np(name: string, spec: Record<string, unknown>, namespace = 'prod'): NetworkPolicyObject {
  const r = parseDocument({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, spec }, 'np.yaml', 0);
  if (r.result !== 'ok' || r.object.kind !== 'NetworkPolicy') throw new Error(`not ok: ${JSON.stringify(r)}`);
  return r.object.value;
}
function npError(spec: Record<string, unknown>): string {
  const r = parseDocument({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'bad', namespace: 'prod' }, spec }, 'np.yaml', 0);
  assert.equal(r.result, 'error');
  return r.result === 'error' ? r.error.message : '';
}

const HOST = 1, WORLD = 2;

function compile(networkPolicies: NetworkPolicyObject[], policies: MeshPolicyObject[] = [], state = base()) {
  const ids = new PersistentIds(tmp.make());
  const m = buildModel({ state: { ...state, policies, networkPolicies }, trustDomain: 'cluster.local', ids });
  const ep = (ref: string) => {
    const [n, name] = ref.split('/');
    const e = m.endpoints.find((x) => x.namespace === n && x.name === name);
    assert.ok(e, ref);
    return e;
  };
  const id = (ref: string) => ep(ref).identity;
  const npId = (name: string) => m.networkPolicy!.policies.find((p) => p.name === name)!.id;
  const cidrId = (cidr: string) => m.networkPolicy!.cidrIdentities.find((c) => c.cidr === cidr)!.identity;
  const l4 = (node: string) => nodeL4(m, node);
  /** a non-proxy connection from `peer` (an identity) to an enrolled pod: cgroup_skb/ingress */
  const ingress = (dst: string, peer: number, port: number): L4Entry | 'DROP' =>
    lookupL4(l4(ep(dst).node), 'INGRESS', id(dst), peer, port) ?? 'DROP';
  /** connect() of an enrolled pod to `peer` (an identity): the egress hook; no entry = the peer's guard (a default deny), else allowed */
  const egress = (src: string, peer: number, port: number): L4Entry | 'ALLOW' => {
    const e = lookupL4(l4(ep(src).node), 'EGRESS', id(src), peer, port);
    if (e) return e;
    const g = m.guards.find((x) => x.identity === peer);
    return g ? { direction: 'EGRESS', localIdentity: id(src), peerIdentity: peer, port: 0, action: 'DENY', policyId: g.policyId, rule: 0, defaultDeny: true } : 'ALLOW';
  };
  /** pod to pod as the datapath decides it: enrolled sources at connect(), the others at the destination's ingress */
  const reach = (src: string, dst: string, port: number): boolean => {
    if (ep(src).enrolled) { const v = egress(src, id(dst), port); return v === 'ALLOW' || v.action === 'ALLOW'; }
    const v = ingress(dst, id(src), port);
    return v !== 'DROP' && v.action === 'ALLOW';
  };
  return { m, id, npId, cidrId, l4, ingress, egress, reach };
}

const isAllow = (v: L4Entry | 'ALLOW' | 'DROP'): boolean => v === 'ALLOW' || (v !== 'DROP' && v.action === 'ALLOW');

describe('NetworkPolicy validation', () => {
  it('defaults policyTypes: Ingress always, Egress when there are egress rules', () => {
    assert.deepEqual(np('a', { podSelector: {} }).policyTypes, ['Ingress']);
    assert.deepEqual(np('b', { podSelector: {}, ingress: [{}] }).policyTypes, ['Ingress']);
    assert.deepEqual(np('c', { podSelector: {}, egress: [{}] }).policyTypes, ['Ingress', 'Egress']);
    assert.deepEqual(np('d', { podSelector: {}, policyTypes: ['Egress'] }).policyTypes, ['Egress']);
  });

  it('reads peers, ports, protocols and ranges', () => {
    const p = np('x', {
      podSelector: { matchLabels: { app: 'db' } },
      ingress: [{
        from: [{ namespaceSelector: { matchLabels: { team: 'dev' } }, podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['web'] }] } },
          { ipBlock: { cidr: '172.17.0.0/16', except: ['172.17.1.0/24'] } }],
        ports: [{ port: 'pg' }, { protocol: 'UDP', port: 53 }, { port: 32000, endPort: 32010 }, { protocol: 'TCP' }],
      }],
    });
    assert.deepEqual(p.ingress[0], {
      peers: [
        { namespaceSelector: { matchLabels: { team: 'dev' }, matchExpressions: [] }, podSelector: { matchLabels: {}, matchExpressions: [{ key: 'app', operator: 'In', values: ['web'] }] } },
        { ipBlock: { cidr: '172.17.0.0/16', except: ['172.17.1.0/24'] } },
      ],
      ports: [{ protocol: 'TCP', port: 'pg' }, { protocol: 'UDP', port: 53 }, { protocol: 'TCP', port: 32000, endPort: 32010 }, { protocol: 'TCP' }],
    });
  });

  const bad: Array<[string, Record<string, unknown>, RegExp]> = [
    ['podSelector is required', {}, /NetworkPolicy prod\/bad.*spec\.podSelector.*required/],
    ['ipBlock with a selector', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }] }] }, /spec\.ingress\[0\]\.from\[0\].*cannot be combined/],
    ['except outside cidr', { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['192.168.0.0/16'] } }] }] }, /spec\.egress\[0\]\.to\[0\]\.ipBlock\.except\[0\].*not within/],
    ['endPort with a named port', { podSelector: {}, ingress: [{ ports: [{ port: 'http', endPort: 90 }] }] }, /spec\.ingress\[0\]\.ports\[0\]\.endPort.*numeric port/],
    ['endPort below port', { podSelector: {}, ingress: [{ ports: [{ port: 90, endPort: 80 }] }] }, /endPort.*below/],
    ['range beyond the bound', { podSelector: {}, ingress: [{ ports: [{ port: 1000, endPort: 3000 }] }] }, /endPort.*2001 ports.*at most 1024/],
    ['empty peer', { podSelector: {}, ingress: [{ from: [{}] }] }, /from\[0\].*at least one of podSelector, namespaceSelector, ipBlock/],
    ['unknown field', { podSelector: {}, ingress: [{ form: [] }] }, /spec\.ingress\[0\]\.form.*unknown field/],
    ['bad operator', { podSelector: { matchExpressions: [{ key: 'a', operator: 'Gt' }] } }, /spec\.podSelector\.matchExpressions\[0\]\.operator/],
    ['bad protocol', { podSelector: {}, ingress: [{ ports: [{ protocol: 'ICMP' }] }] }, /ports\[0\]\.protocol/],
  ];
  for (const [what, spec, re] of bad) {
    it(`rejects: ${what}`, () => {
      const msg = npError(spec);
      assert.match(msg, /np\.yaml/);
      assert.match(msg, re);
    });
  }

  it('label selectors: In, NotIn, Exists, DoesNotExist and matchLabels AND together', () => {
    const sel = (matchLabels: Record<string, string>, ...e: Array<[string, 'In' | 'NotIn' | 'Exists' | 'DoesNotExist', string[]]>) =>
      ({ matchLabels, matchExpressions: e.map(([key, operator, values]) => ({ key, operator, values })) });
    const l = { app: 'web', tier: 'frontend' };
    assert.ok(selectorMatches(sel({}), l));
    assert.ok(selectorMatches(sel({ app: 'web' }, ['tier', 'In', ['frontend', 'x']]), l));
    assert.ok(!selectorMatches(sel({ app: 'web' }, ['tier', 'NotIn', ['frontend']]), l));
    assert.ok(selectorMatches(sel({}, ['env', 'NotIn', ['prod']]), l), 'NotIn matches a missing key');
    assert.ok(!selectorMatches(sel({}, ['env', 'In', ['prod']]), l));
    assert.ok(selectorMatches(sel({}, ['app', 'Exists', []], ['env', 'DoesNotExist', []]), l));
    assert.ok(!selectorMatches(sel({}, ['app', 'DoesNotExist', []]), l));
  });
});

describe('NetworkPolicy compile (kubernetes.io Network Policies)', () => {
  it('without any NetworkPolicy the entries are exactly the MeshPolicy ones', () => {
    const c = compile([], [policy('prod', 'db-allow', { matchLabels: { app: 'db' }, rules: [{ from: [{ namespaces: ['prod'] }], to: [], when: [] }] })]);
    assert.equal(c.m.networkPolicy, undefined);
    assert.deepEqual(c.l4('node-a'), l4ForNode('node-a', c.m.endpoints, c.m.policies));
  });

  it('default deny all ingress: isolates every pod of the namespace, named after the policy', () => {
    const c = compile([np('default-deny-ingress', { podSelector: {}, policyTypes: ['Ingress'] })]);
    const pid = c.npId('default-deny-ingress');
    // a client outside the mesh, at the destination's ingress
    assert.deepEqual(c.ingress('prod/web', c.id('legacy/client'), 80),
      { direction: 'INGRESS', localIdentity: c.id('prod/web'), peerIdentity: 0, port: 0, action: 'DENY', policyId: pid, rule: 0, defaultDeny: true });
    assert.equal(c.ingress('prod/web', WORLD, 443) !== 'DROP' && (c.ingress('prod/web', WORLD, 443) as L4Entry).action, 'DENY');
    // the node's host (kubelet probes) is always allowed
    assert.ok(isAllow(c.ingress('prod/web', HOST, 8080)));
    // mesh traffic: the destination's ingress policy is enforced at the source's connect()
    assert.ok(!c.reach('prod/db', 'prod/web', 8080));
    assert.ok(!c.reach('dev/web', 'prod/db', 5432));
    const v = c.egress('dev/web', c.id('prod/db'), 5432);
    assert.ok(v !== 'ALLOW' && v.defaultDeny === true && v.policyId === pid);
    // egress is not isolated, and pods of other namespaces are not selected
    assert.ok(c.reach('prod/web', 'dev/web', 80));
    assert.ok(isAllow(c.ingress('dev/web', c.id('legacy/client'), 80)));
  });

  it('allow all ingress: an empty rule admits every peer on every port, overriding a default deny', () => {
    const c = compile([
      np('default-deny-ingress', { podSelector: {}, policyTypes: ['Ingress'] }),
      np('allow-all-ingress', { podSelector: {}, ingress: [{}] }),
    ]);
    const pid = c.npId('allow-all-ingress');
    for (const peer of [c.id('legacy/client'), WORLD, 3]) {
      const v = c.ingress('prod/db', peer, 5432);
      assert.ok(v !== 'DROP' && v.action === 'ALLOW' && v.policyId === pid);
    }
    assert.ok(c.reach('dev/web', 'prod/db', 1234));
  });

  it('default deny all egress: every destination refused at connect(), ingress untouched', () => {
    const c = compile([np('default-deny-egress', { podSelector: {}, policyTypes: ['Egress'] })]);
    const pid = c.npId('default-deny-egress');
    const anyDeny = c.l4('node-a').filter((e) => e.direction === 'EGRESS' && e.peerIdentity === 0);
    assert.deepEqual(anyDeny.map((e) => [e.localIdentity, e.port, e.action, e.policyId, e.defaultDeny]).sort(),
      [[c.id('prod/db'), 0, 'DENY', pid, true], [c.id('prod/web'), 0, 'DENY', pid, true]].sort());
    assert.ok(!c.reach('prod/web', 'dev/web', 80));
    assert.ok(!isAllow(c.egress('prod/web', WORLD, 443)));
    assert.ok(isAllow(c.egress('prod/web', HOST, 10250)), 'the host stays reachable');
    assert.ok(isAllow(c.ingress('prod/web', c.id('legacy/client'), 80)));
    // dev is not selected
    assert.ok(c.reach('dev/web', 'prod/web', 80));
  });

  it('namespaceSelector and podSelector in ONE element: AND', () => {
    const c = compile([np('db-and', {
      podSelector: { matchLabels: { app: 'db' } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'dev' } }, podSelector: { matchLabels: { app: 'web' } } }] }],
    })]);
    assert.ok(c.reach('dev/web', 'prod/db', 5432), 'web in a dev namespace');
    assert.ok(!c.reach('dev/tool', 'prod/db', 5432), 'not web');
    assert.ok(!c.reach('prod/web', 'prod/db', 5432), 'web, but not in a dev namespace');
    assert.deepEqual(c.m.networkPolicy!.policies[0]!.ingress![0]!.peers, [c.id('dev/web')]);
  });

  it('namespaceSelector and podSelector as TWO elements: OR (podSelector alone = the policy namespace)', () => {
    const c = compile([np('db-or', {
      podSelector: { matchLabels: { app: 'db' } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'dev' } } }, { podSelector: { matchLabels: { app: 'web' } } }] }],
    })]);
    assert.ok(c.reach('dev/web', 'prod/db', 5432));
    assert.ok(c.reach('dev/tool', 'prod/db', 5432), 'any pod of a dev namespace');
    assert.ok(c.reach('prod/web', 'prod/db', 5432), 'web in the policy namespace');
    assert.ok(!c.reach('legacy/client', 'prod/db', 5432), 'neither');
    // namespaceSelector {} selects every namespace, kubernetes.io/metadata.name is always there
    const all = compile([np('db-ns', {
      podSelector: { matchLabels: { app: 'db' } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'legacy' } } }] }],
    })]);
    assert.ok(all.reach('legacy/client', 'prod/db', 5432));
    assert.ok(!all.reach('dev/web', 'prod/db', 5432));
  });

  it('ipBlock with except: CIDR identities in the ipcache, longest prefix decides', () => {
    const c = compile([np('egress-cidr', {
      podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Egress'],
      egress: [{ to: [{ ipBlock: { cidr: '172.17.0.0/16', except: ['172.17.1.0/24'] } }], ports: [{ protocol: 'TCP', port: 5978 }] }],
    })]);
    const wide = c.cidrId('172.17.0.0/16'), hole = c.cidrId('172.17.1.0/24');
    assert.deepEqual(c.m.networkPolicy!.cidrIdentities.map((x) => x.cidr), ['172.17.0.0/16', '172.17.1.0/24']);
    assert.ok(wide >= 256 && hole >= 256 && wide !== hole);
    assert.ok(isAllow(c.egress('prod/web', wide, 5978)));
    assert.ok(!isAllow(c.egress('prod/web', wide, 80)), 'other ports');
    assert.ok(!isAllow(c.egress('prod/web', hole, 5978)), 'the except');
    assert.ok(!isAllow(c.egress('prod/web', WORLD, 5978)), 'outside the cidr');
    assert.ok(!c.reach('prod/web', 'dev/web', 5978), 'pods are not addressed by ipBlock');
    // the snapshot carries the prefixes for the ipcache
    assert.deepEqual(c.m.networkPolicy!.cidrIdentities, [{ cidr: '172.17.0.0/16', identity: wide }, { cidr: '172.17.1.0/24', identity: hole }]);
    // 0.0.0.0/0 also admits addresses no prefix holds (WORLD)
    const w = compile([np('egress-world', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.0.0.0/8'] } }] }] })]);
    assert.ok(isAllow(w.egress('prod/web', WORLD, 443)));
    assert.ok(!isAllow(w.egress('prod/web', w.cidrId('10.0.0.0/8'), 443)));
  });

  it('IPv6 blocks: prefixes normalised, except carved out', () => {
    const c = compile([np('v6', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Egress'],
      egress: [{ to: [{ ipBlock: { cidr: '2001:db8::1/32', except: ['2001:db8:1::/48'] } }, { ipBlock: { cidr: '::ffff:192.0.2.0/120' } }] }] })]);
    assert.deepEqual(c.m.networkPolicy!.cidrIdentities.map((x) => x.cidr), ['0:0:0:0:0:ffff:c000:200/120', '2001:db8:0:0:0:0:0:0/32', '2001:db8:1:0:0:0:0:0/48']);
    assert.ok(isAllow(c.egress('prod/web', c.cidrId('2001:db8:0:0:0:0:0:0/32'), 443)));
    assert.ok(!isAllow(c.egress('prod/web', c.cidrId('2001:db8:1:0:0:0:0:0/48'), 443)));
    assert.ok(isAllow(c.egress('prod/web', c.cidrId('0:0:0:0:0:ffff:c000:200/120'), 443)));
    assert.match(npError({ podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '2001:db8::/32', except: ['10.0.0.0/8'] } }] }] }), /except\[0\].*not within/);
  });

  it('ipBlock ingress from outside the cluster; host bits are normalised', () => {
    const c = compile([np('from-cidr', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ ipBlock: { cidr: '192.168.7.9/16' } }] }] })]);
    assert.deepEqual(c.m.networkPolicy!.cidrIdentities.map((x) => x.cidr), ['192.168.0.0/16']);
    assert.ok(isAllow(c.ingress('prod/web', c.cidrId('192.168.0.0/16'), 80)));
    assert.ok(!isAllow(c.ingress('prod/web', WORLD, 80)));
  });

  it('named port: resolved against the destination pod', () => {
    const c = compile([np('db-pg', {
      podSelector: { matchLabels: { app: 'db' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 'pg' }] }],
    })]);
    assert.ok(c.reach('prod/web', 'prod/db', 5432));
    assert.ok(!c.reach('prod/web', 'prod/db', 5433));
    const e = c.l4('node-a').filter((x) => x.direction === 'EGRESS' && x.localIdentity === c.id('prod/web') && x.peerIdentity === c.id('prod/db'));
    assert.deepEqual(e.map((x) => [x.port, x.action]), [[0, 'DENY'], [5432, 'ALLOW']]);
    // egress: the name resolves against each destination (only prod/web names `http`)
    const eg = compile([np('web-out', { podSelector: { matchLabels: { app: 'db' } }, policyTypes: ['Egress'], egress: [{ ports: [{ port: 'http' }] }] })]);
    assert.ok(eg.reach('prod/db', 'prod/web', 8080));
    assert.ok(!eg.reach('prod/db', 'dev/web', 8080), 'dev/web has no port named http');
  });

  it('a Service VIP is judged on its targetPort (connect() sees the service port)', () => {
    const state = base();
    state.services.push(svc('prod', 'db', { clusterIp: '10.96.0.20', selector: { app: 'db' }, ports: [{ port: 80, targetPort: 'pg', protocol: 'TCP' }] }));
    const c = compile([np('db-pg', {
      podSelector: { matchLabels: { app: 'db' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 5432 }] }],
    })], [], state);
    assert.equal(c.m.services[0]!.identity, c.id('prod/db'));
    assert.ok(isAllow(c.egress('prod/web', c.id('prod/db'), 80)), 'VIP port 80 → targetPort 5432');
    assert.ok(isAllow(c.egress('prod/web', c.id('prod/db'), 5432)));
    assert.ok(!isAllow(c.egress('prod/web', c.id('prod/db'), 81)));
    assert.ok(!isAllow(c.egress('dev/tool', c.id('prod/db'), 80)), 'not admitted on the target port either');
  });

  it('endPort: a range, expanded to one entry per port', () => {
    const c = compile([np('range', {
      podSelector: { matchLabels: { app: 'db' } }, policyTypes: ['Egress'],
      egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/24' } }], ports: [{ protocol: 'TCP', port: 32000, endPort: 32768 }] }],
    })]);
    const net = c.cidrId('10.0.0.0/24');
    for (const [port, ok] of [[31999, false], [32000, true], [32500, true], [32768, true], [32769, false]] as const) {
      assert.equal(isAllow(c.egress('prod/db', net, port)), ok, `port ${port}`);
    }
    assert.equal(c.l4('node-a').filter((e) => e.peerIdentity === net && e.action === 'ALLOW').length, 769);
  });

  it('union of several policies selecting the same pod', () => {
    const c = compile([
      np('a', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 5432 }] }] }),
      np('b', { podSelector: { matchLabels: { tier: 'backend' } }, ingress: [{ from: [{ namespaceSelector: {} }], ports: [{ port: 9187 }] }] }),
    ]);
    assert.ok(c.reach('prod/web', 'prod/db', 5432));
    assert.ok(c.reach('prod/web', 'prod/db', 9187));
    assert.ok(c.reach('dev/tool', 'prod/db', 9187));
    assert.ok(!c.reach('dev/tool', 'prod/db', 5432));
    assert.ok(!c.reach('prod/web', 'prod/db', 22));
  });

  it('UDP and SCTP ports admit no TCP connection', () => {
    const c = compile([np('dns-only', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ ports: [{ protocol: 'UDP', port: 53 }] }] })]);
    assert.ok(!c.reach('prod/web', 'prod/db', 53));
  });
});

describe('NetworkPolicy with MeshPolicy', () => {
  it('a MeshPolicy default deny behind a NetworkPolicy that admits every egress: written where an (any) entry would hide the guard', () => {
    const c = compile(
      [np('db-egress-all', { podSelector: { matchLabels: { app: 'db' } }, policyTypes: ['Egress'], egress: [{}] })],
      [policy('prod', 'web-from-dev', { matchLabels: { app: 'web' }, rules: [{ from: [{ namespaces: ['dev'] }], to: [], when: [] }] })],
    );
    const web = c.id('prod/web'), pid = c.m.policies[0]!.id;
    assert.deepEqual(c.m.guards, [{ identity: web, policyId: pid }]);
    // prod/db is isolated for egress with an allow-all rule: an (any, any) ALLOW entry exists,
    // so the kernel would never reach web's guard; the compiler writes the default deny itself
    const entries = c.l4('node-a').filter((e) => e.direction === 'EGRESS' && e.localIdentity === c.id('prod/db'));
    assert.ok(entries.some((e) => e.peerIdentity === 0 && e.port === 0 && e.action === 'ALLOW'));
    const v = c.egress('prod/db', web, 8080);
    assert.ok(v !== 'ALLOW' && v.action === 'DENY' && v.defaultDeny === true && v.policyId === pid, JSON.stringify(v));
    assert.ok(entries.some((e) => e.peerIdentity === web && e.action === 'DENY'), 'an explicit entry, not the guard');
    // prod/web itself has no NetworkPolicy opinion: its default deny is the guard, no entry
    assert.ok(!c.l4('node-a').some((e) => e.direction === 'EGRESS' && e.localIdentity === web && e.peerIdentity === web));
    const w = c.egress('prod/web', web, 8080);
    assert.ok(w !== 'ALLOW' && w.action === 'DENY' && w.policyId === pid);
    // dev/web is admitted past the guard to the proxy
    assert.ok(isAllow(c.egress('dev/web', web, 8080)));
  });

  it('both must allow: a MeshPolicy DENY wins over a NetworkPolicy ALLOW', () => {
    const c = compile(
      [np('allow-all', { podSelector: {}, ingress: [{}] })],
      [policy('prod', 'no-legacy', { matchLabels: { app: 'db' }, action: 'DENY', rules: [{ from: [{ namespaces: ['legacy'] }], to: [], when: [] }] })],
    );
    const v = c.ingress('prod/db', c.id('legacy/client'), 5432);
    assert.ok(v !== 'DROP' && v.action === 'DENY' && v.policyId === c.m.policies[0]!.id && !v.defaultDeny);
    assert.ok(isAllow(c.ingress('prod/web', c.id('legacy/client'), 80)));
  });

  it('a NetworkPolicy default deny wins over a MeshPolicy ALLOW', () => {
    const c = compile(
      [np('deny', { podSelector: { matchLabels: { app: 'db' } }, policyTypes: ['Ingress'] })],
      [policy('prod', 'db-allow', { matchLabels: { app: 'db' }, rules: [{ from: [], to: [], when: [] }] })],
    );
    const v = c.ingress('prod/db', c.id('legacy/client'), 5432);
    assert.ok(v !== 'DROP' && v.action === 'DENY' && v.policyId === c.npId('deny') && v.defaultDeny === true);
  });

  it('ingress needing L7 stays dropped without the proxy even when NetworkPolicy admits it', () => {
    const c = compile(
      [np('allow-legacy', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'legacy' } } }] }] })],
      [policy('prod', 'db-http', { matchLabels: { app: 'db' }, rules: [{ from: [], to: [{ methods: ['GET'] }], when: [] }] })],
    );
    assert.ok(!isAllow(c.ingress('prod/db', c.id('legacy/client'), 5432)));
    // MeshPolicy alone wrote a WORLD rule for the selected pod; a CIDR identity inherits it
    assert.ok(!isAllow(c.ingress('prod/db', WORLD, 5432)));
  });

  it('CIDR identities inherit WORLD entries of MeshPolicy-only endpoints', () => {
    const c = compile(
      [np('web-out', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '203.0.113.0/24' } }] }] })],
      [policy('prod', 'db-open', { matchLabels: { app: 'db' }, rules: [{ from: [], to: [], when: [] }] })],
    );
    const net = c.cidrId('203.0.113.0/24');
    assert.equal(isAllow(c.ingress('prod/db', net, 5432)), isAllow(c.ingress('prod/db', WORLD, 5432)));
    assert.ok(isAllow(c.ingress('prod/db', net, 5432)));
  });
});

describe('NetworkPolicy in the snapshot', () => {
  it('carries the CIDR identities and the merged entries, across the wire', () => {
    const c = compile([np('egress-cidr', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '172.17.0.0/16', except: ['172.17.1.0/24'] } }] }] })]);
    const { snapshot } = snapshotContent(c.m, modelHash(c.m), 'node-a');
    assert.deepEqual(snapshot.cidrIdentities, c.m.networkPolicy!.cidrIdentities);
    assert.deepEqual(snapshot.l4, c.l4('node-a'));
    assert.deepEqual(snapshot.networkPolicies, [{ id: c.npId('egress-cidr'), namespace: 'prod', name: 'egress-cidr' }]);
    const method = loadAgentControl().definition.Stream!;
    const back = snapshotFromWire(method.responseDeserialize(method.responseSerialize(snapshotToWire(snapshot))) as WireSnapshotMessage);
    assert.deepEqual(back, snapshot);
    // and a snapshot without NetworkPolicy has no such field, before and after the wire
    const none = snapshotContent(compile([]).m, 'x', 'node-a').snapshot;
    assert.equal(none.cidrIdentities, undefined);
    assert.equal(none.networkPolicies, undefined);
    assert.equal(snapshotFromWire(method.responseDeserialize(method.responseSerialize(snapshotToWire(none))) as WireSnapshotMessage).cidrIdentities, undefined);
  });
});

describe('NetworkPolicy from the directory source', () => {
  it('reads a manifest into ClusterState and reports an invalid one by file, object and field', async () => {
    const dir = tmp.make();
    write(dir, 'np.yaml', [
      'apiVersion: networking.k8s.io/v1', 'kind: NetworkPolicy', 'metadata: {name: allow-web, namespace: prod}',
      'spec:', '  podSelector: {matchLabels: {app: db}}', '  ingress:', '  - from: [{podSelector: {matchLabels: {app: web}}}]', '    ports: [{port: 5432}]',
      '---', 'apiVersion: networking.k8s.io/v1', 'kind: NetworkPolicy', 'metadata: {name: broken, namespace: prod}',
      'spec:', '  podSelector: {}', '  egress:', '  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}}]', '',
    ].join('\n'));
    const src = new DirectorySource({ dir, logger: silent });
    await src.start(() => {});
    try {
      assert.deepEqual(src.state().networkPolicies?.map((p) => p.name), ['allow-web']);
      assert.deepEqual(src.state().networkPolicies![0]!.ingress, [{ peers: [{ podSelector: { matchLabels: { app: 'web' }, matchExpressions: [] } }], ports: [{ protocol: 'TCP', port: 5432 }] }]);
      const msgs = src.errors().map((e) => String((e as { message?: unknown }).message ?? e));
      assert.equal(msgs.length, 1);
      assert.match(msgs[0]!, /np\.yaml.*NetworkPolicy prod\/broken.*spec\.egress\[0\]\.to\[0\]\.ipBlock\.except\[0\]/);
    } finally {
      await src.close();
    }
  });
});
