// Node's own HTTP/1.1 parser (llhttp behind lib/_http_common.js's HTTPParser binding), for
// the two lean HTTP/1.1 paths that skip node:http's Server and ClientRequest: pod-h1.ts
// (to local pods) and client-h1.ts (from client pods). The same parser node:http uses,
// with the same strictness; reached through Node's legacy _http_common module, probed once
// at load. Where it is not there (another Node), both paths step aside for node:http; where
// only its handle-reading calls are missing (CAN_CONSUME), client-h1 feeds it the socket.

import { IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';

/** the parts of node's HTTPParser binding used here (lib/_http_common.js drives it the same way) */
export interface Parser {
  initialize(type: number, resource: object, maxHeaderSize?: number, lenientFlags?: number): void;
  execute(data: Buffer): number | Error;
  finish(): number | Error | undefined;
  close(): void;
  /** parse a stream handle's reads in C++ as they come (node:http's server does), reporting each through kOnExecute (CAN_CONSUME) */
  consume(handle: object): void;
  unconsume(): void;
  /** a copy of the read being parsed, inside kOnExecute */
  getCurrentBuffer(): Buffer;
  [callback: number]: unknown;
}

export interface ParserClass {
  new (): Parser;
  REQUEST: number;
  RESPONSE: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kOnExecute: number;
}

function probe(): { HTTPParser: ParserClass; methods: readonly string[] } | undefined {
  try {
    const m = createRequire(import.meta.url)('_http_common') as { HTTPParser?: ParserClass; methods?: unknown };
    const P = m.HTTPParser;
    if (typeof P !== 'function' || typeof P.RESPONSE !== 'number' || typeof P.REQUEST !== 'number') return undefined;
    for (const k of [P.kOnHeaders, P.kOnHeadersComplete, P.kOnBody, P.kOnMessageComplete, P.kOnExecute]) if (typeof k !== 'number') return undefined;
    for (const f of ['initialize', 'execute', 'finish', 'close']) {
      if (typeof (P.prototype as unknown as Record<string, unknown>)[f] !== 'function') return undefined;
    }
    if (!Array.isArray(m.methods) || !m.methods.every((x) => typeof x === 'string')) return undefined;
    return { HTTPParser: P, methods: m.methods as string[] };
  } catch {
    return undefined;
  }
}

const found = probe();

/** undefined on a Node whose parser cannot be reached */
export const HTTPParser: ParserClass | undefined = found?.HTTPParser;

/**
 * The parser can read a socket's handle itself (consume/unconsume/getCurrentBuffer, as
 * node:http's Server has it do); without them client-h1 feeds it the socket's 'data'
 */
export const CAN_CONSUME: boolean = HTTPParser !== undefined
  && ['consume', 'unconsume', 'getCurrentBuffer'].every((f) => typeof (HTTPParser.prototype as unknown as Record<string, unknown>)[f] === 'function');

/** llhttp's method names by the index its head callback passes */
export const METHODS: readonly string[] = found?.methods ?? [];

/** `this` for node's header rules (IncomingMessage.prototype._addHeaderLine): duplicates as node:http folds them */
const HEADER_RULES = { joinDuplicateHeaders: false };
type AddHeaderLine = (this: typeof HEADER_RULES, field: string, value: string, dest: Record<string, string | string[]>) => void;
const addLine = (IncomingMessage.prototype as unknown as { _addHeaderLine: AddHeaderLine })._addHeaderLine;

/**
 * Add one parsed header line to `dest` as node:http's IncomingMessage does: lower-case
 * names, Set-Cookie as an array, Cookie joined with '; ', other lists with ', ', and a
 * repeated singleton (Host, Content-Type, Authorization...) keeping its first value.
 */
export function addHeaderLine(field: string, value: string, dest: Record<string, string | string[]>): void {
  addLine.call(HEADER_RULES, field, value, dest);
}

/** a message's headers from llhttp's flat [name, value, ...] list, at most `max` entries of it, as IncomingMessage.headers */
export function headerObject(raw: readonly string[], max: number): Record<string, string | string[]> {
  const h: Record<string, string | string[]> = {};
  const n = Math.min(raw.length, max);
  for (let i = 0; i + 1 < n; i += 2) addLine.call(HEADER_RULES, raw[i]!, raw[i + 1]!, h);
  return h;
}
