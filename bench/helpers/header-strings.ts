// One measurement for bench/h2-headers.ts: what a request's received header values leave in
// V8's old space, which only a full GC frees. A server and a keep-alive client in this one
// process (node:http2 over h2c, or node:http), loopback; every request carries `extra`
// header values of its own (x-h0..., 16 bytes each) besides what the protocol sends; the
// answer is 2 bytes with no extra headers, so the slope over `extra` is the server's
// reading of request header values.
//
// Run with a young generation larger than the measured requests allocate
// (--max-semi-space-size=256 --min-semi-space-size=256) and --expose-gc: after a warm-up and
// two full GCs, `requests` requests run with no GC at all (checked), so old space grows only
// by what is allocated there directly, never by promotion. Then `gc-requests` more, and one
// forced full GC, timed: the pause that frees what they left.
//
// argv: <h2|http1> <extra> [requests] [gc-requests]. Prints one JSON line (HeaderStringsResult); exits 1
// with a message if a GC ran while old space was measured.
import { Agent, createServer as createH1Server, request as h1Request, type IncomingMessage } from 'node:http';
import { connect as h2Connect, createServer as createH2Server } from 'node:http2';
import type { AddressInfo, Server } from 'node:net';
import { performance } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';
import { Registry } from 'prom-client';
import { GcWatch } from '../../agent/proxy/index.ts';

export interface HeaderStringsResult {
  protocol: 'h2' | 'http1';
  extra: number;
  requests: number;
  /** old + large-object space growth per request, no GC having run */
  oldBytesPerRequest: number;
  /** a forced full GC after `gcRequests` more requests */
  fullGcMs: number;
  gcRequests: number;
}

const [protocolArg, extraArg, requestsArg, gcRequestsArg] = process.argv.slice(2);
if (protocolArg !== 'h2' && protocolArg !== 'http1') throw new Error('usage: header-strings.js <h2|http1> <extra> [requests] [gc-requests]');
const protocol: HeaderStringsResult['protocol'] = protocolArg;
const EXTRA = Number(extraArg ?? 0);
const REQUESTS = Number(requestsArg ?? 2000);
const GC_REQUESTS = Number(gcRequestsArg ?? 20_000);
const WARMUP = 2000;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

const headers: Record<string, string> = {};
for (let i = 0; i < EXTRA; i++) headers[`x-h${i}`] = `value-${String(i).padStart(3, '0')}-abcdefg`;

/** this thread's GC pauses, as the proxy's workers watch theirs */
const watch = new GcWatch(new Registry(), 'header-strings');
const pausesSinceLast = (): number => Object.values(watch.take().count).reduce((a, b) => a + b, 0);

function oldSpaceBytes(): number {
  let n = 0;
  for (const s of getHeapSpaceStatistics()) if (s.space_name === 'old_space' || s.space_name === 'large_object_space') n += s.space_used_size;
  return n;
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** one request after another on one connection; resolves when its answer has ended */
async function client(): Promise<{ one: () => Promise<void>; close: () => void }> {
  if (protocol === 'h2') {
    const server = createH2Server((_req, res) => { res.end('ok'); });
    const session = h2Connect(`http://127.0.0.1:${await listen(server)}`);
    const one = (): Promise<void> => new Promise((resolve, reject) => {
      const s = session.request({ ':path': '/p', ...headers }, { endStream: true });
      s.on('error', reject);
      s.resume();
      s.on('end', resolve);
    });
    return { one, close: () => { session.close(); server.close(); } };
  }
  const server = createH1Server((_req, res) => { res.end('ok'); });
  const port = await listen(server);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const one = (): Promise<void> => new Promise((resolve, reject) => {
    const req = h1Request({ host: '127.0.0.1', port, path: '/p', agent, headers }, (res: IncomingMessage) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
    req.end();
  });
  return { one, close: () => { agent.destroy(); server.close(); } };
}

async function main(): Promise<void> {
  const c = await client();
  for (let i = 0; i < WARMUP; i++) await c.one();
  gc!();
  gc!();
  await new Promise((r) => setTimeout(r, 100)); // the observer's entries for those two come in
  pausesSinceLast(); // the warm-up's and the two forced ones are not the measurement's
  const before = oldSpaceBytes();
  for (let i = 0; i < REQUESTS; i++) await c.one();
  const after = oldSpaceBytes();
  await new Promise((r) => setImmediate(r));
  const gcs = pausesSinceLast();
  if (gcs !== 0) {
    process.stderr.write(`header-strings: ${gcs} GC(s) ran while old space was measured; give it a larger young generation\n`);
    process.exit(1);
  }
  for (let i = 0; i < GC_REQUESTS; i++) await c.one();
  const t0 = performance.now();
  gc!();
  const fullGcMs = performance.now() - t0;
  c.close();
  watch.stop();
  const result: HeaderStringsResult = {
    protocol, extra: EXTRA, requests: REQUESTS, oldBytesPerRequest: Math.round((after - before) / REQUESTS), fullGcMs: Number(fullGcMs.toFixed(2)), gcRequests: GC_REQUESTS,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

await main();
