// Flow uuids come in blocks (agent/flows/uuid.ts): across block boundaries every one is a
// well-formed RFC 4122 version 4 UUID, and none repeats.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { flowUuid } from '../../agent/flows/uuid.ts';

describe('flow uuids', () => {
  it('are version 4 UUIDs, all different, over several blocks', () => {
    const n = 5_000;
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) {
      const u = flowUuid();
      assert.match(u, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, `uuid ${i}: ${u}`);
      seen.add(u);
    }
    assert.equal(seen.size, n);
  });
});
