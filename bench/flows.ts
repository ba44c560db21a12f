// Flow ingest benchmarks (issue 6, "Flows you can trust", item 5): how fast verdict events
// get from the kernel into the per-node flow store, and that a slow Observer client never
// slows that down.
//  a. the raw read rate of the kernel ring buffer: the real datapath on a Lab node, DROPPED
//     events made by denied connect() calls from pods, read by subscribeRingBuffer with a
//     consumer that only counts; and the kernel's lost-events counter.
//  b. the agent's whole ingest path on the same event stream: decodeVerdictEvent →
//     flowFromVerdictEvent → FlowStore.add.
//     Both (a) and (b) are measured two ways: draining a ring filled beforehand (the read
//     side alone, nothing else competing for the 2 cores), and live, with the pods making
//     events at the same time — unpaced, and paced at the 200,000 events/s target.
//  c. store-only: ready Flow objects into FlowStore.add in batches, alone and with a slow
//     follower (in-process, and a real gRPC client that stops reading): the ingest rate
//     must not move, and the follower is told what it lost.
//  Plus the user-space pipeline on synthetic records (no kernel), stage by stage.
// Run as root: node dist/bench/flows.js [--seconds S] [--pods N] [--fill N] [--synthetic N] [--store N]
// (--user-only: the user-space rows alone, no root; --only drain,live,store,synthetic: those
// phases; either writes nothing, for node --cpu-prof)
import { loadavg } from 'node:os';
import { cpuUsage } from 'node:process';
import { join } from 'node:path';
import { setImmediate as yieldLoop, setTimeout as sleep } from 'node:timers/promises';
import { Datapath, decodeVerdictEvent, type DatapathConfig, type VerdictEvent } from '../agent/datapath/index.ts';
import { verdictEvent } from '../agent/datapath/codec.ts';
import { FlowStore, flowFromVerdictEvent, observerClient, startObserver, type Flow, type FlowLogger } from '../agent/flows/index.ts';
import type { EndpointInfo, Snapshot } from '../control/api/types.ts';
import { openPinnedMap, subscribeRingBuffer, type RingBufferReader } from '../native/index.ts';
import { Lab, type Pod } from '../test/helpers/lab.ts';
import { bpfObjectDir } from '../test/helpers/paths.ts';
import { killLoad, runLoad, type LoadSpec } from './helpers/deny-load.ts';
import { machine, numberArg, table, writeSection } from './report.ts';

const LIVE_SECONDS = numberArg('--seconds', 5);
const PODS = numberArg('--pods', 2);
/** events per drain run: fits the drain ring (128 MiB holds ~1.4M 96-byte records) */
const FILL = numberArg('--fill', 1_000_000);
const DRAIN_RING_BYTES = 128 << 20;
const SYNTHETIC = numberArg('--synthetic', 2_000_000);
/** flows per store-only row: long enough that start-up noise does not count */
const STORE_FLOWS = numberArg('--store', 10_000_000);
const TARGET = 200_000;
/** --only drain,live,store,synthetic: run those phases, write nothing (for profiling) */
const ONLY = process.argv.includes('--only') ? new Set(process.argv[process.argv.indexOf('--only') + 1]!.split(',')) : undefined;
const want = (phase: string): boolean => !ONLY || ONLY.has(phase);
const IDENTITY = 300;
const POLICY_ID = 7;
const DENIED_PORT = 9;
/** records per ring-buffer batch, as the agent reads them (native DEFAULT_MAX_BATCH) */
const BATCH = 256;

/** what flowFromVerdictEvent needs to know about the node (not exported by agent/flows) */
type FlowContext = Parameters<typeof flowFromVerdictEvent>[1];
const quiet: FlowLogger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const log = (s: string): void => { process.stderr.write(`${s}\n`); };

// --- the node's view: a snapshot naming the pods, as the agent would have ---

function snapshotFor(pods: readonly Pod[]): { snapshot: Snapshot; byCgroup: Map<bigint, EndpointInfo> } {
  const endpoints: EndpointInfo[] = pods.map((p) => ({
    namespace: 'bench', name: `load-${p.name}`, uid: p.name, node: 'bench', ip: p.ip, identity: IDENTITY,
    labels: { app: 'load', 'app.kubernetes.io/part-of': 'nodal-bench' }, serviceAccount: 'load', enrolled: true, defaultDenyPolicyId: POLICY_ID,
  }));
  const snapshot: Snapshot = {
    version: 1, node: 'bench', trustDomain: 'cluster.local', nodes: [],
    identities: [{ id: IDENTITY, namespace: 'bench', serviceAccount: 'load', labels: { app: 'load' }, spiffeId: 'spiffe://cluster.local/ns/bench/sa/load' }],
    endpoints, services: [],
    policies: [{ id: POLICY_ID, namespace: 'bench', name: 'only-dns', action: 'ALLOW', selects: [IDENTITY], rules: [] }],
    l4: [],
  };
  return { snapshot, byCgroup: new Map(pods.map((p, i) => [p.cgroupId, endpoints[i]!])) };
}

// --- consumers: each counts records; `ingest` is the agent's own path ---

interface Consumer {
  name: string;
  /** what a follower of the store received, once stopped */
  follower?: { got: number; lost: number; notices: number };
  start(onCount: (n: number) => void): Promise<RingBufferReader>;
  stop(): Promise<void>;
}

function rawConsumer(pinRoot: string): Consumer {
  let map: ReturnType<typeof openPinnedMap> | undefined;
  let reader: RingBufferReader | undefined;
  return {
    name: 'raw ring-buffer read (no-op consumer)',
    async start(onCount) {
      map = openPinnedMap(join(pinRoot, 'maps', 'nodal_events'));
      reader = subscribeRingBuffer(map, (records) => onCount(records.length));
      return reader;
    },
    async stop() {
      await reader?.close();
      map?.close();
    },
  };
}

const FOLLOWER_NAMES: Record<FollowerKind, string> = {
  none: '', stalled: ' + a stalled in-process follower',
  'grpc-slow': ' + a gRPC follow client reading slowly', 'grpc-fast': ' + a gRPC follow client reading as fast as it can',
};

/**
 * The agent's path (agent/main.ts): Datapath.subscribe decodes, then flow, then store;
 * optionally with a follower of the store (an Observer client) while it runs.
 */
function ingestConsumer(cfg: DatapathConfig, ctx: FlowContext, kind: FollowerKind = 'none'): Consumer {
  const store = new FlowStore();
  let dp: Datapath | undefined;
  let follower: Follower | undefined;
  const c: Consumer = {
    name: `full ingest (decode → flow → FlowStore.add)${FOLLOWER_NAMES[kind]}`,
    async start(onCount) {
      // a second handle adopts the pinned programs and shares the pinned ring, as a restarted agent would
      dp = await Datapath.open(cfg);
      follower = await attachFollower(store, kind);
      return dp.subscribe((events) => {
        for (let i = 0; i < events.length; i++) store.add(flowFromVerdictEvent(events[i]!, ctx));
        onCount(events.length);
      });
    },
    async stop() {
      await dp?.close();
      if (follower && kind !== 'none') {
        follower.hurry();
        await follower.settle(store.seen);
        c.follower = { got: follower.got, lost: follower.lost, notices: follower.notices };
      }
      await follower?.stop();
    },
  };
  return c;
}

interface RunResult { generated: number; lost: number; delivered: number; seconds: number; loadSeconds: number; cpuMs: number; loadCpuSeconds: number }

/** fill the ring with no reader attached, then time how fast the consumer empties it */
async function drainRun(dp: Datapath, pods: readonly Pod[], host: string, consumer: Consumer): Promise<RunResult> {
  const before = dp.counters();
  const load = await runLoad(pods, { host, port: DENIED_PORT, seconds: 120, maxPerPod: Math.ceil(FILL / pods.length) });
  const after = dp.counters();
  const generated = Number(after.dropConnect - before.dropConnect);
  const lost = Number(after.eventsLost - before.eventsLost);
  const expect = generated - lost;
  let delivered = 0;
  let t1 = 0n;
  // the clock starts once the reader exists: opening a second Datapath (the ingest
  // consumer) loads and verifies programs, which is not reading. Batches can reach
  // JavaScript only after start() returns, so none is missed.
  await consumer.start((n) => {
    delivered += n;
    if (delivered >= expect && t1 === 0n) t1 = process.hrtime.bigint();
  });
  const c0 = cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < 600 && t1 === 0n; i++) await sleep(50);
  const cpu = cpuUsage(c0);
  await sleep(200); // nothing more should come
  await consumer.stop();
  if (t1 === 0n) throw new Error(`${consumer.name}: drained ${delivered} of ${expect} records in 30 s`);
  if (delivered !== expect) throw new Error(`${consumer.name}: ${delivered} records delivered, ${expect} in the ring`);
  return { generated, lost, delivered, seconds: Number(t1 - t0) / 1e9, loadSeconds: load.seconds, cpuMs: (cpu.user + cpu.system) / 1000, loadCpuSeconds: load.cpuSeconds };
}

/** the pods make events while the consumer reads them: what a busy node sees */
async function liveRun(dp: Datapath, pods: readonly Pod[], spec: LoadSpec, consumer: Consumer): Promise<RunResult> {
  let delivered = 0;
  let last = 0n;
  await consumer.start((n) => { delivered += n; last = process.hrtime.bigint(); });
  await sleep(100);
  const d0 = delivered;
  const before = dp.counters();
  let t0 = 0n;
  let c0 = cpuUsage();
  const load = await runLoad(pods, spec, () => { t0 = process.hrtime.bigint(); c0 = cpuUsage(); });
  const after0 = dp.counters();
  const expect = Number(after0.dropConnect - before.dropConnect) - Number(after0.eventsLost - before.eventsLost);
  // the consumer may still be catching up with what is in the ring
  for (let i = 0; i < 200 && delivered - d0 < expect; i++) await sleep(50);
  const cpu = cpuUsage(c0);
  await sleep(200);
  await consumer.stop();
  const after = dp.counters();
  const generated = Number(after.dropConnect - before.dropConnect);
  const lost = Number(after.eventsLost - before.eventsLost);
  const got = delivered - d0;
  if (got !== generated - lost) log(`  warning: ${consumer.name}: delivered ${got}, generated ${generated}, lost ${lost}`);
  return { generated, lost, delivered: got, seconds: Number(last - t0) / 1e9, loadSeconds: load.seconds, cpuMs: (cpu.user + cpu.system) / 1000, loadCpuSeconds: load.cpuSeconds };
}

// --- user space only: synthetic records and flows ---

function syntheticRecords(n: number): Buffer {
  const b = Buffer.alloc(n * verdictEvent.size);
  for (let i = 0; i < n; i++) {
    verdictEvent.encode({
      ts_ns: 1_000_000_000n + BigInt(i) * 1000n, cookie: BigInt(i + 1), cgroup_id: 1000n + BigInt(i % 4),
      saddr: '::', daddr: `10.91.${(i >> 8) & 3}.${(i & 255) || 1}`, sport: 0, dport: 80 + (i % 8),
      family: 4, proto: 6, verdict: 2, reason: 2, hook: 1, direction: 1, rule: 0,
      endpoint_id: 1 + (i % 4), src_identity: IDENTITY, dst_identity: 2, policy_id: POLICY_ID,
    }, b, i * verdictEvent.size);
  }
  return b;
}

interface Stage { name: string; run(records: Buffer[]): void }

/** events/s of each user-space stage on one core, records delivered in batches of BATCH */
function syntheticStages(ctx: FlowContext): Array<{ name: string; rate: number }> {
  const distinct = 4096;
  const raw = syntheticRecords(distinct);
  const store = new FlowStore();
  const decoded: VerdictEvent[] = new Array<VerdictEvent>(BATCH);
  const stages: Stage[] = [
    { name: 'slice records (the addon facade, no-op consumer)', run: () => {} },
    { name: '+ decodeVerdictEvent', run: (rs) => { for (let i = 0; i < rs.length; i++) decoded[i] = decodeVerdictEvent(rs[i]!); } },
    { name: '+ flowFromVerdictEvent', run: (rs) => { for (let i = 0; i < rs.length; i++) flowFromVerdictEvent(decodeVerdictEvent(rs[i]!), ctx); } },
    { name: '+ FlowStore.add (the whole ingest path)', run: (rs) => { for (let i = 0; i < rs.length; i++) store.add(flowFromVerdictEvent(decodeVerdictEvent(rs[i]!), ctx)); } },
  ];
  const out: Array<{ name: string; rate: number }> = [];
  for (const st of stages) {
    const once = (n: number): number => {
      const t0 = process.hrtime.bigint();
      for (let done = 0; done < n; done += BATCH) {
        // as native/index.ts hands a batch over: one Buffer, one view per record
        const off = (done % distinct) * verdictEvent.size;
        const buf = Buffer.from(raw.subarray(off, off + BATCH * verdictEvent.size));
        const records = new Array<Buffer>(BATCH);
        for (let i = 0; i < BATCH; i++) records[i] = buf.subarray(i * verdictEvent.size, (i + 1) * verdictEvent.size);
        st.run(records);
      }
      return n / (Number(process.hrtime.bigint() - t0) / 1e9);
    };
    once(Math.min(SYNTHETIC, 200_000)); // warm up the JIT
    out.push({ name: st.name, rate: once(SYNTHETIC) });
    log(`synthetic ${st.name}: ${fmt(out.at(-1)!.rate)}/s`);
  }
  return out;
}

type FollowerKind = 'none' | 'stalled' | 'grpc-slow' | 'grpc-fast';

interface Follower {
  /** the follower reads as fast as it can from now on, so it reaches the loss notices */
  hurry(): void;
  /** wait (bounded) until every flow added is accounted for: delivered or reported lost */
  settle(added: number): Promise<void>;
  stop(): Promise<void>;
  got: number;
  lost: number;
  notices: number;
}

/**
 * A follower of `store`: in-process and stalling (takes 16 flows, then nothing for 10 ms),
 * or a real client of the agent's Observer on TCP loopback that reads one response per
 * 50 ms (slow) or everything it can (fast).
 */
async function attachFollower(store: FlowStore, kind: FollowerKind): Promise<Follower> {
  const f: Follower = {
    got: 0, lost: 0, notices: 0,
    hurry: () => { slow = false; },
    async settle(added) {
      for (let i = 0; i < 200 && kind !== 'none' && f.got + f.lost < added; i++) await sleep(50);
      if (kind !== 'none' && f.got + f.lost !== added) log(`  warning: follower got ${f.got} + told lost ${f.lost} != ${added} added`);
    },
    stop: async () => {},
  };
  let slow = kind !== 'grpc-fast';
  if (kind === 'stalled') {
    let resumeTimer: NodeJS.Timeout | undefined;
    let taken = 0;
    const sub = store.follow(undefined, {
      deliver: (ev) => {
        if (ev.kind === 'lost') { f.lost += ev.count; f.notices++; } else f.got++;
        if (!slow || ++taken % 16 !== 0) return true;
        resumeTimer = setTimeout(() => sub.resume(), 10);
        return false;
      },
    });
    f.stop = async () => { clearTimeout(resumeTimer); sub.close(); };
  } else if (kind === 'grpc-slow' || kind === 'grpc-fast') {
    const server = await startObserver({ store, node: 'bench', tcp: '127.0.0.1:0', logger: quiet });
    const client = observerClient(server.addresses[0]!);
    const call = client.GetFlows({ follow: true });
    call.on('data', (r: { flow?: unknown; lostEvents?: { numEventsLost?: number } }) => {
      if (r.lostEvents) { f.lost += Number(r.lostEvents.numEventsLost ?? 0); f.notices++; } else if (r.flow) f.got++;
      if (!slow) return;
      // its window fills, then the server's queue for it overflows
      call.pause();
      setTimeout(() => call.resume(), 50);
    });
    call.on('error', () => {});
    while (store.followers === 0) await sleep(5);
    f.stop = async () => { call.cancel(); client.close(); await server.close(); };
  }
  return f;
}

interface StoreRun { name: string; rate: number; followerGot: number; followerLost: number; notices: number }

/** flows into the store in batches (as the ring hands them over), a turn of the event loop between batches */
async function storeRun(name: string, flows: readonly Flow[], kind: FollowerKind): Promise<StoreRun> {
  const store = new FlowStore();
  const follower = await attachFollower(store, kind);
  const mask = flows.length - 1;
  let j = 0;
  const batches = Math.ceil(STORE_FLOWS / BATCH);
  const t0 = process.hrtime.bigint();
  for (let b = 0; b < batches; b++) {
    for (let i = 0; i < BATCH; i++) store.add(flows[j++ & mask]!);
    await yieldLoop();
  }
  const rate = (batches * BATCH) / (Number(process.hrtime.bigint() - t0) / 1e9);
  follower.hurry();
  await follower.settle(batches * BATCH);
  await follower.stop();
  log(`store ${name}: ${fmt(rate)}/s, follower got ${follower.got}, told lost ${follower.lost} in ${follower.notices} notices`);
  return { name, rate, followerGot: follower.got, followerLost: follower.lost, notices: follower.notices };
}

function flowsForStore(ctx: FlowContext): Flow[] {
  const n = 4096;
  const raw = syntheticRecords(n);
  const out: Flow[] = [];
  for (let i = 0; i < n; i++) out.push(flowFromVerdictEvent(decodeVerdictEvent(raw.subarray(i * verdictEvent.size, (i + 1) * verdictEvent.size)), ctx));
  return out;
}

// --- the run ---

/** --user-only: the synthetic and store rows alone, no kernel, nothing written (for profiling) */
async function userOnly(): Promise<void> {
  const { snapshot, byCgroup } = snapshotFor([]);
  const ctx: FlowContext = { node: 'bench', snapshot, localEndpoint: (id) => byCgroup.get(id) };
  syntheticStages(ctx);
  const flows = flowsForStore(ctx);
  for (const f of ['none', 'stalled', 'grpc-slow', 'none'] as const) await storeRun(f, flows, f);
}

async function main(): Promise<void> {
  const loadBefore = loadavg()[0]!;
  const lab = new Lab(91);
  const datapaths: Datapath[] = [];
  let cleaned: Promise<void> | undefined;
  // also on Ctrl-C: namespaces, cgroups, pins and pod processes never outlive the run
  const cleanup = (): Promise<void> => (cleaned ??= (async () => {
    killLoad();
    for (const dp of datapaths) await dp.destroy().catch(() => {});
    await lab.destroy();
  })());
  const onSignal = (): void => { void cleanup().finally(() => process.exit(130)); };
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  try {
    lab.create();
    const pods = Array.from({ length: PODS }, (_, i) => lab.addPod(`load${i + 1}`));
    const host = lab.gateway;
    const { snapshot, byCgroup } = snapshotFor(pods);
    const localEndpoint = (id: bigint): EndpointInfo | undefined => byCgroup.get(id);
    const ctx: FlowContext = { node: 'bench', snapshot, localEndpoint };

    // user space first: nothing else running
    const synthetic = want('synthetic') ? syntheticStages(ctx) : [];

    const config = (tag: string, eventsBytes?: number): DatapathConfig => ({
      node: `bflows-${lab.id}-${tag}`, cgroupPath: lab.nodeCgroup, objectDir: bpfObjectDir,
      proxy: { ipv4: lab.gateway, port: 15001 }, ...(eventsBytes ? { eventsBytes } : {}),
    });
    const open = async (cfg: DatapathConfig): Promise<Datapath> => {
      const dp = await Datapath.open(cfg);
      datapaths.push(dp);
      // every pod enrolled, selected by an ALLOW policy with no rule for this peer: default deny
      dp.reconcile({
        endpoints: pods.map((p, i) => ({ cgroupId: p.cgroupId, endpointId: i + 1, identity: IDENTITY, enrolled: true, egressPolicyId: POLICY_ID })),
        ipcache: [{ cidr: `${lab.subnet}.0/24`, identity: 2 }], services: [], policy: [],
      });
      return dp;
    };

    // drain: a ring big enough to hold FILL events, emptied by each consumer in turn
    const drains: Array<{ name: string; r: RunResult }> = [];
    if (want('drain')) {
      const drainCfg = config('drain', DRAIN_RING_BYTES);
      const drainDp = await open(drainCfg);
      for (const c of [rawConsumer(drainDp.pinRoot), ingestConsumer(drainCfg, ctx)]) {
        const r = await drainRun(drainDp, pods, host, c);
        drains.push({ name: c.name, r });
        log(`drain ${c.name}: ${fmt(r.delivered / r.seconds)}/s (${r.delivered} records, lost while filling ${r.lost}), ${(r.cpuMs / 1000 / r.seconds).toFixed(2)} cores`);
      }
      await drainDp.destroy();
      datapaths.length = 0;
    }

    // live: the agent's own ring size, pods generating while the consumer reads
    const liveCfg = config('live');
    const liveDp = await open(liveCfg);
    const lives: LiveRow[] = [];
    const unpaced: LoadSpec = { host, port: DENIED_PORT, seconds: LIVE_SECONDS };
    const paced: LoadSpec = { ...unpaced, ratePerPod: TARGET / pods.length };
    const runs: Array<[string, LoadSpec, Consumer]> = [
      ['unpaced', unpaced, rawConsumer(liveDp.pinRoot)],
      ['unpaced', unpaced, ingestConsumer(liveCfg, ctx)],
      [`paced ${fmt(TARGET)}/s`, paced, rawConsumer(liveDp.pinRoot)],
      [`paced ${fmt(TARGET)}/s`, paced, ingestConsumer(liveCfg, ctx)],
      [`paced ${fmt(TARGET)}/s`, paced, ingestConsumer(liveCfg, ctx, 'grpc-slow')],
      [`paced ${fmt(TARGET)}/s`, paced, ingestConsumer(liveCfg, ctx, 'grpc-fast')],
    ];
    for (const [load, spec, c] of want('live') ? runs : []) {
      const r = await liveRun(liveDp, pods, spec, c);
      lives.push({ name: c.name, load, r, follower: c.follower });
      log(`live ${load} ${c.name}: made ${fmt(r.generated / r.loadSeconds)}/s, read ${fmt(r.delivered / r.seconds)}/s, lost ${r.lost}, ${(r.cpuMs / 1000 / r.seconds).toFixed(2)} cores, pods ${(r.loadCpuSeconds / r.loadSeconds).toFixed(2)} cores`);
      if (c.follower) log(`  follower got ${c.follower.got}, told lost ${c.follower.lost} in ${c.follower.notices} notices`);
    }

    // store only, with and without slow followers
    const flows = flowsForStore(ctx);
    const stores: StoreRun[] = [];
    if (want('store')) {
      stores.push(await storeRun('no follower', flows, 'none'));
      stores.push(await storeRun('+ a stalled in-process follower', flows, 'stalled'));
      stores.push(await storeRun('+ a gRPC GetFlows follow client that reads slowly', flows, 'grpc-slow'));
    }

    if (!ONLY) writeSection('flows', report(synthetic, drains, lives, stores, pods.length, loadBefore));
  } finally {
    await cleanup();
  }
}

type LiveRow = { name: string; load: string; r: RunResult; follower?: Consumer['follower'] };

function report(
  synthetic: Array<{ name: string; rate: number }>,
  drains: Array<{ name: string; r: RunResult }>,
  lives: LiveRow[],
  stores: StoreRun[],
  pods: number,
  loadBefore: number,
): string {
  const cores = (r: RunResult): string => (r.cpuMs / 1000 / r.seconds).toFixed(2);
  const pct = (a: number, b: number): string => `${(100 * a / Math.max(1, b)).toFixed(2)}%`;
  const drainRows = drains.map(({ name, r }) => [name, fmt(r.delivered), fmt(r.delivered / r.seconds), cores(r)]);
  const liveRows = lives.map(({ name, load, r, follower }) => [
    load, name, fmt(r.generated / r.loadSeconds), fmt(r.delivered / r.seconds), `${fmt(r.lost)} (${pct(r.lost, r.generated)})`, cores(r),
    (r.loadCpuSeconds / r.loadSeconds).toFixed(2),
    follower ? `${fmt(follower.got)} / ${fmt(follower.lost)}` : '—',
  ]);
  const synthRows = synthetic.map((s) => [s.name, fmt(s.rate), (1e9 / s.rate).toFixed(0)]);
  const storeRows = stores.map((s) => [
    s.name, fmt(s.rate), (1e9 / s.rate).toFixed(0),
    s.name === 'no follower' ? '—' : fmt(s.followerGot), s.name === 'no follower' ? '—' : `${fmt(s.followerLost)} in ${s.notices} notices`,
  ]);
  const paced = lives.filter((l) => l.load.startsWith('paced') && l.name.startsWith('full ingest'));
  const lossy = paced.filter(({ r }) => r.lost > 0);
  const verdict = lossy.length === 0
    ? `the full ingest path lost nothing — alone, with a slow follower, and with a follower reading as fast as it can (${paced.length} runs)`
    : `the full ingest path **lost events** in ${lossy.length} of ${paced.length} runs: ${lossy.map(({ name, r }) => `${name}: ${fmt(r.lost)}`).join('; ')}`;
  const unpaced = lives.find((l) => l.load === 'unpaced' && l.name.startsWith('full ingest'));
  const balanced = [...drains, ...lives].every(({ r }) => r.delivered + r.lost === r.generated);
  return `## Flow ingest

Machine: ${machine()}.
Load average ${loadBefore.toFixed(2)} when the run began: other work on the machine shows up in
every row. The real datapath on a Lab node (network
namespaces and cgroups): ${pods} pods, enrolled and selected by an ALLOW policy that admits
nothing, each run \`bench/helpers/deny_loop.py\`: one socket, \`connect()\` in a loop,
every call denied by \`cgroup/connect4\` with EPERM and one DROPPED verdict event in the
ring buffer. "Made" is the kernel's own drop counter, "lost" its lost-events counter (the
ring was full); "cores" is CPU time of the reading process (main thread, the addon's
reader thread, V8's GC threads) per second, "pods' cores" the same for the pods.
${balanced
    ? 'Every event is accounted for: read + lost = made, in every row.'
    : '**Not every event is accounted for**: in some rows read + lost ≠ made.'}

**Draining a filled ring** (${fmt(FILL)} events written first with no reader, ring of
${DRAIN_RING_BYTES >> 20} MiB, then read): the read side alone, with both cores to itself.

${table(['consumer', 'events', 'events/s', 'cores'], drainRows)}

**Live** (${LIVE_SECONDS} s, the agent's own ring of 4 MiB): the pods make events while they
are read, and pods, reader thread and JavaScript share the 2 cores. "paced" runs each pod at
${fmt(TARGET / pods)} events/s. A follower is a \`GetFlows\` follow call to an Observer
on the store being filled (TCP loopback); "follower" is flows it received / flows it was
told (\`lost_events\`) it lost.

${table(['load', 'consumer', 'made/s', 'read/s', 'lost in the kernel', 'cores', 'pods\' cores', 'follower'], liveRows)}

At ${fmt(TARGET)} events/s offered, ${verdict}.
A follower costs the agent CPU in proportion to what it reads (gRPC writes happen on the
same thread), not in proportion to how slow it is.
${unpaced ? `Unpaced, the pods offer ${fmt(unpaced.r.generated / unpaced.r.loadSeconds)} events/s and take ${(unpaced.r.loadCpuSeconds / unpaced.r.loadSeconds).toFixed(2)} of the 2 cores; the agent
reads ${fmt(unpaced.r.delivered / unpaced.r.seconds)}/s with what is left, and the kernel counts the rest as lost (readers are
told: \`lost_events\` from PERF_EVENT_RING_BUFFER).` : ''}

**The user-space path alone** on synthetic records (no kernel, one core; batches of
${BATCH} records as the addon delivers them, ${fmt(SYNTHETIC)} records per row; each row
adds one stage to the one above):

${table(['stages', 'events/s', 'ns per event'], synthRows)}

**Store only, with slow followers** (${fmt(STORE_FLOWS)} ready flows into a
${fmt(new FlowStore().capacity)}-flow store, in batches of ${BATCH} with a turn of the event
loop between batches, so followers get their turns as they would in the agent). The stalled
follower takes 16 flows then nothing for 10 ms; the gRPC client reads one response every
50 ms. Each follower's queue holds 4,096 flows; what does not fit is counted and reported
to it as \`lost_events\`, and after the timed part it reads everything left, so flows
received + reported lost = flows added.

${table(['store ingest', 'flows/s', 'ns per flow', 'follower got', 'follower told lost'], storeRows)}

Insertion is O(1) and stays so with followers: each follower adds one offer to its own
bounded queue per flow, a few tens of nanoseconds against the microsecond or so it costs to
make the flow from a kernel event, whether the follower keeps up or not.
`;
}

if (process.argv.includes('--user-only')) await userOnly(); else await main();
