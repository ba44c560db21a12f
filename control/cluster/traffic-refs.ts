// What a route's and a TrafficPolicy's references resolve to in the cluster as it is now:
// the part of validation that depends on other objects (a Service that does not exist
// yet is not an error in the object). The model compiles from it (control/model/traffic.ts)
// and the Kubernetes source reports it in status (Gateway API ResolvedRefs, Accepted).
import type { ServiceRef } from '../api/types.ts';
import type { RouteObject, ServiceObject, TrafficPolicyObject } from './state.ts';

export const serviceKey = (r: ServiceRef): string => `${r.namespace}/${r.name}`;
export const serviceKeys = (services: readonly ServiceObject[]): Set<string> => new Set(services.map(serviceKey));

/** why a backendRef takes no traffic (Gateway API ResolvedRefs reasons) */
export type BackendProblem = 'BackendNotFound' | 'RefNotPermitted';

export interface RouteRefs {
  /** per parent, in route.parents order: whether the Service exists */
  parents: boolean[];
  /** `rule/backend` index → what is wrong with that backendRef; absent ones resolve */
  backends: Map<string, { problem: BackendProblem; message: string }>;
}

export function routeRefs(route: RouteObject, services: ReadonlySet<string>): RouteRefs {
  const backends = new Map<string, { problem: BackendProblem; message: string }>();
  route.rules.forEach((rule, i) => rule.backends.forEach((b, j) => {
    const at = `spec.rules[${i}].backendRefs[${j}]`;
    if (b.service.namespace !== route.namespace) {
      // a cross-namespace backendRef needs a ReferenceGrant, which nodal does not read
      backends.set(`${i}/${j}`, { problem: 'RefNotPermitted', message: `${at}: Service ${serviceKey(b.service)} is in another namespace (ReferenceGrant is not supported)` });
    } else if (!services.has(serviceKey(b.service))) {
      backends.set(`${i}/${j}`, { problem: 'BackendNotFound', message: `${at}: Service ${serviceKey(b.service)} not found` });
    }
  }));
  return { parents: route.parents.map((p) => services.has(serviceKey(p))), backends };
}

/** createdAt, then namespace/name: Gateway API's order for conflicting policies and route precedence */
export const olderFirst = (x: { createdAt: string; namespace: string; name: string }, y: { createdAt: string; namespace: string; name: string }): number =>
  x.createdAt !== y.createdAt ? (x.createdAt < y.createdAt ? -1 : 1)
    : x.namespace !== y.namespace ? (x.namespace < y.namespace ? -1 : 1)
      : x.name < y.name ? -1 : x.name > y.name ? 1 : 0;

export type TrafficPolicyVerdict = { inForce: true } | { inForce: false; reason: 'TargetNotFound' | 'Conflicted'; message: string };

/**
 * per TrafficPolicy (keyed namespace/name): in force, or why not. One policy per Service:
 * of several targeting the same one, the oldest wins (Gateway API policy attachment).
 */
export function trafficPolicyVerdicts(policies: readonly TrafficPolicyObject[], services: ReadonlySet<string>): Map<string, TrafficPolicyVerdict> {
  const out = new Map<string, TrafficPolicyVerdict>();
  const winner = new Map<string, TrafficPolicyObject>();
  for (const p of [...policies].sort(olderFirst)) {
    const key = `${p.namespace}/${p.name}`, target = serviceKey(p.target);
    const first = winner.get(target);
    if (!services.has(target)) out.set(key, { inForce: false, reason: 'TargetNotFound', message: `spec.targetRef: Service ${target} not found` });
    else if (first) out.set(key, { inForce: false, reason: 'Conflicted', message: `spec.targetRef: Service ${target} already has TrafficPolicy ${first.name}, which is older` });
    else {
      winner.set(target, p);
      out.set(key, { inForce: true });
    }
  }
  return out;
}
