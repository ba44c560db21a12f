// Routes (Gateway API, GAMMA) and TrafficPolicies → Snapshot.routes / Snapshot.trafficPolicies
// (DESIGN §5). Cluster-wide and small, so every node's snapshot carries all of them: the
// source node's proxy applies a route whatever node the client runs on.
import type { CompiledRoute, CompiledTrafficPolicy } from '../api/types.ts';
import type { RouteObject, ServiceObject, TrafficPolicyObject } from '../cluster/state.ts';
import { routeRefs, serviceKeys, trafficPolicyVerdicts } from '../cluster/traffic-refs.ts';

const cmp = (x: string, y: string): number => (x < y ? -1 : x > y ? 1 : 0);

/**
 * one CompiledRoute per Service parent that exists; a backend whose Service is missing (or
 * in another namespace) keeps its place with weight 0, so its share of requests gets 500
 * as Gateway API asks, instead of going to the other backends. Sorted by parent, then
 * kind, namespace and name; precedence between routes is the proxy's (createdAt is kept).
 */
export function compileRoutes(routes: readonly RouteObject[], services: readonly ServiceObject[]): CompiledRoute[] {
  const known = serviceKeys(services);
  const out: CompiledRoute[] = [];
  for (const r of routes) {
    const refs = routeRefs(r, known);
    const rules = r.rules.map((rule, i) => ({
      ...rule,
      backends: rule.backends.map((b, j) => (refs.backends.has(`${i}/${j}`) ? { ...b, weight: 0 } : b)),
    }));
    r.parents.forEach((parent, p) => {
      if (!refs.parents[p]) return;
      out.push({ kind: r.kind, namespace: r.namespace, name: r.name, parent: { ...parent }, hostnames: [...r.hostnames], rules, createdAt: r.createdAt });
    });
  }
  return out.sort((x, y) => cmp(x.parent.namespace, y.parent.namespace) || cmp(x.parent.name, y.parent.name)
    || (x.parent.port ?? 0) - (y.parent.port ?? 0) || cmp(x.kind, y.kind) || cmp(x.namespace, y.namespace) || cmp(x.name, y.name));
}

/** the TrafficPolicies in force, one per target Service, sorted by target */
export function compileTrafficPolicies(policies: readonly TrafficPolicyObject[], services: readonly ServiceObject[]): CompiledTrafficPolicy[] {
  const verdicts = trafficPolicyVerdicts(policies, serviceKeys(services));
  return policies.filter((p) => verdicts.get(`${p.namespace}/${p.name}`)?.inForce === true)
    .map(({ createdAt: _, ...p }) => p)
    .sort((x, y) => cmp(x.target.namespace, y.target.namespace) || cmp(x.target.name, y.target.name));
}
