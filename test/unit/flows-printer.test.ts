// Hubble's output formats, pinned by golden files, and the JSON <-> wire <-> Flow
// conversions they rest on.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  alignTable, flowFromWire, flowToJson, flowToWire, formatCompact, formatLost, formatNodeStatus, formatTableRows, formatTime,
  parseRfc3339, responseFromJson, responseToJson, rfc3339, type WireFlow,
} from '../../agent/flows/index.ts';
import { fixtureDir, flowAt } from '../fixtures/flows/harness.ts';

const lines = readFileSync(join(fixtureDir, 'flows.jsonl'), 'utf8').split('\n').filter((l) => l.trim() !== '');
const golden = (name: string): string[] => readFileSync(join(fixtureDir, name), 'utf8').split('\n').filter((l) => l !== '');

function compact(opts: Parameters<typeof formatCompact>[1]): string[] {
  return lines.map((l) => {
    const res = responseFromJson(l);
    return res.flow ? formatCompact(flowFromWire(res.flow as WireFlow), opts) : formatLost(res);
  });
}

describe('compact output (golden)', () => {
  it('matches Hubble\'s compact line for each kind of flow', () => {
    assert.deepEqual(compact({}), golden('compact.golden'));
  });

  it('with --print-policy-names and --print-node-name', () => {
    assert.deepEqual(compact({ policyNames: true, nodeName: true }), golden('compact-policy-names.golden'));
  });

  it('pins the shapes that matter, line by line', () => {
    const [drop, redirect, req, resp, v6, lost, udp, svc] = golden('compact.golden');
    // pod endpoints as ns/pod:port, identities, a drop reason as the type, why in parentheses
    assert.equal(drop, 'Nov 14 22:13:20.123: frontend/web-1 (ID:257) -> backend/api-7:8080 (ID:256) Policy denied DROPPED (default deny: no ALLOW rule of MeshPolicy backend/api-allow matches)');
    assert.match(redirect!, / to-proxy REDIRECTED \(/);
    assert.match(req!, / http-request FORWARDED \(HTTP\/1\.1 GET http:\/\/api\.backend\/v1\/items\)$/);
    // a response is printed from the client's side with the arrow reversed, latency in ms
    assert.match(resp!, /frontend\/web-1:40312 \(ID:257\) <- backend\/api-7:8080 \(ID:256\) http-response FORWARDED \(HTTP\/1\.1 200 2ms \(GET http:\/\/api\.backend\/v1\/items\)\)$/);
    assert.match(v6!, /^Nov 14 22:13:22\.000: \[2001:db8::7\]:51000 \(world\) -> /);
    assert.equal(lost, 'Nov 14 22:13:22.100 EVENTS LOST: OBSERVER_EVENTS_QUEUE CPU(0) 12');
    // is_reply unknown: <>; reserved identities by name
    assert.match(udp!, / <> 10\.0\.1\.2:53 \(host\) to-stack FORWARDED \(UDP\)$/);
    assert.match(svc!, /-> backend\/api:80 \(ID:256\) to-proxy REDIRECTED/);
  });
});

describe('other formats', () => {
  it('table: aligned like Go\'s tabwriter, header first', () => {
    const flows = lines.slice(0, 2).map((l) => flowFromWire(responseFromJson(l).flow as WireFlow));
    const out = alignTable(formatTableRows(flows)).split('\n');
    assert.equal(out.length, 3);
    assert.match(out[0]!, /^TIMESTAMP {13}SOURCE {17}DESTINATION {10}TYPE {12}VERDICT {6}SUMMARY$/);
    // each column is its widest cell plus three spaces
    assert.equal(out[0]!.indexOf('SOURCE'), 'Nov 14 22:13:21.500'.length + 3);
    assert.equal(out[1]!.indexOf('frontend/web-1'), out[0]!.indexOf('SOURCE'));
  });

  it('node status lines: unavailable nodes always, connects only when asked', () => {
    const t = { seconds: 1_700_000_000, nanos: 0 };
    assert.equal(formatNodeStatus({ nodeStatus: { stateChange: 'NODE_UNAVAILABLE', nodeNames: ['node-c'], message: 'refused' }, nodeName: 'nodal-relay', time: t }),
      'Nov 14 22:13:20.000 [nodal-relay]: 1 nodes are unavailable: node-c (refused)');
    assert.equal(formatNodeStatus({ nodeStatus: { stateChange: 'NODE_CONNECTED', nodeNames: ['a', 'b'] }, nodeName: 'r', time: t }), undefined);
    assert.equal(formatNodeStatus({ nodeStatus: { stateChange: 'NODE_CONNECTED', nodeNames: ['a', 'b'] }, nodeName: 'r', time: t }, true),
      'Nov 14 22:13:20.000 [r]: Receiving flows from 2 nodes: a, b');
  });

  it('times: Go StampMilli in UTC, space-padded day, milliseconds truncated', () => {
    assert.equal(formatTime({ seconds: Date.UTC(2024, 0, 2, 3, 4, 5) / 1000, nanos: 999_999_999 }), 'Jan  2 03:04:05.999');
    assert.equal(formatTime({ seconds: 0, nanos: 0 }), 'N/A');
  });
});

describe('JSON, wire and Flow', () => {
  it('-o json lines are protojson with .proto names (golden)', () => {
    const out = lines.map((l) => JSON.stringify(responseToJson(responseFromJson(l))));
    assert.deepEqual(out, golden('json.golden'));
    const first = JSON.parse(out[0]!) as Record<string, Record<string, unknown>>;
    assert.deepEqual(Object.keys(first), ['flow', 'node_name', 'time']);
    assert.equal(first.flow!.drop_reason_desc, 'POLICY_DENIED');
    assert.equal(first.flow!.is_reply, false);
    assert.deepEqual(first.flow!.egress_denied_by, [{ name: 'api-allow', namespace: 'backend', labels: ['default-deny'], revision: '42', kind: 'MeshPolicy' }]);
  });

  it('accepts lowerCamelCase keys and a bare Flow, as protojson readers do', () => {
    const res = responseFromJson(lines[7]!);
    const f = flowFromWire(res.flow as WireFlow);
    assert.equal(f.nodeName, 'node-a');
    assert.equal(f.source?.podName, 'web-1');
    assert.deepEqual(f.l4, { TCP: { sourcePort: 40400, destinationPort: 80 } });
    assert.deepEqual(f.destinationService, { name: 'api', namespace: 'backend' });
    assert.equal(res.nodeName, 'node-a');
  });

  it('a Flow survives Flow -> JSON -> wire -> Flow', () => {
    const f = flowAt(3, {
      verdict: 'DROPPED', dropReasonDesc: 'POLICY_DENY', summary: 'denied by MeshPolicy backend/x rule 1', isReply: false,
      egressDeniedBy: [{ name: 'x', namespace: 'backend', kind: 'MeshPolicy', labels: ['rule=1'], revision: 7 }],
      traceContext: { parent: { traceId: 'abc', spanId: 'def' } },
      l7: { type: 'RESPONSE', latencyNs: 1234, http: { code: 403, method: 'GET', url: '/x', protocol: 'HTTP/1.1', headers: [{ key: 'a', value: 'b' }] } },
      Type: 'L7',
    }, 5);
    const back = flowFromWire(responseFromJson(JSON.stringify(flowToJson(f))).flow as WireFlow);
    const { eventType, ...rest } = back;
    assert.deepEqual(eventType, { type: 129, subType: 0 });
    assert.deepEqual(rest, f);
  });

  it('the wire form carries Hubble\'s Summary, a BoolValue is_reply, the event type and numeric drop reason', () => {
    const w = flowToWire(flowAt(1, { verdict: 'DROPPED', dropReasonDesc: 'POLICY_DENIED', summary: 'why', isReply: false }));
    assert.equal(w.Summary, 'why');
    assert.deepEqual(w.isReply, { value: false });
    assert.deepEqual(w.eventType, { type: 1, subType: 133 });
    assert.equal(w.dropReason, 133);
    assert.equal('summary' in w, false);
  });

  it('RFC 3339 with protojson\'s 0/3/6/9 fraction digits, and back', () => {
    assert.equal(rfc3339({ seconds: 1_700_000_000, nanos: 0 }), '2023-11-14T22:13:20Z');
    assert.equal(rfc3339({ seconds: 1_700_000_000, nanos: 5_000_000 }), '2023-11-14T22:13:20.005Z');
    assert.equal(rfc3339({ seconds: 1_700_000_000, nanos: 5_000 }), '2023-11-14T22:13:20.000005Z');
    assert.equal(rfc3339({ seconds: 1_700_000_000, nanos: 5 }), '2023-11-14T22:13:20.000000005Z');
    assert.deepEqual(parseRfc3339('2023-11-14T23:13:20.5+01:00'), { seconds: 1_700_000_000, nanos: 500_000_000 });
    assert.equal(parseRfc3339('yesterday'), undefined);
  });

  it('a bad JSON line is an error with a code, naming the field', () => {
    assert.throws(() => responseFromJson('{"flow":{"verdict":"MAYBE"}}'), (e: unknown) => (e as { code?: string }).code === 'NODAL_ERR_FLOW_JSON' && /flow\.verdict/.test((e as Error).message));
    assert.throws(() => responseFromJson('not json'), { code: 'NODAL_ERR_FLOW_JSON' });
  });
});
