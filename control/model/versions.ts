// Snapshot versions: one persisted counter, and per node the version and content hash of
// its last snapshot. A node's version moves only when its content changes, so an agent
// that reconnects, even to a restarted control plane, resumes without a resend; and the
// counter is persisted before a version leaves the process, so versions never go back.
import { join } from 'node:path';
import { StateError } from '../errors.ts';
import { readJson, writeJsonAtomic } from '../persist.ts';

interface VersionFile {
  counter: number;
  nodes: Record<string, { version: number; hash: string }>;
}

export class SnapshotVersions {
  readonly path: string;
  #counter = 0;
  readonly #nodes = new Map<string, { version: number; hash: string }>();
  #dirty = false;

  constructor(stateDir: string) {
    this.path = join(stateDir, 'versions.json');
    const raw = readJson(this.path) as Partial<VersionFile> | undefined;
    if (raw === undefined) return;
    if (!Number.isSafeInteger(raw.counter) || raw.counter! < 0) throw new StateError(`${this.path}: counter is not a version`);
    this.#counter = raw.counter!;
    for (const [node, v] of Object.entries(raw.nodes ?? {})) {
      if (Number.isSafeInteger(v.version) && typeof v.hash === 'string') this.#nodes.set(node, { version: v.version, hash: v.hash });
    }
  }

  /** the highest version ever issued */
  get latest(): number {
    return this.#counter;
  }

  /** the node's version for this content: unchanged content keeps its version */
  versionFor(node: string, hash: string): number {
    const cur = this.#nodes.get(node);
    if (cur && cur.hash === hash) return cur.version;
    const version = ++this.#counter;
    this.#nodes.set(node, { version, hash });
    this.#dirty = true;
    return version;
  }

  /**
   * an agent holds a version this control plane never issued (its state directory was
   * lost): jump past it and re-version the node, or the agent would refuse every snapshot
   */
  observe(node: string, agentVersion: number): boolean {
    if (agentVersion <= this.#counter) return false;
    this.#counter = agentVersion;
    this.#nodes.delete(node);
    this.#dirty = true;
    return true;
  }

  flush(): void {
    if (!this.#dirty) return;
    const out: VersionFile = { counter: this.#counter, nodes: Object.fromEntries([...this.#nodes].sort(([a], [b]) => (a < b ? -1 : 1))) };
    writeJsonAtomic(this.path, out);
    this.#dirty = false;
  }
}

/** WireGuard public keys the agents reported, in stateDir/nodes.json, so a restart keeps them */
export class NodeKeys {
  readonly path: string;
  readonly #keys: Record<string, string>;

  constructor(stateDir: string) {
    this.path = join(stateDir, 'nodes.json');
    const raw = readJson(this.path) as { wgPublicKeys?: Record<string, unknown> } | undefined;
    this.#keys = {};
    for (const [node, key] of Object.entries(raw?.wgPublicKeys ?? {})) if (typeof key === 'string') this.#keys[node] = key;
  }

  all(): Record<string, string> {
    return { ...this.#keys };
  }

  /** true when the key is new for this node (and was persisted) */
  set(node: string, key: string): boolean {
    if (key === '' || this.#keys[node] === key) return false;
    this.#keys[node] = key;
    writeJsonAtomic(this.path, { wgPublicKeys: this.#keys });
    return true;
  }
}
