// What a finished HTTP/2 stream or a closed connection keeps alive through V8's
// young-generation GC. node's Writable assigns a function literal to a property per stream,
// which V8 allocates in old space; from there the stream and everything its listeners
// capture survive each young GC and are promoted, until a full GC (the GC pauses of the
// cross-node path in docs/benchmarks.md). releaseOnClose() drops the listeners once the
// stream has closed, so what a request's listeners held goes with the next young GC; what
// the proxy keeps per connection in WeakMaps keyed by the socket is deleted when it closes.
// Measured in a child process with --expose-gc: old space after young GCs only, with a
// 32 KiB array captured per request.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
const STREAM = new URL('../../agent/proxy/stream.js', import.meta.url).href;
const EXCHANGE = new URL('../../agent/proxy/exchange.js', import.meta.url).href;
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

async function oldSpaceGrowth(script: string): Promise<number> {
  const { stdout } = await run(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { timeout: 60_000 });
  return (JSON.parse(stdout.trim()) as { grown: number }).grown;
}

describe('proxy: finished HTTP/2 streams and closed connections, and the young-generation GC', () => {
  it('what the listeners of a closed stream captured is freed by a young GC, not promoted to old space', async () => {
    const captured = 2 * REQUESTS * CAPTURED * 8; // a client and a server stream per request
    const released = await oldSpaceGrowth(STREAMS);
    assert.ok(released < captured / 4, `old space grew ${released} bytes over ${REQUESTS} requests (${captured} bytes captured by their listeners)`);
  });

  it('what the proxy kept for a connection goes with a young GC once the connection has closed', async () => {
    const captured = REQUESTS * CAPTURED * 8;
    const grown = await oldSpaceGrowth(CONNECTIONS);
    assert.ok(grown < captured / 4, `old space grew ${grown} bytes over ${REQUESTS} connections (${captured} bytes kept for them)`);
  });
});
