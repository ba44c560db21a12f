// Writes one benchmark's section into docs/benchmarks.md between its markers, leaving
// the other sections as they were.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { arch, cpus, release } from 'node:os';
import { repoRoot } from '../test/helpers/paths.ts';

const FILE = join(repoRoot, 'docs/benchmarks.md');
const HEADER = `# Benchmarks

Every figure here is measured side by side with its anchor in one run, on the machine
named in each section, by \`make bench\` (sources in \`bench/\`). Numbers from different
runs or machines are not comparable; ratios within one table are what to read.
`;

export function machine(): string {
  return `${cpus()[0]?.model ?? 'unknown CPU'} × ${cpus().length}, Linux ${release()} (${arch()}), Node ${process.version}`;
}

export function writeSection(name: string, markdown: string): void {
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  let doc = existsSync(FILE) ? readFileSync(FILE, 'utf8') : HEADER;
  const block = `${start}\n${markdown.trim()}\n${end}`;
  const i = doc.indexOf(start);
  const j = doc.indexOf(end);
  doc = i >= 0 && j > i ? doc.slice(0, i) + block + doc.slice(j + end.length) : `${doc.trimEnd()}\n\n${block}\n`;
  writeFileSync(FILE, doc);
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** the middle value of `xs` (percentile 50) */
export function median(xs: readonly number[]): number {
  return percentile([...xs].sort((a, b) => a - b), 50);
}

export function table(head: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** a numeric command-line option (`--seconds 5`), or `dflt` when it is not given */
export function numberArg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}
