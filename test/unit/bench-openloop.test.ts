// bench/helpers/openloop.c and openloop-h2.c through load.ts's openLoop(): requests due at a
// fixed rate and timed from when they were due; and bench/helpers/grpc-backend.c, the
// bench's gRPC backend. The bench's evenly spaced p99 is only as right as this: a stalled
// answer must show in the latency of every request that came due behind it (HTTP/1.1), which
// h2load --rps does not count, and over HTTP/2 a stalled stream must not hold back the
// requests due after it, which go out on time.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { connect as connectH2, createServer as createH2Server, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { buildC, openLoop } from '../../bench/helpers/load.ts';
import { grpcMessage } from '../../agent/proxy/exchange.ts';
import { freePort } from '../helpers/ports.ts';

const run = promisify(execFile);

// dist/test/unit → the sources next to bench/helpers/load.ts
const source = (name: string): string => fileURLToPath(new URL(`../../../bench/helpers/${name}`, import.meta.url));
const latencies = (file: string): number[] => readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => Number(l.split('\t')[0]) / 1000);

/** the stall both generators are tried on: the 100th answer comes 60 ms late, every other at once */
function stallHundredth(n: number, answer: () => void): void {
  if (n === 100) setTimeout(answer, 60);
  else answer();
}

/** 1,000 requests/s for 0.4 s on one connection, every one answered: their latencies (ms) and p99 */
async function stallRun(bin: string, dir: string, port: number): Promise<{ times: number[]; p99: number }> {
  const logFile = join(dir, 'stall.log');
  const r = await openLoop(bin, '0', { host: '127.0.0.1', port, path: '/', rate: 1000, seconds: 0.4, connections: 1, logFile });
  assert.equal(r.requests, 400, 'every request answered');
  assert.equal(r.errors, '');
  return { times: latencies(logFile), p99: r.p99 };
}

describe('openloop: HTTP/1.1 at a fixed rate, timed from when each request was due', () => {
  let dir: string;
  let bin: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nodal-openloop-'));
    bin = await buildC(source('openloop.c'), dir);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** a server on loopback whose answer to the n-th request (1-based) `answer` gives */
  async function serve(answer: (n: number, res: ServerResponse) => void): Promise<{ server: Server; port: number }> {
    let n = 0;
    const server = createServer((_req, res) => answer(++n, res));
    server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { server, port: (server.address() as AddressInfo).port };
  }
  const close = (server: Server): Promise<void> => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); });

  it('counts the wait behind a stalled answer in every request due during it', async () => {
    const { server, port } = await serve((n, res) => stallHundredth(n, () => res.end('ok\n')));
    try {
      const { times, p99 } = await stallRun(bin, dir, port);
      const slow = times.filter((ms) => ms >= 10);
      // the stalled one and the ~50 due behind it on the one connection: h2load would time
      // only the stalled one as slow
      assert.ok(slow.length >= 40, `requests due behind the stall timed from when they were due: ${slow.length} over 10 ms`);
      assert.ok(Math.max(...slow) >= 55, `the stalled request itself: ${Math.max(...slow)} ms`);
      assert.ok(p99 >= 10, `p99 ${p99} ms shows the stall`);
    } finally {
      await close(server);
    }
  });

  it('reads chunked answers, and counts non-2xx answers as errors', async () => {
    const { server, port } = await serve((n, res) => {
      res.statusCode = n % 10 === 0 ? 503 : 200;
      res.write('chunk one, ');
      res.end('chunk two\n'); // no Content-Length: node sends it chunked
    });
    try {
      const r = await openLoop(bin, '0', { host: '127.0.0.1', port, path: '/', rate: 500, seconds: 0.2, connections: 2, logFile: join(dir, 'chunked.log') });
      assert.equal(r.requests, 90, 'the 2xx answers');
      assert.equal(r.errors, '10 failed or non-2xx');
    } finally {
      await close(server);
    }
  });
});

describe('openloop-h2: HTTP/2 and gRPC at a fixed rate; grpc-backend: the bench\'s gRPC backend', () => {
  let dir: string;
  let bin: string;
  let backend: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nodal-openloop-h2-'));
    bin = await buildC(source('openloop-h2.c'), dir, ['nghttp2']);
    backend = await buildC(source('grpc-backend.c'), dir, ['nghttp2']);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** an h2c server on loopback whose answer to the n-th stream (1-based) `answer` gives */
  async function serve(answer: (n: number, stream: ServerHttp2Stream) => void): Promise<{ server: Http2Server; port: number }> {
    let n = 0;
    const server = createH2Server();
    server.on('stream', (stream) => {
      stream.on('error', () => { /* a stream this side resets errors; the generator's count is the check */ });
      stream.resume();
      stream.on('end', () => answer(++n, stream));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { server, port: (server.address() as AddressInfo).port };
  }
  const close = (server: Http2Server): Promise<void> => new Promise((resolve) => server.close(() => resolve()));

  it('sends each request when it is due: a stalled stream delays itself, not the requests due after it', async () => {
    const { server, port } = await serve((n, stream) => stallHundredth(n, () => { stream.respond({ ':status': 200 }); stream.end('ok\n'); }));
    try {
      await stallRun(bin, dir, port);
      // [latency ms, due ms] per request
      const rows = readFileSync(join(dir, 'stall.log'), 'utf8').split('\n').filter(Boolean).map((l) => l.split('\t')).map((c) => [Number(c[0]) / 1000, Number(c[2]) / 1000] as const);
      const stalled = rows.reduce((m, r) => (r[0] > m[0] ? r : m));
      assert.ok(stalled[0] >= 55, `the stalled request, timed from when it was due: ${stalled[0]} ms`);
      // a generator that waited for each answer before the next request would hold back
      // the ~50 due in the stall's first 50 ms (what the HTTP/1.1 case above counts)
      const behind = rows.filter(([ms, due]) => due > stalled[1] && due < stalled[1] + 50 && ms >= 20);
      assert.ok(behind.length < 10, `requests due during the stall went out on their own streams: ${behind.length} of them over 20 ms`);
    } finally {
      await close(server);
    }
  });

  it('counts non-2xx answers, gRPC calls without grpc-status 0 and reset streams as errors', async () => {
    const { server, port } = await serve((n, stream) => {
      if (n % 10 === 0) { stream.respond({ ':status': 503 }); stream.end(); return; }
      if (n % 10 === 5) { stream.close(0x2); return; } // RST_STREAM INTERNAL_ERROR
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': n % 10 === 7 ? '14' : '0' }));
      stream.end(grpcMessage(Buffer.from('hi')));
    });
    try {
      const body = join(dir, 'call.grpc');
      writeFileSync(body, grpcMessage(Buffer.from('bench')));
      const logFile = join(dir, 'errors.log');
      const r = await openLoop(bin, '0', { host: '127.0.0.1', port, path: '/demo.Greeter/Hello', rate: 500, seconds: 0.2, connections: 2, logFile, grpcBody: body });
      assert.equal(r.requests, 70, 'the calls answered 200 with grpc-status 0');
      assert.equal(r.errors, '30 failed or non-2xx or not grpc-status 0');
      const statuses = readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => l.split('\t')[1]);
      assert.equal(statuses.filter((x) => x === '503').length, 10);
      assert.equal(statuses.filter((x) => x === '1014').length, 10, 'grpc-status 14 logged as 1014');
      assert.equal(statuses.filter((x) => x === '-2').length, 10, 'a stream reset with INTERNAL_ERROR logged as -2');
    } finally {
      await close(server);
    }
  });

  it('grpc-backend answers hello <message> with grpc-status 0, UNIMPLEMENTED to another method, outlives clients that vanish mid-answer, and exits when its stdin ends', async () => {
    const port = await freePort();
    const proc = spawn(backend, [`127.0.0.1:${port}`], { stdio: ['pipe', 'pipe', 'inherit'] });
    const exited = once(proc, 'exit');
    let client: ReturnType<typeof connectH2> | undefined;
    try {
      const [line] = await once(createInterface({ input: proc.stdout! }), 'line') as [string];
      assert.equal(line, 'ready');
      // only now: "ready" is printed once every address is bound
      const session = client = connectH2(`http://127.0.0.1:${port}`);
      const call = (path: string): Promise<{ headers: Record<string, unknown>; trailers: Record<string, unknown>; body: Buffer }> => new Promise((resolve, reject) => {
        const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
        const chunks: Buffer[] = [];
        let headers: Record<string, unknown> = {};
        let trailers: Record<string, unknown> = {};
        req.on('response', (h) => { headers = h; });
        req.on('trailers', (t) => { trailers = t; });
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => resolve({ headers, trailers, body: Buffer.concat(chunks) }));
        req.on('error', reject);
        req.end(grpcMessage(Buffer.from('bench')));
      });
      const ok = await call('/demo.Greeter/Hello');
      assert.equal(ok.headers[':status'], 200);
      assert.equal(ok.headers['content-type'], 'application/grpc');
      assert.deepEqual(ok.body, grpcMessage(Buffer.from('hello bench')));
      assert.equal(ok.trailers['grpc-status'], '0');
      const other = await call('/demo.Greeter/Other');
      assert.equal(other.headers['grpc-status'], '12', 'UNIMPLEMENTED');

      // a client gone with answers still to write costs only its own connection: h2load
      // stops at its deadline with 256 calls in flight, and the backend, writing their
      // answers to closed sockets, must not die of SIGPIPE in the middle of a bench
      const body = join(dir, 'hello.grpc');
      writeFileSync(body, grpcMessage(Buffer.from('bench')));
      await run('h2load', ['-c8', '-m32', '-D1', '-H', 'content-type: application/grpc', '-H', 'te: trailers', '-d', body,
        `http://127.0.0.1:${port}/demo.Greeter/Hello`], { timeout: 20_000 });
      await new Promise((resolve) => setTimeout(resolve, 100)); // a death by signal is reported asynchronously
      assert.equal(proc.signalCode, null, 'the backend outlived a client that vanished mid-answer');

      // and under the open-loop generator, after that: every call answered with grpc-status 0
      const r = await openLoop(bin, '0', { host: '127.0.0.1', port, path: '/demo.Greeter/Hello', rate: 500, seconds: 0.2, connections: 2, logFile: join(dir, 'backend.log'), grpcBody: body });
      assert.deepEqual([r.requests, r.errors], [100, '']);

      proc.stdin!.end();
      const [code] = await exited as [number | null];
      assert.equal(code, 0, 'the end of its stdin ends it');
    } finally {
      client?.destroy();
      if (proc.exitCode === null && proc.signalCode === null) { proc.kill(); await exited; }
    }
  });
});
