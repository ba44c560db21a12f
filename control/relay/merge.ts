// Merging several nodes' flow streams into one in time order. Stored flows (no follow)
// are collected and sorted; live flows go through a bounded reorder window: a min-heap by
// flow time, emitted once they are older than the window, when the heap is full, or when
// the streams go quiet (so a node with a fast clock cannot hold the others back).
import { compareTime, cutToNumber, type FlowTime, type WireGetFlowsResponse } from '../../agent/flows/index.ts';

export function responseTime(r: WireGetFlowsResponse): FlowTime {
  const t = r.time ?? (r.flow?.time as { seconds?: number; nanos?: number } | undefined);
  return { seconds: Number(t?.seconds ?? 0), nanos: Number(t?.nanos ?? 0) };
}

/** sort responses by time, then keep the last N (or the first N); stable for equal times */
export function mergeSorted(responses: WireGetFlowsResponse[], number: number, first: boolean): WireGetFlowsResponse[] {
  const keyed = responses.map((r, i) => ({ r, t: responseTime(r), i }));
  keyed.sort((a, b) => compareTime(a.t, b.t) || a.i - b.i);
  return cutToNumber(keyed.map((k) => k.r), number, first);
}

interface Entry { r: WireGetFlowsResponse; t: FlowTime; seq: number }

/** an index-based binary min-heap by (time, arrival order) */
class Heap {
  private readonly a: Entry[] = [];
  get size(): number {
    return this.a.length;
  }
  peek(): Entry | undefined {
    return this.a[0];
  }
  private less(i: number, j: number): boolean {
    const x = this.a[i]!;
    const y = this.a[j]!;
    const c = compareTime(x.t, y.t);
    return c < 0 || (c === 0 && x.seq < y.seq);
  }
  private swap(i: number, j: number): void {
    const t = this.a[i]!;
    this.a[i] = this.a[j]!;
    this.a[j] = t;
  }
  push(e: Entry): void {
    this.a.push(e);
    let i = this.a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }
  pop(): Entry | undefined {
    const n = this.a.length;
    if (n === 0) return undefined;
    const top = this.a[0]!;
    const last = this.a.pop()!;
    if (n > 1) {
      this.a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < this.a.length && this.less(l, m)) m = l;
        if (r < this.a.length && this.less(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
}

export interface ReorderOptions {
  /** how long a flow may wait for earlier flows from slower nodes */
  windowMs: number;
  /** most flows held; beyond it the oldest is emitted at once */
  max: number;
  emit: (r: WireGetFlowsResponse) => void;
}

export class ReorderBuffer {
  private readonly heap = new Heap();
  private seq = 0;
  private lastPush = Date.now();
  private readonly timer: NodeJS.Timeout;
  private readonly opts: ReorderOptions;

  constructor(opts: ReorderOptions) {
    this.opts = opts;
    // ticks at half the window: a flow waits at most 1.5 windows
    this.timer = setInterval(() => this.tick(), Math.max(10, opts.windowMs / 2));
    this.timer.unref();
  }

  get size(): number {
    return this.heap.size;
  }

  push(r: WireGetFlowsResponse): void {
    this.heap.push({ r, t: responseTime(r), seq: this.seq++ });
    this.lastPush = Date.now();
    while (this.heap.size > this.opts.max) this.opts.emit(this.heap.pop()!.r);
  }

  private tick(): void {
    const now = Date.now();
    if (now - this.lastPush >= this.opts.windowMs) {
      this.flush();
      return;
    }
    const cutoffMs = now - this.opts.windowMs;
    const cutoff: FlowTime = { seconds: Math.floor(cutoffMs / 1000), nanos: (cutoffMs % 1000) * 1e6 };
    for (let e = this.heap.peek(); e && compareTime(e.t, cutoff) <= 0; e = this.heap.peek()) this.opts.emit(this.heap.pop()!.r);
  }

  /** emit everything held, in order */
  flush(): void {
    for (let e = this.heap.pop(); e; e = this.heap.pop()) this.opts.emit(e.r);
  }

  close(): void {
    clearInterval(this.timer);
  }
}
