// The TypeScript codecs against the C structs: sizes and member offsets come from the
// BTF of the compiled objects, and every #define the agent mirrors from the header.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ALL_CODECS } from '../../agent/datapath/codec.ts';
import * as C from '../../agent/datapath/constants.ts';
import { openObject } from '../../native/index.ts';
import { bpfObjectDir, repoRoot } from '../helpers/paths.ts';

describe('codec layout', () => {
  it('matches every struct of bpf/api/nodal.h as compiled (size and member offsets)', () => {
    // each struct appears in at least one object's BTF; look in all of them
    const objs = ['cgroup_connect4', 'cgroup_skb_ingress', 'sockops'].map((o) => openObject(join(bpfObjectDir, `${o}.bpf.o`)));
    try {
      for (const codec of ALL_CODECS) {
        let layout: ReturnType<(typeof objs)[0]['structLayout']> | undefined;
        for (const o of objs) {
          try { layout = o.structLayout(codec.cName); break; } catch { /* not in this object */ }
        }
        assert.ok(layout, `struct ${codec.cName} is in no compiled object`);
        assert.equal(codec.size, layout.size, `sizeof(struct ${codec.cName})`);
        const cMembers = layout.members.map((m) => `${m.name}@${m.offset}`);
        const tsMembers = codec.fields.map((f) => `${f.name}@${f.offset}`);
        assert.deepEqual(tsMembers, cMembers, `members of struct ${codec.cName}`);
      }
    } finally {
      for (const o of objs) o.close();
    }
  });

  it('mirrors every number the header defines', () => {
    const h = readFileSync(join(repoRoot, 'bpf/api/nodal.h'), 'utf8');
    const def = (name: string): number => {
      const m = new RegExp(`#define ${name}\\s+\\(?(?:1u << )?(\\d+)`).exec(h);
      assert.ok(m, `${name} is defined in nodal.h`);
      return name.startsWith('EP_F_') || name.startsWith('POLICY_F_') ? 1 << Number(m[1]) : Number(m[1]);
    };
    assert.deepEqual([def('IDENTITY_HOST'), def('IDENTITY_WORLD'), def('IDENTITY_UNMANAGED'), def('IDENTITY_HEALTH')],
      [C.Identity.HOST, C.Identity.WORLD, C.Identity.UNMANAGED, C.Identity.HEALTH]);
    assert.deepEqual([def('EP_F_ENROLLED'), def('EP_F_EGRESS_ENFORCED'), def('EP_F_INGRESS_ENFORCED')],
      [C.EndpointFlag.ENROLLED, C.EndpointFlag.EGRESS_ENFORCED, C.EndpointFlag.INGRESS_ENFORCED]);
    assert.deepEqual([def('VERDICT_FORWARDED'), def('VERDICT_DROPPED'), def('VERDICT_REDIRECTED')],
      [C.Verdict.FORWARDED, C.Verdict.DROPPED, C.Verdict.REDIRECTED]);
    for (const [k, v] of Object.entries(C.Reason)) assert.equal(def(`REASON_${k}`), v, `REASON_${k}`);
    assert.deepEqual([def('DIR_EGRESS'), def('DIR_INGRESS'), def('POLICY_ALLOW'), def('POLICY_DENY'), def('POLICY_F_DEFAULT_DENY'), def('POLICY_F_TO_PROXY')],
      [C.Direction.EGRESS, C.Direction.INGRESS, C.PolicyAction.ALLOW, C.PolicyAction.DENY, C.PolicyFlag.DEFAULT_DENY, C.PolicyFlag.TO_PROXY]);
    assert.deepEqual([def('COUNTER_DROP_CONNECT'), def('COUNTER_DROP_INGRESS'), def('COUNTER_EVENTS_LOST'), def('COUNTER_REDIRECTS'), def('COUNTER_MAX')],
      [C.Counter.DROP_CONNECT, C.Counter.DROP_INGRESS, C.Counter.EVENTS_LOST, C.Counter.REDIRECTS, C.Counter.MAX]);
  });
});
