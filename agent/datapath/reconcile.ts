// Makes one map hold exactly the desired entries: deletes what is extra, writes what is
// missing or different, leaves equal entries alone (so a reconcile of an unchanged
// state writes nothing and in-flight lookups never see a gap).
import type { Entries } from './state.ts';

/** the slice of a BPF map the reconciler needs; the native BpfMap satisfies it */
export interface ReconcilableMap {
  readonly name: string;
  keys(): Buffer[];
  lookup(key: Buffer): Buffer | undefined;
  update(key: Buffer, value: Buffer): void;
  delete(key: Buffer): boolean;
}

export interface MapDiff { added: number; updated: number; removed: number }

export function reconcileMap(map: ReconcilableMap, desired: Entries): MapDiff {
  const diff: MapDiff = { added: 0, updated: 0, removed: 0 };
  // write first, delete after: a key that moves never disappears in between
  writeMap(map, desired, diff);
  pruneMap(map, desired, diff);
  return diff;
}

/**
 * Maps whose entries answer one lookup together, reconciled as one: every write (in the
 * order given), then every delete (in the reverse order). For policy entries and the
 * guards behind them, [policy, guards]: an admit entry is in place before the guard that
 * needs it, and a guard goes before the entries that only made exceptions to it, so no
 * connection is refused or admitted in between that neither state would.
 */
export function reconcileTogether(pairs: ReadonlyArray<readonly [ReconcilableMap, Entries]>): MapDiff[] {
  const diffs = pairs.map((): MapDiff => ({ added: 0, updated: 0, removed: 0 }));
  pairs.forEach(([map, desired], i) => writeMap(map, desired, diffs[i]!));
  for (let i = pairs.length - 1; i >= 0; i--) pruneMap(pairs[i]![0], pairs[i]![1], diffs[i]!);
  return diffs;
}

function writeMap(map: ReconcilableMap, desired: Entries, diff: MapDiff): void {
  for (const { key, value } of desired.values()) {
    const cur = map.lookup(key);
    if (cur === undefined) {
      map.update(key, value);
      diff.added++;
    } else if (!cur.equals(value)) {
      map.update(key, value);
      diff.updated++;
    }
  }
}

function pruneMap(map: ReconcilableMap, desired: Entries, diff: MapDiff): void {
  for (const key of map.keys()) {
    if (!desired.has(key.toString('hex'))) {
      if (map.delete(key)) diff.removed++;
    }
  }
}
