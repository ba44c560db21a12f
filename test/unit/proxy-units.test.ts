// The proxy's small parts: protocol detection, trace context, tunnel authority parsing,
// and a regression test for the response head corrupted on an h2 tunnel stream.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as httpServer, type Server as HttpServer } from 'node:http';
import { connect as h2connect, createServer as h2server, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { Snapshot } from '../../control/api/types.ts';
import type { Flow } from '../../agent/flows/flow.ts';
import type { InboundConn, ProxyContext } from '../../agent/proxy/context.ts';
import { HttpIngress } from '../../agent/proxy/http.ts';
import { Destination } from '../../agent/proxy/destination.ts';
import { DEFAULT_LIMITS } from '../../agent/proxy/limits.ts';
import { Tracer } from '../../agent/telemetry/index.ts';
import { declaredProtocol } from '../../agent/policy/index.ts';
import { ProxyMetrics } from '../../agent/proxy/metrics.ts';
import { classify, normalizeIp, sniff } from '../../agent/proxy/stream.ts';
import { childSpan, newTrace, parseTraceparent } from '../../agent/proxy/trace.ts';
import { formatAuthority, parseAuthority, sourceHeaders } from '../../agent/proxy/tunnel.ts';
import { MeshView } from '../../agent/proxy/view.ts';

describe('protocol detection', () => {
  const table: Array<[string, string]> = [
    ['GET / HTTP/1.1\r\n', 'http1'],
    ['POST /x HTTP/1.1\r\n', 'http1'],
    ['DELETE /x HTTP/1.1\r\n', 'http1'],
    ['OPTIONS * HTTP/1.1\r\n', 'http1'],
    ['GE', 'opaque'],
    ['PAT', 'http1'],
    ['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'h2'],
    ['\x16\x03\x01\x02\x00', 'opaque'],
    ['SSH-2.0-OpenSSH_9.2\r\n', 'opaque'],
    ['get / HTTP/1.1\r\n', 'opaque'],
  ];
  for (const [head, want] of table) {
    it(`${JSON.stringify(head)} → ${want}`, () => assert.equal(classify(Buffer.from(head, 'latin1')), want));
  }

  it('appProtocol declares http, opaque, or leaves it to detection', () => {
    assert.equal(declaredProtocol('http'), 'http1');
    assert.equal(declaredProtocol('HTTP'), 'http1');
    assert.equal(declaredProtocol('tcp'), 'opaque');
    assert.equal(declaredProtocol('grpc'), 'h2');
    assert.equal(declaredProtocol('kubernetes.io/h2c'), 'h2');
    assert.equal(declaredProtocol('https'), 'opaque');
    assert.equal(declaredProtocol(undefined), 'detect');
  });

  it('sniff peeks without consuming: the first chunk is read again, in order', async () => {
    const s = new PassThrough();
    s.write('GET /a HTTP/1.1\r\n');
    const proto = await new Promise((resolve) => sniff(s, 10_000, resolve));
    assert.equal(proto, 'http1');
    s.end('host: x\r\n\r\n');
    let all = '';
    for await (const c of s) all += String(c);
    assert.equal(all, 'GET /a HTTP/1.1\r\nhost: x\r\n\r\n');
  });

  it('sniff gives up on a silent client and says opaque', async () => {
    const s = new PassThrough();
    assert.equal(await new Promise((resolve) => sniff(s, 5, resolve)), 'opaque');
    s.end('late');
    let all = '';
    for await (const c of s) all += String(c);
    assert.equal(all, 'late');
  });

  it('sniff says opaque when the client half-closes without a byte', async () => {
    const s = new PassThrough();
    s.end();
    assert.equal(await new Promise((resolve) => sniff(s, 10_000, resolve)), 'opaque');
  });
});

describe('trace context', () => {
  it('accepts a valid traceparent and normalises case', () => {
    const t = parseTraceparent('00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01');
    assert.deepEqual(t, {
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', flags: '01',
      header: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    });
  });
  it('drops invalid ones (version ff, zero ids, wrong shape)', () => {
    assert.equal(parseTraceparent('ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'), undefined);
    assert.equal(parseTraceparent(`00-${'0'.repeat(32)}-00f067aa0ba902b7-01`), undefined);
    assert.equal(parseTraceparent(`00-4bf92f3577b34da6a3ce929d0e0e4736-${'0'.repeat(16)}-01`), undefined);
    assert.equal(parseTraceparent('00-abc-def-01'), undefined);
    assert.equal(parseTraceparent(undefined), undefined);
  });
  it('starts sampled traces and child spans in the same trace', () => {
    const t = newTrace();
    assert.match(t.header, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const c = childSpan(t);
    assert.equal(c.traceId, t.traceId);
    assert.notEqual(c.spanId, t.spanId);
  });
});

describe('tunnel authority', () => {
  it('parses ip:port and [v6]:port', () => {
    assert.deepEqual(parseAuthority('10.0.0.1:8080'), { ip: '10.0.0.1', port: 8080 });
    assert.deepEqual(parseAuthority('[fd00::1]:80'), { ip: 'fd00::1', port: 80 });
    assert.equal(formatAuthority('fd00::1', 80), '[fd00::1]:80');
  });
  it('rejects what is not an address with a port', () => {
    for (const bad of ['10.0.0.1', '10.0.0.1:0', '10.0.0.1:70000', ':80', '[fd00::1]80', 'x:y', '']) {
      assert.equal(parseAuthority(bad), undefined, bad);
    }
  });
  it('normalises IPv4-mapped addresses', () => {
    assert.equal(normalizeIp('::ffff:127.0.0.1'), '127.0.0.1');
    assert.equal(normalizeIp('::1'), '::1');
    assert.equal(normalizeIp(undefined), '');
  });
  // the receiver (tunnel.ts) reads identity, address and pod; it maps the identity to its
  // SPIFFE id itself. Every value sent costs the receiver an old-space string until its next
  // full GC, so nothing it does not read goes (x-nodal-source-spiffe did, unread, before)
  it('names the source by identity, address and pod, and by nothing the receiver does not read', () => {
    const pod = { namespace: 'app', name: 'web-0', uid: 'u', node: 'n1', ip: 'fd00::7', identity: 300, labels: {}, serviceAccount: 'web', enrolled: true };
    assert.deepEqual(sourceHeaders({ identity: 300, endpoint: pod, ip: 'fd00::7', port: 40000 }), {
      'x-nodal-source-identity': '300', 'x-nodal-source-addr': '[fd00::7]:40000', 'x-nodal-source-endpoint': 'app/web-0',
    });
    assert.deepEqual(sourceHeaders({ identity: 2, endpoint: undefined, ip: '10.0.0.9', port: 5 }), {
      'x-nodal-source-identity': '2', 'x-nodal-source-addr': '10.0.0.9:5',
    });
  });
});

describe('regression: HTTP/1.1 response head over an h2 tunnel stream', () => {
  // Node 24 freed the native copy of a string chunk in a vectored Http2Stream write
  // before sending it: the status line arrived as 16 bytes of allocator garbage.
  const closers: Array<() => void> = [];
  after(() => { for (const c of closers) c(); });

  it('arrives intact when the body is piped after writeHead', async () => {
    const upstream: HttpServer = httpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 11 });
      res.end('{"ok":true}');
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.31.1', r));
    closers.push(() => { upstream.closeAllConnections(); upstream.close(); });
    const port = (upstream.address() as AddressInfo).port;

    const snapshot: Snapshot = {
      version: 1, node: 'n1', trustDomain: 'cluster.local', nodes: [], identities: [], services: [], policies: [], l4: [],
      endpoints: [{ namespace: 'app', name: 'up', uid: 'u', node: 'n1', ip: '127.0.31.1', identity: 300, labels: {}, serviceAccount: 'up', enrolled: true }],
    };
    const view = new MeshView(snapshot);
    const flows: Flow[] = [];
    const ctx: ProxyContext = {
      node: 'n1', upstreamBindIp: '127.0.31.2', view: () => view, emit: (f) => flows.push(f),
      metrics: new ProxyMetrics(new Registry()), log: pino({ level: 'silent' }), track: () => {}, countBytes: () => {},
      tracer: new Tracer(), accessLog: undefined, limits: DEFAULT_LIMITS,
    };
    const dest = new Destination(ctx);
    const ingress = new HttpIngress(ctx, dest);
    closers.push(() => { ingress.close(); dest.close(); });
    const conn: InboundConn = {
      src: { identity: 256, endpoint: undefined, flow: { identity: 256 }, ip: '127.0.31.9', port: 1, principal: undefined, namespace: undefined },
      dst: snapshot.endpoints[0]!, port, appProtocol: 'http', trace: newTrace(), via: 'tunnel', peer: 'n2',
    };
    const tunnel: Http2Server = h2server();
    tunnel.on('stream', (stream) => {
      stream.respond({ ':status': 200 });
      ingress.attach(stream, conn);
    });
    await new Promise<void>((r) => tunnel.listen(0, '127.0.31.3', r));
    const session = h2connect(`http://127.0.31.3:${(tunnel.address() as AddressInfo).port}`);
    closers.push(() => { session.destroy(); tunnel.close(); });

    const stream = session.request({ ':method': 'CONNECT', ':authority': `127.0.31.1:${port}` });
    stream.write('GET /x HTTP/1.1\r\nhost: up\r\n\r\n');
    let raw = '';
    stream.setEncoding('latin1');
    await new Promise<void>((resolve) => {
      stream.on('data', (c: string) => { raw += c; if (raw.endsWith('{"ok":true}')) resolve(); });
    });
    assert.ok(raw.startsWith('HTTP/1.1 200 OK\r\n'), JSON.stringify(raw.slice(0, 40)));
    assert.ok(raw.includes('{"ok":true}'));
    assert.equal(flows[0]?.l7?.http?.code, 200);
  });
});

describe('MeshView.flowEndpoint', () => {
  const snapshot: Snapshot = {
    version: 1, node: 'n1', trustDomain: 'cluster.local', nodes: [], identities: [], services: [], policies: [], l4: [],
    endpoints: [
      { namespace: 'app', name: 'db-0', uid: 'u0', node: 'n1', ip: '10.0.0.1', identity: 300, labels: { app: 'db' }, serviceAccount: 'db', enrolled: true, workload: { kind: 'StatefulSet', name: 'db' } },
      { namespace: 'app', name: 'debug', uid: 'u1', node: 'n1', ip: '10.0.0.2', identity: 301, labels: {}, serviceAccount: 'default', enrolled: true },
    ],
  };
  it('carries the pod\'s workload as Hubble\'s workloads, none for a bare pod, frozen and shared', () => {
    const view = new MeshView(snapshot);
    const db = view.flowEndpoint(snapshot.endpoints[0]);
    assert.deepEqual(db, { identity: 300, namespace: 'app', podName: 'db-0', labels: ['k8s:app=db', 'k8s:io.kubernetes.pod.namespace=app'], workloads: [{ name: 'db', kind: 'StatefulSet' }] });
    assert.equal(view.flowEndpoint(snapshot.endpoints[0]), db);
    assert.ok(Object.isFrozen(db.workloads) && Object.isFrozen(db.workloads![0]));
    assert.ok(!('workloads' in view.flowEndpoint(snapshot.endpoints[1])));
  });
});
