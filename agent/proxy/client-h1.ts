// HTTP/1.1 from client pods, the common case without node:http's Server: requests without
// a body, or with a Content-Length body that came whole in the read of its head (a small
// POST; no Transfer-Encoding, no Expect), HTTP/1.1 keep-alive, no Upgrade and no CONNECT,
// each head whole within one read. llhttp (node:http's own parser, strict, llhttp.ts)
// parses the head; the request goes on as a RequestHead with its body as a WholeBody, and
// its answer is written back in one write when it arrived whole, streamed otherwise, in
// request order when the client pipelines.
//
// The first request that is anything else (a chunked body, or one not all in its head's
// read, an upgrade, a head split over reads or longer than 32 header lines, a refusal,
// anything llhttp rejects) hands the connection to the hardened node:http Server
// (limits.ts) for the rest of its life, from that request's first byte on, once the answers
// before it are out: 400/408/431 answers, slowloris timeouts, streamed bodies, 100-continue
// and upgrades stay node:http's business, unchanged. Only
// the idle keep-alive timeout is kept here. The Server's IncomingMessage, ServerResponse
// and their ticks cost a fifth of the proxy's CPU per request (docs/benchmarks.md).

import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import {
  answerHasBody, bodyIfHere, connectionClosed, cutOff, endToEnd, headerLines, lengthValue, NO_BYTES, WholeBody, type Headers, type L7Response, type RequestHead,
} from './exchange.ts';
import { addHeaderLine, CAN_CONSUME, HTTPParser, METHODS, type Parser } from './llhttp.ts';
import { Header } from './tunnel.ts';
import { atEndOfTurn, type EndOfTurn } from './turn.ts';

/** false on a Node whose http parser cannot be reached: every connection goes to node:http */
export const leanServerAvailable = HTTPParser !== undefined;

export interface LeanServerLimits {
  /** request line plus headers; a longer head is node:http's to refuse (431) */
  maxHeaderBytes: number;
  /** header fields; more are node:http's to refuse (431) */
  maxHeaderCount: number;
  /** an idle connection between requests is closed after this long (node:http's keepAliveTimeout) */
  keepAliveTimeoutMs: number;
}

/** one request; resolves with its answer (rejects only on a bug: the connection is closed) */
export type ServeRequest = (head: RequestHead, body: Readable, signal: AbortSignal) => Promise<L7Response>;

/**
 * The connection goes to node:http from here on: paused, its readable side holding the
 * bytes from the first request not served here. The callee emits it to its Server and
 * resumes it.
 */
export type HandOver = (socket: Socket) => void;

/**
 * Serve a client connection: lean while its requests are plain, node:http's from the first
 * that is not. `pooled`: a pooled tunnel connection from a peer's proxy (mesh.ts), whose
 * requests name their client (RequestHead.clientAddr).
 */
export function serveLean(socket: Socket, limits: LeanServerLimits, serve: ServeRequest, handOver: HandOver, pooled = false): void {
  new LeanConnection(socket, limits, serve, handOver, pooled).start();
}

/**
 * The request body of every request served here: there is none. Already ended, so that
 * whoever is handed it sees an empty body at once (pods.ts sends such requests through
 * its own lean client); nothing here listens on it, so one is shared.
 */
const NO_BODY = new Readable({ read() {} });
NO_BODY.push(null);
NO_BODY.resume();

/** llhttp's head callback: 2 = no body, and stop after this head (execute() returns where it ended); -1 = stop with an error */
const HEAD_DONE = 2;
const NOT_HERE = -1;
/** the resource object node's binding wants for async hooks; nothing reads it */
const RESOURCE = {};
/** node:http's keepAliveTimeoutBuffer: the connection outlives the timeout its answers announce by this much */
const KEEP_ALIVE_MARGIN_MS = 1000;
/**
 * Requests of one connection whose answers are not all out; past it the connection is not
 * read until some are. Each is an upstream request in flight: a client that pipelines
 * thousands in one write must not start thousands at once.
 */
const MAX_OUTSTANDING = 64;
/**
 * Request bodies up to this size are served here when all of them came in the read of
 * their head (one read holds up to 64 KiB); a larger body, or one that does not, is node:http's
 */
const MAX_BODY = 64 * 1024;
/** answers up to this size go out in one buffer with their head */
const ONE_WRITE_MAX = 16 * 1024;
/** answers up to this size go out in one string with their head (no buffer to fill) */
const ONE_STRING_MAX = 1024;

interface LeanParser extends Parser { [CONN]?: LeanConnection }
/** the parts of a socket's stream handle (a libuv TCP wrap) used while llhttp consumes it, as node:http's Server uses them */
interface ReadHandle { isStreamBase?: boolean; reading: boolean; bytesRead: number; readStart(): number; readStop(): number }
const CONN = Symbol('nodal.leanConnection');

/** one request served here, in arrival order */
interface Pending {
  method: string;
  /** the answer, once known */
  res: L7Response | undefined;
}

class LeanConnection implements EndOfTurn {
  private readonly socket: Socket;
  private readonly limits: LeanServerLimits;
  private readonly serve: ServeRequest;
  private readonly handOver: HandOver;
  private readonly pooled: boolean;
  private readonly parser: LeanParser;
  private readonly signal: AbortSignal;
  /** requests whose answers are not all written yet, oldest first */
  private readonly queue: Pending[] = [];
  /** answers are ready and this connection waits for the end of the turn to write them (turn.ts) */
  private turnQueued = false;
  /** an answer is streaming to the client: the next waits */
  private streaming: L7Response | undefined;
  /** the head the last execute() completed */
  private head: RequestHead | undefined;
  /** its body's length (Content-Length): the bytes that follow the head in the same read */
  private bodyLength = 0;
  /** set once the connection is to go to node:http: the bytes it starts from */
  private rest: Buffer | undefined;
  /** bytes read but not parsed yet, while too many answers are outstanding */
  private held: Buffer | undefined;
  private readonly onData = (chunk: Buffer): void => this.read(chunk);
  /** the socket's handle, while llhttp reads it directly (consume()); undefined: reads come as 'data' */
  private consumed: ReadHandle | undefined;
  /** the handle's bytesRead when executed() last ran: how long each read was, without a copy of it */
  private readTo = 0;
  private readonly onTimeout = (): void => {
    // idle between requests (node:http's keepAliveTimeout); a slow answer is not idleness
    if (this.queue.length === 0 && this.streaming === undefined) this.socket.destroy();
  };
  private readonly onClose = (): void => this.closed();
  /** the client read what it was sent: requests held back may go on */
  private readonly onDrain = (): void => { if (this.held !== undefined) this.flush(); };
  /**
   * The client's FIN, read as node:http's Server (httpAllowHalfOpen off), nginx and Envoy
   * read it: the client is gone. What was written stays delivered, ours follows it, and
   * the close cancels what is unanswered upstream.
   */
  private readonly onEnd = (): void => {
    this.flush(); // answers already here, not yet written at the end of the turn, go first
    this.socket.end();
  };

  constructor(socket: Socket, limits: LeanServerLimits, serve: ServeRequest, handOver: HandOver, pooled: boolean) {
    this.socket = socket;
    this.pooled = pooled;
    this.limits = limits;
    this.serve = serve;
    this.handOver = handOver;
    this.signal = connectionClosed(socket);
    this.parser = new HTTPParser!();
    this.parser[CONN] = this;
    this.parser[HTTPParser!.kOnHeaders] = onHeaders;
    this.parser[HTTPParser!.kOnHeadersComplete] = onHeadersComplete;
    // no body and message-complete callbacks: a request served here has no body, and its
    // end is the head (HEAD_DONE); node's parser calls into JS only for callbacks it has
    this.reset();
  }

  start(): void {
    const handle = (this.socket as Socket & { _handle?: ReadHandle | null })._handle;
    if (CAN_CONSUME && handle?.isStreamBase === true && this.socket.readableLength === 0) {
      // reads go straight from the handle into llhttp, in C++, as node:http's Server reads
      // them: no Buffer, stream push or 'data' event per read (executed() per read instead)
      // through a local: V8 allocates a function literal assigned to a property in old space,
      // which would pin this connection through young GCs after it closed (stream.ts releaseOnClose)
      const onExecute = (ret: number | Error): void => this.executed(ret);
      this.parser[HTTPParser!.kOnExecute] = onExecute;
      this.parser.consume(handle);
      this.consumed = handle;
      this.readTo = handle.bytesRead;
    } else {
      // bytes protocol detection buffered come first, through the stream
      this.socket.on('data', this.onData);
    }
    this.socket.on('close', this.onClose);
    this.socket.on('end', this.onEnd);
    this.socket.on('drain', this.onDrain);
    if (this.limits.keepAliveTimeoutMs > 0) {
      // node:http's margin too: the client, told the timeout, closes first
      this.socket.setTimeout(this.limits.keepAliveTimeoutMs + KEEP_ALIVE_MARGIN_MS);
      this.socket.on('timeout', this.onTimeout);
    }
    // protocol detection may have left it paused, with the first bytes in its buffer
    this.socket.resume();
  }

  /** a fresh parse for the next request (a head that returned HEAD_DONE leaves llhttp in upgrade mode) */
  private reset(): void {
    this.parser.initialize(HTTPParser!.REQUEST, RESOURCE, this.limits.maxHeaderBytes, 0);
  }

  /**
   * One read, parsed by llhttp as it came off the handle (consume()): `ret` is where it
   * stopped, at the end of a head served here (HEAD_DONE); what follows it in the read
   * (pipelined requests) is parsed by read(). Anything else: the read goes to node:http.
   */
  private executed(ret: number | Error): void {
    const head = this.head;
    if (head === undefined || typeof ret !== 'number') {
      // the unfinished request began with this read: each read starts on a fresh parse
      this.stop(this.parser.getCurrentBuffer());
      return;
    }
    this.head = undefined;
    this.reset();
    const read = this.consumed!.bytesRead;
    const length = read - this.readTo;
    this.readTo = read;
    if (this.bodyLength > 0) {
      // a head read here starts its read (a head cut off by a read's end went to node:http)
      this.withBody(head, this.parser.getCurrentBuffer(), ret);
      return;
    }
    this.request(head, NO_BODY);
    // pipelined requests behind this head: getCurrentBuffer() copies the read, so only then
    if (ret < length) this.read(this.parser.getCurrentBuffer().subarray(ret));
    else if (this.queue.length >= MAX_OUTSTANDING || this.socket.writableNeedDrain) {
      // nothing left of this read, and no more reads until answers are out (flush())
      this.held = NO_BYTES;
      this.pauseReading();
    }
  }

  /**
   * A head that ends at `at` in `data`, its request starting at data's first byte, with a
   * Content-Length body: served with the body when all of it is in `data`, and what
   * follows is parsed on; else the connection is node:http's from the request's first byte
   */
  private withBody(head: RequestHead, data: Buffer, at: number): void {
    const need = this.bodyLength;
    this.bodyLength = 0;
    if (data.length - at < need) {
      this.stop(data);
      return;
    }
    this.request(head, new WholeBody(data.subarray(at, at + need)));
    if (at + need < data.length) this.read(data.subarray(at + need));
    else if (this.queue.length >= MAX_OUTSTANDING || this.socket.writableNeedDrain) {
      this.held = NO_BYTES;
      this.pauseReading();
    }
  }

  /** stop reading the socket (answers outstanding, or the connection going to node:http) */
  private pauseReading(): void {
    if (this.consumed) {
      this.consumed.reading = false;
      this.consumed.readStop();
    } else this.socket.pause();
  }

  private resumeReading(): void {
    if (this.consumed) {
      if (!this.consumed.reading) {
        this.consumed.reading = true;
        this.consumed.readStart();
      }
    } else this.socket.resume();
  }

  private read(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      const data = off === 0 ? chunk : chunk.subarray(off);
      if (this.queue.length >= MAX_OUTSTANDING || this.socket.writableNeedDrain) {
        // a client that pipelines faster than its answers come, or does not read them:
        // the rest waits, and the socket is not read, until answers are out (flush())
        this.held = data;
        this.pauseReading();
        return;
      }
      const n = this.parser.execute(data);
      const head = this.head;
      if (head === undefined || typeof n !== 'number') {
        // not a request served here, or not whole in this read: node:http's from its first byte
        this.stop(data);
        return;
      }
      this.head = undefined;
      this.reset();
      if (this.bodyLength > 0) {
        this.withBody(head, data, n);
        return;
      }
      off += n;
      this.request(head, NO_BODY);
    }
  }

  /** llhttp's head callback: the request is served here (HEAD_DONE) or not (NOT_HERE) */
  headers(major: number, minor: number, raw: string[] | undefined, method: number, url: string, upgrade: boolean, keepAlive: boolean): number {
    // raw is undefined after more than 32 header lines (kOnHeaders): rare, node:http's
    if (raw === undefined || major !== 1 || minor !== 1 || !keepAlive || upgrade) return NOT_HERE;
    const name = METHODS[method];
    if (name === undefined || name === 'CONNECT' || raw.length > 2 * this.limits.maxHeaderCount) return NOT_HERE;
    const h: Record<string, string | string[]> = {};
    let hosts = 0;
    let length = 0;
    let lengths = 0;
    for (let i = 0; i < raw.length; i += 2) {
      const field = raw[i]!;
      // a chunked body, a repeated Host (refused by guardRequest) or Content-Length, or
      // Expect: not here (llhttp refuses a second Content-Length already; not trusted to)
      switch (field.length) {
        case 4: if (field.toLowerCase() === 'host' && ++hosts > 1) return NOT_HERE; break;
        case 6: if (field.toLowerCase() === 'expect') return NOT_HERE; break;
        case 14:
          if (field.toLowerCase() === 'content-length') {
            const n = lengthValue(raw[i + 1]!);
            if (n === undefined || n > MAX_BODY || ++lengths > 1) return NOT_HERE;
            length = n;
          }
          break;
        case 17: if (field.toLowerCase() === 'transfer-encoding') return NOT_HERE; break;
      }
      addHeaderLine(field, raw[i + 1]!, h);
    }
    this.head = { method: name, path: url, authority: (h.host as string | undefined) ?? '', headers: endToEnd(h, true), protocol: 'http1' };
    if (this.pooled) {
      const addr = h[Header.addr];
      if (typeof addr === 'string') this.head.clientAddr = addr;
      // the source's client spoke HTTP/2 (mesh.ts): so does the destination to the pod
      if (h[Header.protocol] === 'h2') this.head.protocol = 'h2';
    }
    this.bodyLength = length;
    return HEAD_DONE;
  }

  private request(head: RequestHead, body: Readable): void {
    const p: Pending = { method: head.method, res: undefined };
    this.queue.push(p);
    this.serve(head, body, this.signal).then((res) => {
      p.res = res;
      if (!this.turnQueued) {
        this.turnQueued = true;
        atEndOfTurn(this);
      }
    }, () => this.socket.destroy());
  }

  /** the answers that came during this turn go out together (turn.ts) */
  endOfTurn(): void {
    this.turnQueued = false;
    this.flush();
  }

  /** write the answers that are ready, in request order */
  private flush(): void {
    while (this.streaming === undefined && this.queue.length > 0) {
      const res = this.queue[0]!.res;
      if (res === undefined) return;
      const { method } = this.queue.shift()!;
      if (!this.socket.writable) {
        // the client left (or sent its FIN): the answer is not wanted
        if (res.whole === undefined) res.body.destroy();
        continue;
      }
      try {
        this.write(method, res);
      } catch {
        // a header node:http would refuse too (validateHeaderName/Value): nothing half-written goes on
        res.body.destroy();
        this.socket.destroy();
        return;
      }
    }
    if (this.rest !== undefined && this.queue.length === 0 && this.streaming === undefined) this.give();
    else if (this.held !== undefined && this.queue.length < MAX_OUTSTANDING && !this.socket.writableNeedDrain && !this.socket.destroyed) {
      const held = this.held;
      this.held = undefined;
      // reading resumes on a later tick: the held bytes are parsed first
      this.resumeReading();
      this.read(held);
    }
  }

  /** one answer: whole in one write when it is here, streamed otherwise (this.streaming until it ends) */
  private write(method: string, r: L7Response): void {
    let text = statusAndHeaders(r, this.limits.keepAliveTimeoutMs);
    const length = r.headers['content-length'];
    if (!answerHasBody(method, r.status)) {
      this.socket.write(`${text}\r\n`, 'latin1');
      if (r.whole === undefined) r.body.resume(); // drained: a pooled connection to the pod goes back to its pool
      return;
    }
    const data = bodyIfHere(r);
    if (data !== undefined) {
      const t = r.trailers();
      const size = data.length;
      if (t !== undefined && length === undefined) {
        // trailers need chunked framing
        const last = `0\r\n${trailerLines(t)}\r\n`;
        this.socket.cork();
        this.socket.write(`${text}transfer-encoding: chunked\r\n\r\n`, 'latin1');
        writeChunk(this.socket, data); // nothing for an empty body (a zero-length chunk would end it)
        this.socket.write(last, 'latin1');
        this.socket.uncork();
        return;
      }
      if (length === undefined) text += `content-length: ${size}\r\n`;
      text += '\r\n';
      if (size === 0) this.socket.write(text, 'latin1');
      // latin1 maps bytes to characters one to one: a small body goes out in the head's string
      else if (size <= ONE_STRING_MAX) this.socket.write(text + data.toString('latin1'), 'latin1');
      else if (size <= ONE_WRITE_MAX) {
        const buf = Buffer.allocUnsafe(text.length + size);
        buf.write(text, 0, 'latin1');
        data.copy(buf, text.length);
        this.socket.write(buf);
      } else {
        this.socket.cork();
        this.socket.write(text, 'latin1');
        this.socket.write(data);
        this.socket.uncork();
      }
      return;
    }
    const chunked = length === undefined;
    this.socket.write(chunked ? `${text}transfer-encoding: chunked\r\n\r\n` : `${text}\r\n`, 'latin1');
    this.stream(r, chunked);
  }

  /** a body that is still coming: written as it comes, with the socket's backpressure */
  private stream(r: L7Response, chunked: boolean): void {
    const { socket } = this;
    const body = r.body;
    this.streaming = r;
    const onDrain = (): void => { body.resume(); };
    const done = (): void => {
      socket.off('drain', onDrain);
      body.off('data', onData);
      this.streaming = undefined;
    };
    const onData = (c: Buffer): void => {
      if (!(chunked ? writeChunk(socket, c) : socket.write(c))) body.pause();
    };
    socket.on('drain', onDrain);
    body.on('data', onData);
    body.once('end', () => {
      done();
      // cut off, not whole: the connection goes, which is how HTTP/1.1 says "incomplete"
      if (cutOff(body)) {
        socket.destroy();
        return;
      }
      if (chunked) {
        const t = r.trailers();
        try {
          socket.write(`0\r\n${t ? trailerLines(t) : ''}\r\n`, 'latin1');
        } catch {
          socket.destroy();
          return;
        }
      }
      this.flush();
    });
    // a body that stops without ending (upstream reset, a policy closing it): the connection goes
    body.once('close', () => {
      if (body.readableEnded) return;
      done();
      socket.destroy();
    });
    body.on('error', noop);
  }

  /** from `rest` on, the connection is node:http's; given once the answers before it are out */
  private stop(rest: Buffer): void {
    if (this.consumed) {
      // reads go back to the socket's stream (held there while paused) for node:http
      this.parser.unconsume();
      this.consumed = undefined;
    }
    this.socket.off('data', this.onData);
    // a FIN behind these bytes is node:http's to read
    this.socket.off('end', this.onEnd);
    this.socket.pause();
    // not from inside a parser callback that may be on the stack (executed() is one)
    setImmediate(closeParser, this.parser);
    this.rest = rest;
    this.flush();
  }

  private give(): void {
    const rest = this.rest!;
    this.rest = undefined;
    const { socket } = this;
    socket.off('close', this.onClose);
    socket.off('timeout', this.onTimeout);
    socket.off('drain', this.onDrain);
    socket.setTimeout(0);
    if (socket.destroyed) return;
    socket.unshift(rest);
    this.handOver(socket);
  }

  private closed(): void {
    // answers that can no longer be written: their upstream exchanges are cancelled
    if (this.streaming && !this.streaming.body.readableEnded) this.streaming.body.destroy();
    for (const p of this.queue) if (p.res && p.res.whole === undefined && !p.res.body.readableEnded) p.res.body.destroy();
    if (this.rest !== undefined) return;
    if (this.consumed) {
      this.parser.unconsume();
      this.consumed = undefined;
    }
    setImmediate(closeParser, this.parser);
  }
}

/** the status line and the answer's headers, validated as node:http validates them (it throws what they would) */
function statusAndHeaders(r: L7Response, keepAliveMs: number): string {
  let text = `HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? 'unknown'}\r\n`;
  const h = r.headers;
  for (const k in h) text += headerLines(k, h[k]!);
  if (h.date === undefined) text += `date: ${utcDate()}\r\n`;
  // what node:http says on a keep-alive answer: clients that honour the hint close idle
  // connections before the proxy would
  text += 'connection: keep-alive\r\n';
  return keepAliveMs > 0 ? `${text}keep-alive: timeout=${Math.floor(keepAliveMs / 1000)}\r\n` : text;
}

/** one chunk of a chunked body; false when the socket wants a 'drain' first */
function writeChunk(socket: Socket, c: Buffer): boolean {
  // a zero-length chunk would read as the end of the body
  if (c.length === 0) return true;
  socket.cork();
  socket.write(`${c.length.toString(16)}\r\n`, 'latin1');
  socket.write(c);
  const ok = socket.write('\r\n', 'latin1');
  socket.uncork();
  return ok;
}

function trailerLines(t: Headers): string {
  let text = '';
  for (const k in t) text += headerLines(k, t[k]!);
  return text;
}

let dateText = '';
let dateUntil = 0;

/** the Date header, made once per second as node:http makes it */
function utcDate(): string {
  const now = Date.now();
  if (now >= dateUntil) {
    dateText = new Date(now).toUTCString();
    dateUntil = now - (now % 1000) + 1000;
  }
  return dateText;
}

function onHeaders(this: LeanParser): void {
  // more than 32 header lines: the head callback gets none and sends the request to node:http
}

function onHeadersComplete(this: LeanParser, major: number, minor: number, raw: string[] | undefined, method: number, url: string,
  _status: unknown, _statusMessage: unknown, upgrade: boolean, keepAlive: boolean): number {
  return this[CONN]!.headers(major, minor, raw, method, url, upgrade, keepAlive);
}

function closeParser(p: Parser): void {
  p.close();
}

function noop(): void {}
