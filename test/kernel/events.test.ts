// Verdict events when the ring buffer overflows: loss is counted, never silent.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Datapath } from '../../agent/datapath/index.ts';
import { Lab, type Pod } from '../helpers/lab.ts';
import { bpfObjectDir } from '../helpers/paths.ts';
import { requireKernel } from '../helpers/sys.ts';

const ATTEMPTS = 400;

describe('verdict events', () => {
  requireKernel();
  const lab = new Lab(78);
  let dp: Datapath;
  let pod: Pod, target: Pod;

  before(async () => {
    lab.create();
    pod = lab.addPod('p');
    target = lab.addPod('t');
    // one page of ring: room for ~40 events, so 400 denied connects must overflow it
    dp = await Datapath.open({
      node: `ktest-${lab.id}`, cgroupPath: lab.nodeCgroup, objectDir: bpfObjectDir,
      proxy: { ipv4: lab.gateway, port: 15001 }, eventsBytes: 4096,
    });
    dp.reconcile({
      endpoints: [{ cgroupId: pod.cgroupId, endpointId: 1, identity: 400, enrolled: true }],
      ipcache: [{ cidr: `${target.ip}/32`, identity: 401 }],
      services: [],
      policy: [{ direction: 'EGRESS', localIdentity: 400, peerIdentity: 401, port: 0, action: 'DENY', policyId: 3 }],
    });
  });

  after(async () => {
    await dp?.destroy();
    await lab.destroy();
  });

  it('counts every event lost to a full ring, so received + lost equals what happened', async () => {
    const r = await lab.inPod(pod, ['connect-many', target.ip, '80', String(ATTEMPTS)]);
    assert.deepEqual(r.counts, { EPERM: ATTEMPTS });
    assert.equal(dp.counters().dropConnect, BigInt(ATTEMPTS));

    let received = 0;
    const batches: number[] = [];
    const reader = dp.subscribe((batch) => { received += batch.length; batches.push(batch.length); });
    const lost = Number(dp.counters().eventsLost);
    assert.ok(lost > 0, 'a one-page ring cannot hold 400 events: some must be reported lost');
    for (let i = 0; i < 200 && received + lost < ATTEMPTS; i++) await new Promise((res) => setTimeout(res, 10));
    await reader.close();
    assert.equal(received + lost, ATTEMPTS, `received ${received} + lost ${lost} must account for all ${ATTEMPTS}`);
    assert.ok(batches.some((n) => n > 1), 'events arrive in batches, not one callback per event');
  });
});
