import type { DesiredState } from '../../agent/datapath/index.ts';

/** DesiredState as JSON (cgroup ids are bigints) */
export function desiredToJson(d: DesiredState): string {
  return JSON.stringify(d, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}
