// Fuzz target: the proxy's own small parsers, which read what a peer node or a client
// pod wrote: parseAuthority (tunnel :authority and source address), classify (the first
// bytes of a connection), parseTraceparent (a request header). Properties: they never
// throw, and what they accept is well-formed and reads back the same.

import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { classify } from '../../agent/proxy/stream.ts';
import { parseTraceparent } from '../../agent/proxy/trace.ts';
import { formatAuthority, parseAuthority } from '../../agent/proxy/tunnel.ts';
import { mutate, Rng, type FuzzBudget } from './random.ts';

const AUTHORITIES = ['10.0.0.1:80', '[fd00::1]:8080', '127.0.0.1:65535', '[::ffff:10.1.2.3]:1', 'pod.ns:443', ':80', '[::1]', '1.2.3.4:'];
const TRACEPARENTS = [
  '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
  '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00',
  'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
  ' 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01 ',
];
const FIRST_BYTES = [
  'GET / HTTP/1.1\r\n', 'POST /x HTTP/1.1\r\n', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'PATCH', 'CONNECT a:1 HTTP/1.1',
  '\x16\x03\x01\x02\x00\x01', 'SSH-2.0-OpenSSH', '',
];

/** how many inputs ran, and for the proxy target what became of them */
export interface FuzzResult { iterations: number; outcomes?: Record<string, number> }

/** throws, naming the seed and the input, when a property fails */
export function fuzzParsers(b: FuzzBudget): FuzzResult {
  const rng = new Rng(b.seed);
  const deadline = Date.now() + b.ms;
  let i = 0;
  for (; i < b.iterations && Date.now() < deadline; i++) {
    const target = i % 3;
    const corpus = target === 0 ? AUTHORITIES : target === 1 ? TRACEPARENTS : FIRST_BYTES;
    let input: Buffer = Buffer.from(rng.pick(corpus), 'latin1');
    const donor = Buffer.from(rng.pick(corpus), 'latin1');
    for (let m = rng.int(5); m >= 0; m--) input = mutate(rng, input, donor);
    try {
      if (target === 0) checkAuthority(input.toString('latin1'));
      else if (target === 1) checkTraceparent(input.toString('latin1'));
      else checkClassify(input);
    } catch (err) {
      const name = ['parseAuthority', 'parseTraceparent', 'classify'][target];
      throw new Error(`fuzz ${name}: seed ${b.seed} iteration ${i} input ${JSON.stringify(input.toString('latin1'))}: ${(err as Error).message}`, { cause: err });
    }
  }
  return { iterations: i };
}

function checkAuthority(text: string): void {
  const a = parseAuthority(text);
  if (!a) return;
  assert.ok(Number.isInteger(a.port) && a.port >= 1 && a.port <= 65535, `port ${a.port}`);
  // what is accepted reads back the same, so a peer cannot make two proxies disagree
  const again = parseAuthority(formatAuthority(a.ip, a.port));
  if (isIP(a.ip) !== 0) assert.deepEqual(again, a, 'formatAuthority(parseAuthority(x)) parses back the same');
}

function checkTraceparent(text: string): void {
  const t = parseTraceparent(text);
  if (!t) return;
  assert.match(t.header, /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/, 'the header we send on is well-formed');
  assert.deepEqual(parseTraceparent(t.header), t, 'and parses back the same');
}

function checkClassify(head: Buffer): void {
  const p = classify(head);
  assert.ok(p === 'http1' || p === 'h2' || p === 'opaque', `classify gave ${String(p)}`);
  // only the first 16 bytes decide: more of the same connection never changes the answer
  if (head.length >= 16) assert.equal(classify(Buffer.concat([head, Buffer.from('tail')])), p);
}
