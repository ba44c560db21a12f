// The access log: one JSON line per L7 request, written through pino's asynchronous
// destination (sonic-boom). Off unless the agent is started with --access-log. A line is a
// flat object serialised on the event loop (JSON.stringify of a flat object is what pino's
// own serialiser does for it, without a level, pid or msg that an access record has no use
// for); the write is asynchronous, so a slow disk or a stalled stdout reader never blocks a
// request. The buffer in front of the file is bounded: past it lines are dropped and
// counted, never kept in memory.

import { mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino } from 'pino';
import { Counter, type Registry } from 'prom-client';

type Destination = ReturnType<typeof pino.destination>;

/** one request as the proxy knows it when it has answered */
export interface AccessLogEntry {
  /** when the request arrived, unix epoch ms; default: when write() is called */
  startMs?: number;
  direction: 'outbound' | 'inbound';
  traceId: string;
  spanId?: string;
  src: { identity: number; /** `namespace/name` of the pod */ workload?: string };
  dst: { identity: number; workload?: string };
  method: string;
  /** :authority or Host */
  authority: string;
  /** request target; the query is cut off before it is written (it may carry secrets) */
  path: string;
  /** HTTP/1.1, HTTP/2, gRPC */
  protocol: string;
  /** HTTP status sent to the client, 0 when none was */
  status: number;
  grpcStatus?: number | undefined;
  /** `namespace/name#rule` of the matched route, '' when none */
  route: string;
  /** `ip:port` of the endpoint that answered, '' when none did */
  upstream: string;
  /**
   * Request body bytes from the client, response body bytes to it, as far as they are known
   * when the line is written: the length of a body that is absent, whole or declared
   * (Content-Length); left out for a body that streams without a declared length
   */
  bytesIn: number | undefined;
  bytesOut: number | undefined;
  durationMs: number;
  /** retries made (0 when the first attempt answered) */
  retries: number;
  verdict: 'FORWARDED' | 'DROPPED' | 'ERROR';
  /** `namespace/name` of the policy that decided, '' when none did */
  policy: string;
}

type Getter = (e: AccessLogEntry) => string | number | undefined;

/** every field a line may carry, in line order; the name is the JSON key */
export const ACCESS_LOG_FIELDS = {
  time: (e) => new Date(e.startMs ?? Date.now()).toISOString(),
  direction: (e) => e.direction,
  trace_id: (e) => e.traceId,
  span_id: (e) => e.spanId,
  src_identity: (e) => e.src.identity,
  src_workload: (e) => e.src.workload,
  dst_identity: (e) => e.dst.identity,
  dst_workload: (e) => e.dst.workload,
  method: (e) => e.method,
  authority: (e) => e.authority,
  path: (e) => { const q = e.path.indexOf('?'); return q < 0 ? e.path : e.path.slice(0, q); },
  protocol: (e) => e.protocol,
  status: (e) => e.status,
  grpc_status: (e) => e.grpcStatus,
  route: (e) => e.route,
  upstream: (e) => e.upstream,
  bytes_in: (e) => e.bytesIn,
  bytes_out: (e) => e.bytesOut,
  duration_ms: (e) => Math.round(e.durationMs * 1000) / 1000,
  retries: (e) => e.retries,
  verdict: (e) => e.verdict,
  policy: (e) => e.policy,
} satisfies Record<string, Getter>;

export type AccessLogField = keyof typeof ACCESS_LOG_FIELDS;
export const ALL_ACCESS_LOG_FIELDS = Object.keys(ACCESS_LOG_FIELDS) as AccessLogField[];

/**
 * Bytes waiting for the disk before lines are dropped: at ~400 bytes a line, about 10,000
 * requests, a second or more of a busy node's traffic while the disk or reader stalls.
 */
export const DEFAULT_MAX_BUFFER_BYTES = 4 * 1024 * 1024;
/** how long close() waits for the buffer to drain before it gives up on a stuck destination */
const DEFAULT_CLOSE_TIMEOUT_MS = 5000;
/** writes to a pipe up to PIPE_BUF are atomic: the agent's own log lines on stdout never split ours */
const PIPE_BUF = 4096;
/**
 * EAGAIN retries in a row (sonic-boom waits 100 ms between them) before a write is given
 * up: bounds the wait of the synchronous flush pino runs at process exit on a reader that
 * never drains. In normal running the next line starts writing again.
 */
const MAX_EAGAIN_RETRIES = 50;

export interface AccessLogOptions {
  /** `stdout`, a file path (appended to, parent folders created), or an open file descriptor */
  destination: string | number;
  /** fields written, in their canonical order whatever the order given; default all */
  fields?: readonly AccessLogField[];
  maxBufferBytes?: number;
  closeTimeoutMs?: number;
  /** where nodal_access_log_* metrics go */
  registry?: Registry;
}

export class AccessLog {
  private readonly dest: Destination;
  private readonly getters: Array<[string, Getter]>;
  private readonly closeTimeoutMs: number;
  private readonly linesTotal: Counter;
  private readonly droppedTotal: Counter;
  private droppedCount = 0;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(opts: AccessLogOptions) {
    const fields = new Set(opts.fields ?? ALL_ACCESS_LOG_FIELDS);
    this.getters = (Object.entries(ACCESS_LOG_FIELDS) as Array<[string, Getter]>).filter(([k]) => fields.has(k as AccessLogField));
    this.closeTimeoutMs = opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    const stdout = opts.destination === 'stdout' || opts.destination === 1;
    let eagain = 0;
    this.dest = pino.destination({
      dest: stdout ? 1 : typeof opts.destination === 'number' ? opts.destination : openAppend(opts.destination),
      sync: false,
      maxLength: opts.maxBufferBytes ?? DEFAULT_MAX_BUFFER_BYTES,
      retryEAGAIN: () => ++eagain <= MAX_EAGAIN_RETRIES,
      ...(stdout ? { maxWrite: PIPE_BUF } : {}),
    });
    this.dest.on('write', () => { eagain = 0; });
    const registers = opts.registry ? [opts.registry] : [];
    this.linesTotal = new Counter({ name: 'nodal_access_log_lines_total', help: 'access log lines accepted for writing', registers });
    this.droppedTotal = new Counter({
      name: 'nodal_access_log_dropped_lines_total',
      help: 'access log lines dropped because the destination fell behind by more than the buffer limit',
      registers,
    });
    this.dest.once('close', () => { this.closed = true; });
    this.dest.on('drop', () => {
      this.droppedCount++;
      this.droppedTotal.inc();
    });
    // a write error (disk full, reader gone) is counted as drops from here on, never thrown into the data path
    this.dest.on('error', () => {});
  }

  /** open the destination; a path that cannot be opened fails here, loudly, not at the first request */
  static open(opts: AccessLogOptions): Promise<AccessLog> {
    try {
      return Promise.resolve(new AccessLog(opts));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** lines dropped so far (the buffer limit was reached) */
  get dropped(): number { return this.droppedCount; }

  write(e: AccessLogEntry): void {
    if (this.closing) return;
    const line: Record<string, string | number> = {};
    for (const [k, get] of this.getters) {
      const v = get(e);
      if (v !== undefined) line[k] = v;
    }
    if (this.closed) {
      this.droppedCount++;
      this.droppedTotal.inc();
      return;
    }
    const before = this.droppedCount;
    this.dest.write(`${JSON.stringify(line)}\n`);
    // sonic-boom reports a drop synchronously, from inside write()
    if (this.droppedCount === before) this.linesTotal.inc();
  }

  /** write what is buffered and close the file; a destination stuck longer than the close timeout is abandoned */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      const dest = this.dest;
      if (this.closed) return resolve();
      const timer = setTimeout(() => {
        dest.removeListener('close', done);
        try { dest.destroy(); } catch { /* already gone */ }
        resolve();
      }, this.closeTimeoutMs);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      dest.once('close', done);
      dest.end();
    });
    return this.closing;
  }
}

/** the file, opened for appending at start-up (parent folders made), so a bad path fails here */
function openAppend(path: string): number {
  try {
    mkdirSync(dirname(path), { recursive: true });
    return openSync(path, 'a', 0o640);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw Object.assign(new Error(`access log ${path}: ${e.code ?? e.message}`, { cause: err }), { code: 'NODAL_ERR_ACCESS_LOG_OPEN' });
  }
}
