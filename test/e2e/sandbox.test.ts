// The sandbox itself, without the mesh (mesh: false is NODAL_DEV_NO_MESH=1): up builds the
// underlay, nodes and cgroups; pods run in their netns and cgroup; exec passes exit codes;
// delete removes a pod entirely; down leaves nothing, also after a crash. Needs root.
// netns, cgroup and pin names are global: this test refuses to run while a sandbox is up.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import {
  Sandbox, bpffsMount, cgroup2Mount, cgroupOf, isSandboxNetns, type PodRecord,
} from '../../cli/dev/index.ts';

const root = mkdtempSync('/tmp/nodal-sandbox-e2e-');
const sb = new Sandbox({ root, mesh: false });

function ipIn(netns: string, args: string[]): string {
  return execFileSync('ip', ['-n', netns, ...args], { encoding: 'utf8' });
}

function netnsInode(pid: number): string {
  return readlinkSync(`/proc/${pid}/ns/net`);
}

function namedNetnsInode(name: string): string {
  return `net:[${statSync(`/run/netns/${name}`).ino}]`;
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`timed out waiting for ${what}`);
}

// an HTTP server that reports what the pod sees: its name, its addresses, its caller
const SERVER = `
const http = require('node:http'); const os = require('node:os');
http.createServer((req, res) => res.end(JSON.stringify({
  pod: process.env.POD_NAME, podIp: process.env.POD_IP, greeting: process.env.GREETING,
  addrs: (os.networkInterfaces().eth0 || []).filter((a) => a.family === 'IPv4').map((a) => a.address),
  remote: req.socket.remoteAddress,
}))).listen(8080, '0.0.0.0');
`;
// one GET, printing the body or the error code
const FETCH = `fetch(process.argv[1], { signal: AbortSignal.timeout(2000) }).then((r) => r.text()).then((t) => console.log(t), (e) => { console.log(JSON.stringify({ error: String(e.cause?.code ?? e.name) })); process.exit(3); });`;

function pod(name: string, node: string, extra = ''): string {
  return `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: demo
  labels: {app: ${name}${extra}}
spec:
  nodeName: ${node}
  containers:
    - name: main
      command: ["$(NODE)", "-e", ${JSON.stringify(SERVER)}]
      env: [{name: GREETING, value: "hello from $(POD_NAME)"}]
`;
}

const NAMESPACE = 'apiVersion: v1\nkind: Namespace\nmetadata: {name: demo, labels: {nodal.io/mesh: enabled}}\n';

async function get(from: string, url: string): Promise<Record<string, unknown>> {
  const r = await sb.exec(from, [process.execPath, '-e', FETCH, url], { stdio: 'pipe' });
  assert.equal(r.code, 0, `GET ${url} from ${from} failed (${r.code}): ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

function record(ref: string): PodRecord {
  return sb.pod(ref);
}

const cg2 = cgroup2Mount();
let ours = false;

before(async () => {
  assert.equal(process.getuid?.(), 0, 'the sandbox e2e test needs root (network namespaces, cgroups)');
  assert.ok(cg2, 'the sandbox e2e test needs a cgroup v2 mount');
  const leftovers = sb.leftovers();
  assert.deepEqual(leftovers, [], `a sandbox (or its leftovers) is on this machine and its names are global; run \`nodal dev down\` before this test:\n  ${leftovers.join('\n  ')}`);
  ours = true;
  await sb.up({ nodes: 2 });
});

after(async () => {
  // never tear down a sandbox this test did not build (down removes by global names)
  if (ours) await sb.down();
  rmSync(root, { recursive: true, force: true });
});

describe('sandbox up (no mesh)', () => {
  it('builds the underlay and one netns per node, joined by veths on the bridge', () => {
    const br = ipIn('nodal-underlay', ['-4', '-o', 'addr', 'show', 'dev', 'nodal-br0']);
    assert.match(br, /inet 10\.10\.0\.1\/24/);
    for (const i of [1, 2]) {
      const ns = `nodal-node-${i}`;
      assert.match(ipIn('nodal-underlay', ['-o', 'link', 'show', `vn-node-${i}`]), /master nodal-br0 .*state UP/);
      assert.match(ipIn(ns, ['-4', '-o', 'addr', 'show', 'dev', 'eth0']), new RegExp(`inet 10\\.10\\.0\\.1${i}/24`));
      assert.match(ipIn(ns, ['-4', '-o', 'addr', 'show', 'dev', 'nodal-pods']), new RegExp(`inet 10\\.244\\.${i}\\.1/24`));
      const fwd = execFileSync('nsenter', [`--net=/run/netns/${ns}`, '--', 'cat', '/proc/sys/net/ipv4/ip_forward'], { encoding: 'utf8' });
      assert.equal(fwd.trim(), '1', `${ns}: ip_forward`);
      assert.ok(existsSync(join(cg2!, 'nodal-sandbox', `node-${i}`)), `cgroup of node-${i}`);
    }
  });

  it('puts nothing in the machine\'s own namespace', () => {
    const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
    assert.doesNotMatch(links, /nodal-br0|nodal-pods|vn-node-|: vp[0-9a-f]{8}/);
    const addrs = execFileSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8' });
    assert.doesNotMatch(addrs, /10\.10\.0\.|10\.244\./);
  });

  it('writes the Node objects the control plane reads', () => {
    const node = parse(readFileSync(join(sb.layout.configDir, 'Node.node-2.yaml'), 'utf8')) as Record<string, any>;
    assert.equal(node.kind, 'Node');
    assert.equal(node.spec.podCIDR, '10.244.2.0/24');
    assert.deepEqual(node.status.addresses[0], { type: 'InternalIP', address: '10.10.0.12' });
    assert.equal(node.metadata.annotations['nodal.io/tunnel-ip'], '10.99.0.2');
    assert.equal(node.metadata.annotations['nodal.io/proxy-ip'], '10.244.2.1');
  });

  it('says a sandbox is already up instead of building a second one', async () => {
    const r = await sb.up({});
    assert.equal(r.created, false);
    await assert.rejects(() => new Sandbox({ root: join(root, 'other'), mesh: false }).up({}),
      (e: Error & { code?: string }) => e.code === 'NODAL_ERR_SANDBOX_EXISTS' && /netns nodal-underlay/.test(e.message));
  });
});

describe('sandbox pods', () => {
  it('runs a pod\'s process inside its netns and its cgroup, with its address', async () => {
    const results = await sb.applyYaml(`${NAMESPACE}---\n${pod('server', 'node-2')}---\n${pod('peer', 'node-2')}`, 'pods.yaml');
    assert.deepEqual(results.map((r) => `${r.kind}/${r.name} ${r.outcome}`), ['Namespace/demo created', 'Pod/server created', 'Pod/peer created']);
    const server = record('demo/server');
    assert.equal(server.node, 'node-2');
    assert.equal(server.ip, '10.244.2.2');
    const pid = server.containers[0]!.process!.pid;
    assert.equal(cgroupOf(pid), `/nodal-sandbox/node-2/pod-${server.uid}`);
    assert.equal(netnsInode(pid), namedNetnsInode(server.netns));
    assert.match(ipIn(server.netns, ['route', 'show', 'default']), /default via 10\.244\.2\.1 dev eth0/);

    const seen = await eventually('the server to listen', async () => (await sb.exec('demo/peer', [process.execPath, '-e', FETCH, 'http://10.244.2.2:8080/'], { stdio: 'pipe' })).code === 0)
      .then(() => get('demo/peer', 'http://10.244.2.2:8080/'));
    assert.deepEqual(seen, { pod: 'server', podIp: '10.244.2.2', greeting: 'hello from server', addrs: ['10.244.2.2'], remote: record('demo/peer').ip });

    const obj = parse(readFileSync(join(sb.layout.configDir, 'Pod.demo.server.yaml'), 'utf8')) as Record<string, any>;
    assert.equal(obj.metadata.uid, server.uid);
    assert.equal(obj.spec.nodeName, 'node-2');
    assert.deepEqual([obj.status.phase, obj.status.podIP, obj.status.hostIP], ['Running', '10.244.2.2', '10.10.0.12']);
  });

  it('exec runs in the pod\'s netns and cgroup and passes the exit code through', async () => {
    const server = record('demo/server');
    const r = await sb.exec('demo/server', ['sh', '-c', 'cat /proc/self/cgroup; ip -4 -o addr show dev eth0; exit 42'], { stdio: 'pipe' });
    assert.equal(r.code, 42);
    assert.match(r.stdout, new RegExp(`^0::/nodal-sandbox/node-2/pod-${server.uid}$`, 'm'));
    assert.match(r.stdout, /inet 10\.244\.2\.2\/24/);
    assert.equal((await sb.exec('demo/server', ['sh', '-c', 'kill -TERM $$'], { stdio: 'pipe' })).code, 128 + 15);
    await assert.rejects(() => sb.exec('demo/nope', ['true']), (e: Error & { code?: string }) => e.code === 'NODAL_ERR_SANDBOX_NOT_FOUND');
  });

  it('places two pods on different nodes, each reaching its node (the proxy\'s address)', async () => {
    await sb.applyYaml(pod('client', 'node-1'));
    const client = record('demo/client');
    assert.equal(client.node, 'node-1');
    assert.equal(client.ip, '10.244.1.2');
    assert.notEqual(client.netns, record('demo/server').netns);
    // a listener on the node's pod bridge address stands in for the node proxy
    const listener = execFileSync('sh', ['-c', `nsenter --net=/run/netns/nodal-node-1 -- "$0" -e "$1" >/dev/null 2>&1 & echo $!`, process.execPath,
      `require('node:http').createServer((q, s) => s.end(JSON.stringify({ node: 'node-1', remote: q.socket.remoteAddress }))).listen(15099, '10.244.1.1'); setTimeout(() => process.exit(0), 10000);`], { encoding: 'utf8' });
    try {
      await eventually('the node listener', async () => (await sb.exec('demo/client', [process.execPath, '-e', FETCH, 'http://10.244.1.1:15099/'], { stdio: 'pipe' })).code === 0);
      assert.deepEqual(await get('demo/client', 'http://10.244.1.1:15099/'), { node: 'node-1', remote: '10.244.1.2' });
    } finally {
      try { process.kill(Number(listener.trim()), 'SIGKILL'); } catch { /* exited */ }
    }
  });

  it('re-apply: new labels keep the process, a new command restarts it in the same pod', async () => {
    const before = record('demo/server');
    const pid = before.containers[0]!.process!.pid;
    const [relabel] = await sb.applyYaml(pod('server', 'node-2', ', tier: web'));
    assert.equal(relabel!.outcome, 'configured');
    assert.equal(record('demo/server').containers[0]!.process!.pid, pid);
    assert.match(readFileSync(join(sb.layout.configDir, 'Pod.demo.server.yaml'), 'utf8'), /tier: web/);

    const [restart] = await sb.applyYaml(pod('server', 'node-2', ', tier: web').replace('hello from', 'hi from'));
    assert.equal(restart!.outcome, 'restarted');
    const after = record('demo/server');
    assert.notEqual(after.containers[0]!.process!.pid, pid);
    assert.deepEqual([after.uid, after.ip, after.netns], [before.uid, before.ip, before.netns]);
    await eventually('the old process to be gone', () => !alive(pid));
    await eventually('the restarted server', async () => (await sb.exec('demo/peer', [process.execPath, '-e', FETCH, 'http://10.244.2.2:8080/'], { stdio: 'pipe' })).code === 0);
    assert.equal((await get('demo/peer', 'http://10.244.2.2:8080/')).greeting, 'hi from server');

    const [same] = await sb.applyYaml(pod('server', 'node-2', ', tier: web').replace('hello from', 'hi from'));
    assert.equal(same!.outcome, 'unchanged');
    await assert.rejects(() => sb.applyYaml(pod('server', 'node-1')), /spec\.nodeName: a pod cannot move \(runs on node-2\)/);
  });

  it('gives a Service a stable ClusterIP and refuses one already taken', async () => {
    const svc = (name: string, ip = ''): string => `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: demo}\nspec: {${ip ? `clusterIP: ${ip}, ` : ''}selector: {app: server}, ports: [{port: 80, targetPort: 8080}]}\n`;
    const [fixed] = await sb.applyYaml(svc('fixed', '10.96.0.20'));
    assert.equal(fixed!.detail, '10.96.0.20');
    const [auto] = await sb.applyYaml(svc('auto'));
    await sb.deleteYaml(svc('auto'));
    const [again] = await sb.applyYaml(svc('auto'));
    assert.equal(again!.detail, auto!.detail);
    await assert.rejects(() => sb.applyYaml(svc('other', '10.96.0.20')), /10\.96\.0\.20 is already the address of Service demo\/fixed/);
  });

  it('delete removes a pod entirely: process, netns, veth, cgroup, file; its address is reused', async () => {
    const peer = record('demo/peer');
    const pid = peer.containers[0]!.process!.pid;
    const [r] = await sb.deleteYaml(pod('peer', 'node-2'));
    assert.equal(r!.outcome, 'deleted');
    assert.ok(!alive(pid), 'process gone');
    assert.ok(!existsSync(`/run/netns/${peer.netns}`), 'netns gone');
    assert.doesNotMatch(ipIn('nodal-node-2', ['-o', 'link', 'show']), new RegExp(peer.hostLink));
    assert.ok(!existsSync(peer.cgroup), 'cgroup gone');
    assert.ok(!existsSync(join(sb.layout.configDir, 'Pod.demo.peer.yaml')), 'config file gone');
    assert.throws(() => record('demo/peer'), /no pod demo\/peer/);
    const [again] = await sb.deleteYaml(pod('peer', 'node-2'));
    assert.equal(again!.outcome, 'not found');
    await sb.applyYaml(pod('peer2', 'node-2'));
    assert.equal(record('demo/peer2').ip, peer.ip);
  });

  it('refuses a pod in a namespace that does not exist, and changes nothing', async () => {
    const text = pod('lost', 'node-1').replace('namespace: demo', 'namespace: nowhere');
    await assert.rejects(() => sb.applyYaml(text, 'lost.yaml'), /lost\.yaml:1 \(Pod\/nowhere\/lost\): metadata\.namespace: namespace "nowhere" does not exist/);
    assert.ok(!sb.state()!.pods.some((p) => p.name === 'lost'));
  });
});

describe('sandbox down', () => {
  it('leaves nothing: no netns, cgroup, pins, processes or state', async () => {
    const state = sb.state()!;
    const pids = state.pods.flatMap((p) => p.containers.map((c) => c.process!.pid));
    // an exec'd command that outlives its CLI must go too
    const cg = state.pods[0]!.cgroup;
    const stray = execFileSync('sh', ['-c', `echo $$ > ${cg}/cgroup.procs; sleep 300 >/dev/null 2>&1 & echo $!; sleep 0.1`], { encoding: 'utf8' });
    pids.push(Number(stray.trim()));
    assert.match(readFileSync(join(cg, 'cgroup.procs'), 'utf8'), new RegExp(`^${stray.trim()}$`, 'm'));
    // pins an agent left behind (the agent is not running here: down must not rely on it)
    const bpffs = bpffsMount()!;
    mkdirSync(join(bpffs, 'nodal', 'node-1', 'maps'), { recursive: true });

    const r = await sb.down();
    assert.ok(r.removed.some((x) => x === 'netns nodal-underlay'));
    assertNothingLeft(pids, bpffs);
    assert.deepEqual((await sb.down()).removed, [], 'a second down has nothing to do');
  });

  it('cleans up after a crash that lost sandbox.json, by name', async () => {
    await sb.up({ nodes: 1 });
    await sb.applyYaml(`${NAMESPACE}---\n${pod('orphan', 'node-1')}`);
    const pid = record('demo/orphan').containers[0]!.process!.pid;
    unlinkSync(sb.layout.stateFile);
    await sb.down();
    assertNothingLeft([pid], bpffsMount()!);
  });
});

function assertNothingLeft(pids: number[], bpffs: string): void {
  const netns = existsSync('/run/netns') ? execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }) : '';
  assert.deepEqual(netns.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n && isSandboxNetns(n)), [], 'sandbox netns left');
  assert.ok(!existsSync(join(cg2!, 'nodal-sandbox')), 'cgroup nodal-sandbox left');
  const pins = existsSync(join(bpffs, 'nodal')) ? execFileSync('ls', [join(bpffs, 'nodal')], { encoding: 'utf8' }) : '';
  assert.doesNotMatch(pins, /node-\d/, 'BPF pins left');
  for (const pid of pids) assert.ok(!alive(pid), `process ${pid} left`);
  assert.ok(!existsSync(sb.layout.stateDir), 'state dir left');
  assert.ok(!existsSync(sb.layout.runDir), 'run dir left');
}
