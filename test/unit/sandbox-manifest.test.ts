import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expandVars, objectFileName, objectKey, parseManifests } from '../../cli/dev/manifest.ts';
import { loadManifestFiles } from '../../cli/dev/apply.ts';
import { ManifestError, SandboxErrorCode } from '../../cli/dev/errors.ts';

function problems(text: string, file = 'x.yaml'): string[] {
  try {
    parseManifests(text, file);
  } catch (err) {
    assert.ok(err instanceof ManifestError, `expected a ManifestError, got ${String(err)}`);
    assert.equal(err.code, SandboxErrorCode.MANIFEST);
    return [...err.problems];
  }
  assert.fail('expected the manifests to be rejected');
}

const POD = `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  nodeName: node-1
  serviceAccountName: web
  containers:
    - name: main
      command: ["$(NODE)", "server.mjs"]
      args: ["--port", "8080"]
      env:
        - {name: PORT, value: "8080"}
        - name: MY_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
`;

describe('sandbox manifests: file naming', () => {
  it('names files <Kind>.<namespace>.<name>.yaml, cluster-scoped ones <Kind>.<name>.yaml', () => {
    assert.equal(objectFileName('Pod', 'demo', 'web'), 'Pod.demo.web.yaml');
    assert.equal(objectFileName('MeshPolicy', 'demo', 'api.allow'), 'MeshPolicy.demo.api.allow.yaml');
    assert.equal(objectFileName('Namespace', undefined, 'demo'), 'Namespace.demo.yaml');
    assert.equal(objectKey({ kind: 'Pod', namespace: 'demo', name: 'web' }), 'Pod/demo/web');
    assert.equal(objectKey({ kind: 'Namespace', name: 'demo' }), 'Namespace/demo');
  });
});

describe('sandbox manifests: parsing', () => {
  it('reads a pod: placement, service account, containers and env', () => {
    const [m] = parseManifests(POD, 'pod.yaml');
    assert.equal(m!.kind, 'Pod');
    assert.equal(m!.namespace, 'demo');
    assert.deepEqual(m!.labels, { app: 'web' });
    assert.equal(m!.source, 'pod.yaml:1');
    assert.deepEqual(m!.pod, {
      nodeName: 'node-1', serviceAccountName: 'web',
      containers: [{
        name: 'main', command: ['$(NODE)', 'server.mjs'], args: ['--port', '8080'],
        env: [{ name: 'PORT', value: '8080' }, { name: 'MY_IP', fieldPath: 'status.podIP' }],
      }],
    });
  });

  it('defaults the namespace and service account, skips empty documents, reads multi-doc and List', () => {
    const text = `---\napiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n  spec: {containers: [{name: c, command: [sleep, "9"]}]}\n`;
    const ms = parseManifests(text, 'm.yaml');
    assert.deepEqual(ms.map((m) => objectKey(m)), ['Namespace/demo', 'Pod/default/a']);
    assert.equal(ms[1]!.pod!.serviceAccountName, 'default');
    assert.equal((ms[1]!.object.metadata as { namespace: string }).namespace, 'default');
  });

  it('reads a requested pod address and a Service clusterIP', () => {
    const [pod, svc] = parseManifests(`${POD.replace('labels: {app: web}', 'annotations: {sandbox.nodal.io/ip: 10.244.1.50}')}---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {clusterIP: 10.96.0.30, ports: [{port: 80, targetPort: 8080}]}
`, 'x.yaml');
    assert.equal(pod!.pod!.requestedIp, '10.244.1.50');
    assert.deepEqual(svc!.service, { clusterIp: '10.96.0.30' });
  });
});

describe('sandbox manifests: errors name the file, line, object and field', () => {
  it('a container without command', () => {
    const p = problems(POD.replace('      command: ["$(NODE)", "server.mjs"]\n', ''), 'apps/web.yaml');
    assert.deepEqual(p, ['apps/web.yaml:1 (document 1, Pod demo/web): spec.containers[0].command: is required: the sandbox ignores image and runs command + args as a process in the pod']);
  });

  it('a Node, which the sandbox owns', () => {
    const [p] = problems('apiVersion: v1\nkind: Node\nmetadata: {name: node-3}\n');
    assert.match(p!, /^x\.yaml:1 \(document 1, Node node-3\): kind: Node objects are owned by the sandbox: .*--nodes N/);
  });

  it('an unknown kind, listing the supported ones', () => {
    const [p] = problems('apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n');
    assert.match(p!, /kind: "Deployment" is not something the sandbox applies \(supported: Namespace, Pod, Service, .*MeshPolicy/);
  });

  it('a wrong apiVersion, a bad name, an unquoted label value', () => {
    const p = problems('apiVersion: v2\nkind: Namespace\nmetadata:\n  name: demo\n  labels: {enabled: true}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: Web_1}\n');
    assert.equal(p.length, 3);
    assert.match(p[0]!, /^x\.yaml:1 \(document 1, Namespace demo\): apiVersion: must be "v1" for Namespace, got "v2"$/);
    assert.match(p[1]!, /^x\.yaml:1 \(document 1, Namespace demo\): metadata\.labels\.enabled: must be a string, got true \(quote it: "true"\)$/);
    assert.match(p[2]!, /^x\.yaml:7 \(document 2, Pod Web_1\): metadata\.name: must be a DNS subdomain .*got "Web_1"$/);
  });

  it('a Service port out of range and a clusterIP outside the cluster range', () => {
    const p = problems('apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  clusterIP: 10.0.0.1\n  ports: [{port: 70000}]\n');
    assert.deepEqual(p.map((x) => x.replace(/^.*\): /, '')), [
      'spec.clusterIP: must be an address in 10.96.0.0/16 (or "None"), got "10.0.0.1"',
      'spec.ports[0].port: must be a port number 1..65535, got 70000',
    ]);
  });

  it('an env valueFrom the sandbox cannot fill, and a MeshPolicy action', () => {
    const p = problems(`${POD.replace('status.podIP', 'spec.hostname')}---
apiVersion: nodal.io/v1alpha1
kind: MeshPolicy
metadata: {name: p, namespace: demo}
spec: {action: PERMIT}
`);
    assert.match(p[0]!, /Pod demo\/web\): spec\.containers\[0\]\.env\[1\]\.valueFrom: the sandbox supports only fieldRef\.fieldPath of/);
    assert.match(p[1]!, /^x\.yaml:19 \(document 2, MeshPolicy demo\/p\): spec\.action: must be ALLOW, DENY or AUDIT, got "PERMIT"$/);
  });

  it('a YAML syntax error, with its line', () => {
    const [p] = problems('apiVersion: v1\nkind: Pod\nmetadata: {name: a\n');
    assert.match(p!, /^x\.yaml:1 \(document 1\): YAML: /);
  });
});

describe('sandbox manifests: files and folders', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nodal-sandbox-manifest-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a folder in name order and reports every broken file at once', () => {
    writeFileSync(join(dir, 'b.yaml'), 'apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n');
    writeFileSync(join(dir, 'a.yml'), 'apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n');
    writeFileSync(join(dir, 'notes.txt'), 'not a manifest');
    assert.deepEqual(loadManifestFiles([dir]).map((m) => m.name), ['a', 'b']);
    writeFileSync(join(dir, 'c.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: c}\n');
    assert.throws(() => loadManifestFiles([dir, join(dir, 'missing.yaml')]), (e: ManifestError) => {
      assert.equal(e.problems.length, 2);
      assert.match(e.problems[0]!, /missing\.yaml: no such file or folder/);
      assert.match(e.problems[1]!, /c\.yaml:1 \(document 1, Pod c\): spec: is required/);
      return true;
    });
  });
});

describe('sandbox manifests: $(VAR) expansion', () => {
  it('expands defined variables, leaves unknown ones, and reads $$ as a literal $', () => {
    const vars = { NODE: '/opt/node/bin/node', PORT: '8080' };
    assert.equal(expandVars('$(NODE)', vars), '/opt/node/bin/node');
    assert.equal(expandVars('--port=$(PORT) $(MISSING)', vars), '--port=8080 $(MISSING)');
    assert.equal(expandVars('$$(PORT) costs $$5', vars), '$(PORT) costs $5');
  });
});
