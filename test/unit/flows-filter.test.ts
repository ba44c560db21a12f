// Hubble FlowFilter semantics: any whitelist filter, no blacklist filter; AND across
// fields, OR within a field. One table of flows, one table of filters.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { compileFilter, compileFilters, FlowFilterError, type Flow, type FlowFilter } from '../../agent/flows/index.ts';
import { filtersFromOps, type FilterOp } from '../../cli/observe.ts';
import { flowAt } from '../fixtures/flows/harness.ts';

const flows: Record<string, Flow> = {
  webToApi: flowAt(1),
  dropped: flowAt(2, {
    verdict: 'DROPPED', dropReasonDesc: 'POLICY_DENIED',
    source: { identity: 300, namespace: 'frontend', podName: 'batch-9', labels: ['k8s:app=batch', 'k8s:tier=jobs'] },
  }),
  ingress: flowAt(3, {
    trafficDirection: 'INGRESS', nodeName: 'node-b',
    IP: { source: '192.168.7.20', destination: '10.0.2.9', ipVersion: 'IPv4' },
    source: { identity: 2, labels: ['reserved:world'] },
    l4: { TCP: { sourcePort: 51000, destinationPort: 8080, flags: { SYN: true } } },
  }),
  httpGet: flowAt(4, {
    Type: 'L7', l7: { type: 'REQUEST', http: { method: 'GET', url: 'http://api.backend/v1/items?x=1', protocol: 'HTTP/1.1', headers: [{ key: 'X-Team', value: 'blue' }] } },
    traceContext: { parent: { traceId: '4bf92f3577b34da6a3ce929d0e0e4736' } },
  }),
  http503: flowAt(5, {
    Type: 'L7', isReply: true, l7: { type: 'RESPONSE', latencyNs: 3_000_000, http: { code: 503, method: 'POST', url: '/v1/orders', protocol: 'HTTP/1.1' } },
  }),
  udpV6: flowAt(6, {
    IP: { source: 'fd00::5', destination: 'fd00::9', ipVersion: 'IPv6' }, l4: { UDP: { sourcePort: 5353, destinationPort: 53 } },
    source: { identity: 257, namespace: 'frontend', podName: 'web-2' }, destination: { identity: 1, labels: ['reserved:host'] },
    isReply: undefined,
  }),
};

function matching(filter: FlowFilter): string[] {
  const p = compileFilter(filter);
  return Object.keys(flows).filter((k) => p(flows[k]!));
}

const ALL = Object.keys(flows);

const cases: Array<[string, FlowFilter, string[]]> = [
  ['empty filter matches everything', {}, ALL],
  ['source pod: namespace exact, name prefix', { sourcePod: ['frontend/web'] }, ['webToApi', 'httpGet', 'http503', 'udpV6']],
  ['source pod: several values are OR', { sourcePod: ['frontend/batch', 'frontend/web-2'] }, ['dropped', 'udpV6']],
  ['"ns/" is the whole namespace', { destinationPod: ['backend/'] }, ['webToApi', 'dropped', 'ingress', 'httpGet', 'http503']],
  ['a bare pod name is in namespace "default" (none here)', { sourcePod: ['web'] }, []],
  ['"/" is any pod in any namespace (-A)', { sourcePod: ['/'] }, ['webToApi', 'dropped', 'httpGet', 'http503', 'udpV6']],
  ['"/name" is that name prefix in any namespace', { sourcePod: ['/batch'] }, ['dropped']],
  ['source IP exact', { sourceIp: ['192.168.7.20'] }, ['ingress']],
  ['destination IP by CIDR, IPv4 and IPv6', { destinationIp: ['10.0.0.0/16', 'fd00::/64'] }, ALL],
  ['source IP CIDR excludes others', { sourceIp: ['192.168.0.0/16'] }, ['ingress']],
  ['verdict', { verdict: ['DROPPED'] }, ['dropped']],
  ['verdict by number, as some clients send', { verdict: [2] }, ['dropped']],
  ['drop reason', { dropReasonDesc: ['POLICY_DENIED'] }, ['dropped']],
  ['event type l7 (129)', { eventType: [{ type: 129 }] }, ['httpGet', 'http503']],
  ['event type drop (1)', { eventType: [{ type: 1 }] }, ['dropped']],
  ['event type trace (4) is the L3/L4 rest', { eventType: [{ type: 4 }] }, ['webToApi', 'ingress', 'udpV6']],
  ['event type with sub type', { eventType: [{ type: 1, matchSubType: true, subType: 133 }] }, ['dropped']],
  ['event type with another sub type', { eventType: [{ type: 1, matchSubType: true, subType: 181 }] }, []],
  ['source label (k8s selector, any source)', { sourceLabel: ['app=batch'] }, ['dropped']],
  ['source label with source prefix', { sourceLabel: ['k8s:app in (web, batch)'] }, ['webToApi', 'dropped', 'httpGet', 'http503']],
  ['label selector: AND of terms', { sourceLabel: ['app=batch,tier=jobs'] }, ['dropped']],
  ['label selector: != and !key', { sourceLabel: ['app!=web,!tier'] }, ['ingress', 'udpV6']],
  ['reserved labels', { sourceLabel: ['reserved:world'] }, ['ingress']],
  ['destination label exists', { destinationLabel: ['reserved:host'] }, ['udpV6']],
  ['source identity', { sourceIdentity: [300, 2] }, ['dropped', 'ingress']],
  ['destination identity', { destinationIdentity: [1] }, ['udpV6']],
  ['destination port', { destinationPort: ['53'] }, ['udpV6']],
  ['source port', { sourcePort: ['51000'] }, ['ingress']],
  ['protocol udp', { protocol: ['udp'] }, ['udpV6']],
  ['protocol http', { protocol: ['HTTP'] }, ['httpGet', 'http503']],
  ['http status exact', { httpStatusCode: ['503'] }, ['http503']],
  ['http status prefix', { httpStatusCode: ['5+'] }, ['http503']],
  ['http status never matches a request', { httpStatusCode: ['2+'] }, []],
  ['http method is case-insensitive', { httpMethod: ['get'] }, ['httpGet']],
  ['http path is a regex on the path only', { httpPath: ['^/v1/(items|orders)$'] }, ['httpGet', 'http503']],
  ['http path does not see the query', { httpPath: ['x=1'] }, []],
  ['http url regex sees it', { httpUrl: ['x=1$'] }, ['httpGet']],
  ['http header', { httpHeader: [{ key: 'x-team', value: 'blue' }] }, ['httpGet']],
  ['node name glob', { nodeName: ['node-*'] }, ALL],
  ['node name with cluster part', { nodeName: ['default/node-b'] }, ['ingress']],
  ['traffic direction', { trafficDirection: ['INGRESS'] }, ['ingress']],
  ['reply', { reply: [true] }, ['http503']],
  ['not a reply (unknown is neither)', { reply: [false] }, ['webToApi', 'dropped', 'ingress', 'httpGet']],
  ['ip version', { ipVersion: ['IPv6'] }, ['udpV6']],
  ['tcp flags', { tcpFlags: [{ SYN: true }] }, ['ingress']],
  ['trace id', { traceId: ['4bf92f3577b34da6a3ce929d0e0e4736'] }, ['httpGet']],
  ['uuid', { uuid: ['uuid-2-0'] }, ['dropped']],
  ['fqdn: nodal has no DNS names, matches nothing', { destinationFqdn: ['api.example.com'] }, []],
  ['translated source IPs: nodal translates none, matches nothing', { sourceIpXlated: ['10.0.0.1'] }, []],
  ['cluster names: nodal endpoints carry none, matches nothing', { sourceClusterName: ['default'] }, []],
  ['interfaces: nodal observes sockets, matches nothing', { interface: [{ name: 'eth0' }] }, []],
  ['node labels: flows carry none, so a required label matches nothing', { nodeLabels: ['kubernetes.io/os=linux'] }, []],
  ['node labels: an absent label matches every flow', { nodeLabels: ['!io.cilium/egress-gateway'] }, ALL],
  ['fields are AND', { sourcePod: ['frontend/'], verdict: ['FORWARDED'], protocol: ['tcp'] }, ['webToApi', 'httpGet', 'http503']],
  ['fields are AND (narrower)', { sourcePod: ['frontend/'], httpMethod: ['POST'] }, ['http503']],
];

describe('flow filter: one FlowFilter', () => {
  for (const [name, filter, want] of cases) {
    it(name, () => assert.deepEqual(matching(filter), want));
  }
});

describe('flow filter: whitelist and blacklist', () => {
  const run = (white: FlowFilter[], black: FlowFilter[]): string[] => {
    const p = compileFilters(white, black);
    return Object.keys(flows).filter((k) => !p || p(flows[k]!));
  };

  it('no filters at all: no predicate (nothing to evaluate per flow)', () => {
    assert.equal(compileFilters([], []), undefined);
  });

  it('any whitelist filter may match (OR across filters)', () => {
    assert.deepEqual(run([{ verdict: ['DROPPED'] }, { protocol: ['udp'] }], []), ['dropped', 'udpV6']);
  });

  it('a blacklist alone removes what it matches (--not)', () => {
    assert.deepEqual(run([], [{ verdict: ['FORWARDED'] }]), ['dropped']);
  });

  it('whitelist minus blacklist', () => {
    assert.deepEqual(run([{ sourcePod: ['frontend/'] }], [{ eventType: [{ type: 129 }] }]), ['webToApi', 'dropped', 'udpV6']);
  });

  it('either-direction pair in the blacklist excludes the pod on both sides', () => {
    // `--not --pod backend/api` becomes two blacklist filters
    assert.deepEqual(run([], [{ sourcePod: ['backend/api'] }, { destinationPod: ['backend/api'] }]), ['udpV6']);
  });

  it('any blacklist filter excludes', () => {
    assert.deepEqual(run([], [{ verdict: ['DROPPED'] }, { protocol: ['http'] }]), ['webToApi', 'ingress', 'udpV6']);
  });
});

describe('flow filter: invalid filters are errors with the field named', () => {
  const bad: Array<[FlowFilter, string]> = [
    [{ sourceIp: ['10.0.0.300'] }, 'source_ip'],
    [{ destinationIp: ['10.0.0.0/40'] }, 'destination_ip'],
    [{ httpPath: ['('] }, 'http_path'],
    [{ httpStatusCode: ['5xx'] }, 'http_status_code'],
    [{ destinationPort: ['http'] }, 'destination_port'],
    [{ verdict: ['MAYBE'] }, 'verdict'],
    [{ protocol: ['carrier-pigeon'] }, 'protocol'],
    [{ sourcePod: ['a/b/c'] }, 'source_pod'],
    [{ destinationService: [''] }, 'destination_service'],
    // refused rather than ignored: an ignored filter would match more than was asked
    [{ experimental: { celExpression: ['flow.verdict == 2'] } }, 'experimental.cel_expression'],
    [{ nodeLabels: ['a=(b'] }, 'node_labels'],
    [{ sourceLabel: ['app=(x'] }, 'source_label'],
  ];
  for (const [filter, field] of bad) {
    it(field, () => {
      assert.throws(() => compileFilter(filter), (err: unknown) => {
        assert.ok(err instanceof FlowFilterError);
        assert.equal(err.code, 'NODAL_ERR_FLOW_FILTER_INVALID');
        assert.equal(err.field, field);
        return true;
      });
    });
  }
});

describe('flow filter: namespaced names, as Hubble\'s k8s.ParseNamespaceName reads them', () => {
  const ns = {
    inDefault: flowAt(1, { source: { identity: 300, namespace: 'default', podName: 'web-0' } }),
    inFrontend: flowAt(2, { source: { identity: 257, namespace: 'frontend', podName: 'web-1' } }),
    noPod: flowAt(3, { source: { identity: 2, labels: ['reserved:world'] } }),
    viaService: flowAt(4, { source: { identity: 301, namespace: 'jobs', podName: 'batch-1' }, destinationService: { name: 'api', namespace: 'backend' } }),
  };
  const match = (ff: FlowFilter): string[] => {
    const p = compileFilter(ff);
    return Object.keys(ns).filter((k) => p(ns[k as keyof typeof ns]));
  };
  it('a bare name is a prefix in "default"', () => assert.deepEqual(match({ sourcePod: ['web'] }), ['inDefault']));
  it('"ns/prefix" is exact namespace, name prefix', () => assert.deepEqual(match({ sourcePod: ['frontend/web'] }), ['inFrontend']));
  it('"ns/" is the whole namespace', () => assert.deepEqual(match({ sourcePod: ['frontend/'] }), ['inFrontend']));
  it('"/prefix" is the prefix in any namespace, never an endpoint without one', () => assert.deepEqual(match({ sourcePod: ['/web'] }), ['inDefault', 'inFrontend']));
  it('"/" is any pod', () => assert.deepEqual(match({ sourcePod: ['/'] }), ['inDefault', 'inFrontend', 'viaService']));
  it('a namespace alone', () => assert.deepEqual(match({ sourcePod: ['jobs/'] }), ['viaService']));
  it('Services by the same rules', () => assert.deepEqual(match({ destinationService: ['backend/api'] }), ['viaService']));
});

describe('flow filter: flag combinations end to end (flags -> filters -> which flows pass)', () => {
  const http = (s: number, method: string, ns: string): Flow => flowAt(s, {
    Type: 'L7', l7: { type: 'REQUEST', http: { method, url: '/x', protocol: 'HTTP/1.1' } },
    destination: { identity: 256, namespace: ns, podName: 'api-0' },
  });
  const traffic: Record<string, Flow> = {
    putFoo: http(1, 'PUT', 'foo'), getFoo: http(2, 'GET', 'foo'), postFoo: http(3, 'POST', 'foo'),
    putBar: http(4, 'PUT', 'bar'), getBar: http(5, 'GET', 'bar'),
  };
  const op = (args: string[]): FilterOp[] => {
    const out: FilterOp[] = [];
    for (let i = 0; i < args.length; i++) {
      const name = args[i]!.replace(/^--/, '');
      out.push(name === 'not' ? { name } : { name, value: args[++i]! });
    }
    return out;
  };
  const pass = (...args: string[]): string[] => {
    const { whitelist, blacklist } = filtersFromOps(op(args));
    const p = compileFilters(whitelist, blacklist);
    return Object.keys(traffic).filter((k) => !p || p(traffic[k]!));
  };

  // the examples of `hubble observe flows --help`
  it('values of one flag are OR', () => assert.deepEqual(pass('--http-method', 'put', '--http-method', 'get'), ['putFoo', 'getFoo', 'putBar', 'getBar']));
  it('different flags are AND', () => assert.deepEqual(pass('--http-method', 'put', '--http-method', 'get', '--to-namespace', 'foo'), ['putFoo', 'getFoo']));
  it('more values of the namespace widen it again', () => assert.deepEqual(pass('--http-method', 'put', '--to-namespace', 'foo', '--to-namespace', 'bar'), ['putFoo', 'putBar']));
  it('--not: flows that do not match', () => assert.deepEqual(pass('--not', '--http-method', 'put'), ['getFoo', 'postFoo', 'getBar']));
  it('--not twice on one flag: neither value', () => assert.deepEqual(pass('--not', '--http-method', 'put', '--not', '--http-method', 'get'), ['postFoo']));
  it('negated different flags: only flows matching all of them are removed', () =>
    assert.deepEqual(pass('--not', '--http-method', 'put', '--not', '--http-method', 'get', '--not', '--to-namespace', 'foo'), ['postFoo', 'putBar', 'getBar']));
  it('whitelist and blacklist together', () => assert.deepEqual(pass('--to-namespace', 'foo', '--not', '--http-method', 'get'), ['putFoo', 'postFoo']));
  it('-n: either side in the namespace, with a shared flag on both', () =>
    assert.deepEqual(pass('--namespace', 'bar', '--http-method', 'get'), ['getBar']));
  it('--not -n: neither side in the namespace', () => assert.deepEqual(pass('--not', '--namespace', 'foo'), ['putBar', 'getBar']));
});
