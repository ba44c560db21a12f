// make bench: runs every benchmark in turn; each writes its own section of
// docs/benchmarks.md. Needs root (network namespaces, BPF; proxy needs neither).
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const BENCHES = ['datapath', 'mesh', 'flows', 'proxy', 'proxy-cores', 'h2-headers', 'scale'];
// scale takes minutes at 1,000 nodes: run it by name (node dist/bench/run.js scale)
const DEFAULT = BENCHES.filter((b) => b !== 'scale');
const LOOPBACK_ONLY = new Set(['proxy', 'proxy-cores', 'h2-headers']);

for (const name of only.length === 0 ? DEFAULT : BENCHES.filter((b) => only.includes(b))) {
  process.stderr.write(`bench: ${name}\n`);
  const node = [process.execPath, ...(name === 'scale' ? ['--expose-gc', '--max-old-space-size=16000'] : []), join(here, `${name}.js`)];
  // the sandbox's names are global: one user at a time (tests and benchmarks alike);
  // the proxy benches run on loopback only, with no sandbox and no BPF
  const r = LOOPBACK_ONLY.has(name) ? spawnSync(node[0]!, node.slice(1), { stdio: 'inherit' })
    : spawnSync('flock', ['/tmp/nodal-sandbox.lock', ...node], { stdio: 'inherit' });
  if (r.status !== 0) {
    process.stderr.write(`bench: ${name} failed (exit ${r.status})\n`);
    process.exit(1);
  }
}
