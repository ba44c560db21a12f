// Names in an Explain request → the model's endpoints and Services, and, when a name does
// not exist, the names that come closest, so a typo costs one retry instead of a search.
import type { EndpointInfo, ServiceInfo } from '../api/types.ts';
import { AdminErrorCode, ExplainError } from './errors.ts';

export interface Ref {
  /** chosen with a pod: / svc: prefix; undefined = whichever exists */
  kind?: 'pod' | 'service';
  namespace: string;
  name: string;
}

const KIND_PREFIX: Record<string, 'pod' | 'service'> = { 'pod:': 'pod', 'svc:': 'service', 'service:': 'service' };
/** DNS-1123 label/subdomain characters: what a namespace or object name can hold */
const NAME = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/;
/** suggestions shown at most: enough to spot the right one, short enough to read */
const MAX_SUGGESTIONS = 5;

/** `ns/name`, optionally `pod:ns/name` or `svc:ns/name` */
export function parseRef(flag: string, text: string, what: string, candidates: readonly string[]): Ref {
  let s = text.trim();
  let kind: Ref['kind'];
  for (const [prefix, k] of Object.entries(KIND_PREFIX)) {
    if (s.startsWith(prefix)) {
      kind = k;
      s = s.slice(prefix.length);
      break;
    }
  }
  const parts = s.split('/');
  if (parts.length !== 2 || !NAME.test(parts[0]!) || !NAME.test(parts[1]!)) {
    // a bare name: say which namespaces hold it
    const bare = parts.length === 1 && NAME.test(s) ? candidates.filter((c) => c.endsWith(`/${s}`)) : [];
    const hint = bare.length > 0 ? ` (did you mean ${bare.slice(0, MAX_SUGGESTIONS).join(', ')}?)` : '';
    throw new ExplainError(AdminErrorCode.INVALID, `${flag}: "${text}" is not ${what}${hint}`, bare.slice(0, MAX_SUGGESTIONS));
  }
  return { ...(kind ? { kind } : {}), namespace: parts[0]!, name: parts[1]! };
}

export const refText = (r: { namespace: string; name: string }): string => `${r.namespace}/${r.name}`;

export function findEndpoint(endpoints: readonly EndpointInfo[], r: Ref): EndpointInfo | undefined {
  return endpoints.find((e) => e.namespace === r.namespace && e.name === r.name);
}

export function findService(services: readonly ServiceInfo[], r: Ref): ServiceInfo | undefined {
  return services.find((s) => s.namespace === r.namespace && s.name === r.name);
}

/**
 * "no pod demo/frontnd (did you mean demo/frontend?)": close matches by edit distance,
 * the same name in another namespace, or a name that contains the other; with none, the
 * pods of that namespace, or the namespaces that have any.
 */
export function notFound(flag: string, what: string, r: Ref, candidates: readonly string[]): ExplainError {
  const wanted = refText(r);
  const close = closeMatches(wanted, candidates);
  let hint: string;
  if (close.length > 0) {
    hint = ` (did you mean ${close.join(', ')}?)`;
  } else {
    const inNs = candidates.filter((c) => c.startsWith(`${r.namespace}/`)).sort();
    if (inNs.length > 0) {
      hint = `; ${what}s in ${r.namespace}: ${inNs.slice(0, MAX_SUGGESTIONS * 2).map((c) => c.slice(r.namespace.length + 1)).join(', ')}`
        + (inNs.length > MAX_SUGGESTIONS * 2 ? `, … (${inNs.length} in all)` : '');
    } else {
      const namespaces = [...new Set(candidates.map((c) => c.split('/')[0]!))].sort();
      hint = namespaces.length > 0 ? `; namespace ${r.namespace} has none (namespaces that have: ${namespaces.join(', ')})` : '; the cluster has none';
    }
  }
  return new ExplainError(AdminErrorCode.NOT_FOUND, `${flag}: no ${what} ${wanted}${hint}`, close);
}

export function closeMatches(wanted: string, candidates: readonly string[]): string[] {
  const [wns = '', wname = ''] = wanted.split('/');
  const scored: Array<{ c: string; score: number }> = [];
  for (const c of new Set(candidates)) {
    if (c === wanted) continue;
    const [ns = '', name = ''] = c.split('/');
    const d = distance(wanted, c);
    let score: number | undefined;
    if (name === wname) score = 0; // the right pod in another namespace
    else if (d <= Math.max(2, Math.floor(wanted.length / 4))) score = d;
    else if (ns === wns && wname.length >= 3 && (name.includes(wname) || wname.includes(name))) score = 10;
    if (score !== undefined) scored.push({ c, score });
  }
  return scored.sort((a, b) => a.score - b.score || (a.c < b.c ? -1 : 1)).slice(0, MAX_SUGGESTIONS).map((s) => s.c);
}

/** Levenshtein distance, two rows */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  let cur = new Array<number>(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length]!;
}
