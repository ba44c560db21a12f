// Seeded generation for the fuzz targets: one seed reproduces a whole run. The budget
// comes from the environment so CI runs a bounded time and a developer can replay a seed:
//   NODAL_FUZZ_MS          wall-clock budget of a target (default 15000 in total, split by the caller)
//   NODAL_FUZZ_ITERATIONS  iteration cap of a target (default per target)
//   NODAL_FUZZ_SEED        the seed (default: random, printed)

export interface FuzzBudget { ms: number; iterations: number; seed: number }

export function budget(defaultMs: number, defaultIterations: number): FuzzBudget {
  const num = (name: string, fallback: number): number => {
    const v = process.env[name];
    if (v === undefined || v === '') return fallback;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${name}=${v} is not a non-negative integer`);
    return n;
  };
  return {
    ms: num('NODAL_FUZZ_MS', defaultMs),
    iterations: num('NODAL_FUZZ_ITERATIONS', defaultIterations),
    seed: num('NODAL_FUZZ_SEED', Math.floor(Math.random() * 0xffffffff)) >>> 0,
  };
}

/** mulberry32: small, fast, and the same sequence on every platform for one seed */
export class Rng {
  private s: number;

  constructor(seed: number) { this.s = seed >>> 0; }

  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** an integer in [0, n) */
  int(n: number): number { return Math.floor(this.next() * n); }

  chance(p: number): boolean { return this.next() < p; }

  pick<T>(items: readonly T[]): T { return items[this.int(items.length)]!; }

  /** a string of `n` characters from `alphabet` */
  text(alphabet: string, n: number): string {
    let out = '';
    for (let i = 0; i < n; i++) out += alphabet[this.int(alphabet.length)];
    return out;
  }
}

/** bytes that parsers treat specially */
const INTERESTING_BYTES = [0x00, 0x09, 0x0a, 0x0d, 0x20, 0x22, 0x2c, 0x2f, 0x3a, 0x3b, 0x3d, 0x5b, 0x5d, 0x7f, 0x80, 0xff];
/** fragments that turn one request into a framing puzzle */
const INTERESTING_TEXT = [
  '\r\n', '\n', '\r', '\r\n ', '\r\n\t', ' ', ':', '::', ',', '\r\n\r\n', '0\r\n\r\n',
  '\r\nTransfer-Encoding: chunked', '\r\nContent-Length: 0', '\r\nContent-Length: 18446744073709551616',
  '\r\nHost: other', '\r\nConnection: close',
  'GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n', ';ext=1', 'ffffffffffffffff', '-1', '+1', '0x10', '1e3',
  '%00', '%2e%2e/', '\u00ff', '\t', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0',
];
const UPGRADE_TEXT = '\r\nUpgrade: websocket\r\nConnection: Upgrade';
const HUGE_NUMBERS = ['18446744073709551616', '99999999999999999999999', '-1', '4294967296', '0', '00000000000000000000001', '1.5', ' 5', '5 '];

/** one random change to `input`; the result may be empty. `upgrade`: may insert an Upgrade request's headers */
export function mutate(rng: Rng, input: Buffer, donor?: Buffer, upgrade = false): Buffer {
  const at = (n: number): number => rng.int(Math.max(1, n));
  const len = input.length;
  switch (rng.int(10)) {
    case 0: { // flip a bit
      if (len === 0) return input;
      const out = Buffer.from(input);
      out[at(len)]! ^= 1 << rng.int(8);
      return out;
    }
    case 1: { // an interesting byte in place of another
      if (len === 0) return input;
      const out = Buffer.from(input);
      out[at(len)] = rng.pick(INTERESTING_BYTES);
      return out;
    }
    case 2: { // insert an interesting fragment
      const i = at(len + 1);
      const text = upgrade && rng.chance(0.05) ? UPGRADE_TEXT : rng.pick(INTERESTING_TEXT);
      return Buffer.concat([input.subarray(0, i), Buffer.from(text, 'latin1'), input.subarray(i)]);
    }
    case 3: { // delete a range
      const i = at(len);
      return Buffer.concat([input.subarray(0, i), input.subarray(i + 1 + rng.int(16))]);
    }
    case 4: { // repeat a line (a repeated header, a pipelined request line)
      const text = input.toString('latin1');
      const lines = text.split('\r\n');
      const i = at(lines.length);
      const times = rng.chance(0.1) ? 1 + rng.int(3000) : 1 + rng.int(3);
      lines.splice(i, 0, ...Array.from({ length: times }, () => lines[i]!));
      return Buffer.from(lines.join('\r\n'), 'latin1');
    }
    case 5: // truncate
      return input.subarray(0, at(len + 1));
    case 6: { // a number made huge, negative or odd
      const text = input.toString('latin1');
      const runs = [...text.matchAll(/\d+/g)];
      if (runs.length === 0) return input;
      const m = rng.pick(runs);
      return Buffer.from(text.slice(0, m.index) + rng.pick(HUGE_NUMBERS) + text.slice(m.index + m[0].length), 'latin1');
    }
    case 7: { // splice with another input
      if (!donor || donor.length === 0) return input;
      return Buffer.concat([input.subarray(0, at(len + 1)), donor.subarray(at(donor.length))]);
    }
    case 8: { // change the case of a letter
      if (len === 0) return input;
      const out = Buffer.from(input);
      const i = at(len);
      const c = out[i]!;
      if ((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)) out[i] = c ^ 0x20;
      return out;
    }
    default: { // swap two bytes
      if (len < 2) return input;
      const out = Buffer.from(input);
      const i = at(len);
      const j = at(len);
      [out[i], out[j]] = [out[j]!, out[i]!];
      return out;
    }
  }
}
