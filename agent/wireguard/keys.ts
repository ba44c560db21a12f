// The node's WireGuard key pair. Generated in-process with node:crypto (X25519, clamped
// exactly like `wg genkey`) rather than by running `wg genkey`: the private key then
// never crosses a pipe or a child process, key generation works before wireguard-tools
// is even looked at, and the public key is derived the same way for a key we created and
// a key we reuse. The file is created with mode 0600 from the first byte (never chmod-ed
// afterwards) and linked into place so a crash mid-write cannot leave a torn key behind.
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { fsyncSync, closeSync, linkSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { WG_ERR, WireGuardError } from './errors.ts';

export const PRIVATE_KEY_FILE = 'private.key';
const KEY_MODE = 0o600;
const KEY_DIR_MODE = 0o700;
/* PKCS#8 header of a raw X25519 private key (RFC 8410): lets node:crypto import 32 raw bytes */
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

export interface NodeKey {
  /** path of the private key file; the key itself stays out of memory we hand around */
  privateKeyFile: string;
  publicKey: string;
  created: boolean;
}

/** a WireGuard key is 32 bytes in standard base64 (44 characters with one '=') */
export function isWireGuardKey(s: string): boolean {
  return /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(s);
}

/** the public key of a raw X25519 private key, both in WireGuard's base64 form */
export function publicKeyOf(privateKeyB64: string): string {
  const raw = Buffer.from(privateKeyB64, 'base64');
  if (raw.length !== 32) throw new Error('a WireGuard private key is 32 bytes');
  const key = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
  const x = createPublicKey(key).export({ format: 'jwk' }).x;
  if (typeof x !== 'string') throw new Error('X25519 public key export returned no key');
  return Buffer.from(x, 'base64url').toString('base64');
}

/** a fresh private key, clamped like `wg genkey` so the file is interchangeable with one */
export function generatePrivateKey(): string {
  const d = generateKeyPairSync('x25519').privateKey.export({ format: 'jwk' }).d;
  if (typeof d !== 'string') throw new Error('X25519 key export returned no private key');
  const raw = Buffer.from(d, 'base64url');
  raw[0] = raw[0]! & 248;
  raw[31] = (raw[31]! & 127) | 64;
  return raw.toString('base64');
}

/** reuse keyDir/private.key if it exists, otherwise create it; never logs the private key */
export function loadOrCreateKey(keyDir: string, logger: Logger): NodeKey {
  const file = join(keyDir, PRIVATE_KEY_FILE);
  try {
    mkdirSync(keyDir, { recursive: true, mode: KEY_DIR_MODE });
  } catch (err) {
    throw new WireGuardError(WG_ERR.KEY, `cannot create the key directory ${keyDir}: ${(err as Error).message}`, { cause: err });
  }
  const existing = readExisting(file);
  if (existing !== undefined) {
    const publicKey = derive(existing, file);
    logger.info({ publicKey, keyFile: file }, 'reusing the WireGuard key of a previous run');
    return { privateKeyFile: file, publicKey, created: false };
  }
  const priv = generatePrivateKey();
  const publicKey = derive(priv, file);
  writeKeyFile(file, priv);
  logger.info({ publicKey, keyFile: file }, 'generated a new WireGuard key');
  return { privateKeyFile: file, publicKey, created: true };
}

function readExisting(file: string): string | undefined {
  let st;
  try {
    st = statSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new WireGuardError(WG_ERR.KEY, `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (!st.isFile()) throw new WireGuardError(WG_ERR.KEY, `${file} is not a regular file`);
  // a key others could read is a leaked key: refuse it instead of quietly tightening it
  if ((st.mode & 0o077) !== 0) {
    throw new WireGuardError(WG_ERR.KEY, `${file} has mode 0${(st.mode & 0o777).toString(8)}; a WireGuard private key must be 0600 (readable by the agent only): remove the file to generate a new key, or fix its mode`);
  }
  const text = readFileSync(file, 'utf8').trim();
  // the message never quotes the content: it may be a key with a typo
  if (!isWireGuardKey(text)) throw new WireGuardError(WG_ERR.KEY, `${file} does not hold a WireGuard private key (44 base64 characters)`);
  return text;
}

function derive(priv: string, file: string): string {
  try {
    return publicKeyOf(priv);
  } catch (err) {
    throw new WireGuardError(WG_ERR.KEY, `cannot derive the public key from ${file}: ${(err as Error).message}`, { cause: err });
  }
}

function writeKeyFile(file: string, priv: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    const fd = openSync(tmp, 'wx', KEY_MODE);
    try {
      writeSync(fd, `${priv}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // link, not rename: it fails if another process created the key meanwhile
    linkSync(tmp, file);
  } catch (err) {
    throw new WireGuardError(WG_ERR.KEY, `cannot write ${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    try { unlinkSync(tmp); } catch { /* already gone */ }
  }
}
