// Fuzz target: HTTP/1.1 through the proxy, as a client pod reaches it (same node and
// cross node, alternately). Each input is a mutated or generated request (or several,
// pipelined), written on its own connection and followed by a FIN. Properties:
// - the proxy answers with a well-formed status line, or closes without a byte;
// - the pod never receives a request that a reference parser (node:http with the proxy's
//   own limits and guards) did not read from the same bytes: the proxy must not split,
//   join or invent requests when it re-frames them (smuggling);
// - nothing throws (node:test fails the run on an uncaught exception), and the proxy still
//   serves a good request at every checkpoint and at the end.
// Inputs that the proxy classifies as opaque TCP go to a sink pod: they are bytes, not requests.

import { createServer as httpServer, type Server as HttpServer } from 'node:http';
import { connect, createServer as netServer, type Socket } from 'node:net';
import { DEFAULT_LIMITS, guardRequest, hardenHttpServer, http1ServerOptions, type ProxyLimits } from '../../agent/proxy/limits.ts';
import { classify } from '../../agent/proxy/stream.ts';
import { closed, closeServer, httpGet, listen, startTwoNodes, type TwoNodes } from '../helpers/two-nodes.ts';
import { mutate, Rng, type FuzzBudget } from './random.ts';
import type { FuzzResult } from './parsers.fuzz.ts';

/** the proxy's limits in the fuzz run: short header timeout, so that no input waits long */
const LIMITS: Partial<ProxyLimits> = { headersTimeoutMs: 500, timeoutCheckMs: 100, errorLingerMs: 500, upgradeTimeoutMs: 1_000 };
/**
 * Upgrade requests are in unless NODAL_FUZZ_UPGRADE=0. The pods here have no upgrade
 * handler, so they answer an Upgrade as an ordinary request and would read on: the proxy
 * must relay that answer and close, never pass the bytes after the request head on, and
 * an Upgrade nobody answers is bounded by upgradeTimeoutMs.
 */
const UPGRADE = process.env.NODAL_FUZZ_UPGRADE !== '0';
/**
 * A hang detector, not a speed check: after the client's FIN every input is over within
 * the limits above (or at once); one still open after this long is reported with its input.
 */
const HANG_MS = 30_000;
/** good requests at this interval prove the proxy still serves */
const CHECKPOINT = 100;

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH', 'TRACE', 'get', 'PROPFIND', 'G\x00ET'];
const HEADERS = [
  'Host: backend', 'Content-Length: 5', 'Content-Length: 0', 'Transfer-Encoding: chunked', 'Transfer-Encoding: gzip, chunked',
  'Connection: keep-alive', 'Connection: close', ...(UPGRADE ? ['Connection: Upgrade', 'Upgrade: websocket'] : []), 'Expect: 100-continue',
  'X-Forwarded-For: 10.0.0.1', 'Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'Cookie: a=b; c=d',
  'Te: trailers', 'Trailer: X-T', 'Accept: */*', 'Content-Type: text/plain',
];

function generate(rng: Rng, tag: string): Buffer {
  let out = '';
  for (let r = 1 + (rng.chance(0.2) ? rng.int(3) : 0); r > 0; r--) {
    const method = rng.chance(0.9) ? rng.pick(METHODS.slice(0, 8)) : rng.pick(METHODS);
    const path = `/f/${tag}/${rng.text('abc/?=&%._~-', rng.int(12))}`;
    const version = rng.chance(0.9) ? 'HTTP/1.1' : rng.pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/1.10', 'HTTP/0.9', 'HTTP/1.1 ']);
    out += `${method} ${path} ${version}\r\n`;
    const headers = ['Host: backend'];
    for (let h = rng.int(5); h > 0; h--) headers.push(rng.pick(HEADERS));
    out += headers.map((h) => `${h}\r\n`).join('');
    out += '\r\n';
    if (headers.some((h) => h.startsWith('Transfer-Encoding'))) out += rng.pick(['5\r\nhello\r\n0\r\n\r\n', '0\r\n\r\n', '5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n']);
    else if (headers.includes('Content-Length: 5')) out += 'hello';
  }
  return Buffer.from(out, 'latin1');
}

interface Pods { seen: string[]; reference: HttpServer; referencePort: number; parsed: Map<Socket, string[]> }

/** throws, naming the seed and the input, when a property fails */
export async function fuzzHttp1(b: FuzzBudget, block: number): Promise<FuzzResult> {
  const limits: ProxyLimits = { ...DEFAULT_LIMITS, ...LIMITS };
  const seen: string[] = [];
  const recorder = (): HttpServer => httpServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('error', () => {});
    req.on('end', () => res.end('ok'));
  });
  const sink = netServer((s) => { s.on('error', () => {}); s.resume(); s.on('end', () => s.end()); });
  const mesh = await startTwoNodes(block, [
    { name: 'local', node: 'node-a', server: recorder() },
    { name: 'remote', node: 'node-b', server: recorder() },
    { name: 'sink-local', node: 'node-a', server: sink },
  ], LIMITS);
  // the reference parser: node:http with the proxy's options and guards, fed the same bytes
  const parsed = new Map<Socket, string[]>();
  const reference = hardenHttpServer(httpServer({ ...http1ServerOptions(limits), requireHostHeader: false }, guardRequest(limits, (req, res) => {
    parsed.get(req.socket)?.push(`${req.method} ${req.url}`);
    req.resume();
    res.end('ok');
  })), limits);
  reference.on('connection', (s: Socket) => parsed.set(s, []));
  const pods: Pods = { seen, reference, referencePort: await listen(reference, `127.0.${block + 3}.99`), parsed };
  try {
    return await run(b, mesh, pods);
  } finally {
    await closeServer(reference);
    await mesh.close();
  }
}

async function run(b: FuzzBudget, mesh: TwoNodes, pods: Pods): Promise<FuzzResult> {
  const rng = new Rng(b.seed);
  const deadline = Date.now() + b.ms;
  /** every request the reference read, with the input it came from, by `METHOD url` */
  const expected = new Map<string, number>();
  const origin = new Map<string, string>();
  /** every input by iteration (its requests carry /f/<iteration>/), to name the one a pod got a request from */
  const inputs = new Map<number, string>();
  let previous = generate(rng, 'seed');
  const outcomes = { answered: 0, closed: 0, opaque: 0, forwarded: 0 };
  let i = 0;
  for (; i < b.iterations && Date.now() < deadline; i++) {
    let input: Buffer = generate(rng, String(i));
    for (let m = rng.chance(0.2) ? 0 : 1 + rng.int(4); m > 0; m--) input = mutate(rng, input, previous, UPGRADE);
    previous = input;
    inputs.set(i, input.toString('latin1'));
    const fail = (what: string): Error => new Error(`fuzz http1: seed ${b.seed} iteration ${i} input ${JSON.stringify(input.toString('latin1'))}: ${what}`);
    const http = classify(input) === 'http1';
    const pod = !http ? mesh.ip['sink-local']! : i % 2 === 0 ? mesh.ip.local! : mesh.ip.remote!;
    const [answer, reference] = await within(Promise.all([exchange(mesh.dial(pod), input), referenceParse(pods, input)]),
      () => fail(`neither answered nor closed ${HANG_MS} ms after the client's FIN (${http ? 'http1' : 'opaque'}, pod ${pod})`));
    if (http) {
      for (const r of reference) {
        expected.set(r, (expected.get(r) ?? 0) + 1);
        origin.set(r, input.toString('latin1'));
      }
      if (answer.length > 0 && !/^HTTP\/1\.1 [1-5]\d\d /.test(answer)) throw fail(`answer does not start with a status line: ${JSON.stringify(answer.slice(0, 120))}`);
      outcomes[answer.length > 0 ? 'answered' : 'closed']++;
    } else {
      outcomes.opaque++;
    }
    if (i % CHECKPOINT === CHECKPOINT - 1) await within(checkpoint(mesh, i, fail), () => fail('a good request hung'));
  }
  const atEnd = (what: string): Error => new Error(`fuzz http1: seed ${b.seed} at the end: ${what}`);
  await within(checkpoint(mesh, i, atEnd), () => atEnd('a good request hung'));
  // every request a pod got was read as such by the reference, no more often than that
  const got = new Map<string, number>();
  for (const r of pods.seen) {
    if (r.startsWith('GET /checkpoint/')) continue;
    const n = (got.get(r) ?? 0) + 1;
    got.set(r, n);
    outcomes.forwarded++;
    if (n > (expected.get(r) ?? 0)) {
      const tag = /\/f\/(\d+)\//.exec(r);
      const from = origin.get(r) ?? (tag ? inputs.get(Number(tag[1])) : undefined);
      throw new Error(`fuzz http1: seed ${b.seed}: the pod got ${JSON.stringify(r)} ${n} time(s), the reference parser read it ${expected.get(r) ?? 0} time(s)${from ? ` (from input ${JSON.stringify(from)})` : ''}`);
    }
  }
  return { iterations: i, outcomes };
}

function within<T>(p: Promise<T>, hung: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const watchdog = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(hung()), HANG_MS); });
  return Promise.race([p, watchdog]).finally(() => clearTimeout(timer));
}

/** write the input and a FIN; what came back before the proxy closed */
async function exchange(s: Socket, input: Buffer): Promise<string> {
  let text = '';
  s.setEncoding('latin1');
  s.on('data', (c: string) => { text += c; });
  s.on('error', () => {});
  s.end(input);
  await closed(s);
  return text;
}

/** the requests node:http reads from these bytes */
async function referenceParse(pods: Pods, input: Buffer): Promise<string[]> {
  const s = connect({ host: (pods.reference.address() as { address: string }).address, port: pods.referencePort });
  const local = new Promise<Socket>((resolve) => pods.reference.once('connection', resolve));
  await exchange(s, input);
  const server = await local;
  const list = pods.parsed.get(server) ?? [];
  pods.parsed.delete(server);
  return list;
}

async function checkpoint(mesh: TwoNodes, i: number, fail: (what: string) => Error): Promise<void> {
  for (const pod of [mesh.ip.local!, mesh.ip.remote!]) {
    const { status } = await httpGet(() => mesh.dial(pod), `/checkpoint/${i}`)
      .catch((err: Error) => { throw fail(`a good request to ${pod} failed: ${err.message}`); });
    if (status !== 200) throw fail(`a good request to ${pod} got ${status}`);
  }
}
