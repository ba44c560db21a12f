// `nodal observe`: Hubble's flags into a GetFlowsRequest (the cases of Hubble's own
// flows_filter_test.go where nodal has the flag), Hubble's output against golden files and
// against Hubble's own printer tests, and a clear exit 1 when nothing answers.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Command } from 'commander';
import {
  alignTable, FlowStore, formatCompact, formatDict, formatLost, formatTableRows, startObserver, type Flow, type WireGetFlowsResponse,
} from '../../agent/flows/index.ts';
import { buildRequest, parseTimeArg, registerObserve, runObserve, type FilterOp, type ObserveIO } from '../../cli/observe.ts';
import { fixtureDir, flowAt, quiet, tempDir } from '../fixtures/flows/harness.ts';

const op = (name: string, value?: string): FilterOp => ({ name, value: value ?? '' });
/** flags as on a command line: ['--pod', 'x', '--not', '-A'] (switches take no value) */
const SWITCHES = new Set(['not', 'all-namespaces', 'from-all-namespaces', 'to-all-namespaces', 'ipv4', 'ipv6']);
function ops(...args: string[]): FilterOp[] {
  const out: FilterOp[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i]!.replace(/^--/, '');
    out.push(SWITCHES.has(name) ? (name === 'not' ? { name } : op(name)) : op(name, args[++i]));
  }
  return out;
}

function capture(isTTY = false): ObserveIO & { stdout(): string; stderr(): string } {
  const out: string[] = [];
  const err: string[] = [];
  const sink = (into: string[]): Writable => new Writable({ write(chunk, _enc, cb) { into.push(String(chunk)); cb(); } });
  const o = sink(out);
  if (isTTY) Object.assign(o, { isTTY: true });
  return { out: o, err: sink(err), stdout: () => out.join(''), stderr: () => err.join('') };
}

const NOW = Date.UTC(2024, 0, 1, 12, 0, 0);
const req = (args: string[], o: object = {}): unknown => buildRequest(o, ops(...args), NOW);

describe('observe flags -> GetFlowsRequest (Hubble\'s filter semantics)', () => {
  const cases: Array<[string, string[], object, object]> = [
    ['no flags: the last 20', [], {}, { whitelist: [], blacklist: [], number: 20 }],
    // a bare name stays bare: the server reads it as namespace "default", as Hubble's does
    ['--pod: from or to, the name as given', ['--pod', 'api'], {},
      { whitelist: [{ sourcePod: ['api'] }, { destinationPod: ['api'] }], blacklist: [], number: 20 }],
    ['-n with --pod: the namespace of bare pod names', ['--namespace', 'cilium', '--pod', 'foo-9c76d6c95-tf788'], {},
      { whitelist: [{ sourcePod: ['cilium/foo-9c76d6c95-tf788'] }, { destinationPod: ['cilium/foo-9c76d6c95-tf788'] }], blacklist: [], number: 20 }],
    ['-n alone: the whole namespace, either side', ['--namespace', 'backend'], {},
      { whitelist: [{ sourcePod: ['backend/'] }, { destinationPod: ['backend/'] }], blacklist: [], number: 20 }],
    ['-n with --port: each side its own port', ['--namespace', 'cilium', '--port', '443'], {},
      { whitelist: [{ sourcePod: ['cilium/'], sourcePort: ['443'] }, { destinationPod: ['cilium/'], destinationPort: ['443'] }], blacklist: [], number: 20 }],
    ['--from-namespace with --from-port: one filter', ['--from-namespace', 'cilium', '--from-port', '443'], {},
      { whitelist: [{ sourcePod: ['cilium/'], sourcePort: ['443'] }], blacklist: [], number: 20 }],
    ['--to-namespace with --port: the namespace on both filters', ['--to-namespace', 'cilium', '--port', '443'], {},
      { whitelist: [{ destinationPod: ['cilium/'], sourcePort: ['443'] }, { destinationPod: ['cilium/'], destinationPort: ['443'] }], blacklist: [], number: 20 }],
    ['--to-namespace and a --to-pod that names it', ['--to-namespace', 'cilium', '--to-pod', 'cilium/foo'], {},
      { whitelist: [{ destinationPod: ['cilium/foo'] }], blacklist: [], number: 20 }],
    ['--from-namespace with --to-pod: one filter', ['--from-namespace', 'kube-system', '--to-pod', 'cilium/foo'], {},
      { whitelist: [{ destinationPod: ['cilium/foo'], sourcePod: ['kube-system/'] }], blacklist: [], number: 20 }],
    ['several namespaces and Services: every combination', ['--namespace', 'cilium', '--namespace', 'kube-system', '--service', 'foo', '--service', 'bar'], {},
      { whitelist: [
        { sourceService: ['cilium/foo', 'kube-system/foo', 'cilium/bar', 'kube-system/bar'] },
        { destinationService: ['cilium/foo', 'kube-system/foo', 'cilium/bar', 'kube-system/bar'] },
      ], blacklist: [], number: 20 }],
    ['-A with --pod: that pod name in any namespace', ['--all-namespaces', '--pod', 'foo'], {},
      { whitelist: [{ sourcePod: ['/foo'] }, { destinationPod: ['/foo'] }], blacklist: [], number: 20 }],
    ['-A alone: any pod, either side', ['--all-namespaces'], {},
      { whitelist: [{ sourcePod: ['/'] }, { destinationPod: ['/'] }], blacklist: [], number: 20 }],
    ['--to-all-namespaces with --port', ['--to-all-namespaces', '--port', '443'], {},
      { whitelist: [{ destinationPod: ['/'], sourcePort: ['443'] }, { destinationPod: ['/'], destinationPort: ['443'] }], blacklist: [], number: 20 }],
    ['--from-pod and --verdict: one filter, AND', ['--from-pod', 'frontend/web', '--verdict', 'DROPPED'], {},
      { whitelist: [{ sourcePod: ['frontend/web'], verdict: ['DROPPED'] }], blacklist: [], number: 20 }],
    ['--label and -l: several selectors, either side', ['--label', 'k1=v1,k2=v2', '--label', 'k3'], {},
      { whitelist: [{ sourceLabel: ['k1=v1,k2=v2', 'k3'] }, { destinationLabel: ['k1=v1,k2=v2', 'k3'] }], blacklist: [], number: 20 }],
    ['a shared flag joins both sides of an either-direction pair', ['--label', 'app=api', '--verdict', 'DROPPED'], {},
      { whitelist: [{ sourceLabel: ['app=api'], verdict: ['DROPPED'] }, { destinationLabel: ['app=api'], verdict: ['DROPPED'] }], blacklist: [], number: 20 }],
    // Hubble's TestFilterDispatch
    ['--not negates only the next filter', ['--from-ip', '1.2.3.4', '--from-ip', '5.6.7.8', '--not', '--to-ip', '5.5.5.5', '--verdict', 'DROPPED', '--type', 'l7'], {},
      { whitelist: [{ sourceIp: ['1.2.3.4', '5.6.7.8'], verdict: ['DROPPED'], eventType: [{ type: 129 }] }], blacklist: [{ destinationIp: ['5.5.5.5'] }], number: 20 }],
    // Hubble's TestFilterLeftRight: negated flags build a blacklist the same way (AND within it)
    ['either-direction flags on both lists', ['--ip', '1.2.3.4', '--ip', '5.6.7.8', '--verdict', 'DROPPED', '--not', '--pod', 'deathstar',
      '--not', '--http-status', '200', '--http-method', 'get', '--http-path', '/page/\\d+', '--node-name', 'k8s*'], {},
    { whitelist: [
      { sourceIp: ['1.2.3.4', '5.6.7.8'], verdict: ['DROPPED'], httpMethod: ['get'], httpPath: ['/page/\\d+'], nodeName: ['k8s*'] },
      { destinationIp: ['1.2.3.4', '5.6.7.8'], verdict: ['DROPPED'], httpMethod: ['get'], httpPath: ['/page/\\d+'], nodeName: ['k8s*'] },
    ], blacklist: [
      { sourcePod: ['deathstar'], httpStatusCode: ['200'] },
      { destinationPod: ['deathstar'], httpStatusCode: ['200'] },
    ], number: 20 }],
    ['--not --pod excludes the pod on either side', ['--not', '--pod', 'kube-system/coredns'], {},
      { whitelist: [], blacklist: [{ sourcePod: ['kube-system/coredns'] }, { destinationPod: ['kube-system/coredns'] }], number: 20 }],
    // Hubble's TestFilterType, for the types nodal knows
    ['--type: names, numbers and sub-types', ['--type', 'l7', '--type', 'trace:to-proxy', '--type', 'drop', '--type', '254', '--type', '255:127',
      '--type', 'trace:from-endpoint', '--type', '4:2', '--type', 'policy-verdict', '--type', 'trace:to-crypto'], {},
    { whitelist: [{ eventType: [{ type: 129 }, { type: 4, matchSubType: true, subType: 1 }, { type: 1 }, { type: 254 }, { type: 255, matchSubType: true, subType: 127 },
      { type: 4, matchSubType: true, subType: 5 }, { type: 4, matchSubType: true, subType: 2 }, { type: 5 }, { type: 4, matchSubType: true, subType: 13 }] }], blacklist: [], number: 20 }],
    ['identities by number and by reserved name', ['--identity', '1', '--identity', 'world'], {},
      { whitelist: [{ sourceIdentity: [1, 2] }, { destinationIdentity: [1, 2] }], blacklist: [], number: 20 }],
    ['--from-identity and --to-identity: one filter', ['--from-identity', 'world', '--to-identity', '256'], {},
      { whitelist: [{ sourceIdentity: [2], destinationIdentity: [256] }], blacklist: [], number: 20 }],
    ['ports, http and node filters', ['--to-port', '8080', '--http-status', '5+', '--http-method', 'GET', '--http-path', '^/v1', '--node-name', 'node-*'], {},
      { whitelist: [{ destinationPort: ['8080'], httpStatusCode: ['5+'], httpMethod: ['GET'], httpPath: ['^/v1'], nodeName: ['node-*'] }], blacklist: [], number: 20 }],
    ['--traffic-direction in any case', ['--traffic-direction', 'INGRESS', '--traffic-direction', 'EgrEss'], {},
      { whitelist: [{ trafficDirection: ['INGRESS', 'EGRESS'] }], blacklist: [], number: 20 }],
    ['--verdict and --drop-reason-desc by name', ['--verdict', 'dropped', '--drop-reason-desc', 'POLICY_DENIED'], {},
      { whitelist: [{ verdict: ['DROPPED'], dropReasonDesc: ['POLICY_DENIED'] }], blacklist: [], number: 20 }],
    ['--tcp-flags, -4, --ip-version', ['--tcp-flags', 'syn,ack', '--ipv4', '--ip-version', 'v6'], {},
      { whitelist: [{ tcpFlags: [{ SYN: true, ACK: true }], ipVersion: ['IPv4', 'IPv6'] }], blacklist: [], number: 20 }],
    ['--http-header splits at the first colon; --http-url, --uuid, --trace-id, --protocol', ['--http-header', 'foo:bar', '--http-header', 'Foo:coco:bar',
      '--http-url', 'http://.*cilium\\.io/foo', '--uuid', 'b9fab269', '--trace-id', '4bf92f35', '--protocol', 'http'], {},
    { whitelist: [{ httpHeader: [{ key: 'foo', value: 'bar' }, { key: 'Foo', value: 'coco:bar' }], httpUrl: ['http://.*cilium\\.io/foo'], uuid: ['b9fab269'],
      traceId: ['4bf92f35'], protocol: ['http'] }], blacklist: [], number: 20 }],
    ['--allowlist and --denylist: raw FlowFilters, after the flags', ['--from-pod', 'a/b'],
      { allowlist: ['{"source_ip":["10.0.0.1"],"verdict":["DROPPED"]}'], denylist: ['{"destination_port":["53"]}'] },
      { whitelist: [{ sourcePod: ['a/b'] }, { sourceIp: ['10.0.0.1'], verdict: ['DROPPED'] }], blacklist: [{ destinationPort: ['53'] }], number: 20 }],
    ['-f: live only', [], { follow: true }, { whitelist: [], blacklist: [], follow: true }],
    ['-f --last 5', [], { follow: true, last: '5' }, { whitelist: [], blacklist: [], follow: true, number: 5 }],
    ['--first 3', [], { first: '3' }, { whitelist: [], blacklist: [], number: 3, first: true }],
    ['--all: no limit', [], { all: true }, { whitelist: [], blacklist: [] }],
    ['--input-file: no default --last', [], { inputFile: 'x.json' }, { whitelist: [], blacklist: [] }],
    ['--since 5m and an RFC 3339 --until', [], { since: '5m', until: '2024-01-01T11:59:00Z' },
      { whitelist: [], blacklist: [], since: { seconds: NOW / 1000 - 300, nanos: 0 }, until: { seconds: NOW / 1000 - 60, nanos: 0 } }],
  ];
  for (const [name, args, o, want] of cases) {
    it(name, () => assert.deepEqual(req(args, o), want));
  }

  const bad: Array<[string, string[], object, RegExp]> = [
    ['--not at the end', ['--pod', 'x', '--not'], {}, /trailing --not found in the arguments/],
    ['--not --not', ['--not', '--not', '--pod', 'x'], {}, /consecutive --not statements/],
    ['--ip with --pod', ['--ip', '1.2.3.4', '--pod', 'x'], {}, /filters --ip and --pod cannot be combined/],
    ['--from-ip with --namespace', ['--from-ip', '1.2.3.4', '--namespace', 'x'], {}, /filters --from-ip and --namespace cannot be combined/],
    ['--to-pod with --namespace', ['--namespace', 'a', '--to-pod', 'x'], {}, /filters --to-pod and --namespace cannot be combined/],
    ['--from-service with -A', ['--all-namespaces', '--from-service', 'x'], {}, /filters --from-service and --all-namespaces cannot be combined/],
    ['--label with --from-label', ['--label', 'a', '--from-label', 'b'], {}, /filters --label and --from-label cannot be combined/],
    ['--port with --to-port', ['--port', '1', '--to-port', '2'], {}, /filters --port and --to-port cannot be combined/],
    ['--identity with --from-identity', ['--identity', '1', '--from-identity', '2'], {}, /filters --identity and --from-identity cannot be combined/],
    ['--service with --to-service', ['--service', 'a', '--to-service', 'b'], {}, /filters --service and --to-service cannot be combined/],
    ['--namespace with --from-namespace', ['--namespace', 'a', '--from-namespace', 'b'], {}, /filters --from-namespace and --namespace cannot be combined/],
    ['a pod outside its --to-namespace', ['--to-namespace', 'kube-system', '--to-pod', 'cilium/foo'], {}, /namespace conflict: "kube-system" does not contain "cilium\/foo"/],
    ['a Service and a pod in different namespaces', ['--from-service', 'cilium/foo', '--from-pod', 'kube-system/hubble'], {}, /namespace of service "cilium\/foo" conflicts with pod "kube-system\/hubble"/],
    ['--first with --last', [], { first: '2', last: '3' }, /cannot set both --first and --last/],
    ['--first with --all', [], { first: '2', all: true }, /cannot set both --first and --all/],
    ['--last with --all', [], { last: '2', all: true }, /cannot set both --last and --all/],
    ['--first with --follow', [], { first: '2', follow: true }, /cannot set both --first and --follow/],
    ['a bad --since', [], { since: 'last tuesday' }, /--since: "last tuesday"/],
    ['a bad --identity', ['--identity', 'api'], {}, /--identity: invalid security identity "api"/],
    ['a bad --type', ['--type', 'packets'], {}, /unable to parse type 'packets'/],
    ['a bad --type sub-type', ['--type', 'trace:some-invalid-sub-type'], {}, /unable to parse event sub-type 'some-invalid-sub-type'/],
    ['a bad --verdict', ['--verdict', 'MAYBE'], {}, /invalid --verdict value: MAYBE/],
    ['a bad --drop-reason-desc', ['--drop-reason-desc', 'BECAUSE'], {}, /invalid --drop-reason-desc value: BECAUSE/],
    ['a bad --traffic-direction', ['--traffic-direction', 'to the moon'], {}, /to the moon: invalid traffic direction, expected ingress or egress/],
    ['a bad --tcp-flags', ['--tcp-flags', 'syn,'], {}, /unknown tcp flag/],
    ['a bad --http-header', ['--http-header', 'foobar'], {}, /expected name:value/],
    ['a bad --allowlist', [], { allowlist: ['{"source_pod": '] }, /invalid --allowlist flag/],
    ['a bad regex, caught before any connection', ['--http-path', '('], {}, /http_path/],
    ['a pod name with two slashes', ['--pod', 'a/b/c'], {}, /source_pod: "a\/b\/c" must be \[namespace\/\]\[name-prefix\]/],
  ];
  for (const [name, args, o, re] of bad) {
    it(`rejects ${name}`, () => assert.throws(() => req(args, o), re));
  }

  it('--since and --until take Hubble\'s layouts and Go durations', () => {
    const t = (v: string): number => parseTimeArg('since', v, NOW).seconds;
    assert.equal(t('2024-01-01'), Date.UTC(2024, 0, 1) / 1000);
    assert.equal(t('2024-01-01T11Z'), Date.UTC(2024, 0, 1, 11) / 1000);
    assert.equal(t('2024-01-01T11:30+01:00'), Date.UTC(2024, 0, 1, 10, 30) / 1000);
    assert.equal(t('Mon, 01 Jan 2024 11:30:15 -0200'), Date.UTC(2024, 0, 1, 13, 30, 15) / 1000);
    assert.deepEqual(parseTimeArg('since', '2024-01-01T11:30:15.25Z', NOW), { seconds: Date.UTC(2024, 0, 1, 11, 30, 15) / 1000, nanos: 250_000_000 });
    assert.equal(t('1.5h'), NOW / 1000 - 5400);
    assert.equal(t('1h30m'), NOW / 1000 - 5400);
    assert.deepEqual(parseTimeArg('since', '300ms', NOW), { seconds: NOW / 1000 - 1, nanos: 700_000_000 });
    assert.throws(() => t('1h43'), /neither a duration/);
    assert.throws(() => t('2024-02-30'), /neither a duration/);
  });
});

describe('observe output (golden)', () => {
  const input = join(fixtureDir, 'flows.jsonl');
  const golden = (n: string): string => readFileSync(join(fixtureDir, n), 'utf8');
  const run = async (o: object, args: string[] = [], tty = false): Promise<ReturnType<typeof capture>> => {
    const io = capture(tty);
    assert.equal(await runObserve({ inputFile: input, ...o }, ops(...args), io), 0, io.stderr());
    return io;
  };

  const goldens: Array<[string, object, string]> = [
    ['compact', {}, 'compact.golden'],
    ['compact with --print-policy-names --print-node-name', { printPolicyNames: true, printNodeName: true }, 'compact-policy-names.golden'],
    ['compact with --color always: Hubble\'s colours', { color: 'always' }, 'compact-color.golden'],
    ['-o json', { output: 'json' }, 'json.golden'],
    ['-o jsonpb is -o json', { output: 'jsonpb' }, 'json.golden'],
    ['-o dict --first 3', { output: 'dict', first: '3' }, 'dict.golden'],
    ['-o dict --print-node-name, with a lost-events block', { output: 'dict', printNodeName: true }, 'dict-node-name.golden'],
    ['-o table, with an EVENTS LOST row', { output: 'table' }, 'table.golden'],
    ['-o table --print-node-name --print-policy-names', { output: 'table', printNodeName: true, printPolicyNames: true }, 'table-node-name.golden'],
  ];
  for (const [name, o, file] of goldens) {
    it(name, async () => assert.equal((await run(o)).stdout(), golden(file)));
  }

  it('--color auto: colours on a terminal only, never with NO_COLOR or TERM=dumb, never in a table', async () => {
    const saved = { NO_COLOR: process.env.NO_COLOR, TERM: process.env.TERM };
    const restore = (k: 'NO_COLOR' | 'TERM'): void => { if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k]; };
    try {
      delete process.env.NO_COLOR;
      process.env.TERM = 'xterm-256color';
      assert.equal((await run({})).stdout(), golden('compact.golden'));
      assert.equal((await run({}, [], true)).stdout(), golden('compact-color.golden'));
      process.env.TERM = 'dumb';
      assert.equal((await run({}, [], true)).stdout(), golden('compact.golden'));
      process.env.TERM = 'xterm-256color';
      process.env.NO_COLOR = '1';
      assert.equal((await run({}, [], true)).stdout(), golden('compact.golden'));
    } finally {
      restore('NO_COLOR');
      restore('TERM');
    }
    assert.equal((await run({ color: 'never' }, [], true)).stdout(), golden('compact.golden'));
    assert.equal((await run({ output: 'table', color: 'always' })).stdout(), golden('table.golden'));
    assert.doesNotMatch((await run({ output: 'json', color: 'always' })).stdout(), /\x1b/);
  });

  it('--numeric and --no-ip-translation print addresses', async () => {
    const a = (await run({ numeric: true, first: '1' })).stdout();
    assert.equal(a, (await run({ ipTranslation: false, first: '1' })).stdout());
    assert.match(a, /: 10\.0\.1\.5 \(ID:257\) -> 10\.0\.1\.9:8080 \(ID:256\) Policy denied DROPPED/);
  });

  it('--time-format: Hubble\'s layouts, in UTC', async () => {
    const first = async (fmt: string): Promise<string> => (await run({ timeFormat: fmt, first: '1' })).stdout().split(': ')[0]!;
    assert.equal(await first('RFC3339'), '2023-11-14T22:13:20Z');
    assert.equal(await first('RFC3339Nano'), '2023-11-14T22:13:20.123456789Z');
    assert.equal(await first('rfc3339milli'), '2023-11-14T22:13:20.123Z');
    assert.equal(await first('YearMonthDayHourMinute'), '2023-11-14T22:13Z');
    assert.equal(await first('RFC1123Z'), 'Tue, 14 Nov 2023 22:13:20 +0000');
    const io = capture();
    assert.equal(await runObserve({ inputFile: input, timeFormat: 'Julian' }, [], io), 1);
    assert.match(io.stderr(), /--time-format: "Julian" is not one of StampMilli/);
  });

  it('filters apply to a file as they would on a server; lost events are never filtered away', async () => {
    const io = await run({}, ['--not', '--verdict', 'FORWARDED', '--from-pod', 'frontend/web']);
    const lines = io.stdout().trim().split('\n');
    assert.deepEqual(lines.map((l) => (/ (DROPPED|REDIRECTED|FORWARDED|EVENTS LOST)/.exec(l) ?? [])[1]), ['DROPPED', 'REDIRECTED', 'EVENTS LOST', 'REDIRECTED', 'DROPPED']);
  });

  it('--last and --first cut a file the way a server cuts its buffer', async () => {
    const all = golden('compact.golden').trim().split('\n');
    // the notice among the last four flows is kept; one just before the last three is not
    assert.deepEqual((await run({ last: '4' })).stdout().trim().split('\n'), all.slice(-5));
    assert.deepEqual((await run({ last: '3' })).stdout().trim().split('\n'), all.slice(-3));
    assert.deepEqual((await run({ first: '6' })).stdout().trim().split('\n'), all.slice(0, 7));
  });

  it('--since and --until select from a file by flow time', async () => {
    const out = (await run({ since: '2023-11-14T22:13:21.501Z', until: '2023-11-14T22:13:23Z' })).stdout().trim().split('\n');
    assert.deepEqual(out.map((l) => l.slice(0, 19)), ['Nov 14 22:13:21.501', 'Nov 14 22:13:21.504', 'Nov 14 22:13:22.000', 'Nov 14 22:13:22.100']);
  });

  it('--print-raw-filters shows the request\'s filters as YAML and asks nobody', async () => {
    const io = capture();
    assert.equal(await runObserve({ server: '127.0.0.1:1', printRawFilters: true }, ops('--pod', 'web', '--not', '--verdict', 'DROPPED'), io), 0);
    assert.equal(io.stdout(), [
      'allowlist:',
      '    - \'{"source_pod":["web"]}\'',
      '    - \'{"destination_pod":["web"]}\'',
      'denylist:',
      '    - \'{"verdict":["DROPPED"]}\'',
      '',
    ].join('\n'));
  });

  it('relay node status goes to stderr: unavailable nodes always, connects with --debug; a bad line is skipped and said', async () => {
    const status = join(fixtureDir, 'relay-status.jsonl');
    const io = capture();
    assert.equal(await runObserve({ inputFile: status }, [], io), 0);
    assert.equal(io.stdout().trim().split('\n').length, 2);
    assert.equal(io.stderr(), [
      'Nov 14 22:13:19.500 [nodal-relay]: 1 nodes are unavailable: node-c (connection refused)',
      `nodal observe: ${status}:4: skipped: not JSON: Unexpected token 'h', "this is not json" is not valid JSON`,
      '',
    ].join('\n'));
    const dbg = capture();
    await runObserve({ inputFile: status, debug: true, output: 'dict' }, [], dbg);
    assert.match(dbg.stderr(), /^ {2}TIMESTAMP: Nov 14 22:13:19\.000\n {6}STATE: NODE_CONNECTED\n {6}NODES: node-a, node-b\n {4}MESSAGE: N\/A\n-{12}\n/);
    // the node status block counts: the first flow block gets a separator
    assert.match(dbg.stdout(), /^-{12}\n {2}TIMESTAMP: Nov 14 22:13:20\.123\n/);
    const json = capture();
    await runObserve({ inputFile: status, output: 'json' }, [], json);
    assert.match(json.stderr(), /^\{"node_status":\{"state_change":"NODE_UNAVAILABLE","node_names":\["node-c"\],"message":"connection refused"\}/);
    const silent = capture();
    await runObserve({ inputFile: status, silentErrors: true }, [], silent);
    assert.doesNotMatch(silent.stderr(), /unavailable/);
  });

  it('-o table with --follow is refused, as Hubble refuses it', async () => {
    const io = capture();
    assert.equal(await runObserve({ server: '127.0.0.1:1', output: 'table', follow: true }, [], io), 1);
    assert.match(io.stderr(), /table output format is not compatible with follow mode/);
  });

  it('through commander: option order is kept, so --not binds to the next flag; -A and -4 are switches', async () => {
    const program = new Command('nodal').exitOverride();
    const io = capture();
    registerObserve(program, io);
    await program.parseAsync(['observe', '--input-file', input, '--not', '--type', 'l7', '--verdict', 'DROPPED'], { from: 'user' });
    assert.equal(process.exitCode ?? 0, 0, io.stderr());
    await program.parseAsync(['observe', '--input-file', input, '-A', '-4', '--to-label', 'app=api', '--print-raw-filters'], { from: 'user' });
    assert.equal(process.exitCode ?? 0, 0, io.stderr());
    const lines = io.stdout().trim().split('\n');
    assert.match(lines[0]!, /Policy denied DROPPED/);
    assert.match(lines[1]!, /Policy denied by denylist DROPPED/);
    // the L7 drop is excluded by --not --type l7; the loss notice is never filtered away
    assert.equal(lines[2], 'Nov 14 22:13:22.100 EVENTS LOST: OBSERVER_EVENTS_QUEUE CPU(0) 12');
    assert.deepEqual(lines.slice(3), [
      'allowlist:',
      '    - \'{"source_pod":["/"],"destination_label":["app=api"],"ip_version":["IPv4"]}\'',
      '    - \'{"destination_pod":["/"],"destination_label":["app=api"],"ip_version":["IPv4"]}\'',
    ]);
  });
});

describe('observe output against Hubble\'s own printer tests (hubble/pkg/printer/printer_test.go)', () => {
  // the flow of Hubble's TestPrinter_WriteProtoFlow
  const f: Flow = {
    time: { seconds: 1234, nanos: 567800000 }, uuid: '', Type: 'L3_L4', nodeName: 'k8s1', verdict: 'DROPPED',
    IP: { source: '1.1.1.1', destination: '2.2.2.2', ipVersion: 'IPv4' }, source: { identity: 4 }, destination: { identity: 12345 },
    l4: { TCP: { sourcePort: 31793, destinationPort: 8080 } }, eventType: { type: 1, subType: 133 }, summary: 'TCP Flags: SYN',
    isReply: false, trafficDirection: 'TRAFFIC_DIRECTION_UNKNOWN',
  };
  const policyDenied: Flow = {
    ...f, eventType: { type: 5 }, isReply: undefined, trafficDirection: 'EGRESS',
    egressDeniedBy: [{ name: 'my-policy', namespace: 'my-policy-namespace', kind: 'CiliumNetworkPolicy' }],
  };
  const policyAllowed: Flow = {
    ...f, eventType: { type: 5 }, verdict: 'FORWARDED', isReply: undefined, trafficDirection: 'INGRESS',
    ingressAllowedBy: [{ name: 'my-policy', namespace: 'my-policy-namespace', kind: 'CiliumNetworkPolicy' }, { name: 'my-policy-2', namespace: '', kind: 'CiliumClusterwideNetworkPolicy' }],
  };
  const policyAudited: Flow = { ...policyDenied, verdict: 'AUDIT' };

  it('compact, compact with node, reply, unknown direction', () => {
    assert.equal(formatCompact(f), 'Jan  1 00:20:34.567: 1.1.1.1:31793 (health) -> 2.2.2.2:8080 (ID:12345) Policy denied DROPPED (TCP Flags: SYN)');
    assert.equal(formatCompact(f, { nodeName: true }), 'Jan  1 00:20:34.567 [k8s1]: 1.1.1.1:31793 (health) -> 2.2.2.2:8080 (ID:12345) Policy denied DROPPED (TCP Flags: SYN)');
    assert.equal(formatCompact({ ...f, isReply: true }, { nodeName: true }), 'Jan  1 00:20:34.567 [k8s1]: 2.2.2.2:8080 (ID:12345) <- 1.1.1.1:31793 (health) Policy denied DROPPED (TCP Flags: SYN)');
    assert.equal(formatCompact({ ...f, isReply: undefined }, { nodeName: true }), 'Jan  1 00:20:34.567 [k8s1]: 1.1.1.1:31793 (health) <> 2.2.2.2:8080 (ID:12345) Policy denied DROPPED (TCP Flags: SYN)');
  });

  it('policy verdicts: DENIED, ALLOWED, AUDITED, with the policies by name', () => {
    const o = { nodeName: true, policyNames: true };
    assert.equal(formatCompact(policyDenied, { nodeName: true }), 'Jan  1 00:20:34.567 [k8s1]: 1.1.1.1:31793 (health) <> 2.2.2.2:8080 (ID:12345) policy-verdict:none EGRESS DENIED (TCP Flags: SYN)');
    assert.equal(formatCompact(policyDenied, o), 'Jan  1 00:20:34.567 [k8s1]: 1.1.1.1:31793 (health) <> 2.2.2.2:8080 (ID:12345) policy-verdict:none EGRESS DENIED BY my-policy (CiliumNetworkPolicy) (TCP Flags: SYN)');
    assert.match(formatCompact(policyAllowed, o), / INGRESS ALLOWED BY my-policy \(CiliumNetworkPolicy\), my-policy-2 \(CiliumClusterwideNetworkPolicy\) \(TCP Flags: SYN\)$/);
    assert.equal(formatCompact(policyAudited, o), 'Jan  1 00:20:34.567 [k8s1]: 1.1.1.1:31793 (health) <> 2.2.2.2:8080 (ID:12345) policy-verdict:none EGRESS AUDITED BY my-policy (CiliumNetworkPolicy) (TCP Flags: SYN)');
  });

  it('dict, dict with node, dict with policy name', () => {
    const block = (o: object, flow = f): string => formatDict(flow, o);
    assert.equal(block({}), '  TIMESTAMP: Jan  1 00:20:34.567\n     SOURCE: 1.1.1.1:31793\nDESTINATION: 2.2.2.2:8080\n       TYPE: Policy denied\n    VERDICT: DROPPED\n    SUMMARY: TCP Flags: SYN');
    assert.equal(block({ nodeName: true }), '  TIMESTAMP: Jan  1 00:20:34.567\n       NODE: k8s1\n     SOURCE: 1.1.1.1:31793\nDESTINATION: 2.2.2.2:8080\n       TYPE: Policy denied\n    VERDICT: DROPPED\n    SUMMARY: TCP Flags: SYN');
    assert.equal(block({ policyNames: true }, policyDenied), '  TIMESTAMP: Jan  1 00:20:34.567\n     SOURCE: 1.1.1.1:31793\nDESTINATION: 2.2.2.2:8080\n       TYPE: policy-verdict:none EGRESS\n    VERDICT: DENIED BY my-policy (CiliumNetworkPolicy)\n    SUMMARY: TCP Flags: SYN');
  });

  it('tabular, tabular with node', () => {
    assert.equal(alignTable(formatTableRows([f])),
      'TIMESTAMP             SOURCE          DESTINATION    TYPE            VERDICT   SUMMARY\nJan  1 00:20:34.567   1.1.1.1:31793   2.2.2.2:8080   Policy denied   DROPPED   TCP Flags: SYN');
    assert.equal(alignTable(formatTableRows([f], { nodeName: true })),
      'TIMESTAMP             NODE   SOURCE          DESTINATION    TYPE            VERDICT   SUMMARY\nJan  1 00:20:34.567   k8s1   1.1.1.1:31793   2.2.2.2:8080   Policy denied   DROPPED   TCP Flags: SYN');
  });

  it('lost events: compact, dict, tabular (with and without node)', () => {
    const lost: WireGetFlowsResponse = { time: { seconds: 1234, nanos: 567800000 }, lostEvents: { source: 'HUBBLE_RING_BUFFER', numEventsLost: 1, cpu: { value: 5 } } };
    const withNode = { ...lost, nodeName: 'node-name' };
    assert.equal(formatLost(lost), 'Jan  1 00:20:34.567 EVENTS LOST: HUBBLE_RING_BUFFER CPU(5) 1');
    assert.equal(formatLost(withNode, { nodeName: true }), 'Jan  1 00:20:34.567 EVENTS LOST: HUBBLE_RING_BUFFER CPU(5) 1');
    assert.equal(formatLost(lost, {}, 'dict'), '  TIMESTAMP: Jan  1 00:20:34.567\n     SOURCE: HUBBLE_RING_BUFFER\n       TYPE: EVENTS LOST\n    VERDICT: -\n    SUMMARY: CPU(5) - 1');
    assert.equal(formatLost(withNode, { nodeName: true }, 'dict'), '  TIMESTAMP: Jan  1 00:20:34.567\n       NODE: node-name\n     SOURCE: HUBBLE_RING_BUFFER\n       TYPE: EVENTS LOST\n    VERDICT: -\n    SUMMARY: CPU(5) - 1');
    assert.equal(alignTable(formatTableRows([lost])),
      'TIMESTAMP             SOURCE               DESTINATION   TYPE          VERDICT   SUMMARY\nJan  1 00:20:34.567   HUBBLE_RING_BUFFER   -             EVENTS LOST   -         CPU(5) - 1');
    assert.equal(alignTable(formatTableRows([withNode], { nodeName: true })),
      'TIMESTAMP             NODE        SOURCE               DESTINATION   TYPE          VERDICT   SUMMARY\nJan  1 00:20:34.567   node-name   HUBBLE_RING_BUFFER   -             EVENTS LOST   -         CPU(5) - 1');
  });

  it('escape characters from a flow are defused (Hubble\'s terminal escaper); our own colours are not', () => {
    const evil = flowAt(1, { Type: 'L7', l7: { type: 'REQUEST', http: { method: 'GET', url: '/\x1b[2J\x1b]0;pwned\x07\rx', protocol: 'HTTP/1.1' } } });
    const plain = formatCompact(evil);
    assert.doesNotMatch(plain, /\x1b|\r/);
    assert.match(plain, /\(HTTP\/1\.1 GET \/\^\[\[2J\^\[\]0;pwned\x07\\rx\)$/);
    const colored = formatCompact(evil, { color: true });
    assert.match(colored, /\x1b\[32mFORWARDED\x1b\[0m/);
    assert.doesNotMatch(colored, /\x1b\[2J/);
    assert.doesNotMatch(alignTable(formatTableRows([evil])), /\x1b/);
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

  it('a table from a live Observer, filtered by -n and --to-port on the server', async () => {
    const store = new FlowStore();
    store.add(flowAt(1));
    store.add(flowAt(2, { source: { identity: 300, namespace: 'jobs', podName: 'batch-1' }, l4: { TCP: { sourcePort: 1, destinationPort: 9090 } } }));
    store.add(flowAt(3, { source: { identity: 300, namespace: 'jobs', podName: 'batch-1' }, destination: { identity: 301, namespace: 'db', podName: 'pg-0' } }));
    const server = await startObserver({ store, node: 'node-a', tcp: '127.0.0.1:0', logger: quiet });
    try {
      const io = capture();
      assert.equal(await runObserve({ server: server.addresses[0], all: true, output: 'table' }, ops('--namespace', 'backend', '--to-port', '8080'), io), 0, io.stderr());
      const rows = io.stdout().trim().split('\n');
      assert.equal(rows.length, 2);
      assert.match(rows[1]!, /^Nov 14 22:13:21\.000 {3}frontend\/web-1:40001 {3}backend\/api-7:8080 {3}to-stack {3}FORWARDED {3}TCP$/);
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
    assert.equal(await runObserve({ server: '127.0.0.1:1' }, ops('--http-status', '5xx'), io), 1);
    assert.match(io.stderr(), /http_status_code: "5xx"/);
  });
});
