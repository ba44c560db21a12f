// bench/helpers/tail.ts: the slowest requests of a latency run put down to what they waited
// on, from `perf sched timehist` lines. The bench's table of causes is only as right as this.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { causeOf, parseTimehist, timesOf } from '../../bench/helpers/tail.ts';

const PROXY = 100;

/** a timehist line: the slice ends at `end` (s) after running `runMs` */
const line = (end: number, cpu: number, task: string, runMs: number): string =>
  `   ${end.toFixed(6)} [${String(cpu).padStart(4, '0')}]  ${task.padEnd(30)}    0.000      0.000  ${runMs.toFixed(3).padStart(9)} `;

// CPU 1 runs the proxy (main thread 100, a V8 helper 101), CPU 0 the load tool (200)
const TEXT = [
  '           time    cpu  task name                       wait time  sch delay   run time',
  '                        [tid/pid]                          (msec)     (msec)     (msec)',
  '--------------- ------  ------------------------------  ---------  ---------  ---------',
  // an ordinary request, 10.000-10.001: the tool sends, the proxy works 0.3 ms, the rest idle
  line(10.0001, 0, 'h2load[200/200]', 0.1),
  line(10.0003, 1, 'MainThread[100]', 0.3),
  line(10.0010, 0, '<idle>', 0.9),
  line(10.0010, 1, '<idle>', 0.7),
  // a request held up by the V8 helper, 10.010-10.013
  line(10.0101, 0, 'h2load[200/200]', 0.1),
  line(10.0102, 1, '<idle>', 9.2),
  line(10.0122, 1, 'V8Worker[101/100]', 2.0),
  line(10.0125, 1, 'MainThread[100]', 0.3),
  line(10.0130, 0, '<idle>', 2.9),
  line(10.0130, 1, '<idle>', 0.5),
  // a request during which nothing ran anywhere for 2 ms, 10.020-10.023
  line(10.0201, 0, 'h2load[200/200]', 0.1),
  line(10.0204, 1, 'MainThread[100]', 0.3),
  line(10.0230, 0, '<idle>', 2.9),
  line(10.0230, 1, '<idle>', 2.6),
].join('\n');

describe('bench tail: what a slow request waited on', () => {
  const trace = parseTimehist(TEXT);

  it('reads every slice of perf sched timehist, with its task, thread and process', () => {
    assert.equal(trace.slices.length, 14);
    const helper = trace.slices.find((s) => s.task === 'V8Worker')!;
    assert.deepEqual({ tid: helper.tid, pid: helper.pid, cpu: helper.cpu }, { tid: 101, pid: PROXY, cpu: 1 });
    assert.ok(Math.abs(helper.start - 10.0102) < 1e-9);
    const main = trace.slices.find((s) => s.task === 'MainThread')!;
    assert.deepEqual({ tid: main.tid, pid: main.pid }, { tid: PROXY, pid: PROXY });
  });

  it("counts the proxy's own work, its other threads, and the time every CPU was idle at once", () => {
    const ordinary = timesOf(trace, 10.000, 10.001, PROXY);
    assert.ok(Math.abs(ordinary.proxyLoop - 0.3) < 1e-6, String(ordinary.proxyLoop));
    assert.equal(ordinary.proxyThreads, 0);
    assert.ok(Math.abs(ordinary.allIdle - 0.7) < 1e-6, String(ordinary.allIdle));
    const held = timesOf(trace, 10.010, 10.013, PROXY);
    assert.ok(Math.abs(held.proxyThreads - 2.0) < 1e-6, String(held.proxyThreads));
  });

  it('names the cause that most exceeds the ordinary request, or none below the noise', () => {
    const usual = timesOf(trace, 10.000, 10.001, PROXY);
    assert.equal(causeOf(timesOf(trace, 10.010, 10.013, PROXY), usual), 'proxyThreads');
    assert.equal(causeOf(timesOf(trace, 10.020, 10.023, PROXY), usual), 'allIdle');
    assert.equal(causeOf(usual, usual), 'other');
  });
});
