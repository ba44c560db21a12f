// make bench: runs every benchmark in turn; each writes its own section of
// docs/benchmarks.md. Needs root (network namespaces, BPF).
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const BENCHES = ['datapath', 'mesh', 'flows'];

for (const name of BENCHES.filter((b) => only.length === 0 || only.includes(b))) {
  process.stderr.write(`bench: ${name}\n`);
  // the sandbox's names are global: one user at a time (tests and benchmarks alike)
  const r = spawnSync('flock', ['/tmp/nodal-sandbox.lock', process.execPath, join(here, `${name}.js`)], { stdio: 'inherit' });
  if (r.status !== 0) {
    process.stderr.write(`bench: ${name} failed (exit ${r.status})\n`);
    process.exit(1);
  }
}
