// Load tools and process readings for bench/proxy.ts: wrk, h2load and openloop (open-loop
// load at a fixed rate: HTTP/1.1 from openloop.c, HTTP/2 and gRPC from openloop-h2.c) runs
// pinned to a CPU with their outputs parsed, the bench's C helpers built,
// per-request latency percentiles from their logs, a bounded client that opens and holds
// idle keep-alive connections, and CPU time and RSS of a process from /proc.
import { execFile } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { percentile } from '../report.ts';

const run = promisify(execFile);
/** USER_HZ: /proc/<pid>/stat counts CPU time in these (100 on every Linux this runs on) */
const TICKS_PER_SECOND = 100;

export interface LoadResult {
  rps: number;
  requests: number;
  /** milliseconds; NaN when the tool gave none */
  p50: number;
  p99: number;
  /** what went wrong, '' when every answer was a 2xx */
  errors: string;
}

/** wrk's latency figures in milliseconds */
function ms(text: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text);
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
}

/** HTTP/1.1 keep-alive at full speed: one wrk thread, `connections` connections; `script`: a wrk Lua script (a POST, say) */
export async function wrk(cpu: string, url: string, connections: number, seconds: number, script?: string): Promise<LoadResult> {
  const args = ['-c', cpu, 'wrk', '-t1', `-c${connections}`, `-d${seconds}s`, '--latency', ...(script ? ['-s', script] : []), url];
  const { stdout: out } = await run('taskset', args, { timeout: (seconds + 20) * 1000 });
  const line = (re: RegExp): string => re.exec(out)?.[1] ?? '';
  const errors = [/Socket errors: (.*)/, /Non-2xx or 3xx responses: (\d+)/].map((re) => re.exec(out)?.[0]).filter(Boolean).join('; ');
  const rps = Number(line(/Requests\/sec:\s+([\d.]+)/));
  const requests = Number(line(/(\d+) requests in/));
  if (!(rps > 0)) throw new Error(`wrk ${url}: no requests/s in its output:\n${out}`);
  return { rps, requests, p50: ms(line(/\s50%\s+(\S+)/)), p99: ms(line(/\s99%\s+(\S+)/)), errors };
}

export interface H2loadSpec {
  url: string;
  clients: number;
  /** concurrent streams per client (1 for HTTP/1.1) */
  streams: number;
  seconds: number;
  h1?: boolean;
  /** requests/s per client; absent: as fast as it goes */
  rps?: number;
  /** a gRPC unary call: POST of this file with gRPC's headers */
  grpcBody?: string;
  /** per-request log, read back for the percentiles */
  logFile: string;
}

/**
 * One of the bench's C helpers (openloop.c, openloop-h2.c, grpc-backend.c), built into `dir`
 * from its source (the HTTP/2 ones include h2conn.h, next to it), linked with `libs` (the
 * HTTP/2 ones: nghttp2): cc must be on PATH, and
 * libnghttp2's headers for those (Debian's libnghttp2-dev). Returns the binary's path.
 */
export async function buildC(source: string, dir: string, libs: readonly string[] = []): Promise<string> {
  const bin = join(dir, basename(source, '.c'));
  try {
    await run('cc', ['-O2', '-o', bin, source, ...libs.map((l) => `-l${l}`)]);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    const hint = /nghttp2\.h/.test(stderr) ? ' (libnghttp2\'s headers are missing: apt-get install libnghttp2-dev)' : '';
    throw new Error(`cannot build ${basename(source)}${hint}: ${stderr.trim() || (err as Error).message}`, { cause: err });
  }
  return bin;
}

export interface OpenLoopSpec {
  host: string;
  port: number;
  path: string;
  /** requests/s, evenly spaced */
  rate: number;
  seconds: number;
  /**
   * keep-alive connections. HTTP/1.1: a request due while all are busy waits for one.
   * HTTP/2: each request goes out when due, as a stream on the next connection in turn
   */
  connections: number;
  /** per-request log, read back for the percentiles */
  logFile: string;
  /** openloop-h2 only: a gRPC unary call, POST of this file with gRPC's headers (else GET) */
  grpcBody?: string;
}

/**
 * Requests due at spec.rate, evenly spaced, latency from when each was due: unlike h2load
 * --rps, a request's wait behind a slow one is counted. `bin` is openloop (HTTP/1.1 GETs)
 * or openloop-h2 (h2c GETs, or gRPC calls with spec.grpcBody); both print and log alike.
 */
export async function openLoop(bin: string, cpu: string, spec: OpenLoopSpec): Promise<LoadResult> {
  const { stdout } = await run('taskset', ['-c', cpu, bin, spec.host, String(spec.port), spec.path, String(spec.rate),
    String(spec.seconds), String(spec.connections), spec.logFile, ...(spec.grpcBody ? [spec.grpcBody] : [])], { timeout: (spec.seconds + 20) * 1000 });
  const r = JSON.parse(stdout) as { due: number; done: number; errors: number };
  // columns: µs from when the request was due to the end of its answer, status, when it was due
  const times = readFileSync(spec.logFile, 'utf8').split('\n').filter(Boolean).map((l) => Number(l.split('\t')[0]) / 1000).sort((a, b) => a - b);
  const unanswered = r.due - r.done - r.errors;
  const errors = [r.errors && `${r.errors} failed or non-2xx${spec.grpcBody ? ' or not grpc-status 0' : ''}`, unanswered && `${unanswered} unanswered`].filter(Boolean).join('; ');
  return { rps: r.done / spec.seconds, requests: r.done, p50: percentile(times, 50), p99: percentile(times, 99), errors };
}

/** h2load (HTTP/2, gRPC, or --h1), percentiles from its per-request log */
export async function h2load(cpu: string, spec: H2loadSpec): Promise<LoadResult> {
  const args = ['-c', cpu, 'h2load', `-c${spec.clients}`, `-m${spec.streams}`, `-D${spec.seconds}`, `--log-file=${spec.logFile}`];
  if (spec.h1) args.push('--h1');
  if (spec.rps !== undefined) args.push(`--rps=${spec.rps}`);
  if (spec.grpcBody) args.push('-H', 'content-type: application/grpc', '-H', 'te: trailers', '-d', spec.grpcBody);
  args.push(spec.url);
  rmSync(spec.logFile, { force: true }); // h2load appends to it
  const { stdout: out } = await run('taskset', args, { timeout: (spec.seconds + 20) * 1000 });
  const rps = Number(/finished in [\d.]+s, ([\d.]+) req\/s/.exec(out)?.[1]);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  if (!req || !codes || !(rps > 0)) throw new Error(`h2load ${spec.url}: unexpected output:\n${out}`);
  const [done, failed, errored, timeout] = [req[3], req[5], req[6], req[7]].map(Number) as [number, number, number, number];
  const non2xx = Number(codes[2]) + Number(codes[3]) + Number(codes[4]);
  const errors = [failed && `${failed} failed`, errored && `${errored} errored`, timeout && `${timeout} timed out`, non2xx && `${non2xx} non-2xx`]
    .filter(Boolean).join('; ');
  // columns: start µs since the epoch, status, µs until the end of the response
  const times = readFileSync(spec.logFile, 'utf8').split('\n').filter(Boolean).map((l) => Number(l.split('\t')[2]) / 1000).sort((a, b) => a - b);
  return { rps, requests: done, p50: percentile(times, 50), p99: percentile(times, 99), errors };
}

/** user + system CPU seconds of a process, all its threads */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // the command name may hold spaces: fields are counted after its closing parenthesis
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS_PER_SECOND;
}

export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** how long opening the held connections may take, all of them */
const HOLD_OPEN_MS = 30_000;
/** connections being opened at once: enough to be quick, few enough not to look like a flood */
const HOLD_CONCURRENCY = 50;

/**
 * Open `count` HTTP/1.1 connections to host:port, one GET answered on each (so the proxy
 * has parsed a request and set up whatever a live connection keeps), then leave them idle
 * and open. The caller destroys them.
 */
export async function holdConnections(host: string, port: number, count: number): Promise<Socket[]> {
  const held: Socket[] = [];
  const deadline = Date.now() + HOLD_OPEN_MS;
  const one = (): Promise<void> => new Promise((resolve, reject) => {
    const s = connect({ host, port, noDelay: true });
    held.push(s);
    const timer = setTimeout(() => reject(new Error(`hold ${host}:${port}: no answer within ${HOLD_OPEN_MS} ms`)), Math.max(0, deadline - Date.now()));
    s.once('error', (err) => { clearTimeout(timer); reject(err); });
    s.once('connect', () => s.write(`GET / HTTP/1.1\r\nhost: ${host}\r\n\r\n`));
    // the small fixed body comes in the same segment as the head
    s.once('data', (d: Buffer) => {
      clearTimeout(timer);
      if (d.toString('latin1').startsWith('HTTP/1.1 200')) resolve();
      else reject(new Error(`hold ${host}:${port}: ${d.toString('latin1').split('\r\n')[0]}`));
    });
  });
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      await one();
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(HOLD_CONCURRENCY, count) }, worker));
  } catch (err) {
    for (const s of held) s.destroy();
    throw err;
  }
  for (const s of held) s.on('error', () => {});
  return held;
}
