// Kubernetes-shaped YAML for the sandbox: parsed and validated once, here, at the edge.
// Every problem names the file, the line, the object and the field, and all problems of
// a batch are reported together so one run shows everything there is to fix.
import { LineCounter, parseAllDocuments } from 'yaml';
import { ManifestError } from './errors.ts';
import { CLUSTER_CIDR, cidrContains, isIpv4 } from './plan.ts';

/** the kinds the mesh reads (DESIGN §7), with the API versions accepted for each */
export const KINDS: Readonly<Record<string, { apiVersions: readonly string[]; namespaced: boolean }>> = {
  Namespace: { apiVersions: ['v1'], namespaced: false },
  Pod: { apiVersions: ['v1'], namespaced: true },
  Service: { apiVersions: ['v1'], namespaced: true },
  ServiceAccount: { apiVersions: ['v1'], namespaced: true },
  NetworkPolicy: { apiVersions: ['networking.k8s.io/v1'], namespaced: true },
  MeshPolicy: { apiVersions: ['nodal.io/v1alpha1'], namespaced: true },
  TrafficPolicy: { apiVersions: ['nodal.io/v1alpha1'], namespaced: true },
  HTTPRoute: { apiVersions: ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1beta1'], namespaced: true },
  GRPCRoute: { apiVersions: ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1alpha2'], namespaced: true },
};

/** a pod annotation asking the sandbox's IPAM for one address (as Calico's ipAddrs does) */
export const POD_IP_ANNOTATION = 'sandbox.nodal.io/ip';

/** downward-API fields a container env may reference through valueFrom.fieldRef */
export const FIELD_PATHS = [
  'metadata.name', 'metadata.namespace', 'metadata.uid', 'spec.nodeName',
  'spec.serviceAccountName', 'status.podIP', 'status.hostIP',
] as const;
export type FieldPath = (typeof FIELD_PATHS)[number];

export type EnvVar = { name: string; value: string } | { name: string; fieldPath: FieldPath };

export interface ContainerView {
  name: string;
  command: string[];
  args: string[];
  env: EnvVar[];
}

export interface PodView {
  nodeName?: string;
  serviceAccountName: string;
  containers: ContainerView[];
  /** from the sandbox.nodal.io/ip annotation */
  requestedIp?: string;
}

export interface ServiceView {
  /** as written; undefined = allocate one */
  clusterIp?: string;
}

export interface Manifest {
  apiVersion: string;
  kind: string;
  /** undefined for cluster-scoped kinds */
  namespace?: string;
  name: string;
  labels: Record<string, string>;
  /** the document as written, with metadata.namespace filled in */
  object: Record<string, unknown>;
  /** where it came from, for messages: file:line */
  source: string;
  pod?: PodView;
  service?: ServiceView;
}

/** Kind/namespace/name, or Kind/name for cluster-scoped kinds */
export function objectKey(m: { kind: string; namespace?: string | undefined; name: string }): string {
  return m.namespace === undefined ? `${m.kind}/${m.name}` : `${m.kind}/${m.namespace}/${m.name}`;
}

/** the file the object is written to in the control plane's config directory */
export function objectFileName(kind: string, namespace: string | undefined, name: string): string {
  return namespace === undefined ? `${kind}.${name}.yaml` : `${kind}.${namespace}.${name}.yaml`;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

type Json = Record<string, unknown>;

function isMap(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** collects problems for one document, each prefixed with where and what it is */
class Report {
  readonly problems: string[] = [];
  private readonly at: string;
  private readonly doc: string;
  private what = '';
  constructor(at: string, doc: string) {
    this.at = at;
    this.doc = doc;
  }
  /** name the object once its kind and name are known */
  describe(what: string): void {
    this.what = `, ${what}`;
  }
  fail(field: string, message: string): void {
    this.problems.push(`${this.at} (${this.doc}${this.what}): ${field}: ${message}`);
  }
}

/** parse every document of one file; throws ManifestError listing all problems */
export function parseManifests(text: string, file: string): Manifest[] {
  const lineCounter = new LineCounter();
  const problems: string[] = [];
  const out: Manifest[] = [];
  let index = 0;
  for (const doc of parseAllDocuments(text, { lineCounter })) {
    index++;
    const line = lineCounter.linePos(doc.contents?.range[0] ?? doc.range[0]).line;
    const at = `${file}:${line}`;
    if (doc.errors.length > 0) {
      for (const e of doc.errors) problems.push(`${at} (document ${index}): YAML: ${e.message.split('\n')[0]}`);
      continue;
    }
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue; // an empty document, e.g. a trailing ---
    const items = isMap(value) && value.kind === 'List' && Array.isArray(value.items) ? value.items as unknown[] : [value];
    items.forEach((item, i) => {
      const report = new Report(at, item !== value ? `document ${index} items[${i}]` : `document ${index}`);
      const m = parseObject(item, report, at);
      problems.push(...report.problems);
      if (m && report.problems.length === 0) out.push(m);
    });
  }
  if (problems.length > 0) throw new ManifestError(problems);
  return out;
}

function parseObject(value: unknown, r: Report, source: string): Manifest | undefined {
  if (!isMap(value)) {
    r.fail('(document)', 'must be a mapping with apiVersion, kind and metadata');
    return undefined;
  }
  const object = structuredClone(value);
  const kind = object.kind;
  const apiVersion = object.apiVersion;
  const meta = object.metadata;
  const name = isMap(meta) ? meta.name : undefined;
  const nsGiven = isMap(meta) ? meta.namespace : undefined;
  r.describe(`${typeof kind === 'string' ? kind : '<no kind>'} ${typeof nsGiven === 'string' ? `${nsGiven}/` : ''}${typeof name === 'string' ? name : '<no name>'}`);

  if (typeof kind !== 'string' || kind === '') {
    r.fail('kind', 'is required');
    return undefined;
  }
  if (kind === 'Node') {
    r.fail('kind', 'Node objects are owned by the sandbox: choose the node count with `nodal dev up --nodes N` and place pods with spec.nodeName');
    return undefined;
  }
  const spec = KINDS[kind];
  if (!spec) {
    r.fail('kind', `"${kind}" is not something the sandbox applies (supported: ${Object.keys(KINDS).join(', ')})`);
    return undefined;
  }
  if (typeof apiVersion !== 'string' || !spec.apiVersions.includes(apiVersion)) {
    r.fail('apiVersion', `must be ${spec.apiVersions.map((v) => `"${v}"`).join(' or ')} for ${kind}${typeof apiVersion === 'string' ? `, got "${apiVersion}"` : ''}`);
  }
  if (!isMap(meta)) {
    r.fail('metadata', 'is required (a mapping with at least name)');
    return undefined;
  }
  const nameRule = kind === 'Namespace' || kind === 'Service' ? DNS_LABEL : DNS_SUBDOMAIN;
  if (typeof name !== 'string' || !nameRule.test(name)) {
    r.fail('metadata.name', `must be a ${nameRule === DNS_LABEL ? 'DNS label (lowercase letters, digits, -; at most 63)' : 'DNS subdomain (lowercase letters, digits, - and .)'}${typeof name === 'string' ? `, got "${name}"` : ''}`);
    return undefined;
  }
  let namespace: string | undefined;
  if (spec.namespaced) {
    namespace = nsGiven === undefined ? 'default' : nsGiven as string;
    if (typeof namespace !== 'string' || !DNS_LABEL.test(namespace)) {
      r.fail('metadata.namespace', `must be a DNS label, got ${JSON.stringify(nsGiven)}`);
      return undefined;
    }
    meta.namespace = namespace;
  } else if (nsGiven !== undefined) {
    r.fail('metadata.namespace', `${kind} is cluster-scoped: remove the namespace`);
  }
  const labels = stringMap(meta.labels, 'metadata.labels', r);
  stringMap(meta.annotations, 'metadata.annotations', r);
  if (meta.uid !== undefined) delete meta.uid; // the sandbox assigns uids

  const m: Manifest = { apiVersion: apiVersion as string, kind, name, labels, object, source, ...(namespace !== undefined ? { namespace } : {}) };
  if (kind === 'Pod') {
    const pod = parsePod(object.spec, r);
    const ip = isMap(meta.annotations) ? meta.annotations[POD_IP_ANNOTATION] : undefined;
    if (typeof ip === 'string') {
      if (isIpv4(ip)) pod.requestedIp = ip;
      else r.fail(`metadata.annotations["${POD_IP_ANNOTATION}"]`, `must be an IPv4 address, got "${ip}"`);
    }
    m.pod = pod;
  } else if (kind === 'Service') {
    m.service = parseService(object.spec, r);
  } else if (kind === 'MeshPolicy') {
    parseMeshPolicy(object.spec, r);
  }
  return m;
}

function stringMap(v: unknown, field: string, r: Report): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isMap(v)) {
    r.fail(field, 'must be a mapping of strings');
    return {};
  }
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') r.fail(`${field}.${k}`, `must be a string, got ${JSON.stringify(val)} (quote it: "${String(val)}")`);
    else out[k] = val;
  }
  return out;
}

function stringList(v: unknown, field: string, r: Report, required: string | undefined): string[] {
  if (v === undefined || v === null) {
    if (required) r.fail(field, required);
    return [];
  }
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
    r.fail(field, 'must be a list of strings (quote numbers and flags: "8080")');
    return [];
  }
  if (required && v.length === 0) r.fail(field, required);
  return v as string[];
}

function parsePod(spec: unknown, r: Report): PodView {
  const pod: PodView = { serviceAccountName: 'default', containers: [] };
  if (!isMap(spec)) {
    r.fail('spec', 'is required (a mapping with containers)');
    return pod;
  }
  if (spec.nodeName !== undefined) {
    if (typeof spec.nodeName !== 'string' || spec.nodeName === '') r.fail('spec.nodeName', 'must be a node name such as "node-1"');
    else pod.nodeName = spec.nodeName;
  }
  if (spec.serviceAccountName !== undefined) {
    if (typeof spec.serviceAccountName !== 'string' || !DNS_SUBDOMAIN.test(spec.serviceAccountName)) {
      r.fail('spec.serviceAccountName', 'must be a DNS subdomain');
    } else pod.serviceAccountName = spec.serviceAccountName;
  }
  if (!Array.isArray(spec.containers) || spec.containers.length === 0) {
    r.fail('spec.containers', 'must be a non-empty list');
    return pod;
  }
  const names = new Set<string>();
  spec.containers.forEach((c: unknown, i: number) => {
    const at = `spec.containers[${i}]`;
    if (!isMap(c)) {
      r.fail(at, 'must be a mapping with name and command');
      return;
    }
    if (typeof c.name !== 'string' || !DNS_LABEL.test(c.name)) r.fail(`${at}.name`, 'must be a DNS label');
    else if (names.has(c.name)) r.fail(`${at}.name`, `"${c.name}" is used by another container of this pod`);
    else names.add(c.name);
    const command = stringList(c.command, `${at}.command`, r,
      'is required: the sandbox ignores image and runs command + args as a process in the pod');
    const args = stringList(c.args, `${at}.args`, r, undefined);
    pod.containers.push({ name: typeof c.name === 'string' ? c.name : `c${i}`, command, args, env: parseEnv(c.env, `${at}.env`, r) });
  });
  return pod;
}

function parseEnv(v: unknown, field: string, r: Report): EnvVar[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    r.fail(field, 'must be a list of {name, value}');
    return [];
  }
  const out: EnvVar[] = [];
  v.forEach((e: unknown, i: number) => {
    const at = `${field}[${i}]`;
    if (!isMap(e) || typeof e.name !== 'string' || !ENV_NAME.test(e.name)) {
      r.fail(`${at}.name`, 'must be an environment variable name');
      return;
    }
    if (e.valueFrom !== undefined) {
      const path = isMap(e.valueFrom) && isMap(e.valueFrom.fieldRef) ? e.valueFrom.fieldRef.fieldPath : undefined;
      if (typeof path === 'string' && (FIELD_PATHS as readonly string[]).includes(path)) {
        out.push({ name: e.name, fieldPath: path as FieldPath });
      } else {
        r.fail(`${at}.valueFrom`, `the sandbox supports only fieldRef.fieldPath of ${FIELD_PATHS.join(', ')}`);
      }
      return;
    }
    if (e.value !== undefined && typeof e.value !== 'string') {
      r.fail(`${at}.value`, `must be a string, got ${JSON.stringify(e.value)} (quote it)`);
      return;
    }
    out.push({ name: e.name, value: (e.value as string | undefined) ?? '' });
  });
  return out;
}

function parseService(spec: unknown, r: Report): ServiceView {
  const svc: ServiceView = {};
  if (!isMap(spec)) {
    r.fail('spec', 'is required (a mapping with ports)');
    return svc;
  }
  if (spec.clusterIP !== undefined) {
    const ip = spec.clusterIP;
    if (ip === 'None') svc.clusterIp = 'None';
    else if (typeof ip !== 'string' || !isIpv4(ip) || !cidrContains(CLUSTER_CIDR, ip)) {
      r.fail('spec.clusterIP', `must be an address in ${CLUSTER_CIDR} (or "None"), got ${JSON.stringify(ip)}`);
    } else svc.clusterIp = ip;
  }
  if (spec.selector !== undefined) stringMap(spec.selector, 'spec.selector', r);
  if (!Array.isArray(spec.ports) || spec.ports.length === 0) {
    r.fail('spec.ports', 'must be a non-empty list');
    return svc;
  }
  spec.ports.forEach((p: unknown, i: number) => {
    const at = `spec.ports[${i}]`;
    if (!isMap(p)) {
      r.fail(at, 'must be a mapping with port');
      return;
    }
    if (!isPort(p.port)) r.fail(`${at}.port`, `must be a port number 1..65535, got ${JSON.stringify(p.port)}`);
    if (p.targetPort !== undefined && !isPort(p.targetPort) && !(typeof p.targetPort === 'string' && DNS_LABEL.test(p.targetPort))) {
      r.fail(`${at}.targetPort`, `must be a port number or a port name, got ${JSON.stringify(p.targetPort)}`);
    }
    if (p.protocol !== undefined && p.protocol !== 'TCP' && p.protocol !== 'UDP') r.fail(`${at}.protocol`, 'must be TCP or UDP');
    if (p.appProtocol !== undefined && typeof p.appProtocol !== 'string') r.fail(`${at}.appProtocol`, 'must be a string such as http, grpc or tcp');
  });
  return svc;
}

function isPort(v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;
}

/** the shape only; the control plane compiles the policy and reports semantic problems */
function parseMeshPolicy(spec: unknown, r: Report): void {
  if (spec === undefined || spec === null) return;
  if (!isMap(spec)) {
    r.fail('spec', 'must be a mapping');
    return;
  }
  if (spec.action !== undefined && !['ALLOW', 'DENY', 'AUDIT'].includes(spec.action as string)) {
    r.fail('spec.action', `must be ALLOW, DENY or AUDIT, got ${JSON.stringify(spec.action)}`);
  }
  if (spec.selector !== undefined) {
    if (!isMap(spec.selector)) r.fail('spec.selector', 'must be a mapping with matchLabels');
    else stringMap(spec.selector.matchLabels, 'spec.selector.matchLabels', r);
  }
  if (spec.rules !== undefined && !Array.isArray(spec.rules)) r.fail('spec.rules', 'must be a list');
}

/**
 * Kubernetes' $(VAR) expansion for command, args and env values: a defined variable is
 * replaced, an undefined one is left as written, and $$ escapes a literal $.
 */
export function expandVars(s: string, vars: Readonly<Record<string, string>>): string {
  return s.replace(/\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)/g, (all, name: string | undefined) => {
    if (name === undefined) return '$';
    return Object.hasOwn(vars, name) ? vars[name]! : all;
  });
}
