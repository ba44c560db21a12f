import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** the repository root, found from this file whether it runs from test/ or dist/test/ */
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'nodal') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the nodal repository root');
    dir = up;
  }
}

export const repoRoot = findRoot();
export const bpfObjectDir = join(repoRoot, 'bpf/build');
