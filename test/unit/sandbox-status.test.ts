import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEnrolled, matchIdentity, readIdentities, renderTable } from '../../cli/dev/status.ts';

describe('sandbox status: table', () => {
  it('aligns columns to the widest cell, two spaces apart, without trailing blanks', () => {
    assert.equal(renderTable(['NAME', 'IP', 'X'], [['backend', '10.244.2.10', ''], ['a', '1.2.3.4', 'yes']]),
      'NAME     IP           X\nbackend  10.244.2.10\na        1.2.3.4      yes');
  });
});

describe('sandbox status: enrollment', () => {
  it('needs the namespace label and no pod opt-out (DESIGN §9)', () => {
    assert.equal(isEnrolled({ 'nodal.io/mesh': 'enabled' }, {}), true);
    assert.equal(isEnrolled({ 'nodal.io/mesh': 'enabled' }, { 'nodal.io/mesh': 'disabled' }), false);
    assert.equal(isEnrolled({}, {}), false);
    assert.equal(isEnrolled(undefined, {}), false);
  });
});

describe('sandbox status: identities', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nodal-sandbox-status-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the control plane identities.json and matches the most specific identity', () => {
    const file = join(dir, 'identities.json');
    writeFileSync(file, JSON.stringify({
      identities: {
        [JSON.stringify(['demo', 'backend', [['app', 'backend']]])]: 256,
        [JSON.stringify(['demo', 'backend', [['app', 'backend'], ['tier', 'db']]])]: 257,
        [JSON.stringify(['demo', 'frontend', [['app', 'frontend']]])]: 258,
      },
      services: { 'demo/backend': 1 },
      policies: {},
    }));
    const ids = readIdentities(file);
    assert.equal(ids.length, 3);
    const pod = { namespace: 'demo', serviceAccountName: 'backend', labels: { app: 'backend', 'pod-template-hash': 'x' } };
    assert.equal(matchIdentity(ids, pod)?.id, 256);
    assert.equal(matchIdentity(ids, { ...pod, labels: { ...pod.labels, tier: 'db' } })?.id, 257);
    assert.equal(matchIdentity(ids, { ...pod, serviceAccountName: 'default' }), undefined);
  });

  it('treats a missing or half-written file as no identities', () => {
    assert.deepEqual(readIdentities(join(dir, 'none.json')), []);
    writeFileSync(join(dir, 'torn.json'), '{"identities": {');
    assert.deepEqual(readIdentities(join(dir, 'torn.json')), []);
  });
});
