// Gateway API route status for the routes nodal acts on (GAMMA): one status.parents[]
// entry per Service parentRef, controllerName nodal.io/mesh, with the two conditions the
// Gateway API asks every implementation to keep: Accepted (the route is valid and its
// parent exists) and ResolvedRefs (every backendRef names a Service it may use). Entries
// of other controllers (a Gateway's) are kept as they are.
import type { KubeObject } from './kube-http.ts';
import { conditionFor, conditionSays, type Condition, type StatusWant, type Verdict } from './kube-status.ts';
import { isServiceParent } from './kinds-routes.ts';
import type { RouteRefs } from './traffic-refs.ts';

export const CONTROLLER_NAME = 'nodal.io/mesh';

/** what nodal decided about one version of a route */
export type RouteJudgement =
  | { valid: true; refs: RouteRefs }
  /** `message` names the field and says whether a last good version stays in force */
  | { valid: false; message: string };

interface ParentStatus {
  parentRef: Record<string, unknown>;
  controllerName: string;
  conditions: Condition[];
}

const parentsOf = (o: KubeObject): ParentStatus[] => {
  const st = o.status as { parents?: unknown } | undefined;
  return Array.isArray(st?.parents) ? (st.parents as ParentStatus[]) : [];
};
const sameRef = (x: Record<string, unknown>, y: Record<string, unknown>): boolean =>
  (x.group ?? '') === (y.group ?? '') && x.kind === y.kind && x.name === y.name && (x.namespace ?? '') === (y.namespace ?? '') && (x.port ?? 0) === (y.port ?? 0);

/** the parentRef as status echoes it: the fields the user wrote that identify the parent */
function echo(p: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { group: typeof p.group === 'string' ? p.group : '', kind: 'Service', name: p.name };
  if (typeof p.namespace === 'string' && p.namespace !== '') out.namespace = p.namespace;
  if (p.port != null) out.port = p.port;
  return out;
}

/** per Service parentRef of `obj`, in spec order: the verdicts of Accepted and ResolvedRefs */
export function routeVerdicts(obj: KubeObject, j: RouteJudgement | undefined): Array<{ ref: Record<string, unknown>; accepted: Verdict; resolved: Verdict }> {
  const refs = ((obj.spec as { parentRefs?: unknown } | undefined)?.parentRefs);
  const service = (Array.isArray(refs) ? refs : []).filter(isServiceParent) as Array<Record<string, unknown>>;
  if (j === undefined) return [];
  return service.map((p, i) => {
    const ref = echo(p);
    if (!j.valid) {
      return {
        ref,
        accepted: { status: 'False', reason: 'UnsupportedValue', message: j.message },
        resolved: { status: 'False', reason: 'Invalid', message: 'not resolved: the route is invalid' },
      };
    }
    const parentFound = j.refs.parents[i] === true;
    const problems = [...j.refs.backends.values()];
    return {
      ref,
      accepted: parentFound
        ? { status: 'True', reason: 'Accepted', message: 'in force' }
        : { status: 'False', reason: 'NoMatchingParent', message: `Service ${String(p.namespace ?? obj.metadata?.namespace ?? '')}/${String(p.name)} not found` },
      resolved: problems.length === 0
        ? { status: 'True', reason: 'ResolvedRefs', message: 'every backendRef resolves' }
        : { status: 'False', reason: problems[0]!.problem, message: `${problems.map((x) => x.message).join('; ')}; those backends take no traffic and their share of requests gets 500` },
    };
  });
}

/** status.parents with nodal's entries as `j` says and everyone else's untouched */
export function routeStatusWant(obj: KubeObject, j: RouteJudgement | undefined): StatusWant {
  const want = routeVerdicts(obj, j);
  const fingerprint = JSON.stringify(want);
  const ours = (o: KubeObject): ParentStatus[] => parentsOf(o).filter((p) => p.controllerName === CONTROLLER_NAME);
  return {
    fingerprint,
    summary: {
      ok: want.every((w) => w.accepted.status === 'True' && w.resolved.status === 'True'),
      text: want.map((w) => `parent ${String(w.ref.name)}: Accepted=${w.accepted.status} ${w.accepted.reason}, ResolvedRefs=${w.resolved.status} ${w.resolved.reason}`).join('; ') || 'no Service parents',
    },
    satisfiedBy: (o) => {
      const have = ours(o), gen = o.metadata?.generation;
      return have.length === want.length && want.every((w) => {
        const h = have.find((x) => sameRef(x.parentRef ?? {}, w.ref));
        return h !== undefined && conditionSays(h.conditions?.find((c) => c.type === 'Accepted'), w.accepted, gen)
          && conditionSays(h.conditions?.find((c) => c.type === 'ResolvedRefs'), w.resolved, gen);
      });
    },
    status: (o) => {
      const gen = o.metadata?.generation, have = ours(o);
      const mine = want.map((w): ParentStatus => {
        const cur = have.find((x) => sameRef(x.parentRef ?? {}, w.ref))?.conditions ?? [];
        return {
          parentRef: w.ref, controllerName: CONTROLLER_NAME,
          conditions: [
            conditionFor('Accepted', w.accepted, gen, cur.find((c) => c.type === 'Accepted')),
            conditionFor('ResolvedRefs', w.resolved, gen, cur.find((c) => c.type === 'ResolvedRefs')),
          ],
        };
      });
      return { parents: [...parentsOf(o).filter((p) => p.controllerName !== CONTROLLER_NAME), ...mine] };
    },
  };
}
