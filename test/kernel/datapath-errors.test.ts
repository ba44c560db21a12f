// Bad input to the datapath: each failure is one clear error with a stable code that
// says what is wrong and what to do, and leaves no half-attached state behind.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Datapath, openAgentMap, pinRootFor, type DatapathConfig } from '../../agent/datapath/index.ts';
import { BpfError, cgroupQuery } from '../../native/index.ts';
import { Lab } from '../helpers/lab.ts';
import { bpfObjectDir, repoRoot } from '../helpers/paths.ts';
import { bpffsMount, requireKernel } from '../helpers/sys.ts';

const HOOKS = ['connect4', 'connect6', 'sock_ops', 'ingress'] as const;

describe('datapath bad input', () => {
  requireKernel();
  const lab = new Lab(79);
  const scratch = mkdtempSync(join(tmpdir(), 'nodal-objs-'));
  let base: DatapathConfig;

  before(() => {
    lab.create();
    base = { node: `ktest-${lab.id}`, cgroupPath: lab.nodeCgroup, objectDir: bpfObjectDir, proxy: { ipv4: lab.gateway, port: 15001 } };
  });
  after(async () => {
    rmSync(scratch, { recursive: true, force: true });
    await lab.destroy();
  });

  const assertNothingLeft = (): void => {
    for (const t of HOOKS) assert.deepEqual(cgroupQuery(lab.nodeCgroup, t), [], `no ${t} program left attached`);
    assert.equal(existsSync(pinRootFor(base.node, bpffsMount())), false, 'no pin folder left behind');
  };

  it('names the missing object file and says to build', async () => {
    await assert.rejects(Datapath.open({ ...base, objectDir: join(scratch, 'nowhere') }), (err: BpfError) => {
      assert.equal(err.code, 'NODAL_ERR_BPF_OPEN');
      assert.match(err.message, /nowhere\/cgroup_connect4\.bpf\.o/);
      assert.match(err.message, /make build/);
      return true;
    });
    assertNothingLeft();
  });

  it('rejects a corrupt object after the others loaded, and attaches none of them', async () => {
    const dir = join(scratch, 'corrupt');
    spawnSync('mkdir', ['-p', dir]);
    for (const o of ['cgroup_connect4', 'cgroup_connect6', 'sockops']) copyFileSync(join(bpfObjectDir, `${o}.bpf.o`), join(dir, `${o}.bpf.o`));
    writeFileSync(join(dir, 'cgroup_skb_ingress.bpf.o'), Buffer.from('\x7fELF this is not a BPF object at all'));
    await assert.rejects(Datapath.open({ ...base, objectDir: dir }), (err: BpfError) => {
      assert.equal(err.code, 'NODAL_ERR_BPF_OPEN');
      assert.match(err.message, /cgroup_skb_ingress\.bpf\.o/);
      return true;
    });
    assertNothingLeft();
  });

  it('refuses a cgroup that does not exist, saying so', async () => {
    await assert.rejects(Datapath.open({ ...base, cgroupPath: join(lab.cgroupRoot, 'no-such-node') }), (err: Error & { code: string }) => {
      assert.equal(err.code, 'NODAL_ERR_CGROUP_MISSING');
      assert.match(err.message, /no-such-node does not exist/);
      return true;
    });
    assertNothingLeft();
  });

  it('rejects a map key of the wrong size before it reaches the kernel', async () => {
    const dp = await Datapath.open(base);
    try {
      const m = openAgentMap(dp.pinRoot, 'nodal_policy');
      try {
        assert.throws(() => m.update(Buffer.alloc(3), Buffer.alloc(8)), (err: BpfError) => {
          assert.equal(err.code, 'NODAL_ERR_BPF_MAP');
          assert.match(err.message, /key is 3 bytes, map expects 12/);
          return true;
        });
      } finally {
        m.close();
      }
    } finally {
      await dp.destroy();
    }
    assertNothingLeft();
  });

  it('says it needs root when run without privileges', () => {
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all',
      process.execPath, join(repoRoot, 'dist/test/helpers/agent-stub.js'), JSON.stringify(base), '{"endpoints":[],"ipcache":[],"services":[],"policy":[]}'],
    { encoding: 'utf8', timeout: 20_000 });
    const out = JSON.parse(r.stdout.trim().split('\n')[0] ?? '{}') as { ready: boolean; code: string; message: string };
    assert.equal(out.ready, false);
    assert.equal(out.code, 'NODAL_ERR_DATAPATH_UNAVAILABLE');
    assert.match(out.message, /root/);
    assertNothingLeft();
  });
});
