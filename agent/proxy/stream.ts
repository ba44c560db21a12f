// Moving bytes between two sides of a proxied connection, and peeking at the first bytes.

import { AsyncResource } from 'node:async_hooks';
import { Socket } from 'node:net';
import { constants as h2, type Http2Session, type Http2Stream } from 'node:http2';
import type { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';

/**
 * How long the destination waits for a client's first bytes before it gives up on
 * detection and treats the connection as opaque TCP. Long enough for a client on a busy
 * node to write its request line; short enough that a server-speaks-first protocol
 * (SMTP, MySQL, SSH) only waits a moment for its banner. Same order as Envoy's and
 * Linkerd's protocol detection timeouts, scaled down for in-cluster latencies.
 */
export const DETECT_WAIT_MS = 300;

export type DetectedProtocol = 'http1' | 'h2' | 'opaque';

const H2_PREFACE = 'PRI * HTTP/2.0';
/** methods llhttp accepts that clients actually send first on a connection */
const HTTP1_METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH', 'TRACE', 'CONNECT'];

export function classify(head: Buffer): DetectedProtocol {
  const text = head.toString('latin1', 0, Math.min(head.length, 16));
  if (text.startsWith(H2_PREFACE) || (text.length < H2_PREFACE.length && H2_PREFACE.startsWith(text) && text.length >= 3)) return 'h2';
  for (const m of HTTP1_METHODS) {
    const word = `${m} `;
    if (text.startsWith(word)) return 'http1';
    // a first segment cut inside the method word still reads as HTTP/1.1
    if (text.length < word.length && word.startsWith(text) && text.length >= 3) return 'http1';
  }
  return 'opaque';
}

/**
 * Peek at the first chunk without consuming it: the chunk goes back to the front of the
 * stream, and the stream is left paused for whoever takes it next. The callback runs once.
 */
export function sniff(stream: Duplex, waitMs: number, done: (proto: DetectedProtocol) => void): void {
  let settled = false;
  const finish = (proto: DetectedProtocol): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    stream.removeListener('data', onData);
    stream.removeListener('end', onEnd);
    stream.removeListener('close', onEnd);
    stream.pause();
    done(proto);
  };
  const onData = (chunk: Buffer): void => {
    stream.pause();
    stream.unshift(chunk);
    finish(classify(chunk));
  };
  const onEnd = (): void => finish('opaque');
  const timer = setTimeout(finish, waitMs, 'opaque');
  stream.on('data', onData);
  stream.once('end', onEnd);
  stream.once('close', onEnd);
  // a listener alone does not restart a stream someone paused (an upgraded connection the
  // source side hands over in-process): without this it would wait out waitMs and be
  // taken for opaque TCP, the upgrade request piped to the pod unjudged
  stream.resume();
}

/** tear a side down so that the peer sees a failure, not a clean end of stream */
export function abort(stream: Duplex): void {
  if (stream instanceof Socket) {
    if (!stream.destroyed) stream.resetAndDestroy();
  } else if (isHttp2Stream(stream)) {
    if (stream.closed || stream.destroyed) return;
    if (stream.listenerCount('aborted') === 0) {
      // RST_STREAM with CONNECT_ERROR: RFC 9113 §8.5's signal for a reset tunnelled connection
      stream.close(h2.NGHTTP2_CONNECT_ERROR);
    } else {
      // a stream in a pipeline(): close() emits 'aborted', which pipeline's end-of-stream
      // check answers with a synchronous destroy() that drops the RST_STREAM close() was
      // about to send, and the peer would never learn. destroy(err) sends it itself
      // (INTERNAL_ERROR), which the peer takes as a reset all the same.
      stream.destroy(new Error('connection reset by the proxy'));
    }
  } else {
    stream.destroy();
  }
}

/** node:http2 does not export its stream class: recognise one by its RST API */
export function isHttp2Stream(s: Duplex): s is Duplex & Http2Stream {
  return typeof (s as Partial<Http2Stream>).close === 'function' && 'rstCode' in s;
}

/** 'close' listeners two pipeline() calls put on each stream (end-of-stream, pipe, destroyer) */
const SPLICE_CLOSE_LISTENERS = 8;

/**
 * Pipe both ways with backpressure. Half-close travels (one side's end ends the other's
 * writable side); an error on either side aborts both. `done` runs once both directions
 * are over, with the first error if there was one.
 */
export function splice(a: Duplex, b: Duplex, done?: (err: Error | undefined) => void): void {
  // a side may be gone already: a client that left while the pod was answering its Upgrade.
  // pipeline() would throw, from an event callback, and take the whole proxy down with it
  if (a.destroyed || a.closed || b.destroyed || b.closed) {
    abort(a);
    abort(b);
    if (done) process.nextTick(done, new Error('one side closed before the splice'));
    return;
  }
  // the two pipelines add SPLICE_CLOSE_LISTENERS 'close' listeners to each side, a fixed
  // count per connection; with the proxy's own they pass Node's default of 10, and a
  // MaxListenersExceededWarning per connection would flood the agent's log
  for (const s of [a, b]) {
    const max = s.getMaxListeners();
    if (max !== 0) s.setMaxListeners(max + SPLICE_CLOSE_LISTENERS);
  }
  let pending = 2;
  let failed: Error | undefined;
  const finish = (err?: Error | null): void => {
    if (err && !failed) {
      failed = err;
      abort(a);
      abort(b);
    }
    if (--pending === 0 && done) done(failed);
  };
  pipeline(a, b, finish);
  pipeline(b, a, finish);
}

/** IPv4-mapped IPv6 (::ffff:10.0.0.1), as a dual-stack listener reports it, to plain IPv4 */
export function normalizeIp(ip: string | undefined): string {
  if (!ip) return '';
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

/**
 * Drop every listener of an HTTP/2 stream once it has closed. node's Writable gives each
 * stream a function literal assigned to a property (`state.onwrite = (er) => ...`), which
 * V8 allocates in old space (it takes such functions to be long-lived): from there a
 * finished stream stays reachable through every young-generation GC until the next full
 * GC, and so does all its listeners capture (the request, its promise chain, its async
 * frames). Each such GC copies, then promotes, all of it, and pauses the proxy for tens of
 * ms. With the listeners gone, only node's own stream is carried. (Sockets are pinned the
 * same way, but dropping their listeners changed nothing measurable: docs/benchmarks.md.)
 * Our own code never assigns a function literal to a property of a per-request or
 * per-connection object: docs/ARCHITECTURE.md.
 */
export function releaseOnClose(e: EventEmitter): void {
  e.once('close', () => process.nextTick(release, e));
}

function release(e: EventEmitter): void {
  // node's streams listen for 'removeListener': with that gone first, the rest goes in one
  // step instead of one 'removeListener' event per listener
  e.removeAllListeners('removeListener');
  e.removeAllListeners();
  e.on('error', noop); // a late error (none is expected after 'close') must not throw
}

function noop(): void {}

/**
 * Node 24 bug workaround: every HTTP/2 request the proxy sends stays reachable through
 * V8's young-generation GCs until the next full GC, with everything its stream holds.
 * ClientHttp2Session.request() binds its connect callback, which closes over the new
 * stream, with AsyncResource.prototype.bind. That gives each bound function a deprecated
 * `asyncResource` accessor (DEP0172) made of two fresh closures over bind's scope. V8 keeps
 * an accessor pair in old space, and from there the closures, bind's scope, the callback
 * and the stream survive every young GC and are promoted. Under 1,000 HTTP/2 requests/s
 * that made each young GC copy 5–7 MB and pause the proxy 14–20 ms (docs/benchmarks.md).
 * This puts in the same bind, with the same accessor, warning and `length`, whose getter
 * and setter are shared and read the resource from the bound function. The proxy calls it
 * once per thread it runs in (NodeProxy.start); it is a no-op after the first call.
 */
export function shareBindAccessors(): void {
  const proto = AsyncResource.prototype as AsyncResource & { [PATCHED]?: true };
  if (proto[PATCHED]) return;
  const nodeBind = proto.bind;
  Object.defineProperty(proto, PATCHED, { value: true });
  Object.defineProperty(proto, 'bind', {
    configurable: true, writable: true, enumerable: false,
    value: function bind(this: AsyncResource, fn: unknown, thisArg?: unknown): unknown {
      // node's own bind throws its ERR_INVALID_ARG_TYPE for what is not a function
      if (typeof fn !== 'function') return Reflect.apply(nodeBind, this, [fn, thisArg]);
      const resource = this;
      // assigned to a local, never to a property: V8 would put the function in old space
      let bound: (...args: unknown[]) => unknown;
      if (thisArg === undefined) {
        bound = function (this: unknown, ...args: unknown[]): unknown {
          return Reflect.apply(resource.runInAsyncScope, resource, [fn, this, ...args]);
        };
      } else {
        bound = resource.runInAsyncScope.bind(resource, fn as (...a: unknown[]) => unknown, thisArg);
      }
      Object.defineProperties(bound, {
        [BOUND_RESOURCE]: { value: resource, writable: true },
        length: { configurable: true, enumerable: false, value: (fn as (...a: unknown[]) => unknown).length, writable: false },
        asyncResource: { configurable: true, enumerable: true, get: getBoundResource, set: setBoundResource },
      });
      return bound;
    },
  });
}

const PATCHED = Symbol('nodal.sharedBindAccessors');
const BOUND_RESOURCE = Symbol('nodal.boundResource');
let warnedBoundResource = false;

function warnBoundResource(): void {
  // as node's deprecate(): nothing under --no-deprecation, once otherwise
  if (warnedBoundResource || (process as { noDeprecation?: boolean }).noDeprecation === true) return;
  warnedBoundResource = true;
  process.emitWarning('The asyncResource property on bound functions is deprecated', 'DeprecationWarning', 'DEP0172');
}

function getBoundResource(this: Record<symbol, unknown>): unknown {
  warnBoundResource();
  return this[BOUND_RESOURCE];
}

function setBoundResource(this: Record<symbol, unknown>, value: unknown): void {
  warnBoundResource();
  this[BOUND_RESOURCE] = value;
}

/**
 * Node 24 bug workaround: a destroyed Http2Session keeps its timer. closeSession() marks
 * the session destroyed and then calls setTimeout(0) to clear it, but setTimeout returns at
 * once on a destroyed session (setStreamTimeout), so the Timeout stays in node's timer list
 * until it fires, and holds the session and every request queued on it. A pod session's
 * idle timeout is minutes (pods.ts): a pod that refuses connections under load would leave
 * a session per connection attempt, with the requests that waited on it, for that long.
 * Call it on the session's 'close'. The timer is found by its symbol's name, `timeout`
 * (node's kTimeout); on a node without it this does nothing.
 */
export function clearSessionTimer(session: Http2Session): void {
  const key = Object.getOwnPropertySymbols(session).find((k) => k.description === 'timeout');
  const timer = key === undefined ? undefined : (session as unknown as Record<symbol, unknown>)[key];
  if (timer !== undefined && timer !== null) clearTimeout(timer as NodeJS.Timeout);
}

/**
 * Node 24 bug workaround: string chunks in a vectored write to an Http2Stream can reach
 * the wire after their native copy was freed: the first 16 bytes of the response head
 * arrive as allocator garbage (tcache pointers). node:http writes its head as a latin1
 * string corked with the first body chunk, which is exactly that case. Converting strings
 * to Buffers before the write keeps the bytes alive in JS until the write completes.
 * Repro: an http.Server fed an h2 CONNECT stream via emit('connection'), response
 * writeHead() then upstream.pipe(res); and a node:http request with a body sent on one
 * (mesh.ts). Set once per stream; the function is shared.
 */
export function buffersOnly(stream: Duplex): void {
  const s = stream as unknown as WritableInternals;
  if (s._writev === writevBuffers) return;
  protoWritev ??= s._writev;
  protoWrite ??= s._write;
  s._writev = writevBuffers;
  s._write = writeBuffer;
}

interface WriteChunk { chunk: Buffer | string; encoding: BufferEncoding | 'buffer' }
type WritevFn = (this: Duplex, chunks: WriteChunk[] & { allBuffers?: boolean }, cb: (err?: Error | null) => void) => unknown;
type WriteFn = (this: Duplex, chunk: Buffer | string, encoding: BufferEncoding | 'buffer', cb: (err?: Error | null) => void) => unknown;
interface WritableInternals { _writev: WritevFn; _write: WriteFn }
let protoWritev: WritevFn | undefined;
let protoWrite: WriteFn | undefined;

function writevBuffers(this: Duplex, chunks: WriteChunk[] & { allBuffers?: boolean }, cb: (err?: Error | null) => void): unknown {
  for (const c of chunks) {
    if (typeof c.chunk === 'string') {
      c.chunk = Buffer.from(c.chunk, c.encoding === 'buffer' ? 'utf8' : c.encoding);
      c.encoding = 'buffer';
    }
  }
  chunks.allBuffers = true;
  return protoWritev!.call(this, chunks, cb);
}

function writeBuffer(this: Duplex, chunk: Buffer | string, encoding: BufferEncoding | 'buffer', cb: (err?: Error | null) => void): unknown {
  if (typeof chunk === 'string') return protoWrite!.call(this, Buffer.from(chunk, encoding === 'buffer' ? 'utf8' : encoding), 'buffer', cb);
  return protoWrite!.call(this, chunk, encoding, cb);
}

