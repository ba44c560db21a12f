// Numeric ids that must not move across restarts: identities (the datapath's maps and
// every agent's ipcache hold them), services and policies (flows and drop events name
// them). Kept in stateDir/identities.json; an id is never reused for another key, so a
// stale map entry can never make one workload look like another.
import { join } from 'node:path';
import { FIRST_ALLOCATED_IDENTITY } from '../api/types.ts';
import { StateError } from '../errors.ts';
import { readJson, writeJsonAtomic } from '../persist.ts';

export type IdKind = 'identities' | 'services' | 'policies';

/** the first id of each kind: below 256 identities are reserved; 0 means "none" for the others */
const FIRST: Record<IdKind, number> = { identities: FIRST_ALLOCATED_IDENTITY, services: 1, policies: 1 };

/** what the builder needs; tests may pass an in-memory one */
export interface IdAllocator {
  id(kind: IdKind, key: string): number;
}

interface IdFile {
  identities: Record<string, number>;
  services: Record<string, number>;
  policies: Record<string, number>;
}

export class PersistentIds implements IdAllocator {
  readonly path: string;
  readonly #ids: Record<IdKind, Map<string, number>>;
  readonly #next: Record<IdKind, number>;
  #dirty = false;

  constructor(stateDir: string) {
    this.path = join(stateDir, 'identities.json');
    const raw = readJson(this.path) as Partial<IdFile> | undefined;
    this.#ids = { identities: new Map(), services: new Map(), policies: new Map() };
    this.#next = { ...FIRST };
    for (const kind of Object.keys(FIRST) as IdKind[]) {
      for (const [k, v] of Object.entries(raw?.[kind] ?? {})) {
        if (!Number.isInteger(v) || v < FIRST[kind]) throw new StateError(`${this.path}: ${kind}[${k}] = ${String(v)} is not a valid id`);
        this.#ids[kind].set(k, v);
        this.#next[kind] = Math.max(this.#next[kind], v + 1);
      }
    }
  }

  id(kind: IdKind, key: string): number {
    let v = this.#ids[kind].get(key);
    if (v === undefined) {
      v = this.#next[kind]++;
      this.#ids[kind].set(key, v);
      this.#dirty = true;
    }
    return v;
  }

  /** write new allocations before any snapshot that carries them leaves the process */
  flush(): void {
    if (!this.#dirty) return;
    const out: IdFile = { identities: {}, services: {}, policies: {} };
    for (const kind of Object.keys(FIRST) as IdKind[]) {
      out[kind] = Object.fromEntries([...this.#ids[kind]].sort((x, y) => x[1] - y[1]));
    }
    writeJsonAtomic(this.path, out);
    this.#dirty = false;
  }
}
