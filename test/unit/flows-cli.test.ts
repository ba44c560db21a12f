// `nodal observe`: Hubble's flags into a GetFlowsRequest (order, --not, either-direction
// flags), output against the golden files, and a clear exit 1 when nothing answers.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Command } from 'commander';
import { FlowStore, startObserver } from '../../agent/flows/index.ts';
import { buildRequest, registerObserve, runObserve, type FilterOp, type ObserveIO } from '../../cli/observe.ts';
import { fixtureDir, flowAt, quiet, tempDir } from '../fixtures/flows/harness.ts';

const op = (name: string, value?: string): FilterOp => (value === undefined ? { name } : { name, value });

function capture(): ObserveIO & { stdout(): string; stderr(): string } {
  const out: string[] = [];
  const err: string[] = [];
  const sink = (into: string[]): Writable => new Writable({ write(chunk, _enc, cb) { into.push(String(chunk)); cb(); } });
  return { out: sink(out), err: sink(err), stdout: () => out.join(''), stderr: () => err.join('') };
}

describe('observe flags -> GetFlowsRequest', () => {
  const NOW = Date.UTC(2024, 0, 1, 12, 0, 0);
  const cases: Array<[string, object, FilterOp[], object]> = [
    ['no flags: the last 20', {}, [], { whitelist: [], blacklist: [], number: 20 }],
    ['--pod: from or to, namespace default', {}, [op('pod', 'api')],
      { whitelist: [{ sourcePod: ['default/api'] }, { destinationPod: ['default/api'] }], blacklist: [], number: 20 }],
    ['-n with --pod: the namespace of bare pod names', {}, [op('namespace', 'backend'), op('pod', 'api')],
      { whitelist: [{ sourcePod: ['backend/api'] }, { destinationPod: ['backend/api'] }], blacklist: [], number: 20 }],
    ['-n alone: the whole namespace, either side', {}, [op('namespace', 'backend')],
      { whitelist: [{ sourcePod: ['backend/'] }, { destinationPod: ['backend/'] }], blacklist: [], number: 20 }],
    ['--from-pod and --verdict: one filter, AND', {}, [op('from-pod', 'frontend/web'), op('verdict', 'dropped')],
      { whitelist: [{ sourcePod: ['frontend/web'], verdict: ['DROPPED'] }], blacklist: [], number: 20 }],
    ['a shared flag joins both sides of an either-direction pair', {}, [op('label', 'app=api'), op('verdict', 'DROPPED')],
      { whitelist: [{ sourceLabel: ['app=api'], verdict: ['DROPPED'] }, { destinationLabel: ['app=api'], verdict: ['DROPPED'] }], blacklist: [], number: 20 }],
    ['--not negates only the next filter', {}, [op('not'), op('verdict', 'DROPPED'), op('to-pod', 'backend/api')],
      { whitelist: [{ destinationPod: ['backend/api'] }], blacklist: [{ verdict: ['DROPPED'] }], number: 20 }],
    ['--not --pod excludes the pod on either side', {}, [op('not'), op('pod', 'kube-system/coredns')],
      { whitelist: [], blacklist: [{ sourcePod: ['kube-system/coredns'] }, { destinationPod: ['kube-system/coredns'] }], number: 20 }],
    ['--type: event types with subtypes', {}, [op('type', 'l7'), op('type', 'trace:to-proxy'), op('type', 'drop')],
      { whitelist: [{ eventType: [{ type: 129 }, { type: 4, matchSubType: true, subType: 1 }, { type: 1 }] }], blacklist: [], number: 20 }],
    ['identities, ports, http and node filters', {}, [op('identity', '256'), op('to-port', '8080'), op('http-status', '5+'), op('http-method', 'GET'), op('http-path', '^/v1'), op('node-name', 'node-*')],
      { whitelist: [
        { sourceIdentity: [256], destinationPort: ['8080'], httpStatusCode: ['5+'], httpMethod: ['GET'], httpPath: ['^/v1'], nodeName: ['node-*'] },
        { destinationIdentity: [256], destinationPort: ['8080'], httpStatusCode: ['5+'], httpMethod: ['GET'], httpPath: ['^/v1'], nodeName: ['node-*'] },
      ], blacklist: [], number: 20 }],
    ['-f: live only', { follow: true }, [], { whitelist: [], blacklist: [], follow: true }],
    ['-f --last 5', { follow: true, last: '5' }, [], { whitelist: [], blacklist: [], follow: true, number: 5 }],
    ['--first 3', { first: '3' }, [], { whitelist: [], blacklist: [], number: 3, first: true }],
    ['--all', { all: true }, [], { whitelist: [], blacklist: [] }],
    ['--since 5m and an RFC 3339 --until', { since: '5m', until: '2024-01-01T11:59:00Z' }, [],
      { whitelist: [], blacklist: [], since: { seconds: NOW / 1000 - 300, nanos: 0 }, until: { seconds: NOW / 1000 - 60, nanos: 0 } }],
  ];
  for (const [name, o, ops, want] of cases) {
    it(name, () => assert.deepEqual(buildRequest(o, ops, NOW), want));
  }

  const bad: Array<[string, object, FilterOp[], RegExp]> = [
    ['--not at the end', {}, [op('not')], /--not must be followed/],
    ['--first with --follow', { first: '2', follow: true }, [], /--first cannot be combined with --follow/],
    ['a bad --since', { since: 'last tuesday' }, [], /--since: "last tuesday"/],
    ['a bad --identity', {}, [op('identity', 'api')], /--identity: "api" is not a numeric identity/],
    ['a bad --type', {}, [op('type', 'packets')], /--type: "packets"/],
    ['a bad regex, caught before any connection', {}, [op('http-path', '(')], /http_path/],
  ];
  for (const [name, o, ops, re] of bad) {
    it(`rejects ${name}`, () => assert.throws(() => buildRequest(o, ops), re));
  }
});

describe('observe output', () => {
  const input = join(fixtureDir, 'flows.jsonl');
  const golden = (n: string): string => readFileSync(join(fixtureDir, n), 'utf8');

  it('--input-file, compact: the golden lines', async () => {
    const io = capture();
    assert.equal(await runObserve({ inputFile: input, all: true }, [], io), 0);
    assert.equal(io.stdout(), golden('compact.golden'));
  });

  it('--input-file with --print-policy-names --print-node-name', async () => {
    const io = capture();
    assert.equal(await runObserve({ inputFile: input, all: true, printPolicyNames: true, printNodeName: true }, [], io), 0);
    assert.equal(io.stdout(), golden('compact-policy-names.golden'));
  });

  it('-o json and -o dict', async () => {
    const j = capture();
    await runObserve({ inputFile: input, all: true, output: 'json' }, [], j);
    assert.equal(j.stdout(), golden('json.golden'));
    const d = capture();
    await runObserve({ inputFile: input, first: '3', output: 'dict' }, [], d);
    assert.equal(d.stdout(), golden('dict.golden'));
  });

  it('filters apply to a file as they would on a server', async () => {
    const io = capture();
    await runObserve({ inputFile: input, all: true }, [op('not'), op('verdict', 'FORWARDED'), op('from-pod', 'frontend/web')], io);
    const lines = io.stdout().trim().split('\n');
    assert.deepEqual(lines.map((l) => (/(?:^| )(DROPPED|REDIRECTED|FORWARDED|EVENTS LOST)/.exec(l) ?? [])[1]), ['DROPPED', 'REDIRECTED', 'EVENTS LOST', 'REDIRECTED', 'DROPPED']);
  });

  it('through commander: option order is kept, so --not binds to the next flag', async () => {
    const program = new Command('nodal').exitOverride();
    registerObserve(program);
    const io = capture();
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string) => io.out.write(chunk)) as typeof process.stdout.write;
    try {
      await program.parseAsync(['observe', '--input-file', input, '--all', '--not', '--type', 'l7', '--verdict', 'DROPPED'], { from: 'user' });
    } finally {
      process.stdout.write = write;
    }
    assert.equal(process.exitCode ?? 0, 0);
    const lines = io.stdout().trim().split('\n');
    assert.equal(lines.length, 3);
    assert.match(lines[0]!, /Policy denied DROPPED/);
    assert.match(lines[1]!, /Policy denied by denylist DROPPED/);
    // the L7 drop is excluded by --not --type l7; the loss notice is never filtered away
    assert.equal(lines[2], 'EVENTS LOST: 12 events lost on node node-b');
  });
});

describe('observe against a server', () => {
  it('reads flows from a live Observer (json lines)', async () => {
    const store = new FlowStore();
    for (let i = 1; i <= 5; i++) store.add(flowAt(i));
    const server = await startObserver({ store, node: 'node-a', socketPath: join(tempDir(), 'o.sock'), logger: quiet });
    try {
      const io = capture();
      assert.equal(await runObserve({ server: server.addresses[0], last: '2', output: 'json' }, [], io), 0);
      const lines = io.stdout().trim().split('\n').map((l) => JSON.parse(l) as { flow: { l4: { TCP: { source_port: number } } }; node_name: string });
      assert.deepEqual(lines.map((l) => l.flow.l4.TCP.source_port), [40004, 40005]);
      assert.equal(lines[0]!.node_name, 'node-a');
    } finally {
      await server.close();
    }
  });

  it('exits 1 naming the address when nothing listens (TCP)', async () => {
    const io = capture();
    assert.equal(await runObserve({ server: '127.0.0.1:1', timeout: '2s' }, [], io), 1);
    assert.match(io.stderr(), /cannot reach the Observer at 127\.0\.0\.1:1: connection failed/);
    assert.equal(io.stdout(), '');
  });

  it('exits 1 naming the socket when it does not exist; NODAL_SERVER is the default', async () => {
    const io = capture();
    const before = process.env.NODAL_SERVER;
    process.env.NODAL_SERVER = 'unix:/nonexistent/nodal/relay.sock';
    try {
      assert.equal(await runObserve({}, [], io), 1);
    } finally {
      if (before === undefined) delete process.env.NODAL_SERVER; else process.env.NODAL_SERVER = before;
    }
    assert.match(io.stderr(), /cannot reach the Observer at unix:\/nonexistent\/nodal\/relay\.sock: socket \/nonexistent\/nodal\/relay\.sock does not exist/);
  });

  it('exits 1 with the flag named on a bad filter, before connecting', async () => {
    const io = capture();
    assert.equal(await runObserve({ server: '127.0.0.1:1' }, [op('http-status', '5xx')], io), 1);
    assert.match(io.stderr(), /http_status_code: "5xx"/);
  });
});
