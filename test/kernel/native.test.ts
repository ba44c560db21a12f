// The native addon against the real kernel: objects, maps, links, ring buffers and
// network namespaces. Runs as root; when the host cannot run it the test fails (the
// probe says what is missing), it never skips. Every cgroup, pin, link and namespace
// it makes carries a random suffix and is removed in after(), also on failure.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  BPF_NOEXIST, BpfError, cgroupQuery, closeFd, listenTcpInNetns, numPossibleCpus, openObject, openPinnedLink,
  openPinnedMap, probe, runInNetns, socketInNetns, subscribeRingBuffer, unpin, type BpfLink, type BpfObject,
} from '../../native/index.ts';

const ROOT = (() => {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'nodal') return dir;
  }
  throw new Error('repo root (package.json named "nodal") not found');
})();
const FACADE_URL = new URL('../../native/index.js', import.meta.url).href;

const P = probe();
const ID = randomBytes(4).toString('hex');
const BPFFS_DIR = join(P.bpffs ?? '/sys/fs/bpf', `nodaltest-native-${ID}`);
const PIN_ROOT = join(BPFFS_DIR, 'root');
const CG = join(P.cgroup2 ?? '/sys/fs/cgroup', `nodaltest-native-${ID}`);
const NETNS = `nodaltest-${ID}`;
const NETNS_PATH = `/run/netns/${NETNS}`;

// stats[] slots written by test/fixtures/bpf/native_probe.bpf.c
const STAT_TAG = 0;
const STAT_A = 1;
const STAT_B = 2;
const STAT_LOST = 3;
const TAG = 0xc0ffee;
const EVENT_SIZE = 24;

const cleanups: Array<() => void | Promise<void>> = [];
let PROBE_OBJ = '';
let BAD_OBJ = '';
let listener: net.Server;
let listenerPort = 0;

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};
const lpmKey = (prefixlen: number, ip: string): Buffer => {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(prefixlen, 0);
  for (const [i, o] of ip.split('.').entries()) b[4 + i] = Number(o);
  return b;
};

/** the Makefile's bpf rule, for fixtures; a no-op when make already built them */
function fixtureObject(name: string): string {
  const src = join(ROOT, 'test/fixtures/bpf', `${name}.bpf.c`);
  const obj = join(ROOT, 'bpf/build/fixtures', `${name}.bpf.o`);
  if (existsSync(obj) && statSync(obj).mtimeMs >= statSync(src).mtimeMs) return obj;
  mkdirSync(dirname(obj), { recursive: true });
  const vmlinux = join(ROOT, 'bpf/build/vmlinux.h');
  if (!existsSync(vmlinux)) {
    const h = execFileSync('bpftool', ['btf', 'dump', 'file', '/sys/kernel/btf/vmlinux', 'format', 'c'], { maxBuffer: 1 << 28 });
    writeFileSync(`${vmlinux}.tmp`, h);
    execFileSync('mv', [`${vmlinux}.tmp`, vmlinux]);
  }
  const arch = process.arch === 'arm64' ? 'arm64' : 'x86';
  execFileSync('clang', ['-g', '-O2', '-Wall', '-Werror', '-target', 'bpf', `-D__TARGET_ARCH_${arch}`,
    '-Ibpf/build', '-Ibpf', '-c', src, '-o', obj], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  return obj;
}

// joins the cgroup, then connects n times to 127.0.0.1:port (each connect runs connect4)
const TRIGGER = 'echo $$ > "$1/cgroup.procs" || exit 90; for ((i = 0; i < $3; i++)); do ' +
  'exec 3<>"/dev/$4/127.0.0.1/$2" || exit 91; exec 3>&-; done';

function connectFromCgroup(cg: string, port: number, n: number, proto: 'tcp' | 'udp'): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', TRIGGER, 'trigger', cg, String(port), String(n), proto], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`trigger exited ${code}: ${stderr}`))));
  });
}

function isBpfError(code: string, errno?: number, message?: RegExp) {
  return (err: unknown): true => {
    assert.ok(err instanceof BpfError, `expected a BpfError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (errno !== undefined) assert.equal(err.errno, errno, err.message);
    if (message) assert.match(err.message, message);
    return true;
  };
}

function stat(obj: BpfObject, slot: number): bigint {
  const m = obj.map('stats');
  try {
    return m.lookup(u32(slot))!.readBigUInt64LE(0);
  } finally {
    m.close();
  }
}

async function loadProbe(): Promise<BpfObject> {
  const obj = openObject(PROBE_OBJ, { pinRoot: PIN_ROOT, rodata: { probe_tag: u32(TAG) }, mapMaxEntries: { counts: 64 } });
  cleanups.push(() => obj.close());
  await obj.load();
  return obj;
}

function attach(obj: BpfObject, program: string): BpfLink {
  const link = obj.attachCgroup(program, CG);
  cleanups.push(() => { link.unpin(); link.close(); });
  return link;
}

before(async () => {
  const missing: string[] = [];
  if (!P.root) missing.push('root');
  if (!P.bpfSyscall) missing.push('bpf() syscall');
  if (!P.btf) missing.push('kernel BTF');
  if (!P.bpffs) missing.push('bpffs mount');
  if (!P.cgroup2) missing.push('cgroup2 mount');
  if (!P.ringbuf) missing.push('ring buffer maps');
  if (!P.cgroupSockAddr) missing.push('cgroup sock_addr programs');
  assert.deepEqual(missing, [], `kernel test cannot run, missing: ${missing.join(', ')} (${P.reason ?? ''})`);

  PROBE_OBJ = fixtureObject('native_probe');
  BAD_OBJ = fixtureObject('native_bad');
  mkdirSync(CG);
  listener = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  listenerPort = (listener.address() as net.AddressInfo).port;
});

after(async () => {
  const errors: unknown[] = [];
  for (const fn of cleanups.reverse()) {
    try {
      await fn();
    } catch (err) {
      errors.push(err);
    }
  }
  if (listener) await new Promise((resolve) => listener.close(resolve));
  spawnSync('ip', ['netns', 'del', NETNS], { stdio: 'ignore' });
  rmSync(BPFFS_DIR, { recursive: true, force: true });
  // the trigger shells have exited; the kernel may still be releasing the cgroup
  for (let i = 0; existsSync(CG); i++) {
    try {
      rmdirSync(CG);
    } catch (err) {
      if (i >= 50) { errors.push(err); break; }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  assert.deepEqual(errors, [], 'cleanup failed');
});

test('kernel prerequisites are present (a kernel test fails, never skips)', () => {
  assert.ok(P.root && P.bpfSyscall && P.btf && P.bpffs && P.cgroup2 && P.ringbuf && P.cgroupSockAddr, P.reason);
  assert.equal(probe(), P, 'probe() is cached');
  assert.ok(numPossibleCpus() >= 1);
});

describe('objects and maps', () => {
  let obj: BpfObject;
  before(async () => { obj = await loadProbe(); });

  test('lists programs and maps, with the mapMaxEntries override', () => {
    assert.deepEqual(obj.programNames().sort(), ['connect4_a', 'connect4_b']);
    const counts = obj.mapInfo().find((m) => m.name === 'counts');
    assert.deepEqual(counts, { name: 'counts', type: 1, keySize: 4, valueSize: 8, maxEntries: 64 });
  });

  test('a rodata tunable and a max-entries override take effect in the kernel', async () => {
    const link = attach(obj, 'connect4_a');
    const runs = stat(obj, STAT_A);
    await connectFromCgroup(CG, listenerPort, 1, 'tcp');
    link.close();
    assert.equal(stat(obj, STAT_TAG), BigInt(TAG), 'the program saw the tunable');
    assert.equal(stat(obj, STAT_A), runs + 1n);
    const last = obj.map('last_event');
    const ev = last.lookup(u32(0))!;
    last.close();
    assert.equal(ev.readUInt32LE(0), TAG);
    assert.equal(ev.readUInt32LE(4), 1, 'variant a');
    assert.equal([...ev.subarray(8, 12)].join('.'), '127.0.0.1');
    assert.equal(ev.readUInt16LE(12), listenerPort);

    // 16 in the object file, 64 after the override: the 64th insert fits, the 65th does not
    const counts = obj.map('counts');
    assert.equal(counts.maxEntries, 64);
    for (let i = 0; i < 64; i++) counts.update(u32(1000 + i), u64(BigInt(i)));
    assert.throws(() => counts.update(u32(5000), u64(1n)), isBpfError('NODAL_ERR_BPF_MAP', 7 /* E2BIG */));
    for (let i = 0; i < 64; i++) assert.equal(counts.delete(u32(1000 + i)), true);
    counts.close();
  });

  test('map operations: lookup, update, delete, iteration, size checks', () => {
    const m = obj.map('counts');
    try {
      assert.equal(m.lookup(u32(1)), undefined, 'missing key');
      assert.equal(m.delete(u32(1)), false, 'delete of a missing key');
      assert.equal(m.nextKey(null), undefined, 'empty map');
      assert.throws(() => m.update(Buffer.alloc(3), u64(1n)),
        isBpfError('NODAL_ERR_BPF_MAP', 22, /^map counts update: key is 3 bytes, map expects 4$/));
      assert.throws(() => m.lookup(Buffer.alloc(5)), isBpfError('NODAL_ERR_BPF_MAP', 22, /key is 5 bytes, map expects 4/));
      assert.throws(() => m.update(u32(1), Buffer.alloc(4)), isBpfError('NODAL_ERR_BPF_MAP', 22, /value is 4 bytes, map expects 8/));

      for (const k of [3, 1, 2]) m.update(u32(k), u64(BigInt(k * 10)));
      assert.equal(m.lookup(u32(2))!.readBigUInt64LE(0), 20n);
      assert.throws(() => m.update(u32(2), u64(0n), BPF_NOEXIST), isBpfError('NODAL_ERR_BPF_MAP', 17 /* EEXIST */));
      assert.deepEqual(m.keys().map((k) => k.readUInt32LE(0)).sort(), [1, 2, 3]);
      const first = m.nextKey(null)!;
      assert.equal(first.length, 4);
      assert.ok(m.nextKey(first) !== undefined, 'a second key follows the first');
      assert.equal(m.delete(u32(2)), true);
      assert.deepEqual(m.keys().map((k) => k.readUInt32LE(0)).sort(), [1, 3]);
      for (const k of m.keys()) m.delete(k);
      assert.deepEqual(m.keys(), []);
    } finally {
      m.close();
    }
    assert.throws(() => m.lookup(u32(1)), isBpfError('NODAL_ERR_BPF_ARG'), 'use after close');
  });

  test('updateBatch on a hash map and on an LPM trie', () => {
    const counts = obj.map('counts');
    const n = 10;
    const keys = Buffer.concat(Array.from({ length: n }, (_, i) => u32(100 + i)));
    const values = Buffer.concat(Array.from({ length: n }, (_, i) => u64(BigInt(i))));
    assert.equal(counts.updateBatch(keys, values, n), n);
    assert.equal(counts.keys().length, n);
    assert.equal(counts.lookup(u32(107))!.readBigUInt64LE(0), 7n);
    assert.throws(() => counts.updateBatch(keys, values, n + 1), isBpfError('NODAL_ERR_BPF_MAP', 22));
    for (const k of counts.keys()) counts.delete(k);
    counts.close();

    const trie = obj.map('prefixes');
    const prefixes: Array<[number, string]> = [[8, '10.0.0.0'], [16, '10.1.0.0'], [24, '10.1.2.0']];
    const tk = Buffer.concat(prefixes.map(([len, ip]) => lpmKey(len, ip)));
    const tv = Buffer.concat(prefixes.map(([len]) => u32(len)));
    assert.equal(trie.updateBatch(tk, tv, prefixes.length), prefixes.length);
    assert.equal(trie.lookup(lpmKey(32, '10.1.2.3'))!.readUInt32LE(0), 24, 'longest prefix wins');
    assert.equal(trie.lookup(lpmKey(32, '10.9.9.9'))!.readUInt32LE(0), 8);
    assert.equal(trie.lookup(lpmKey(32, '192.0.2.1')), undefined);
    trie.close();

    // a devmap has no batch op (ENOTSUPP): the per-entry fallback, still one call
    const devs = obj.map('devices');
    assert.equal(devs.updateBatch(Buffer.concat([u32(0), u32(2)]), Buffer.concat([u32(1), u32(1)]), 2), 2); // ifindex 1: lo
    assert.equal(devs.lookup(u32(2))!.readUInt32LE(0), 1);
    devs.close();
  });

  test('per-CPU maps hold one 8-aligned slot per possible CPU', () => {
    const m = obj.map('percpu_hits');
    try {
      assert.equal(m.perCpu, true);
      assert.equal(m.valueBufferSize, 8 * numPossibleCpus());
      assert.equal(m.lookup(u32(0))!.length, m.valueBufferSize);
      assert.throws(() => m.update(u32(0), u64(1n)), isBpfError('NODAL_ERR_BPF_MAP', 22, /per-CPU/));
      m.update(u32(0), Buffer.alloc(m.valueBufferSize, 1));
    } finally {
      m.close();
    }
  });

  test('a pinned map reopens with the same contents', () => {
    const path = join(BPFFS_DIR, 'maps', 'stats');
    const m = obj.map('stats');
    m.pin(path);
    cleanups.push(() => unpin(path));
    m.update(u32(STAT_LOST), u64(77n));
    const again = openPinnedMap(path);
    assert.equal(again.name, 'stats');
    assert.equal(again.lookup(u32(STAT_LOST))!.readBigUInt64LE(0), 77n);
    again.update(u32(STAT_LOST), u64(0n));
    assert.equal(m.lookup(u32(STAT_LOST))!.readBigUInt64LE(0), 0n, 'one map behind both fds');
    again.close();
    m.close();
    unpin(path);
    unpin(path); // a missing pin is fine
    assert.throws(() => openPinnedMap(path), isBpfError('NODAL_ERR_BPF_PIN', 2));
    assert.throws(() => m.pin('/tmp/not-bpffs/x'), isBpfError('NODAL_ERR_BPF_ARG'), 'closed map');
  });

  test('pinRoot shares LIBBPF_PIN_BY_NAME maps between objects', async () => {
    const cfg = obj.map('pinned_cfg');
    cfg.update(u32(0), u64(42n));
    assert.ok(existsSync(join(PIN_ROOT, 'pinned_cfg')));
    const other = openObject(PROBE_OBJ, { pinRoot: PIN_ROOT });
    try {
      await other.load();
      const m = other.map('pinned_cfg');
      assert.equal(m.lookup(u32(0))!.readBigUInt64LE(0), 42n);
      m.close();
    } finally {
      other.close();
    }
    cfg.close();
  });

  test('structLayout reads the C struct from BTF', () => {
    assert.deepEqual(obj.structLayout('native_probe_event'), {
      size: EVENT_SIZE,
      members: [
        { name: 'tag', offset: 0, size: 4 }, { name: 'variant', offset: 4, size: 4 },
        { name: 'daddr', offset: 8, size: 4 }, { name: 'dport', offset: 12, size: 2 },
        { name: 'pad', offset: 14, size: 2 }, { name: 'pid_tgid', offset: 16, size: 8 },
      ],
    });
    assert.throws(() => obj.structLayout('no_such_struct'), isBpfError('NODAL_ERR_BPF_ARG', 22, /no_such_struct/));
  });

  test('a closed object refuses use; close is idempotent', () => {
    const o = openObject(PROBE_OBJ);
    assert.throws(() => o.map('stats'), isBpfError('NODAL_ERR_BPF_ARG', 22, /not loaded/));
    o.close();
    o.close();
    assert.throws(() => o.programNames(), isBpfError('NODAL_ERR_BPF_ARG', 22, /closed/));
  });
});

describe('links', () => {
  let obj: BpfObject;
  before(async () => { obj = await loadProbe(); });

  test('attach, pin, reopen, swap the program, detach', async () => {
    const path = join(BPFFS_DIR, 'links', 'connect4');
    const link = attach(obj, 'connect4_a');
    const progA = link.progId;
    assert.ok(link.id > 0 && progA > 0);
    assert.deepEqual(cgroupQuery(CG, 'connect4'), [progA]);
    link.pin(path);
    link.close();
    assert.deepEqual(cgroupQuery(CG, 'connect4'), [progA], 'a pinned link outlives its fd');

    const pinned = openPinnedLink(path);
    cleanups.push(() => { pinned.unpin(); pinned.close(); });
    assert.equal(pinned.id, link.id);
    pinned.update(obj, 'connect4_b');
    assert.notEqual(pinned.progId, progA);
    assert.deepEqual(cgroupQuery(CG, 'connect4'), [pinned.progId], 'swapped in place, no second attachment');

    const b = stat(obj, STAT_B);
    await connectFromCgroup(CG, listenerPort, 2, 'tcp');
    assert.equal(stat(obj, STAT_B), b + 2n, 'program b runs');

    pinned.detach();
    assert.deepEqual(cgroupQuery(CG, 'connect4'), []);
    pinned.unpin();
    assert.equal(existsSync(path), false);
    pinned.close();
  });

  test('attaching to a missing cgroup fails and attaches nothing', () => {
    const missing = join(CG, 'no-such-cgroup');
    assert.throws(() => obj.attachCgroup('connect4_a', missing),
      isBpfError('NODAL_ERR_BPF_ATTACH', 2, new RegExp(`^attach cgroup/connect4 to ${missing}: ENOENT \\(cgroup does not exist\\)$`)));
    assert.deepEqual(cgroupQuery(CG, 'connect4'), []);
    assert.throws(() => obj.attachCgroup('no_such_prog', CG), isBpfError('NODAL_ERR_BPF_ARG', 22, /no_such_prog/));
  });

  test('pins: missing, wrong kind, outside bpffs', () => {
    assert.throws(() => openPinnedLink(join(BPFFS_DIR, 'nothing-here')), isBpfError('NODAL_ERR_BPF_PIN', 2));
    const mapPath = join(BPFFS_DIR, 'maps', 'counts');
    const m = obj.map('counts');
    m.pin(mapPath);
    cleanups.push(() => unpin(mapPath));
    assert.throws(() => openPinnedLink(mapPath), isBpfError('NODAL_ERR_BPF_PIN', 22, /is a bpf-map, not a bpf-link/));
    assert.throws(() => m.pin(join(tmpdir(), `nodaltest-${ID}`, 'counts')), isBpfError('NODAL_ERR_BPF_PIN', 18, /not on a bpffs mount/));
    assert.equal(existsSync(join(tmpdir(), `nodaltest-${ID}`)), false, 'nothing created outside bpffs');
    m.close();
    unpin(mapPath);
  });
});

describe('ring buffer', () => {
  test('delivers records in batches of at most maxBatch; close() joins', async () => {
    const obj = await loadProbe();
    const link = attach(obj, 'connect4_a');
    await connectFromCgroup(CG, 9, 10, 'udp'); // ten records waiting before anyone reads
    link.close();

    const sizes: number[] = [];
    const records: Buffer[] = [];
    let done!: () => void;
    const all = new Promise<void>((resolve) => { done = resolve; });
    const events = obj.map('events');
    const reader = subscribeRingBuffer(events, (batch) => {
      sizes.push(batch.length);
      records.push(...batch);
      if (records.length >= 10) done();
    }, { maxBatch: 4 });
    cleanups.push(() => reader.close());
    await all;
    await reader.close();
    await reader.close(); // idempotent
    events.close();

    assert.deepEqual(sizes, [4, 4, 2], 'one poll drains the ring in batches of four');
    assert.equal(reader.delivered, 10);
    for (const r of records) {
      assert.equal(r.length, EVENT_SIZE);
      assert.equal(r.readUInt32LE(0), TAG);
      assert.equal(r.readUInt16LE(12), 9);
    }
    assert.equal(stat(obj, STAT_LOST), 0n);
  });

  test('a slow consumer makes the kernel count lost records; user space drops none', async () => {
    const obj = await loadProbe();
    const link = attach(obj, 'connect4_a');
    const flood = 300; // the ring holds 4096 / (8 + 24) = 128 records
    const total = flood + 1;
    let flooded = false;
    let done!: () => void;
    const settled = new Promise<void>((resolve) => { done = resolve; });
    const events = obj.map('events');
    const reader = subscribeRingBuffer(events, () => {
      if (!flooded) {
        flooded = true;
        // JS is busy: the reader thread blocks on the full queue and stops consuming
        execFileSync('bash', ['-c', TRIGGER, 'trigger', CG, '9', String(flood), 'udp']);
      }
      if (reader.delivered + Number(stat(obj, STAT_LOST)) === total) done();
    }, { maxBatch: 1 });
    cleanups.push(() => reader.close());
    await connectFromCgroup(CG, 9, 1, 'udp');
    await settled;
    await reader.close();
    link.close();
    events.close();
    const lost = Number(stat(obj, STAT_LOST));
    assert.ok(lost > 0, 'the kernel ring overflowed');
    assert.equal(reader.delivered + lost, total, 'every record was delivered or counted lost');
  });

  test('subscribing to a map that is not a ring buffer is an argument error', async () => {
    const obj = await loadProbe();
    const m = obj.map('stats');
    assert.throws(() => subscribeRingBuffer(m, () => {}), isBpfError('NODAL_ERR_BPF_ARG', 22, /not a ring buffer/));
    assert.throws(() => subscribeRingBuffer(m, () => {}, { maxBatch: 0 }), isBpfError('NODAL_ERR_BPF_ARG'));
    m.close();
  });

  // a child process with an open reader must exit cleanly: via process.exit() while the
  // reader thread is blocked on a full queue, and at the natural end with an unref'd reader
  for (const mode of ['exit-in-callback', 'natural-exit']) {
    test(`process exit with an open reader (${mode}) neither crashes nor hangs`, () => {
      const script = `
        import { execFileSync } from 'node:child_process';
        import { openObject, subscribeRingBuffer } from ${JSON.stringify(FACADE_URL)};
        const [objPath, cg, mode, trigger, pinRoot] = process.argv.slice(1);
        const obj = openObject(objPath, { pinRoot });
        await obj.load();
        const link = obj.attachCgroup('connect4_a', cg);
        const reader = subscribeRingBuffer(obj.map('events'), () => { if (mode === 'exit-in-callback') process.exit(0); }, { maxBatch: 1 });
        execFileSync('bash', ['-c', trigger, 'trigger', cg, '9', '50', 'udp']);
        if (mode === 'natural-exit') reader.unref();
      `;
      // the timeout only guards the test run against a hang; it is not what is tested
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, PROBE_OBJ, CG, mode, TRIGGER, PIN_ROOT],
        { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.signal, null, `child was killed by ${r.signal}: ${r.stderr}`);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(cgroupQuery(CG, 'connect4'), [], 'the child\'s link went with it');
    });
  }
});

describe('load and open errors', () => {
  test('a missing object file', () => {
    const path = join(ROOT, 'bpf/build/fixtures/does-not-exist.bpf.o');
    assert.throws(() => openObject(path), isBpfError('NODAL_ERR_BPF_OPEN', 2,
      /does-not-exist\.bpf\.o: ENOENT \(object file not found: run make build\)/));
  });

  test('an addon that was not built says so', () => {
    // a copy of the facade in a tree without native/build
    const tree = join(tmpdir(), `nodaltest-${ID}-tree`);
    cleanups.push(() => rmSync(tree, { recursive: true, force: true }));
    mkdirSync(join(tree, 'dist/native'), { recursive: true });
    writeFileSync(join(tree, 'package.json'), JSON.stringify({ name: 'nodal', type: 'module' }));
    for (const f of ['index.js', 'errors.js']) writeFileSync(join(tree, 'dist/native', f), readFileSync(new URL(`../../native/${f}`, import.meta.url)));
    const script = `
      import { numPossibleCpus, probe } from ${JSON.stringify(new URL(`file://${tree}/dist/native/index.js`).href)};
      const p = probe();
      try { numPossibleCpus(); } catch (e) { console.log(JSON.stringify({ code: e.code, hint: e.hint, message: e.message, probe: p })); }
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { code: string; hint: string; message: string; probe: { bpfSyscall: boolean; reason: string } };
    assert.equal(out.code, 'NODAL_ERR_NATIVE_MISSING');
    assert.equal(out.hint, 'run make build');
    assert.match(out.message, /nodal_native\.node/);
    assert.equal(out.probe.bpfSyscall, false, 'probe() reports instead of throwing');
    assert.match(out.probe.reason, /run make build/);
  });

  test('a corrupt object file', () => {
    const path = join(tmpdir(), `nodaltest-${ID}-corrupt.bpf.o`);
    writeFileSync(path, randomBytes(4096));
    cleanups.push(() => rmSync(path, { force: true }));
    assert.throws(() => openObject(path), isBpfError('NODAL_ERR_BPF_OPEN', undefined, /not a valid BPF ELF object/));
  });

  test('unknown or mis-sized tunables and unknown maps', () => {
    assert.throws(() => openObject(PROBE_OBJ, { rodata: { no_such_var: u32(1) } }), isBpfError('NODAL_ERR_BPF_ARG', 22, /no_such_var/));
    assert.throws(() => openObject(PROBE_OBJ, { rodata: { probe_tag: u64(1n) } }),
      isBpfError('NODAL_ERR_BPF_ARG', 22, /rodata 'probe_tag' is 8 bytes, the variable is 4/));
    assert.throws(() => openObject(PROBE_OBJ, { mapMaxEntries: { nope: 4 } }), isBpfError('NODAL_ERR_BPF_ARG', 22, /no map named 'nope'/));
  });

  test('a program the verifier rejects', async () => {
    const obj = openObject(BAD_OBJ);
    cleanups.push(() => obj.close());
    await assert.rejects(obj.load(), (err: unknown) => {
      isBpfError('NODAL_ERR_BPF_LOAD', 13 /* EACCES */, /rejected by the verifier/)(err);
      const log = (err as BpfError).verifierLog ?? '';
      assert.match(log, /BEGIN PROG LOAD LOG/);
      assert.match(log, /connect4_oob/);
      return true;
    });
    assert.throws(() => obj.programNames(), isBpfError('NODAL_ERR_BPF_ARG', 22, /closed/), 'a failed load closes the object');
  });
});

describe('network namespaces', () => {
  before(() => {
    execFileSync('ip', ['netns', 'add', NETNS]);
    execFileSync('ip', ['-n', NETNS, 'link', 'set', 'lo', 'up']);
  });

  const selfNs = (): string => readlinkSync('/proc/thread-self/ns/net');

  // connect from inside the namespace with bash: exit 0 when the connect succeeded
  const connectInNetns = (port: number): Promise<number | null> => new Promise((resolve) => {
    const c = spawn('ip', ['netns', 'exec', NETNS, 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`], { stdio: 'ignore' });
    c.on('close', resolve);
  });
  const connectFromHost = (port: number): Promise<string> => new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve('connected'); });
    s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });

  test('runInNetns switches the calling thread and always switches back', () => {
    const host = selfNs();
    const inside = runInNetns(NETNS_PATH, () => selfNs());
    assert.equal(inside, `net:[${statSync(NETNS_PATH).ino}]`);
    assert.notEqual(inside, host);
    assert.equal(selfNs(), host);
    assert.throws(() => runInNetns(NETNS_PATH, () => { throw new Error('boom'); }), /boom/);
    assert.equal(selfNs(), host, 'back home after a throw');
    assert.throws(() => runInNetns(`/run/netns/nodaltest-missing-${ID}`, () => 1), isBpfError('NODAL_ERR_NETNS', 2));
  });

  test('listenTcpInNetns listens inside the namespace only', async () => {
    const fd = listenTcpInNetns(NETNS_PATH, '127.0.0.1', 0);
    let accepted = 0;
    const server = net.createServer((s) => { accepted++; s.destroy(); });
    await new Promise<void>((resolve) => server.listen({ fd }, resolve));
    try {
      const port = (server.address() as net.AddressInfo).port;
      assert.equal(await connectInNetns(port), 0, 'reachable from inside the namespace');
      assert.equal(await connectFromHost(port), 'ECONNREFUSED', 'not reachable from the host namespace');
      while (accepted < 1) await new Promise((resolve) => setImmediate(resolve));
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    assert.throws(() => listenTcpInNetns(NETNS_PATH, 'localhost', 0), isBpfError('NODAL_ERR_BPF_ARG'));
  });

  test('socketInNetns creates the socket inside the namespace', async () => {
    const fd = socketInNetns(NETNS_PATH, 4, 'tcp');
    const server = net.createServer((s) => s.destroy());
    // listen() on an unbound socket binds an ephemeral port in the socket's namespace
    await new Promise<void>((resolve) => server.listen({ fd }, resolve));
    try {
      const port = (server.address() as net.AddressInfo).port;
      assert.equal(await connectInNetns(port), 0);
      assert.equal(await connectFromHost(port), 'ECONNREFUSED');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    const udp6 = socketInNetns(NETNS_PATH, 6, 'udp');
    assert.ok(udp6 > 2);
    closeFd(udp6);
  });
});
