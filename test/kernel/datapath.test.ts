// The socket-level datapath on the real kernel: pods are network namespaces + cgroups,
// the proxy is a listener in the node's namespace, and every assertion is what an
// application observes (where its connect() lands, EPERM, a reply, a dropped SYN).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { Datapath, lookupRedirectIn, openAgentMap, type DatapathConfig, type DesiredState, type VerdictEvent } from '../../agent/datapath/index.ts';
import type { BpfMap } from '../../native/index.ts';
import { cgroupQuery, listenTcpInNetns } from '../../native/index.ts';
import { Lab, type Pod } from '../helpers/lab.ts';
import { bpfObjectDir, repoRoot } from '../helpers/paths.ts';
import { desiredToJson } from '../helpers/desired.ts';
import { requireKernel } from '../helpers/sys.ts';

const PROXY_PORT = 15001;
const VIP = '10.96.0.10';
const ID = { a: 300, b: 301, c: 302 };
const POLICY_DENY_C = 7;
const POLICY_ALLOW_C_TO_B = 9;

describe('kernel datapath', () => {
  requireKernel();
  const lab = new Lab(77);
  let a: Pod, b: Pod, c: Pod, d: Pod, e1: Pod, e2: Pod;
  let dp: Datapath;
  let proxy: Server;
  let redirects: BpfMap;
  let config: DatapathConfig;
  const events: VerdictEvent[] = [];
  const seenByProxy: Array<{ redirect: ReturnType<Datapath['lookupRedirect']>; line: string }> = [];

  const desired = (enrollE = false): DesiredState => ({
    endpoints: [
      { cgroupId: a.cgroupId, endpointId: 1, identity: ID.a, enrolled: true },
      { cgroupId: b.cgroupId, endpointId: 2, identity: ID.b, enrolled: true },
      ...(enrollE ? [
        { cgroupId: e1.cgroupId, endpointId: 5, identity: ID.a, enrolled: true },
        { cgroupId: e2.cgroupId, endpointId: 6, identity: ID.b, enrolled: true },
      ] : []),
    ],
    ipcache: [
      { cidr: `${a.ip}/32`, identity: ID.a }, { cidr: `${b.ip}/32`, identity: ID.b }, { cidr: `${c.ip}/32`, identity: ID.c },
    ],
    services: [{ vip: VIP, port: 80, serviceId: 1, identity: ID.b }],
    policy: [
      { direction: 'EGRESS', localIdentity: ID.a, peerIdentity: ID.c, port: 0, action: 'DENY', policyId: POLICY_DENY_C, rule: 2 },
      { direction: 'INGRESS', localIdentity: ID.b, peerIdentity: ID.c, port: 8080, action: 'ALLOW', policyId: POLICY_ALLOW_C_TO_B, rule: 0 },
    ],
  });

  async function waitForEvent(pred: (e: VerdictEvent) => boolean, what: string): Promise<VerdictEvent> {
    for (let i = 0; i < 200; i++) {
      const hit = events.find(pred);
      if (hit) return hit;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no verdict event: ${what}; saw ${JSON.stringify(events.slice(-5), (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
  }

  before(async () => {
    lab.create();
    a = lab.addPod('a'); b = lab.addPod('b'); c = lab.addPod('c'); d = lab.addPod('d');
    e1 = lab.addPod('e1'); e2 = lab.addPod('e2');
    config = {
      node: `ktest-${lab.id}`, cgroupPath: lab.nodeCgroup, objectDir: bpfObjectDir,
      proxy: { ipv4: lab.gateway, port: PROXY_PORT },
    };
    dp = await Datapath.open(config);
    dp.reconcile(desired());
    dp.subscribe((batch) => events.push(...batch));
    // the proxy stand-in, a separate reader of the pinned map as the real proxy is: it
    // recovers the original destination and answers, also while the agent is stopped
    redirects = openAgentMap(dp.pinRoot, 'nodal_redir_sk');
    const fd = listenTcpInNetns(lab.netnsPath(lab.nodeNetns), lab.gateway, PROXY_PORT);
    proxy = createServer((sock) => {
      const redirect = lookupRedirectIn(redirects, sock.remoteAddress!, sock.remotePort!, { remove: true });
      createInterface({ input: sock }).on('line', (line) => {
        seenByProxy.push({ redirect, line });
        sock.write(`proxy ${redirect ? `${redirect.origIp}:${redirect.origPort} from ${redirect.srcIdentity}` : 'unknown'}\n`);
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => proxy.listen({ fd }, r));
    for (const [pod, port] of [[b, 8080], [c, 9000], [e2, 7000]] as const) {
      const srv = lab.spawnInPod(pod, ['serve', String(port)]);
      assert.equal((await srv.next()).event, 'listening');
    }
  });

  after(async () => {
    proxy?.close();
    redirects?.close();
    await dp?.destroy();
    await lab.destroy();
  });

  it('redirects an enrolled pod\'s connect() to the proxy, which recovers the original destination and identity', async () => {
    const r = await lab.inPod(a, ['connect', VIP, '80', 'hello']);
    assert.equal(r.ok, true, JSON.stringify(r));
    // the connection landed on the proxy (getpeername shows where it really went) ...
    assert.equal(r.remote, lab.gateway);
    assert.equal(r.remotePort, PROXY_PORT);
    // ... which knew where the application meant to go, and who it is
    assert.equal(r.reply, `proxy ${VIP}:80 from ${ID.a}`);
    const seen = seenByProxy.at(-1)!;
    assert.equal(seen.redirect?.endpointId, 1);
    assert.equal(seen.redirect?.dstIdentity, ID.b);
    const ev = await waitForEvent((e) => e.verdict === 'REDIRECTED' && e.destination.ip === VIP, 'REDIRECTED to VIP');
    assert.equal(ev.srcIdentity, ID.a);
    assert.equal(ev.hook, 'connect4');
  });

  it('leaves an unenrolled pod\'s connection on its way to the destination', async () => {
    const r = await lab.inPod(d, ['connect', c.ip, '9000', 'hi']);
    assert.equal(r.ok, true);
    assert.equal(r.reply, 'c hi');
  });

  it('fails a denied connect() with EPERM at once and emits a DROPPED event naming the policy', async () => {
    const before = dp.counters().dropConnect;
    const r = await lab.inPod(a, ['connect', c.ip, '9000']);
    assert.deepEqual(r, { ok: false, error: 'EPERM' });
    const ev = await waitForEvent((e) => e.verdict === 'DROPPED' && e.destination.ip === c.ip && e.hook === 'connect4', 'DROPPED a->c');
    assert.equal(ev.reason, 'POLICY_DENY');
    assert.equal(ev.policyId, POLICY_DENY_C);
    assert.equal(ev.rule, 2);
    assert.equal(ev.dstIdentity, ID.c);
    assert.equal(dp.counters().dropConnect, before + 1n);
  });

  it('denies by default when a policy selects the endpoint and nothing allows the connection', async () => {
    const d2 = desired();
    d2.endpoints[0] = { ...d2.endpoints[0]!, egressPolicyId: 42 };
    dp.reconcile(d2);
    try {
      const r = await lab.inPod(a, ['connect', d.ip, '9999']);
      assert.deepEqual(r, { ok: false, error: 'EPERM' });
      const ev = await waitForEvent((e) => e.verdict === 'DROPPED' && e.destination.ip === d.ip, 'default deny a->d');
      assert.equal(ev.reason, 'DEFAULT_DENY');
      assert.equal(ev.policyId, 42);

      // the compiler's form of the same verdict: a DENY entry marked as a default deny
      const d3 = desired();
      d3.policy.push({ direction: 'EGRESS', localIdentity: ID.a, peerIdentity: ID.b, port: 0, action: 'DENY', policyId: 43, defaultDeny: true });
      dp.reconcile(d3);
      assert.deepEqual(await lab.inPod(a, ['connect', b.ip, '8080']), { ok: false, error: 'EPERM' });
      const ev2 = await waitForEvent((e) => e.verdict === 'DROPPED' && e.destination.ip === b.ip && e.hook === 'connect4', 'default deny entry a->b');
      assert.equal(ev2.reason, 'DEFAULT_DENY');
      assert.equal(ev2.policyId, 43);
    } finally {
      dp.reconcile(desired());
    }
  });

  it('denies by absence: a guarded destination refuses a source with no entry (EPERM, default deny naming the guard\'s policy), and redirects an admitted one', async () => {
    const POLICY_GUARD_B = 44;
    const d2 = desired();
    d2.guards = [{ identity: ID.b, policyId: POLICY_GUARD_B }];
    const res = dp.reconcile(d2);
    assert.deepEqual(res.guards, { added: 1, updated: 0, removed: 0 });
    try {
      const before = dp.counters().dropConnect;
      const seen = events.length;
      assert.deepEqual(await lab.inPod(a, ['connect', b.ip, '8080']), { ok: false, error: 'EPERM' });
      const ev = await waitForEvent((e) => events.indexOf(e) >= seen && e.verdict === 'DROPPED' && e.destination.ip === b.ip && e.hook === 'connect4', 'guard a->b');
      assert.equal(ev.reason, 'DEFAULT_DENY');
      assert.equal(ev.policyId, POLICY_GUARD_B);
      assert.equal(ev.srcIdentity, ID.a);
      assert.equal(ev.dstIdentity, ID.b);
      assert.equal(dp.counters().dropConnect, before + 1n);
      // a Service VIP is judged by its backends' identity: the same guard
      assert.deepEqual(await lab.inPod(a, ['connect', VIP, '80']), { ok: false, error: 'EPERM' });

      // some ALLOW rule's `from` admits a: its entry lets the connection past the guard to the proxy
      d2.policy.push({ direction: 'EGRESS', localIdentity: ID.a, peerIdentity: ID.b, port: 0, action: 'ALLOW', policyId: 0, toProxy: true });
      dp.reconcile(d2);
      const r = await lab.inPod(a, ['connect', VIP, '80', 'admitted']);
      assert.equal(r.reply, `proxy ${VIP}:80 from ${ID.a}`, JSON.stringify(r));
      const fwd = await waitForEvent((e) => e.verdict === 'REDIRECTED' && e.destination.ip === VIP && e.reason === 'TO_PROXY', 'admitted a->VIP');
      assert.equal(fwd.policyId, 0);
      // an explicit entry still wins over a guard: a -> c stays a DENY rule's verdict
      d2.guards.push({ identity: ID.c, policyId: POLICY_GUARD_B });
      dp.reconcile(d2);
      assert.deepEqual(await lab.inPod(a, ['connect', c.ip, '9000']), { ok: false, error: 'EPERM' });
      const explicit = await waitForEvent((e) => e.verdict === 'DROPPED' && e.destination.ip === c.ip && e.policyId === POLICY_DENY_C && e.timeNs > ev.timeNs, 'explicit a->c');
      assert.equal(explicit.reason, 'POLICY_DENY');
    } finally {
      dp.reconcile(desired());
    }
    // no guard: the same connect goes to the proxy again
    const again = await lab.inPod(a, ['connect', b.ip, '8080', 'open']);
    assert.equal(again.reply, `proxy ${b.ip}:8080 from ${ID.a}`);
  });

  it('drops a direct connection to an enrolled pod, lets the proxy through and a policy-allowed identity', async () => {
    const direct = await lab.inPod(d, ['connect', b.ip, '8080', 'sneak']);
    assert.equal(direct.ok, false, 'a direct connection from outside the mesh must not reach the enrolled pod');
    const dropped = await waitForEvent((e) => e.hook === 'ingress' && e.verdict === 'DROPPED' && e.source.ip === d.ip, 'ingress drop');
    assert.equal(dropped.reason, 'NOT_FROM_PROXY');
    assert.equal(dropped.destination.port, 8080);
    assert.ok(dp.counters().dropIngress >= 1n);

    const fromProxy = lab.spawnInNode(['connect', b.ip, '8080', 'via-proxy']);
    const p = await fromProxy.next();
    await fromProxy.stop();
    assert.equal(p.reply, 'b via-proxy');

    const allowed = await lab.inPod(c, ['connect', b.ip, '8080', 'allowed']);
    assert.equal(allowed.reply, 'b allowed');
    const fwd = await waitForEvent((e) => e.hook === 'ingress' && e.verdict === 'FORWARDED' && e.source.ip === c.ip, 'ingress allow');
    assert.equal(fwd.policyId, POLICY_ALLOW_C_TO_B);
  });

  it('keeps a connection established before enrollment working through enrollment and unenrollment', async () => {
    const held = lab.spawnInPod(e1, ['hold', e2.ip, '7000']);
    try {
      assert.equal((await held.next()).ok, true);
      held.send('one');
      assert.deepEqual(await held.next(), { reply: 'e2 one' });

      dp.reconcile(desired(true));
      // enrollment took effect for new connections ...
      const fresh = await lab.inPod(e1, ['connect', e2.ip, '7000', 'new']);
      assert.equal(fresh.reply, `proxy ${e2.ip}:7000 from ${ID.a}`);
      // ... and not for the live one
      held.send('two');
      assert.deepEqual(await held.next(), { reply: 'e2 two' });

      dp.reconcile(desired(false));
      held.send('three');
      assert.deepEqual(await held.next(), { reply: 'e2 three' });
    } finally {
      await held.stop();
      dp.reconcile(desired());
    }
  });

  it('keeps enforcing with the agent stopped, and a restarted agent adopts the pins without a gap or a duplicate', async () => {
    await dp.close();
    // agent gone: pinned programs still decide
    assert.deepEqual(await lab.inPod(a, ['connect', c.ip, '9000']), { ok: false, error: 'EPERM' });
    assert.equal((await lab.inPod(a, ['connect', VIP, '80', 'still'])).ok, true);

    // restart while a pod keeps connecting: every attempt is denied, none slips through
    const loop = lab.spawnInPod(a, ['connect-loop', c.ip, '9000', '200000']);
    assert.equal((await loop.next()).event, 'looping');
    const agent = spawn(process.execPath, [join(repoRoot, 'dist/test/helpers/agent-stub.js'), JSON.stringify(config), desiredToJson(desired())], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const line = await new Promise<string>((resolve) => createInterface({ input: agent.stdout }).once('line', resolve));
      const started = JSON.parse(line) as { ready: boolean; report: { adopted: string[]; attached: string[] } };
      assert.equal(started.ready, true);
      assert.deepEqual(started.report.attached, [], 'a restarted agent must not attach a second copy');
      assert.deepEqual([...started.report.adopted].sort(), ['connect4', 'connect6', 'ingress', 'sock_ops']);
      loop.send('stop');
      const counts = (await loop.next()).counts as Record<string, number>;
      assert.deepEqual(Object.keys(counts), ['EPERM'], `every connect during the restart is denied: ${JSON.stringify(counts)}`);
      assert.ok((counts.EPERM ?? 0) > 0);
      for (const t of ['connect4', 'connect6', 'sock_ops', 'ingress'] as const) {
        assert.equal(cgroupQuery(lab.nodeCgroup, t).length, 1, `exactly one ${t} program on the node cgroup`);
      }
    } finally {
      agent.kill('SIGKILL');
      await loop.stop();
    }
    dp = await Datapath.open(config);
    assert.deepEqual(dp.report.attached, []);
    dp.subscribe((batch) => events.push(...batch));
    assert.equal((await lab.inPod(a, ['connect', VIP, '80', 'back'])).reply, `proxy ${VIP}:80 from ${ID.a}`);
  });
});
