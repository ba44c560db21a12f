// The per-node flow store: a bounded ring of the most recent flows (Hubble's ring buffer)
// plus live followers. Ingest is O(1) per flow and per follower: a flow is written at an
// index, never shifted, and handed to each follower's own bounded queue. Delivery to a
// follower happens later, off the ingest path, so a slow client can never slow ingest;
// when its queue is full it loses flows and is told how many (a lost-events notice),
// never silently.
import { compareTime, nowTime, type Flow, type FlowTime } from './flow.ts';

/** Hubble's default ring size: enough for minutes of a busy node in a few tens of MB */
export const DEFAULT_CAPACITY = 65_536;
/**
 * Per-follower backlog. gRPC already buffers a window's worth; this bounds what a stalled
 * client can pin in memory (flows are shared, so it is references, not copies).
 */
export const DEFAULT_FOLLOWER_QUEUE = 4096;
/** flows delivered per follower per turn of the event loop, so one follower cannot starve the rest */
const DRAIN_BATCH = 256;
/**
 * ...and at most this much time per turn: sending is the expensive part (a gRPC write
 * serializes and frames each flow), and the kernel's events are read on this same
 * thread, so a client that reads fast must not take the turns ingest needs.
 */
const DRAIN_BUDGET_MS = 1;

export type FlowPredicate = (f: Flow) => boolean;

export interface FlowQuery {
  /** the last N (or first N with `first`); 0 or absent: no limit */
  number?: number;
  first?: boolean;
  since?: FlowTime;
  until?: FlowTime;
}

/** Hubble's flow.LostEventSource names for where flows were lost */
export type LostSource = 'PERF_EVENT_RING_BUFFER' | 'OBSERVER_EVENTS_QUEUE' | 'HUBBLE_RING_BUFFER';

/** what a follower receives: a flow, or how many flows were lost (and where) */
export type FollowEvent =
  | { kind: 'flow'; flow: Flow }
  | { kind: 'lost'; count: number; time: FlowTime; source: LostSource };

export interface FollowSink {
  /** deliver one event; return false to stop delivery until FlowSubscription.resume() */
  deliver(ev: FollowEvent): boolean;
}

export interface FlowStoreOptions {
  capacity?: number;
  /** default per-follower queue length */
  followerQueue?: number;
}

/** a lost-events marker queued in order with the flows around it */
class Lost {
  count: number;
  time: FlowTime;
  source: LostSource;
  constructor(count: number, time: FlowTime, source: LostSource) {
    this.count = count;
    this.time = time;
    this.source = source;
  }
}

/** one live follower: a bounded queue drained asynchronously into its sink */
export class FlowSubscription {
  private readonly items: Array<Flow | Lost | undefined>;
  private head = 0;
  private len = 0;
  /** flows dropped since the last marker could be queued */
  private pendingLost = 0;
  private totalLost = 0;
  private paused: boolean;
  private scheduled = false;
  private closed = false;
  private readonly match: FlowPredicate | undefined;
  private readonly sink: FollowSink;
  private readonly detach: (s: FlowSubscription) => void;

  constructor(match: FlowPredicate | undefined, sink: FollowSink, queue: number, paused: boolean, detach: (s: FlowSubscription) => void) {
    if (!Number.isInteger(queue) || queue < 2) throw new RangeError(`follower queue must be an integer >= 2, not ${queue}`);
    this.items = new Array<Flow | Lost | undefined>(queue);
    this.match = match;
    this.sink = sink;
    this.paused = paused;
    this.detach = detach;
  }

  /** flows this follower lost so far */
  get lost(): number {
    return this.totalLost;
  }

  /** events waiting for delivery */
  get backlog(): number {
    return this.len + (this.pendingLost > 0 ? 1 : 0);
  }

  /** called by the store on ingest: O(1), never delivers */
  offer(f: Flow): void {
    if (this.closed || (this.match && !this.match(f))) return;
    const cap = this.items.length;
    if (this.pendingLost > 0 && this.len < cap) {
      // room again: the loss is reported in its place, before any later flow
      this.push(new Lost(this.pendingLost, nowTime(), 'OBSERVER_EVENTS_QUEUE'));
      this.pendingLost = 0;
    }
    if (this.len < cap) {
      this.push(f);
    } else {
      this.pendingLost++;
      this.totalLost++;
    }
    this.schedule();
  }

  /** flows lost before they reached the store (e.g. the kernel ring buffer overflowed) */
  offerLost(count: number, source: LostSource): void {
    if (this.closed || count <= 0) return;
    if (this.len < this.items.length) {
      this.push(new Lost(count, nowTime(), source));
    } else {
      // no room for the notice either: it joins this follower's own loss
      this.pendingLost += count;
    }
    this.schedule();
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (this.closed) return;
    this.paused = false;
    this.schedule();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.items.fill(undefined);
    this.len = 0;
    this.detach(this);
  }

  private push(x: Flow | Lost): void {
    this.items[(this.head + this.len) % this.items.length] = x;
    this.len++;
  }

  private schedule(): void {
    if (this.scheduled || this.paused || this.closed) return;
    if (this.len === 0 && this.pendingLost === 0) return;
    this.scheduled = true;
    setImmediate(() => this.drain());
  }

  private drain(): void {
    this.scheduled = false;
    let n = 0;
    const deadline = performance.now() + DRAIN_BUDGET_MS;
    while (!this.paused && !this.closed && n < DRAIN_BATCH) {
      // the clock is read every 16 deliveries: cheap next to one gRPC write
      if (n > 0 && (n & 15) === 0 && performance.now() > deadline) break;
      let ev: FollowEvent;
      if (this.len > 0) {
        const x = this.items[this.head]!;
        this.items[this.head] = undefined;
        this.head = (this.head + 1) % this.items.length;
        this.len--;
        ev = x instanceof Lost ? { kind: 'lost', count: x.count, time: x.time, source: x.source } : { kind: 'flow', flow: x };
      } else if (this.pendingLost > 0) {
        ev = { kind: 'lost', count: this.pendingLost, time: nowTime(), source: 'OBSERVER_EVENTS_QUEUE' };
        this.pendingLost = 0;
      } else {
        return;
      }
      n++;
      if (!this.sink.deliver(ev)) this.paused = true;
    }
    this.schedule();
  }
}

export class FlowStore {
  readonly capacity: number;
  private readonly ring: Array<Flow | undefined>;
  /** index the next flow is written at */
  private next = 0;
  private count = 0;
  private seenTotal = 0;
  private lostTotal = 0;
  private readonly followerQueue: number;
  private readonly subs = new Set<FlowSubscription>();
  private readonly startedNs = process.hrtime.bigint();

  constructor(opts: FlowStoreOptions = {}) {
    const capacity = opts.capacity ?? DEFAULT_CAPACITY;
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`flow store capacity must be a positive integer, not ${capacity}`);
    this.capacity = capacity;
    this.ring = new Array<Flow | undefined>(capacity);
    this.followerQueue = opts.followerQueue ?? DEFAULT_FOLLOWER_QUEUE;
  }

  /** flows currently held */
  get size(): number {
    return this.count;
  }

  /** flows added since start, including those since overwritten */
  get seen(): number {
    return this.seenTotal;
  }

  get uptimeNs(): number {
    return Number(process.hrtime.bigint() - this.startedNs);
  }

  get followers(): number {
    return this.subs.size;
  }

  /** O(1): overwrite the oldest slot, hand the flow to each follower's queue */
  add(flow: Flow): void {
    this.ring[this.next] = flow;
    this.next = this.next + 1 === this.capacity ? 0 : this.next + 1;
    if (this.count < this.capacity) this.count++;
    this.seenTotal++;
    if (this.subs.size > 0) for (const s of this.subs) s.offer(flow);
  }

  /**
   * Report flows lost upstream of the store (the datapath's ring buffer overflowed): every
   * follower is told, in order with the flows around the loss.
   */
  addLost(count: number, source: LostSource = 'PERF_EVENT_RING_BUFFER'): void {
    this.lostTotal += count;
    for (const s of this.subs) s.offerLost(count, source);
  }

  /** flows reported lost upstream since start */
  get lost(): number {
    return this.lostTotal;
  }

  /**
   * Stored flows that match, oldest first: the last `number` of them (or the first with
   * `first`), within [since, until]. Times are checked per flow rather than bisected,
   * since the proxy may add a flow a little after a later kernel verdict.
   */
  query(match: FlowPredicate | undefined, q: FlowQuery = {}): Flow[] {
    const limit = q.number && q.number > 0 ? q.number : Infinity;
    const out: Flow[] = [];
    const oldest = (this.next - this.count + this.capacity) % this.capacity;
    const ok = (f: Flow): boolean =>
      !(q.since && compareTime(f.time, q.since) < 0) && !(q.until && compareTime(f.time, q.until) > 0) && (!match || match(f));
    if (q.first) {
      for (let i = 0; i < this.count && out.length < limit; i++) {
        const f = this.ring[(oldest + i) % this.capacity]!;
        if (ok(f)) out.push(f);
      }
      return out;
    }
    for (let i = this.count - 1; i >= 0 && out.length < limit; i--) {
      const f = this.ring[(oldest + i) % this.capacity]!;
      if (ok(f)) out.push(f);
    }
    return out.reverse();
  }

  /**
   * Follow new flows. Start paused to send stored flows first: events queue up (bounded)
   * and flow once resume() is called, so nothing falls between history and live.
   */
  follow(match: FlowPredicate | undefined, sink: FollowSink, opts: { queue?: number; paused?: boolean } = {}): FlowSubscription {
    const s = new FlowSubscription(match, sink, opts.queue ?? this.followerQueue, opts.paused ?? false, (x) => this.subs.delete(x));
    this.subs.add(s);
    return s;
  }

  /** stop every follower (shutdown) */
  closeFollowers(): void {
    for (const s of [...this.subs]) s.close();
  }
}
