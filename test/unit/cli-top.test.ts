// `nodal top`: the route aggregation on synthetic flows (window expiry, percentiles,
// success rate, naming, bounds), its rendering, and the command against a real Observer.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { FlowStore, startObserver, timeFromMs, type Flow } from '../../agent/flows/index.ts';
import {
  pathTemplate, percentile, renderJson, renderTable, RouteTable, runTop, topRequest, workloadOf,
} from '../../cli/top.ts';
import type { ObserveIO } from '../../cli/observe.ts';
import { flowAt, quiet } from '../fixtures/flows/harness.ts';

const T0 = 1_700_000_000_000;

interface Req { src?: string; dst?: string; method?: string; url?: string; code?: number; verdict?: Flow['verdict']; latencyMs?: number }
/** one HTTP request record as the proxy writes it, at `ms` */
function request(ms: number, r: Req = {}): Flow {
  const code = r.code ?? 200;
  return flowAt(0, {
    time: timeFromMs(ms),
    Type: 'L7',
    verdict: r.verdict ?? 'FORWARDED',
    trafficDirection: 'INGRESS',
    source: { identity: 257, namespace: 'frontend', podName: `${r.src ?? 'web'}-7d9f8-x2x`, labels: [`k8s:app=${r.src ?? 'web'}`] },
    destination: { identity: 256, namespace: 'backend', podName: `${r.dst ?? 'api'}-0`, labels: [`k8s:app=${r.dst ?? 'api'}`] },
    l7: {
      type: (r.verdict ?? 'FORWARDED') === 'FORWARDED' ? 'RESPONSE' : 'REQUEST',
      ...(r.latencyMs !== undefined ? { latencyNs: r.latencyMs * 1e6 } : {}),
      http: { ...(code ? { code } : {}), method: r.method ?? 'GET', url: r.url ?? '/v1/items', protocol: 'HTTP/1.1' },
    },
  });
}

function capture(isTTY = false): ObserveIO & { stdout(): string; stderr(): string; onWrite(fn: () => void): void } {
  const out: string[] = [];
  const err: string[] = [];
  let listener: (() => void) | undefined;
  const o = new Writable({ write(chunk, _enc, cb) { out.push(String(chunk)); listener?.(); cb(); } });
  if (isTTY) Object.assign(o, { isTTY: true });
  const e = new Writable({ write(chunk, _enc, cb) { err.push(String(chunk)); cb(); } });
  return { out: o, err: e, stdout: () => out.join(''), stderr: () => err.join(''), onWrite: (fn) => { listener = fn; } };
}

describe('top: naming', () => {
  it('a workload is its workload, else app.kubernetes.io/name, else app, else its pod; namespaced', () => {
    assert.equal(workloadOf({ namespace: 'a', podName: 'p-1', workloads: [{ name: 'deploy', kind: 'Deployment' }], labels: ['k8s:app=x'] }), 'a/deploy');
    assert.equal(workloadOf({ namespace: 'a', podName: 'p-1', labels: ['k8s:app=x', 'k8s:app.kubernetes.io/name=y'] }), 'a/y');
    assert.equal(workloadOf({ namespace: 'a', podName: 'p-1', labels: ['k8s:app=x'] }), 'a/x');
    assert.equal(workloadOf({ namespace: 'a', podName: 'p-1' }), 'a/p-1');
  });
  it('without a pod: the Service, a reserved identity, an address', () => {
    assert.equal(workloadOf({ identity: 256 }, { name: 'api', namespace: 'backend' }), 'backend/api');
    assert.equal(workloadOf({ identity: 2, labels: ['reserved:world'] }), 'world');
    assert.equal(workloadOf({ identity: 1 }), 'host');
    assert.equal(workloadOf({ identity: 9000 }), 'identity 9000');
    assert.equal(workloadOf(undefined, undefined, '192.0.2.1'), '192.0.2.1');
  });
  it('a path template: no query, ids as :id', () => {
    assert.equal(pathTemplate('http://api.backend/v1/items/42?x=1'), '/v1/items/:id');
    assert.equal(pathTemplate('/v1/orders/0b9a4f7e-0001-4c1e-9d1e-000000000001/lines'), '/v1/orders/:id/lines');
    assert.equal(pathTemplate('/blobs/4bf92f3577b34da6a3ce929d0e0e4736'), '/blobs/:id');
    assert.equal(pathTemplate('/healthz'), '/healthz');
    assert.equal(pathTemplate(undefined), '/');
  });
  it('nearest-rank percentiles', () => {
    const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
    assert.equal(percentile(hundred, 50), 50);
    assert.equal(percentile(hundred, 99), 99);
    assert.equal(percentile([7], 99), 7);
    assert.equal(percentile([1, 2], 50), 1);
    assert.equal(percentile([], 50), undefined);
  });
});

describe('top: the route table', () => {
  it('counts requests per route over the window; rps is requests per window second', () => {
    const t = new RouteTable({ windowMs: 10_000 });
    for (let i = 0; i < 20; i++) t.add(request(T0 + i * 100, { url: `/v1/items/${i}` }), T0 + 5000);
    for (let i = 0; i < 5; i++) t.add(request(T0 + i * 100, { method: 'post', url: '/v1/orders' }), T0 + 5000);
    const rows = t.rows(T0 + 5000);
    assert.deepEqual(rows.map((r) => [r.source, r.destination, r.method, r.path, r.requests, r.rps]), [
      ['frontend/web', 'backend/api', 'GET', '/v1/items/:id', 20, 2],
      ['frontend/web', 'backend/api', 'POST', '/v1/orders', 5, 0.5],
    ]);
  });

  it('requests leave the window as it slides; an empty route leaves the table', () => {
    const t = new RouteTable({ windowMs: 1000 });
    t.add(request(T0), T0);
    t.add(request(T0 + 600), T0 + 600);
    t.add(request(T0 + 900, { dst: 'db' }), T0 + 900);
    assert.deepEqual(t.rows(T0 + 1000).map((r) => [r.destination, r.requests]), [['backend/api', 2], ['backend/db', 1]]);
    assert.deepEqual(t.rows(T0 + 1001).map((r) => [r.destination, r.requests]), [['backend/api', 1], ['backend/db', 1]]);
    assert.deepEqual(t.rows(T0 + 1899).map((r) => [r.destination, r.requests]), [['backend/db', 1]]);
    assert.deepEqual(t.rows(T0 + 5000), []);
  });

  it('success rate: 2xx-4xx succeed; 5xx, denied (DROPPED) and proxy errors fail', () => {
    const t = new RouteTable({ windowMs: 10_000 });
    const at = T0 + 1;
    t.add(request(T0, { code: 200 }), at);
    t.add(request(T0, { code: 404 }), at);
    t.add(request(T0, { code: 503 }), at);
    t.add(request(T0, { code: 403, verdict: 'DROPPED' }), at);
    t.add(request(T0, { code: 503, verdict: 'ERROR' }), at);
    t.add(request(T0, { code: 0, verdict: 'ERROR' }), at);
    t.add(request(T0, { code: 201 }), at);
    t.add(request(T0, { code: 302 }), at);
    assert.equal(t.rows(at)[0]!.successRate, 4 / 8);
  });

  it('p50 and p99 from the requests\' latencies; requests without one count but do not skew them', () => {
    const t = new RouteTable({ windowMs: 60_000 });
    for (let i = 1; i <= 200; i++) t.add(request(T0 + i, { latencyMs: i <= 100 ? i : 1000 + i }), T0 + 500);
    t.add(request(T0, {}), T0 + 500);
    const [row] = t.rows(T0 + 500);
    assert.equal(row!.requests, 201);
    assert.equal(row!.p50Ms, 100);
    assert.equal(row!.p99Ms, 1198);
    const none = new RouteTable({ windowMs: 1000 });
    none.add(request(T0), T0);
    assert.equal(none.rows(T0)[0]!.p50Ms, undefined);
  });

  it('a flow stamped in the future counts when it arrived; out-of-order flows are placed in time', () => {
    const t = new RouteTable({ windowMs: 1000 });
    t.add(request(T0 + 60_000), T0);
    t.add(request(T0 - 500), T0);
    t.add(request(T0 - 900), T0);
    assert.equal(t.rows(T0)[0]!.requests, 3);
    assert.equal(t.rows(T0 + 200)[0]!.requests, 2);
    assert.equal(t.rows(T0 + 600)[0]!.requests, 1);
  });

  it('only HTTP request records count; a reply record is turned around', () => {
    const t = new RouteTable({ windowMs: 1000 });
    assert.equal(t.add(flowAt(1), T0), false);
    const reply = request(T0, { src: 'web', dst: 'api' });
    [reply.source, reply.destination] = [reply.destination, reply.source];
    reply.isReply = true;
    assert.equal(t.add(reply, T0), true);
    assert.deepEqual(t.rows(T0).map((r) => [r.source, r.destination]), [['frontend/web', 'backend/api']]);
  });

  it('a bounded number of routes: the rest of a pair is counted as "(other)"', () => {
    const t = new RouteTable({ windowMs: 1000, maxRoutes: 3 });
    for (const p of ['/a', '/b', '/c', '/d', '/e']) t.add(request(T0, { url: p }), T0);
    t.add(request(T0, { url: '/a' }), T0);
    assert.deepEqual(t.rows(T0).map((r) => [r.path, r.requests]), [['(other)', 2], ['/a', 2], ['/b', 1], ['/c', 1]]);
  });
});

describe('top: rendering', () => {
  const t = new RouteTable({ windowMs: 10_000 });
  for (let i = 0; i < 30; i++) t.add(request(T0, { latencyMs: 2 + i / 10, code: i === 0 ? 500 : 200 }), T0);
  t.add(request(T0, { src: 'batch', method: 'DELETE', url: '/v1/items/3', code: 403, verdict: 'DROPPED', latencyMs: 0.25 }), T0);
  const rows = t.rows(T0);

  it('a table like linkerd viz routes, with what it covers and what was lost above it', () => {
    assert.equal(renderTable(rows, { windowMs: 10_000, lostEvents: 3, unavailableNodes: ['node-c'] }), [
      'HTTP routes over the last 10s: 2   EVENTS LOST: 3   nodes unavailable: node-c',
      'SOURCE           DESTINATION   METHOD   PATH            SUCCESS   RPS      LATENCY_P50   LATENCY_P99',
      'frontend/web     backend/api   GET      /v1/items       96.67%    3.0rps   3.4ms         4.9ms',
      'frontend/batch   backend/api   DELETE   /v1/items/:id   0.00%     0.1rps   0.25ms        0.25ms',
      '',
    ].join('\n'));
    assert.equal(renderTable([], { windowMs: 1500, lostEvents: 0, unavailableNodes: [] }), 'HTTP routes over the last 1500ms: 0\n(no HTTP requests seen)\n');
  });

  it('-o json: the same numbers', () => {
    assert.deepEqual(renderJson(rows.slice(1), { windowMs: 10_000, lostEvents: 0, unavailableNodes: [] }), {
      window_seconds: 10, lost_events: 0, unavailable_nodes: [],
      routes: [{ source: 'frontend/batch', destination: 'backend/api', method: 'DELETE', path: '/v1/items/:id', requests: 1, rps: 0.1,
        success_rate: 0, latency_ms_p50: 0.25, latency_ms_p99: 0.25 }],
    });
  });

  it('asks for L7 flows only, from or to the namespaces; --once for the last window, else live', () => {
    assert.deepEqual(topRequest(['backend'], 10_000, true, T0), {
      whitelist: [{ sourcePod: ['backend/'], eventType: [{ type: 129 }] }, { destinationPod: ['backend/'], eventType: [{ type: 129 }] }],
      blacklist: [], since: timeFromMs(T0 - 10_000), until: timeFromMs(T0),
    });
    assert.deepEqual(topRequest([], 10_000, false, T0), { whitelist: [{ eventType: [{ type: 129 }] }], blacklist: [], since: timeFromMs(T0 - 10_000), follow: true });
  });
});

describe('top against a real Observer', () => {
  async function withObserver(fill: (store: FlowStore, now: number) => void, fn: (address: string) => Promise<void>): Promise<void> {
    const store = new FlowStore();
    fill(store, Date.now());
    const server = await startObserver({ store, node: 'node-a', tcp: '127.0.0.1:0', logger: quiet });
    try {
      await fn(server.addresses[0]!);
    } finally {
      await server.close();
    }
  }
  const fill = (store: FlowStore, now: number): void => {
    for (let i = 0; i < 12; i++) store.add(request(now - 2000 + i, { latencyMs: 10, code: i < 3 ? 503 : 200 }));
    store.add(request(now - 1000, { src: 'jobs', dst: 'db', method: 'PUT', url: '/rows/1' }));
    store.add(flowAt(1, { time: timeFromMs(now - 1000) }));
    // long ago: outside any window asked for here
    store.add(request(now - 7_200_000, { dst: 'old' }));
  };

  it('--once -o json: one document over the last window', async () => {
    await withObserver(fill, async (server) => {
      const io = capture();
      assert.equal(await runTop({ server, once: true, output: 'json', window: '1h' }, io), 0, io.stderr());
      const doc = JSON.parse(io.stdout()) as { window_seconds: number; lost_events: number; routes: Array<Record<string, unknown>> };
      assert.equal(doc.window_seconds, 3600);
      assert.equal(doc.lost_events, 0);
      assert.deepEqual(doc.routes.map((r) => [r.source, r.destination, r.method, r.path, r.requests, r.success_rate, r.latency_ms_p50]), [
        ['frontend/web', 'backend/api', 'GET', '/v1/items', 12, 0.75, 10],
        ['frontend/jobs', 'backend/db', 'PUT', '/rows/:id', 1, 1, null],
      ]);
    });
  });

  it('--once -n: only requests from or to the namespace; a table without clear-screen', async () => {
    await withObserver((store, now) => {
      fill(store, now);
      store.add(request(now - 500, { src: 'x' }));
      const other = request(now - 500);
      other.source = { identity: 400, namespace: 'ops', podName: 'probe-1' };
      other.destination = { identity: 401, namespace: 'ops', podName: 'target-1' };
      store.add(other);
    }, async (server) => {
      const io = capture(true);
      assert.equal(await runTop({ server, once: true, namespace: ['ops'], window: '1h' }, io), 0, io.stderr());
      const out = io.stdout();
      assert.doesNotMatch(out, /\x1b/);
      assert.match(out, /^HTTP routes over the last 3600s: 1\n/);
      assert.match(out, /\nops\/probe-1 {3}ops\/target-1 {3}GET {6}\/v1\/items {3}100\.00% {3}0\.0rps {3}-/);
    });
  });

  it('live: redraws every interval, in place on a terminal, until stopped', async () => {
    await withObserver(fill, async (server) => {
      const io = capture(true);
      const stop = new AbortController();
      // stop once a frame shows the route: that it redraws is what is tested, not when
      const row = /frontend\/web +backend\/api +GET +\/v1\/items +75\.00% +0\.0rps +10ms +10ms\n/;
      let writes = 0;
      // a bound, so that a table that never shows the row fails the test instead of hanging it
      io.onWrite(() => { if (row.test(io.stdout()) || ++writes > 500) stop.abort(); });
      assert.equal(await runTop({ server, window: '1h', interval: '20ms' }, io, stop.signal), 0, io.stderr());
      const frames = io.stdout().split('\x1b[H\x1b[2J');
      assert.equal(frames[0], '');
      assert.ok(frames.length >= 2);
      assert.match(frames.at(-1)!, /^HTTP routes over the last 3600s: 2\n/);
      assert.match(frames.at(-1)!, row);
    });
  });

  it('exits 1 when nothing listens, and on bad arguments', async () => {
    const io = capture();
    assert.equal(await runTop({ server: '127.0.0.1:1', once: true, timeout: '2s' }, io), 1);
    assert.match(io.stderr(), /nodal top: cannot reach the Observer at 127\.0\.0\.1:1/);
    const bad = capture();
    assert.equal(await runTop({ output: 'yaml' }, bad), 1);
    assert.equal(await runTop({ window: 'forever' }, bad), 1);
    assert.match(bad.stderr(), /-o: "yaml" is not one of table, json\n.*--window: "forever" is not a duration/s);
  });
});
