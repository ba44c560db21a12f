// Per-node snapshots from the model. The shared part (nodes, identities, endpoints,
// services, policies) is hashed once per rebuild; a node's content hash adds only its
// name and L4 entries, so deciding "did this node's snapshot change" stays cheap.
import { createHash } from 'node:crypto';
import type { L4Entry, Snapshot } from '../api/types.ts';
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

/**
 * stableStringify(l4), byte for byte (so hashes, and therefore versions, are unchanged),
 * without the replacer's per-object sorted copies: at 1,000 nodes × tens of thousands of
 * entries that was most of a rebuild. Entries are flat objects of primitives.
 */
function l4Text(l4: readonly L4Entry[]): string {
  const parts: string[] = new Array<string>(l4.length);
  for (let i = 0; i < l4.length; i++) {
    const e = l4[i] as unknown as Record<string, unknown>;
    let t = '';
    for (const k of Object.keys(e).sort()) {
      const v = e[k];
      if (v === undefined) continue;
      if (typeof v === 'object' && v !== null) return stableStringify(l4);
      t += `${t === '' ? '' : ','}${JSON.stringify(k)}:${JSON.stringify(v)}`;
    }
    parts[i] = `{${t}}`;
  }
  return `[${parts.join(',')}]`;
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
      ...(model.networkPolicy && model.networkPolicy.cidrIdentities.length > 0 ? { cidrIdentities: model.networkPolicy.cidrIdentities } : {}),
      ...(model.networkPolicy ? { networkPolicies: model.networkPolicy.policies.map((p) => ({ id: p.id, namespace: p.namespace, name: p.name })) } : {}),
    },
  };
}
