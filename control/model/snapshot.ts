// Per-node snapshots from the model. The shared part (nodes, identities, endpoints,
// services, policies, routes, traffic policies) is hashed once per rebuild; a node's content hash adds only its
// name and L4 entries, so deciding "did this node's snapshot change" stays cheap.
import { createHash } from 'node:crypto';
import type { L4Entry, Snapshot } from '../api/types.ts';
import { fingerprint } from '../persist.ts';
import type { Model } from './builder.ts';
import { mergeNetworkPolicyL4 } from './networkpolicy.ts';
import { l4ForNode } from './policy.ts';

/** a node's BPF policy entries: MeshPolicy's, merged with NetworkPolicy's when there is any */
export const nodeL4 = (model: Model, node: string) =>
  mergeNetworkPolicyL4(node, model.endpoints, model.identities, l4ForNode(node, model.endpoints, model.policies), model.networkPolicy, model.services, model.guards);

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

/** the model's content, from the fingerprints of its parts (each computed once per part object) */
export function modelHash(model: Model): string {
  const parts = Object.keys(model).sort().map((k) => {
    const v = (model as unknown as Record<string, unknown>)[k];
    return `${k}=${v !== null && typeof v === 'object' ? fingerprint(v) : JSON.stringify(v)}`;
  });
  return sha256(parts.join('\n'));
}

/** the parts of the model a rebuild may share with the previous one: per-node snapshots carry them as they are */
const SHARED_PARTS = ['nodes', 'identities', 'endpoints', 'services', 'policies', 'guards', 'routes', 'trafficPolicies'] as const;

/**
 * `next` with every part whose content equals `prev`'s replaced by `prev`'s own object:
 * equal parts are then the same arrays across versions, so what is derived per array
 * (the policy and endpoint indexes, section digests, encoded snapshot bytes) carries over
 * instead of being computed again, e.g. everything but the policies after a policy change.
 */
export function shareUnchanged(next: Model, prev: Model | undefined): Model {
  if (!prev) return next;
  const out = { ...next };
  for (const k of SHARED_PARTS) {
    const a = next[k];
    const b = prev[k];
    // routes and traffic policies are absent when there are none: nothing to share
    if (a !== undefined && b !== undefined && fingerprint(a) === fingerprint(b)) (out as Record<string, unknown>)[k] = b;
  }
  return out;
}

/**
 * Every field of an L4 entry, in a fixed order: a node's hash input. 300,000 entries a
 * rebuild at 1,000 nodes made stableStringify (a key sort per object) the largest part of
 * it. The type below fails to compile when L4Entry gains a field this list lacks, which
 * would otherwise leave a change of that field unseen.
 */
const L4_FIELDS = ['direction', 'localIdentity', 'peerIdentity', 'port', 'proto', 'action', 'policyId', 'rule', 'defaultDeny', 'toProxy'] as const;
const everyL4Field: [Exclude<keyof L4Entry, typeof L4_FIELDS[number]>] extends [never] ? true : never = true;
function l4Text(l4: readonly L4Entry[]): string {
  let out = '';
  for (const e of l4) {
    for (const k of L4_FIELDS) out += `${e[k] ?? '-'},`;
    out += '\n';
  }
  return out;
}

/** the node's snapshot without a version, and the hash of its content */
export function snapshotContent(model: Model, sharedHash: string, node: string): { hash: string; snapshot: Snapshot } {
  const l4 = nodeL4(model, node);
  const hash = sha256(`${sharedHash}\n${node}\n${l4Text(l4)}`);
  return {
    hash,
    snapshot: {
      version: 0, node, trustDomain: model.trustDomain, nodes: model.nodes, identities: model.identities,
      endpoints: model.endpoints, services: model.services, policies: model.policies, l4,
      ...(model.guards.length > 0 ? { guards: model.guards } : {}),
      ...(model.networkPolicy && model.networkPolicy.cidrIdentities.length > 0 ? { cidrIdentities: model.networkPolicy.cidrIdentities } : {}),
      ...(model.networkPolicy ? { networkPolicies: model.networkPolicy.policies.map((p) => ({ id: p.id, namespace: p.namespace, name: p.name })) } : {}),
      ...(model.routes ? { routes: model.routes } : {}),
      ...(model.trafficPolicies ? { trafficPolicies: model.trafficPolicies } : {}),
    },
  };
}
