// Workload identity (DESIGN §4): namespace + service account + the labels that describe
// the workload. Labels that change with every rollout or name a single pod are dropped,
// otherwise each rollout would mint new identities and churn every node's policy map.

/** labels that vary per rollout or per pod and so say nothing about who a workload is */
const NON_IDENTITY_LABELS = new Set([
  'pod-template-hash',
  'controller-revision-hash',
  'statefulset.kubernetes.io/pod-name',
  'pod-template-generation',
  'apps.kubernetes.io/pod-index',
  'batch.kubernetes.io/controller-uid',
  'controller-uid',
  'batch.kubernetes.io/job-name',
  'job-name',
]);

/** nodal's own labels (nodal.io/mesh) steer enrollment and must not change who a pod is */
const NODAL_PREFIX = 'nodal.io/';

export function identityLabels(labels: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(labels).sort()) {
    if (NON_IDENTITY_LABELS.has(k) || k.startsWith(NODAL_PREFIX)) continue;
    out[k] = labels[k]!;
  }
  return out;
}

/** the allocation key: stable text for (namespace, service account, identity labels) */
export function identityKey(namespace: string, serviceAccount: string, labels: Record<string, string>): string {
  const l = identityLabels(labels);
  return JSON.stringify([namespace, serviceAccount, Object.keys(l).map((k) => [k, l[k]])]);
}

export const spiffeId = (trustDomain: string, namespace: string, serviceAccount: string): string =>
  `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;

/** labels ⊇ selector; an empty selector selects everything */
export function matchesLabels(selector: Record<string, string>, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}
