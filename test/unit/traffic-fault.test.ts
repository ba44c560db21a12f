// Fault injection: delay and abort percentages over a fixed random sequence, and the
// HTTP → grpc-status mapping for aborted gRPC requests.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NO_FAULT, decideFault, grpcStatusForHttp } from '../../agent/proxy/traffic/fault.ts';

/** 0, 0.001, ..., 0.999 repeating: an even sweep of [0,1) */
function sweep(): () => number {
  let i = 0;
  return () => (i++ % 1000) / 1000;
}

describe('fault injection', () => {
  it('delays exactly the configured share of requests', () => {
    const random = sweep();
    let delayed = 0;
    for (let i = 0; i < 1000; i++) {
      const d = decideFault({ delay: { percent: 25, delayMs: 300 } }, random);
      if (d.delayMs === 300) delayed++;
      assert.equal(d.abort, undefined);
    }
    assert.equal(delayed, 250);
  });

  it('aborts the configured share, with fractional percents, and draws delay and abort independently', () => {
    const random = sweep();
    let aborted = 0;
    const cfg = { delay: { percent: 50, delayMs: 10 }, abort: { percent: 50, httpStatus: 503 } };
    for (let i = 0; i < 1000; i++) if (decideFault({ abort: cfg.abort }, random).abort) aborted++;
    assert.equal(aborted, 500);
    const seq = (...v: number[]) => () => v.shift()!;
    assert.deepEqual(decideFault(cfg, seq(0.1, 0.9)), { delayMs: 10, abort: undefined });
    assert.deepEqual(decideFault(cfg, seq(0.9, 0.1)), { delayMs: 0, abort: { httpStatus: 503, grpcStatus: 14 } });
    let few = 0;
    const r2 = sweep();
    for (let i = 0; i < 1000; i++) if (decideFault({ abort: { percent: 0.5, httpStatus: 500 } }, r2).abort) few++;
    assert.equal(few, 5);
  });

  it('injects nothing at 0 percent or without config, always at 100', () => {
    assert.equal(decideFault(undefined, () => 0), NO_FAULT);
    assert.equal(decideFault({ abort: { percent: 0, httpStatus: 500 } }, () => 0), NO_FAULT);
    assert.deepEqual(decideFault({ abort: { percent: 100, httpStatus: 429 } }, () => 0.999999).abort, { httpStatus: 429, grpcStatus: 14 });
  });

  it('maps the abort status to grpc-status as gRPC documents', () => {
    const table: Array<[number, number]> = [[400, 13], [401, 16], [403, 7], [404, 12], [429, 14], [502, 14], [503, 14], [504, 14], [500, 2], [418, 2]];
    for (const [http, grpc] of table) assert.equal(grpcStatusForHttp(http), grpc, String(http));
  });
});
