// bench/helpers/openloop.c through load.ts's openLoop(): requests due at a fixed rate and
// timed from when they were due. The bench's evenly spaced p99 is only as right as this: a
// stalled answer must show in the latency of every request that came due behind it, which
// h2load --rps does not count.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildOpenLoop, openLoop } from '../../bench/helpers/load.ts';

// dist/test/unit → the source next to bench/helpers/load.ts
const SOURCE = fileURLToPath(new URL('../../../bench/helpers/openloop.c', import.meta.url));

describe('openloop: HTTP/1.1 at a fixed rate, timed from when each request was due', () => {
  let dir: string;
  let bin: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nodal-openloop-'));
    bin = await buildOpenLoop(SOURCE, dir);
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
  const latencies = (file: string): number[] => readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => Number(l.split('\t')[0]) / 1000);

  it('counts the wait behind a stalled answer in every request due during it', async () => {
    // one connection, 1,000/s for 0.4 s; the 100th answer comes 60 ms late
    const { server, port } = await serve((n, res) => {
      const end = (): void => { res.end('ok\n'); };
      if (n === 100) setTimeout(end, 60);
      else end();
    });
    try {
      const logFile = join(dir, 'stall.log');
      const r = await openLoop(bin, '0', { host: '127.0.0.1', port, path: '/', rate: 1000, seconds: 0.4, connections: 1, logFile });
      assert.equal(r.requests, 400, 'every request answered');
      assert.equal(r.errors, '');
      const slow = latencies(logFile).filter((ms) => ms >= 10);
      // the stalled one and the ~50 due behind it on the one connection: h2load would time
      // only the stalled one as slow
      assert.ok(slow.length >= 40, `requests due behind the stall timed from when they were due: ${slow.length} over 10 ms`);
      assert.ok(Math.max(...slow) >= 55, `the stalled request itself: ${Math.max(...slow)} ms`);
      assert.ok(r.p99 >= 10, `p99 ${r.p99} ms shows the stall`);
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
