// The native addon's public surface, and the only module that loads nodal_native.node.
// Kernel work happens in native/src (plain C over libbpf behind a thin node-addon-api
// layer); this file keeps the types, defaults and path handling.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfError, ENOENT, argError, errnoName, fromNative, type NativeErrorInfo } from './errors.ts';

export { BpfError, errnoName } from './errors.ts';
export type { BpfErrorCode } from './errors.ts';

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

export interface OpenOptions {
  /** libbpf pin_root_path: maps with LIBBPF_PIN_BY_NAME are reused from / pinned here (created if absent, must be on bpffs) */
  pinRoot?: string;
  /** const volatile globals by variable name, each exactly the variable's size */
  rodata?: Record<string, Buffer>;
  /** bpf_map__set_max_entries before load */
  mapMaxEntries?: Record<string, number>;
}

export interface MapInfo {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

export interface StructLayout {
  size: number;
  members: Array<{ name: string; offset: number; size: number }>;
}

export type CgroupAttachType = 'connect4' | 'connect6' | 'sock_ops' | 'ingress' | 'egress';

export interface RingBufferOptions {
  /** records per JS call; default 256 */
  maxBatch?: number;
  /** how often the reader thread checks for close(); default 50 */
  pollMs?: number;
}

export interface ProbeResult {
  root: boolean;
  bpfSyscall: boolean;
  btf: boolean;
  bpffs: string | null;
  cgroup2: string | null;
  ringbuf: boolean;
  cgroupSockAddr: boolean;
  /** why each false / null entry is so */
  reason?: string;
}

// ---- the binding ---------------------------------------------------------------

interface NativeObject {
  load(): Promise<void>;
  programNames(): string[];
  mapInfo(): MapInfo[];
  mapFd(name: string): number;
  attachCgroup(program: string, cgroupPath: string): number;
  structLayout(name: string): StructLayout;
  programFd(program: string): number;
  close(): void;
}

interface NativeMapInfo extends MapInfo {
  id: number;
  flags: number;
  perCpu: boolean;
  valueBufferSize: number;
}

interface NativeMap {
  info(): NativeMapInfo;
  fd(): number;
  lookup(key: Uint8Array): Buffer | undefined;
  update(key: Uint8Array, value: Uint8Array, flags: number): void;
  delete(key: Uint8Array): boolean;
  nextKey(key: Uint8Array | null): Buffer | undefined;
  keys(): Buffer;
  updateBatch(keys: Uint8Array, values: Uint8Array, count: number, flags: number): number;
  pin(path: string): void;
  close(): void;
}

interface NativeLink {
  info(): { id: number; progId: number; type: number; attachType: number; cgroupId: number };
  pin(path: string): void;
  update(progFd: number): void;
  detach(): void;
  close(): void;
}

interface NativeReader {
  close(): Promise<void>;
  delivered(): number;
  ref(): void;
  unref(): void;
}

interface Binding {
  init(makeError: (info: NativeErrorInfo) => BpfError): void;
  openPinned(path: string, kind: 'link' | 'map'): number;
  unpin(path: string): void;
  closeFd(fd: number): void;
  netnsEnter(path: string): number;
  netnsLeave(saved: number): void;
  socketInNetns(path: string, family: number, type: string): number;
  listenTcpInNetns(path: string, host: string, port: number, backlog: number): number;
  cgroupQuery(path: string, type: string): number[];
  numPossibleCpus(): number;
  probe(): { bpfSyscall: number; ringbuf: number; cgroupSockAddr: number };
  BpfObject: new (
    path: string,
    pinRoot: string | null,
    rodata: Record<string, Uint8Array> | null,
    maxEntries: Record<string, number> | null,
  ) => NativeObject;
  BpfMap: new (fd: number, name: string | null) => NativeMap;
  BpfLink: new (fd: number) => NativeLink;
  RingReader: new (
    mapFd: number,
    onBatch: (buf: Buffer, lens: Uint32Array) => void,
    maxBatch: number,
    pollMs: number,
  ) => NativeReader;
}

// found from this file so that both native/index.ts and dist/native/index.js work
function findRepoRoot(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'nodal') return dir;
      } catch {
        // not ours; keep walking
      }
    }
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

let binding: Binding | undefined;

function native(): Binding {
  if (binding) return binding;
  const root = findRepoRoot();
  const file = join(root ?? '.', 'native', 'build', 'Release', 'nodal_native.node');
  const missing = (hint: string): BpfError =>
    new BpfError({ code: 'NODAL_ERR_NATIVE_MISSING', errno: ENOENT, op: `load native addon ${file}`, hint });
  if (!root) throw missing('no package.json named "nodal" above this module; run make build in the repo');
  if (!existsSync(file)) throw missing('run make build');
  let b: Binding;
  try {
    b = createRequire(import.meta.url)(file) as Binding;
  } catch (err) {
    throw missing(`run make build (${(err as Error).message})`);
  }
  b.init(fromNative);
  binding = b;
  return b;
}

// ---- objects -------------------------------------------------------------------

/** Opens (parses) a BPF ELF object; nothing reaches the kernel until load(). */
export function openObject(path: string, opts: OpenOptions = {}): BpfObject {
  const abs = resolve(path);
  const pinRoot = opts.pinRoot === undefined ? null : resolve(opts.pinRoot);
  const handle = new (native().BpfObject)(abs, pinRoot, opts.rodata ?? null, opts.mapMaxEntries ?? null);
  return new BpfObject(handle, abs);
}

export class BpfObject {
  readonly path: string;
  #h: NativeObject;

  /** @internal use openObject() */
  constructor(handle: NativeObject, path: string) {
    this.#h = handle;
    this.path = path;
  }

  /** Runs the verifier on a worker thread. On failure the object is closed. */
  load(): Promise<void> {
    return this.#h.load();
  }

  programNames(): string[] {
    return this.#h.programNames();
  }

  mapInfo(): MapInfo[] {
    return this.#h.mapInfo();
  }

  /** A map handle with its own fd: it stays usable after close(). */
  map(name: string): BpfMap {
    const fd = this.#h.mapFd(name);
    return new BpfMap(new (native().BpfMap)(fd, name));
  }

  /** Attaches through a BPF link (multi-attach); the program runs while the link lives. */
  attachCgroup(program: string, cgroupPath: string): BpfLink {
    const fd = this.#h.attachCgroup(program, resolve(cgroupPath));
    return new BpfLink(new (native().BpfLink)(fd), undefined);
  }

  structLayout(structName: string): StructLayout {
    return this.#h.structLayout(structName);
  }

  /** Owned by this object: valid until close(). */
  programFd(program: string): number {
    return this.#h.programFd(program);
  }

  close(): void {
    this.#h.close();
  }
}

// ---- links ---------------------------------------------------------------------

export class BpfLink {
  readonly id: number;
  #h: NativeLink;
  #progId: number;
  #pinnedAt: string | undefined;

  /** @internal use BpfObject.attachCgroup() or openPinnedLink() */
  constructor(handle: NativeLink, pinnedAt: string | undefined) {
    const info = handle.info();
    this.#h = handle;
    this.id = info.id;
    this.#progId = info.progId;
    this.#pinnedAt = pinnedAt;
  }

  get progId(): number {
    return this.#progId;
  }

  /** Pins under bpffs (missing parent directories are created). */
  pin(path: string): void {
    const abs = resolve(path);
    this.#h.pin(abs);
    this.#pinnedAt = abs;
  }

  /** Removes the pin made by pin() (or the one this link was opened from). */
  unpin(): void {
    if (this.#pinnedAt === undefined) return;
    native().unpin(this.#pinnedAt);
    this.#pinnedAt = undefined;
  }

  /** Atomically replaces the program: the hook never runs without one. */
  update(obj: BpfObject, program: string): void {
    this.#h.update(obj.programFd(program));
    this.#progId = this.#h.info().progId;
  }

  /** The program stops running now, even while the link is pinned or open elsewhere. */
  detach(): void {
    this.#h.detach();
  }

  /** Closes this fd only: a pinned link keeps running. */
  close(): void {
    this.#h.close();
  }
}

export function openPinnedLink(path: string): BpfLink {
  const abs = resolve(path);
  const fd = native().openPinned(abs, 'link');
  return new BpfLink(new (native().BpfLink)(fd), abs);
}

export function openPinnedMap(path: string): BpfMap {
  const fd = native().openPinned(resolve(path), 'map');
  return new BpfMap(new (native().BpfMap)(fd, null));
}

/** Unlinks a pin; a missing one is fine. Refuses paths outside bpffs. */
export function unpin(path: string): void {
  native().unpin(resolve(path));
}

// ---- maps ----------------------------------------------------------------------

let mapFdOf: (map: BpfMap) => number;

export class BpfMap {
  readonly name: string;
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly perCpu: boolean;
  /** bytes of one value in user space: roundup(valueSize, 8) * possible CPUs for per-CPU maps */
  readonly valueBufferSize: number;
  #h: NativeMap;

  static {
    mapFdOf = (map) => map.#h.fd();
  }

  /** @internal use BpfObject.map() or openPinnedMap() */
  constructor(handle: NativeMap) {
    const info = handle.info();
    this.#h = handle;
    this.name = info.name;
    this.type = info.type;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.maxEntries = info.maxEntries;
    this.perCpu = info.perCpu;
    this.valueBufferSize = info.valueBufferSize;
  }

  lookup(key: Buffer): Buffer | undefined {
    return this.#h.lookup(key);
  }

  update(key: Buffer, value: Buffer, flags: number = BPF_ANY): void {
    this.#h.update(key, value, flags);
  }

  /** false when the key was absent */
  delete(key: Buffer): boolean {
    return this.#h.delete(key);
  }

  /** null asks for the first key; undefined means there is no next one */
  nextKey(key: Buffer | null): Buffer | undefined {
    return this.#h.nextKey(key);
  }

  /** Every key; views into one Buffer. */
  keys(): Buffer[] {
    const all = this.#h.keys();
    const out: Buffer[] = [];
    for (let off = 0; off < all.length; off += this.keySize) out.push(all.subarray(off, off + this.keySize));
    return out;
  }

  /** `count` keys and values back to back; map types without a batch op get one update per entry, still in one call. */
  updateBatch(keys: Buffer, values: Buffer, count: number, flags: number = BPF_ANY): number {
    return this.#h.updateBatch(keys, values, count, flags);
  }

  pin(path: string): void {
    this.#h.pin(resolve(path));
  }

  close(): void {
    this.#h.close();
  }
}

// ---- ring buffers --------------------------------------------------------------

// one JS call per 256 records amortises the thread crossing without holding records long
const DEFAULT_MAX_BATCH = 256;
// upper bound on how long close() waits for the reader thread to notice
const DEFAULT_POLL_MS = 50;

export class RingBufferReader {
  #h: NativeReader;
  #closed: Promise<void> | undefined;

  /** @internal use subscribeRingBuffer() */
  constructor(handle: NativeReader) {
    this.#h = handle;
  }

  /** records handed to JS so far */
  get delivered(): number {
    return this.#h.delivered();
  }

  /** Stops and joins the reader thread; batches already taken from the ring are still delivered. */
  close(): Promise<void> {
    this.#closed ??= this.#h.close();
    return this.#closed;
  }

  /** An open reader keeps the event loop alive (the default), like a socket. */
  ref(): this {
    this.#h.ref();
    return this;
  }

  unref(): this {
    this.#h.unref();
    return this;
  }
}

/**
 * Reads a BPF_MAP_TYPE_RINGBUF map on a native thread and calls onBatch on the main
 * thread with up to maxBatch records, each a view into one Buffer per batch. When
 * onBatch falls behind, the thread stops consuming and the kernel ring fills: the
 * BPF side sees failed reservations, nothing is dropped in user space.
 */
export function subscribeRingBuffer(
  map: BpfMap,
  onBatch: (records: Buffer[]) => void,
  opts: RingBufferOptions = {},
): RingBufferReader {
  const op = `subscribe ring buffer ${map.name}`;
  const maxBatch = opts.maxBatch ?? DEFAULT_MAX_BATCH;
  const pollMs = opts.pollMs ?? DEFAULT_POLL_MS;
  if (typeof onBatch !== 'function') throw argError(op, 'onBatch must be a function');
  if (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > 65536) throw argError(op, 'maxBatch must be an integer in [1, 65536]');
  if (!Number.isInteger(pollMs) || pollMs < 1 || pollMs > 60000) throw argError(op, 'pollMs must be an integer in [1, 60000]');
  const deliver = (buf: Buffer, lens: Uint32Array): void => {
    const records = new Array<Buffer>(lens.length);
    let off = 0;
    for (let i = 0; i < lens.length; i++) {
      const len = lens[i]!;
      records[i] = buf.subarray(off, off + len);
      off += len;
    }
    onBatch(records);
  };
  return new RingBufferReader(new (native().RingReader)(mapFdOf(map), deliver, maxBatch, pollMs));
}

// ---- network namespaces --------------------------------------------------------

/**
 * Runs fn on the main thread inside the network namespace at nsPath, then switches
 * back (also when fn throws). Only syscalls fn makes synchronously happen in that
 * namespace: Node creates TCP sockets lazily (on nextTick), and async work runs
 * later, outside it. Use socketInNetns / listenTcpInNetns for sockets.
 */
export function runInNetns<T>(nsPath: string, fn: () => T): T {
  const b = native();
  const saved = b.netnsEnter(resolve(nsPath));
  try {
    return fn();
  } finally {
    b.netnsLeave(saved);
  }
}

/** A new socket (SOCK_CLOEXEC | SOCK_NONBLOCK) created in that namespace; the caller owns the fd. */
export function socketInNetns(nsPath: string, family: 4 | 6, type: 'tcp' | 'udp'): number {
  return native().socketInNetns(resolve(nsPath), family, type);
}

// the kernel clamps to net.core.somaxconn; 511 is Node's own default
const DEFAULT_BACKLOG = 511;

/** A listening TCP socket bound inside that namespace, for net.Server.listen({ fd }). */
export function listenTcpInNetns(nsPath: string, host: string, port: number, backlog: number = DEFAULT_BACKLOG): number {
  const op = `listen tcp ${host}:${port} in netns ${nsPath}`;
  if (isIP(host) === 0) throw argError(op, `host must be an IPv4 or IPv6 address, got '${host}'`);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw argError(op, 'port must be an integer in [0, 65535]');
  if (!Number.isInteger(backlog) || backlog < 0 || backlog > 65535) throw argError(op, 'backlog must be an integer in [0, 65535]');
  return native().listenTcpInNetns(resolve(nsPath), host, port, backlog);
}

export function closeFd(fd: number): void {
  native().closeFd(fd);
}

// ---- queries -------------------------------------------------------------------

/** Program ids attached directly to this cgroup for one hook (not the effective set). */
export function cgroupQuery(cgroupPath: string, attachType: CgroupAttachType): number[] {
  return native().cgroupQuery(resolve(cgroupPath), attachType);
}

export function numPossibleCpus(): number {
  return native().numPossibleCpus();
}

let probed: ProbeResult | undefined;

function mountOf(mounts: string[][], fstype: string): string | null {
  const m = mounts.find((f) => f[2] === fstype);
  // /proc/mounts escapes space, tab, newline and backslash as octal
  return m?.[1]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))) ?? null;
}

/** What this host supports, probed once. Every false or null entry is explained in `reason`. */
export function probe(): ProbeResult {
  if (probed) return probed;
  const reasons: string[] = [];
  const root = process.geteuid?.() === 0;
  if (!root) reasons.push('not running as root (euid != 0)');
  let mounts: string[][] = [];
  try {
    mounts = readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' '));
  } catch (err) {
    reasons.push(`cannot read /proc/mounts: ${(err as Error).message}`);
  }
  const bpffs = mountOf(mounts, 'bpf');
  if (!bpffs) reasons.push('no bpf filesystem in /proc/mounts (mount -t bpf bpf /sys/fs/bpf)');
  const cgroup2 = mountOf(mounts, 'cgroup2');
  if (!cgroup2) reasons.push('no cgroup2 mount in /proc/mounts');
  const btf = existsSync('/sys/kernel/btf/vmlinux');
  if (!btf) reasons.push('no /sys/kernel/btf/vmlinux: the kernel needs CONFIG_DEBUG_INFO_BTF=y');

  let bpfSyscall = false;
  let ringbuf = false;
  let cgroupSockAddr = false;
  try {
    const r = native().probe();
    bpfSyscall = r.bpfSyscall === 1;
    ringbuf = r.ringbuf === 1;
    cgroupSockAddr = r.cgroupSockAddr === 1;
    const why = (v: number, what: string): string =>
      v < 0 ? `${what}: ${errnoName(v)}` : `${what}: not supported by this kernel`;
    if (!bpfSyscall) {
      // libbpf's feature probes read a refused bpf() as "unsupported": say what really failed
      reasons.push(why(r.bpfSyscall, 'bpf() array map create'));
      reasons.push('ring buffer and cgroup sock_addr support not probed: bpf() is unavailable');
    } else {
      if (!ringbuf) reasons.push(why(r.ringbuf, 'BPF_MAP_TYPE_RINGBUF (Linux 5.8+)'));
      if (!cgroupSockAddr) reasons.push(why(r.cgroupSockAddr, 'BPF_PROG_TYPE_CGROUP_SOCK_ADDR (Linux 4.17+)'));
    }
  } catch (err) {
    reasons.push(`bpf features not probed: ${(err as Error).message}`);
  }

  const result: ProbeResult = { root, bpfSyscall, btf, bpffs, cgroup2, ringbuf, cgroupSockAddr };
  if (reasons.length > 0) result.reason = reasons.join('; ');
  probed = result;
  return result;
}
