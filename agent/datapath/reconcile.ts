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
  for (const key of map.keys()) {
    if (!desired.has(key.toString('hex'))) {
      if (map.delete(key)) diff.removed++;
    }
  }
  return diff;
}
