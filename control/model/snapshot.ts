// Per-node snapshots from the model. The shared part (nodes, identities, endpoints,
// services, policies, routes, traffic policies) is hashed once per rebuild; a node's content hash adds only its
// name and L4 entries, so deciding "did this node's snapshot change" stays cheap.
import { createHash } from 'node:crypto';
import type { Snapshot } from '../api/types.ts';
import { stableStringify } from '../persist.ts';
import type { Model } from './builder.ts';
import { mergeNetworkPolicyL4 } from './networkpolicy.ts';
import { l4ForNode } from './policy.ts';

/** a node's BPF policy entries: MeshPolicy's, merged with NetworkPolicy's when there is any */
export const nodeL4 = (model: Model, node: string) =>
  mergeNetworkPolicyL4(node, model.endpoints, model.identities, l4ForNode(node, model.endpoints, model.policies), model.networkPolicy, model.services);

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

export function modelHash(model: Model): string {
  return sha256(stableStringify(model));
}

/** the node's snapshot without a version, and the hash of its content */
export function snapshotContent(model: Model, sharedHash: string, node: string): { hash: string; snapshot: Snapshot } {
  const l4 = nodeL4(model, node);
  const hash = sha256(`${sharedHash}\n${node}\n${stableStringify(l4)}`);
  return {
    hash,
    snapshot: {
      version: 0, node, trustDomain: model.trustDomain, nodes: model.nodes, identities: model.identities,
      endpoints: model.endpoints, services: model.services, policies: model.policies, l4,
      ...(model.networkPolicy && model.networkPolicy.cidrIdentities.length > 0 ? { cidrIdentities: model.networkPolicy.cidrIdentities } : {}),
      ...(model.networkPolicy ? { networkPolicies: model.networkPolicy.policies.map((p) => ({ id: p.id, namespace: p.namespace, name: p.name })) } : {}),
      ...(model.routes ? { routes: model.routes } : {}),
      ...(model.trafficPolicies ? { trafficPolicies: model.trafficPolicies } : {}),
    },
  };
}
