// Flow uuids for every flow source (datapath verdicts, the proxy's connections and
// requests).
import { randomFillSync } from 'node:crypto';

// RFC 4122 version 4 UUIDs, made 256 at a time: node's randomUUID() costs about a
// microsecond per flow, more than the rest of building one. One block is formatted into
// one string and each flow keeps a slice of it (V8 shares the characters), so a stored
// flow's uuid is one small object instead of a string of its own. A block of 256 takes
// about 15 µs to make, a pause no request notices; one of 4,096 took 250–600 µs, a pause
// on the proxy's event loop every few seconds at 1,000 requests/s, and its long loop had
// V8 compile it on the stack and throw the code away at each refill.
const UUID_BLOCK = 256;
const uuidBytes = Buffer.alloc(16 * UUID_BLOCK);
const uuidText = Buffer.alloc(36 * UUID_BLOCK, 0x2d); // '-' where nothing else is written
const uuidView = new DataView(uuidText.buffer, uuidText.byteOffset, uuidText.length);
/** a byte as two lowercase hex digits, little-endian, for one 16-bit store */
const HEX2 = new Uint16Array(256);
for (let i = 0; i < 256; i++) HEX2[i] = '0123456789abcdef'.charCodeAt(i >> 4) | ('0123456789abcdef'.charCodeAt(i & 15) << 8);
/** where each of the 16 bytes goes in xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx */
const UUID_AT = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
let uuidBlock = '';
let uuidNext = UUID_BLOCK;

function refillUuids(): void {
  randomFillSync(uuidBytes);
  formatUuids();
  uuidBlock = uuidText.toString('latin1');
  uuidNext = 0;
}

/**
 * uuidBytes as text into uuidText. A function of its own, with nothing after its loop: V8
 * compiles the loop while it runs (OSR) before any refill has finished, and code after it
 * in the same function would be compiled without type feedback and deoptimized at every
 * refill until V8 compiled the function anew.
 */
function formatUuids(): void {
  for (let u = 0; u < UUID_BLOCK; u++) {
    const o = u * 16;
    uuidBytes[o + 6] = (uuidBytes[o + 6]! & 0x0f) | 0x40; // version 4
    uuidBytes[o + 8] = (uuidBytes[o + 8]! & 0x3f) | 0x80; // variant 10
    const t = u * 36;
    for (let i = 0; i < 16; i++) uuidView.setUint16(t + UUID_AT[i]!, HEX2[uuidBytes[o + i]!]!, true);
  }
}

/** a random (v4) UUID for a flow, from the current block */
export function flowUuid(): string {
  if (uuidNext === UUID_BLOCK) refillUuids();
  const at = uuidNext++ * 36;
  return uuidBlock.substring(at, at + 36);
}
