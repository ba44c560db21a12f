// Two nodes joined by nodal's WireGuard over an underlay bridge, all in network namespaces
// of this test: each node runs the agent's WireGuard side (test/helpers/wg-node.ts) in its
// own network and mount namespace with the real wireguard-go, as the sandbox does. Checks
// that pod traffic crosses encrypted, that a removed peer's traffic is dropped instead of
// leaking in plaintext, supervision, key reuse and adoption after restarts, and that the
// private key never reaches a log. Needs root, wireguard-go, wg, tcpdump; fails (never
// skips) naming what is missing.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoRoot } from '../helpers/paths.ts';
import { randomId, run } from '../helpers/sys.ts';

const WG_NODE = join(repoRoot, 'dist/test/helpers/wg-node.js');
const IFACE = 'nodal-wg0';
const PORT = 51871;
const ECHO_PORT = 7070;
const UDP_PORT = 7071;

function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
}

function requireWireGuardLab(): void {
  assert.equal(process.getuid?.(), 0, 'the WireGuard kernel test needs root (network namespaces, tun devices): run it as root');
  const missing = [
    ['wireguard-go', 'apt-get install --no-install-recommends wireguard-go'],
    ['wg', 'apt-get install --no-install-recommends wireguard-tools'],
    ['tcpdump', 'apt-get install tcpdump'],
    ['ip', 'apt-get install iproute2'],
    ['unshare', 'util-linux'],
    ['nsenter', 'util-linux'],
  ].filter(([c]) => !which(c!));
  assert.deepEqual(missing.map(([c, how]) => `${c} (${how})`), [], 'the WireGuard kernel test needs these commands');
  assert.ok(existsSync('/dev/net/tun'), 'the WireGuard kernel test needs /dev/net/tun (wireguard-go creates a tun device)');
  assert.ok(existsSync(WG_NODE), `${WG_NODE} is missing: build first (make ts)`);
}

interface NodeSpec { name: string; ns: string; underlayIp: string; tunnelIp: string; podCidr: string; podIp: string; keyDir: string; mode: string }

interface Agent {
  child: ChildProcess;
  node: NodeSpec;
  next(): Promise<Record<string, unknown>>;
  send(o: unknown): void;
  exited: Promise<number | null>;
}

describe('wireguard between two nodes (wireguard-go in per-node mount namespaces)', () => {
  requireWireGuardLab();
  const id = randomId();
  const ul = `nodal-t${id}-ul`;
  const scratchNs = `nodal-t${id}-x`;
  const tmp = mkdtempSync(join(tmpdir(), 'nodal-wg-'));
  const runWgExisted = existsSync('/run/wireguard');
  const mk = (i: number, mode: string): NodeSpec => ({
    name: `n${i}`, ns: `nodal-t${id}-n${i}`, underlayIp: `192.168.251.${10 + i}`, tunnelIp: `10.99.0.${i}`,
    podCidr: `10.98.${i}.0/24`, podIp: `10.98.${i}.10`, keyDir: join(tmp, `n${i}`), mode,
  });
  // n1 lets 'auto' pick (wireguard-go on a kernel without WireGuard), n2 insists on wireguard-go
  const n1 = mk(1, 'auto');
  const n2 = mk(2, 'userspace');
  const agents = new Map<string, Agent>();
  const spawned = new Set<ChildProcess>();
  /** everything every agent printed: the private keys must appear nowhere in it */
  let allOutput = '';
  let t0 = 0;

  const ns = (name: string, argv: readonly string[]): string => run('ip', ['netns', 'exec', name, ...argv]);
  const peerOf = (n: NodeSpec, publicKey: string) => ({
    node: n.name, publicKey, endpoint: `${n.underlayIp}:${PORT}`, tunnelIp: n.tunnelIp, podCidrs: [n.podCidr],
  });

  /** start one node's agent side: node netns + a private mount namespace with its own /run/wireguard */
  function startAgent(node: NodeSpec, extra: { env?: NodeJS.ProcessEnv; netns?: string; mode?: string } = {}): Agent {
    const script = 'mkdir -p /run/wireguard && mount -t tmpfs -o mode=0755 tmpfs /run/wireguard && exec "$0" "$@"';
    const child = spawn('unshare', ['--mount', '--propagation', 'slave', 'nsenter', `--net=/run/netns/${extra.netns ?? node.ns}`, '--',
      'sh', '-c', script, process.execPath, WG_NODE, '--key-dir', node.keyDir, '--tunnel-ip', node.tunnelIp, '--mode', extra.mode ?? node.mode],
    { stdio: ['pipe', 'pipe', 'pipe'], env: extra.env ?? process.env });
    spawned.add(child);
    const lines: string[] = [];
    const waiters: Array<(l: string | null) => void> = [];
    let stderr = '';
    let ended = false;
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); allOutput += d.toString(); });
    createInterface({ input: child.stdout! }).on('line', (l) => {
      allOutput += `${l}\n`;
      const w = waiters.shift();
      if (w) w(l); else lines.push(l);
    });
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => {
      ended = true;
      spawned.delete(child);
      for (const w of waiters.splice(0)) w(null);
      resolve(code);
    }));
    const agent: Agent = {
      child, node, exited,
      send: (o) => { child.stdin!.write(`${JSON.stringify(o)}\n`); },
      next: () => new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${node.name}: no answer within 20 s; log:\n${stderr}`)), 20_000);
        const take = (l: string | null): void => {
          clearTimeout(timer);
          if (l === null) reject(new Error(`${node.name}: agent exited (${child.exitCode}) without answering; log:\n${stderr}`));
          else resolve(JSON.parse(l) as Record<string, unknown>);
        };
        const l = lines.shift();
        if (l !== undefined) take(l);
        else if (ended) take(null);
        else waiters.push(take);
      }),
    };
    return agent;
  }

  async function ready(node: NodeSpec): Promise<string> {
    const a = startAgent(node);
    agents.set(node.name, a);
    const msg = await a.next();
    assert.equal(msg.event, 'ready', `${node.name} failed to start: ${JSON.stringify(msg)}`);
    modes.set(node.name, String(msg.mode));
    return String(msg.publicKey);
  }

  async function call(node: NodeSpec, o: Record<string, unknown>): Promise<Record<string, unknown>> {
    const a = agents.get(node.name)!;
    a.send(o);
    const msg = await a.next();
    assert.notEqual(msg.event, 'error', `${node.name} ${String(o.cmd)}: ${JSON.stringify(msg)}`);
    return msg;
  }

  const keys = new Map<string, string>();
  /** the mode each agent came up in: n1 is 'auto', so kernel WireGuard where the kernel has it */
  const modes = new Map<string, string>();
  const setPeers = (node: NodeSpec, peers: NodeSpec[]) =>
    call(node, { cmd: 'peers', peers: peers.map((p) => peerOf(p, keys.get(p.name)!)) });
  const status = async (node: NodeSpec) =>
    (await call(node, { cmd: 'status' })).status as { peers: Array<{ publicKey: string; latestHandshake: number; rxBytes: number; txBytes: number; allowedIps: string[]; endpoint?: string }> };

  /** a node -e script in a node's netns; resolves with its JSON result line */
  function inNode(name: string, code: string, args: string[]): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const child = spawn('ip', ['netns', 'exec', name, process.execPath, '-e', code, '--', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      spawned.add(child);
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      child.on('close', () => {
        spawned.delete(child);
        try { resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as Record<string, unknown>); } catch { reject(new Error(`script in ${name} failed: ${err}${out}`)); }
      });
    });
  }

  // a TCP echo server on a pod address (runs until killed)
  const ECHO_SERVER = `
    const [host, port] = process.argv.slice(-2);
    require('net').createServer((s) => s.pipe(s)).listen(Number(port), host, () => console.log(JSON.stringify({ listening: true })));`;
  // connect from one pod address to another, retrying until the deadline; send the marker, expect it back
  const ECHO_CLIENT = `
    const [from, host, port, marker, ms] = process.argv.slice(-5);
    const net = require('net');
    const deadline = Date.now() + Number(ms);
    let last = '';
    const attempt = () => {
      const s = net.connect({ host, port: Number(port), localAddress: from });
      let got = '';
      s.setTimeout(2000, () => s.destroy(new Error('ETIMEDOUT')));
      s.on('connect', () => s.write(marker));
      s.on('data', (d) => { got += d; if (got === marker) { console.log(JSON.stringify({ ok: true })); s.destroy(); process.exit(0); } });
      s.on('error', (e) => { last = e.code || e.message; retry(); });
      s.on('close', () => retry());
      let retried = false;
      function retry() { if (retried) return; retried = true; if (Date.now() > deadline) { console.log(JSON.stringify({ ok: false, error: last })); process.exit(0); } setTimeout(attempt, 200); }
    };
    attempt();`;
  // one TCP connect attempt and one UDP datagram carrying the marker; report what the kernel said
  const LEAK_PROBE = `
    const [from, host, marker] = process.argv.slice(-3);
    const res = {};
    const s = require('dgram').createSocket('udp4');
    s.bind(0, from, () => s.send(Buffer.from(marker), ${UDP_PORT}, host, (e) => {
      res.udp = e ? e.code : 'sent';
      s.close();
      const c = require('net').connect({ host, port: ${ECHO_PORT}, localAddress: from });
      c.setTimeout(1500, () => { res.tcp = 'ETIMEDOUT'; c.destroy(); });
      c.on('connect', () => { res.tcp = 'connected'; c.end(marker); });
      c.on('error', (e) => { res.tcp = e.code; });
      c.on('close', () => { console.log(JSON.stringify(res)); });
    }));`;

  const echo = (from: NodeSpec, to: NodeSpec, marker: string, ms = 10_000) =>
    inNode(from.ns, ECHO_CLIENT, [from.podIp, to.podIp, String(ECHO_PORT), marker, String(ms)]);

  /** capture every underlay bridge port (one tcpdump per node's port: the bridge device
      itself sees only frames to or from its own address) while fn runs */
  async function capture<T>(fn: () => Promise<T>): Promise<{ pcap: Buffer; udpWg: number; result: T }> {
    const files = [n1, n2].map((n) => join(tmp, `cap-${randomId()}-u${n.name}.pcap`));
    const dumps = [n1, n2].map((n, i) => {
      // --immediate-mode: without it packets wait in the kernel ring for a 1 s block timeout and SIGINT loses them
      const td = spawn('ip', ['netns', 'exec', ul, 'tcpdump', '-i', `u${n.name}`, '--immediate-mode', '-n', '-U', '-s', '0', '-w', files[i]!], { stdio: ['ignore', 'ignore', 'pipe'] });
      spawned.add(td);
      const listening = new Promise<void>((resolve, reject) => {
        let err = '';
        const t = setTimeout(() => reject(new Error(`tcpdump did not start: ${err}`)), 10_000);
        td.stderr.on('data', (d: Buffer) => { err += d.toString(); if (err.includes('listening on')) { clearTimeout(t); resolve(); } });
      });
      return { td, listening };
    });
    let result: T;
    try {
      await Promise.all(dumps.map((d) => d.listening));
      result = await fn();
      await sleep(300); // let the last frames reach the capture
    } finally {
      await Promise.all(dumps.map(async ({ td }) => {
        const done = new Promise((r) => td.once('close', r));
        td.kill('SIGINT');
        await done;
        spawned.delete(td);
      }));
    }
    const pcap = Buffer.concat(files.map((f) => readFileSync(f)));
    const udpWg = files.map((f) => run('tcpdump', ['-r', f, '-n', `udp port ${PORT}`]).split('\n').filter(Boolean).length)
      .reduce((a, b) => a + b, 0);
    return { pcap, udpWg, result };
  }

  const routes = (node: NodeSpec): Array<{ type?: string; dst: string; dev?: string; metric?: number }> =>
    JSON.parse(ns(node.ns, ['ip', '-j', 'route', 'show', 'proto', '110']) || '[]') as Array<{ type?: string; dst: string; dev?: string; metric?: number }>;
  const wgPids = (name: string): number[] =>
    run('ip', ['netns', 'pids', name], { allowFail: true }).split('\n').filter(Boolean).map(Number)
      .filter((p) => { try { return readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'wireguard-go'; } catch { return false; } });

  before(() => {
    t0 = Date.now();
    run('ip', ['netns', 'add', ul]);
    ns(ul, ['ip', 'link', 'set', 'lo', 'up']);
    ns(ul, ['ip', 'link', 'add', 'br0', 'type', 'bridge']);
    ns(ul, ['ip', 'addr', 'add', '192.168.251.1/24', 'dev', 'br0']);
    ns(ul, ['ip', 'link', 'set', 'br0', 'up']);
    for (const n of [n1, n2]) {
      run('ip', ['netns', 'add', n.ns]);
      run('ip', ['link', 'add', `u${n.name}`, 'netns', ul, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.ns]);
      ns(ul, ['ip', 'link', 'set', `u${n.name}`, 'master', 'br0', 'up']);
      ns(n.ns, ['ip', 'link', 'set', 'lo', 'up']);
      ns(n.ns, ['ip', 'addr', 'add', `${n.underlayIp}/24`, 'dev', 'eth0']);
      ns(n.ns, ['ip', 'link', 'set', 'eth0', 'up']);
      // a default route over the underlay: without the guards, pod traffic WOULD leave this way
      ns(n.ns, ['ip', 'route', 'add', 'default', 'via', '192.168.251.1']);
      // the "pod": an address inside the node's pod CIDR (this kernel may lack the dummy driver, so a veth pair)
      ns(n.ns, ['ip', 'link', 'add', 'pod0', 'type', 'veth', 'peer', 'name', 'pod0p']);
      ns(n.ns, ['ip', 'addr', 'add', `${n.podIp}/32`, 'dev', 'pod0']);
      ns(n.ns, ['ip', 'link', 'set', 'pod0', 'up']);
      ns(n.ns, ['ip', 'link', 'set', 'pod0p', 'up']);
    }
    run('ip', ['netns', 'add', scratchNs]);
    ns(scratchNs, ['ip', 'link', 'set', 'lo', 'up']);
  });

  after(async () => {
    // a graceful close first, so wireguard-go is stopped by its parent; SIGKILL whatever remains
    await Promise.all([...agents.values()].filter((a) => a.child.exitCode === null && a.child.signalCode === null).map((a) => {
      a.send({ cmd: 'close', removeInterface: true });
      return Promise.race([a.exited, sleep(3_000, undefined, { ref: false })]);
    }));
    for (const a of agents.values()) a.child.kill('SIGKILL');
    for (const c of spawned) c.kill('SIGKILL');
    await sleep(100);
    // wireguard-go children of killed agents live on in the node namespaces: end them by pid
    for (const name of [n1.ns, n2.ns, scratchNs]) for (const pid of wgPids(name)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    await sleep(100);
    for (const name of [n1.ns, n2.ns, scratchNs, ul]) run('ip', ['netns', 'del', name], { allowFail: true });
    rmSync(tmp, { recursive: true, force: true });
    // the agents' mkdir -p reaches the shared /run before their private tmpfs covers it
    if (!runWgExisted) { try { rmdirSync('/run/wireguard'); } catch { /* in use or gone */ } }
    console.log(`wireguard kernel test: ${Date.now() - t0} ms in total`);
  });

  it('generates each node\'s key once, in a 0600 file, and brings the tunnel up', async () => {
    keys.set('n1', await ready(n1));
    keys.set('n2', await ready(n2));
    assert.notEqual(keys.get('n1'), keys.get('n2'));
    for (const n of [n1, n2]) {
      const file = join(n.keyDir, 'private.key');
      assert.equal(statSync(file).mode & 0o777, 0o600, `${file} must be 0600`);
      // the public key we publish is the one wg derives from the file
      assert.equal(run('wg', ['pubkey'], { input: readFileSync(file, 'utf8') }).trim(), keys.get(n.name));
      const link = JSON.parse(ns(n.ns, ['ip', '-j', 'addr', 'show', 'dev', IFACE])) as Array<{ mtu: number; flags: string[]; addr_info: Array<{ local: string; prefixlen: number; scope: string }> }>;
      assert.equal(link[0]!.mtu, 1500 - 80, 'MTU = underlay MTU - 80');
      assert.ok(link[0]!.flags.includes('UP'));
      assert.deepEqual(link[0]!.addr_info.filter((a) => a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen}`), [`${n.tunnelIp}/32`]);
    }
    // each wireguard-go's UAPI socket lives in its node's private mount namespace, not here
    assert.equal(existsSync(`/run/wireguard/${IFACE}.sock`), false, 'no UAPI socket leaks into the host mount namespace');
  });

  it('carries pod-to-pod TCP both ways through the tunnel and nothing in plaintext on the underlay', async () => {
    await setPeers(n1, [n2]);
    await setPeers(n2, [n1]);
    for (const [n, other] of [[n1, n2], [n2, n1]] as const) {
      const r = routes(n);
      assert.ok(r.some((x) => x.dst === other.podCidr && x.dev === IFACE && x.type === undefined), `${n.name}: tunnel route for ${other.podCidr}: ${JSON.stringify(r)}`);
      assert.ok(r.some((x) => x.dst === other.tunnelIp && x.dev === IFACE), `${n.name}: tunnel route for ${other.tunnelIp}`);
      assert.ok(r.some((x) => x.dst === other.podCidr && x.type === 'unreachable'), `${n.name}: strict guard for ${other.podCidr}`);
      assert.match(ns(n.ns, ['ip', 'route', 'get', other.podIp, 'from', n.podIp]), new RegExp(`dev ${IFACE}`));
    }
    const servers = [n1, n2].map((n) => {
      const c = spawn('ip', ['netns', 'exec', n.ns, process.execPath, '-e', ECHO_SERVER, '--', n.podIp, String(ECHO_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
      spawned.add(c);
      return new Promise<void>((resolve, reject) => {
        c.stdout.once('data', () => resolve());
        c.once('close', () => reject(new Error(`echo server in ${n.name} exited`)));
      });
    });
    await Promise.all(servers);

    const marker = `NODAL-PLAINTEXT-MARKER-${randomId()}${randomId()}`;
    const started = Date.now();
    const cap = await capture(async () => [await echo(n1, n2, marker), await echo(n2, n1, marker)]);
    console.log(`  pod-to-pod echo both ways (incl. handshake): ${Date.now() - started} ms`);
    assert.deepEqual(cap.result, [{ ok: true }, { ok: true }], 'echo between pod addresses through the tunnel');
    assert.equal(cap.pcap.indexOf(marker), -1, 'the marker must never appear on the underlay');
    assert.ok(cap.udpWg > 0, `WireGuard UDP ${PORT} packets on the underlay (saw ${cap.udpWg})`);

    for (const [n, other] of [[n1, n2], [n2, n1]] as const) {
      const st = await status(n);
      assert.equal(st.peers.length, 1);
      const p = st.peers[0]!;
      assert.equal(p.publicKey, keys.get(other.name));
      assert.ok(p.latestHandshake > 0, `${n.name}: a handshake happened`);
      assert.ok(p.rxBytes > 0 && p.txBytes > 0, `${n.name}: bytes both ways`);
      assert.equal(p.endpoint, `${other.underlayIp}:${PORT}`);
      assert.deepEqual([...p.allowedIps].sort(), [`${other.tunnelIp}/32`, other.podCidr].sort());
    }
  });

  it('drops a removed peer\'s traffic instead of sending it over the underlay in plaintext', async () => {
    await setPeers(n1, []);
    const r = routes(n1);
    assert.ok(!r.some((x) => x.dev === IFACE), `no tunnel routes left: ${JSON.stringify(r)}`);
    assert.ok(r.some((x) => x.dst === n2.podCidr && x.type === 'unreachable'), 'the guard stays');
    assert.equal((await status(n1)).peers.length, 0);

    const marker = `NODAL-PLAINTEXT-MARKER-${randomId()}${randomId()}`;
    const cap = await capture(() => inNode(n1.ns, LEAK_PROBE, [n1.podIp, n2.podIp, marker]));
    assert.deepEqual(cap.result, { udp: 'EHOSTUNREACH', tcp: 'EHOSTUNREACH' }, 'the kernel refuses both');
    assert.equal(cap.pcap.indexOf(marker), -1, 'the marker must never appear on the underlay');

    // control: without the guard the same probe does leak, so the capture above would have seen it
    ns(n1.ns, ['ip', 'route', 'del', 'unreachable', n2.podCidr, 'proto', '110', 'metric', '1']);
    const leak = await capture(() => inNode(n1.ns, LEAK_PROBE, [n1.podIp, n2.podIp, marker]));
    assert.equal(leak.result.udp, 'sent');
    assert.notEqual(leak.pcap.indexOf(marker), -1, 'control: an unguarded datagram is visible on the underlay');

    // re-adding the peer restores the guard (reconciled against the kernel, not memory) and the tunnel
    await setPeers(n1, [n2]);
    assert.ok(routes(n1).some((x) => x.dst === n2.podCidr && x.type === 'unreachable'), 'the guard is back');
    assert.deepEqual(await echo(n1, n2, marker), { ok: true });
  });

  it('restarts wireguard-go when it dies and restores the tunnel', async () => {
    const [old] = wgPids(n2.ns);
    assert.ok(old, 'wireguard-go runs in n2');
    const started = Date.now();
    process.kill(old, 'SIGKILL');
    let pids: number[] = [];
    while (Date.now() - started < 15_000) {
      pids = wgPids(n2.ns).filter((p) => p !== old);
      if (pids.length > 0 && routes(n2).some((x) => x.dev === IFACE)) break;
      await sleep(50);
    }
    assert.equal(pids.length, 1, 'a new wireguard-go runs');
    assert.deepEqual(await echo(n1, n2, 'after-restart', 15_000), { ok: true });
    console.log(`  wireguard-go killed -> traffic flowing again: ${Date.now() - started} ms`);
    assert.match(allOutput, /wireguard-go exited unexpectedly: restarting it/);
  });

  it('reuses the key after a graceful agent restart; guards survive the gap', async () => {
    const a = agents.get('n1')!;
    await call(n1, { cmd: 'close', removeInterface: false });
    await a.exited;
    assert.ok(routes(n1).some((x) => x.dst === n2.podCidr && x.type === 'unreachable'), 'guard kept while the agent is away');
    if (modes.get('n1') === 'userspace') {
      assert.ok(!routes(n1).some((x) => x.dev === IFACE), 'the userspace device went with wireguard-go');
    } else {
      assert.ok(routes(n1).some((x) => x.dev === IFACE), 'the kernel device and its routes outlive the agent');
    }
    const started = Date.now();
    assert.equal(await ready(n1), keys.get('n1'), 'same public key after restart');
    await setPeers(n1, [n2]);
    assert.deepEqual(await echo(n1, n2, 'after-agent-restart', 15_000), { ok: true });
    console.log(`  agent restart -> traffic flowing again: ${Date.now() - started} ms`);
  });

  it('adopts the device of an agent that was killed (an orphaned wireguard-go is replaced)', async () => {
    const a = agents.get('n1')!;
    const userspace = modes.get('n1') === 'userspace';
    const [orphan] = wgPids(n1.ns);
    assert.equal(orphan !== undefined, userspace);
    a.child.kill('SIGKILL');
    await a.exited;
    if (userspace) assert.deepEqual(wgPids(n1.ns), [orphan], 'wireguard-go outlives its killed agent and still holds nodal-wg0');
    assert.equal(await ready(n1), keys.get('n1'), 'same public key');
    assert.equal(modes.get('n1'), userspace ? 'userspace' : 'kernel', 'same mode after adoption');
    if (userspace) {
      assert.ok(!wgPids(n1.ns).includes(orphan!), 'the orphan was replaced');
      assert.equal(wgPids(n1.ns).length, 1);
    }
    await setPeers(n1, [n2]);
    assert.deepEqual(await echo(n1, n2, 'after-adoption', 15_000), { ok: true });
  });

  it('never writes a private key to any log', () => {
    for (const n of [n1, n2]) {
      const priv = readFileSync(join(n.keyDir, 'private.key'), 'utf8').trim();
      assert.equal(priv.length, 44);
      assert.equal(allOutput.includes(priv), false, `${n.name}'s private key appears in the agents' output`);
    }
    assert.ok(allOutput.includes(keys.get('n1')!), 'the logs were captured (they name the public key)');
  });

  it('close with removeInterface takes the device and every route of ours with it', async () => {
    const a = agents.get('n2')!;
    await call(n2, { cmd: 'close', removeInterface: true });
    await a.exited;
    assert.deepEqual(routes(n2), [], 'no tunnel route and no guard left');
    assert.equal(spawnSync('ip', ['netns', 'exec', n2.ns, 'ip', 'link', 'show', IFACE]).status, 1, 'no nodal-wg0 left');
    assert.deepEqual(wgPids(n2.ns), [], 'no wireguard-go left');
  });

  it('says what is wrong: no kernel WireGuard, wireguard-go missing, a foreign interface in the way', async () => {
    const x: NodeSpec = { ...mk(9, 'kernel'), ns: scratchNs, keyDir: join(tmp, 'x') };
    const result = async (a: Agent) => { const m = await a.next(); await a.exited; return m; };
    // mode kernel: works where the kernel has WireGuard, otherwise names the failing command
    const probe = spawnSync('ip', ['netns', 'exec', scratchNs, 'ip', 'link', 'add', 'probe0', 'type', 'wireguard'], { encoding: 'utf8' });
    const kernelHasWg = probe.status === 0;
    if (kernelHasWg) ns(scratchNs, ['ip', 'link', 'del', 'probe0']);
    const k = startAgent(x, { mode: 'kernel' });
    const km = await k.next();
    if (kernelHasWg) {
      assert.equal(km.mode, 'kernel');
      k.send({ cmd: 'close', removeInterface: true });
      await k.exited;
    } else {
      await k.exited;
      assert.equal(km.code, 'NODAL_ERR_WG_SETUP');
      assert.match(String(km.message), /ip link add dev nodal-wg0 type wireguard/);
      assert.match(String(km.message), /Unknown device type/);
    }

    // userspace without wireguard-go on PATH
    const bin = join(tmp, 'bin');
    mkdirSync(bin);
    for (const c of ['ip', 'wg', 'sh', 'mkdir', 'mount', 'unshare', 'nsenter']) symlinkSync(run('sh', ['-c', `command -v ${c}`]).trim(), join(bin, c));
    const m = await result(startAgent(x, { mode: 'userspace', env: { ...process.env, PATH: bin } }));
    assert.equal(m.code, 'NODAL_ERR_WG_USERSPACE_MISSING');
    assert.match(String(m.message), /install wireguard-go/);

    // something else named nodal-wg0
    ns(scratchNs, ['ip', 'link', 'add', IFACE, 'type', 'veth', 'peer', 'name', 'other0']);
    const f = await result(startAgent(x, { mode: 'auto' }));
    assert.equal(f.code, 'NODAL_ERR_WG_SETUP');
    assert.match(String(f.message), /exists and is not WireGuard \(kind veth\)/);
  });
});
