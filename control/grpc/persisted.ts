// The agent's last good snapshot on disk, one file per section, so that applying a delta
// rewrites only the sections it changed (a policy change must not cost every agent a
// rewrite of 50,000 endpoints):
//   <stateDir>/snapshot.json                 the head: version, node, trust domain, and
//                                            the file holding each section
//   <stateDir>/snapshot/<section>.<v>.json   a section as written at version v
// Section files are written (and synced) first and the head last, atomically: a crash
// leaves the previous head and every file it names. Files no head names go afterwards.
// A snapshot.json holding a whole snapshot (as agents before this layout wrote it) loads too.
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Snapshot } from '../api/types.ts';
import { StateError } from '../errors.ts';
import { readJson, writeJsonAtomicAsync } from '../persist.ts';

interface Head {
  format: 2;
  version: number;
  node: string;
  trustDomain: string;
  /** section name → file name under snapshot/ */
  files: Record<string, string>;
}

const SCALARS = new Set(['version', 'node', 'trustDomain']);

export class SnapshotStore {
  readonly #head: string;
  readonly #dir: string;
  /** the snapshot last saved or loaded: its sections are on disk as `#files` says */
  #saved: Snapshot | undefined;
  #files: Record<string, string> = {};

  constructor(stateDir: string) {
    this.#head = join(stateDir, 'snapshot.json');
    this.#dir = join(stateDir, 'snapshot');
  }

  /** the persisted snapshot; undefined when there is none */
  load(): Snapshot | undefined {
    const head = readJson(this.#head) as Partial<Head> & Record<string, unknown> | undefined;
    if (head === undefined) return undefined;
    if (head.format !== 2) return head as unknown as Snapshot; // the whole snapshot, written before sections had files
    const s: Record<string, unknown> = { version: head.version, node: head.node, trustDomain: head.trustDomain };
    for (const [k, file] of Object.entries(head.files ?? {})) {
      const v = readJson(join(this.#dir, file));
      if (v === undefined) throw new StateError(`${this.#head} names ${file}, which is missing (remove ${this.#head} to start over)`);
      s[k] = v;
    }
    this.#saved = s as unknown as Snapshot;
    this.#files = { ...head.files };
    return this.#saved;
  }

  /**
   * persist `s`; a section that is the very object of the last saved snapshot (a delta
   * leaves unchanged sections as they were) keeps its file. One save at a time (the
   * client awaits each before the next snapshot)
   */
  async save(s: Snapshot): Promise<void> {
    const files: Record<string, string> = {};
    for (const [k, v] of Object.entries(s)) {
      if (SCALARS.has(k) || v === undefined) continue;
      const prev = this.#saved as unknown as Record<string, unknown> | undefined;
      if (prev !== undefined && prev[k] === v && this.#files[k] !== undefined) {
        files[k] = this.#files[k];
        continue;
      }
      files[k] = `${k}.${s.version}.json`;
      await writeJsonAtomicAsync(join(this.#dir, files[k]), v, { compact: true });
    }
    const head: Head = { format: 2, version: s.version, node: s.node, trustDomain: s.trustDomain, files };
    await writeJsonAtomicAsync(this.#head, head);
    this.#saved = s;
    this.#files = files;
    await this.#prune();
  }

  /** remove section files the head no longer names (left by this save, or by a crash before one) */
  async #prune(): Promise<void> {
    const keep = new Set(Object.values(this.#files));
    let names: string[];
    try {
      names = await readdir(this.#dir);
    } catch (err) {
      throw new StateError(`read ${this.#dir}: ${(err as Error).message}`, { cause: err });
    }
    for (const n of names) if (!keep.has(n)) await rm(join(this.#dir, n), { force: true });
  }
}
