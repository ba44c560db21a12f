// Raw HTTP/2 frames (RFC 9113 §4.1) for tests that must send what no well-behaved client
// library would: invalid frames, floods, resets; and a pod that writes its answers in a
// way node:http2's server does not (wholeGrpcPod). Header blocks use HPACK literals without
// indexing or Huffman (RFC 7541 §6.2.2), so any name and value can be written as is.

import { createServer, type Server, type Socket } from 'node:net';
import { grpcMessage, grpcPayload } from '../../agent/proxy/exchange.ts';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const FrameType = {
  DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7,
  WINDOW_UPDATE: 8, CONTINUATION: 9,
} as const;

export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

/** error codes (RFC 9113 §7) by number, for messages */
export const ERROR_NAMES = [
  'NO_ERROR', 'PROTOCOL_ERROR', 'INTERNAL_ERROR', 'FLOW_CONTROL_ERROR', 'SETTINGS_TIMEOUT', 'STREAM_CLOSED',
  'FRAME_SIZE_ERROR', 'REFUSED_STREAM', 'CANCEL', 'COMPRESSION_ERROR', 'CONNECT_ERROR', 'ENHANCE_YOUR_CALM',
  'INADEQUATE_SECURITY', 'HTTP_1_1_REQUIRED',
];

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0), length = payload.length): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** HPACK integer with an N-bit prefix (RFC 7541 §5.1) */
function hpackInt(value: number, prefixBits: number, firstByte: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [firstByte | value];
  const out = [firstByte | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  out.push(v);
  return out;
}

/** a header block of literal fields without indexing */
export function headerBlock(fields: Array<[string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    parts.push(Buffer.from([0x00, ...hpackInt(n.length, 7, 0)]), n, Buffer.from(hpackInt(v.length, 7, 0)), v);
  }
  return Buffer.concat(parts);
}

export function rstStream(stream: number, code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FrameType.RST_STREAM, 0, stream, p);
}

export function settings(entries: Array<[number, number]> = []): Buffer {
  const p = Buffer.alloc(6 * entries.length);
  entries.forEach(([id, value], i) => {
    p.writeUInt16BE(id, i * 6);
    p.writeUInt32BE(value, i * 6 + 2);
  });
  return frame(FrameType.SETTINGS, 0, 0, p);
}

export interface ReceivedFrame { type: number; flags: number; stream: number; payload: Buffer }

/**
 * Collects the frames a peer sends on a raw socket (the server's preface is a SETTINGS
 * frame, no magic), and whether it closed. `goaway` is the first GOAWAY's error code.
 */
export class FrameReader {
  readonly frames: ReceivedFrame[] = [];
  goaway: number | undefined;
  closed = false;
  readonly done: Promise<void>;
  private buf: Buffer = Buffer.alloc(0);
  private wake: (() => void) | undefined;

  constructor(socket: Socket) {
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => this.push(chunk));
    this.done = new Promise((resolve) => socket.once('close', () => {
      this.closed = true;
      resolve();
      this.wake?.();
    }));
  }

  private push(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) break;
      const f: ReceivedFrame = {
        type: this.buf[3]!, flags: this.buf[4]!, stream: this.buf.readUInt32BE(5) & 0x7fffffff,
        payload: this.buf.subarray(9, 9 + len),
      };
      this.frames.push(f);
      if (f.type === FrameType.GOAWAY && this.goaway === undefined && len >= 8) this.goaway = f.payload.readUInt32BE(4);
      this.buf = this.buf.subarray(9 + len);
    }
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** the first frame (already received or to come) that matches; undefined if the peer closes first */
  async waitFor(pred: (f: ReceivedFrame) => boolean): Promise<ReceivedFrame | undefined> {
    for (;;) {
      const hit = this.frames.find(pred);
      if (hit || this.closed) return hit;
      await Promise.race([this.done, new Promise<void>((r) => { this.wake = r; })]);
    }
  }

  /** the last stream id a GOAWAY says the peer processed */
  get goawayLastStream(): number | undefined {
    const g = this.frames.find((f) => f.type === FrameType.GOAWAY);
    return g ? g.payload.readUInt32BE(0) & 0x7fffffff : undefined;
  }

  /** e.g. "GOAWAY ENHANCE_YOUR_CALM", for assertion messages */
  describe(): string {
    return this.goaway === undefined ? `no GOAWAY (closed: ${this.closed})` : `GOAWAY ${ERROR_NAMES[this.goaway] ?? this.goaway}`;
  }
}

/** resolves when the socket can take more, or is gone (events.once would reject on EPIPE) */
export function drained(socket: Socket): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

/** :status 200 as an indexed field of HPACK's static table (RFC 7541 Appendix A, index 8) */
const STATUS_200 = Buffer.from([0x88]);

/**
 * A gRPC pod (h2c) that writes each answer whole, in one write: HEADERS, one DATA frame
 * with `hello <request message>`, and the trailers (grpc-status 0). node:http2's server
 * sends the trailers in a write of their own, so whether a proxy reads such an answer in
 * one read would be up to timing; from here it always can. Of the client's frames it reads
 * only what it needs (their header blocks are not decoded).
 */
export function wholeGrpcPod(): Server {
  return createServer((socket) => {
    socket.on('error', () => {});
    socket.write(settings());
    let buf = Buffer.alloc(0);
    let prefaceSeen = false;
    const bodies = new Map<number, Buffer[]>();
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (!prefaceSeen) {
        if (buf.length < PREFACE.length) return;
        buf = buf.subarray(PREFACE.length);
        prefaceSeen = true;
      }
      while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
        const len = buf.readUIntBE(0, 3);
        const [type, flags] = [buf[3]!, buf[4]!];
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        const payload = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        if (type === FrameType.SETTINGS && (flags & Flag.ACK) === 0) socket.write(frame(FrameType.SETTINGS, Flag.ACK, 0));
        if (type === FrameType.HEADERS) bodies.set(id, []);
        if (type === FrameType.DATA) bodies.get(id)?.push(Buffer.from(payload));
        if ((type === FrameType.HEADERS || type === FrameType.DATA) && (flags & Flag.END_STREAM) !== 0) {
          const msg = Buffer.from(`hello ${grpcPayload(Buffer.concat(bodies.get(id) ?? [])).toString()}`);
          bodies.delete(id);
          socket.write(Buffer.concat([
            frame(FrameType.HEADERS, Flag.END_HEADERS, id, Buffer.concat([STATUS_200, headerBlock([['content-type', 'application/grpc']])])),
            frame(FrameType.DATA, 0, id, grpcMessage(msg)),
            frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, id, headerBlock([['grpc-status', '0']])),
          ]));
        }
      }
    });
  });
}
