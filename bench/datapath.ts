// Kernel datapath benchmarks (issue: kernel datapath):
//  1. connect() latency seen by an application for: an unenrolled socket (direct), an
//     enrolled socket redirected by cgroup/connect4 to the node proxy, and the same
//     redirect done by an iptables REDIRECT rule in the node namespace — each with 10,
//     1,000 and 100,000 policy entries installed (BPF map entries for nodal, rules in
//     the traversed chain for iptables, as iptables-based enforcement would have).
//  2. policy map update throughput from TypeScript through the addon.
// Run as root: node dist/bench/datapath.js [--samples N]
import { createServer, type Server } from 'node:net';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { Datapath, type PolicyEntry } from '../agent/datapath/index.ts';
import { policyKey, policyValue } from '../agent/datapath/codec.ts';
import { listenTcpInNetns, openPinnedMap } from '../native/index.ts';
import { Lab, type Pod } from '../test/helpers/lab.ts';
import { bpfObjectDir, repoRoot } from '../test/helpers/paths.ts';
import { machine, percentile, table, writeSection } from './report.ts';

const SAMPLES = Number(process.argv.includes('--samples') ? process.argv[process.argv.indexOf('--samples') + 1] : 3000);
const SIZES = [10, 1_000, 100_000];
const VIP = '10.96.0.10';
const PROXY_PORT = 15001;
const DIRECT_PORT = 9000;
const TIMER = join(repoRoot, 'bench/helpers/connect_timer.py');

interface Stats { p50: number; p99: number; max: number; mean: number; n: number; errors: Record<string, number> }

// async: the listeners live in this process and must keep accepting while the timer runs
async function timeConnects(pod: Pod, host: string, port: number): Promise<Stats> {
  const script = `echo $$ > ${pod.cgroup}/cgroup.procs && exec ip netns exec ${pod.netns} /usr/bin/python3 ${TIMER} ${host} ${port} ${SAMPLES}`;
  const r = await promisify(execFile)('sh', ['-c', script], { encoding: 'utf8', timeout: 300_000, maxBuffer: 64 << 20 });
  const out = JSON.parse(r.stdout) as { samples_ns: number[]; errors: Record<string, number> };
  // the first tenth warms caches and the ARP entry; it is not measured
  const s = out.samples_ns.slice(Math.floor(out.samples_ns.length / 10)).sort((a, b) => a - b);
  const mean = s.reduce((x, y) => x + y, 0) / Math.max(1, s.length);
  return { p50: percentile(s, 50), p99: percentile(s, 99), max: s.at(-1) ?? NaN, mean, n: s.length, errors: out.errors };
}

function policyEntries(n: number, local: number): PolicyEntry[] {
  // entries for other identities and ports: the lookup for our connection misses all of
  // them and falls to the wildcard allow, the longest path through the map
  const out: PolicyEntry[] = [];
  for (let i = 0; i < n - 1; i++) {
    out.push({ direction: 'EGRESS', localIdentity: local + 1 + (i % 50), peerIdentity: 1000 + i, port: 1 + (i % 60000), action: 'ALLOW', policyId: 1 });
  }
  out.push({ direction: 'EGRESS', localIdentity: local, peerIdentity: 0, port: 0, action: 'ALLOW', policyId: 1 });
  return out;
}

function iptablesRules(lab: Lab, n: number): void {
  // n-1 non-matching rules traversed before the REDIRECT, loaded in one transaction
  const lines = ['*nat', ':NODAL_BENCH - [0:0]', '-A PREROUTING -j NODAL_BENCH'];
  for (let i = 0; i < n - 1; i++) {
    lines.push(`-A NODAL_BENCH -s 10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32 -p tcp -j RETURN`);
  }
  lines.push(`-A NODAL_BENCH -p tcp -d ${VIP}/32 --dport 80 -j REDIRECT --to-ports ${PROXY_PORT}`, 'COMMIT', '');
  flushNat(lab);
  const r = spawnSync('ip', ['netns', 'exec', lab.nodeNetns, 'iptables-restore'], { input: lines.join('\n'), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`iptables-restore: ${r.stderr}`);
}

function flushNat(lab: Lab): void {
  lab.nsExec(lab.nodeNetns, ['iptables', '-t', 'nat', '-F']);
  lab.nsExec(lab.nodeNetns, ['iptables', '-t', 'nat', '-X']);
}

async function listen(lab: Lab, port: number): Promise<Server> {
  const fd = listenTcpInNetns(lab.netnsPath(lab.nodeNetns), '0.0.0.0', port, 4096);
  const srv = createServer((s) => { s.on('error', () => {}); s.destroy(); });
  await new Promise<void>((r) => srv.listen({ fd }, r));
  return srv;
}

const fmt = (ns: number): string => (ns / 1000).toFixed(1);

async function main(): Promise<void> {
  const lab = new Lab(90).create();
  const servers: Server[] = [];
  let dp: Datapath | undefined;
  try {
    const enrolled = lab.addPod('enrolled');
    const plain = lab.addPod('plain');
    servers.push(await listen(lab, PROXY_PORT), await listen(lab, DIRECT_PORT));
    dp = await Datapath.open({ node: `bench-${lab.id}`, cgroupPath: lab.nodeCgroup, objectDir: bpfObjectDir, proxy: { ipv4: lab.gateway, port: PROXY_PORT } });

    const rows: string[][] = [];
    for (const n of SIZES) {
      dp.reconcile({
        endpoints: [{ cgroupId: enrolled.cgroupId, endpointId: 1, identity: 300, enrolled: true }],
        ipcache: [{ cidr: `${lab.subnet}.0/24`, identity: 301 }],
        services: [{ vip: VIP, port: 80, serviceId: 1, identity: 301 }],
        policy: policyEntries(n, 300),
      });
      // the iptables rules exist only while their own row is measured: every packet
      // entering the node namespace walks them, which would slow the other rows too
      flushNat(lab);
      const direct = await timeConnects(plain, lab.gateway, DIRECT_PORT);
      const bpf = await timeConnects(enrolled, VIP, 80);
      iptablesRules(lab, n);
      const ipt = await timeConnects(plain, VIP, 80);
      flushNat(lab);
      for (const [name, s] of [['direct (unenrolled)', direct], ['nodal cgroup/connect4 redirect', bpf], ['iptables REDIRECT', ipt]] as const) {
        const errs = Object.keys(s.errors).length ? ` (errors ${JSON.stringify(s.errors)})` : '';
        rows.push([n.toLocaleString('en-US'), name, fmt(s.p50), fmt(s.p99), fmt(s.max), fmt(s.mean), `${s.n}${errs}`]);
      }
      process.stderr.write(`entries=${n}: direct p50 ${fmt(direct.p50)}us, bpf ${fmt(bpf.p50)}us, iptables ${fmt(ipt.p50)}us\n`);
    }

    // map update throughput from TypeScript through the addon
    const map = openPinnedMap(join(dp.pinRoot, 'maps', 'nodal_policy'));
    const N = 100_000;
    const keys = Buffer.alloc(N * policyKey.size);
    const vals = Buffer.alloc(N * policyValue.size);
    for (let i = 0; i < N; i++) {
      policyKey.encode({ local_identity: 5000, peer_identity: 10_000 + i, port: 80, proto: 6, direction: 1 }, keys, i * policyKey.size);
      policyValue.encode({ action: 1, rule: 0, policy_id: 2 }, vals, i * policyValue.size);
    }
    let t = process.hrtime.bigint();
    for (let i = 0; i < N; i++) {
      map.update(keys.subarray(i * policyKey.size, (i + 1) * policyKey.size), vals.subarray(i * policyValue.size, (i + 1) * policyValue.size));
    }
    const single = N / (Number(process.hrtime.bigint() - t) / 1e9);
    t = process.hrtime.bigint();
    map.updateBatch(keys, vals, N);
    const batch = N / (Number(process.hrtime.bigint() - t) / 1e9);
    map.close();
    process.stderr.write(`map updates: ${Math.round(single)}/s single, ${Math.round(batch)}/s batch\n`);

    writeSection('datapath', `## Kernel datapath

Machine: ${machine()}. ${SAMPLES} blocking \`connect()\` calls per row from a pod (network
namespace + cgroup) to a listener in its node's namespace, timed by
\`bench/helpers/connect_timer.py\` (first 10% discarded as warm-up). "direct" connects to
the listener's own address; the two redirect rows connect to a service VIP that is
rewritten to the node proxy's listener, by nodal's \`cgroup/connect4\` program (policy
lookup, original-destination record, \`sockops\` re-key) or by an \`iptables -t nat
REDIRECT\` rule in the node namespace behind N-1 non-matching rules. Times in µs.

${table(['policy entries', 'path', 'p50 µs', 'p99 µs', 'max µs', 'mean µs', 'samples'], rows)}

A mean far above the p99 comes from a handful of connects that waited for a SYN
retransmission (about 1 s) on the listener's side; the max column shows them. Read the
percentiles: the redirect costs nodal a microsecond or two at any table size, while the
iptables chain grows with every rule in front of the redirect.

Policy map updates from TypeScript through the addon (100,000 entries, hash map):
**${Math.round(single).toLocaleString('en-US')} entries/s** one \`update()\` call each,
**${Math.round(batch).toLocaleString('en-US')} entries/s** with \`updateBatch()\`.
`);
  } finally {
    for (const s of servers) s.close();
    await dp?.destroy();
    await lab.destroy();
  }
}

await main();
