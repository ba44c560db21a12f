// One HTTP exchange as the proxy carries it between its sides, whatever the client spoke.
// An HTTP/1.1 request and an HTTP/2 (or gRPC) stream both become a RequestHead plus a body
// stream; whoever answers (the pod, the peer node's proxy, or the proxy itself) answers
// with an L7Response. The source side writes that back in the client's own protocol.
//
// Between nodes every request is one HTTP/2 stream on the node pair's tunnel session
// (Linkerd's proxy-to-proxy upgrade): the destination proxy speaks to the pod in the
// protocol the client used (`x-nodal-protocol`), so an HTTP/1.1 pod never sees HTTP/2.

import { validateHeaderName, validateHeaderValue, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { setMaxListeners } from 'node:events';
import { constants as h2c, type ClientHttp2Stream, type Http2Stream, type IncomingHttpHeaders as H2Headers, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { addAbortSignal, PassThrough, Readable, type Writable } from 'node:stream';
import { releaseOnClose } from './stream.ts';

export type WireProtocol = 'http1' | 'h2';

export type Headers = Record<string, string | string[]>;

export interface RequestHead {
  method: string;
  /** request target as sent: path and query */
  path: string;
  /** Host / :authority as the client sent it ('' when it sent none) */
  authority: string;
  /** lower-case names; no pseudo-headers, no hop-by-hop headers, no x-nodal-* */
  headers: Headers;
  /** what the client spoke; the destination speaks the same to the pod */
  protocol: WireProtocol;
  /**
   * On a pooled tunnel connection (mesh.ts), the client's ip:port as the source node's proxy
   * names it (x-nodal-source-addr): the destination's flow names it
   */
  clientAddr?: string;
}

export interface L7Response {
  status: number;
  /** lower-case names; no pseudo-headers, no hop-by-hop headers */
  headers: Headers;
  /** ends with the response; destroying it cancels the exchange upstream */
  body: Readable;
  /** the trailers, once `body` ended (undefined when there were none) */
  trailers(): Headers | undefined;
  /** there is no body at all (a trailers-only gRPC answer must end with its HEADERS frame) */
  empty?: boolean;
  /**
   * The whole body, when it came with the head (a small HTTP/1.1 answer from a pod,
   * WholeResponse): writers take it as it is, and `body` is made only for whoever asks
   */
  whole?: Buffer;
}

/**
 * An answer that arrived whole with its head: no stream, no ticks, no listeners, unless
 * someone asks for `body` (a stream of `whole`, made once). The pod connection it came on
 * is back in its pool already.
 */
export class WholeResponse implements L7Response {
  status: number;
  headers: Headers;
  readonly whole: Buffer;
  private readonly t: Headers | undefined;
  private stream: Readable | undefined;

  constructor(status: number, headers: Headers, whole: Buffer, trailers: Headers | undefined) {
    this.status = status;
    this.headers = headers;
    this.whole = whole;
    this.t = trailers;
  }

  get body(): Readable {
    if (!this.stream) {
      const r = new Readable({ read() {} });
      if (this.whole.length > 0) r.push(this.whole);
      r.push(null);
      // arrived(): received to its end and buffered
      (r as Readable & { complete: boolean }).complete = true;
      this.stream = r;
    }
    return this.stream;
  }

  trailers(): Headers | undefined {
    return this.t;
  }
}

/** a body of no bytes, shared (a Buffer of length 0 holds nothing that could change) */
export const NO_BYTES = Buffer.alloc(0);

/**
 * A request body that is all here: read in the same read as its head (client-h1.ts), or
 * held for a retry (egress.ts). The lean clients (pod-h1.ts, mesh.ts) take `whole` and send
 * it with the head in one write, and never read the stream: it costs no tick then. Anything
 * else reads it as the stream it also is.
 */
export class WholeBody extends Readable {
  readonly whole: Buffer;

  constructor(whole: Buffer) {
    super();
    this.whole = whole;
  }

  override _read(): void {
    if (this.whole.length > 0) this.push(this.whole);
    this.push(null);
  }
}

/**
 * `body`'s bytes when all of them are here and `head` frames exactly them, with a Content-
 * Length a lean client sends as it is; undefined otherwise (node:http frames it itself)
 */
export function wholeBodyOf(head: RequestHead, body: Readable): Buffer | undefined {
  if (!(body instanceof WholeBody)) return undefined;
  const cl = head.headers['content-length'];
  return typeof cl === 'string' && lengthValue(cl) === body.whole.length ? body.whole : undefined;
}

/**
 * The answer on an HTTP/2 stream we opened (to the peer node's proxy, or to an h2c/gRPC
 * pod), handed to `onAnswer` once its HEADERS arrive; an error before them goes to
 * `onFailure`, one after them is the body's (the writers see it cut off). A small answer
 * usually comes whole in one read, but node:http2 emits 'response' before it hands the
 * stream the DATA of that read, so the answer waits for the end of this poll phase
 * (setImmediate): by then node has closed the stream cleanly with the body buffered, or the
 * body is still coming. A body that is here is taken whole (WholeResponse), as pod-h1 takes
 * a whole HTTP/1.1 answer: the client gets head and body in one write instead of a chunked
 * stream of three. The stream's listeners go when it closes (releaseOnClose).
 */
export function onH2Answer(stream: ClientHttp2Stream, onAnswer: (r: L7Response) => void, onFailure: (err: Error) => void): void {
  releaseOnClose(stream);
  let trailers: Headers | undefined;
  let answered = false;
  stream.on('error', (err: Error) => {
    if (answered) return;
    answered = true;
    onFailure(err);
  });
  stream.on('trailers', (t: H2Headers) => { trailers = endToEnd(t, false); });
  stream.once('response', (h: H2Headers, flags: number) => {
    if (answered) return;
    answered = true;
    const status = Number(h[':status']);
    const headers = endToEnd(h, false);
    const empty = (flags & h2c.NGHTTP2_FLAG_END_STREAM) !== 0;
    const streamed = (): void => { onAnswer({ status, headers, body: stream, trailers: () => trailers, empty }); };
    if (empty) {
      streamed();
      return;
    }
    setImmediate(() => {
      if (!stream.closed || stream.destroyed || stream.rstCode !== h2c.NGHTTP2_NO_ERROR || stream.readableLength > MAX_BUFFERED_WRITE) {
        streamed(); // still coming, or cut off (the writers see that on the body)
        return;
      }
      // reading the buffer to its end ends the stream, which lets node:http2 release it
      const data = stream.read() as Buffer | null;
      onAnswer(new WholeResponse(status, headers, data ?? NO_BYTES, trailers));
    });
  });
}

/** tunnel and internal headers: set by the proxy only, stripped from what clients send */
export const INTERNAL_HEADER_PREFIX = 'x-nodal-';

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1, RFC 9113 §8.2.2) describe one connection and are
 * never forwarded; Host is carried as RequestHead.authority instead.
 */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization',
  'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings', 'host',
]);

/**
 * The end-to-end headers of a received message: hop-by-hop headers and the headers the
 * Connection header names are dropped (`te: trailers` is kept, gRPC needs it), so are
 * pseudo-headers and, when `stripInternal`, the proxy's own x-nodal-* headers (a client
 * must not be able to speak for the proxy).
 */
export function endToEnd(h: IncomingHttpHeaders, stripInternal: boolean): Headers {
  const out: Headers = {};
  const conn = h.connection;
  const named = typeof conn === 'string' && conn !== '' ? connectionNames(conn) : undefined;
  for (const k in h) {
    if (k.charCodeAt(0) === 58 /* ':' */) continue;
    if (HOP_BY_HOP.has(k)) {
      if (k === 'te' && typeof h.te === 'string' && h.te.toLowerCase().includes('trailers')) out.te = 'trailers';
      continue;
    }
    if (named?.includes(k)) continue;
    if (stripInternal && k.startsWith(INTERNAL_HEADER_PREFIX)) continue;
    const v = h[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/** the header names a Connection header lists; none beyond the hop-by-hop ones for the usual `keep-alive` or `close` */
function connectionNames(value: string): string[] | undefined {
  const v = value.toLowerCase();
  if (v === 'keep-alive' || v === 'close') return undefined;
  return v.split(',').map((s) => s.trim());
}

/**
 * An HTTP/1.1 request as a RequestHead, and a signal that fires if the client goes away
 * before its answer was written (the upstream request must not be left hanging)
 */
export function h1Request(req: IncomingMessage, res: ServerResponse): { head: RequestHead; signal: AbortSignal } {
  const head = h1Head(req);
  const ac = new AbortController();
  res.on('close', () => { if (!res.writableFinished) ac.abort(); });
  return { head, signal: ac.signal };
}

/**
 * A body that ended because it was cut off, not because it was whole: node:http2 ends the
 * readable side of a stream its peer reset (RST_STREAM) just as it ends one that got
 * END_STREAM; only `aborted` and `rstCode` tell them apart. Passing such an end on would
 * hand the far side a truncated message as a complete one.
 */
export function cutOff(body: Readable): boolean {
  const s = body as Readable & { aborted?: boolean; rstCode?: number };
  return s.aborted === true || (s.rstCode !== undefined && s.rstCode !== 0);
}

/**
 * Write what `body` reads to `to` as it comes, with backpressure: a chunk `to` cannot take
 * now pauses `body` until `to` drains. Ending `to` is the caller's. Not Readable.pipe(): that
 * sets up five listeners on each side per message and takes them down again, some 3 KB of
 * a gRPC call's 38, for what one 'data' listener does here. What pipe() does besides, this
 * needs not: a `to` that fails or closes stops taking writes, and `body` then stays paused,
 * as pipe() leaves it once it unpipes; the exchange's own handlers end both.
 */
export function flow(body: Readable, to: Writable): void {
  const resume = (): void => { body.resume(); };
  body.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) {
      body.pause();
      to.once('drain', resume);
    }
  });
}

/** pass a message body on (flow()); a body cut off (cutOff(), or closed before its end) destroys `to` instead of ending it */
export function pipeBody(body: Readable, to: Writable): void {
  const cut = (): void => { to.destroy(new Error('the sender reset the stream before the body ended')); };
  flow(body, to);
  body.once('end', () => {
    if (cutOff(body)) cut();
    else to.end();
  });
  body.once('close', () => { if (!body.readableEnded) cut(); });
}

/**
 * An HTTP/2 stream that closed before its exchange was over: the answer not all written,
 * or the peer reset it (a reset ends the writable side too, so "ended" alone would read a
 * reset stream as answered and leave its upstream request running). writableEnded, not
 * writableFinished: an h2 stream often closes before the 'finish' of an answer written
 * whole, which made nearly every completed tunnel request cancel its upstream.
 */
export function closedEarly(stream: Http2Stream): boolean {
  return !stream.writableEnded || cutOff(stream);
}

/** a message body's length as its headers declare it (Content-Length); undefined when they do not */
export function declaredLength(h: Headers): number | undefined {
  const v = h['content-length'];
  return typeof v === 'string' ? lengthValue(v) : undefined;
}

/** a Content-Length value as a number: at most 15 digits, which a Number holds exactly (llhttp's own limit is higher); undefined for anything else */
export function lengthValue(v: string): number | undefined {
  return LENGTH.test(v) ? Number(v) : undefined;
}
const LENGTH = /^\d{1,15}$/;

/**
 * An answer's body length as far as it is known when its access log line is written: none,
 * whole, or declared; undefined for a body still streaming without a declared length
 */
export function answerBytes(r: L7Response): number | undefined {
  if (r.empty === true) return 0;
  if (r.whole !== undefined) return r.whole.length;
  return declaredLength(r.headers);
}

/** an HTTP/1.1 request as a RequestHead */
export function h1Head(req: IncomingMessage): RequestHead {
  return {
    method: req.method ?? 'GET', path: req.url ?? '/', authority: req.headers.host ?? '',
    headers: endToEnd(req.headers, true), protocol: 'http1',
  };
}

/**
 * A signal that fires when an HTTP/1.1 client's connection closes: one per connection,
 * shared by its requests, instead of an AbortController and a 'close' listener per request.
 * The same thing h1Request's signal says for a request still unanswered (a response closes
 * before it finished only when its connection goes), and harmless for answered ones, which
 * have let go of it by then.
 */
export function connectionClosed(socket: Socket): AbortSignal {
  let ac = closedSignals.get(socket);
  if (!ac) {
    const c = new AbortController();
    // what listens on it directly, not through watchAbort(): no leak warning at the 11th
    setMaxListeners(0, c.signal);
    const fns = new Set<() => void>();
    c.signal.addEventListener('abort', () => {
      for (const f of [...fns]) f();
      fns.clear();
    }, { once: true });
    closedSignals.set(socket, (ac = c));
    connectionWatchers.set(c.signal, fns);
    socket.once('close', () => {
      c.abort();
      // see egress.ts toNodeHttp: not left to the WeakMaps
      closedSignals.delete(socket);
      connectionWatchers.delete(c.signal);
    });
  }
  return ac.signal;
}

const closedSignals = new WeakMap<Socket, AbortController>();

/**
 * Call `fn` when `signal` aborts, until unwatchAbort(). A connection's signal
 * (connectionClosed) keeps its watchers in a Set behind one 'abort' listener: EventTarget's
 * addEventListener and removeEventListener cost several times a Set's add and delete, and
 * every request on a pooled connection to a pod would pay both. Any other signal is made
 * for one request, and `fn` becomes its own 'abort' listener: an entry per request in a
 * WeakMap would outlive the request, since V8's young-generation GC keeps every value of a
 * WeakMap until the next full GC, whether its key is still reachable or not. At 1,000 gRPC
 * calls/s on one node, each young GC copied 0.55-0.69 MB with such entries and 0.03-0.13 MB
 * without (docs/ARCHITECTURE.md, "What a request leaves for the GC").
 */
export function watchAbort(signal: AbortSignal, fn: () => void): void {
  const fns = connectionWatchers.get(signal);
  if (fns) fns.add(fn);
  else signal.addEventListener('abort', fn, { once: true });
}

export function unwatchAbort(signal: AbortSignal, fn: () => void): void {
  const fns = connectionWatchers.get(signal);
  if (fns) fns.delete(fn);
  else signal.removeEventListener('abort', fn);
}

/** the watchers of each open connection's signal; deleted when the connection closes */
const connectionWatchers = new WeakMap<AbortSignal, Set<() => void>>();

/**
 * Destroy an HTTP/2 stream when `signal` fires, until the stream closes: a watchAbort()
 * entry, instead of the `signal` option of node's request(), which adds an abort listener
 * (and its disposer) to the signal for every stream. The reset says CANCEL (cancelled()).
 */
export function cancelOn(signal: AbortSignal, stream: Http2Stream): void {
  const onAbort = (): void => { stream.destroy(cancelled(signal)); };
  if (signal.aborted) {
    onAbort();
    return;
  }
  watchAbort(signal, onAbort);
  stream.once('close', () => unwatchAbort(signal, onAbort));
}

/**
 * Node's own AbortError class, which is not exported: an Http2Stream destroyed with one
 * resets with RST_STREAM CANCEL (as its `signal` option does), any other error with
 * INTERNAL_ERROR. A gRPC server reads CANCEL as a call its client cancelled, and Envoy resets
 * upstream with it when its client went away. (close(CANCEL) would not do: it ends the
 * writable side first, so a request body cut off here would reach the pod as complete.)
 * addAbortSignal() on an aborted signal destroys its stream with one at once.
 */
const NodeAbortError: new (message?: string, options?: { cause?: unknown }) => Error = (() => {
  const probe = new PassThrough();
  probe.on('error', noop);
  addAbortSignal(AbortSignal.abort(), probe);
  return (probe.errored?.constructor ?? Error) as new (message?: string, options?: { cause?: unknown }) => Error;
})();

/** the error a stream cancelled by `signal` is destroyed with */
function cancelled(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return new NodeAbortError(reason instanceof Error ? reason.message : 'request cancelled', { cause: reason });
}

function noop(): void {}

/**
 * `name: value` lines of one header as they go on the wire, validated as node:http
 * validates what it sends (it throws node:http's errors for what it would refuse: a CR or
 * LF in a value must never split a message)
 */
export function headerLines(name: string, value: string | readonly string[]): string {
  validateHeaderName(name);
  if (typeof value === 'string') {
    validateHeaderValue(name, value);
    return `${name}: ${value}\r\n`;
  }
  let text = '';
  for (const x of value) {
    validateHeaderValue(name, x);
    text += `${name}: ${x}\r\n`;
  }
  return text;
}

/** header values joined into one string each (what matchers and policies read) */
export function flatHeaders(h: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k in h) {
    const v = h[k]!;
    out[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

/** a header's first value */
export function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

export function isGrpc(headers: Headers | IncomingHttpHeaders): boolean {
  const ct = headerValue(headers['content-type']);
  return ct !== undefined && ct.startsWith('application/grpc');
}

/** `/package.Service/Method` → its parts; undefined for any other path */
export function grpcMethodOf(path: string): { service: string; method: string } | undefined {
  const slash = path.indexOf('/', 1);
  if (path.charCodeAt(0) !== 47 || slash < 0) return undefined;
  const end = path.indexOf('?');
  return { service: path.slice(1, slash), method: path.slice(slash + 1, end < 0 ? undefined : end) };
}

/** gRPC status codes the proxy answers with itself (grpc/doc/statuscodes.md) */
export const GrpcStatus = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14,
} as const;

/** HTTP status → gRPC status, per grpc/doc/http-grpc-status-mapping.md */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400: return GrpcStatus.INTERNAL;
    case 401: return 16;
    case 403: return GrpcStatus.PERMISSION_DENIED;
    case 404: return GrpcStatus.UNIMPLEMENTED;
    case 429: case 502: case 503: case 504: return GrpcStatus.UNAVAILABLE;
    default: return GrpcStatus.UNKNOWN;
  }
}

/** one gRPC length-prefixed message: byte 0 "not compressed", bytes 1-4 the length, the bytes */
export function grpcMessage(payload: Buffer): Buffer {
  const out = Buffer.alloc(5 + payload.length);
  out.writeUInt32BE(payload.length, 1);
  payload.copy(out, 5);
  return out;
}

/** the payload of the first gRPC length-prefixed message in `body` (grpcMessage's inverse); empty without one */
export function grpcPayload(body: Buffer): Buffer {
  return body.length < 5 ? Buffer.alloc(0) : body.subarray(5, 5 + body.readUInt32BE(1));
}

/** grpc-status of a finished response: from the trailers, or from the headers of a trailers-only answer */
export function grpcStatusOf(res: Pick<L7Response, 'headers' | 'trailers'>): number | undefined {
  const v = headerValue(res.trailers()?.['grpc-status']) ?? headerValue(res.headers['grpc-status']);
  if (v === undefined) return undefined;
  const n = Number(v);
  return Number.isInteger(n) ? n : undefined;
}

/**
 * An answer the proxy gives itself (a denial, a missing backend, a fault, a limit). For a
 * gRPC request it is a trailers-only gRPC answer (HTTP 200 with grpc-status), which is
 * what gRPC clients understand; otherwise the status with a one-line text body.
 */
export function localResponse(status: number, message: string, grpc: boolean, extra?: Headers): L7Response {
  if (grpc) {
    const headers: Headers = {
      'content-type': 'application/grpc',
      'grpc-status': String(grpcStatusForHttp(status)),
      'grpc-message': encodeURIComponent(message),
      ...extra,
    };
    return { status: 200, headers, body: Readable.from([]), trailers: () => undefined, empty: true };
  }
  const body = Buffer.from(`${message}\n`);
  return {
    status,
    headers: { 'content-type': 'text/plain', 'content-length': String(body.length), ...extra },
    body: Readable.from([body]),
    trailers: () => undefined,
  };
}

/**
 * Write a response to an HTTP/1.1 client. Trailers (rare outside gRPC) go out only when
 * the body is chunked, which is the only framing that can carry them.
 */
export function writeH1(res: ServerResponse, r: L7Response, extraHeaders?: Headers): void {
  if (res.destroyed) {
    r.body.destroy();
    return;
  }
  let headers: OutgoingHttpHeaders = extraHeaders ? { ...r.headers, ...extraHeaders } : r.headers;
  const data = bodyIfHere(r);
  if (data !== undefined) {
    // one write of head and body, no pipe and none of its listeners; sized when it can be
    // (an answer that came over HTTP/2 or chunked has no length of its own), but trailers
    // need chunked framing
    const t = r.trailers();
    if (t === undefined && answerHasBody(res.req.method ?? 'GET', r.status) && headers['content-length'] === undefined) headers = { ...headers, 'content-length': data.length };
    res.writeHead(r.status, headers);
    if (t && headers['content-length'] === undefined) res.addTrailers(t as OutgoingHttpHeaders);
    res.end(data);
    return;
  }
  res.writeHead(r.status, headers);
  const chunked = headers['content-length'] === undefined;
  // a body that stops without ending (upstream reset, a policy closing it) must not leave
  // the client waiting: the connection goes, which is how HTTP/1.1 says "incomplete"
  r.body.once('close', () => { if (!r.body.readableEnded) res.destroy(); });
  r.body.on('error', () => res.destroy());
  r.body.on('end', () => {
    if (cutOff(r.body)) {
      res.destroy();
      return;
    }
    const t = r.trailers();
    if (t && chunked && !res.destroyed) res.addTrailers(t as OutgoingHttpHeaders);
    res.end();
  });
  res.on('close', () => { if (!r.body.readableEnded) r.body.destroy(); });
  flow(r.body, res);
}

/** an answer to `method` with `status` carries a body (RFC 9110 §6.4.1): not HEAD's, 1xx, 204 or 304 */
export function answerHasBody(method: string, status: number): boolean {
  return method !== 'HEAD' && status >= 200 && status !== 204 && status !== 304;
}

/**
 * The answer's body if all of it is here: `whole`, or an upstream stream received to its
 * end and buffered (arrived()), read out now, which ends that stream and hands a pooled
 * upstream connection back to its pool. undefined while the body is still coming. The
 * writers take a body that is here in one write with its head.
 */
export function bodyIfHere(r: L7Response): Buffer | undefined {
  if (r.whole !== undefined) return r.whole;
  // none at all (END_STREAM on an HTTP/2 answer's HEADERS; node:http2 ends that stream by
  // itself, and may have before anyone reads it, so no 'end' is to be waited for)
  if (r.empty === true) return NO_BYTES;
  if (!arrived(r.body)) return undefined;
  return (r.body.read() as Buffer | null) ?? NO_BYTES;
}

/** an upstream HTTP/1.1 answer that has been received to its end and is buffered whole */
function arrived(body: Readable): boolean {
  const m = body as Partial<IncomingMessage>;
  return m.complete === true && !body.destroyed && !body.readableEnded && body.readableLength <= MAX_BUFFERED_WRITE;
}

/** above this a buffered answer is piped as usual, in chunks the socket can take */
const MAX_BUFFERED_WRITE = 64 * 1024;

/**
 * Write a response to an HTTP/2 client stream. A gRPC response that is not trailers-only
 * waits for the upstream trailers (grpc-status lives there); anything else ends with its body.
 */
export function writeH2(stream: ServerHttp2Stream, r: L7Response, extraHeaders?: Headers): void {
  if (stream.destroyed || stream.closed) {
    r.body.destroy();
    return;
  }
  const headers: OutgoingHttpHeaders = { ...r.headers, ...extraHeaders, ':status': r.status };
  delete headers['content-length']; // HTTP/2 frames its own body; a stale length would be a protocol error
  // gRPC's status lives in the trailers; an HTTP/1.1 answer of unknown length (chunked) may
  // end with trailers too. Either way they go in a trailing HEADERS frame once the body is out
  const needsGrpcStatus = !r.empty && isGrpc(r.headers) && r.headers['grpc-status'] === undefined;
  const data = r.empty ? undefined : bodyIfHere(r);
  const t0 = data !== undefined ? r.trailers() : undefined;
  const waitForTrailers = needsGrpcStatus || t0 !== undefined || (!r.empty && data === undefined && r.headers['content-length'] === undefined);
  try {
    if (data !== undefined && !waitForTrailers) {
      stream.respond(headers, { endStream: data.length === 0 });
      if (data.length > 0) stream.end(data);
      return;
    }
    if (r.empty) {
      stream.respond(headers, { endStream: true });
      r.body.resume();
      return;
    }
    stream.respond(headers, { waitForTrailers });
  } catch {
    r.body.destroy();
    stream.close(h2c.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  if (waitForTrailers) {
    stream.once('wantTrailers', () => {
      const t = r.trailers();
      if (t && Object.keys(t).length > 0) stream.sendTrailers(t as OutgoingHttpHeaders);
      else if (needsGrpcStatus) stream.sendTrailers({ 'grpc-status': String(GrpcStatus.UNKNOWN), 'grpc-message': 'upstream sent no grpc-status' });
      else stream.sendTrailers({}); // none after all: node:http2 ends the stream with an empty DATA frame
    });
  }
  if (data !== undefined) {
    stream.end(data);
    return;
  }
  // a body that stops without ending (upstream reset, a policy closing it): RST_STREAM
  r.body.once('close', () => { if (!r.body.readableEnded) resetStream(stream); });
  r.body.on('error', () => resetStream(stream));
  stream.on('close', () => { if (!r.body.readableEnded) r.body.destroy(); });
  flow(r.body, stream);
  r.body.once('end', () => {
    if (cutOff(r.body)) resetStream(stream);
    else stream.end();
  });
}

/**
 * RST_STREAM for a message that is incomplete. Not close(code): it ends the writable side
 * first, and the END_STREAM that goes out ahead of the RST_STREAM has the peer read the
 * truncated message as complete. destroy(err) sends the RST_STREAM (INTERNAL_ERROR) alone.
 */
export function resetStream(stream: Http2Stream): void {
  if (!stream.destroyed) stream.destroy(new Error('the message was cut off'));
}
