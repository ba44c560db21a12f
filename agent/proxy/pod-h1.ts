// HTTP/1.1 to local pods for requests without a body (GET, HEAD, DELETE... the common
// case) or with a body that is all here and framed by its Content-Length (a small POST
// read whole with its head, exchange.ts WholeBody), without http.request and its Agent:
// pooled keep-alive sockets per pod, each with one llhttp parser for its life (node:http's own, from _http_common), answers handed on
// as node:http IncomingMessages (same header rules, same body stream). ClientRequest and
// the Agent cost a third of the proxy's CPU per request (an options object merged twice,
// setHeader per header, a write of the head through OutgoingMessage, three ticks to hand
// the socket back); this writes the head in one call and parses with the same parser.
// Any other body still goes through node:http (pods.ts): streamed and chunked bodies,
// answers that come before the body was sent and Expect: 100-continue are its business.
// The pool (LeanPool) also serves mesh.ts, whose connections are CONNECT streams to other nodes' pods.
//
// The parser comes from llhttp.ts; when it is not there (another Node) pods.ts sends
// every request through node:http.

import { IncomingMessage, validateHeaderValue } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { errorText } from './errors.ts';
import { headerLines, lengthValue, NO_BYTES, unwatchAbort, watchAbort, type Headers, type RequestHead } from './exchange.ts';
import { headerObject, HTTPParser, type Parser } from './llhttp.ts';
import { isIdempotent } from './traffic/retry.ts';
import { atEndOfTurn, type EndOfTurn } from './turn.ts';

export class UpstreamError extends Error {
  /** 'connect-failure': nothing reached the pod; 'reset': the pod or the connection failed mid-exchange */
  readonly kind: 'connect-failure' | 'reset';
  /** the status a peer node's proxy refused the CONNECT stream with (mesh.ts) */
  readonly refused: number | undefined;
  constructor(kind: UpstreamError['kind'], message: string, options?: { cause?: unknown; refused?: number }) {
    super(message, options);
    this.name = 'UpstreamError';
    this.kind = kind;
    this.refused = options?.refused;
  }
}

/** a response parser of this module's connection */
interface PodParser extends Parser {
  [CONN]?: PodConnection;
}

const CONN = Symbol('nodal.podConnection');

/** false on a Node whose http parser cannot be reached: pods.ts then uses node:http for everything */
export const leanClientAvailable = HTTPParser !== undefined;

/** node:http's cap on header lines kept per message (_http_common MAX_HEADER_PAIRS, counted as in the flat list) */
const MAX_HEADER_ENTRIES = 2000;
/** pod addresses whose pool keys are kept (keyOf) before the cache starts over */
const MAX_KEYED_ADDRESSES = 4096;
/** TCP keep-alive probes on pod connections, as node's Agent sets on the sockets it keeps */
const TCP_KEEPALIVE_MS = 1000;
/** a method is an HTTP token (RFC 9110 §9.1) */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** what node:http refuses in a request target (ERR_UNESCAPED_CHARACTERS) */
const INVALID_PATH = /[^\u0021-\u00ff]/;
/** request bodies up to this size go out in one string with their head (no buffer to fill) */
const ONE_STRING_MAX = 1024;

/** what a pooled connection asks of the pool it belongs to */
interface PoolSide {
  readonly maxIdle: number;
  /** how errors name the upstream of `key` */
  describe(key: string): string;
  /** requests a connection to `key` may carry; 0: unlimited */
  maxRequests(key: string): number;
  /** an idle connection to `key` is closed after this long; 0: never */
  idleMs(key: string): number;
  /** a connection to `key` is retired once it is this old; 0: never */
  maxAgeMs(key: string): number;
  release(conn: PodConnection): void;
  forget(conn: PodConnection): void;
  /** send `ex` again, on a new connection to `key` */
  replay(key: string, ex: Exchange): void;
}

/**
 * An answer that came whole in the read its head came in (the common small answer): no
 * IncomingMessage, no stream; the connection is back in its pool when it is handed on.
 */
export interface WholeAnswer {
  status: number;
  /** as IncomingMessage.headers */
  headers: Record<string, string | string[]>;
  body: Buffer;
  trailers: Record<string, string | string[]> | undefined;
}

/** an answer's head, held until the end of the read it came in */
interface AnswerHead { major: number; minor: number; raw: string[]; status: number; statusMessage: string }

/** one request in flight on a connection */
interface Exchange {
  method: string;
  resolve: (res: IncomingMessage | WholeAnswer) => void;
  reject: (err: UpstreamError) => void;
  /** the answer as a stream, once it did not come whole */
  res: IncomingMessage | undefined;
  /** the answer's head, until the read it came in is parsed */
  head: AnswerHead | undefined;
  /** body bytes read with the head */
  chunks: Buffer[] | undefined;
  /** the answer ended within the read of its head; its trailers, if it had any */
  whole: boolean;
  trailers: string[] | undefined;
  signal: AbortSignal;
  /**
   * What a replay takes: the request's head as sent, its body (all of it, framed by the
   * head's Content-Length), and what opens a connection for it (LeanPool's T)
   */
  text: string;
  body: Buffer | undefined;
  target: unknown;
  /** sent a second time already (replay()): a second failure is the answer */
  replayed: boolean;
}

/** where pod connections' reads land (onread), one per thread: parsed before the next read */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/**
 * Opens a pooled connection's transport for `c`: a socket to the pod, whose reads reach
 * c.read(), or a stream whose chunks reach c.parse(); it sets c.connected once the other
 * end took the connection
 */
export type Opener = (c: PodConnection) => Duplex;

export class PodConnection implements EndOfTurn {
  readonly key: string;
  /** the group of keys its pool bounds idle connections over (LeanPool.group()) */
  group = '';
  /** a socket to the pod, or a CONNECT stream to it (mesh.ts) */
  readonly socket: Socket;
  private readonly parser: PodParser;
  private readonly pool: PoolSide;
  exchange: Exchange | undefined;
  /** the request's head, written at the end of the turn with the others (turn.ts), and its body */
  private out: string | undefined;
  private outBody: Buffer | undefined;
  /** requests carried, this one included */
  carried = 0;
  /** when it was opened (Date.now()) */
  readonly openedAt = Date.now();
  /** a byte of the answer to the request in flight came in */
  private heard = false;
  connected = false;
  /** header lines the parser handed over before the head was complete (long heads, trailers) */
  pending: string[] = [];
  /**
   * Body bytes still to come of an answer framed by its Content-Length: it is complete
   * when they have come, without llhttp's message-complete call into JS. -1: the answer's
   * end is llhttp's to tell (chunked, or read to the end of the connection).
   */
  private left = -1;
  keepAlive = true;
  /** an idle timer is set on the socket (TrafficPolicy idleTimeoutMs) */
  private idleTimer = false;
  /** the connection's last error, or the refusal of a CONNECT stream the peer declined (mesh.ts): what the exchange in flight fails with */
  lastError: Error | undefined;
  /** bound once per connection, not per request */
  readonly released = (): void => this.release();
  readonly aborted = (): void => {
    const r = this.exchange?.signal.reason as unknown;
    this.socket.destroy(r instanceof Error ? r : new Error('request cancelled'));
  };

  constructor(pool: PoolSide, key: string, open: Opener) {
    this.pool = pool;
    this.key = key;
    // Socket's setTimeout, pause and resume are all this uses beyond Duplex; a stream has them too
    this.socket = open(this) as Socket;
    this.parser = new HTTPParser!();
    this.parser.initialize(HTTPParser!.RESPONSE, {}, 0, 0);
    this.parser[CONN] = this;
    this.parser[HTTPParser!.kOnHeaders] = onHeaders;
    this.parser[HTTPParser!.kOnHeadersComplete] = onHeadersComplete;
    this.parser[HTTPParser!.kOnBody] = onBody;
    this.parser[HTTPParser!.kOnMessageComplete] = onMessageComplete;
    this.socket.on('end', () => {
      // a body that runs to the end of the connection ends here; anything else in flight failed
      this.parser.finish();
      this.socket.destroy();
    });
    this.socket.on('error', (err) => { this.lastError = err; });
    this.socket.on('timeout', () => this.socket.destroy());
    this.socket.on('close', () => this.closed());
  }

  /** `n` bytes the pod sent, in READ_BUFFER */
  read(n: number): boolean {
    return this.parse(READ_BUFFER.subarray(0, n));
  }

  /** bytes the upstream sent */
  parse(bytes: Buffer): boolean {
    this.heard = true;
    const ret = this.parser.execute(bytes);
    if (ret instanceof Error) {
      this.socket.destroy(ret);
      return false;
    }
    const ex = this.exchange;
    if (ex?.head) this.answer(ex, ex.head);
    return true; // false would pause the socket: backpressure is the IncomingMessage's (answer())
  }

  /** send a request on this (idle) connection */
  send(head: string, ex: Exchange): void {
    // one exchange at a time: the pool hands out idle connections only, and one is idle
    // again once its answer was read (release()). A second would take the first's place.
    if (this.exchange !== undefined) throw new Error(`pod connection ${this.key} is already carrying a request`);
    this.exchange = ex;
    this.carried++;
    this.heard = false;
    if (this.idleTimer) {
      this.socket.setTimeout(0); // in use: an idle timer must not cut a slow answer
      this.idleTimer = false;
    }
    watchAbort(ex.signal, this.aborted);
    this.out = head;
    this.outBody = ex.body;
    atEndOfTurn(this);
  }

  endOfTurn(): void {
    const out = this.out;
    const body = this.outBody;
    this.out = undefined;
    this.outBody = undefined;
    // a request cancelled meanwhile has destroyed the socket: nothing goes out
    if (out === undefined || this.socket.destroyed) return;
    if (body === undefined || body.length === 0) this.socket.write(out, 'latin1');
    // latin1 maps bytes to characters one to one: a small body goes out in the head's string
    else if (body.length <= ONE_STRING_MAX) this.socket.write(out + body.toString('latin1'), 'latin1');
    else {
      this.socket.cork();
      this.socket.write(out, 'latin1');
      this.socket.write(body);
      this.socket.uncork();
    }
  }

  /** the answer's head, held for answer() at the end of this read; 1 tells llhttp there is no body */
  headers(major: number, minor: number, raw: string[], status: number, statusMessage: string, upgrade: boolean, keepAlive: boolean): number {
    const ex = this.exchange;
    if (!ex || ex.res || ex.head) {
      // an answer nobody asked for, or a second one: the connection cannot be trusted
      this.socket.destroy(new Error('unexpected response'));
      return 0;
    }
    // 100 Continue, 103 Early Hints: not the answer (its end finds no answer to end); the
    // real one follows on the same connection
    if (status < 200 && status !== 101) return 1;
    if (upgrade || status === 101) {
      this.socket.destroy(new Error('pod switched protocols on a request that did not ask to'));
      return 0;
    }
    // handed on at the end of this read (answer()): whole if the body ends within it
    ex.head = { major, minor, raw, status, statusMessage };
    this.keepAlive = keepAlive;
    const head = ex.method === 'HEAD';
    this.left = head || status === 204 || status === 304 ? 0 : contentLength(raw);
    if (this.left === 0) this.complete();
    this.parser[HTTPParser!.kOnMessageComplete] = this.left < 0 ? onMessageComplete : undefined;
    return head ? 1 : 0;
  }

  body(chunk: Buffer): void {
    this.bodyChunk(chunk);
    // the last of a length-framed body: the answer is complete (llhttp agrees, or it fails the read)
    if (this.left > 0 && (this.left -= chunk.length) <= 0) this.complete();
  }

  private bodyChunk(chunk: Buffer): void {
    const ex = this.exchange;
    if (!ex) return;
    const res = ex.res;
    if (!res) {
      if (ex.head) (ex.chunks ??= []).push(chunk);
      return;
    }
    if (res.destroyed) return;
    // backpressure: IncomingMessage's _read resumes the socket when the reader wants more
    if (!res.push(chunk)) this.socket.pause();
  }

  complete(): void {
    const ex = this.exchange;
    if (!ex) return;
    const res = ex.res;
    if (!res) {
      // the end of an answer whose head came in this read (else an interim 1xx: not the answer)
      if (ex.head) {
        ex.whole = true;
        if (this.pending.length > 0) ex.trailers = this.pending;
        this.pending = [];
      }
      return;
    }
    res.complete = true;
    if (this.pending.length > 0) {
      // trailers
      (res as unknown as HeaderLines)._addHeaderLines(this.pending, Math.min(this.pending.length, MAX_HEADER_ENTRIES));
      this.pending = [];
    }
    res.push(null);
  }

  /**
   * The answer's head, at the end of the read it came in: whole (the connection goes back
   * to its pool first), or as an IncomingMessage that the rest of the body streams through.
   */
  private answer(ex: Exchange, h: AnswerHead): void {
    ex.head = undefined;
    const chunks = ex.chunks;
    ex.chunks = undefined;
    if (ex.whole) {
      const body = chunks === undefined ? NO_BYTES : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      const trailers = ex.trailers ? headerObject(ex.trailers, MAX_HEADER_ENTRIES) : undefined;
      this.release();
      ex.resolve({ status: h.status, headers: headerObject(h.raw, MAX_HEADER_ENTRIES), body, trailers });
      return;
    }
    const res = new IncomingMessage(this.socket);
    res.httpVersionMajor = h.major;
    res.httpVersionMinor = h.minor;
    res.httpVersion = `${h.major}.${h.minor}`;
    res.statusCode = h.status;
    res.statusMessage = h.statusMessage;
    (res as unknown as HeaderLines)._addHeaderLines(h.raw, Math.min(h.raw.length, MAX_HEADER_ENTRIES));
    ex.res = res;
    res.once('end', this.released);
    let more = true;
    if (chunks) for (const c of chunks) more = res.push(c);
    // backpressure: IncomingMessage's _read resumes the socket when the reader wants more
    if (!more) this.socket.pause();
    ex.resolve(res);
  }

  /** the answer was read to its end: the connection goes back to the pool (or away) */
  private release(): void {
    const ex = this.exchange;
    if (!ex) return;
    this.exchange = undefined;
    unwatchAbort(ex.signal, this.aborted);
    const max = this.pool.maxRequests(this.key);
    if (!this.keepAlive || this.socket.destroyed || (max > 0 && this.carried >= max) || this.tooOld()) {
      this.socket.destroy();
      return;
    }
    const idle = this.pool.idleMs(this.key);
    if (idle > 0) {
      this.socket.setTimeout(idle);
      this.idleTimer = true;
    }
    if (this.socket.isPaused()) this.socket.resume(); // a pause for backpressure must not outlive its answer
    this.pool.release(this);
  }

  /** older than its pool keeps a connection (maxAgeMs) */
  tooOld(): boolean {
    const age = this.pool.maxAgeMs(this.key);
    return age > 0 && Date.now() - this.openedAt >= age;
  }

  private closed(): void {
    this.pool.forget(this);
    // not from inside a parser callback that may be on the stack
    setImmediate(() => this.parser.close());
    const ex = this.exchange;
    if (!ex) return;
    this.exchange = undefined;
    unwatchAbort(ex.signal, this.aborted);
    if (!ex.res && this.replayable(ex)) {
      ex.replayed = true;
      ex.head = undefined;
      ex.chunks = undefined;
      ex.whole = false;
      ex.trailers = undefined;
      this.pool.replay(this.key, ex);
      return;
    }
    const err = this.lastError ?? new Error(ex.res ? 'aborted' : 'socket hang up');
    if (!ex.res) {
      ex.reject(err instanceof UpstreamError ? err
        : new UpstreamError(this.connected ? 'reset' : 'connect-failure', `${this.pool.describe(this.key)}: ${errorText(err)}`, { cause: err }));
    }
    else if (!ex.res.complete) ex.res.destroy(err);
  }

  /**
   * A connection that had carried an answer before closed before a byte of this one: the
   * other end closed it, idle, as the request went out, the race every keep-alive client
   * meets (a pod's keep-alive timeout; a destination closing a pooled stream). The pod never
   * answered it, so an idempotent request (RFC 9110 §9.2.2), with its body if it has one
   * (held whole), goes once more, on a new connection, as Go's and hyper's clients do. A new connection's failure,
   * or one after the answer began, is the answer.
   */
  private replayable(ex: Exchange): boolean {
    return this.carried > 1 && !this.heard && !ex.replayed && !ex.signal.aborted && isIdempotent(ex.method);
  }
}

interface HeaderLines { _addHeaderLines(headers: string[], n: number): void }

function onHeaders(this: PodParser, headers: string[]): void {
  const c = this[CONN]!;
  for (const h of headers) if (c.pending.length < MAX_HEADER_ENTRIES) c.pending.push(h);
}

function onHeadersComplete(this: PodParser, major: number, minor: number, headers: string[] | undefined, _method: unknown, _url: unknown,
  status: number, statusMessage: string, upgrade: boolean, keepAlive: boolean): number {
  const c = this[CONN]!;
  let raw = headers;
  if (raw === undefined) {
    raw = c.pending;
    c.pending = [];
  }
  return c.headers(major, minor, raw, status, statusMessage, upgrade, keepAlive);
}

function onBody(this: PodParser, chunk: Buffer): void {
  this[CONN]!.body(chunk);
}

function onMessageComplete(this: PodParser): void {
  this[CONN]!.complete();
}

/**
 * Keep-alive connections for requests without a body or with all of it here, pooled by
 * key, one exchange at a time each; `T` is what connect() needs to open one for a key. LeanPodClient's pool is
 * per pod address; mesh.ts pools CONNECT streams to other nodes' pods the same way.
 */
export abstract class LeanPool<T> implements PoolSide {
  readonly maxIdle: number;
  /** idle connections kept over all the keys of one group (group()); Infinity: no bound but maxIdle per key */
  private readonly maxIdlePerGroup: number;
  private readonly idle = new Map<string, PodConnection[]>();
  private readonly idleInGroup = new Map<string, number>();
  private readonly all = new Set<PodConnection>();

  constructor(maxIdle: number, maxIdlePerGroup = Infinity) {
    this.maxIdle = maxIdle;
    this.maxIdlePerGroup = maxIdlePerGroup;
  }

  /** the group whose idle connections are bounded together (mesh.ts: a peer node's) */
  protected group(_key: string): string {
    return '';
  }

  abstract describe(key: string): string;
  abstract maxRequests(key: string): number;
  abstract idleMs(key: string): number;
  /** a connection to `key` is retired once it is this old (at the end of its answer, or when taken idle); 0: never */
  maxAgeMs(_key: string): number {
    return 0;
  }
  /** the transport of a new connection for `key` (Opener) */
  protected abstract connect(c: PodConnection, target: T): Duplex;
  /** a new connection, opened */
  protected opened(_c: PodConnection): void {}

  /**
   * One request, its head as `text` and its body (none, or all of it as the head's
   * Content-Length frames it) as `body`, on an idle connection for `key` or a new one to
   * `target`; `resolve` gets the answer whole when it came in one read with its head,
   * else its head (the body streams). `reject` gets UpstreamErrors, as from node:http in
   * pods.ts: 'connect-failure' when the upstream was never reached, 'reset' after.
   */
  protected request(key: string, target: T, text: string, body: Buffer | undefined, method: string, signal: AbortSignal,
    resolve: (res: IncomingMessage | WholeAnswer) => void, reject: (err: UpstreamError) => void): void {
    if (signal.aborted) {
      reject(new UpstreamError('connect-failure', `${this.describe(key)}: request cancelled before it was sent`));
      return;
    }
    const conn = this.take(key) ?? this.open(key, target);
    conn.send(text, {
      method, res: undefined, head: undefined, chunks: undefined, whole: false, trailers: undefined, signal, resolve, reject,
      text, body, target, replayed: false,
    });
  }

  replay(key: string, ex: Exchange): void {
    // a new connection: an idle one may have been closed in the same way
    this.open(key, ex.target as T).send(ex.text, ex);
  }

  /** close every connection */
  close(): void {
    for (const c of this.all) c.socket.destroy();
    this.all.clear();
    this.idle.clear();
    this.idleInGroup.clear();
  }

  /** close the idle connections */
  closeIdle(): void {
    for (const list of this.idle.values()) {
      for (const c of list.splice(0)) {
        this.leftIdle(c);
        c.socket.destroy();
      }
    }
  }

  release(conn: PodConnection): void {
    let list = this.idle.get(conn.key);
    if (!list) this.idle.set(conn.key, (list = []));
    if (list.length >= this.maxIdle || !this.keptIdle(conn)) {
      conn.socket.destroy();
      return;
    }
    list.push(conn);
  }

  forget(conn: PodConnection): void {
    this.all.delete(conn);
    const list = this.idle.get(conn.key);
    if (!list) return;
    const i = list.indexOf(conn);
    if (i < 0) return;
    list.splice(i, 1);
    this.leftIdle(conn);
  }

  /** the most recently used idle connection (lifo, as node's Agent): the one least likely closed meanwhile */
  private take(key: string): PodConnection | undefined {
    const list = this.idle.get(key);
    if (!list) return undefined;
    for (;;) {
      const c = list.pop();
      if (c === undefined) return undefined;
      this.leftIdle(c);
      if (c.tooOld()) c.socket.destroy();
      else if (!c.socket.destroyed && c.socket.writable) return c;
    }
  }

  /** counts `c` idle in its group; false when the group has as many idle as it may keep */
  private keptIdle(c: PodConnection): boolean {
    if (this.maxIdlePerGroup === Infinity) return true;
    const n = this.idleInGroup.get(c.group) ?? 0;
    if (n >= this.maxIdlePerGroup) return false;
    this.idleInGroup.set(c.group, n + 1);
    return true;
  }

  private leftIdle(c: PodConnection): void {
    if (this.maxIdlePerGroup === Infinity) return;
    const n = (this.idleInGroup.get(c.group) ?? 1) - 1;
    if (n > 0) this.idleInGroup.set(c.group, n);
    else this.idleInGroup.delete(c.group);
  }

  private open(key: string, target: T): PodConnection {
    const c = new PodConnection(this, key, (conn) => this.connect(conn, target));
    c.group = this.group(key);
    this.all.add(c);
    this.opened(c);
    return c;
  }
}

/** keep-alive connections to local pods, per pod address, for requests without a body or with all of it here */
export class LeanPodClient extends LeanPool<string> {
  private readonly bindIp: string;
  private readonly onSocket: (s: Socket) => void;
  /** keyOf()'s strings */
  private readonly keys = new Map<string, Map<number, string>>();
  private settings: ReadonlyMap<string, { maxRequestsPerConnection?: number | undefined; idleTimeoutMs?: number | undefined }> = new Map();

  constructor(bindIp: string, maxIdle: number, onSocket: (s: Socket) => void) {
    super(maxIdle);
    this.bindIp = bindIp;
    this.onSocket = onSocket;
  }

  configure(settings: LeanPodClient['settings']): void {
    this.settings = settings;
  }

  /**
   * One request to ip:port (LeanPool.request()), without a body or with all of it, framed
   * by the head's Content-Length (exchange.ts wholeBodyOf()). A header node:http would
   * refuse throws its own error here.
   */
  send(ip: string, port: number, head: RequestHead, body: Buffer | undefined, traceparent: string, signal: AbortSignal,
    resolve: (res: IncomingMessage | WholeAnswer) => void, reject: (err: UpstreamError) => void): void {
    // validated as node:http validates them: a bad name or value throws its own error
    const text = requestHead(head, traceparent);
    const key = this.keyOf(ip, port);
    this.request(key, key, text, body, head.method, signal, resolve, reject);
  }

  describe(key: string): string {
    return `upstream ${key}`;
  }

  maxRequests(key: string): number {
    if (this.settings.size === 0) return 0;
    return this.settings.get(key)?.maxRequestsPerConnection ?? 0;
  }

  idleMs(key: string): number {
    if (this.settings.size === 0) return 0;
    return this.settings.get(key)?.idleTimeoutMs ?? 0;
  }

  /** a socket to the pod at `key` (ip:port, keyOf()) */
  protected connect(c: PodConnection, key: string): Duplex {
    const colon = key.lastIndexOf(':');
    // reads land in one buffer shared by every pod connection of this thread and are parsed
    // at once (llhttp copies what it hands over): no allocation, stream or 'data' event per read
    const s = connect({
      host: key.slice(0, colon), port: Number(key.slice(colon + 1)), localAddress: this.bindIp, noDelay: true,
      onread: { buffer: READ_BUFFER, callback: (n: number) => c.read(n) },
    });
    s.setKeepAlive(true, TCP_KEEPALIVE_MS);
    s.once('connect', () => { c.connected = true; });
    return s;
  }

  protected override opened(c: PodConnection): void {
    this.onSocket(c.socket);
  }

  /**
   * `ip:port`, one string per pod address: V8 computes a string's hash once, so the pool's
   * lookups with it cost no hashing per request (a key built per request would)
   */
  private keyOf(ip: string, port: number): string {
    let ports = this.keys.get(ip);
    if (ports === undefined) {
      if (this.keys.size >= MAX_KEYED_ADDRESSES) this.keys.clear(); // pods come and go: bounded
      this.keys.set(ip, (ports = new Map()));
    }
    let key = ports.get(port);
    if (key === undefined) ports.set(port, (key = `${ip}:${port}`));
    return key;
  }
}

/**
 * The body length an answer's one Content-Length gives, as llhttp frames it; -1 when
 * llhttp decides where the body ends (Transfer-Encoding, no Content-Length). What llhttp
 * would refuse (two lengths, a length that is not digits) fails its parse anyway.
 */
function contentLength(raw: readonly string[]): number {
  let length = -1;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 14 && name.toLowerCase() === 'content-length') {
      const n = lengthValue(raw[i + 1]!);
      if (length >= 0 || n === undefined) return -1;
      length = n;
    } else if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') return -1;
  }
  return length;
}

/** the request head as it goes on the wire; throws node:http's errors for what it would refuse */
export function requestHead(head: RequestHead, traceparent: string, extra = ''): string {
  if (!TOKEN.test(head.method)) throw Object.assign(new TypeError(`Method must be a valid HTTP token ["${head.method}"]`), { code: 'ERR_INVALID_HTTP_TOKEN' });
  if (INVALID_PATH.test(head.path)) throw Object.assign(new TypeError('Request path contains unescaped characters'), { code: 'ERR_UNESCAPED_CHARACTERS' });
  let text = `${head.method} ${head.path} HTTP/1.1\r\n`;
  const h: Headers = head.headers;
  for (const k in h) {
    if (k === 'traceparent') continue;
    const v = h[k]!;
    // several cookies go as one line, as node:http sends them
    text += headerLines(k, k === 'cookie' && typeof v !== 'string' && v.length > 1 ? v.join('; ') : v);
  }
  if (head.authority) {
    validateHeaderValue('host', head.authority);
    text += `host: ${head.authority}\r\n`;
  }
  return `${text}traceparent: ${traceparent}\r\n${extra}connection: keep-alive\r\n\r\n`;
}
