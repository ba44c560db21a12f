// Mesh benchmarks (issue: end to end), on the real sandbox: HTTP/1.1 keep-alive latency
// and requests/s at fixed concurrency, measured by wrk inside a pod, for
//   1. direct pod-to-pod across nodes (no proxy; the WireGuard tunnel still carries it),
//   2. nodal, same node (client pod → node proxy → server pod),
//   3. nodal, cross-node (proxy → HTTP/2 CONNECT over WireGuard → peer proxy → pod),
//   4. an nginx reverse proxy pod on the client's node in front of the same server —
// plus the agents' memory (RSS) idle and under that load. The server is nginx in every
// row, so the differences are the path. Needs root and no other sandbox running.
// Run: flock /tmp/nodal-sandbox.lock node dist/bench/mesh.js [--seconds S] [--connections C]
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sandbox } from '../cli/dev/index.ts';
import { nginxConf } from './helpers/nginx.ts';
import { machine, numberArg, table, writeSection } from './report.ts';

const SECONDS = numberArg('--seconds', 8);
const CONNECTIONS = numberArg('--connections', 16);
const VIP = '10.96.1.10';
const PLAIN_SERVER = '10.244.2.50';
const NGINX_PROXY = '10.244.1.50';

function manifests(dir: string): string {
  const server = nginxConf(dir, 'server', '  server { listen 8080; location / { return 200 "ok\\n"; } }');
  const proxy = nginxConf(dir, 'proxy', `  upstream backend { server ${PLAIN_SERVER}:8080; keepalive 64; }
  server { listen 8080; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } }`);
  const pod = (ns: string, name: string, node: string, command: string[], ip?: string): string => `---
apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: ${ns}
  labels: {app: ${name}}
${ip ? `  annotations: {sandbox.nodal.io/ip: ${ip}}\n` : ''}spec:
  nodeName: ${node}
  containers:
    - name: main
      command: ${JSON.stringify(command)}
`;
  const idle = ['sleep', 'infinity'];
  return `apiVersion: v1
kind: Namespace
metadata: {name: bench-mesh, labels: {nodal.io/mesh: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: bench-plain}
${pod('bench-mesh', 'server', 'node-2', ['/usr/sbin/nginx', '-c', server])}
${pod('bench-mesh', 'client-local', 'node-2', idle)}
${pod('bench-mesh', 'client-remote', 'node-1', idle)}
${pod('bench-plain', 'server', 'node-2', ['/usr/sbin/nginx', '-c', server], PLAIN_SERVER)}
${pod('bench-plain', 'nginx-proxy', 'node-1', ['/usr/sbin/nginx', '-c', proxy], NGINX_PROXY)}
${pod('bench-plain', 'client', 'node-1', idle)}
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: bench-mesh}
spec:
  clusterIP: ${VIP}
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}]
`;
}

interface WrkResult { rps: number; p50: number; p99: number; errors: string }

/** wrk's latency figures in milliseconds */
function ms(text: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text);
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
}

async function wrk(sb: Sandbox, pod: string, url: string, seconds: number): Promise<WrkResult> {
  const r = await sb.exec(pod, ['wrk', '-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency', url], { stdio: 'pipe' });
  if (r.code !== 0) throw new Error(`wrk from ${pod} to ${url} failed (${r.code}): ${r.stderr}${r.stdout}`);
  const out = r.stdout;
  const line = (re: RegExp): string => re.exec(out)?.[1] ?? '';
  const errs = [/Socket errors: (.*)/, /Non-2xx or 3xx responses: (\d+)/].map((re) => re.exec(out)?.[0]).filter(Boolean).join('; ');
  return { rps: Number(line(/Requests\/sec:\s+([\d.]+)/)), p50: ms(line(/\s50%\s+(\S+)/)), p99: ms(line(/\s99%\s+(\S+)/)), errors: errs };
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'nodal-bench-'));
  const sb = new Sandbox({ root, mesh: true });
  try {
    await sb.up({ nodes: 2, examples: false });
    await sb.applyYaml(manifests(root));
    const agents = sb.state()!.nodes.map((n) => ({ node: n.name, pid: n.agent!.pid }));
    // let enrollment settle and every pod start listening
    await new Promise((r) => setTimeout(r, 3000));
    const idle = agents.map((a) => rssMiB(a.pid));

    const paths: Array<[string, string, string]> = [
      ['direct pod-to-pod, cross-node (WireGuard, no proxy)', 'bench-plain/client', `http://${PLAIN_SERVER}:8080/`],
      ['nodal, same node', 'bench-mesh/client-local', `http://${VIP}/`],
      ['nodal, cross-node (proxy → WireGuard → proxy)', 'bench-mesh/client-remote', `http://${VIP}/`],
      ['nginx reverse proxy on the client\'s node, cross-node', 'bench-plain/client', `http://${NGINX_PROXY}:8080/`],
    ];
    const rows: string[][] = [];
    const peak = agents.map(() => 0);
    for (const [name, pod, url] of paths) {
      await wrk(sb, pod, url, 1); // warm-up: connections, tunnel session, caches
      const sampler = setInterval(() => agents.forEach((a, i) => { peak[i] = Math.max(peak[i]!, rssMiB(a.pid)); }), 250);
      const r = await wrk(sb, pod, url, SECONDS);
      clearInterval(sampler);
      rows.push([name, r.rps.toFixed(0), r.p50.toFixed(2), r.p99.toFixed(2), r.errors || '—']);
      process.stderr.write(`${name}: ${r.rps.toFixed(0)} req/s, p50 ${r.p50} ms, p99 ${r.p99} ms ${r.errors}\n`);
    }
    const mem = agents.map((a, i) => [a.node, idle[i]!.toFixed(1), peak[i]!.toFixed(1)]);

    writeSection('mesh', `## Mesh: request latency and throughput (sandbox)

Machine: ${machine()}. Two sandbox nodes (network namespaces) on this machine, WireGuard
between them (\`wireguard-go\`, userspace). The server is nginx returning 3 bytes in every
row; load is \`wrk -t1 -c${CONNECTIONS} -d${SECONDS}s\` (HTTP/1.1 keep-alive) run inside a
pod. Everything — wrk, nginx, both agents, both wireguard-go — shares the same 2 cores,
so the figures compare paths, not absolute capacity.

${table(['path', 'requests/s', 'p50 ms', 'p99 ms', 'errors'], rows)}

Agent memory (RSS, MiB), idle after start-up with the pods enrolled, and the peak sampled
every 250 ms during the runs above. The peak includes the flow store filling: every
request is a flow, and the ring keeps the last 65,536 (\`--flow-capacity\`).

${table(['agent', 'idle MiB', 'under load MiB'], mem)}
`);
  } finally {
    await sb.down();
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
