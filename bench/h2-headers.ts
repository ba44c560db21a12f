// What a received header value costs in V8's old space, node:http2 against node:http, side
// by side in one run (bench/helpers/header-strings.ts measures each cell in its own
// process). Why it is here: nodal's HTTP/2 and gRPC paths run a full GC every few seconds
// under load, and its pause is what sets their p99 at 1,000 requests/s (issue 4 item 8;
// docs/benchmarks.md "Proxy per core: what changed"). This shows the mechanism with
// nothing of nodal's in the way: node:http2 hands every received header value that is not
// an HPACK static-table entry to JavaScript as an external string (src/node_http2.h,
// ExternalHeader::New; names under 64 bytes are copied and internalized instead), and V8
// allocates every external string in old space (Factory::NewExternalStringFromOneByte), so
// each value stays, with its nghttp2 buffer, until a full GC. node:http's values are
// ordinary strings that a young-generation GC frees.
// Run: node dist/bench/h2-headers.js [--repeat N]
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HeaderStringsResult } from './helpers/header-strings.ts';
import { machine, median, numberArg, table, writeSection } from './report.ts';

const here = dirname(fileURLToPath(import.meta.url));
const REPEAT = numberArg('--repeat', 3);
const EXTRAS = [0, 4, 8, 16];
const PROTOCOLS = [['h2', 'node:http2 (h2c)'], ['http1', 'node:http (HTTP/1.1)']] as const;
/** a young generation no measured phase fills: old space then grows only by direct allocation */
const FLAGS = ['--expose-gc', '--max-semi-space-size=256', '--min-semi-space-size=256'];

async function measure(protocol: string, extra: number): Promise<HeaderStringsResult> {
  const child = spawn(process.execPath, [...FLAGS, join(here, 'helpers', 'header-strings.js'), protocol, String(extra)],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  const [code] = await once(child, 'exit') as [number | null];
  if (code !== 0) throw new Error(`header-strings ${protocol} ${extra} exited with ${code}`);
  return JSON.parse(out) as HeaderStringsResult;
}

async function main(): Promise<void> {
  const began = Date.now();
  // every configuration once per pass, so drift on this machine spreads over all of them
  const runs = new Map<string, HeaderStringsResult[]>();
  for (let r = 0; r < REPEAT; r++) {
    for (const [p] of PROTOCOLS) {
      for (const k of EXTRAS) {
        const key = `${p}/${k}`;
        runs.set(key, [...(runs.get(key) ?? []), await measure(p, k)]);
      }
    }
  }
  /** a configuration's medians over its runs */
  const cell = (p: string, k: number): { bytes: number; gcMs: number } => {
    const list = runs.get(`${p}/${k}`)!;
    return { bytes: median(list.map((x) => x.oldBytesPerRequest)), gcMs: median(list.map((x) => x.fullGcMs)) };
  };
  const rows: string[][] = [];
  for (const [p, name] of PROTOCOLS) {
    for (const k of EXTRAS) {
      const c = cell(p, k);
      rows.push([name, String(k), c.bytes.toLocaleString('en-US'), c.gcMs.toFixed(1)]);
    }
  }
  const slope = (p: string): number => (cell(p, 16).bytes - cell(p, 0).bytes) / 16;
  const per = (p: string): string => (slope(p) < 1 ? 'nothing' : `${slope(p).toFixed(0)} bytes`);
  const first = { ...runs.get('h2/0')![0]!, ...cell('h2', 0) };
  const md = `## What a received HTTP/2 header value leaves in old space (bench/h2-headers.ts)

${machine()}; the run took ${Math.round((Date.now() - began) / 1000)} s. A server and a keep-alive client in one
Node process on loopback (\`bench/helpers/header-strings.ts\`, one process per cell, each cell
the median of ${REPEAT}), one request at a time, \`GET /p\` with the given number of extra request
headers (16-byte values) and a 2-byte answer. **Old-space bytes per request**: after a warm-up
and two full GCs, ${first.requests.toLocaleString('en-US')} requests with a young generation large enough that no GC runs at
all (checked; the cell fails otherwise), so old space grows only by what is allocated there
directly. **Full GC**: a forced full GC after ${first.gcRequests.toLocaleString('en-US')} more requests, timed.

${table(['server', 'extra header values per request', 'old-space bytes per request, no GC run', 'full GC after them, ms'], rows)}

Each extra header value costs **${per('h2')} of old space** per request over node:http2, and
${per('http1')} over node:http. node:http2 turns every received header value that is not an HPACK
static-table entry into an external string (\`src/node_http2.h\`, \`ExternalHeader::New\`;
names under 64 bytes are copied and internalized instead), and V8 allocates external strings in
old space (\`Factory::NewExternalStringFromOneByte\`): each one, and the nghttp2 buffer it holds,
stays until a full GC, which then finalizes them one by one (\`clear.external_string_table\` in
\`--trace-gc-nvp\`). node:http's values are ordinary strings a young-generation GC frees. So
under HTTP/2 the rate of full GCs grows with requests/s × header values per request, whatever
the proxy does with them. With no extra headers, a node:http2 request still leaves
${first.bytes} bytes: three received values (\`:authority\`, \`:path\`, the answer's \`date\`), and node:http2's
own per-stream allocations besides. nodal's gRPC path, one node, leaves about 0.7 KB per call
("Proxy per core: what changed").
`;
  writeSection('h2-headers', md);
  process.stdout.write(`${md}\n`);
}

await main();
