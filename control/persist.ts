// Small JSON files in a state directory, written atomically (tmp + fsync + rename) so a
// crash mid-write leaves the previous file, never a torn one: ids and versions must
// survive restarts exactly, and the agent's last snapshot is what it enforces offline.
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { mkdir, open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { StateError } from './errors.ts';

/** compact: no indentation, for large files nobody reads by eye */
export function writeJsonAtomic(path: string, value: unknown, opts: { compact?: boolean } = {}): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    mkdirSync(dirname(path), { recursive: true });
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, `${opts.compact ? JSON.stringify(value) : JSON.stringify(value, null, 1)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    throw new StateError(`write ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * writeJsonAtomic without blocking the event loop on the write and fsync (an agent's proxy
 * shares its thread): only the serialisation runs on the caller's thread
 */
export async function writeJsonAtomicAsync(path: string, value: unknown, opts: { compact?: boolean } = {}): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    await mkdir(dirname(path), { recursive: true });
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(`${opts.compact ? JSON.stringify(value) : JSON.stringify(value, null, 1)}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    throw new StateError(`write ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** undefined when the file does not exist; a corrupt file is an error, not a silent reset */
export function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new StateError(`read ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new StateError(`parse ${path}: ${(err as Error).message} (remove it to start over)`, { cause: err });
  }
}

/** JSON with object keys sorted, so equal content hashes equally whatever the build order */
export function stableStringify(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    const sorted: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) sorted[k] = (v as Record<string, unknown>)[k];
    return sorted;
  });
}

/**
 * A digest of a value's content (stableStringify, sha256), computed once per object:
 * for values that are never mutated once built, as a model's and a snapshot's sections are
 */
const fingerprints = new WeakMap<object, string>();
export function fingerprint(value: object): string {
  let f = fingerprints.get(value);
  if (f === undefined) fingerprints.set(value, (f = createHash('sha256').update(stableStringify(value)).digest('hex')));
  return f;
}
