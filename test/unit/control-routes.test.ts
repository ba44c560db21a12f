// Gateway API routes (GAMMA) and TrafficPolicy through the directory source: what is
// rejected and how the message names it, what stays in force, what the snapshot carries,
// and that every field crosses the wire (control.proto) and travels in its own delta section.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { DirectorySource, buildModel, type ClusterState, type Snapshot } from '../../control/index.ts';
import { applyDelta, changedSections, deltaToWire, loadAgentControl, snapshotFromWire, snapshotToWire, type WireSnapshotMessage } from '../../control/grpc/proto.ts';
import { snapshotContent, modelHash } from '../../control/model/snapshot.ts';
import { PersistentIds } from '../../control/model/ids.ts';
import { parseManifests } from '../../cli/dev/manifest.ts';
import { TempDirs, loadDirectory, write } from '../fixtures/control/helpers.ts';
import { repoRoot } from '../helpers/paths.ts';

const tmp = new TempDirs();
after(() => tmp.cleanup());

const services = `apiVersion: v1
kind: Service
metadata: { name: backend, namespace: demo }
spec: { clusterIP: 10.96.0.20, selector: { app: backend }, ports: [{ name: http, port: 80, targetPort: 8080 }] }
---
apiVersion: v1
kind: Service
metadata: { name: backend-v1, namespace: demo }
spec: { clusterIP: 10.96.0.21, selector: { app: backend, version: v1 }, ports: [{ name: http, port: 80, targetPort: 8080 }] }
---
apiVersion: v1
kind: Service
metadata: { name: backend-v2, namespace: demo }
spec: { clusterIP: 10.96.0.22, selector: { app: backend, version: v2 }, ports: [{ name: http, port: 80, targetPort: 8080 }] }
`;

const httpRoute = (spec: string, name = 'split', extraMeta = ''): string => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: ${name}, namespace: demo${extraMeta} }
spec:
  parentRefs: [{ group: "", kind: Service, name: backend, port: 80 }]
${spec}`;

const grpcRoute = (spec: string): string => `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: rpc, namespace: demo }
spec:
  parentRefs: [{ group: "", kind: Service, name: backend }]
${spec}`;

const trafficPolicy = (spec: string, name = 'backend'): string => `apiVersion: nodal.io/v1alpha1
kind: TrafficPolicy
metadata: { name: ${name}, namespace: demo }
spec:
  targetRef: { group: "", kind: Service, name: backend }
${spec}`;

const load = (files: Record<string, string>): Promise<{ dir: string; src: DirectorySource }> => loadDirectory(tmp, files);

const snapshotOf = (state: ClusterState): Snapshot => {
  const model = buildModel({ state, trustDomain: 'cluster.local', ids: new PersistentIds(tmp.make()) });
  return snapshotContent(model, modelHash(model), 'node-a').snapshot;
};

describe('route and TrafficPolicy validation', () => {
  const cases: Array<{ what: string; doc: string; object: string; field: string; reason: RegExp }> = [
    { what: 'a PathPrefix without a leading slash', doc: httpRoute('  rules: [{ matches: [{ path: { type: PathPrefix, value: api } }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].matches[0].path.value', reason: /must start with \// },
    { what: 'a path regex that does not compile', doc: httpRoute('  rules: [{ matches: [{ path: { type: RegularExpression, value: "/a(" } }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].matches[0].path.value', reason: /is not a regular expression/ },
    { what: 'a header regex that does not compile', doc: httpRoute('  rules: [{ matches: [{ headers: [{ type: RegularExpression, name: x-user, value: "[" }] }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].matches[0].headers[0].value', reason: /is not a regular expression/ },
    { what: 'a header name that is no token', doc: httpRoute('  rules: [{ matches: [{ headers: [{ name: "x user", value: a }] }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].matches[0].headers[0].name', reason: /not an HTTP header name/ },
    { what: 'an unknown method', doc: httpRoute('  rules: [{ matches: [{ method: FETCH }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].matches[0].method', reason: /"FETCH" is not one of GET/ },
    { what: 'an unsupported filter', doc: httpRoute('  rules: [{ filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: x, port: 80 } } }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].filters[0].type', reason: /"RequestMirror" is not supported by nodal.*RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite/ },
    { what: 'a filter without its body', doc: httpRoute('  rules: [{ filters: [{ type: RequestHeaderModifier }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].filters[0].requestHeaderModifier', reason: /is required for type RequestHeaderModifier/ },
    { what: 'a redirect with backends', doc: httpRoute('  rules: [{ filters: [{ type: RequestRedirect, requestRedirect: { scheme: https } }], backendRefs: [{ name: backend-v1, port: 80 }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].backendRefs', reason: /cannot have backendRefs/ },
    { what: 'a redirect status Gateway API does not allow here', doc: httpRoute('  rules: [{ filters: [{ type: RequestRedirect, requestRedirect: { statusCode: 307 } }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].filters[0].requestRedirect.statusCode', reason: /301 or 302/ },
    { what: 'ReplacePrefixMatch without a PathPrefix match', doc: httpRoute('  rules: [{ filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /v2 } } }], backendRefs: [{ name: backend-v1, port: 80 }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].filters', reason: /ReplacePrefixMatch needs every match/ },
    { what: 'a backend without a port', doc: httpRoute('  rules: [{ backendRefs: [{ name: backend-v1 }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].backendRefs[0].port', reason: /is required for a Service backend/ },
    { what: 'a backend of another kind', doc: httpRoute('  rules: [{ backendRefs: [{ group: multicluster.x-k8s.io, kind: ServiceImport, name: b, port: 80 }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].backendRefs[0].kind', reason: /only Service backends/ },
    { what: 'a weight above 1,000,000', doc: httpRoute('  rules: [{ backendRefs: [{ name: backend-v1, port: 80, weight: 1000001 }] }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].backendRefs[0].weight', reason: /outside 0..1000000/ },
    { what: 'a timeout that is no Gateway API duration', doc: httpRoute('  rules: [{ timeouts: { request: 10 seconds } }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].timeouts.request', reason: /is not a duration/ },
    { what: 'a per-try timeout longer than the request', doc: httpRoute('  rules: [{ timeouts: { request: 1s, backendRequest: 2s } }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].timeouts.backendRequest', reason: /longer than request/ },
    { what: 'a retry code outside 400-599', doc: httpRoute('  rules: [{ retry: { codes: [302] } }]'),
      object: 'HTTPRoute demo/split', field: 'spec.rules[0].retry.codes[0]', reason: /outside 400..599/ },
    { what: 'a core-group parent that is not a Service', doc: httpRoute('  parentRefs: [{ group: "", kind: Pod, name: x }]').replace(/  parentRefs: \[\{ group: "", kind: Service, name: backend, port: 80 \}\]\n/, ''),
      object: 'HTTPRoute demo/split', field: 'spec.parentRefs[0].kind', reason: /only Service parents/ },
    { what: 'a Service parent outside the core group', doc: httpRoute('').replace('group: ""', 'group: gateway.networking.k8s.io'),
      object: 'HTTPRoute demo/split', field: 'spec.parentRefs[0].group', reason: /core group/ },
    { what: 'a GRPCRoute method match naming neither service nor method', doc: grpcRoute('  rules: [{ matches: [{ method: { type: Exact } }] }]'),
      object: 'GRPCRoute demo/rpc', field: 'spec.rules[0].matches[0].method', reason: /at least one of service, method/ },
    { what: 'a GRPCRoute service that is no gRPC name', doc: grpcRoute('  rules: [{ matches: [{ method: { service: "pkg/Svc" } }] }]'),
      object: 'GRPCRoute demo/rpc', field: 'spec.rules[0].matches[0].method.service', reason: /not a gRPC service name/ },
    { what: 'a GRPCRoute with an HTTP-only filter', doc: grpcRoute('  rules: [{ filters: [{ type: URLRewrite }] }]'),
      object: 'GRPCRoute demo/rpc', field: 'spec.rules[0].filters[0].type', reason: /"URLRewrite" is not supported by nodal here \(supported: RequestHeaderModifier, ResponseHeaderModifier\)/ },
    { what: 'a TrafficPolicy duration that is no duration', doc: trafficPolicy('  outlierDetection: { interval: 10 }'),
      object: 'TrafficPolicy demo/backend', field: 'spec.outlierDetection.interval', reason: /expected a string|not a duration/ },
    { what: 'CONSISTENT_HASH without hashOn', doc: trafficPolicy('  loadBalancer: { algorithm: CONSISTENT_HASH }'),
      object: 'TrafficPolicy demo/backend', field: 'spec.loadBalancer.hashOn', reason: /is required for CONSISTENT_HASH/ },
    { what: 'hashOn with two properties', doc: trafficPolicy('  loadBalancer: { algorithm: CONSISTENT_HASH, hashOn: { header: x-user, cookie: c } }'),
      object: 'TrafficPolicy demo/backend', field: 'spec.loadBalancer.hashOn', reason: /exactly one/ },
    { what: 'an HTTP path on a TCP health check', doc: trafficPolicy('  healthCheck: { protocol: TCP, path: /healthz }'),
      object: 'TrafficPolicy demo/backend', field: 'spec.healthCheck.path', reason: /only goes with protocol HTTP/ },
    { what: 'a health check timeout longer than its interval', doc: trafficPolicy('  healthCheck: { protocol: TCP, interval: 1s, timeout: 2s }'),
      object: 'TrafficPolicy demo/backend', field: 'spec.healthCheck.timeout', reason: /no longer than the interval/ },
    { what: 'an unknown retryOn', doc: trafficPolicy('  retry: { retryOn: [sometimes] }'),
      object: 'TrafficPolicy demo/backend', field: 'spec.retry.retryOn[0]', reason: /"sometimes" is not one of/ },
    { what: 'a TrafficPolicy field nodal does not know', doc: trafficPolicy('  circuitBreaker: {}'),
      object: 'TrafficPolicy demo/backend', field: 'spec.circuitBreaker', reason: /unknown field/ },
  ];
  for (const c of cases) {
    it(`rejects ${c.what}, naming file, object and field`, async () => {
      const { dir, src } = await load({ 'svc.yaml': services, 'obj.yaml': c.doc });
      const errors = src.errors();
      assert.equal(errors.length, 1, errors.map((e) => e.message).join('\n'));
      const e = errors[0]!;
      assert.equal(e.file, `${dir}/obj.yaml`);
      assert.equal(e.object, c.object);
      assert.equal(e.field, c.field);
      assert.match(e.reason, c.reason);
      assert.equal(src.state().routes, undefined);
      assert.equal(src.state().trafficPolicies, undefined);
    });
  }

  it('ignores a route whose parents are all Gateways (another controller\'s), without an error', async () => {
    const doc = httpRoute('').replace('parentRefs: [{ group: "", kind: Service, name: backend, port: 80 }]', 'parentRefs: [{ name: my-gateway }]');
    const { src } = await load({ 'svc.yaml': services, 'gw.yaml': doc });
    assert.deepEqual(src.errors(), []);
    assert.equal(src.state().routes, undefined);
  });

  it('keeps the last good route and TrafficPolicy in force when an edit breaks them', async () => {
    const good = httpRoute('  rules: [{ backendRefs: [{ name: backend-v1, port: 80 }] }]');
    const tp = trafficPolicy('  loadBalancer: { algorithm: LEAST_REQUEST }');
    const { dir, src } = await load({ 'svc.yaml': services, 'route.yaml': good, 'tp.yaml': tp });
    assert.equal(src.state().routes?.length, 1);
    write(dir, 'route.yaml', httpRoute('  rules: [{ backendRefs: [{ name: backend-v2 }] }]'));
    write(dir, 'tp.yaml', trafficPolicy('  loadBalancer: { algorithm: RANDOM }'));
    src.scan();
    assert.deepEqual(src.errors().map((e) => e.field), ['spec.rules[0].backendRefs[0].port', 'spec.loadBalancer.algorithm']);
    assert.equal(src.state().routes?.[0]?.rules[0]?.backends[0]?.service.name, 'backend-v1');
    assert.equal(src.state().trafficPolicies?.[0]?.loadBalancer?.algorithm, 'LEAST_REQUEST');
  });
});

describe('route compile', () => {
  it('splits by weight, keeps matches, filters, timeouts, retry and createdAt, one route per Service parent', async () => {
    const doc = httpRoute(`  hostnames: [Backend.Demo.svc.cluster.local]
  rules:
    - name: canary
      matches:
        - path: { type: PathPrefix, value: /api }
          headers: [{ name: X-Canary, value: "yes" }]
          queryParams: [{ type: RegularExpression, name: Debug, value: "^1$" }]
          method: GET
        - path: { type: Exact, value: /health }
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [{ name: X-Route, value: canary }], remove: [X-Internal] }
        - type: URLRewrite
          urlRewrite: { path: { type: ReplaceFullPath, replaceFullPath: /v2/api } }
      backendRefs:
        - { name: backend-v1, port: 80, weight: 90 }
        - { name: backend-v2, port: 80, weight: 10, filters: [{ type: ResponseHeaderModifier, responseHeaderModifier: { add: [{ name: x-version, value: v2 }] } }] }
      timeouts: { request: 10s, backendRequest: 500ms }
      retry: { attempts: 3, codes: [503, 502], backoff: 100ms }
    - backendRefs: [{ name: backend-v1, port: 80 }]
      timeouts: { request: 0s }
`, 'split', ', creationTimestamp: "2026-01-02T03:04:05Z"').replace('parentRefs: [{ group: "", kind: Service, name: backend, port: 80 }]',
      'parentRefs: [{ group: "", kind: Service, name: backend, port: 80 }, { group: "", kind: Service, name: backend-v1 }, { name: edge-gateway }]');
    const { src } = await load({ 'svc.yaml': services, 'route.yaml': doc });
    assert.deepEqual(src.errors(), []);
    const routes = snapshotOf(src.state()).routes!;
    assert.deepEqual(routes.map((r) => `${r.parent.name}:${r.parent.port ?? '*'}`), ['backend:80', 'backend-v1:*']);
    const r = routes[0]!;
    assert.equal(r.createdAt, '2026-01-02T03:04:05Z');
    assert.deepEqual(r.hostnames, ['backend.demo.svc.cluster.local']);
    assert.deepEqual(r.rules[0], {
      index: 0, name: 'canary',
      matches: [
        { path: { type: 'PathPrefix', value: '/api' }, headers: [{ type: 'Exact', name: 'x-canary', value: 'yes' }], queryParams: [{ type: 'RegularExpression', name: 'Debug', value: '^1$' }], method: 'GET' },
        { path: { type: 'Exact', value: '/health' } },
      ],
      filters: [
        { type: 'RequestHeaderModifier', modifier: { set: [{ name: 'X-Route', value: 'canary' }], remove: ['x-internal'] } },
        { type: 'URLRewrite', path: { type: 'ReplaceFullPath', value: '/v2/api' } },
      ],
      backends: [
        { service: { namespace: 'demo', name: 'backend-v1' }, port: 80, weight: 90 },
        { service: { namespace: 'demo', name: 'backend-v2' }, port: 80, weight: 10, filters: [{ type: 'ResponseHeaderModifier', modifier: { add: [{ name: 'x-version', value: 'v2' }] } }] },
      ],
      timeouts: { requestMs: 10_000, backendRequestMs: 500 },
      retry: { attempts: 3, codes: [502, 503], backoffMs: 100 },
    });
    // default weight 1; "0s" disables the timeout (Gateway API)
    assert.deepEqual(r.rules[1], { index: 1, matches: [], filters: [], backends: [{ service: { namespace: 'demo', name: 'backend-v1' }, port: 80, weight: 1 }] });
  });

  it('gives a backend whose Service does not exist weight 0 and keeps the rule; a route whose parent does not exist is left out', async () => {
    const doc = httpRoute('  rules: [{ backendRefs: [{ name: backend-v1, port: 80, weight: 5 }, { name: backend-v9, port: 80, weight: 5 }] }]');
    const orphan = httpRoute('  rules: [{ backendRefs: [{ name: backend-v1, port: 80 }] }]', 'orphan').replace('name: backend, port: 80', 'name: nowhere');
    const { src } = await load({ 'svc.yaml': services, 'route.yaml': doc, 'orphan.yaml': orphan });
    const routes = snapshotOf(src.state()).routes!;
    assert.deepEqual(routes.map((r) => r.name), ['split']);
    assert.deepEqual(routes[0]!.rules[0]!.backends.map((b) => `${b.service.name}=${b.weight}`), ['backend-v1=5', 'backend-v9=0']);
  });

  it('compiles GRPCRoute method and header matches', async () => {
    const doc = grpcRoute(`  rules:
    - matches:
        - method: { service: shop.v1.Cart, method: Add }
          headers: [{ name: X-Tenant, value: a }]
        - method: { type: RegularExpression, service: "shop\\\\..*" }
      backendRefs: [{ name: backend-v2, port: 80 }]
`);
    const { src } = await load({ 'svc.yaml': services, 'route.yaml': doc });
    assert.deepEqual(src.errors(), []);
    const r = snapshotOf(src.state()).routes![0]!;
    assert.equal(r.kind, 'GRPCRoute');
    assert.deepEqual(r.rules[0]!.matches, [
      { grpc: { type: 'Exact', service: 'shop.v1.Cart', method: 'Add' }, headers: [{ type: 'Exact', name: 'x-tenant', value: 'a' }] },
      { grpc: { type: 'RegularExpression', service: 'shop\\..*' } },
    ]);
  });
});

describe('docs/examples/60-routes.yaml', () => {
  it('is applied by the sandbox and accepted by the control plane on top of the sandbox examples: 90/10 on /api', async () => {
    const file = join(repoRoot, 'docs/examples/60-routes.yaml');
    const text = readFileSync(file, 'utf8');
    assert.deepEqual(parseManifests(text, file).map((m) => m.kind), ['Pod', 'Pod', 'Service', 'Service', 'HTTPRoute', 'TrafficPolicy']);
    const examples = join(repoRoot, 'deploy/local/examples');
    const files: Record<string, string> = { '60-routes.yaml': text };
    for (const f of readdirSync(examples).filter((x) => x.endsWith('.yaml'))) files[f] = readFileSync(join(examples, f), 'utf8');
    const { src } = await load(files);
    assert.deepEqual(src.errors(), []);
    const snap = snapshotOf(src.state());
    assert.deepEqual(snap.routes?.map((r) => `${r.name} → ${r.parent.namespace}/${r.parent.name}:${r.parent.port}`), ['backend-canary → demo/backend:80']);
    assert.deepEqual(snap.routes![0]!.rules[1]!.backends.map((b) => `${b.service.name}=${b.weight}`), ['backend-v1=90', 'backend-v2=10']);
    assert.deepEqual(snap.trafficPolicies?.map((p) => `${p.target.name}:${p.loadBalancer?.algorithm}`), ['backend:LEAST_REQUEST']);
  });
});

describe('TrafficPolicy compile', () => {
  it('fills the documented defaults and turns durations into milliseconds', async () => {
    const tp = trafficPolicy(`  loadBalancer: { algorithm: CONSISTENT_HASH, hashOn: { header: X-User } }
  connectionPool: { maxConnections: 100, connectTimeout: 2s, idleTimeout: 1m30s }
  outlierDetection: {}
  healthCheck: { protocol: HTTP }
  retry: {}
  faultInjection: { delay: { fixedDelay: 250ms }, abort: { percent: 0.5, httpStatus: 503 } }
  rateLimit: { requests: 100, unit: Second }
`);
    const { src } = await load({ 'svc.yaml': services, 'tp.yaml': tp });
    assert.deepEqual(src.errors(), []);
    assert.deepEqual(snapshotOf(src.state()).trafficPolicies, [{
      namespace: 'demo', name: 'backend', target: { namespace: 'demo', name: 'backend' },
      loadBalancer: { algorithm: 'CONSISTENT_HASH', hashOn: { header: 'x-user' } },
      connectionPool: { maxConnections: 100, connectTimeoutMs: 2_000, idleTimeoutMs: 90_000 },
      outlierDetection: { consecutive5xxErrors: 5, intervalMs: 10_000, baseEjectionMs: 30_000, maxEjectionPercent: 10 },
      healthCheck: { protocol: 'HTTP', path: '/', intervalMs: 5_000, timeoutMs: 1_000, healthyThreshold: 1, unhealthyThreshold: 3 },
      retry: { attempts: 2, budgetPercent: 20, minRetriesPerSecond: 3, retryOn: ['connect-failure', 'refused-stream', 'unavailable'], retryNonIdempotent: false },
      faultInjection: { delay: { percent: 100, delayMs: 250 }, abort: { percent: 0.5, httpStatus: 503 } },
      rateLimit: { requests: 100, unit: 'Second', burst: 0 },
    }]);
  });

  it('keeps the oldest of two TrafficPolicies for one Service', async () => {
    const older = trafficPolicy('  loadBalancer: { algorithm: PEAK_EWMA }', 'zz-older').replace('namespace: demo }', 'namespace: demo, creationTimestamp: "2026-01-01T00:00:00Z" }');
    const newer = trafficPolicy('  loadBalancer: { algorithm: LEAST_REQUEST }', 'aa-newer').replace('namespace: demo }', 'namespace: demo, creationTimestamp: "2026-02-01T00:00:00Z" }');
    const { src } = await load({ 'svc.yaml': services, 'a.yaml': older, 'b.yaml': newer });
    assert.deepEqual(snapshotOf(src.state()).trafficPolicies?.map((p) => p.name), ['zz-older']);
  });
});

describe('routes and TrafficPolicies on the wire', () => {
  const method = loadAgentControl().definition.Stream!;
  const overWire = (m: WireSnapshotMessage): WireSnapshotMessage => method.responseDeserialize(method.responseSerialize(m)) as WireSnapshotMessage;

  const base: Snapshot = {
    version: 1, node: 'node-a', trustDomain: 'cluster.local', nodes: [], identities: [], endpoints: [], services: [], policies: [], l4: [],
    routes: [{
      kind: 'HTTPRoute', namespace: 'demo', name: 'split', parent: { namespace: 'demo', name: 'backend', port: 80 }, hostnames: ['a.example'],
      createdAt: '2026-01-02T03:04:05Z',
      rules: [{
        index: 0, name: 'canary',
        matches: [{ path: { type: 'RegularExpression', value: '^/a' }, headers: [{ type: 'Exact', name: 'x-a', value: '1' }], queryParams: [{ type: 'Exact', name: 'Q', value: '2' }], method: 'POST' }, {}],
        filters: [
          { type: 'RequestHeaderModifier', modifier: { set: [{ name: 'X-A', value: '1' }], add: [{ name: 'x-b', value: '2' }], remove: ['x-c'] } },
          { type: 'RequestRedirect', scheme: 'https', hostname: 'b.example', port: 8443, path: { type: 'ReplacePrefixMatch', value: '/v2' }, statusCode: 302 },
        ],
        backends: [],
        timeouts: { requestMs: 10_000 },
        retry: { attempts: 0 },
      }, {
        index: 1, matches: [], filters: [{ type: 'URLRewrite', hostname: 'c.example' }],
        backends: [{ service: { namespace: 'demo', name: 'v1' }, port: 80, weight: 0, filters: [{ type: 'ResponseHeaderModifier', modifier: { remove: ['server'] } }] }],
        timeouts: { backendRequestMs: 400 }, retry: { attempts: 2, codes: [503], backoffMs: 25 },
      }],
    }, {
      kind: 'GRPCRoute', namespace: 'demo', name: 'rpc', parent: { namespace: 'demo', name: 'backend' }, hostnames: [], createdAt: '',
      rules: [{ index: 0, matches: [{ grpc: { type: 'Exact', service: 'shop.Cart' } }], filters: [], backends: [{ service: { namespace: 'demo', name: 'v2' }, port: 9000, weight: 1_000_000 }] }],
    }],
    trafficPolicies: [{
      namespace: 'demo', name: 'backend', target: { namespace: 'demo', name: 'backend' },
      loadBalancer: { algorithm: 'CONSISTENT_HASH', hashOn: { sourceIP: true } },
      connectionPool: { maxConnections: 10, maxPendingRequests: 5, maxRequestsPerConnection: 0, connectTimeoutMs: 1_000, idleTimeoutMs: 360_000_000_000 },
      outlierDetection: { consecutive5xxErrors: 0, consecutiveGatewayErrors: 3, intervalMs: 10_000, baseEjectionMs: 30_000, maxEjectionPercent: 10 },
      healthCheck: { protocol: 'GRPC', grpcService: 'shop.Cart', intervalMs: 5_000, timeoutMs: 1_000, healthyThreshold: 1, unhealthyThreshold: 3 },
      retry: { attempts: 2, perTryTimeoutMs: 300, budgetPercent: 20, minRetriesPerSecond: 3, retryOn: ['5xx', 'reset'], retryNonIdempotent: true },
      faultInjection: { abort: { percent: 12.5, httpStatus: 503 } },
      rateLimit: { requests: 5, unit: 'Minute', burst: 2 },
    }, {
      namespace: 'demo', name: 'bare', target: { namespace: 'demo', name: 'other' },
      healthCheck: { protocol: 'HTTP', path: '/h', expectedStatuses: [200, 204], intervalMs: 1, timeoutMs: 1, healthyThreshold: 2, unhealthyThreshold: 2 },
    }],
  };

  it('carries every field across the proto and back unchanged', () => {
    assert.deepEqual(snapshotFromWire(overWire(snapshotToWire(base))), base);
  });

  it('carries MeshPolicy operation headers and gRPC service/method across the proto', () => {
    const withPolicy: Snapshot = {
      ...base,
      policies: [{
        id: 7, namespace: 'demo', name: 'grpc', action: 'DENY', selects: [300],
        rules: [{ index: 0, from: [{ any: true, identities: [] }], when: [], to: [
          { headers: { 'x-a': ['1', 'b*'], 'x-b': ['*'] }, grpcServices: ['shop.v1.Cart'], grpcMethods: ['Delete*'] },
          { methods: ['GET'] },
        ] }],
      }],
    };
    assert.deepEqual(snapshotFromWire(overWire(snapshotToWire(withPolicy))), withPolicy);
  });

  it('sends a route change as the routes section alone, and an emptied section as empty', () => {
    const next: Snapshot = { ...base, version: 2, routes: base.routes!.slice(1) };
    assert.deepEqual(changedSections(base, next), ['routes']);
    const applied = applyDelta(base, overWire(deltaToWire(base, next, ['routes'])));
    assert.deepEqual(applied, next);
    const none: Snapshot = { ...base, version: 3 };
    delete none.trafficPolicies;
    assert.deepEqual(changedSections(base, none), ['trafficPolicies']);
    const wire = overWire(deltaToWire(base, none, ['trafficPolicies']));
    assert.deepEqual(wire.sections, ['SNAPSHOT_SECTION_TRAFFIC_POLICIES']);
    assert.deepEqual(applyDelta(base, wire), none);
  });
});
