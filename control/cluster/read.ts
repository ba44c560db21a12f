// Reading helpers for documents that already passed their schema (schema.ts), shared by
// the kind tables (kinds.ts, kinds-routes.ts, kinds-trafficpolicy.ts): they read without
// re-checking types, and keep the compiled model's one spelling for "not set" (absent,
// never undefined or []).
import { isMapping } from './schema.ts';

export type Doc = Record<string, unknown>;

export const m = (v: unknown): Doc => (isMapping(v) ? v : {});
export const s = (v: unknown, dflt = ''): string => (typeof v === 'string' ? v : dflt);
export const a = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
/** empty lists become absent: the compiled model has one spelling for "not set" */
export const strList = (v: unknown): string[] | undefined => (Array.isArray(v) && v.length > 0 ? [...(v as string[])] : undefined);
/** drops undefined members so optional fields stay absent, not present-and-undefined */
export const compact = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

/** what a convert step returns instead of a value when a field is wrong */
export interface Problem { path: string; reason: string }
export const isProblem = (v: unknown): v is Problem => isMapping(v) && typeof v.path === 'string' && typeof v.reason === 'string' && Object.keys(v).length === 2;

/** Gateway API Duration (GEP-2257): 1 to 4 groups of up to 5 digits and a unit, e.g. 1m30s, 250ms */
const DURATION = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/;
const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1_000, ms: 1 };

/** a Gateway API duration in milliseconds, or undefined when `text` is not one */
export function durationMs(text: string): number | undefined {
  if (!DURATION.test(text)) return undefined;
  let total = 0;
  for (const [, n, unit] of text.matchAll(/([0-9]+)(ms|h|m|s)/g)) total += Number(n) * UNIT_MS[unit!]!;
  return total;
}

/** the duration at `path` (a string the schema let through), or a problem naming the field */
export function readDuration(v: unknown, path: string): number | Problem {
  const ms = durationMs(s(v));
  return ms === undefined ? { path, reason: `${JSON.stringify(v)} is not a duration (1 to 4 groups of digits and a unit h, m, s or ms, e.g. 10s, 500ms, 1m30s)` } : ms;
}
