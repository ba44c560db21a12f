// Standalone source: a directory of Kubernetes-style YAML files, watched for changes.
// Rejection is per object: an invalid document keeps the last good version of the object
// it names, and a file that does not parse keeps every object last seen from it, so a
// half-saved file or a typo never lifts a policy that is in force.
import { readdirSync, readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { parseAllDocuments } from 'yaml';
import { ConfigError, ConfigSourceError } from '../errors.ts';
import { stableStringify } from '../persist.ts';
import { parseDocument, type Typed } from './kinds.ts';
import { emptyClusterState, type ClusterState } from './state.ts';

/** what any source (directory today, Kubernetes informers later) offers the control plane */
export interface ClusterSource {
  /** loads the initial state before resolving; onChange fires after each later change */
  start(onChange: () => void): Promise<void>;
  state(): ClusterState;
  /** currently rejected documents */
  errors(): ConfigError[];
  close(): Promise<void>;
}

export interface DirectorySourceOptions {
  dir: string;
  logger: Logger;
  /** editors save with several writes and renames: wait for the burst to settle */
  debounceMs?: number;
  /** fs.watch can miss events (network filesystems, a replaced directory): rescan anyway */
  rescanMs?: number;
}

interface Held {
  file: string;
  display: string;
  object: Typed;
}

const YAML_FILE = /\.ya?ml$/;

export class DirectorySource implements ClusterSource {
  readonly #dir: string;
  readonly #log: Logger;
  readonly #debounceMs: number;
  readonly #rescanMs: number;
  /** the objects in force, keyed kind/namespace/name */
  #held = new Map<string, Held>();
  #state: ClusterState = emptyClusterState();
  #stateKey = stableStringify(this.#state);
  #errors: ConfigError[] = [];
  #watcher: FSWatcher | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #rescan: NodeJS.Timeout | undefined;
  #onChange: () => void = () => {};

  constructor(opts: DirectorySourceOptions) {
    this.#dir = opts.dir;
    this.#log = opts.logger.child({ component: 'directory-source', dir: opts.dir });
    this.#debounceMs = opts.debounceMs ?? 100;
    this.#rescanMs = opts.rescanMs ?? 10_000;
  }

  async start(onChange: () => void): Promise<void> {
    try {
      if (!statSync(this.#dir).isDirectory()) throw new Error('not a directory');
    } catch (err) {
      throw new ConfigSourceError(`config directory ${this.#dir}: ${(err as Error).message}`, { cause: err });
    }
    this.scan();
    this.#onChange = onChange;
    try {
      this.#watcher = watch(this.#dir, { persistent: false }, () => this.#schedule());
      this.#watcher.on('error', (err) => this.#log.warn({ err }, 'watch failed; relying on the periodic rescan'));
    } catch (err) {
      this.#log.warn({ err }, 'cannot watch the directory; relying on the periodic rescan');
    }
    this.#rescan = setInterval(() => this.scan(), this.#rescanMs);
    this.#rescan.unref();
  }

  state(): ClusterState {
    return this.#state;
  }

  errors(): ConfigError[] {
    return [...this.#errors];
  }

  async close(): Promise<void> {
    this.#watcher?.close();
    clearTimeout(this.#debounce);
    clearInterval(this.#rescan);
    this.#onChange = () => {};
  }

  #schedule(): void {
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => this.scan(), this.#debounceMs);
    this.#debounce.unref();
  }

  /** read every file again and recompute the objects in force; public so tests need not wait */
  scan(): void {
    let files: string[];
    try {
      files = readdirSync(this.#dir).filter((f) => YAML_FILE.test(f)).sort();
    } catch (err) {
      // the directory vanished or is unreadable: keep everything in force until it returns
      this.#log.error({ err }, 'cannot read the config directory; keeping the last good state');
      return;
    }
    const next = new Map<string, Held>();
    const errors: ConfigError[] = [];
    /** keys whose document is invalid now: their last good version stays if nothing replaces it */
    const keep = new Set<string>();

    for (const f of files) {
      const file = join(this.#dir, f);
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed since readdir
        errors.push(new ConfigError(file, undefined, undefined, `cannot read: ${(err as Error).message}`));
        for (const [k, h] of this.#held) if (h.file === file) keep.add(k);
        continue;
      }
      const docs = parseAllDocuments(text);
      const list = Array.isArray(docs) ? docs : [];
      const broken = list.flatMap((d) => d.errors);
      if (broken.length > 0) {
        const e = broken[0]!;
        const at = e.linePos?.[0] ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : undefined;
        errors.push(new ConfigError(file, undefined, at, `YAML syntax error: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`));
        for (const [k, h] of this.#held) if (h.file === file) keep.add(k);
        continue;
      }
      list.forEach((doc, i) => {
        const parsed = parseDocument(doc.toJS(), file, i);
        if (parsed.result === 'skip') {
          this.#log.debug({ file, document: i + 1 }, `ignored: ${parsed.reason}`);
        } else if (parsed.result === 'error') {
          errors.push(parsed.error);
          if (parsed.key !== undefined) keep.add(parsed.key);
        } else {
          const first = next.get(parsed.key);
          if (first) {
            errors.push(new ConfigError(file, parsed.display, 'metadata.name', `duplicate: already defined in ${first.file}`));
          } else {
            next.set(parsed.key, { file, display: parsed.display, object: parsed.object });
          }
        }
      });
    }
    for (const k of keep) {
      const old = this.#held.get(k);
      if (old && !next.has(k)) next.set(k, old);
    }
    this.#commit(next, errors);
  }

  #commit(next: Map<string, Held>, errors: ConfigError[]): void {
    const known = new Set(this.#errors.map((e) => e.message));
    for (const e of errors) {
      if (!known.has(e.message)) this.#log.error({ code: e.code, file: e.file, object: e.object, field: e.field }, `rejected: ${e.message}`);
    }
    const errorsChanged = stableStringify(errors.map((e) => e.message)) !== stableStringify(this.#errors.map((e) => e.message));
    this.#errors = errors;
    this.#held = next;

    const state = emptyClusterState();
    for (const k of [...next.keys()].sort()) {
      const o = next.get(k)!.object;
      switch (o.kind) {
        case 'Namespace': state.namespaces.push(o.value); break;
        case 'Pod': state.pods.push(o.value); break;
        case 'Service': state.services.push(o.value); break;
        case 'Node': state.nodes.push(o.value); break;
        case 'MeshPolicy': state.policies.push(o.value); break;
        case 'NetworkPolicy': (state.networkPolicies ??= []).push(o.value); break;
        case 'HTTPRoute': case 'GRPCRoute': (state.routes ??= []).push(o.value); break;
        case 'TrafficPolicy': (state.trafficPolicies ??= []).push(o.value); break;
      }
    }
    const key = stableStringify(state);
    const stateChanged = key !== this.#stateKey;
    this.#state = state;
    this.#stateKey = key;
    if (stateChanged) this.#log.info({ objects: next.size, errors: errors.length }, 'configuration changed');
    if (stateChanged || errorsChanged) this.#onChange();
  }
}
