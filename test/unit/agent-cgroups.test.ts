// Finding local pods' cgroups in real kubelet layouts (systemd and cgroupfs drivers,
// containerd and CRI-O, every QoS class) and the sandbox's, on fake trees built with mkdir:
// the resolver only reads directories and their inode numbers, so no privileges are needed.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PodCgroups, sandboxCgroups } from '../../agent/cgroups.ts';
import { parseAgentArgs } from '../../agent/config.ts';
import { desiredFromSnapshot } from '../../agent/enrollment.ts';
import type { EndpointInfo, Snapshot } from '../../control/api/types.ts';

const roots: string[] = [];
after(() => { for (const r of roots) rmSync(r, { recursive: true, force: true }); });

/** a fresh fake cgroup2 mount */
function mount(): string {
  const r = mkdtempSync(join(tmpdir(), 'nodal-cgroups-'));
  roots.push(r);
  return r;
}
const mk = (...parts: string[]): string => {
  const d = join(...parts);
  mkdirSync(d, { recursive: true });
  return d;
};
const ino = (d: string): bigint => statSync(d, { bigint: true }).ino;

const UID = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const OTHER = '6fa459ea-ee8a-3ca4-894e-db77e160355e';
const C1 = 'a'.repeat(64);
const C2 = 'b'.repeat(64);

type Qos = 'guaranteed' | 'burstable' | 'besteffort';
type Runtime = 'containerd' | 'crio';

/** the pod directory kubelet creates, relative to the cgroup2 mount */
function podDir(driver: 'systemd' | 'cgroupfs', qos: Qos, uid: string): string {
  if (driver === 'systemd') {
    const u = uid.replaceAll('-', '_');
    return qos === 'guaranteed'
      ? join('kubepods.slice', `kubepods-pod${u}.slice`)
      : join('kubepods.slice', `kubepods-${qos}.slice`, `kubepods-${qos}-pod${u}.slice`);
  }
  return qos === 'guaranteed' ? join('kubepods', `pod${uid}`) : join('kubepods', qos, `pod${uid}`);
}

/** a container's cgroup name inside its pod directory */
function containerName(driver: 'systemd' | 'cgroupfs', runtime: Runtime, id: string): string {
  if (driver === 'systemd') return runtime === 'containerd' ? `cri-containerd-${id}.scope` : `crio-${id}.scope`;
  return runtime === 'containerd' ? id : `crio-${id}`;
}

describe('pod cgroups: kubelet layouts', () => {
  for (const driver of ['systemd', 'cgroupfs'] as const) {
    for (const qos of ['guaranteed', 'burstable', 'besteffort'] as const) {
      for (const runtime of ['containerd', 'crio'] as const) {
        it(`finds a ${qos} pod's containers (${driver} driver, ${runtime})`, () => {
          const cg2 = mount();
          const kubepods = driver === 'systemd' ? 'kubepods.slice' : 'kubepods';
          const pod = mk(cg2, podDir(driver, qos, UID));
          const a = mk(pod, containerName(driver, runtime, C1));
          const b = mk(pod, containerName(driver, runtime, C2));
          // unrelated: another pod in every QoS class, the QoS parents, system slices
          for (const q of ['guaranteed', 'burstable', 'besteffort'] as const) mk(cg2, podDir(driver, q, OTHER), containerName(driver, runtime, 'c'.repeat(64)));
          mk(cg2, 'system.slice', 'containerd.service');
          if (runtime === 'crio') mk(pod, `crio-conmon-${C1}${driver === 'systemd' ? '.scope' : ''}`);

          const r = new PodCgroups({ cgroup2: cg2, nodeCgroup: join(cg2, kubepods) });
          const found = r.resolve(UID);
          assert.ok(found, 'pod found');
          assert.equal(found.kind, driver);
          assert.equal(found.dir, pod);
          assert.deepEqual(found.containers, [{ dir: a, id: ino(a) }, { dir: b, id: ino(b) }]);
          assert.deepEqual(r.ids({ uid: UID }), [ino(a), ino(b)]);
          assert.notEqual(ino(a), ino(pod), 'the container ids, not the pod-level id');
        });
      }
    }
  }

  it('takes the leaves: crun runs the processes in <scope>/container', () => {
    const cg2 = mount();
    const pod = mk(cg2, podDir('systemd', 'burstable', UID));
    const leaf = mk(pod, `crio-${C1}.scope`, 'container');
    const r = new PodCgroups({ cgroup2: cg2, nodeCgroup: join(cg2, 'kubepods.slice') });
    assert.deepEqual(r.resolve(UID)?.containers, [{ dir: leaf, id: ino(leaf) }]);
  });

  it('finds kubepods under the cgroup2 mount when --cgroup names another directory', () => {
    const cg2 = mount();
    const pod = mk(cg2, podDir('cgroupfs', 'besteffort', UID));
    const c = mk(pod, C1);
    const r = new PodCgroups({ cgroup2: cg2, nodeCgroup: join(cg2, 'elsewhere') });
    assert.deepEqual(r.ids({ uid: UID }), [ino(c)]);
  });

  it('follows a kubelet with --cgroup-root (kind: kubelet.slice/kubelet-kubepods.slice)', () => {
    const cg2 = mount();
    const u = UID.replaceAll('-', '_');
    const pod = mk(cg2, 'kubelet.slice', 'kubelet-kubepods.slice', 'kubelet-kubepods-besteffort.slice', `kubelet-kubepods-besteffort-pod${u}.slice`);
    const c = mk(pod, `cri-containerd-${C1}.scope`);
    const viaMount = new PodCgroups({ cgroup2: cg2, nodeCgroup: join(cg2, 'nowhere') });
    assert.deepEqual(viaMount.ids({ uid: UID }), [ino(c)]);
    // --cgroup naming the kubepods root works whatever its name
    const viaNode = new PodCgroups({ cgroup2: join(cg2, 'nowhere'), nodeCgroup: join(cg2, 'kubelet.slice', 'kubelet-kubepods.slice') });
    assert.equal(viaNode.resolve(UID)?.dir, pod);
  });

  it('a pod whose containers are not created yet has no ids (pending)', () => {
    const cg2 = mount();
    mk(cg2, podDir('systemd', 'guaranteed', UID));
    const r = new PodCgroups({ cgroup2: cg2, nodeCgroup: join(cg2, 'kubepods.slice') });
    assert.deepEqual(r.resolve(UID)?.containers, []);
    assert.deepEqual(r.ids({ uid: UID }), []);
  });

  it('finds nothing for an unknown pod, and never turns a UID into a path outside the tree', () => {
    const cg2 = mount();
    mk(cg2, podDir('cgroupfs', 'burstable', OTHER), C1);
    mk(cg2, 'kubepods', 'pod..', C1);
    const r = new PodCgroups({ cgroup2: cg2, nodeCgroup: join(cg2, 'kubepods') });
    assert.equal(r.resolve(UID), undefined);
    assert.equal(r.resolve('..'), undefined);
    assert.equal(r.resolve('../kubepods/burstable/pod' + OTHER), undefined);
    assert.equal(r.cached, 0);
  });
});

describe('pod cgroups: sandbox layout and layout choice', () => {
  it('sandbox: the pod directory itself, processes directly in it', () => {
    const cg2 = mount();
    const node = mk(cg2, 'nodal-sandbox', 'node-1');
    const pod = mk(node, `pod-${UID}`);
    mk(node, `pod-${OTHER}`);
    for (const r of [new PodCgroups({ cgroup2: cg2, nodeCgroup: node }), sandboxCgroups(node)]) {
      const found = r.resolve(UID);
      assert.equal(found?.kind, 'sandbox');
      assert.deepEqual(found?.containers, [{ dir: pod, id: ino(pod) }]);
    }
  });

  it('--cgroup-layout sandbox ignores kubelet directories, kubelet ignores the sandbox', () => {
    const cg2 = mount();
    const node = mk(cg2, 'nodal-sandbox', 'node-1');
    mk(node, `pod-${UID}`);
    const kc = mk(cg2, podDir('systemd', 'burstable', OTHER), `cri-containerd-${C1}.scope`);
    mk(cg2, podDir('systemd', 'burstable', UID), `cri-containerd-${C2}.scope`);
    mk(node, `pod-${OTHER}`);
    const sandbox = new PodCgroups({ cgroup2: cg2, nodeCgroup: node, layout: 'sandbox' });
    assert.equal(sandbox.resolve(UID)?.kind, 'sandbox');
    assert.equal(sandbox.resolve(OTHER)?.kind, 'sandbox');
    const kubelet = new PodCgroups({ cgroup2: cg2, nodeCgroup: node, layout: 'kubelet' });
    assert.equal(kubelet.resolve(UID)?.kind, 'systemd');
    assert.deepEqual(kubelet.ids({ uid: OTHER }), [ino(kc)]);
  });

  it('caches the pod directory until it disappears, then probes again', () => {
    const cg2 = mount();
    const r = new PodCgroups({ cgroup2: cg2, nodeCgroup: join(cg2, 'kubepods.slice') });
    assert.equal(r.resolve(UID), undefined);
    const pod = mk(cg2, podDir('systemd', 'besteffort', UID));
    mk(pod, `cri-containerd-${C1}.scope`);
    assert.equal(r.resolve(UID)?.dir, pod);
    assert.equal(r.cached, 1);
    rmSync(pod, { recursive: true });
    assert.equal(r.resolve(UID), undefined);
    assert.equal(r.cached, 0);
    const moved = mk(cg2, 'kubepods', `pod${UID}`);
    const c = mk(moved, C1);
    assert.deepEqual(r.ids({ uid: UID }), [ino(c)]);
    r.retain([OTHER]);
    assert.equal(r.cached, 0);
  });

  it('--cgroup-layout defaults to auto and rejects anything else', () => {
    const base = ['--node', 'n1', '--control', 'c:15012', '--state-dir', '/tmp/x', '--cgroup', '/sys/fs/cgroup/kubepods.slice',
      '--proxy-ip', '10.0.0.1', '--tunnel-ip', '10.0.0.2', '--underlay-ip', '10.0.0.3'];
    assert.equal(parseAgentArgs(base).cgroupLayout, 'auto');
    assert.equal(parseAgentArgs([...base, '--cgroup-layout', 'kubelet']).cgroupLayout, 'kubelet');
    assert.throws(() => parseAgentArgs([...base, '--cgroup-layout', 'cgroupv1']), /--cgroup-layout must be auto, sandbox or kubelet/);
  });
});

describe('enrollment with container cgroups', () => {
  const ep = (uid: string, name: string, node = 'n1'): EndpointInfo => ({
    namespace: 'shop', name, uid, node, ip: `10.244.0.${name.length}`, identity: 300 + name.length, labels: {},
    serviceAccount: 'default', enrolled: true,
  });
  const snapshot = (endpoints: EndpointInfo[]): Snapshot => ({
    version: 1, node: 'n1', trustDomain: 'cluster.local', nodes: [], identities: [], endpoints, services: [], policies: [], l4: [],
  });

  it('a pod of two containers is two endpoint entries with one endpoint id; a restart is followed', () => {
    const cg2 = mount();
    const pod = mk(cg2, podDir('systemd', 'burstable', UID));
    const app = mk(pod, `cri-containerd-${C1}.scope`);
    const sidecar = mk(pod, `cri-containerd-${C2}.scope`);
    const r = new PodCgroups({ cgroup2: cg2, nodeCgroup: join(cg2, 'kubepods.slice') });
    const s = snapshot([ep(UID, 'web'), ep(OTHER, 'db'), ep('0000', 'remote', 'n2')]);

    const first = desiredFromSnapshot(s, 'n1', r.ids);
    assert.deepEqual(first.desired.endpoints.map((e) => [e.cgroupId, e.endpointId, e.identity]),
      [[ino(app), 1, 303], [ino(sidecar), 1, 303]]);
    assert.deepEqual([...first.byCgroup.keys()], [ino(app), ino(sidecar)]);
    assert.equal(first.byCgroup.get(ino(sidecar))?.name, 'web');
    assert.deepEqual(first.enrolled, ['shop/web']);
    assert.deepEqual(first.pending, ['shop/db']);

    // the runtime replaces the app container: a new directory, a new inode, a new cgroup id
    // (made before the old one goes, so the file system cannot hand back the same inode)
    const before = ino(app);
    const restarted = mk(pod, `cri-containerd-${'d'.repeat(64)}.scope`);
    rmSync(app, { recursive: true });
    assert.notEqual(ino(restarted), before);
    const next = desiredFromSnapshot(s, 'n1', r.ids);
    assert.deepEqual(next.desired.endpoints.map((e) => e.cgroupId).sort(), [ino(sidecar), ino(restarted)].sort());
    assert.equal(next.byCgroup.has(before), false);
  });
});
