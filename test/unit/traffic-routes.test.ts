// Route selection (Gateway API HTTPRoute / GRPCRoute with a Service parent), weighted
// backends, header filters, redirects and rewrites.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { CompiledRoute, RouteFilter, RouteMatch, RouteRule } from '../../control/api/types.ts';
import {
  RouteTable, applyRequestFilters, grpcMethodOf, pickBackend, redirectLocation, responseHeaders, rewrite,
  type RouteRequest,
} from '../../agent/proxy/traffic/routes.ts';

const SVC = { namespace: 'shop', name: 'cart' };

function rule(index: number, matches: RouteMatch[], backend = `b${index}`, filters: RouteFilter[] = []): RouteRule {
  return { index, matches, filters, backends: [{ service: { namespace: 'shop', name: backend }, port: 80, weight: 1 }] };
}

function route(name: string, rules: RouteRule[], extra: Partial<CompiledRoute> = {}): CompiledRoute {
  return { kind: 'HTTPRoute', namespace: 'shop', name, parent: { ...SVC }, hostnames: [], rules, createdAt: '2026-01-01T00:00:00Z', ...extra };
}

function req(path: string, extra: Partial<RouteRequest> = {}): RouteRequest {
  return { method: 'GET', path, host: 'cart.shop.svc.cluster.local', headers: {}, ...extra };
}

/** the backend name the request is routed to, or undefined when nothing matches */
function routedTo(table: RouteTable, r: RouteRequest, port = 80): string | undefined {
  return table.forService('shop', 'cart', port).match(r)?.rule.backends[0]?.service.name;
}

describe('HTTPRoute matching', () => {
  it('matches PathPrefix on whole segments only, ignoring a trailing slash in the prefix', () => {
    const t = new RouteTable([route('r', [rule(0, [{ path: { type: 'PathPrefix', value: '/foo' } }]), rule(1, [{ path: { type: 'PathPrefix', value: '/bar/' } }])])]);
    for (const p of ['/foo', '/foo/', '/foo/bar', '/foo?x=1']) assert.equal(routedTo(t, req(p)), 'b0', p);
    for (const p of ['/foobar', '/fo', '/']) assert.equal(routedTo(t, req(p)), undefined, p);
    for (const p of ['/bar', '/bar/', '/bar/baz']) assert.equal(routedTo(t, req(p)), 'b1', p);
    assert.equal(routedTo(t, req('/barn')), undefined);
  });

  it('treats an empty matches list as match-all and loses to any more specific match', () => {
    const t = new RouteTable([route('r', [rule(0, []), rule(1, [{ path: { type: 'PathPrefix', value: '/api' } }])])]);
    assert.equal(routedTo(t, req('/anything')), 'b0');
    assert.equal(routedTo(t, req('/api/v1')), 'b1');
  });

  it('orders Exact over RegularExpression over PathPrefix, and longer prefixes first', () => {
    const t = new RouteTable([route('r', [
      rule(0, [{ path: { type: 'PathPrefix', value: '/' } }]),
      rule(1, [{ path: { type: 'PathPrefix', value: '/a' } }]),
      rule(2, [{ path: { type: 'PathPrefix', value: '/a/b' } }]),
      rule(3, [{ path: { type: 'RegularExpression', value: '/a/b/[0-9]+' } }]),
      rule(4, [{ path: { type: 'Exact', value: '/a/b/42' } }]),
    ])]);
    assert.equal(routedTo(t, req('/a/b/42')), 'b4');
    assert.equal(routedTo(t, req('/a/b/43')), 'b3');
    assert.equal(routedTo(t, req('/a/b/x')), 'b2');
    assert.equal(routedTo(t, req('/a/c')), 'b1');
    assert.equal(routedTo(t, req('/z')), 'b0');
  });

  it('requires a regular expression to match the whole path, header or query value', () => {
    const t = new RouteTable([route('r', [
      rule(0, [{ path: { type: 'RegularExpression', value: '/v[0-9]' } }]),
      rule(1, [{ headers: [{ type: 'RegularExpression', name: 'x-ver', value: 'v[0-9]' }] }]),
      rule(2, [{ queryParams: [{ type: 'RegularExpression', name: 'q', value: 'a+' }] }]),
    ])]);
    assert.equal(routedTo(t, req('/v1')), 'b0');
    assert.equal(routedTo(t, req('/v1/x')), undefined);
    assert.equal(routedTo(t, req('/x', { headers: { 'x-ver': 'v2' } })), 'b1');
    assert.equal(routedTo(t, req('/x', { headers: { 'x-ver': 'v2-beta' } })), undefined);
    assert.equal(routedTo(t, req('/x?q=aaa')), 'b2');
    assert.equal(routedTo(t, req('/x?q=aaab')), undefined);
  });

  it('breaks path ties by method, then more headers, then more query params', () => {
    const t = new RouteTable([route('r', [
      rule(0, [{ path: { type: 'PathPrefix', value: '/p' } }]),
      rule(1, [{ path: { type: 'PathPrefix', value: '/p' }, queryParams: [{ type: 'Exact', name: 'a', value: '1' }, { type: 'Exact', name: 'b', value: '2' }] }]),
      rule(2, [{ path: { type: 'PathPrefix', value: '/p' }, headers: [{ type: 'Exact', name: 'x-a', value: '1' }] }]),
      rule(3, [{ path: { type: 'PathPrefix', value: '/p' }, headers: [{ type: 'Exact', name: 'x-a', value: '1' }, { type: 'Exact', name: 'x-b', value: '1' }] }]),
      rule(4, [{ path: { type: 'PathPrefix', value: '/p' }, method: 'POST' }]),
    ])]);
    const both = { 'x-a': '1', 'x-b': '1' };
    assert.equal(routedTo(t, req('/p?a=1&b=2', { method: 'POST', headers: both })), 'b4');
    assert.equal(routedTo(t, req('/p?a=1&b=2', { headers: both })), 'b3');
    assert.equal(routedTo(t, req('/p?a=1&b=2', { headers: { 'x-a': '1' } })), 'b2');
    assert.equal(routedTo(t, req('/p?a=1&b=2')), 'b1');
    assert.equal(routedTo(t, req('/p?a=1')), 'b0');
  });

  it('decodes query values and uses the first occurrence of a parameter', () => {
    const t = new RouteTable([route('r', [rule(0, [{ queryParams: [{ type: 'Exact', name: 'name', value: 'a b/c' }] }])])]);
    assert.equal(routedTo(t, req('/?x=1&name=a+b%2Fc')), 'b0');
    assert.equal(routedTo(t, req('/?name=zzz&name=a+b%2Fc')), undefined);
  });

  it('breaks ties between routes by age, then namespace/name, then rule order', () => {
    const m = [{ path: { type: 'PathPrefix' as const, value: '/' } }];
    const older = route('zeta', [rule(0, m, 'older')], { createdAt: '2025-06-01T00:00:00Z' });
    const alpha = route('alpha', [rule(0, m, 'alpha0'), rule(1, m, 'alpha1')]);
    const beta = route('beta', [rule(0, m, 'beta')]);
    assert.equal(routedTo(new RouteTable([beta, alpha, older]), req('/')), 'older');
    assert.equal(routedTo(new RouteTable([beta, alpha]), req('/')), 'alpha0');
  });

  it('applies precedence across routes before route age: a longer prefix in a newer route wins', () => {
    const old = route('old', [rule(0, [{ path: { type: 'PathPrefix', value: '/' } }], 'old')], { createdAt: '2020-01-01T00:00:00Z' });
    const young = route('young', [rule(0, [{ path: { type: 'PathPrefix', value: '/api' } }], 'young')]);
    const t = new RouteTable([old, young]);
    assert.equal(routedTo(t, req('/api/x')), 'young');
    assert.equal(routedTo(t, req('/web')), 'old');
  });

  it('restricts a route whose parentRef names a port to that Service port', () => {
    const t = new RouteTable([route('r', [rule(0, [])], { parent: { ...SVC, port: 8080 } })]);
    assert.equal(routedTo(t, req('/'), 8080), 'b0');
    assert.equal(routedTo(t, req('/'), 80), undefined);
    assert.equal(t.forService('shop', 'other', 8080).match(req('/')), undefined);
  });

  it('matches hostnames exactly or by wildcard suffix, the most specific hostname first', () => {
    const t = new RouteTable([
      route('any', [rule(0, [], 'any')]),
      route('wild', [rule(0, [], 'wild')], { hostnames: ['*.example.com'] }),
      route('exact', [rule(0, [], 'exact')], { hostnames: ['api.example.com'] }),
    ]);
    assert.equal(routedTo(t, req('/', { host: 'api.example.com:8080' })), 'exact');
    assert.equal(routedTo(t, req('/', { host: 'a.b.example.com' })), 'wild');
    assert.equal(routedTo(t, req('/', { host: 'example.com' })), 'any');
    const only = new RouteTable([route('wild', [rule(0, [], 'wild')], { hostnames: ['*.example.com'] })]);
    assert.equal(routedTo(only, req('/', { host: 'example.org' })), undefined);
  });

  it('returns the matched prefix for ReplacePrefixMatch', () => {
    const t = new RouteTable([route('r', [rule(0, [{ path: { type: 'PathPrefix', value: '/api/' } }])])]);
    const m = t.forService('shop', 'cart', 80).match(req('/api/v1'));
    assert.equal(m?.matchedPrefix, '/api');
  });
});

describe('GRPCRoute matching', () => {
  function grpcRoute(name: string, rules: RouteRule[]): CompiledRoute {
    return route(name, rules, { kind: 'GRPCRoute' });
  }
  const g = (service: string, method: string, headers: Record<string, string> = {}) =>
    req(`/${service}/${method}`, { method: 'POST', grpc: { service, method }, headers });

  it('prefers exact service, then exact method, then more headers; regex counts as less specific', () => {
    const t = new RouteTable([grpcRoute('g', [
      rule(0, [{ grpc: { type: 'RegularExpression', service: 'shop\\..*' } }]),
      rule(1, [{ grpc: { type: 'Exact', service: 'shop.Cart' } }]),
      rule(2, [{ grpc: { type: 'Exact', service: 'shop.Cart', method: 'Get' } }]),
      rule(3, [{ grpc: { type: 'Exact', service: 'shop.Cart', method: 'Get' }, headers: [{ type: 'Exact', name: 'x-canary', value: '1' }] }]),
      rule(4, [{ grpc: { type: 'Exact', method: 'Get' } }]),
    ])]);
    assert.equal(routedTo(t, g('shop.Cart', 'Get', { 'x-canary': '1' })), 'b3');
    assert.equal(routedTo(t, g('shop.Cart', 'Get')), 'b2');
    assert.equal(routedTo(t, g('shop.Cart', 'Put')), 'b1');
    assert.equal(routedTo(t, g('shop.Orders', 'Put')), 'b0');
    assert.equal(routedTo(t, g('other.Svc', 'Get')), 'b4');
    assert.equal(routedTo(t, g('other.Svc', 'Put')), undefined);
  });

  it('reads service and method from a gRPC path, and nothing from other paths', () => {
    assert.deepEqual(grpcMethodOf('/shop.v1.Cart/GetItems'), { service: 'shop.v1.Cart', method: 'GetItems' });
    for (const p of ['/', '/Cart', '/Cart/', '//Get', '/a/b/c', '/a/b?x=1']) assert.equal(grpcMethodOf(p), undefined, p);
  });

  it('does not apply GRPCRoutes to plain HTTP requests; gRPC falls back to HTTPRoutes', () => {
    const t = new RouteTable([
      grpcRoute('g', [rule(0, [{ grpc: { type: 'Exact', service: 'shop.Cart' } }], 'grpc')]),
      route('h', [rule(0, [], 'http')]),
    ]);
    assert.equal(routedTo(t, req('/shop.Cart/Get')), 'http');
    assert.equal(routedTo(t, g('shop.Cart', 'Get')), 'grpc');
    assert.equal(routedTo(t, g('shop.Other', 'Get')), 'http');
  });
});

describe('weighted backends', () => {
  const split: RouteRule = {
    index: 0, matches: [], filters: [], backends: [
      { service: { namespace: 'shop', name: 'stable' }, port: 80, weight: 90 },
      { service: { namespace: 'shop', name: 'off' }, port: 80, weight: 0 },
      { service: { namespace: 'shop', name: 'canary' }, port: 80, weight: 10 },
    ],
  };

  it('splits traffic by weight over an even random sequence and never picks weight 0', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 1000; i++) {
      const b = pickBackend(split, () => i / 1000)!;
      counts.set(b.service.name, (counts.get(b.service.name) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(counts), { stable: 900, canary: 100 });
    assert.equal(pickBackend(split, () => 0.999999999)?.service.name, 'canary');
  });

  it('picks nothing when every weight is 0 or there are no backends (the caller answers 500)', () => {
    assert.equal(pickBackend({ ...split, backends: split.backends.map((b) => ({ ...b, weight: 0 })) }, Math.random), undefined);
    assert.equal(pickBackend({ ...split, backends: [] }, Math.random), undefined);
  });
});

describe('filters', () => {
  it('sets, adds and removes request headers, and response headers separately', () => {
    const h: Record<string, string> = { 'x-keep': '1', 'x-drop': '1', 'x-multi': 'a' };
    const filters: RouteFilter[] = [
      { type: 'RequestHeaderModifier', modifier: { set: [{ name: 'X-Keep', value: '2' }], add: [{ name: 'x-multi', value: 'b' }, { name: 'x-new', value: 'n' }], remove: ['x-drop'] } },
      { type: 'ResponseHeaderModifier', modifier: { set: [{ name: 'x-resp', value: 'r' }] } },
    ];
    applyRequestFilters(h, filters);
    assert.deepEqual(h, { 'x-keep': '2', 'x-multi': 'a, b', 'x-new': 'n' });
    const resp: Record<string, string> = {};
    responseHeaders(resp, filters);
    assert.deepEqual(resp, { 'x-resp': 'r' });
  });

  it('rewrites a matched prefix per the spec table, including the trailing-slash cases', () => {
    const table: Array<[string, string, string, string]> = [
      ['/foo/bar', '/foo', '/xyz', '/xyz/bar'],
      ['/foo/bar', '/foo', '/xyz/', '/xyz/bar'],
      ['/foo/bar', '/foo/', '/xyz', '/xyz/bar'],
      ['/foo/bar', '/foo/', '/xyz/', '/xyz/bar'],
      ['/foo', '/foo', '/xyz', '/xyz'],
      ['/foo/', '/foo', '/xyz', '/xyz/'],
      ['/foo/bar', '/foo', '', '/bar'],
      ['/foo/', '/foo', '', '/'],
      ['/foo', '/foo', '', '/'],
      ['/foo/', '/foo', '/', '/'],
      ['/foo', '/foo', '/', '/'],
      ['/bar', '/', '/xyz', '/xyz/bar'],
    ];
    for (const [path, prefix, value, want] of table) {
      const out = rewrite(req(path), { type: 'URLRewrite', path: { type: 'ReplacePrefixMatch', value } }, prefix);
      assert.equal(out.path, want, `${path} prefix ${prefix} → ${value}`);
    }
  });

  it('keeps the query string through a rewrite and replaces the host if asked', () => {
    const out = rewrite(req('/old/x?a=1'), { type: 'URLRewrite', hostname: 'new.example', path: { type: 'ReplaceFullPath', value: '/new' } }, '/old');
    assert.deepEqual(out, { host: 'new.example', path: '/new?a=1' });
  });

  it('builds redirect locations: scheme default ports are left out, the request port is kept', () => {
    const r = req('/old/page?q=1', { host: 'cart.shop:8080', port: 8080 });
    assert.deepEqual(redirectLocation(r, { type: 'RequestRedirect', scheme: 'https', statusCode: 301 }, undefined),
      { status: 301, location: 'https://cart.shop/old/page?q=1' });
    assert.deepEqual(redirectLocation(r, { type: 'RequestRedirect', statusCode: 302, path: { type: 'ReplacePrefixMatch', value: '/new' } }, '/old'),
      { status: 302, location: 'http://cart.shop:8080/new/page?q=1' });
    assert.deepEqual(redirectLocation(r, { type: 'RequestRedirect', hostname: 'x.example', port: 80, statusCode: 301, path: { type: 'ReplaceFullPath', value: '/' } }, undefined),
      { status: 301, location: 'http://x.example/?q=1' });
    assert.deepEqual(redirectLocation(req('/a', { host: 'h', port: 80 }), { type: 'RequestRedirect', scheme: 'https', port: 8443, statusCode: 301 }, undefined),
      { status: 301, location: 'https://h:8443/a' });
  });
});
