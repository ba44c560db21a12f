// What a finished HTTP/2 stream or a closed connection keeps alive through V8's
// young-generation GC. node's Writable assigns a function literal to a property per stream,
// which V8 allocates in old space until it has optimized that code; from there the stream and
// everything its listeners capture survive each young GC and are promoted, until a full GC
// (the GC pauses of the cross-node path in docs/benchmarks.md). releaseOnClose() drops the
// listeners once the stream has closed, so what a request's listeners held goes with the next
// young GC; what the proxy keeps per connection in WeakMaps keyed by the socket is deleted
// when it closes, and a request's own signal never goes into one (cancelOn): a young GC keeps
// every WeakMap value. node's ClientHttp2Session.request() pins each request the same way
// through AsyncResource's bind; shareBindAccessors() puts in a bind that does not, and must
// behave as node's. And NodeProxy.start turns off V8's allocation-site pretenuring, which
// otherwise has objects born in old space hold young ones. Measured in a child process with
// --expose-gc: old space after young GCs only, with a 32 KiB array captured per request, or
// what a young GC leaves.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AsyncResource, executionAsyncId } from 'node:async_hooks';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { shareBindAccessors } from '../../agent/proxy/stream.ts';

const run = promisify(execFile);
const STREAM = new URL('../../agent/proxy/stream.js', import.meta.url).href;
const EXCHANGE = new URL('../../agent/proxy/exchange.js', import.meta.url).href;
const PROXY = new URL('../../agent/proxy/index.js', import.meta.url).href;
const REQUESTS = 100;
const CAPTURED = 4000; // doubles: 32 KiB per request, 3.2 MiB over the run

/** how each child ends: one() 20 times, a full GC, one() REQUESTS times, young GCs only */
const MEASURE = `
const oldUsed = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space').space_used_size;
for (let i = 0; i < 20; i++) await one();
gc();
const before = oldUsed();
for (let i = 0; i < ${REQUESTS}; i++) await one();
gc({ type: 'minor' });
gc({ type: 'minor' });
console.log(JSON.stringify({ grown: oldUsed() - before }));
`;

const STREAMS = `
import http2 from 'node:http2';
import v8 from 'node:v8';
const { releaseOnClose } = await import(${JSON.stringify(STREAM)});
const srv = http2.createServer();
srv.on('stream', (s) => {
  releaseOnClose(s);
  const held = new Array(${CAPTURED}).fill(1.5);
  s.on('close', () => held.length);
  s.respond({ ':status': 200 });
  s.end('ok');
});
await new Promise((r) => srv.listen(0, '127.0.0.1', r));
const c = http2.connect('http://127.0.0.1:' + srv.address().port);
const one = () => new Promise((resolve) => {
  const r = c.request({ ':path': '/' }, { endStream: true });
  releaseOnClose(r);
  const held = new Array(${CAPTURED}).fill(1.5);
  r.on('data', () => held.length);
  r.on('close', () => setImmediate(resolve));
});
${MEASURE}c.close();
srv.close();
`;

/**
 * A closed socket is pinned the same way, and a WeakMap keyed by it holds its value as long:
 * what the proxy keeps per connection must be deleted when the connection closes. Here the
 * signal connectionClosed() keeps per socket carries a 32 KiB array.
 */
const CONNECTIONS = `
import net from 'node:net';
import v8 from 'node:v8';
const { connectionClosed } = await import(${JSON.stringify(EXCHANGE)});
const srv = net.createServer((s) => {
  connectionClosed(s).held = new Array(${CAPTURED}).fill(1.5);
  s.on('error', () => {});
  s.end();
});
await new Promise((r) => srv.listen(0, '127.0.0.1', r));
const one = () => new Promise((resolve) => {
  const c = net.connect(srv.address().port, '127.0.0.1');
  c.on('error', () => {});
  c.resume();
  c.on('close', () => setTimeout(resolve, 1));
});
${MEASURE}srv.close();
`;

/**
 * node's ClientHttp2Session.request() binds its connect callback, which holds the request's
 * options and its stream, with AsyncResource.prototype.bind, whose per-call accessor V8 keeps
 * in old space (stream.ts shareBindAccessors). What the options carry shows whether the
 * callback is still held after young GCs, whatever V8 has optimized by then. PATCH: whether
 * the child calls shareBindAccessors(), as the proxy does on start.
 */
const REQUEST_OPTIONS = (patch: boolean): string => `
import http2 from 'node:http2';
import v8 from 'node:v8';
const { shareBindAccessors } = await import(${JSON.stringify(STREAM)});
${patch ? 'shareBindAccessors();' : ''}
const srv = http2.createServer();
srv.on('stream', (s) => { s.respond({ ':status': 200 }); s.end('ok'); });
await new Promise((r) => srv.listen(0, '127.0.0.1', r));
const c = http2.connect('http://127.0.0.1:' + srv.address().port);
const one = () => new Promise((resolve) => {
  const r = c.request({ ':path': '/' }, { endStream: true, held: new Array(${CAPTURED}).fill(1.5) });
  r.resume();
  r.on('close', () => setImmediate(resolve));
});
${MEASURE}c.close();
srv.close();
`;

/**
 * An HTTP/2 request's signal is its own (egress.ts makes one per stream): cancelOn() must not
 * file it in a WeakMap, whose values V8's young-generation GC keeps until the next full GC,
 * each one copied by every young GC until then. Streams here are plain emitters, so that
 * node:http2's own pinning does not hide what cancelOn() leaves: what survives one young GC
 * after SIGNALS requests, bytes.
 */
const SIGNALS = 5000;
const CANCEL_ON = `
import { EventEmitter } from 'node:events';
import v8 from 'node:v8';
const { cancelOn } = await import(${JSON.stringify(EXCHANGE)});
const one = () => {
  const stream = new EventEmitter();
  stream.destroy = () => {};
  cancelOn(new AbortController().signal, stream);
  stream.emit('close');
};
for (let i = 0; i < ${SIGNALS}; i++) one();
gc();
for (let i = 0; i < ${SIGNALS}; i++) one();
gc({ type: 'minor' });
console.log(JSON.stringify({ survived: v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_used_size }));
`;

/**
 * V8's allocation-site pretenuring, which NodeProxy.start turns off for the process (gc.ts):
 * a site whose objects all lived through young GCs, then optimized code that makes 20,000
 * more with no GC in between. Pretenured, they are born in old space (2.2 MB of it);
 * otherwise in the young generation. Only optimized code pretenures, so the child has V8
 * optimize the loop (--allow-natives-syntax) rather than wait for it to; and V8 decides only
 * at young GCs of a young generation at its largest, so the child's is fixed at 4 MB.
 * START: whether the child starts a proxy first.
 */
const PRETENURING = (start: boolean): string => `
import v8 from 'node:v8';
const { NodeProxy } = await import(${JSON.stringify(PROXY)});
const { pino } = await import('pino');
const { Registry } = await import('prom-client');
const proxy = ${start} ? await NodeProxy.start({
  node: 'n1', outbound: { host: '127.0.81.1', port: 0 }, inbound: { host: '127.0.81.2', port: 0 }, upstreamBindIp: '127.0.81.3',
  originalDestination: () => undefined, onFlow: () => {}, registry: new Registry(), logger: pino({ level: 'silent' }),
}) : undefined;
const oldUsed = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space').space_used_size;
function make(i) { return { i, a: [i, i + 1, i + 2] }; }
function fill(n, into) { for (let i = 0; i < n; i++) into.push(make(i)); }
%PrepareFunctionForOptimization(make);
%PrepareFunctionForOptimization(fill);
const kept = [];
for (let round = 0; round < 6; round++) {
  fill(20000, kept);
  gc({ type: 'minor' });
  gc({ type: 'minor' });
}
kept.length = 0;
gc();
%OptimizeFunctionOnNextCall(fill);
fill(1, []);
const before = oldUsed();
fill(20000, []);
console.log(JSON.stringify({ grown: oldUsed() - before }));
await proxy?.close();
`;

async function oldSpaceGrowth(script: string, flags: string[] = []): Promise<number> {
  const { stdout } = await run(process.execPath, ['--expose-gc', ...flags, '--input-type=module', '-e', script], { timeout: 60_000 });
  return (JSON.parse(stdout.trim()) as { grown: number }).grown;
}

describe('proxy: finished HTTP/2 streams and closed connections, and the young-generation GC', () => {
  it('what the listeners of a closed stream captured is freed by a young GC, not promoted to old space', async () => {
    const captured = 2 * REQUESTS * CAPTURED * 8; // a client and a server stream per request
    const released = await oldSpaceGrowth(STREAMS);
    assert.ok(released < captured / 4, `old space grew ${released} bytes over ${REQUESTS} requests (${captured} bytes captured by their listeners)`);
  });

  it('an HTTP/2 request the proxy sent is freed by a young GC, not kept by node\'s bind of its connect callback', async () => {
    const captured = REQUESTS * CAPTURED * 8;
    const [patched, unpatched] = await Promise.all([oldSpaceGrowth(REQUEST_OPTIONS(true)), oldSpaceGrowth(REQUEST_OPTIONS(false))]);
    assert.ok(patched < captured / 4, `old space grew ${patched} bytes over ${REQUESTS} requests (${captured} bytes in their options)`);
    // the measurement itself: without the workaround node keeps them all
    assert.ok(unpatched > captured / 2, `unpatched, old space grew only ${unpatched} bytes: the test no longer sees node's bind keep requests`);
  });

  it('what cancelOn() kept for a request\'s own signal goes with a young GC', async () => {
    // a WeakMap entry per signal left 80-97 KB here (16-19 bytes a request); without one, 0.6 KB
    const { stdout } = await run(process.execPath, ['--expose-gc', '--input-type=module', '-e', CANCEL_ON], { timeout: 60_000 });
    const { survived } = JSON.parse(stdout.trim()) as { survived: number };
    assert.ok(survived < SIGNALS * 4, `${survived} bytes survived a young GC after ${SIGNALS} requests`);
  });

  it('a started proxy has V8 allocate every object young, even where all a site made lived long', async () => {
    const natives = ['--allow-natives-syntax', '--min-semi-space-size=4', '--max-semi-space-size=4'];
    const [started, plain] = await Promise.all([oldSpaceGrowth(PRETENURING(true), natives), oldSpaceGrowth(PRETENURING(false), natives)]);
    assert.ok(started < 200_000, `with a proxy started, 20,000 objects of a long-lived site grew old space by ${started} bytes`);
    // the measurement itself: V8's default pretenures that site
    assert.ok(plain > 1_000_000, `without a proxy, old space grew only ${plain} bytes: the test no longer sees V8 pretenure`);
  });

  it('what the proxy kept for a connection goes with a young GC once the connection has closed', async () => {
    const captured = REQUESTS * CAPTURED * 8;
    const grown = await oldSpaceGrowth(CONNECTIONS);
    assert.ok(grown < captured / 4, `old space grew ${grown} bytes over ${REQUESTS} connections (${captured} bytes kept for them)`);
  });
});

describe('proxy: the AsyncResource bind shareBindAccessors() puts in', () => {
  shareBindAccessors();
  shareBindAccessors(); // a second proxy in the same thread

  it('runs the function in the resource\'s async scope, with the caller\'s this and arguments, or the bound this', () => {
    const r = new AsyncResource('test');
    const seen: unknown[] = [];
    const fn = function (this: unknown, a: number, b: number): number { seen.push(executionAsyncId(), this, a, b); return a + b; };
    const holder = { call: r.bind(fn) };
    assert.equal(holder.call(1, 2), 3);
    assert.deepEqual(seen, [r.asyncId(), holder, 1, 2]);
    seen.length = 0;
    const self = { me: true };
    const bindThis = r.bind as unknown as (f: typeof fn, thisArg: unknown) => typeof fn; // node has thisArg; @types/node leaves it out
    assert.equal(bindThis.call(r, fn, self)(3, 4), 7);
    assert.deepEqual(seen, [r.asyncId(), self, 3, 4]);
    assert.equal(typeof AsyncResource.bind((x: number) => x + 1)(1), 'number');
  });

  it('keeps node\'s length and its deprecated asyncResource, which warns once (DEP0172) and can be set', async () => {
    const r = new AsyncResource('test');
    const bound = r.bind((a: number, b: number, c: number) => a + b + c) as ((...a: number[]) => number) & { asyncResource: AsyncResource };
    assert.equal(bound.length, 3);
    assert.ok(Object.keys(bound).includes('asyncResource'), 'enumerable, as node defines it');
    const warnings: Array<Error & { code?: string }> = [];
    const onWarning = (w: Error): void => { warnings.push(w); };
    process.on('warning', onWarning);
    assert.equal(bound.asyncResource, r);
    const other = new AsyncResource('other');
    bound.asyncResource = other;
    assert.equal(bound.asyncResource, other);
    await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
    process.off('warning', onWarning);
    assert.deepEqual(warnings.map((w) => [w.name, w.code]), [['DeprecationWarning', 'DEP0172']]);
    assert.equal(r.bind(() => 1).length, 0);
  });

  it('refuses what is not a function with node\'s own error', () => {
    assert.throws(() => new AsyncResource('test').bind(42 as unknown as () => void), { code: 'ERR_INVALID_ARG_TYPE' });
  });
});
