// How many proxy workers the agent starts: --proxy-workers, and what `auto` reads.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAgentArgs } from '../../agent/config.ts';
import { proxyWorkerCount } from '../../agent/proxy/index.ts';

const required = ['--node', 'n', '--control', 'c:1', '--state-dir', '/tmp/x', '--cgroup', '/sys/fs/cgroup', '--proxy-ip', '10.0.0.1', '--tunnel-ip', '10.99.0.1', '--underlay-ip', '192.168.0.1'];

describe('proxy workers: how many', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nodal-cpumax-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const cpuMax = (text: string): string => {
    const p = join(dir, `cpu.max-${Math.random()}`);
    writeFileSync(p, text);
    return p;
  };

  it('--proxy-workers takes a count, and auto (the default) one per CPU the agent may use', () => {
    assert.equal(parseAgentArgs([...required, '--proxy-workers', '3']).proxyWorkers, 3);
    assert.equal(parseAgentArgs(required).proxyWorkers, proxyWorkerCount());
    assert.equal(parseAgentArgs([...required, '--proxy-workers', 'auto']).proxyWorkers, proxyWorkerCount());
  });

  it('refuses a count that is not a whole number within 1..256, naming the flag', () => {
    for (const bad of ['0', '-1', '1.5', 'many', '257']) {
      assert.throws(() => parseAgentArgs([...required, '--proxy-workers', bad]), new RegExp(`--proxy-workers must be auto or a whole number within 1\\.\\.256, not "${bad.replace('.', '\\.')}"`));
    }
  });

  it('auto follows the cgroup CPU limit (a DaemonSet\'s limits.cpu), rounded up, never above the CPUs present', () => {
    const cpus = availableParallelism();
    assert.equal(proxyWorkerCount(cpuMax('max 100000\n')), cpus, 'no limit: every CPU');
    assert.equal(proxyWorkerCount(cpuMax('150000 100000\n')), Math.min(2, cpus), '1.5 CPUs: 2 workers');
    assert.equal(proxyWorkerCount(cpuMax('10000 100000\n')), 1, '0.1 CPU: still one worker');
    assert.equal(proxyWorkerCount(cpuMax(`${(cpus + 8) * 100000} 100000\n`)), cpus, 'a limit above the CPUs present');
    assert.equal(proxyWorkerCount(join(dir, 'absent')), cpus, 'no cpu controller: every CPU');
  });
});
