// evaluate(): Istio AuthorizationPolicy semantics, table-driven from Istio's documented
// examples (authorization concepts, authz-http, authz-deny, authz-tcp tasks).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { CompiledPolicy, CompiledRule, L7Match, PeerMatch } from '../../control/api/types.ts';
import { describeDecision, evaluate, forSource, matchHost, matchValue, type Decision, type PolicyRequest } from '../../agent/policy/index.ts';

const HTTPBIN = 300;
const SLEEP = 256;
const OTHER = 257;
const SLEEP_SRC = { identity: SLEEP, namespace: 'foo', principal: 'cluster.local/ns/foo/sa/sleep' };
const DEV_SRC = { identity: OTHER, namespace: 'dev', principal: 'cluster.local/ns/dev/sa/default' };

let nextId = 1;
function policy(name: string, action: CompiledPolicy['action'], rules: CompiledRule[], selects = [HTTPBIN]): CompiledPolicy {
  return { id: nextId++, namespace: 'foo', name, action, selects, rules };
}
function rule(index: number, r: { from?: PeerMatch[]; to?: L7Match[]; when?: CompiledRule['when'] } = {}): CompiledRule {
  return { index, from: r.from ?? [], to: r.to ?? [], when: r.when ?? [] };
}
function http(method: string, path: string, extra: Partial<PolicyRequest> = {}): PolicyRequest {
  return { dstIdentity: HTTPBIN, src: SLEEP_SRC, port: 8000, method, path, host: 'httpbin.foo:8000', ...extra };
}
function tcp(port: number, extra: Partial<PolicyRequest> = {}): PolicyRequest {
  return { dstIdentity: HTTPBIN, src: SLEEP_SRC, port, ...extra };
}

interface Case {
  name: string;
  policies: CompiledPolicy[];
  req: PolicyRequest;
  allowed: boolean;
  reason: Decision['reason'];
  /** the policy named by the decision, and its rule */
  by?: string;
  rule?: number;
}

const allowNothing = policy('allow-nothing', 'ALLOW', []);
const denyAll = policy('deny-all', 'DENY', [rule(0)]);
const allowAll = policy('allow-all', 'ALLOW', [rule(0)]);
const allowRead = policy('allow-read', 'ALLOW', [rule(0, { to: [{ methods: ['GET', 'HEAD'] }] })]);
// authorization concepts page: two rules, principals/namespaces and methods/paths
const httpbin = policy('httpbin', 'ALLOW', [
  rule(0, { from: [{ principals: ['cluster.local/ns/foo/sa/sleep'] }], to: [{ methods: ['GET'], paths: ['/info*'] }] }),
  rule(1, { from: [{ namespaces: ['dev'] }], to: [{ methods: ['POST'], paths: ['/data'] }] }),
]);
// authz-deny: deny GET unless the x-token header is admin
const denyGetUnlessAdmin = policy('deny-method-get', 'DENY', [
  rule(0, { to: [{ methods: ['GET'] }], when: [{ key: 'request.headers[x-token]', notValues: ['admin'] }] }),
]);
const denyAdminPaths = policy('deny-admin', 'DENY', [rule(0, { to: [{ paths: ['/admin*'] }] })]);
const denyNotFoo = policy('deny-not-foo', 'DENY', [rule(0, { from: [{ notNamespaces: ['foo'] }] })]);
// authz-tcp: ports 9000/9001 allowed, then the same policy with an HTTP-only field
const tcpPorts = policy('tcp-policy', 'ALLOW', [rule(0, { to: [{ ports: [9000, 9001] }] })]);
const tcpWithMethods = policy('tcp-policy-methods', 'ALLOW', [rule(0, { to: [{ methods: ['GET'], ports: [9000] }] })]);
const tcpDenyMethods = policy('tcp-deny-methods', 'DENY', [rule(0, { to: [{ methods: ['GET'], ports: [9000] }] })]);
const byIdentity = policy('by-identity', 'ALLOW', [rule(0, { from: [{ identities: [SLEEP] }] })]);
const hosts = policy('hosts', 'ALLOW', [rule(0, { to: [{ hosts: ['*.example.com', 'exact.io'] }] })]);
const notPaths = policy('not-private', 'ALLOW', [rule(0, { to: [{ notPaths: ['/private*'] }] })]);
const notPorts = policy('not-9002', 'ALLOW', [rule(0, { to: [{ notPorts: [9002] }] })]);
const fromCidr = policy('from-cidr', 'ALLOW', [rule(0, { when: [{ key: 'source.ip', values: ['10.1.0.0/16'] }] })]);
const jwtAllow = policy('jwt-allow', 'ALLOW', [rule(0, { when: [{ key: 'request.auth.claims[iss]', values: ['me'] }] })]);
const jwtDeny = policy('jwt-deny', 'DENY', [rule(0, { when: [{ key: 'request.auth.claims[iss]', values: ['evil'] }] })]);
const headerAllow = policy('header-allow', 'ALLOW', [rule(0, { when: [{ key: 'request.headers[version]', values: ['v1', 'v2'] }] })]);
const otherWorkload = policy('other', 'DENY', [rule(0)], [999]);
// operation.headers and gRPC service/method (MeshPolicy `to`)
const headerOp = policy('header-op', 'ALLOW', [rule(0, { to: [{ headers: { 'x-tenant': ['acme', 'beta-*'], 'x-user': ['*'] } }] })]);
const denyHeaderOp = policy('deny-debug', 'DENY', [rule(0, { to: [{ headers: { 'x-debug': ['*'] } }] })]);
const grpcOp = policy('grpc-op', 'ALLOW', [rule(0, { to: [{ grpcServices: ['shop.v1.Cart', 'shop.v1.Catalog*'], grpcMethods: ['Get*', 'List*'] }] })]);
const denyGrpcOp = policy('deny-grpc', 'DENY', [rule(0, { to: [{ grpcMethods: ['Delete*'] }] })]);
const GRPC = { 'content-type': 'application/grpc+proto' };
const audit = policy('audit-all', 'AUDIT', [rule(0, { to: [{ paths: ['/audit*'] }] })]);

const cases: Case[] = [
  { name: 'no policy: allowed', policies: [], req: http('GET', '/'), allowed: true, reason: 'NO_POLICY' },
  { name: 'a policy for another workload does not apply', policies: [otherWorkload], req: http('GET', '/'), allowed: true, reason: 'NO_POLICY' },
  { name: 'allow-nothing (ALLOW without rules) denies everything', policies: [allowNothing], req: http('GET', '/'), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'allow-nothing' },
  { name: 'deny-all (DENY with one empty rule)', policies: [denyAll], req: http('GET', '/'), allowed: false, reason: 'DENY_MATCHED', by: 'deny-all', rule: 0 },
  { name: 'allow-all (ALLOW with one empty rule)', policies: [allowAll], req: http('DELETE', '/x'), allowed: true, reason: 'ALLOW_MATCHED', by: 'allow-all', rule: 0 },
  { name: 'allow-read: GET allowed', policies: [allowRead], req: http('GET', '/productpage'), allowed: true, reason: 'ALLOW_MATCHED', by: 'allow-read', rule: 0 },
  { name: 'allow-read: POST denied naming the ALLOW policy', policies: [allowRead], req: http('POST', '/productpage'), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'allow-read' },
  { name: 'httpbin rule 0: principal + GET /info*', policies: [httpbin], req: http('GET', '/info/version'), allowed: true, reason: 'ALLOW_MATCHED', by: 'httpbin', rule: 0 },
  { name: 'httpbin rule 1: namespace dev + POST /data', policies: [httpbin], req: http('POST', '/data', { src: DEV_SRC }), allowed: true, reason: 'ALLOW_MATCHED', by: 'httpbin', rule: 1 },
  { name: 'httpbin: POST /data from sleep matches no rule', policies: [httpbin], req: http('POST', '/data'), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'httpbin' },
  { name: 'httpbin: GET /info from dev has the wrong principal', policies: [httpbin], req: http('GET', '/info', { src: DEV_SRC }), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'httpbin' },
  { name: 'deny GET without x-token admin', policies: [denyGetUnlessAdmin], req: http('GET', '/get'), allowed: false, reason: 'DENY_MATCHED', by: 'deny-method-get', rule: 0 },
  { name: 'deny GET: x-token admin passes', policies: [denyGetUnlessAdmin], req: http('GET', '/get', { headers: { 'x-token': 'admin' } }), allowed: true, reason: 'NO_POLICY' },
  { name: 'deny GET: POST passes', policies: [denyGetUnlessAdmin], req: http('POST', '/post'), allowed: true, reason: 'NO_POLICY' },
  { name: 'DENY wins over a matching ALLOW', policies: [allowAll, denyAdminPaths], req: http('GET', '/admin/users'), allowed: false, reason: 'DENY_MATCHED', by: 'deny-admin', rule: 0 },
  { name: 'ALLOW applies when the DENY does not match', policies: [allowAll, denyAdminPaths], req: http('GET', '/public'), allowed: true, reason: 'ALLOW_MATCHED', by: 'allow-all', rule: 0 },
  { name: 'notNamespaces: a source outside foo is denied', policies: [denyNotFoo], req: http('GET', '/', { src: DEV_SRC }), allowed: false, reason: 'DENY_MATCHED', by: 'deny-not-foo', rule: 0 },
  { name: 'notNamespaces: a source in foo passes', policies: [denyNotFoo], req: http('GET', '/'), allowed: true, reason: 'NO_POLICY' },
  { name: 'tcp: port 9000 allowed', policies: [tcpPorts], req: tcp(9000), allowed: true, reason: 'ALLOW_MATCHED', by: 'tcp-policy', rule: 0 },
  { name: 'tcp: port 9002 denied', policies: [tcpPorts], req: tcp(9002), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'tcp-policy' },
  { name: 'tcp: an ALLOW rule with HTTP-only methods never matches TCP', policies: [tcpWithMethods], req: tcp(9000), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'tcp-policy-methods' },
  { name: 'http: the same rule matches HTTP GET on 9000', policies: [tcpWithMethods], req: http('GET', '/', { port: 9000 }), allowed: true, reason: 'ALLOW_MATCHED', by: 'tcp-policy-methods', rule: 0 },
  { name: 'tcp: a DENY rule ignores HTTP-only methods and denies the port', policies: [tcpDenyMethods], req: tcp(9000), allowed: false, reason: 'DENY_MATCHED', by: 'tcp-deny-methods', rule: 0 },
  { name: 'tcp: the DENY keeps its port constraint', policies: [tcpDenyMethods], req: tcp(9001), allowed: true, reason: 'NO_POLICY' },
  { name: 'from identities: listed identity allowed', policies: [byIdentity], req: tcp(80), allowed: true, reason: 'ALLOW_MATCHED', by: 'by-identity', rule: 0 },
  { name: 'from identities: other identity denied', policies: [byIdentity], req: tcp(80, { src: DEV_SRC }), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'by-identity' },
  { name: 'hosts: suffix wildcard, case and port ignored', policies: [hosts], req: http('GET', '/', { host: 'WWW.Example.com:8080' }), allowed: true, reason: 'ALLOW_MATCHED', by: 'hosts', rule: 0 },
  { name: 'hosts: exact host', policies: [hosts], req: http('GET', '/', { host: 'exact.io' }), allowed: true, reason: 'ALLOW_MATCHED', by: 'hosts', rule: 0 },
  { name: 'hosts: another host denied', policies: [hosts], req: http('GET', '/', { host: 'example.org' }), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'hosts' },
  { name: 'notPaths: public path allowed', policies: [notPaths], req: http('GET', '/public'), allowed: true, reason: 'ALLOW_MATCHED', by: 'not-private', rule: 0 },
  { name: 'notPaths: private path denied', policies: [notPaths], req: http('GET', '/private/key'), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'not-private' },
  { name: 'notPorts: other port allowed on tcp', policies: [notPorts], req: tcp(9000), allowed: true, reason: 'ALLOW_MATCHED', by: 'not-9002', rule: 0 },
  { name: 'notPorts: listed port denied', policies: [notPorts], req: tcp(9002), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'not-9002' },
  { name: 'when source.ip CIDR: inside', policies: [fromCidr], req: tcp(80, { src: { ...SLEEP_SRC, ip: '10.1.2.3' } }), allowed: true, reason: 'ALLOW_MATCHED', by: 'from-cidr', rule: 0 },
  { name: 'when source.ip CIDR: outside', policies: [fromCidr], req: tcp(80, { src: { ...SLEEP_SRC, ip: '10.2.0.1' } }), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'from-cidr' },
  { name: 'when header: value listed', policies: [headerAllow], req: http('GET', '/', { headers: { version: 'v2' } }), allowed: true, reason: 'ALLOW_MATCHED', by: 'header-allow', rule: 0 },
  { name: 'when header on TCP: an ALLOW cannot match', policies: [headerAllow], req: tcp(80), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'header-allow' },
  { name: 'to headers: every listed header matches a pattern', policies: [headerOp], req: http('GET', '/', { headers: { 'x-tenant': 'beta-7', 'x-user': 'ann' } }), allowed: true, reason: 'ALLOW_MATCHED', by: 'header-op', rule: 0 },
  { name: 'to headers: one listed header absent', policies: [headerOp], req: http('GET', '/', { headers: { 'x-tenant': 'acme' } }), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'header-op' },
  { name: 'to headers: "*" needs a non-empty value', policies: [headerOp], req: http('GET', '/', { headers: { 'x-tenant': 'acme', 'x-user': '' } }), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'header-op' },
  { name: 'to headers: a value no pattern matches', policies: [headerOp], req: http('GET', '/', { headers: { 'x-tenant': 'gamma', 'x-user': 'ann' } }), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'header-op' },
  { name: 'to headers: ALLOW cannot match on TCP', policies: [headerOp], req: tcp(80), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'header-op' },
  { name: 'to headers: DENY with the header present', policies: [denyHeaderOp], req: http('GET', '/', { headers: { 'x-debug': '1' } }), allowed: false, reason: 'DENY_MATCHED', by: 'deny-debug', rule: 0 },
  { name: 'to headers: DENY without the header', policies: [denyHeaderOp], req: http('GET', '/', { headers: {} }), allowed: true, reason: 'NO_POLICY' },
  { name: 'to grpc: service and method match (from content-type and path)', policies: [grpcOp], req: http('POST', '/shop.v1.Cart/GetCart', { headers: GRPC }), allowed: true, reason: 'ALLOW_MATCHED', by: 'grpc-op', rule: 0 },
  { name: 'to grpc: service prefix pattern', policies: [grpcOp], req: http('POST', '/shop.v1.CatalogAdmin/ListItems', { headers: GRPC }), allowed: true, reason: 'ALLOW_MATCHED', by: 'grpc-op', rule: 0 },
  { name: 'to grpc: method not listed', policies: [grpcOp], req: http('POST', '/shop.v1.Cart/AddItem', { headers: GRPC }), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'grpc-op' },
  { name: 'to grpc: the same path without a gRPC content-type is not gRPC', policies: [grpcOp], req: http('POST', '/shop.v1.Cart/GetCart', { headers: { 'content-type': 'application/json' } }), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'grpc-op' },
  { name: 'to grpc: the proxy may name service and method itself', policies: [grpcOp], req: http('POST', '/x', { grpc: { service: 'shop.v1.Cart', method: 'ListCarts' } }), allowed: true, reason: 'ALLOW_MATCHED', by: 'grpc-op', rule: 0 },
  { name: 'to grpc: DENY matches the gRPC method', policies: [denyGrpcOp], req: http('POST', '/shop.v1.Cart/DeleteCart', { headers: GRPC }), allowed: false, reason: 'DENY_MATCHED', by: 'deny-grpc', rule: 0 },
  { name: 'to grpc: DENY never matches a REST request', policies: [denyGrpcOp], req: http('DELETE', '/DeleteCart/x', { headers: {} }), allowed: true, reason: 'NO_POLICY' },
  { name: 'to grpc: DENY applies to opaque TCP (L4 only: HTTP fields ignored)', policies: [denyGrpcOp], req: tcp(9000), allowed: false, reason: 'DENY_MATCHED', by: 'deny-grpc', rule: 0 },
  { name: 'unsupported when key: an ALLOW does not match', policies: [jwtAllow], req: http('GET', '/'), allowed: false, reason: 'NO_ALLOW_MATCHED', by: 'jwt-allow' },
  { name: 'unsupported when key: a DENY ignores it and denies', policies: [jwtDeny], req: http('GET', '/'), allowed: false, reason: 'DENY_MATCHED', by: 'jwt-deny', rule: 0 },
];

describe('policy evaluate', () => {
  for (const c of cases) {
    it(c.name, () => {
      const d = evaluate(c.policies, c.req);
      assert.equal(d.allowed, c.allowed, describeDecision(d));
      assert.equal(d.verdict, c.allowed ? 'ALLOW' : 'DENY');
      assert.equal(d.reason, c.reason);
      assert.equal(d.policy?.name, c.by);
      assert.equal(d.policy?.rule, c.rule);
    });
  }

  it('AUDIT only marks: the verdict is untouched, the audit policy is named', () => {
    const d = evaluate([audit], http('GET', '/audit/log'));
    assert.equal(d.allowed, true);
    assert.equal(d.reason, 'NO_POLICY');
    assert.deepEqual(d.audit, { id: audit.id, namespace: 'foo', name: 'audit-all', rule: 0 });
    const denied = evaluate([audit, denyAll], http('GET', '/audit/log'));
    assert.equal(denied.allowed, false);
    assert.equal(denied.audit?.name, 'audit-all');
    assert.equal(evaluate([audit], http('GET', '/other')).audit, undefined);
  });

  it('names the first ALLOW policy that selects the workload when none matches', () => {
    const d = evaluate([otherWorkload, allowRead, allowNothing], http('POST', '/'));
    assert.equal(d.policy?.name, 'allow-read');
    assert.equal(describeDecision(d), 'no ALLOW policy of foo/allow-read matches');
  });

  it('describes each decision in one line', () => {
    assert.equal(describeDecision(evaluate([denyAll], http('GET', '/'))), 'denied by foo/deny-all rule 0');
    assert.equal(describeDecision(evaluate([allowAll], http('GET', '/'))), 'allowed by foo/allow-all rule 0');
    assert.equal(describeDecision(evaluate([], http('GET', '/'))), 'allowed: no policy selects the workload');
  });
});

describe('policy forSource (the per-source part the proxy keeps)', () => {
  const everything = [allowRead, httpbin, denyGetUnlessAdmin, denyNotFoo, byIdentity, audit, headerAllow, denyGrpcOp, allowNothing];
  it('decides every case as the full policies do', () => {
    for (const c of cases) {
      assert.deepEqual(evaluate(forSource(c.policies, c.req.src), c.req), evaluate(c.policies, c.req), c.name);
    }
  });

  it('decides mixed policies as the full set does, for each source', () => {
    for (const src of [SLEEP_SRC, DEV_SRC, { identity: 999, namespace: 'bar', principal: 'cluster.local/ns/bar/sa/x' }]) {
      const mine = forSource(everything, src);
      for (const req of [http('GET', '/info/x'), http('POST', '/data'), http('GET', '/audit/a'), http('GET', '/', { headers: { version: 'v1' } }), tcp(9000)]) {
        const r = { ...req, src };
        assert.deepEqual(evaluate(mine, r), evaluate(everything, r), `${src.namespace} ${r.method ?? 'tcp'} ${r.path ?? r.port}`);
      }
    }
  });

  it('drops what cannot apply to the source and keeps an ALLOW left without rules', () => {
    const mine = forSource([httpbin, denyNotFoo, allowNothing], SLEEP_SRC);
    // httpbin keeps its rule 0 (sleep's principal), without the from it passed; deny-not-foo goes
    assert.deepEqual(mine.map((p) => [p.name, p.rules.map((r) => [r.index, r.from.length])]), [['httpbin', [[0, 0]]], ['allow-nothing', []]]);
    const dev = forSource([byIdentity], DEV_SRC);
    assert.deepEqual(dev.map((p) => [p.name, p.rules.length]), [['by-identity', 0]]);
    assert.equal(forSource([allowAll], SLEEP_SRC)[0], allowAll, 'a policy without source conditions is shared, not copied');
  });
});

describe('policy value matching (Istio syntax)', () => {
  const table: Array<[string, string, boolean]> = [
    ['/api', '/api', true],
    ['/api', '/api/', false],
    ['/api/*', '/api/users', true],
    ['/api/*', '/api', false],
    ['*.png', '/img/logo.png', true],
    ['*.png', '/img/logo.jpg', false],
    ['*', '/anything', true],
    ['*', '', false],
    ['/a/*/b', '/a/x/b', false],
  ];
  for (const [pattern, value, want] of table) {
    it(`${JSON.stringify(pattern)} ${want ? 'matches' : 'does not match'} ${JSON.stringify(value)}`, () => {
      assert.equal(matchValue(pattern, value), want);
    });
  }

  it('hosts: case-insensitive, optional port, bracketed IPv6', () => {
    assert.equal(matchHost(['Example.COM'], 'example.com:80'), true);
    assert.equal(matchHost(['[::1]'], '[::1]:8080'), true);
    assert.equal(matchHost(['*.svc'], undefined), false);
  });
});
