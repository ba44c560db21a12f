// The Kubernetes install (deploy/kubernetes, docs/install.md; the image is in image.test.ts) checked
// without a cluster: every built-in object against the Kubernetes OpenAPI schemas
// (kubernetes-models, generated from the official spec) plus unknown-field detection from
// @kubernetes/client-node's generated models (the API server would drop a misspelt field
// silently); the CRDs as structural schemas in a strict JSON-schema validator (ajv); the
// sample MeshPolicies against the CRD and the control plane's own checker, which must
// agree on every supported field; least-privilege RBAC; and the wiring between manifests,
// the agent's and control plane's flags, the image and the user guide's examples.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import * as k8s from '@kubernetes/client-node';
import { Namespace, Service, ServiceAccount } from 'kubernetes-models/v1';
import { DaemonSet, Deployment } from 'kubernetes-models/apps/v1';
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1';
import { ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding } from 'kubernetes-models/admissionregistration.k8s.io/v1';
import { isMap, isSeq, parseAllDocuments } from 'yaml';
import { parseAgentArgs } from '../../agent/config.ts';
import { parseDocument } from '../../control/cluster/kinds.ts';
import { repoRoot } from '../helpers/paths.ts';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
const o = (v: unknown): Obj => (isObj(v) ? v : {});
const a = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const s = (v: unknown): string => (typeof v === 'string' ? v : '');

const DEPLOY = join(repoRoot, 'deploy/kubernetes');
const NAMESPACE = 'nodal-system';

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(e.name) ? [p] : [];
  }).sort();
}

interface Manifest { file: string; index: number; doc: Obj; node: ReturnType<typeof parseAllDocuments>[number] }

function load(file: string): Manifest[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  assert.ok(Array.isArray(docs), `${file}: not a YAML stream`);
  return docs.flatMap((node, index) => {
    assert.deepEqual(node.errors.map(String), [], `${file} document ${index + 1}`);
    const doc: unknown = node.toJS();
    return doc === null || doc === undefined ? [] : [{ file: relative(repoRoot, file), index, doc: o(doc), node }];
  });
}

const kustomizationFile = join(DEPLOY, 'kustomization.yaml');
const manifestFiles = yamlFiles(DEPLOY).filter((f) => f !== kustomizationFile);
const manifests = manifestFiles.flatMap(load);
const where = (m: Manifest): string => `${m.file}#${m.index + 1} ${s(m.doc.kind)} ${s(o(m.doc.metadata).name)}`;
const byKind = (kind: string): Manifest[] => manifests.filter((m) => m.doc.kind === kind);
const named = (kind: string, name: string): Obj => {
  const m = manifests.find((x) => x.doc.kind === kind && o(x.doc.metadata).name === name);
  assert.ok(m, `no ${kind} ${name} in deploy/kubernetes`);
  return m.doc;
};

// --- built-in kinds: the official OpenAPI schemas, plus unknown fields ---

type Validating = new (data: never) => { validate(): void };
const MODELS: Record<string, Validating> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/Service': Service,
  'apps/v1/DaemonSet': DaemonSet,
  'apps/v1/Deployment': Deployment,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'apiextensions.k8s.io/v1/CustomResourceDefinition': CustomResourceDefinition,
};

function openApiValid(Model: Validating, doc: Obj, label: string): void {
  try {
    new Model(doc as never).validate();
  } catch (err) {
    assert.fail(`${label}: ${(err as Error).message}`);
  }
}

interface Attr { baseName: string; type: string }
const generated = k8s as unknown as Record<string, { getAttributeTypeMap?: () => Attr[] } | undefined>;

/** fields the generated client model of `type` does not have, as paths */
function unknownFields(value: unknown, type: string, path: string, out: string[]): void {
  if (value === null || value === undefined) return;
  const list = /^Array<(.+)>$/.exec(type);
  if (list) {
    a(value).forEach((v, i) => unknownFields(v, list[1]!, `${path}[${i}]`, out));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    for (const [k, v] of Object.entries(o(value))) unknownFields(v, map[1]!, `${path}.${k}`, out);
    return;
  }
  const attrs = generated[type]?.getAttributeTypeMap?.();
  if (!attrs || !isObj(value)) return; // a scalar (or a wrong type, which the OpenAPI check reports)
  const fields = new Map(attrs.map((x) => [x.baseName, x.type]));
  for (const [k, v] of Object.entries(value)) {
    let t = fields.get(k);
    if (t === undefined) {
      out.push(path === '' ? k : `${path}.${k}`);
      continue;
    }
    // JSONSchemaPropsOrArray / JSONSchemaPropsOrBool are `any` in the generated client
    if (type === 'V1JSONSchemaProps' && (k === 'items' || k === 'additionalProperties') && isObj(v)) t = 'V1JSONSchemaProps';
    unknownFields(v, t, path === '' ? k : `${path}.${k}`, out);
  }
}

describe('deploy/kubernetes: built-in objects', () => {
  it('every file parses and holds objects', () => {
    assert.ok(manifestFiles.length >= 5, 'expected the install manifests');
    for (const f of manifestFiles) assert.ok(manifests.some((m) => m.file === relative(repoRoot, f)), `${f} holds no object`);
  });

  it('every object validates against the Kubernetes OpenAPI schema of its kind', () => {
    for (const m of manifests) {
      const key = `${s(m.doc.apiVersion)}/${s(m.doc.kind)}`;
      const Model = MODELS[key];
      assert.ok(Model, `${where(m)}: ${key} has no schema here; add its kubernetes-models class to MODELS`);
      openApiValid(Model, m.doc, where(m));
    }
  });

  it('no object has a field its kind does not define (the API server would drop it)', () => {
    for (const m of manifests) {
      const type = `V1${s(m.doc.kind)}`;
      assert.ok(generated[type]?.getAttributeTypeMap, `${where(m)}: no generated model ${type}`);
      const out: string[] = [];
      unknownFields(m.doc, type, '', out);
      assert.deepEqual(out, [], `${where(m)}: unknown fields`);
    }
  });

  it('the unknown-field check catches a misspelt field', () => {
    const out: string[] = [];
    unknownFields({ spec: { template: { spec: { containers: [{ name: 'x', volumeMounts: [{ name: 'v', mountPath: '/v', mountPropogation: 'Bidirectional' }] }] } } } }, 'V1DaemonSet', '', out);
    assert.deepEqual(out, ['spec.template.spec.containers[0].volumeMounts[0].mountPropogation']);
  });

  it('every namespaced object lives in nodal-system; names are unique per kind', () => {
    const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition']);
    const seen = new Set<string>();
    for (const m of manifests) {
      const md = o(m.doc.metadata);
      if (clusterScoped.has(s(m.doc.kind))) assert.equal(md.namespace, undefined, `${where(m)} is cluster-scoped`);
      else assert.equal(md.namespace, NAMESPACE, where(m));
      const key = `${s(m.doc.kind)}/${s(md.name)}`;
      assert.ok(!seen.has(key), `${where(m)}: duplicate ${key}`);
      seen.add(key);
    }
    const ns = named('Namespace', NAMESPACE);
    assert.equal(o(o(ns.metadata).labels)['nodal.io/mesh'], undefined, 'nodal-system must never be enrolled');
  });
});

// --- CRDs ---

type Schema = Obj;
const crds = byKind('CustomResourceDefinition').map((m) => m.doc);
const crdNamed = (kind: string): Obj => {
  const c = crds.find((x) => o(o(x.spec).names).kind === kind);
  assert.ok(c, `no CRD for ${kind}`);
  return c;
};
const versionOf = (crd: Obj): Obj => o(a(o(crd.spec).versions)[0]);
const schemaOf = (kind: string): Schema => o(o(versionOf(crdNamed(kind)).schema).openAPIV3Schema);

/** violations of the structural-schema rules the API server enforces on apiextensions/v1 */
function structuralProblems(sc: Schema, path: string, out: string[], inJunctor = false): void {
  const intOrString = sc['x-kubernetes-int-or-string'] === true;
  const preserve = sc['x-kubernetes-preserve-unknown-fields'] === true;
  if (inJunctor) {
    for (const k of ['type', 'description', 'default', 'additionalProperties', 'nullable', 'title']) {
      if (k in sc) out.push(`${path}.${k}: not allowed inside anyOf/allOf/oneOf/not`);
    }
    for (const k of Object.keys(sc)) if (k.startsWith('x-kubernetes-')) out.push(`${path}.${k}: not allowed inside a junctor`);
  } else {
    if (sc.type === undefined && !intOrString && !preserve) out.push(`${path}: type is required`);
    if (intOrString && JSON.stringify(sc.anyOf) !== JSON.stringify([{ type: 'integer' }, { type: 'string' }])) {
      out.push(`${path}: x-kubernetes-int-or-string needs exactly anyOf: [{type: integer}, {type: string}]`);
    }
    if (sc.properties !== undefined && sc.type !== 'object') out.push(`${path}: properties on a non-object`);
    if (sc.type === 'array' && !isObj(sc.items)) out.push(`${path}: an array needs items`);
    if (sc.additionalProperties === false) out.push(`${path}: additionalProperties: false is not structural`);
    if (sc.properties !== undefined && sc.additionalProperties !== undefined) out.push(`${path}: properties and additionalProperties exclude each other`);
    if (sc['x-kubernetes-list-type'] === 'map') {
      const required = a(o(sc.items).required);
      for (const key of a(sc['x-kubernetes-list-map-keys'])) if (!required.includes(key)) out.push(`${path}: list-map key ${String(key)} must be required`);
    }
  }
  for (const j of ['anyOf', 'allOf', 'oneOf']) {
    if (intOrString && j === 'anyOf') continue;
    a(sc[j]).forEach((b, i) => {
      const branch = o(b);
      // a junctor may only constrain fields the schema itself specifies
      for (const k of Object.keys(o(branch.properties))) {
        if (!(k in o(sc.properties))) out.push(`${path}.${j}[${i}].properties.${k}: not specified outside the junctor`);
      }
      structuralProblems(branch, `${path}.${j}[${i}]`, out, true);
    });
  }
  if (isObj(sc.not)) structuralProblems(sc.not, `${path}.not`, out, true);
  for (const [k, v] of Object.entries(o(sc.properties))) structuralProblems(o(v), `${path}.properties.${k}`, out, inJunctor);
  if (isObj(sc.items)) structuralProblems(sc.items, `${path}.items`, out, inJunctor);
  if (isObj(sc.additionalProperties)) structuralProblems(sc.additionalProperties, `${path}.additionalProperties`, out, inJunctor);
}

/** the schema a printer column's JSONPath reaches, or undefined */
function columnSchema(root: Schema, jsonPath: string): Schema | undefined {
  const parts = jsonPath.replace(/\[\?\(.*?\)\]/g, '[]').split('.').filter(Boolean);
  if (parts[0] === 'metadata') return parts[1] === 'creationTimestamp' ? { type: 'string', format: 'date-time' } : { type: 'string' };
  let sc: Schema | undefined = root;
  for (const part of parts) {
    const list = part.endsWith('[]');
    const name = list ? part.slice(0, -2) : part;
    sc = isObj(o(sc?.properties)[name]) ? o(o(sc!.properties)[name]) : undefined;
    if (list) sc = isObj(sc?.items) ? sc!.items as Schema : undefined;
    if (!sc) return undefined;
  }
  return sc;
}

/**
 * ajv for CRD schemas: the Kubernetes extensions are known keywords, formats are the ones
 * the API server checks, and every object with properties is closed, because the API
 * server prunes unknown fields and kubectl's default strict field validation rejects them.
 */
function crdAjv(): Ajv {
  // strictTypes off: x-kubernetes-int-or-string carries minimum and pattern without a type
  const ajv = new Ajv({ strict: true, strictTypes: false, allErrors: true });
  for (const keyword of ['x-kubernetes-int-or-string', 'x-kubernetes-preserve-unknown-fields', 'x-kubernetes-embedded-resource']) ajv.addKeyword({ keyword, schemaType: 'boolean' });
  for (const keyword of ['x-kubernetes-list-type', 'x-kubernetes-map-type']) ajv.addKeyword({ keyword, schemaType: 'string' });
  for (const keyword of ['x-kubernetes-list-map-keys', 'x-kubernetes-validations']) ajv.addKeyword({ keyword, schemaType: 'array' });
  ajv.addFormat('int32', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
  ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isSafeInteger(n) });
  ajv.addFormat('date-time', /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i);
  return ajv;
}

function closed(sc: unknown): unknown {
  if (Array.isArray(sc)) return sc.map(closed);
  if (!isObj(sc)) return sc;
  const out: Obj = {};
  for (const [k, v] of Object.entries(sc)) {
    if (k === 'properties') out[k] = Object.fromEntries(Object.entries(o(v)).map(([p, ps]) => [p, closed(ps)]));
    else if (k === 'default' || k === 'enum' || k === 'required' || k.startsWith('x-kubernetes-')) out[k] = v;
    else out[k] = closed(v);
  }
  if (out.type === 'object' && out.properties !== undefined && out.additionalProperties === undefined && out['x-kubernetes-preserve-unknown-fields'] !== true) {
    out.additionalProperties = false;
  }
  return out;
}

/** the API server drops null for fields that are not nullable before it validates */
function withoutNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutNulls);
  if (!isObj(v)) return v;
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null).map(([k, x]) => [k, withoutNulls(x)]));
}

const ajv = crdAjv();
const validators = new Map<string, ValidateFunction>();
function crValidator(kind: string): ValidateFunction {
  let v = validators.get(kind);
  if (!v) validators.set(kind, (v = ajv.compile(closed(schemaOf(kind)) as Obj)));
  return v;
}
/** the problems the API server would report for a custom resource, [] when it is admitted */
function crProblems(kind: string, doc: Obj): string[] {
  const v = crValidator(kind);
  return v(withoutNulls(doc)) ? [] : (v.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? e.keyword}`);
}

describe('deploy/kubernetes: CRDs', () => {
  it('MeshPolicy, TrafficPolicy and NodalIdentity in nodal.io/v1alpha1, named <plural>.<group>', () => {
    const want: Record<string, string> = { MeshPolicy: 'Namespaced', TrafficPolicy: 'Namespaced', NodalIdentity: 'Cluster' };
    assert.deepEqual(crds.map((c) => s(o(o(c.spec).names).kind)).sort(), Object.keys(want).sort());
    for (const c of crds) {
      const spec = o(c.spec), names = o(spec.names);
      assert.equal(spec.group, 'nodal.io');
      assert.equal(spec.scope, want[s(names.kind)]);
      assert.equal(o(c.metadata).name, `${s(names.plural)}.nodal.io`);
      const versions = a(spec.versions).map(o);
      assert.deepEqual(versions.map((v) => [v.name, v.served, v.storage]), [['v1alpha1', true, true]]);
    }
  });

  it('every schema is structural', () => {
    for (const c of crds) {
      const out: string[] = [];
      structuralProblems(o(o(versionOf(c).schema).openAPIV3Schema), 'openAPIV3Schema', out);
      assert.deepEqual(out, [], s(o(c.metadata).name));
    }
  });

  it('every schema compiles in a strict JSON-schema validator (no misspelt keywords)', () => {
    for (const kind of ['MeshPolicy', 'TrafficPolicy', 'NodalIdentity']) assert.doesNotThrow(() => crValidator(kind), kind);
  });

  it('every default satisfies its own schema', () => {
    const check = (sc: Schema, path: string): void => {
      if ('default' in sc) {
        const { default: dflt, ...rest } = sc;
        assert.ok(ajv.validate(closed(rest) as Obj, dflt), `${path}: default ${JSON.stringify(dflt)} ${ajv.errorsText()}`);
      }
      for (const [k, v] of Object.entries(o(sc.properties))) check(o(v), `${path}.${k}`);
      if (isObj(sc.items)) check(sc.items, `${path}[]`);
    };
    for (const kind of ['MeshPolicy', 'TrafficPolicy', 'NodalIdentity']) check(schemaOf(kind), kind);
  });

  it('printer columns point at fields of the schema, with matching types', () => {
    const expected: Record<string, string[]> = {
      MeshPolicy: ['Action', 'Accepted', 'Age'],
      TrafficPolicy: ['Service', 'Algorithm', 'Accepted', 'Age'],
      NodalIdentity: ['ID', 'Namespace', 'ServiceAccount', 'Age'],
    };
    for (const [kind, names] of Object.entries(expected)) {
      const columns = a(versionOf(crdNamed(kind)).additionalPrinterColumns).map(o);
      assert.deepEqual(columns.map((c) => c.name), names, kind);
      for (const c of columns) {
        const target = columnSchema(schemaOf(kind), s(c.jsonPath));
        assert.ok(target, `${kind} column ${s(c.name)}: ${s(c.jsonPath)} is not in the schema`);
        const want = c.type === 'date' ? 'string' : s(c.type);
        assert.equal(target.type, want, `${kind} column ${s(c.name)}`);
        if (c.type === 'date') assert.equal(target.format, 'date-time');
      }
    }
  });

  it('policies have a status subresource (the control plane writes conditions there); identities do not', () => {
    assert.ok(isObj(o(versionOf(crdNamed('MeshPolicy')).subresources).status));
    assert.ok(isObj(o(versionOf(crdNamed('TrafficPolicy')).subresources).status));
    assert.equal(versionOf(crdNamed('NodalIdentity')).subresources, undefined);
    for (const kind of ['MeshPolicy', 'TrafficPolicy']) {
      const cond = o(o(o(o(schemaOf(kind).properties).status).properties).conditions);
      assert.equal(cond['x-kubernetes-list-type'], 'map', kind);
    }
  });
});

// --- MeshPolicy: the CRD and the control plane's checker agree ---

function meshPolicy(spec: unknown): Obj {
  return { apiVersion: 'nodal.io/v1alpha1', kind: 'MeshPolicy', metadata: { name: 'p', namespace: 'demo' }, ...(spec === undefined ? {} : { spec }) };
}
const controlAccepts = (doc: Obj): boolean => parseDocument(doc, 'test.yaml', 0).result === 'ok';

const exampleDir = join(repoRoot, 'deploy/local/examples');
const examplePolicies = yamlFiles(exampleDir).flatMap(load).filter((m) => m.doc.kind === 'MeshPolicy');

const from = (source: unknown): Obj => ({ rules: [{ from: [{ source }] }] });
const to = (operation: unknown): Obj => ({ rules: [{ to: [{ operation }] }] });
const when = (c: unknown): Obj => ({ rules: [{ when: [c] }] });
/**
 * [name, spec, accepted]: accepted by the control plane and admitted by the API server
 * alike, except 'kept': a field nodal does not support, which the API server keeps (so no
 * client can have it dropped silently) and the control plane rejects.
 */
const MESH_POLICY_CASES: Array<[string, unknown, boolean | 'kept']> = [
  ['no spec: allow nothing', undefined, true],
  ['empty spec', {}, true],
  ['DENY by namespace', { selector: { matchLabels: { app: 'db' } }, action: 'DENY', ...from({ namespaces: ['legacy'] }) }, true],
  ['AUDIT', { action: 'AUDIT', ...from({ principals: ['*'] }) }, true],
  ['ports as numbers', to({ ports: [80, 8080] }), true],
  ['ports as strings (Istio)', to({ ports: ['80', '65535', '0443'], notPorts: ['1'] }), true],
  ['methods, paths, hosts', to({ methods: ['GET'], notMethods: ['DELETE'], paths: ['/api/*'], notPaths: ['/admin'], hosts: ['a.example'] }), true],
  ['when values', when({ key: 'request.headers[x-user]', values: ['alice'] }), true],
  ['when notValues', when({ key: 'source.ip', notValues: ['10.0.0.1'] }), true],
  ['an empty list beside a set one', from({ principals: [], namespaces: ['demo'] }), true],
  ['null counts as absent', { selector: null, action: 'ALLOW', ...from({ principals: ['a/ns/b/sa/c'], namespaces: null }) }, true],
  ['lowercase action', { action: 'allow' }, false],
  ['unknown action', { action: 'CUSTOM' }, false],
  ['label value not a string', { selector: { matchLabels: { tier: 1 } } }, false],
  ['empty source', from({}), false],
  ['source with only empty lists', from({ principals: [] }), false],
  ['source with only an unsupported field', from({ requestPrincipals: ['*'] }), false],
  ['from entry without source', { rules: [{ from: [{}] }] }, false],
  ['empty operation', to({}), false],
  ['port 0', to({ ports: [0] }), false],
  ['port 65536', to({ ports: [65536] }), false],
  ['port string out of range', to({ ports: ['70000'] }), false],
  ['port name', to({ ports: ['http'] }), false],
  ['when without values', when({ key: 'source.ip' }), false],
  ['when with empty key', when({ key: '', values: ['x'] }), false],
  ['unsupported spec field (Istio provider)', { provider: { name: 'x' } }, 'kept'],
  ['unsupported selector field (matchExpressions)', { selector: { matchExpressions: [] } }, 'kept'],
  ['unsupported source field beside a supported one', from({ namespaces: ['a'], requestPrincipals: ['*'] }), 'kept'],
  ['operation headers', to({ headers: { 'x-tenant': ['acme', 'beta-*'], 'x-user': ['*'] } }), true],
  ['operation header patterns not a list', to({ methods: ['GET'], headers: { a: 'b' } }), false],
  ['operation header without a pattern', to({ headers: { a: [] } }), false],
  ['operation headers naming no header', to({ headers: {} }), false],
  ['gRPC services and methods', to({ grpcServices: ['shop.v1.Cart'], grpcMethods: ['Get*', 'List*'] }), true],
  ['unsupported operation field (Istio notHosts)', to({ methods: ['GET'], notHosts: ['a'] }), 'kept'],
  ['unsupported rule field', { rules: [{ from: [{ source: { namespaces: ['a'] } }], extra: 1 }] }, 'kept'],
  ['unsupported condition field', when({ key: 'source.ip', values: ['x'], regex: true }), 'kept'],
];

describe('MeshPolicy: CRD schema and control/cluster/kinds.ts agree', () => {
  it('deploy/local/examples has MeshPolicies and each one is admitted by both', () => {
    assert.ok(examplePolicies.length > 0, 'no MeshPolicy in deploy/local/examples');
    for (const m of examplePolicies) {
      assert.deepEqual(crProblems('MeshPolicy', m.doc), [], where(m));
      assert.ok(controlAccepts(m.doc), `${where(m)}: rejected by the control plane`);
    }
  });

  for (const [name, spec, accepted] of MESH_POLICY_CASES) {
    const verb = accepted === 'kept' ? 'keeps for the control plane to reject' : accepted ? 'admits' : 'rejects';
    it(`${verb}: ${name}`, () => {
      const doc = meshPolicy(spec);
      assert.equal(controlAccepts(doc), accepted === true, `control plane: ${JSON.stringify(parseDocument(doc, 'test.yaml', 0))}`);
      assert.equal(crProblems('MeshPolicy', doc).length === 0, accepted !== false, `CRD: ${crProblems('MeshPolicy', doc).join('; ') || 'admitted'}`);
    });
  }

  it('no part of a policy is pruned: every object in spec keeps unknown fields', () => {
    const objects: string[] = [];
    const walk = (sc: Schema, path: string): void => {
      if (sc.type === 'object' && sc.properties !== undefined) {
        objects.push(path);
        assert.equal(sc['x-kubernetes-preserve-unknown-fields'], true, `${path} would prune fields nodal does not support`);
      }
      for (const [k, v] of Object.entries(o(sc.properties))) walk(o(v), `${path}.${k}`);
      if (isObj(sc.items)) walk(sc.items, `${path}[]`);
    };
    walk(o(o(schemaOf('MeshPolicy').properties).spec), 'spec');
    assert.deepEqual(objects, ['spec', 'spec.selector', 'spec.rules[]', 'spec.rules[].from[]', 'spec.rules[].from[].source',
      'spec.rules[].to[]', 'spec.rules[].to[].operation', 'spec.rules[].when[]']);
  });
});

describe('TrafficPolicy and NodalIdentity schemas', () => {
  const tp = (spec: Obj): Obj => ({ apiVersion: 'nodal.io/v1alpha1', kind: 'TrafficPolicy', metadata: { name: 't', namespace: 'demo' }, spec });
  const target = { targetRef: { kind: 'Service', name: 'backend' } };
  const full: Obj = {
    targetRef: { group: '', kind: 'Service', name: 'backend' },
    loadBalancer: { algorithm: 'CONSISTENT_HASH', hashOn: { header: 'x-user' } },
    connectionPool: { maxConnections: 100, maxPendingRequests: 50, maxRequestsPerConnection: 0, connectTimeout: '2s', idleTimeout: '1m30s' },
    outlierDetection: { consecutive5xxErrors: 5, consecutiveGatewayErrors: 3, interval: '10s', baseEjectionTime: '30s', maxEjectionPercent: 50 },
    healthCheck: { protocol: 'HTTP', path: '/healthz', expectedStatuses: [200, 204], interval: '5s', timeout: '1s', healthyThreshold: 2, unhealthyThreshold: 3 },
    retry: { attempts: 3, perTryTimeout: '500ms', budgetPercent: 20, minRetriesPerSecond: 5, retryNonIdempotent: true, retryOn: ['5xx', 'reset', 'connect-failure'] },
    faultInjection: { delay: { percent: 0.5, fixedDelay: '100ms' }, abort: { percent: 1, httpStatus: 503 } },
    rateLimit: { requests: 100, unit: 'Second', burst: 20 },
  };
  const cases: Array<[string, Obj, boolean]> = [
    ['every feature', full, true],
    ['only a target', target, true],
    ['an algorithm without options', { ...target, loadBalancer: { algorithm: 'PEAK_EWMA' } }, true],
    ['no target', { loadBalancer: { algorithm: 'ROUND_ROBIN' } }, false],
    ['target not a Service', { targetRef: { kind: 'Deployment', name: 'x' } }, false],
    ['unknown algorithm', { ...target, loadBalancer: { algorithm: 'RANDOM' } }, false],
    ['hash on two things', { ...target, loadBalancer: { algorithm: 'CONSISTENT_HASH', hashOn: { header: 'a', sourceIP: true } } }, false],
    ['a duration in words', { ...target, connectionPool: { connectTimeout: '2 seconds' } }, false],
    ['too many retries', { ...target, retry: { attempts: 11 } }, false],
    ['unknown retryOn', { ...target, retry: { retryOn: ['always'] } }, false],
    ['rate limit without unit', { ...target, rateLimit: { requests: 10 } }, false],
    ['abort with a 1xx', { ...target, faultInjection: { abort: { httpStatus: 101 } } }, false],
    ['unknown field', { ...target, loadBalancer: { algorithm: 'ROUND_ROBIN', slowStart: '30s' } }, false],
    ['negative minRetriesPerSecond', { ...target, retry: { minRetriesPerSecond: -1 } }, false],
    ['retryNonIdempotent not a boolean', { ...target, retry: { retryNonIdempotent: 'yes' } }, false],
  ];
  for (const [name, spec, valid] of cases) {
    it(`TrafficPolicy ${valid ? 'admits' : 'rejects'}: ${name}`, () => {
      assert.equal(crProblems('TrafficPolicy', tp(spec)).length === 0, valid, crProblems('TrafficPolicy', tp(spec)).join('; ') || 'admitted');
      assert.equal(controlAccepts(tp(spec)), valid, `control plane: ${JSON.stringify(parseDocument(tp(spec), 'test.yaml', 0))}`);
    });
  }

  const nid = (spec: Obj): Obj => ({ apiVersion: 'nodal.io/v1alpha1', kind: 'NodalIdentity', metadata: { name: 'id-256' }, spec });
  const idCases: Array<[string, Obj, boolean]> = [
    ['an allocated identity', { id: 256, namespace: 'demo', serviceAccount: 'frontend', labels: { app: 'frontend' } }, true],
    ['no labels', { id: 4294967295, namespace: 'demo', serviceAccount: 'default' }, true],
    ['a reserved id', { id: 4, namespace: 'demo', serviceAccount: 'default' }, false],
    ['beyond 32 bits', { id: 4294967296, namespace: 'demo', serviceAccount: 'default' }, false],
    ['no service account', { id: 300, namespace: 'demo' }, false],
    ['a label that is not a string', { id: 300, namespace: 'demo', serviceAccount: 'a', labels: { v: 2 } }, false],
  ];
  for (const [name, spec, valid] of idCases) {
    it(`NodalIdentity ${valid ? 'admits' : 'rejects'}: ${name}`, () => {
      assert.equal(crProblems('NodalIdentity', nid(spec)).length === 0, valid, crProblems('NodalIdentity', nid(spec)).join('; ') || 'admitted');
    });
  }

  it('an identity is immutable once allocated (CEL on spec)', () => {
    const rules = a(o(o(schemaOf('NodalIdentity').properties).spec)['x-kubernetes-validations']).map(o);
    assert.deepEqual(rules.map((r) => r.rule), ['self == oldSelf']);
  });
});

// --- RBAC ---

/** "group/resource verb" for every grant of a role */
function grants(role: Obj): string[] {
  return a(role.rules).map(o).flatMap((r) => a(r.apiGroups).flatMap((g) => a(r.resources).flatMap((res) =>
    a(r.verbs).map((v) => `${s(g) || 'core'}/${s(res)} ${s(v)}`)))).sort();
}
const expand = (spec: Record<string, string>): string[] =>
  Object.entries(spec).flatMap(([resources, verbs]) => {
    const [group, names] = resources.split(':') as [string, string];
    return names.split(',').flatMap((r) => verbs.split(',').map((v) => `${group}/${r} ${v}`));
  }).sort();

describe('deploy/kubernetes: RBAC is least privilege', () => {
  const roles = [...byKind('ClusterRole'), ...byKind('Role')];

  it('no wildcard groups, resources or verbs; no non-resource URLs; no Secrets', () => {
    for (const m of roles) {
      for (const r of a(m.doc.rules).map(o)) {
        for (const field of ['apiGroups', 'resources', 'verbs', 'resourceNames']) {
          assert.ok(!a(r[field]).includes('*'), `${where(m)}: wildcard in ${field}`);
        }
        assert.equal(r.nonResourceURLs, undefined, where(m));
        assert.ok(!a(r.resources).includes('secrets'), `${where(m)}: nodal reads no Secrets`);
      }
    }
  });

  it('every rule carries a comment saying why', () => {
    for (const m of roles) {
      const rules = m.node.get('rules', true);
      assert.ok(isSeq(rules), where(m));
      rules.items.forEach((item, i) => {
        const comment = i === 0 ? (rules.commentBefore ?? (isMap(item) ? item.commentBefore : undefined)) : (isMap(item) ? item.commentBefore : undefined);
        assert.ok(comment && comment.trim().length > 10, `${where(m)}: rule ${i + 1} has no comment`);
      });
    }
  });

  it('the agent may read pods, namespaces and nodes, and patch pods and nodes: nothing else', () => {
    assert.deepEqual(grants(named('ClusterRole', 'nodal-agent')), expand({
      'core:pods': 'get,list,watch,patch',
      'core:namespaces': 'get,list,watch',
      'core:nodes': 'get,list,watch,patch',
    }));
  });

  it('the control plane may watch its sources, write policy and route status, manage identities, record events: nothing else', () => {
    assert.deepEqual(grants(named('ClusterRole', 'nodal-control')), expand({
      'core:namespaces,pods,services,nodes': 'list,watch',
      'discovery.k8s.io:endpointslices': 'list,watch',
      'networking.k8s.io:networkpolicies': 'list,watch',
      'gateway.networking.k8s.io:httproutes,grpcroutes': 'list,watch',
      'gateway.networking.k8s.io:httproutes/status,grpcroutes/status': 'update,patch',
      'nodal.io:meshpolicies,trafficpolicies': 'list,watch',
      'nodal.io:meshpolicies/status,trafficpolicies/status': 'update,patch',
      'nodal.io:nodalidentities': 'get,list,watch,create,update,delete',
      'core:events': 'create,patch',
      'events.k8s.io:events': 'create,patch',
    }));
    const lease = named('Role', 'nodal-control-leader-election');
    assert.equal(o(lease.metadata).namespace, NAMESPACE, 'leader election is confined to nodal-system');
    assert.deepEqual(grants(lease), expand({ 'coordination.k8s.io:leases': 'get,create,update' }));
  });

  it('nodal.io resources in roles are CRDs of this install', () => {
    const plurals = new Set(crds.flatMap((c) => {
      const plural = s(o(o(c.spec).names).plural);
      return isObj(o(versionOf(c).subresources).status) ? [plural, `${plural}/status`] : [plural];
    }));
    for (const m of roles) {
      for (const r of a(m.doc.rules).map(o)) {
        if (!a(r.apiGroups).includes('nodal.io')) continue;
        for (const res of a(r.resources)) assert.ok(plurals.has(s(res)), `${where(m)}: nodal.io/${s(res)} is no CRD resource`);
      }
    }
  });

  it('bindings tie existing roles to existing ServiceAccounts, and the workloads run as them', () => {
    const accounts = new Set(byKind('ServiceAccount').map((m) => `${s(o(m.doc.metadata).namespace)}/${s(o(m.doc.metadata).name)}`));
    for (const m of [...byKind('ClusterRoleBinding'), ...byKind('RoleBinding')]) {
      const ref = o(m.doc.roleRef);
      named(s(ref.kind), s(ref.name));
      for (const subj of a(m.doc.subjects).map(o)) {
        assert.equal(subj.kind, 'ServiceAccount', where(m));
        assert.ok(accounts.has(`${s(subj.namespace)}/${s(subj.name)}`), `${where(m)}: no ServiceAccount ${s(subj.namespace)}/${s(subj.name)}`);
      }
    }
    const podSpec = (kind: string, name: string): Obj => o(o(o(named(kind, name).spec).template).spec);
    assert.equal(podSpec('DaemonSet', 'nodal-agent').serviceAccountName, 'nodal-agent');
    assert.equal(podSpec('Deployment', 'nodal-control').serviceAccountName, 'nodal-control');
  });
});

// --- the agent DaemonSet, the control Deployment and their Services ---

const agentPod = o(o(o(named('DaemonSet', 'nodal-agent').spec).template).spec);
const agent = o(a(agentPod.containers).map(o).find((c) => c.name === 'agent'));
const controlPod = o(o(o(named('Deployment', 'nodal-control').spec).template).spec);
const control = o(a(controlPod.containers)[0]);

/** the agent's args as the kubelet expands them, with sample downward-API values */
function expandedAgentArgs(): { args: string[]; unresolved: string[] } {
  const samples: Record<string, string> = { 'spec.nodeName': 'node-a', 'status.hostIP': '192.0.2.10' };
  const env: Record<string, string> = {};
  for (const e of a(agent.env).map(o)) {
    const field = s(o(o(e.valueFrom).fieldRef).fieldPath);
    if (typeof e.value === 'string') env[s(e.name)] = e.value;
    else if (samples[field] !== undefined) env[s(e.name)] = samples[field]!;
  }
  const unresolved = new Set<string>();
  const args = a(agent.args).map((x) => s(x).replace(/\$\(([A-Z_]+)\)/g, (all, name: string) => {
    if (env[name] !== undefined) return env[name]!;
    unresolved.add(name);
    return all;
  }));
  return { args, unresolved: [...unresolved] };
}

describe('deploy/kubernetes: the agent DaemonSet', () => {
  it('runs the image\'s entrypoint with agent/config.ts flags; the tunnel address comes from a file on the node', () => {
    const [shell, dashC, script, argv0, ...rest] = a(agent.command).map(s);
    assert.deepEqual([shell, dashC, argv0, rest], ['sh', '-c', 'nodal-agent', []]);
    assert.match(script!, /exec node dist\/agent\/main\.js "\$@" --tunnel-ip="\$tunnel_ip"/);
    assert.match(script!, /file=\/var\/lib\/nodal\/tunnel-ip\n/);
    assert.match(script!, /exit 1/, 'a missing address stops the agent with a message');
    assert.ok(!/\$\(/.test(script!), 'the kubelet expands $(...) in commands: the script must not use it');
    assert.match(readFileSync(join(DEPLOY, 'agent-daemonset.yaml'), 'utf8'), /REQUIRED, NOT DERIVABLE YET/);
    const { args, unresolved } = expandedAgentArgs();
    assert.deepEqual(unresolved, [], 'every $(VAR) in args is defined');
    const cfg = parseAgentArgs([...args, '--tunnel-ip=10.99.0.1']);
    assert.equal(cfg.node, 'node-a');
    assert.equal(cfg.proxyIp, '192.0.2.10', 'pods reach the proxy at the node address');
    assert.equal(cfg.underlayIp, '192.0.2.10');
    assert.equal(cfg.tunnelIp, '10.99.0.1');
    assert.equal(cfg.control, 'nodal-control.nodal-system.svc:15012');
    assert.equal(cfg.wgMode, 'auto');
    assert.ok(cfg.stateDir === '/var/lib/nodal', 'the tunnel-ip file lives in the state folder');
  });

  it('declares the ports the agent listens on, probes /healthz and /readyz, and is scraped on the metrics port', () => {
    const cfg = parseAgentArgs([...expandedAgentArgs().args, '--tunnel-ip=10.99.0.1']);
    const ports = Object.fromEntries(a(agent.ports).map(o).map((p) => [s(p.name), [p.containerPort, p.protocol]]));
    assert.deepEqual(ports, {
      'proxy-outbound': [cfg.ports.outbound, 'TCP'], 'proxy-tunnel': [cfg.ports.inbound, 'TCP'], health: [cfg.ports.health, 'TCP'],
      metrics: [cfg.ports.metrics, 'TCP'], observer: [cfg.ports.observer, 'TCP'], wireguard: [51871, 'UDP'],
    });
    assert.deepEqual([cfg.ports.outbound, cfg.ports.inbound, cfg.ports.health, cfg.ports.metrics, cfg.ports.observer], [15001, 15008, 15021, 9964, 4244]);
    assert.deepEqual(o(o(agent.livenessProbe).httpGet), { path: '/healthz', port: cfg.ports.health });
    assert.deepEqual(o(o(agent.readinessProbe).httpGet), { path: '/readyz', port: cfg.ports.health });
    const ann = o(o(o(o(named('DaemonSet', 'nodal-agent').spec).template).metadata).annotations);
    assert.equal(ann['prometheus.io/port'], String(cfg.ports.metrics));
  });

  it('mounts what the flags point at', () => {
    const cfg = parseAgentArgs([...expandedAgentArgs().args, '--tunnel-ip=10.99.0.1']);
    const mounts = a(agent.volumeMounts).map(o).map((m) => s(m.mountPath));
    const under = (p: string): boolean => mounts.some((m) => p === m || p.startsWith(`${m}/`));
    for (const p of ['/sys/fs/bpf', cfg.cgroup, cfg.stateDir, dirname(cfg.observerSocket), '/dev/net/tun']) assert.ok(under(p), `${p} is not mounted`);
    assert.equal(cfg.bpfObjects, '/opt/nodal/bpf/build', 'where deploy/Dockerfile puts the objects');
  });

  it('host network, every node, rolling one node at a time', () => {
    assert.equal(agentPod.hostNetwork, true);
    assert.equal(agentPod.dnsPolicy, 'ClusterFirstWithHostNet');
    assert.deepEqual(agentPod.tolerations, [{ operator: 'Exists' }]);
    assert.deepEqual(o(named('DaemonSet', 'nodal-agent').spec).updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
    assert.ok(typeof agentPod.terminationGracePeriodSeconds === 'number');
    assert.ok(isObj(o(agent.resources).requests) && isObj(o(agent.resources).limits));
  });

  it('the agent is not privileged: explicit capabilities; only the bpffs mount step is, for Bidirectional propagation', () => {
    const sc = o(agent.securityContext);
    assert.equal(sc.privileged, false);
    assert.deepEqual(o(sc.capabilities).drop, ['ALL']);
    assert.deepEqual(o(sc.capabilities).add, ['BPF', 'PERFMON', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_RESOURCE']);
    // API server rules the schema cannot express
    for (const c of [...a(agentPod.initContainers), ...a(agentPod.containers)].map(o)) {
      const csc = o(c.securityContext);
      for (const m of a(c.volumeMounts).map(o)) {
        if (m.mountPropagation === 'Bidirectional') assert.equal(csc.privileged, true, `${s(c.name)}: Bidirectional propagation needs a privileged container`);
      }
      if (csc.allowPrivilegeEscalation === false) {
        assert.ok(csc.privileged !== true && !a(o(csc.capabilities).add).includes('SYS_ADMIN'), `${s(c.name)}: allowPrivilegeEscalation false excludes privileged and SYS_ADMIN`);
      }
    }
    const privileged = [...a(agentPod.initContainers), ...a(agentPod.containers)].map(o).filter((c) => o(c.securityContext).privileged === true);
    assert.deepEqual(privileged.map((c) => c.name), ['mount-bpf-fs']);
  });
});

describe('deploy/kubernetes: the control plane', () => {
  const deployment = named('Deployment', 'nodal-control');
  const controlMain = readFileSync(join(repoRoot, 'control/main.ts'), 'utf8');
  const flags = a(control.args).map((x) => s(x).split('=')[0]!);
  const missing = flags.filter((f) => !controlMain.includes(`'${f} `) && !controlMain.includes(`'${f}'`));

  it('two replicas on different nodes where possible, run from the image by command override', () => {
    assert.equal(o(deployment.spec).replicas, 2);
    const anti = o(o(controlPod.affinity).podAntiAffinity);
    const term = o(o(a(anti.preferredDuringSchedulingIgnoredDuringExecution)[0]).podAffinityTerm);
    assert.equal(term.topologyKey, 'kubernetes.io/hostname');
    assert.deepEqual(control.command, ['node', 'dist/control/main.js']);
    assert.ok(existsSync(join(repoRoot, 'control/main.ts')));
    assert.ok(flags.includes('--source'), 'the control plane reads the Kubernetes API');
    assert.equal(o(control.securityContext).readOnlyRootFilesystem, true);
    assert.equal(o(controlPod.securityContext).runAsNonRoot, true);
  });

  it('its args are flags control/main.ts defines', () => {
    assert.deepEqual(missing, []);
    assert.match(controlMain, /choices\(\[[^\]]*'kubernetes'/, '--source kubernetes is one of the choices');
  });

  it('the Services select the control pods and name their ports; the agent\'s --control points at one', () => {
    const podLabels = o(o(o(deployment.spec).template).metadata).labels;
    const containerPorts = new Map(a(control.ports).map(o).map((p) => [s(p.name), p.containerPort]));
    const svc = (name: string): Obj => o(named('Service', name).spec);
    for (const name of ['nodal-control', 'nodal-relay']) {
      const sel = o(svc(name).selector);
      for (const [k, v] of Object.entries(sel)) assert.equal(o(podLabels)[k], v, `${name} selector ${k}`);
      for (const p of a(svc(name).ports).map(o)) assert.ok(containerPorts.has(s(p.targetPort)), `${name}: targetPort ${s(p.targetPort)} is no container port`);
    }
    assert.deepEqual(a(svc('nodal-control').ports).map((p) => o(p).port), [15012]);
    assert.deepEqual(a(svc('nodal-relay').ports).map((p) => o(p).port), [4245]);
    const cfg = parseAgentArgs([...expandedAgentArgs().args, '--tunnel-ip=10.99.0.1']);
    assert.equal(cfg.control, `nodal-control.${NAMESPACE}.svc:15012`);
  });
});

// --- kustomization ---

describe('deploy/kubernetes: kustomization', () => {
  const k = o(parseAllDocuments(readFileSync(kustomizationFile, 'utf8'))[0]?.toJS());

  it('lists every manifest file, and only those', () => {
    assert.equal(k.apiVersion, 'kustomize.config.k8s.io/v1beta1');
    assert.equal(k.kind, 'Kustomization');
    const listed = a(k.resources).map(s).sort();
    assert.deepEqual(listed, manifestFiles.map((f) => relative(DEPLOY, f)).sort());
  });

  it('labels leave selectors alone; the image it sets is the one the workloads use', () => {
    for (const l of a(k.labels).map(o)) assert.notEqual(l.includeSelectors, true, 'selectors are immutable');
    const images = new Set(a(k.images).map((i) => s(o(i).name)));
    for (const m of [...byKind('DaemonSet'), ...byKind('Deployment')]) {
      const pod = o(o(o(m.doc.spec).template).spec);
      for (const c of [...a(pod.initContainers), ...a(pod.containers)].map(o)) {
        assert.ok(images.has(s(c.image).split(':')[0]!), `${where(m)}: image ${s(c.image)} is not set by the kustomization`);
      }
    }
    assert.equal(k.commonLabels, undefined, 'commonLabels rewrites selectors; use labels');
  });
});

// --- the user guide's examples ---

describe('docs/install.md: every YAML example is valid', () => {
  const text = readFileSync(join(repoRoot, 'docs/install.md'), 'utf8');
  const blocks = [...text.matchAll(/^( *)```yaml\n([\s\S]*?)^\1```/gm)].map((m) => {
    const indent = m[1]!.length;
    return m[2]!.split('\n').map((l) => l.slice(indent)).join('\n');
  });
  const docs = blocks.flatMap((b) => parseAllDocuments(b).map((d) => o(d.toJS())));
  const extra: Record<string, Validating> = {
    'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy': ValidatingAdmissionPolicy,
    'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding': ValidatingAdmissionPolicyBinding,
  };

  it('nodal kinds pass their CRD and the control plane, Gateway API routes the control plane; built-in kinds their OpenAPI schema', () => {
    assert.deepEqual(docs.map((d) => d.kind), ['MeshPolicy', 'HTTPRoute', 'TrafficPolicy', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding']);
    for (const d of docs) {
      const label = `docs/install.md ${s(d.kind)} ${s(o(d.metadata).name)}`;
      if (d.apiVersion === 'nodal.io/v1alpha1' || d.apiVersion === 'gateway.networking.k8s.io/v1') {
        if (d.apiVersion === 'nodal.io/v1alpha1') assert.deepEqual(crProblems(s(d.kind), d), [], label);
        assert.ok(controlAccepts(d), `${label}: rejected by the control plane: ${JSON.stringify(parseDocument(d, 'install.md', 0))}`);
        continue;
      }
      const Model = extra[`${s(d.apiVersion)}/${s(d.kind)}`];
      assert.ok(Model, `${label}: no schema`);
      openApiValid(Model, d, label);
      const out: string[] = [];
      unknownFields(d, `V1${s(d.kind)}`, '', out);
      assert.deepEqual(out, [], `${label}: unknown fields`);
    }
  });

  it('the MeshPolicy shown is the sandbox example it names', () => {
    const shown = docs.find((d) => d.kind === 'MeshPolicy');
    const example = examplePolicies.find((m) => m.file === 'deploy/local/examples/50-policy.yaml');
    assert.ok(example, 'deploy/local/examples/50-policy.yaml has no MeshPolicy');
    assert.deepEqual(shown, example.doc);
  });
});
