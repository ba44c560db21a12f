import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { DirectorySource } from '../../control/index.ts';
import { TempDirs, loadDirectory, silent, write } from '../fixtures/control/helpers.ts';

const tmp = new TempDirs();
after(() => tmp.cleanup());

const policyDoc = (spec: string, name = 'api-allow'): string => `apiVersion: nodal.io/v1alpha1
kind: MeshPolicy
metadata: { name: ${name}, namespace: demo }
spec:
${spec}`;

const load = (files: Record<string, string>): Promise<{ dir: string; src: DirectorySource }> => loadDirectory(tmp, files);

describe('directory source validation', () => {
  // each bad document → the message names the file, the object and the field
  const cases: Array<{ what: string; doc: string; object: string; field: string | undefined; reason: RegExp }> = [
    {
      what: 'a port that is not a number',
      doc: policyDoc('  rules:\n    - to: [{ operation: { ports: ["http"] } }]'),
      object: 'MeshPolicy demo/api-allow', field: 'spec.rules[0].to[0].operation.ports[0]', reason: /^"http" is not a port number$/,
    },
    {
      what: 'an unknown action',
      doc: policyDoc('  action: PERMIT'),
      object: 'MeshPolicy demo/api-allow', field: 'spec.action', reason: /"PERMIT" is not one of ALLOW, DENY, AUDIT/,
    },
    {
      what: 'an Istio field nodal does not enforce',
      doc: policyDoc('  rules:\n    - from: [{ source: { ipBlocks: ["10.0.0.0/8"] } }]'),
      object: 'MeshPolicy demo/api-allow', field: 'spec.rules[0].from[0].source.ipBlocks', reason: /unknown field/,
    },
    {
      what: 'a source whose only list is empty (would otherwise match anyone)',
      doc: policyDoc('  action: DENY\n  rules:\n    - from: [{ source: { principals: [] } }]'),
      object: 'MeshPolicy demo/api-allow', field: 'spec.rules[0].from[0].source', reason: /at least one of principals/,
    },
    {
      what: 'a when condition without values',
      doc: policyDoc('  rules:\n    - when: [{ key: "request.headers[x-user]" }]'),
      object: 'MeshPolicy demo/api-allow', field: 'spec.rules[0].when[0]', reason: /at least one of values, notValues/,
    },
    {
      what: 'the wrong apiVersion',
      doc: 'apiVersion: nodal.io/v1\nkind: MeshPolicy\nmetadata: { name: p, namespace: demo }\n',
      object: 'MeshPolicy demo/p', field: 'apiVersion', reason: /expected nodal.io\/v1alpha1/,
    },
    {
      what: 'a missing metadata.name',
      doc: 'apiVersion: v1\nkind: Pod\nmetadata: { namespace: demo }\n',
      object: 'Pod (document 1)', field: 'metadata.name', reason: /^is required$/,
    },
    {
      what: 'a label value of the wrong type',
      doc: 'apiVersion: v1\nkind: Pod\nmetadata: { name: p, namespace: demo, labels: { version: 2 } }\n',
      object: 'Pod demo/p', field: 'metadata.labels.version', reason: /expected a string, got number/,
    },
    {
      what: 'a pod address that is not an IP',
      doc: 'apiVersion: v1\nkind: Pod\nmetadata: { name: p }\nstatus: { podIP: 10.1.2 }\n',
      object: 'Pod default/p', field: 'status.podIP', reason: /"10.1.2" is not an IP address/,
    },
    {
      what: 'a service port out of range',
      doc: 'apiVersion: v1\nkind: Service\nmetadata: { name: s, namespace: demo }\nspec:\n  ports: [{ port: 70000 }]\n',
      object: 'Service demo/s', field: 'spec.ports[0].port', reason: /70000 is not a port number/,
    },
    {
      what: 'a node tunnel address that is not an IP',
      doc: 'apiVersion: v1\nkind: Node\nmetadata: { name: n1, annotations: { nodal.io/tunnel-ip: nope } }\nstatus: { addresses: [{ type: InternalIP, address: 192.168.0.1 }] }\n',
      object: 'Node n1', field: 'metadata.annotations.nodal.io/tunnel-ip', reason: /"nope" is not an IP address/,
    },
    {
      what: 'a node without an InternalIP',
      doc: 'apiVersion: v1\nkind: Node\nmetadata: { name: n2 }\n',
      object: 'Node n2', field: 'status.addresses', reason: /needs an InternalIP/,
    },
    {
      what: 'an operation header with no pattern',
      doc: policyDoc('  rules:\n    - to: [{ operation: { headers: { x-tenant: [] } } }]'),
      object: 'MeshPolicy demo/api-allow', field: 'spec.rules[0].to[0].operation.headers.x-tenant', reason: /at least one pattern/,
    },
    {
      what: 'operation headers naming no header (would match every request)',
      doc: policyDoc('  rules:\n    - to: [{ operation: { headers: {} } }]'),
      object: 'MeshPolicy demo/api-allow', field: 'spec.rules[0].to[0].operation.headers', reason: /at least one header/,
    },
    {
      what: 'an operation header name that is no HTTP token',
      doc: policyDoc('  rules:\n    - to: [{ operation: { headers: { "x tenant": [a] } } }]'),
      object: 'MeshPolicy demo/api-allow', field: 'spec.rules[0].to[0].operation.headers.x tenant', reason: /not an HTTP header name/,
    },
    {
      what: 'an operation header listed twice in different case',
      doc: policyDoc('  rules:\n    - to: [{ operation: { headers: { x-tenant: [a], X-Tenant: [b] } } }]'),
      object: 'MeshPolicy demo/api-allow', field: 'spec.rules[0].to[0].operation.headers.X-Tenant', reason: /listed twice/,
    },
    {
      what: 'gRPC methods that are not a list',
      doc: policyDoc('  rules:\n    - to: [{ operation: { grpcMethods: GetCart } }]'),
      object: 'MeshPolicy demo/api-allow', field: 'spec.rules[0].to[0].operation.grpcMethods', reason: /expected a list/,
    },
    {
      what: 'a list where a mapping belongs',
      doc: policyDoc('  selector: [app]'),
      object: 'MeshPolicy demo/api-allow', field: 'spec.selector', reason: /expected a mapping, got list/,
    },
  ];

  for (const c of cases) {
    it(`rejects ${c.what}`, async () => {
      const { dir, src } = await load({ 'bad.yaml': c.doc });
      const [err, ...rest] = src.errors();
      assert.equal(rest.length, 0, `one error expected, got ${src.errors().map((e) => e.message).join(' | ')}`);
      assert.equal(err!.code, 'NODAL_ERR_CONFIG_INVALID');
      assert.equal(err!.file, join(dir, 'bad.yaml'));
      assert.equal(err!.object, c.object);
      assert.equal(err!.field, c.field);
      assert.match(err!.reason, c.reason);
      assert.equal(err!.message, `${join(dir, 'bad.yaml')}: ${c.object}: ${c.field}: ${err!.reason}`);
      await src.close();
    });
  }

  it('formats the message the way an operator reads it', async () => {
    const { dir, src } = await load({ 'policy.yaml': policyDoc('  rules:\n    - to: [{ operation: { ports: ["http"] } }]') });
    assert.equal(src.errors()[0]!.message,
      `${join(dir, 'policy.yaml')}: MeshPolicy demo/api-allow: spec.rules[0].to[0].operation.ports[0]: "http" is not a port number`);
    assert.deepEqual(JSON.parse(JSON.stringify(src.errors()[0])).code, 'NODAL_ERR_CONFIG_INVALID');
    await src.close();
  });

  it('rejects the second of two objects with the same kind, namespace and name', async () => {
    const { dir, src } = await load({
      'a.yaml': policyDoc('  action: DENY'),
      'b.yaml': policyDoc('  action: ALLOW'),
    });
    assert.equal(src.state().policies.length, 1);
    assert.equal(src.state().policies[0]!.action, 'DENY');
    assert.equal(src.errors().length, 1);
    assert.equal(src.errors()[0]!.file, join(dir, 'b.yaml'));
    assert.match(src.errors()[0]!.message, /MeshPolicy demo\/api-allow: metadata.name: duplicate: already defined in .*a\.yaml/);
    await src.close();
  });

  it('ignores kinds it does not read, accepts Istio-style string ports and defaults', async () => {
    const { src } = await load({
      'mixed.yml': `apiVersion: apps/v1
kind: Deployment
metadata: { name: d }
---
${policyDoc('  selector: { matchLabels: { app: api } }\n  rules:\n    - to: [{ operation: { ports: ["8080", 9090], methods: [GET] } }]')}
---
`,
      'notes.txt': 'not: yaml: at all: [',
    });
    assert.deepEqual(src.errors(), []);
    const [p] = src.state().policies;
    assert.deepEqual(p, {
      namespace: 'demo', name: 'api-allow', matchLabels: { app: 'api' }, action: 'ALLOW',
      rules: [{ from: [], to: [{ ports: [8080, 9090], methods: ['GET'] }], when: [] }],
    });
    await src.close();
  });

  it('keeps the last good version of an object whose new version is invalid', async () => {
    const { dir, src } = await load({
      'policy.yaml': `${policyDoc('  action: DENY\n  rules:\n    - from: [{ source: { namespaces: [other] } }]')}\n---\n${policyDoc('  action: ALLOW', 'second')}`,
    });
    assert.deepEqual(src.errors(), []);
    const good = src.state().policies.find((p) => p.name === 'api-allow');
    write(dir, 'policy.yaml', `${policyDoc('  action: DENY\n  rules:\n    - to: [{ operation: { ports: ["http"] } }]')}\n---\n${policyDoc('  action: AUDIT', 'second')}`);
    src.scan();
    assert.equal(src.errors().length, 1);
    // the invalid one stays as it was; its valid neighbour in the same file moves on
    assert.deepEqual(src.state().policies.find((p) => p.name === 'api-allow'), good);
    assert.equal(src.state().policies.find((p) => p.name === 'second')?.action, 'AUDIT');
    write(dir, 'policy.yaml', policyDoc('  action: DENY'));
    src.scan();
    assert.deepEqual(src.errors(), []);
    assert.deepEqual(src.state().policies.map((p) => [p.name, p.action, p.rules.length]), [['api-allow', 'DENY', 0]]);
    await src.close();
  });

  it('keeps every object of a file that stops parsing, and names the line', async () => {
    const { dir, src } = await load({ 'two.yaml': `${policyDoc('  action: DENY', 'one')}\n---\n${policyDoc('  action: DENY', 'two')}` });
    const before = src.state();
    write(dir, 'two.yaml', `${policyDoc('  action: DENY', 'one')}\n  rules: [\n`);
    src.scan();
    assert.deepEqual(src.state(), before);
    const [err] = src.errors();
    assert.equal(err!.file, join(dir, 'two.yaml'));
    assert.match(err!.field!, /^line \d+, column \d+$/);
    assert.match(err!.reason, /^YAML syntax error: /);
    await src.close();
  });

  it('drops the objects of a removed file', async () => {
    const { dir, src } = await load({ 'p.yaml': policyDoc('  action: DENY') });
    assert.equal(src.state().policies.length, 1);
    rmSync(join(dir, 'p.yaml'));
    src.scan();
    assert.equal(src.state().policies.length, 0);
    await src.close();
  });

  it('fails to start on a missing directory with a stable code', async () => {
    const src = new DirectorySource({ dir: join(tmp.make(), 'missing'), logger: silent });
    await assert.rejects(src.start(() => {}), { code: 'NODAL_ERR_CONFIG_SOURCE' });
  });
});
