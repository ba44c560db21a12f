// The image (deploy/Dockerfile, .dockerignore): Node 24 stages that copy files which exist
// and call Makefile targets that exist. There is no Docker engine here, so this reads the
// Dockerfile the way the builder would instead of building it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../helpers/paths.ts';

interface Instruction { op: string; args: string; stage: string }

function dockerInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let stage = '';
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) {
      line = `${line.slice(0, -1)} ${lines[++i]!.trim()}`;
      while (i + 1 < lines.length && /^\s*#/.test(lines[i + 1]!)) i++;
    }
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
    assert.ok(m, `Dockerfile: cannot read "${line}"`);
    if (m[1] === 'FROM') stage = (/\bAS\s+(\S+)/i.exec(m[2]!)?.[1] ?? '').toLowerCase();
    out.push({ op: m[1]!, args: m[2]!.trim(), stage });
  }
  return out;
}

/** .dockerignore patterns as the builder reads them: ** spans folders, * stays in one */
function dockerIgnored(patterns: string[], path: string): boolean {
  const re = (p: string): RegExp => new RegExp(`^${p.replace(/[.+^${}()|[\]]/g, '\\$&').replace(/\*\*\//g, '\u0000').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]').replace(/\u0000/g, '(.*/)?')}(/.*)?$`);
  return patterns.some((p) => re(p).test(path));
}

describe('deploy/Dockerfile', () => {
  const dockerfile = readFileSync(join(repoRoot, 'deploy/Dockerfile'), 'utf8');
  const steps = dockerInstructions(dockerfile);
  const ignore = readFileSync(join(repoRoot, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));

  it('is multi-stage on Node 24 Debian 12 images: build, production dependencies, slim runtime', () => {
    const froms = steps.filter((x) => x.op === 'FROM').map((x) => x.args);
    assert.deepEqual(froms, ['node:24-bookworm AS builder', 'node:24-bookworm AS deps', 'node:24-bookworm-slim AS runtime']);
    assert.match(dockerfile, /npm ci --omit=dev/);
    for (const run of steps.filter((x) => x.op === 'RUN' && x.args.includes('apt-get install'))) assert.match(run.args, /--no-install-recommends/);
  });

  it('builds with the Makefile\'s own targets and refuses to build without kernel BTF', () => {
    const makefile = readFileSync(join(repoRoot, 'Makefile'), 'utf8');
    const makeCall = /(?:^|&&|;)\s*make ([a-z ]+)/;
    const make = steps.find((x) => x.stage === 'builder' && x.op === 'RUN' && makeCall.test(x.args));
    assert.ok(make, 'the builder runs make');
    const targets = makeCall.exec(make.args)![1]!.trim().split(/\s+/);
    assert.deepEqual(targets, ['bpf', 'native', 'ts']);
    for (const t of targets) assert.match(makefile, new RegExp(`^${t}:`, 'm'), `Makefile has no target ${t}`);
    assert.match(make.args, /\/sys\/kernel\/btf\/vmlinux[\s\S]*exit 1/);
    // every builder package is one the Makefile's setup installs on Debian 12
    const aptPackages = new Set(/APT_PACKAGES\s*:=([\s\S]*?)\n\n/.exec(makefile)![1]!.replace(/\\\n/g, ' ').split(/\s+/).filter(Boolean));
    const builderApt = steps.find((x) => x.stage === 'builder' && x.args.includes('apt-get install'))!;
    const pkgs = builderApt.args.split('--no-install-recommends')[1]!.split('&&')[0]!.trim().split(/\s+/);
    for (const p of pkgs) assert.ok(aptPackages.has(p), `${p} is not among the Makefile's APT_PACKAGES`);
  });

  it('copies from the context only files that exist and are not ignored', () => {
    for (const c of steps.filter((x) => x.op === 'COPY' && !x.args.startsWith('--from'))) {
      const parts = c.args.split(/\s+/);
      for (const src of parts.slice(0, -1)) {
        if (src === '.') continue;
        assert.ok(existsSync(join(repoRoot, src)), `COPY ${src}: not in the repository`);
        assert.ok(!dockerIgnored(ignore, src), `COPY ${src}: excluded by .dockerignore`);
      }
    }
    for (const needed of ['package.json', 'package-lock.json', 'Makefile', 'tsconfig.json', 'bpf/api/nodal.h', 'native/CMakeLists.txt', 'agent/main.ts', 'control/proto', 'test/fixtures/bpf']) {
      assert.ok(!dockerIgnored(ignore, needed), `.dockerignore excludes ${needed}, which the build needs`);
    }
    for (const built of ['node_modules', 'dist/agent/main.js', 'bpf/build/vmlinux.h', 'native/build/Release/nodal_native.node', '.tools/node/bin/node']) {
      assert.ok(dockerIgnored(ignore, built), `.dockerignore lets ${built} from this machine into the build`);
    }
  });

  it('the runtime takes build outputs whose sources exist, and starts the agent', () => {
    const fromBuilder = steps.filter((x) => x.stage === 'runtime' && x.args.startsWith('--from=builder')).map((x) => x.args.split(/\s+/)[1]!.replace(/^\/src\//, ''));
    const sourceOf = (out: string): string[] => {
      if (out === 'package.json') return ['package.json'];
      if (out.startsWith('dist/')) return [out.slice('dist/'.length)];
      if (out === 'native/build/Release/nodal_native.node') return ['native/CMakeLists.txt', 'native/src'];
      if (out === 'bpf/build/*.bpf.o') return readdirSync(join(repoRoot, 'bpf')).filter((f) => f.endsWith('.bpf.c')).map((f) => `bpf/${f}`);
      return [out];
    };
    for (const out of fromBuilder) {
      const srcs = sourceOf(out);
      assert.ok(srcs.length > 0 && srcs.every((p) => existsSync(join(repoRoot, p))), `COPY --from=builder ${out}: no source for it in the repository`);
    }
    assert.ok(fromBuilder.includes('native/build/Release/nodal_native.node'));
    assert.ok(fromBuilder.includes('bpf/build/*.bpf.o'));
    assert.ok(fromBuilder.includes('control/proto'), 'the agent and control plane load .proto files at run time');
    assert.match(readFileSync(join(repoRoot, 'native/CMakeLists.txt'), 'utf8'), /project\(nodal_native\b/);
    assert.ok(steps.some((x) => x.stage === 'runtime' && x.op === 'COPY' && x.args.startsWith('--from=deps') && x.args.includes('node_modules')));
    const workdir = steps.filter((x) => x.stage === 'runtime' && x.op === 'WORKDIR').at(-1)?.args;
    assert.equal(workdir, '/opt/nodal');
    const entry = steps.filter((x) => x.op === 'ENTRYPOINT').at(-1)!;
    assert.deepEqual(JSON.parse(entry.args), ['node', 'dist/agent/main.js']);
    assert.ok(existsSync(join(repoRoot, 'agent/main.ts')));
    assert.equal(steps.filter((x) => x.stage === 'runtime' && x.op === 'USER').at(-1)?.args, 'root');
    const runtimeApt = steps.find((x) => x.stage === 'runtime' && x.args.includes('apt-get install'))!.args;
    for (const p of ['libbpf1', 'libelf1', 'zlib1g', 'iproute2', 'wireguard-tools', 'wireguard-go']) assert.match(runtimeApt, new RegExp(`\\b${p}\\b`));
  });
});
