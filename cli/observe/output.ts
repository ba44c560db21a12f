// `nodal observe` output: each GetFlowsResponse printed the way Hubble's CLI prints it.
// Flows and lost-event notices go to stdout, relay node status to stderr (the routine
// ones only with --debug); the table is printed once the stream ends, as Hubble's
// tabwriter does, which is why it cannot be combined with --follow.
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import {
  alignTable, compareTime, compileFilters, flowFromWire, formatCompact, formatDict, formatLost, formatNodeStatus, formatTableRows,
  responseFromJson, responseToJson,
  type Flow, type FlowFilter, type FlowTime, type PrintOptions, type WireFlow, type WireGetFlowsRequest, type WireGetFlowsResponse,
} from '../../agent/flows/index.ts';
import { ObserveUsageError } from './request.ts';

export const OUTPUTS = ['compact', 'dict', 'json', 'jsonpb', 'table'] as const;
export type Output = 'compact' | 'dict' | 'json' | 'table';

/** -o as Hubble accepts it: json and jsonpb are one format; tab is table */
export function outputOf(v: string | undefined): Output {
  switch (v ?? 'compact') {
    case 'compact': return 'compact';
    case 'dict': return 'dict';
    case 'json': case 'JSON': case 'jsonpb': return 'json';
    case 'table': case 'tab': return 'table';
    default: throw new ObserveUsageError(`invalid output format: ${v} (one of ${OUTPUTS.join(', ')})`);
  }
}

/** Hubble's --time-format names */
export const TIME_FORMATS = ['StampMilli', 'YearMonthDay', 'YearMonthDayHour', 'YearMonthDayHourMinute', 'RFC3339',
  'RFC3339Milli', 'RFC3339Micro', 'RFC3339Nano', 'RFC1123Z'];

export function timeFormatOf(v: string | undefined): string {
  const name = TIME_FORMATS.find((t) => t.toLowerCase() === (v ?? 'StampMilli').toLowerCase());
  if (!name) throw new ObserveUsageError(`--time-format: "${v}" is not one of ${TIME_FORMATS.join(', ')}`);
  return name;
}

/**
 * --color: `always`, `never`, or `auto` (the default), which colours only when stdout is
 * a terminal and neither NO_COLOR nor TERM=dumb says otherwise, as fatih/color decides.
 */
export function useColor(when: string | undefined, out: NodeJS.WritableStream, env: NodeJS.ProcessEnv = process.env): boolean {
  switch ((when ?? 'auto').toLowerCase()) {
    case 'always': return true;
    case 'never': return false;
    case 'auto': return Boolean((out as { isTTY?: boolean }).isTTY) && !env.NO_COLOR && env.TERM !== 'dumb';
    default: throw new ObserveUsageError(`--color: "${when}" is not one of auto, always, never`);
  }
}

export interface ObserveIO {
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

export interface PrinterFlags {
  /** Hubble's --debug: also the routine node status events */
  debug?: boolean;
  /** Hubble's --silent-errors: no node status at all */
  silent?: boolean;
}

export class ObservePrinter {
  private readonly output: Output;
  private readonly opts: PrintOptions;
  private readonly io: ObserveIO;
  private readonly flags: PrinterFlags;
  /** blocks written so far, for dict separators (node status blocks count, as in Hubble) */
  private lines = 0;
  private readonly table: Array<Flow | WireGetFlowsResponse> = [];

  constructor(output: Output, opts: PrintOptions, io: ObserveIO, flags: PrinterFlags = {}) {
    this.output = output;
    // the table is never coloured: escapes would break its alignment
    this.opts = output === 'table' ? { ...opts, color: false } : opts;
    this.io = io;
    this.flags = flags;
  }

  write(res: WireGetFlowsResponse): void {
    if (res.nodeStatus) return this.writeNodeStatus(res);
    if (!res.flow && !res.lostEvents) return;
    if (this.output === 'json') {
      this.io.out.write(`${JSON.stringify(responseToJson(res))}\n`);
      return;
    }
    if (this.output === 'table') {
      this.table.push(res.flow ? flowFromWire(res.flow as WireFlow) : res);
      return;
    }
    const first = this.lines === 0;
    this.lines++;
    if (res.lostEvents) {
      this.io.out.write(`${formatLost(res, this.opts, this.output === 'dict' ? 'dict' : 'compact', first)}\n`);
      return;
    }
    const f = flowFromWire(res.flow as WireFlow);
    this.io.out.write(`${this.output === 'dict' ? formatDict(f, this.opts, first) : formatCompact(f, this.opts)}\n`);
  }

  private writeNodeStatus(res: WireGetFlowsResponse): void {
    if (this.flags.silent) return;
    const verbose = Boolean(this.flags.debug);
    if (this.output === 'json') {
      const state = res.nodeStatus?.stateChange;
      if (verbose || state === 'NODE_UNAVAILABLE' || state === 'NODE_ERROR') this.io.err.write(`${JSON.stringify(responseToJson(res))}\n`);
      return;
    }
    const dict = this.output === 'dict';
    const text = formatNodeStatus(res, verbose, this.opts, dict ? 'dict' : 'compact', this.lines === 0);
    if (text === undefined) return;
    if (dict) this.lines++;
    this.io.err.write(`${text}\n`);
  }

  /** the end of the stream: print the table */
  close(): void {
    if (this.output !== 'table' || this.table.length === 0) return;
    this.io.out.write(`${alignTable(formatTableRows(this.table, this.opts))}\n`);
    this.table.length = 0;
  }
}

/**
 * Flows from a file of JSON lines (`-o json` output, GetFlowsResponse objects, or bare
 * Flows), with the server's work done locally: filters, since/until, the first or last
 * N. Lines that do not decode are reported on stderr and skipped, as Hubble does. Lost
 * events are always kept: loss is never filtered away.
 */
export async function readFlowFile(
  file: string, req: WireGetFlowsRequest, emit: (r: WireGetFlowsResponse) => void, warn: (msg: string) => void, signal?: AbortSignal,
): Promise<void> {
  const match = compileFilters(req.whitelist as FlowFilter[], req.blacklist as FlowFilter[]);
  const since = req.since as FlowTime | undefined;
  const until = req.until as FlowTime | undefined;
  const number = req.number ?? 0;
  const first = Boolean(req.first);
  const input = file === '-' ? process.stdin : createReadStream(file, { encoding: 'utf8' });
  const lines = createInterface({ input, crlfDelay: Infinity });
  // --last: the newest N flows and the notices among them, trimmed as the file is read
  const kept: WireGetFlowsResponse[] = [];
  let keptHead = 0;
  let keptFlows = 0;
  let emitted = 0;
  let n = 0;
  try {
    for await (const line of lines) {
      if (signal?.aborted) return;
      n++;
      if (line.trim() === '') continue;
      let r: WireGetFlowsResponse;
      try {
        r = responseFromJson(line);
      } catch (err) {
        warn(`${file}:${n}: skipped: ${(err as Error).message}`);
        continue;
      }
      if (r.flow) {
        const f = flowFromWire(structuredClone(r.flow) as WireFlow);
        if (since && compareTime(f.time, since) < 0) continue;
        if (until && compareTime(f.time, until) > 0) continue;
        if (match && !match(f)) continue;
      } else if (!r.lostEvents && !r.nodeStatus) {
        continue;
      }
      if (number === 0) {
        emit(r);
      } else if (first) {
        emit(r);
        if (r.flow && ++emitted >= number) break;
      } else {
        kept.push(r);
        if (r.flow && ++keptFlows > number) {
          // drop the oldest flow and the notices around it: the cut a server makes
          while (!kept[keptHead]!.flow) keptHead++;
          keptHead++;
          keptFlows--;
          while (!kept[keptHead]!.flow) keptHead++;
          if (keptHead > 1024 && keptHead * 2 > kept.length) { kept.splice(0, keptHead); keptHead = 0; }
        }
      }
    }
  } finally {
    lines.close();
    if (input !== process.stdin) (input as ReturnType<typeof createReadStream>).destroy();
  }
  for (let i = keptHead; i < kept.length && !signal?.aborted; i++) emit(kept[i]!);
}
