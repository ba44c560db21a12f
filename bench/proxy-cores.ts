// Proxy on every core (issue 4 item 8): the agent's ProxyWorkers with 1 and with 2 worker
// threads sharing the outbound listener (SO_REUSEPORT), HTTP/1.1 keep-alive through the
// same-node path to an nginx backend, the same load for each, in one run. What it shows:
// the requests/s each setting reaches and how many cores the proxy process used for it.
// This machine has as many cores as workers at most, shared with the load tool and the
// backend, so the scaling figure is a floor, not the proxy's limit.
// Run: node dist/bench/proxy-cores.js [--seconds S]
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cpuSeconds, h2load, type LoadResult } from './helpers/load.ts';
import { nginxConf } from './helpers/nginx.ts';
import { machine, numberArg, table, writeSection } from './report.ts';

const here = dirname(fileURLToPath(import.meta.url));
const SECONDS = numberArg('--seconds', 8);
const WARMUP_SECONDS = 8;
const CLIENTS = 64;
// 127.89.0.0/16: away from the unit tests' and the proxy bench's addresses
const BACKEND = { ip: '127.89.31.1', port: 18180 };
const OUTBOUND = { host: '127.89.11.1', port: 15101 };
const WORKER_COUNTS = [1, 2];

/** the proxy process: ProxyWorkers with `n` workers; prints one line when listening */
function startProxy(n: number, lookupModule: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [join(here, 'helpers', 'workers-proxy.js'), String(n), lookupModule,
    JSON.stringify({ outbound: OUTBOUND, backend: BACKEND })], { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`workers proxy exited with ${code}`)));
    createInterface({ input: child.stdout! }).once('line', () => resolve(child));
  });
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'nodal-bench-cores-'));
  const procs: ChildProcess[] = [];
  try {
    const conf = nginxConf(dir, 'backend', `  server { listen ${BACKEND.ip}:${BACKEND.port}; location / { return 200 "hello world\\n"; } }`);
    const backend = spawn('nginx', ['-e', 'stderr', '-c', conf], { stdio: 'inherit' });
    procs.push(backend);
    await new Promise((r) => setTimeout(r, 500));
    const lookup = join(dir, 'lookup.mjs');
    writeFileSync(lookup, `export function originalDestination() {
  return { origIp: ${JSON.stringify(BACKEND.ip)}, origPort: ${BACKEND.port}, endpointId: 7, srcIdentity: 256, dstIdentity: 0 };
}\n`);
    const rows: string[][] = [];
    let single: LoadResult | undefined;
    for (const n of WORKER_COUNTS) {
      const proxy = await startProxy(n, pathToFileURL(lookup).href);
      procs.push(proxy);
      const url = `http://${OUTBOUND.host}:${OUTBOUND.port}/`;
      const all = Array.from({ length: availableParallelism() }, (_, i) => i).join(',');
      await h2load(all, { clients: CLIENTS, streams: 1, seconds: WARMUP_SECONDS, h1: true, url, logFile: join(dir, 'warm.log') });
      const cpu0 = cpuSeconds(proxy.pid!);
      const r = await h2load(all, { clients: CLIENTS, streams: 1, seconds: SECONDS, h1: true, url, logFile: join(dir, `run-${n}.log`) });
      const cores = (cpuSeconds(proxy.pid!) - cpu0) / SECONDS;
      single ??= r;
      rows.push([String(n), Math.round(r.rps).toLocaleString('en-US'), `${(r.rps / single.rps).toFixed(2)}×`, cores.toFixed(2),
        `${r.p50.toFixed(2)} / ${r.p99.toFixed(2)}`, r.errors || 'none']);
      proxy.stdin!.end();
      await once(proxy, 'exit');
      procs.pop();
    }
    const md = `## The proxy on every core (bench/proxy-cores.ts)

${machine()}; load average at the start ${loadavg()[0]!.toFixed(2)}. The agent's \`ProxyWorkers\`
(worker threads sharing the outbound listener with SO_REUSEPORT) in its own process,
HTTP/1.1 keep-alive, same-node path, nginx backend; h2load --h1 with ${CLIENTS} connections for
${SECONDS} s after an ${WARMUP_SECONDS} s warm-up, not pinned: the load tool, the backend and the
proxy share this machine's ${availableParallelism()} cores, so the 2-worker figure is a floor.
"cores used" is the proxy process's CPU time over the run's wall time.

${table(['workers', 'requests/s', 'vs 1 worker', 'cores used', 'p50 / p99 ms', 'errors'], rows)}
`;
    writeSection('proxy-cores', md);
    process.stdout.write(`${md}\n`);
  } finally {
    // SIGTERM: nginx's master stops its workers (a SIGKILLed master leaves them running,
    // holding this process's stdout open)
    await Promise.all(procs.map(async (p) => {
      if (p.exitCode !== null || p.signalCode !== null) return;
      const exited = once(p, 'exit');
      p.kill('SIGTERM');
      await exited;
    }));
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
