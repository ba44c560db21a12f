// The proxy's Prometheus metrics as a scrape shows them: the series and labels a
// dashboard or alert would query after the proxy recorded requests, retries, ejections,
// rate limits, verdicts and TCP connections.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { LATENCY_BUCKETS, ProxyMetrics, policyLabel } from '../../agent/proxy/metrics.ts';

function line(text: string, name: string, labels: Record<string, string>): string | undefined {
  return text.split('\n').find((l) => {
    if (!l.startsWith(`${name}{`)) return false;
    return Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`));
  });
}
function value(text: string, name: string, labels: Record<string, string>): number | undefined {
  const l = line(text, name, labels);
  return l === undefined ? undefined : Number(l.slice(l.lastIndexOf(' ') + 1));
}

describe('proxy metrics', () => {
  it('counts requests by direction, identities, route, status class, gRPC status and verdict', async () => {
    const registry = new Registry();
    const m = new ProxyMetrics(registry);
    for (let i = 0; i < 3; i++) m.request({ direction: 'inbound', src: 256, dst: 257, route: 'shop/cart#0', code: 200, verdict: 'FORWARDED', seconds: 0.002 });
    m.request({ direction: 'inbound', src: 256, dst: 257, route: 'shop/cart#0', code: 503, verdict: 'ERROR', seconds: 0.3 });
    m.request({ direction: 'outbound', src: 256, dst: 258, route: '', code: 200, grpcStatus: 14, verdict: 'FORWARDED', seconds: 0.01 });
    m.request({ direction: 'inbound', src: 256, dst: 257, route: '', code: 403, verdict: 'DROPPED', seconds: 0.0001 });
    const text = await registry.metrics();

    const req = 'nodal_proxy_requests_total';
    assert.equal(value(text, req, { direction: 'inbound', source_identity: '256', destination_identity: '257', route: 'shop/cart#0', code_class: '2xx', verdict: 'FORWARDED' }), 3);
    assert.equal(value(text, req, { route: 'shop/cart#0', code_class: '5xx', verdict: 'ERROR' }), 1);
    assert.equal(value(text, req, { direction: 'outbound', destination_identity: '258', grpc_status: '14' }), 1);
    assert.equal(value(text, req, { code_class: '4xx', verdict: 'DROPPED' }), 1);
    assert.match(text, /# TYPE nodal_proxy_requests_total counter/);

    const h = 'nodal_proxy_request_duration_seconds';
    assert.match(text, /# TYPE nodal_proxy_request_duration_seconds histogram/);
    // 3 × 2 ms and one 300 ms on the cart route; the policy denial is not a latency
    assert.equal(value(text, `${h}_count`, { direction: 'inbound', destination_identity: '257', route: 'shop/cart#0' }), 4);
    assert.equal(value(text, `${h}_bucket`, { route: 'shop/cart#0', le: '0.0025' }), 3);
    assert.equal(value(text, `${h}_bucket`, { route: 'shop/cart#0', le: '0.25' }), 3);
    assert.equal(value(text, `${h}_bucket`, { route: 'shop/cart#0', le: '0.5' }), 4);
    assert.equal(line(text, `${h}_count`, { direction: 'inbound', route: '' }), undefined, 'a DROPPED request has no latency series');
    assert.equal(LATENCY_BUCKETS[0], 0.0005);
    assert.equal(LATENCY_BUCKETS.at(-1), 10);
    assert.ok(line(text, `${h}_bucket`, { route: 'shop/cart#0', le: '0.0005' }));
  });

  it('counts retries, ejections (with a gauge of ejected endpoints), rate limits and policy verdicts', async () => {
    const registry = new Registry();
    const m = new ProxyMetrics(registry);
    m.retry('shop/cart', 'failure');
    m.retry('shop/cart', 'success');
    m.retry('shop/cart', 'budget_exhausted');
    m.ejection('shop/cart', '10.0.0.5:8080', 'ejected');
    m.ejection('shop/cart', '10.0.0.6:8080', 'ejected');
    m.ejection('shop/cart', '10.0.0.5:8080', 'ejected'); // again: still one endpoint
    m.ejection('shop/cart', '10.0.0.6:8080', 'returned');
    m.ejection('shop/cart', '10.0.0.7:8080', 'skipped');
    m.rateLimited('shop/cart');
    m.rateLimited('shop/cart');
    m.verdict('DENY', policyLabel({ namespace: 'shop', name: 'deny-all' }));
    m.verdict('ALLOW', policyLabel(undefined));
    const text = await registry.metrics();

    assert.equal(value(text, 'nodal_proxy_retries_total', { service: 'shop/cart', outcome: 'failure' }), 1);
    assert.equal(value(text, 'nodal_proxy_retries_total', { service: 'shop/cart', outcome: 'budget_exhausted' }), 1);
    assert.equal(value(text, 'nodal_proxy_outlier_ejections_total', { service: 'shop/cart', event: 'ejected' }), 3);
    assert.equal(value(text, 'nodal_proxy_outlier_ejections_total', { service: 'shop/cart', event: 'skipped' }), 1);
    assert.equal(value(text, 'nodal_proxy_outlier_ejected_endpoints', { service: 'shop/cart' }), 1);
    assert.equal(value(text, 'nodal_proxy_rate_limited_total', { service: 'shop/cart' }), 2);
    assert.equal(value(text, 'nodal_proxy_policy_verdicts_total', { verdict: 'DENY', policy: 'shop/deny-all' }), 1);
    assert.equal(value(text, 'nodal_proxy_policy_verdicts_total', { verdict: 'ALLOW', policy: '' }), 1);
    assert.doesNotMatch(text, /10\.0\.0\./, 'endpoint addresses never become label values');
  });

  it('counts TCP connections opened and closed and bytes each way per identity pair', async () => {
    const registry = new Registry();
    const m = new ProxyMetrics(registry);
    const c = m.connection('outbound', 256, 300);
    c.bytes(100, 2000);
    c.bytes(5, 0);
    const open = await registry.metrics();
    const pair = { direction: 'outbound', source_identity: '256', destination_identity: '300' };
    assert.equal(value(open, 'nodal_proxy_tcp_connections_opened_total', pair), 1);
    assert.equal(line(open, 'nodal_proxy_tcp_connections_closed_total', pair), undefined);
    c.close();
    c.close();
    const text = await registry.metrics();
    assert.equal(value(text, 'nodal_proxy_tcp_connections_closed_total', pair), 1);
    assert.equal(value(text, 'nodal_proxy_tcp_sent_bytes_total', pair), 105);
    assert.equal(value(text, 'nodal_proxy_tcp_received_bytes_total', pair), 2000);
  });

  it('keeps counting across scrapes (pending counts are flushed, not reset)', async () => {
    const registry = new Registry();
    const m = new ProxyMetrics(registry);
    const rec = { direction: 'inbound', src: 2, dst: 257, route: '', code: 204, verdict: 'FORWARDED', seconds: 0.001 } as const;
    m.request(rec);
    assert.equal(value(await registry.metrics(), 'nodal_proxy_requests_total', { source_identity: '2' }), 1);
    m.request(rec);
    m.request(rec);
    const text = await registry.metrics();
    assert.equal(value(text, 'nodal_proxy_requests_total', { source_identity: '2' }), 3);
    assert.equal(value(text, 'nodal_proxy_request_duration_seconds_count', { source_identity: '2' }), 3);
    // getMetricsAsJSON sees the same numbers (proxy-mesh reads it that way)
    const json = (await registry.getMetricsAsJSON()).find((x) => x.name === 'nodal_proxy_requests_total');
    assert.equal(json?.values.find((v) => v.labels.source_identity === '2')?.value, 3);
  });


  it('stays correct past the label-tuple cache bound', async () => {
    const registry = new Registry();
    const m = new ProxyMetrics(registry);
    // more distinct tuples than the cache holds: the oldest are flushed, nothing is lost
    for (let i = 0; i < 9000; i++) m.request({ direction: 'inbound', src: 1000 + i, dst: 257, route: '', code: 200, verdict: 'FORWARDED', seconds: 0.001 });
    m.request({ direction: 'inbound', src: 1000, dst: 257, route: '', code: 200, verdict: 'FORWARDED', seconds: 0.001 });
    const json = (await registry.getMetricsAsJSON()).find((x) => x.name === 'nodal_proxy_requests_total')!;
    assert.equal(json.values.length, 9000);
    assert.equal(json.values.reduce((n, v) => n + v.value, 0), 9001);
    assert.equal(json.values.find((v) => v.labels.source_identity === '1000')?.value, 2);
  });
});
