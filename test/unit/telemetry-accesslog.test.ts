// The access log as an operator meets it: off unless asked for, one JSON line per request
// with the configured fields, flushed on close, and a stalled destination costing dropped
// (and counted) lines instead of memory or a blocked proxy.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants as fsc, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { parseAgentArgs } from '../../agent/config.ts';
import { AccessLog, ALL_ACCESS_LOG_FIELDS, type AccessLogEntry } from '../../agent/telemetry/index.ts';
import { TempDirs } from '../fixtures/control/helpers.ts';

const tmp = new TempDirs();
/** every log a test opens is closed even when the test fails: a stalled one retries forever */
const opened: AccessLog[] = [];
async function open(opts: Parameters<typeof AccessLog.open>[0]): Promise<AccessLog> {
  const log = await AccessLog.open(opts);
  opened.push(log);
  return log;
}
after(async () => {
  await Promise.all(opened.map((l) => l.close()));
  tmp.cleanup();
});

const required = ['--node', 'n', '--control', 'c:1', '--state-dir', '/tmp/x', '--cgroup', '/sys/fs/cgroup', '--proxy-ip', '10.0.0.1', '--tunnel-ip', '10.99.0.1', '--underlay-ip', '192.168.0.1'];

function entry(i: number, over: Partial<AccessLogEntry> = {}): AccessLogEntry {
  return {
    startMs: Date.UTC(2026, 0, 2, 3, 4, 5, 678),
    direction: 'inbound',
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    spanId: '00f067aa0ba902b7',
    src: { identity: 256, workload: 'shop/web-0' },
    dst: { identity: 257, workload: 'shop/cart-1' },
    method: 'POST',
    authority: 'cart.shop.svc:8080',
    path: `/cart/${i}?token=secret`,
    protocol: 'HTTP/1.1',
    status: 201,
    route: 'shop/cart#0',
    upstream: '10.0.1.7:8080',
    bytesIn: 12,
    bytesOut: 345,
    durationMs: 1.23456,
    retries: 1,
    verdict: 'FORWARDED',
    policy: 'shop/allow-web',
    ...over,
  };
}

describe('access log: agent flags', () => {
  it('is off by default', () => {
    const cfg = parseAgentArgs(required);
    assert.equal(cfg.accessLog, undefined);
  });

  it('--access-log takes a path or stdout, with every field unless --access-log-fields narrows them', () => {
    assert.deepEqual(parseAgentArgs([...required, '--access-log', 'stdout']).accessLog, { destination: 'stdout', fields: ALL_ACCESS_LOG_FIELDS });
    const cfg = parseAgentArgs([...required, '--access-log', '/var/log/nodal/access.log', '--access-log-fields', 'time,trace_id, status ,path']);
    assert.deepEqual(cfg.accessLog, { destination: '/var/log/nodal/access.log', fields: ['time', 'trace_id', 'status', 'path'] });
  });

  it('rejects an unknown field, naming it and the known ones, and fields without a destination', () => {
    assert.throws(() => parseAgentArgs([...required, '--access-log', 'stdout', '--access-log-fields', 'time,user_agent']), /unknown field\(s\) user_agent; known: time, direction, trace_id/);
    assert.throws(() => parseAgentArgs([...required, '--access-log-fields', 'time']), /--access-log-fields needs --access-log/);
  });

  it('fails start-up loudly when the file cannot be opened', async () => {
    const dir = tmp.make('nodal-accesslog-');
    // a regular file where a parent folder should be: mkdir and open both fail
    const blocker = join(dir, 'file');
    execFileSync('touch', [blocker]);
    await assert.rejects(AccessLog.open({ destination: join(blocker, 'access.log') }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'NODAL_ERR_ACCESS_LOG_OPEN');
      assert.match(err.message, /access log .*access\.log: (ENOTDIR|EEXIST)/);
      return true;
    });
  });
});

describe('access log: lines', () => {
  it('writes one JSON line per request with every field, the query cut off, and flushes on close', async () => {
    const dir = tmp.make('nodal-accesslog-');
    const file = join(dir, 'logs', 'access.log');
    const registry = new Registry();
    const log = await open({ destination: file, registry });
    log.write(entry(1));
    log.write(entry(2, { status: 0, verdict: 'ERROR', upstream: '', grpcStatus: 14, protocol: 'HTTP/2' }));
    log.write(entry(3, { status: 403, verdict: 'DROPPED', policy: 'shop/deny-all' }));
    await log.close();

    const lines = readFileSync(file, 'utf8').split('\n');
    assert.equal(lines.pop(), '', 'the file ends with a newline');
    assert.equal(lines.length, 3);
    const [first, second, third] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(first, {
      time: '2026-01-02T03:04:05.678Z', direction: 'inbound',
      trace_id: '4bf92f3577b34da6a3ce929d0e0e4736', span_id: '00f067aa0ba902b7',
      src_identity: 256, src_workload: 'shop/web-0', dst_identity: 257, dst_workload: 'shop/cart-1',
      method: 'POST', authority: 'cart.shop.svc:8080', path: '/cart/1', protocol: 'HTTP/1.1',
      status: 201, route: 'shop/cart#0', upstream: '10.0.1.7:8080', bytes_in: 12, bytes_out: 345,
      duration_ms: 1.235, retries: 1, verdict: 'FORWARDED', policy: 'shop/allow-web',
    });
    assert.equal(second!.grpc_status, 14);
    assert.equal(second!.verdict, 'ERROR');
    assert.equal(third!.status, 403);
    assert.equal(third!.policy, 'shop/deny-all');
    assert.ok(!readFileSync(file, 'utf8').includes('secret'), 'query strings never reach the log');

    const text = await registry.metrics();
    assert.match(text, /^nodal_access_log_lines_total 3$/m);
    assert.match(text, /^nodal_access_log_dropped_lines_total 0$/m);
    // after close, lines are ignored rather than thrown into the data path
    log.write(entry(4));
  });

  it('writes only the configured fields, in the canonical order', async () => {
    const file = join(tmp.make('nodal-accesslog-'), 'access.log');
    const log = await open({ destination: file, fields: ['status', 'trace_id', 'time'] });
    log.write(entry(1));
    await log.close();
    assert.equal(readFileSync(file, 'utf8'), '{"time":"2026-01-02T03:04:05.678Z","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","status":201}\n');
  });

  it('appends to an existing file (a restart keeps the earlier lines)', async () => {
    const file = join(tmp.make('nodal-accesslog-'), 'access.log');
    for (const i of [1, 2]) {
      const log = await open({ destination: file, fields: ['path'] });
      log.write(entry(i));
      await log.close();
    }
    assert.equal(readFileSync(file, 'utf8'), '{"path":"/cart/1"}\n{"path":"/cart/2"}\n');
  });

  it('drops and counts lines when the destination stalls, instead of growing memory', async () => {
    const dir = tmp.make('nodal-accesslog-');
    const fifo = join(dir, 'stalled');
    execFileSync('mkfifo', [fifo]);
    // read-write so the open does not wait for a reader, non-blocking so a full pipe answers EAGAIN: nobody ever reads
    const fd = openSync(fifo, fsc.O_RDWR | fsc.O_NONBLOCK);
    const registry = new Registry();
    const maxBufferBytes = 16 * 1024;
    const log = await open({ destination: fd, registry, maxBufferBytes, closeTimeoutMs: 50 });
    const total = 2000;
    // in small batches across event-loop turns, like requests: the pipe (64 KiB) fills, then the buffer
    for (let i = 0; i < total; i++) {
      log.write(entry(i));
      if (i % 20 === 19) await tick();
    }
    assert.ok(log.dropped > 0, 'lines were dropped');
    const text = await registry.metrics();
    const accepted = Number(/^nodal_access_log_lines_total (\d+)$/m.exec(text)?.[1]);
    const dropped = Number(/^nodal_access_log_dropped_lines_total (\d+)$/m.exec(text)?.[1]);
    assert.equal(dropped, log.dropped);
    assert.equal(accepted + dropped, total, 'every line is either accepted or counted as dropped');
    // what accepted lines fit is at most the pipe plus the buffer: memory stayed bounded
    assert.ok(accepted * 300 < 64 * 1024 + maxBufferBytes + 64 * 1024, `accepted ${accepted}`);

    // what reached the pipe is whole JSON lines
    const reader = openSync(fifo, fsc.O_RDONLY | fsc.O_NONBLOCK);
    const buf = Buffer.alloc(256 * 1024);
    let got = '';
    for (;;) {
      try {
        const n = readSync(reader, buf, 0, buf.length, null);
        if (n <= 0) break;
        got += buf.toString('utf8', 0, n);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break;
        throw err;
      }
    }
    // the last line may be cut where the pipe was full (the rest is still buffered)
    const lines = got.split('\n').slice(0, -1);
    assert.ok(lines.length > 0);
    for (const l of lines) assert.equal((JSON.parse(l) as { trace_id: string }).trace_id, '4bf92f3577b34da6a3ce929d0e0e4736');
    // a destination that never drains does not hold close() past its timeout
    await log.close();
    closeSync(reader);
  });
});
