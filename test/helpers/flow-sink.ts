// Flows a test proxy emitted, with a way to wait for one without timing anything.
import type { Flow } from '../../agent/flows/flow.ts';

export class FlowSink {
  readonly flows: Flow[] = [];
  private waiters: Array<{ pred: (f: Flow) => boolean; resolve: (f: Flow) => void }> = [];
  push = (f: Flow): void => {
    this.flows.push(f);
    this.waiters = this.waiters.filter((w) => (w.pred(f) ? (w.resolve(f), false) : true));
  };
  waitFor(pred: (f: Flow) => boolean): Promise<Flow> {
    const hit = this.flows.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve) => this.waiters.push({ pred, resolve }));
  }
}
