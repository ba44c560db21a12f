// Spans per proxy hop as a tracing backend receives them: a fake OTLP/HTTP collector on
// loopback decodes each request with the vendored opentelemetry-proto schema (and, where
// protoc is installed, with protoc's own decoder) and checks what the exporter sent.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { parseAgentArgs } from '../../agent/config.ts';
import {
  EXPORT_REQUEST_TYPE, EXPORT_RESPONSE_TYPE, OtlpExporter, Tracer, otlpProtoDir, otlpRoot, retryAfterMs,
  type OtlpExporterOptions, type SpanContext,
} from '../../agent/telemetry/index.ts';

interface Received { path: string; contentType: string; body: Buffer; request: DecodedRequest }
interface DecodedAttr { key: string; value: { stringValue?: string; intValue?: number; boolValue?: boolean; doubleValue?: number } }
interface DecodedSpan {
  traceId: string; spanId: string; parentSpanId?: string; flags?: number; name: string; kind: number;
  startTimeUnixNano: string; endTimeUnixNano: string; attributes: DecodedAttr[]; status?: { code?: number; message?: string };
}
interface DecodedRequest {
  resourceSpans: Array<{ resource: { attributes: DecodedAttr[] }; scopeSpans: Array<{ scope: { name: string }; spans: DecodedSpan[] }> }>;
}

type Answer = (req: IncomingMessage, res: ServerResponse, n: number) => void;

/** an OTLP/HTTP receiver: decodes every POST, answers with the scripted answer (200 by default) */
class FakeCollector {
  readonly received: Received[] = [];
  inFlight = 0;
  maxInFlight = 0;
  answer: Answer = (_req, res) => res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
  private readonly server: Server;
  private waiters: Array<{ spans: number; resolve: () => void }> = [];

  constructor() {
    const type = otlpRoot().lookupType(EXPORT_REQUEST_TYPE);
    this.server = createServer((req, res) => {
      this.inFlight++;
      this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
      res.on('close', () => { this.inFlight--; });
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        const request = type.toObject(type.decode(body), { bytes: String, longs: String, enums: Number, arrays: true }) as DecodedRequest;
        // bytes come back base64: the tests read ids in hex, as traceparent carries them
        for (const rs of request.resourceSpans) {
          for (const ss of rs.scopeSpans) {
            for (const s of ss.spans) {
              s.traceId = Buffer.from(s.traceId, 'base64').toString('hex');
              s.spanId = Buffer.from(s.spanId, 'base64').toString('hex');
              if (s.parentSpanId) s.parentSpanId = Buffer.from(s.parentSpanId, 'base64').toString('hex');
            }
          }
        }
        this.received.push({ path: req.url ?? '', contentType: req.headers['content-type'] ?? '', body, request });
        this.answer(req, res, this.received.length);
        this.wake();
      });
    });
  }

  async start(): Promise<string> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** spans of every request, accepted or not */
  spans(): DecodedSpan[] {
    return this.received.flatMap((r) => r.request.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans)));
  }

  /** resolves once this many spans have arrived (in any number of requests) */
  waitForSpans(n: number): Promise<void> {
    return new Promise((resolve) => {
      this.waiters.push({ spans: n, resolve });
      this.wake();
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  private wake(): void {
    const have = this.spans().length;
    this.waiters = this.waiters.filter((w) => (have >= w.spans ? (w.resolve(), false) : true));
  }
}

const collectors: FakeCollector[] = [];
const exporters: OtlpExporter[] = [];
after(async () => {
  await Promise.all(exporters.map((e) => e.shutdown()));
  await Promise.all(collectors.map((c) => c.close()));
});

async function setup(opts: Partial<OtlpExporterOptions> = {}): Promise<{ collector: FakeCollector; exporter: OtlpExporter; registry: Registry }> {
  const collector = new FakeCollector();
  collectors.push(collector);
  const registry = new Registry();
  const exporter = new OtlpExporter({
    endpoint: await collector.start(),
    resource: { 'service.name': 'nodal-proxy', 'k8s.node.name': 'node-1' },
    // exports only when a batch fills or a test flushes, never on a timer mid-test
    scheduledDelayMs: 3_600_000,
    initialBackoffMs: 1,
    registry,
    ...opts,
  });
  exporters.push(exporter);
  return { collector, exporter, registry };
}

const PARENT: SpanContext = {
  traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', flags: '01',
  header: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
};
const unsampled = (c: SpanContext): SpanContext => ({ ...c, flags: '00', header: c.header.replace(/-01$/, '-00') });

const details = {
  method: 'GET', path: '/cart/42', status: 200, serverAddress: 'cart.shop.svc', serverPort: 8080, protocol: 'HTTP/1.1',
  src: { identity: 256, namespace: 'shop', pod: 'web-0' },
  dst: { identity: 257, namespace: 'shop', pod: 'cart-1' },
  route: 'shop/cart#0', verdict: 'FORWARDED' as const,
};

function attrs(s: DecodedSpan): Record<string, unknown> {
  return Object.fromEntries(s.attributes.map((a) => [a.key, a.value.stringValue ?? (a.value.intValue !== undefined ? Number(a.value.intValue) : a.value.boolValue ?? a.value.doubleValue)]));
}

async function metric(registry: Registry, name: string): Promise<number> {
  const m = /^(\S+) (\S+)$/m;
  const line = (await registry.metrics()).split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(m.exec(line)?.[2]) : NaN;
}

describe('otlp: one span per hop', () => {
  it('exports a SERVER span under the caller\'s span: ids, kind, times, HTTP and mesh attributes, error on 5xx', async () => {
    const { collector, exporter, registry } = await setup();
    const tracer = new Tracer({ exporter });
    const hop = tracer.start(PARENT, 'server');
    assert.equal(hop.context.traceId, PARENT.traceId, 'same trace');
    assert.notEqual(hop.context.spanId, PARENT.spanId, 'a span of its own');
    assert.equal(hop.context.header, `00-${PARENT.traceId}-${hop.context.spanId}-01`, 'the header forwarded names this hop');
    tracer.end(hop, { ...details, status: 503, verdict: 'ERROR', error: 'upstream 10.0.1.7:8080: ECONNREFUSED' });
    await exporter.forceFlush();

    assert.equal(collector.received.length, 1);
    const r = collector.received[0]!;
    assert.equal(r.path, '/v1/traces');
    assert.equal(r.contentType, 'application/x-protobuf');
    const rs = r.request.resourceSpans[0]!;
    assert.deepEqual(Object.fromEntries(rs.resource.attributes.map((a) => [a.key, a.value.stringValue])), { 'service.name': 'nodal-proxy', 'k8s.node.name': 'node-1' });
    assert.equal(rs.scopeSpans[0]!.scope.name, 'nodal-proxy');
    const s = rs.scopeSpans[0]!.spans[0]!;
    assert.equal(s.traceId, PARENT.traceId);
    assert.equal(s.spanId, hop.context.spanId);
    assert.equal(s.parentSpanId, PARENT.spanId);
    assert.equal(s.kind, 2, 'SPAN_KIND_SERVER');
    assert.equal(s.flags, 1);
    assert.equal(s.name, 'GET');
    const start = BigInt(s.startTimeUnixNano);
    const end = BigInt(s.endTimeUnixNano);
    assert.ok(end >= start);
    // unix nanoseconds: within a minute of now
    assert.ok(start > BigInt(Date.now() - 60_000) * 1_000_000n && start < BigInt(Date.now() + 60_000) * 1_000_000n, String(start));
    assert.deepEqual(attrs(s), {
      'http.request.method': 'GET', 'url.path': '/cart/42', 'http.response.status_code': 503,
      'server.address': 'cart.shop.svc', 'server.port': 8080, 'network.protocol.version': '1.1',
      'k8s.namespace.name': 'shop', 'k8s.pod.name': 'cart-1',
      'nodal.source.identity': 256, 'nodal.destination.identity': 257,
      'nodal.source.namespace': 'shop', 'nodal.source.pod': 'web-0', 'nodal.destination.namespace': 'shop', 'nodal.destination.pod': 'cart-1',
      'nodal.route': 'shop/cart#0', 'nodal.verdict': 'ERROR', 'error.type': '503',
    });
    assert.deepEqual(s.status, { code: 2, message: 'upstream 10.0.1.7:8080: ECONNREFUSED' });
    assert.equal(await metric(registry, 'nodal_otlp_spans_exported_total'), 1);
  });

  it('a CLIENT hop that starts the trace is a root span named after the gRPC method; a 2xx server hop has no error status', async () => {
    const { collector, exporter } = await setup();
    const tracer = new Tracer({ exporter });
    const client = tracer.start(undefined, 'client');
    assert.match(client.context.header, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const server = tracer.start(client.context, 'server');
    tracer.end(server, { ...details, method: 'POST', path: '/shop.Cart/Add', grpcMethod: 'shop.Cart/Add', grpcStatus: 0, protocol: 'HTTP/2' });
    tracer.end(client, { ...details, method: 'POST', path: '/shop.Cart/Add', grpcMethod: 'shop.Cart/Add', grpcStatus: 14, protocol: 'HTTP/2' });
    await exporter.forceFlush();
    const [srv, cli] = collector.spans();
    assert.equal(cli!.kind, 3, 'SPAN_KIND_CLIENT');
    assert.equal(cli!.parentSpanId ?? '', '', 'a root span has no parent');
    assert.equal(srv!.parentSpanId, cli!.spanId, 'the destination hop hangs under the source hop');
    assert.equal(srv!.traceId, cli!.traceId);
    assert.equal(cli!.name, 'shop.Cart/Add');
    const a = attrs(cli!);
    assert.equal(a['rpc.system'], 'grpc');
    assert.equal(a['rpc.service'], 'shop.Cart');
    assert.equal(a['rpc.method'], 'Add');
    assert.equal(a['rpc.grpc.status_code'], 14);
    assert.equal(a['k8s.pod.name'], 'web-0', 'a client hop acts for the source pod');
    assert.equal(a['network.protocol.version'], '2');
    assert.equal(cli!.status?.code, 2, 'UNAVAILABLE fails the client span');
    assert.equal(srv!.status?.code ?? 0, 0, 'OK leaves the status unset');
  });
});

describe('otlp: sampling', () => {
  it('honours the caller\'s sampled flag both ways and forwards it unchanged', async () => {
    const { collector, exporter } = await setup();
    const tracer = new Tracer({ exporter, sampleRatio: 1 });
    const off = tracer.start(unsampled(PARENT), 'server');
    assert.equal(off.sampled, false);
    assert.match(off.context.header, /-00$/);
    tracer.end(off, details);
    const on = tracer.start(PARENT, 'server');
    tracer.end(on, details);
    await exporter.forceFlush();
    assert.deepEqual(collector.spans().map((s) => s.spanId), [on.context.spanId], 'only the sampled hop is exported');
  });

  it('samples the traces it starts by the ratio, and says so in the flags it forwards', async () => {
    const { collector, exporter } = await setup();
    const never = new Tracer({ exporter, sampleRatio: 0 });
    const always = new Tracer({ exporter, sampleRatio: 1 });
    const half = new Tracer({ sampleRatio: 0.5 });
    const a = never.start(undefined, 'client');
    const b = always.start(undefined, 'client');
    assert.match(a.context.header, /-00$/);
    assert.match(b.context.header, /-01$/);
    never.end(a, details);
    always.end(b, details);
    await exporter.forceFlush();
    assert.deepEqual(collector.spans().map((s) => s.spanId), [b.context.spanId]);
    // the decision comes from the trace id: about half of many traces, and never a coin flip per hop
    let sampled = 0;
    for (let i = 0; i < 2000; i++) if (half.start(undefined, 'client').sampled) sampled++;
    assert.ok(sampled > 800 && sampled < 1200, `sampled ${sampled} of 2000`);
    assert.throws(() => new Tracer({ sampleRatio: 1.5 }), /not within 0\.\.1/);
  });

  it('without an exporter the tracer still makes hop contexts (propagation only)', () => {
    const tracer = new Tracer();
    assert.equal(tracer.exporting, false);
    const hop = tracer.start(PARENT, 'client');
    assert.equal(hop.parentSpanId, PARENT.spanId);
    tracer.end(hop, details);
  });
});

describe('otlp: batch processor', () => {
  it('sends full batches on its own, one request at a time, and the rest on flush', async () => {
    const { collector, exporter } = await setup({ maxExportBatchSize: 3 });
    // slow answers: a second export overlapping the first would show in maxInFlight
    collector.answer = (_req, res) => setImmediate(() => res.writeHead(200).end());
    const tracer = new Tracer({ exporter });
    for (let i = 0; i < 10; i++) tracer.end(tracer.start(PARENT, 'server'), { ...details, path: `/p/${i}` });
    await collector.waitForSpans(9);
    await exporter.forceFlush();
    assert.deepEqual(collector.received.map((r) => r.request.resourceSpans[0]!.scopeSpans[0]!.spans.length), [3, 3, 3, 1]);
    assert.deepEqual(collector.spans().map((s) => attrs(s)['url.path']), Array.from({ length: 10 }, (_, i) => `/p/${i}`), 'in order, none lost');
    assert.equal(collector.maxInFlight, 1, 'never more than one export in flight');
  });

  it('drops and counts spans once the queue is full, instead of growing', async () => {
    const { collector, exporter, registry } = await setup({ maxQueueSize: 4, maxExportBatchSize: 4 });
    // the collector holds the first answer: the queue can only fill up behind it
    let release: (() => void) | undefined;
    collector.answer = (_req, res, n) => {
      if (n === 1) release = () => res.writeHead(200).end();
      else res.writeHead(200).end();
    };
    const tracer = new Tracer({ exporter });
    for (let i = 0; i < 4; i++) tracer.end(tracer.start(PARENT, 'server'), details);
    await collector.waitForSpans(4);
    for (let i = 0; i < 7; i++) tracer.end(tracer.start(PARENT, 'server'), details);
    assert.equal(exporter.pending, 4);
    assert.equal(await metric(registry, 'nodal_otlp_spans_dropped_total'), 3);
    assert.equal(await metric(registry, 'nodal_otlp_queue_spans'), 4);
    release!();
    await exporter.forceFlush();
    assert.equal(collector.spans().length, 8);
    assert.equal(await metric(registry, 'nodal_otlp_spans_exported_total'), 8);
  });

  it('retries a 503 (honouring Retry-After) and a 429 with the same body, then succeeds', async () => {
    const { collector, exporter, registry } = await setup();
    collector.answer = (_req, res, n) => {
      if (n === 1) res.writeHead(503, { 'retry-after': '0' }).end('overloaded');
      else if (n === 2) res.writeHead(429).end();
      else res.writeHead(200).end();
    };
    const tracer = new Tracer({ exporter });
    tracer.end(tracer.start(PARENT, 'server'), details);
    tracer.end(tracer.start(PARENT, 'server'), details);
    await exporter.forceFlush();
    assert.equal(collector.received.length, 3);
    assert.deepEqual(collector.received[2]!.body, collector.received[0]!.body, 'the same batch is sent again');
    assert.equal(await metric(registry, 'nodal_otlp_spans_exported_total'), 2);
    assert.equal(await metric(registry, 'nodal_otlp_spans_failed_total'), 0);
  });

  it('gives up at once on a non-retryable answer, and after the last attempt on retryable ones, counting the spans failed', async () => {
    const errors: string[] = [];
    const { collector, exporter, registry } = await setup({ maxAttempts: 3, onError: (e) => errors.push(e.message) });
    collector.answer = (_req, res, n) => (n === 1 ? res.writeHead(400).end('bad span') : res.writeHead(502).end());
    const tracer = new Tracer({ exporter });
    tracer.end(tracer.start(PARENT, 'server'), details);
    await exporter.forceFlush();
    assert.equal(collector.received.length, 1, '400 is not retried');
    tracer.end(tracer.start(PARENT, 'server'), details);
    await exporter.forceFlush();
    assert.equal(collector.received.length, 4, 'one 502 batch: three attempts');
    assert.equal(await metric(registry, 'nodal_otlp_spans_failed_total'), 2);
    assert.match(errors[0]!, /failed after 1 attempt\(s\): HTTP 400: bad span/);
    assert.match(errors[1]!, /failed after 3 attempt\(s\): HTTP 502/);
  });

  it('retries when the collector is not there yet (connection refused)', async () => {
    const collector = new FakeCollector();
    collectors.push(collector);
    const url = await collector.start();
    await collector.close();
    const registry = new Registry();
    const exporter = new OtlpExporter({ endpoint: url, resource: {}, scheduledDelayMs: 3_600_000, initialBackoffMs: 1, maxAttempts: 2, registry });
    exporters.push(exporter);
    new Tracer({ exporter }).end(new Tracer().start(PARENT, 'server'), details);
    await exporter.forceFlush();
    assert.equal(await metric(registry, 'nodal_otlp_spans_failed_total'), 1);
  });

  it('counts spans the receiver rejected in a partial success', async () => {
    const { collector, exporter, registry } = await setup();
    const res = otlpRoot().lookupType(EXPORT_RESPONSE_TYPE);
    const body = res.encode(res.fromObject({ partialSuccess: { rejectedSpans: 1, errorMessage: 'span too old' } })).finish();
    collector.answer = (_req, r) => r.writeHead(200, { 'content-type': 'application/x-protobuf' }).end(body);
    const tracer = new Tracer({ exporter });
    for (let i = 0; i < 3; i++) tracer.end(tracer.start(PARENT, 'server'), details);
    await exporter.forceFlush();
    assert.equal(await metric(registry, 'nodal_otlp_spans_exported_total'), 2);
    assert.equal(await metric(registry, 'nodal_otlp_spans_failed_total'), 1);
  });

  it('shutdown() exports what is queued, then takes no more spans', async () => {
    const { collector, exporter, registry } = await setup();
    const tracer = new Tracer({ exporter });
    for (let i = 0; i < 5; i++) tracer.end(tracer.start(PARENT, 'server'), details);
    assert.equal(collector.received.length, 0, 'a partial batch waits for the timer');
    await tracer.shutdown();
    assert.equal(collector.spans().length, 5);
    tracer.end(tracer.start(PARENT, 'server'), details);
    assert.equal(await metric(registry, 'nodal_otlp_spans_dropped_total'), 1);
    await tracer.shutdown();
  });

  it('shutdown() gives up on a collector that never answers after its timeout', async () => {
    const { collector, exporter, registry } = await setup({ shutdownTimeoutMs: 50 });
    collector.answer = () => { /* never answers */ };
    const tracer = new Tracer({ exporter });
    tracer.end(tracer.start(PARENT, 'server'), details);
    await tracer.shutdown();
    assert.equal(await metric(registry, 'nodal_otlp_spans_failed_total'), 1);
  });
});

describe('otlp: configuration', () => {
  const required = ['--node', 'n', '--control', 'c:1', '--state-dir', '/tmp/x', '--cgroup', '/sys/fs/cgroup', '--proxy-ip', '10.0.0.1', '--tunnel-ip', '10.99.0.1', '--underlay-ip', '192.168.0.1'];
  it('is off by default, samples every trace it starts unless told otherwise', () => {
    assert.deepEqual(parseAgentArgs(required).tracing, { sampleRatio: 1 });
    assert.deepEqual(parseAgentArgs([...required, '--otlp-endpoint', 'http://otel:4318', '--trace-sample-ratio', '0.05']).tracing,
      { otlpEndpoint: 'http://otel:4318', sampleRatio: 0.05 });
  });

  it('rejects a ratio outside 0..1 and an endpoint that is not an http(s) URL', () => {
    assert.throws(() => parseAgentArgs([...required, '--trace-sample-ratio', '2']), /--trace-sample-ratio must be a number within 0\.\.1/);
    assert.throws(() => parseAgentArgs([...required, '--otlp-endpoint', 'otel:4317']), /--otlp-endpoint must be an http:\/\/ or https:\/\/ URL/);
    assert.throws(() => new OtlpExporter({ endpoint: 'grpc://otel:4317', resource: {} }), /only http and https/);
  });

  it('reads Retry-After as seconds or an HTTP date', () => {
    assert.equal(retryAfterMs('3'), 3000);
    assert.equal(retryAfterMs(undefined), undefined);
    const ms = retryAfterMs(new Date(Date.now() + 60_000).toUTCString())!;
    assert.ok(ms > 50_000 && ms <= 60_000, String(ms));
    assert.equal(retryAfterMs('soon'), undefined);
  });
});

describe('otlp: wire compatibility', () => {
  let protoc = true;
  try {
    execFileSync('protoc', ['--version']);
  } catch {
    protoc = false;
  }
  it('protoc decodes an exported body with the vendored .proto files', { skip: protoc ? false : 'protoc is not installed' }, async () => {
    const { collector, exporter } = await setup();
    const tracer = new Tracer({ exporter });
    const hop = tracer.start(PARENT, 'server');
    tracer.end(hop, { ...details, status: 500 });
    await exporter.forceFlush();
    const text = execFileSync('protoc', [
      `-I${otlpProtoDir()}`, `--decode=${EXPORT_REQUEST_TYPE}`, 'opentelemetry/proto/collector/trace/v1/trace_service.proto',
    ], { input: collector.received[0]!.body }).toString();
    // protoc prints bytes with C escapes: compare the ids through their escaped form
    const esc = (hex: string): string => [...Buffer.from(hex, 'hex')].map((b) => (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x27 && b !== 0x5c ? String.fromCharCode(b) : `\\${b.toString(8).padStart(3, '0')}`)).join('');
    assert.ok(text.includes(`trace_id: "${esc(PARENT.traceId)}"`), text);
    assert.ok(text.includes(`parent_span_id: "${esc(PARENT.spanId)}"`), text);
    assert.match(text, /kind: SPAN_KIND_SERVER/);
    assert.match(text, /code: STATUS_CODE_ERROR/);
    assert.match(text, /key: "http\.response\.status_code"\s+value \{\s+int_value: 500/);
    assert.match(text, /key: "service\.name"\s+value \{\s+string_value: "nodal-proxy"/);
    assert.match(text, /start_time_unix_nano: \d{19}/);
    assert.match(text, /flags: 1/);
  });
});
