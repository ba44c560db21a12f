// Numbers shared with bpf/api/nodal.h, named in the mesh's own words.
// test/unit/datapath-constants.test.ts reads the header and checks every one.

export const Identity = { ANY: 0, HOST: 1, WORLD: 2, UNMANAGED: 3, HEALTH: 4, FIRST_ALLOCATED: 256 } as const;

export const EndpointFlag = { ENROLLED: 1, EGRESS_ENFORCED: 2, INGRESS_ENFORCED: 4 } as const;

export const Direction = { EGRESS: 1, INGRESS: 2 } as const;
export type DirectionName = 'EGRESS' | 'INGRESS';

export const PolicyAction = { ALLOW: 1, DENY: 2 } as const;
export const PolicyFlag = { DEFAULT_DENY: 1, TO_PROXY: 2 } as const;
export type PolicyActionName = 'ALLOW' | 'DENY';

export const Proto = { TCP: 6, UDP: 17 } as const;

/** Hubble's flow.Verdict numbers */
export const Verdict = { FORWARDED: 1, DROPPED: 2, REDIRECTED: 5 } as const;
export type VerdictName = 'FORWARDED' | 'DROPPED' | 'REDIRECTED' | 'UNKNOWN';

export const Reason = {
  NONE: 0, POLICY_DENY: 1, DEFAULT_DENY: 2, NOT_FROM_PROXY: 3, POLICY_ALLOW: 4, DEFAULT_ALLOW: 5, UNSUPPORTED_L3: 6, TO_PROXY: 7,
} as const;
export type ReasonName = keyof typeof Reason | 'UNKNOWN';

export const Hook = { CONNECT4: 1, CONNECT6: 2, INGRESS: 3 } as const;
export type HookName = 'connect4' | 'connect6' | 'ingress' | 'unknown';

export const Counter = { DROP_CONNECT: 0, DROP_INGRESS: 1, EVENTS_LOST: 2, REDIRECTS: 3, MAX: 8 } as const;

export const MapName = {
  endpoints: 'nodal_endpoints',
  ipcache: 'nodal_ipcache',
  services: 'nodal_services',
  policy: 'nodal_policy',
  guards: 'nodal_dst_guard',
  redirectsByCookie: 'nodal_redir_ck',
  redirectsBySocket: 'nodal_redir_sk',
  events: 'nodal_events',
  counters: 'nodal_counters',
} as const;

function nameOf<T extends Record<string, number>>(table: T, n: number): keyof T | 'UNKNOWN' {
  for (const k of Object.keys(table)) if (table[k] === n) return k;
  return 'UNKNOWN';
}
export const verdictName = (n: number): VerdictName => nameOf(Verdict, n) as VerdictName;
export const reasonName = (n: number): ReasonName => nameOf(Reason, n) as ReasonName;
export const hookName = (n: number): HookName =>
  n === Hook.CONNECT4 ? 'connect4' : n === Hook.CONNECT6 ? 'connect6' : n === Hook.INGRESS ? 'ingress' : 'unknown';
