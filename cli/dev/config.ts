// The control plane's config directory: one YAML file per object, named
// <Kind>.<namespace>.<name>.yaml (<Kind>.<name>.yaml when cluster-scoped), written
// atomically (temporary dot-file + rename) so the watcher never reads half an object.
import { existsSync, readFileSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { objectFileName } from './manifest.ts';
import type { NodePlan } from './plan.ts';
import { writeFileAtomic } from './state.ts';

export type WriteOutcome = 'created' | 'configured' | 'unchanged';

export function writeObject(configDir: string, kind: string, namespace: string | undefined, name: string, object: unknown): WriteOutcome {
  const file = join(configDir, objectFileName(kind, namespace, name));
  const text = stringify(object, { lineWidth: 0 });
  let before: string | undefined;
  try {
    before = readFileSync(file, 'utf8');
  } catch { /* new */ }
  if (before === text) return 'unchanged';
  writeFileAtomic(file, text);
  return before === undefined ? 'created' : 'configured';
}

export function removeObject(configDir: string, kind: string, namespace: string | undefined, name: string): boolean {
  const file = join(configDir, objectFileName(kind, namespace, name));
  try {
    unlinkSync(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

export function objectExists(configDir: string, kind: string, namespace: string | undefined, name: string): boolean {
  return existsSync(join(configDir, objectFileName(kind, namespace, name)));
}

export interface StoredObject {
  file: string;
  kind: string;
  namespace?: string;
  name: string;
  labels: Record<string, string>;
}

/** what the config directory holds (files the sandbox wrote; others are skipped) */
export function listObjects(configDir: string): StoredObject[] {
  let files: string[];
  try {
    files = readdirSync(configDir).filter((f) => f.endsWith('.yaml') && !f.startsWith('.')).sort();
  } catch {
    return [];
  }
  const out: StoredObject[] = [];
  for (const file of files) {
    try {
      const o = parse(readFileSync(join(configDir, file), 'utf8')) as { kind?: string; metadata?: { name?: string; namespace?: string; labels?: Record<string, string> } };
      if (typeof o?.kind !== 'string' || typeof o.metadata?.name !== 'string') continue;
      out.push({
        file, kind: o.kind, name: o.metadata.name, labels: o.metadata.labels ?? {},
        ...(o.metadata.namespace !== undefined ? { namespace: o.metadata.namespace } : {}),
      });
    } catch { /* being replaced: the rename makes the next read whole */ }
  }
  return out;
}

export function nodeObject(node: NodePlan): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: node.name,
      labels: { 'kubernetes.io/hostname': node.name, 'kubernetes.io/os': 'linux' },
      annotations: { 'nodal.io/tunnel-ip': node.tunnelIp, 'nodal.io/proxy-ip': node.proxyIp },
    },
    spec: { podCIDR: node.podCidr, podCIDRs: [node.podCidr] },
    status: {
      addresses: [{ type: 'InternalIP', address: node.underlayIp }, { type: 'Hostname', address: node.name }],
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  };
}

export function namespaceObject(name: string, labels: Record<string, string> = {}): Record<string, unknown> {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels } } };
}
