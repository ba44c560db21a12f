// The proxy thread's garbage-collection pauses, for Prometheus and for the bench. A V8
// pause stops the thread's event loop, and every request the thread carries waits it out:
// the proxy's tail latency follows these pauses (docs/ARCHITECTURE.md, "What a request
// leaves for the GC"). prom-client's default metrics (nodal_agent_*) watch the agent's
// main thread only; each proxy worker is an isolate with a collector of its own, so each
// watches itself here.
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { Histogram, type Registry } from 'prom-client';

/** perf_hooks' GC kinds, as the metric's `kind` label names them */
const KIND: ReadonlyMap<number, GcKind> = new Map([
  [constants.NODE_PERFORMANCE_GC_MINOR, 'minor'],
  [constants.NODE_PERFORMANCE_GC_MAJOR, 'major'],
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL, 'incremental'],
  [constants.NODE_PERFORMANCE_GC_WEAKCB, 'weakcb'],
]);
export type GcKind = 'minor' | 'major' | 'incremental' | 'weakcb';

/** 0.5 ms to 1 s: a young-generation pause is a few ms, a full collection's tens */
const BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1];

/** what the collector did in a span of time (GcWatch.take) */
export interface GcTally {
  /** pauses of each kind */
  count: Record<GcKind, number>;
  /** the longest single pause, ms */
  longestMs: number;
  /** all pauses together, ms */
  pausedMs: number;
}

function emptyTally(): GcTally {
  return { count: { minor: 0, major: 0, incremental: 0, weakcb: 0 }, longestMs: 0, pausedMs: 0 };
}

/**
 * Turns off V8's allocation-site pretenuring, for the whole process (V8's flags are the
 * process's, shared by every proxy thread). V8 watches each place that allocates objects and,
 * once nearly all it made lived through young GCs, allocates the rest straight in old space.
 * A proxy's objects live for one request, but node:http2 keeps some of them alive through a
 * young GC or two (docs/ARCHITECTURE.md, "What a request leaves for the GC"), and that is
 * enough: their sites turned to old space, and each object born there then kept every young
 * object it pointed to alive until the next full GC, the next request's among them. Over the
 * tunnel, at 1,000 gRPC calls/s, each young GC copied 3.9-4.4 MB and old space grew 9 KB a
 * call; with pretenuring off, 0.06-0.33 MB and 2.2 KB (docs/benchmarks.md).
 */
export function noAllocationSitePretenuring(): void {
  setFlagsFromString('--no-allocation-site-pretenuring');
}

/**
 * Observes this thread's GC pauses into `nodal_proxy_gc_pause_seconds{worker,kind}` and a
 * tally read with take(). One per thread: a second would count every pause twice.
 */
export class GcWatch {
  private readonly observer: PerformanceObserver;
  private tally = emptyTally();

  constructor(registry: Registry, worker: string) {
    const pauses = new Histogram({
      name: 'nodal_proxy_gc_pause_seconds',
      help: 'garbage-collection pauses of each proxy worker thread, by kind (minor: young generation; major: full collection; incremental: a step of incremental marking; weakcb: weak callbacks); the thread serves nothing while paused',
      labelNames: ['worker', 'kind'],
      buckets: BUCKETS,
      registers: [registry],
    });
    this.observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) this.record(e, pauses, worker);
    });
    this.observer.observe({ entryTypes: ['gc'] });
  }

  private record(e: PerformanceEntry, pauses: Histogram<'worker' | 'kind'>, worker: string): void {
    const kind = KIND.get((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? -1);
    if (kind === undefined) return;
    pauses.observe({ worker, kind }, e.duration / 1000);
    const t = this.tally;
    t.count[kind]++;
    t.pausedMs += e.duration;
    if (e.duration > t.longestMs) t.longestMs = e.duration;
  }

  /** the pauses since the last take() (or since the start), and a fresh tally from now */
  take(): GcTally {
    const t = this.tally;
    this.tally = emptyTally();
    return t;
  }

  stop(): void {
    this.observer.disconnect();
  }
}
