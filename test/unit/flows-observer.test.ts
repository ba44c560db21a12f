// The agent's Observer over real gRPC (127.0.0.1:0 and a unix socket in a temp dir),
// read by a client loaded fresh from the .proto files, as `hubble observe` would.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { FlowStore, startObserver, type ObserverServer } from '../../agent/flows/index.ts';
import { collect, collectUntil, flowAt, quiet, secondsOf, sleep, tempDir, testClient, turns, unary, type Msg, type TestClient } from '../fixtures/flows/harness.ts';

const ts = (s: number): Msg => ({ seconds: String(1_700_000_000 + s), nanos: 0 });

describe('Observer GetFlows over gRPC', () => {
  const dir = tempDir();
  const socketPath = join(dir, 'observer.sock');
  const store = new FlowStore({ capacity: 1000 });
  let server: ObserverServer;
  let tcp: TestClient;
  let unix: TestClient;

  before(async () => {
    for (let i = 1; i <= 10; i++) {
      store.add(flowAt(i, i % 3 === 0
        ? { verdict: 'DROPPED', dropReasonDesc: 'POLICY_DENIED', summary: `denied ${i}`, egressDeniedBy: [{ name: 'api-allow', namespace: 'backend', kind: 'MeshPolicy', labels: ['rule=0'] }] }
        : {}));
    }
    server = await startObserver({ store, node: 'node-a', tcp: '127.0.0.1:0', socketPath, logger: quiet });
    tcp = testClient(server.addresses[0]!);
    unix = testClient(`unix:${socketPath}`);
  });
  after(async () => {
    tcp.close();
    unix.close();
    await server.close();
  });

  it('binds TCP and the unix socket (mode 0660) and says where', () => {
    assert.match(server.addresses[0]!, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(server.addresses[0], '127.0.0.1:0');
    assert.equal(server.addresses[1], `unix:${socketPath}`);
    assert.equal(statSync(socketPath).mode & 0o777, 0o660);
  });

  it('number: the last N, oldest first; Hubble field names on the wire', async () => {
    const got = await collect(tcp.GetFlows({ number: 3 }));
    assert.deepEqual(secondsOf(got), [8, 9, 10]);
    const r = got[1]!;
    assert.equal(r.response_types, 'flow');
    assert.equal(r.node_name, 'node-a');
    assert.deepEqual(r.time, ts(9));
    assert.equal(r.flow.verdict, 'DROPPED');
    assert.equal(r.flow.drop_reason_desc, 'POLICY_DENIED');
    assert.equal(r.flow.Summary, 'denied 9');
    assert.deepEqual(r.flow.is_reply, { value: false });
    assert.equal(r.flow.source.pod_name, 'web-1');
    assert.equal(r.flow.l4.TCP.destination_port, 8080);
    assert.deepEqual(r.flow.event_type, { type: 1, sub_type: 133 });
    assert.equal(r.flow.egress_denied_by[0].kind, 'MeshPolicy');
  });

  it('first: the first N', async () => {
    assert.deepEqual(secondsOf(await collect(tcp.GetFlows({ number: 2, first: true }))), [1, 2]);
  });

  it('works the same over the unix socket', async () => {
    assert.deepEqual(secondsOf(await collect(unix.GetFlows({ number: 2 }))), [9, 10]);
  });

  it('whitelist: any filter; within a filter every field', async () => {
    const got = await collect(tcp.GetFlows({ whitelist: [{ verdict: ['DROPPED'] }, { source_port: ['40001'] }] }));
    assert.deepEqual(secondsOf(got), [1, 3, 6, 9]);
    const both = await collect(tcp.GetFlows({ whitelist: [{ verdict: ['DROPPED'], destination_pod: ['backend/api'] }] }));
    assert.deepEqual(secondsOf(both), [3, 6, 9]);
  });

  it('blacklist removes what it matches, also combined with number', async () => {
    assert.deepEqual(secondsOf(await collect(tcp.GetFlows({ blacklist: [{ verdict: ['FORWARDED'] }] }))), [3, 6, 9]);
    assert.deepEqual(secondsOf(await collect(tcp.GetFlows({ number: 2, blacklist: [{ verdict: ['DROPPED'] }] }))), [8, 10]);
  });

  it('since/until bound the time window', async () => {
    assert.deepEqual(secondsOf(await collect(tcp.GetFlows({ since: ts(4), until: ts(6) }))), [4, 5, 6]);
  });

  it('follow: the last N, then live flows as they come, in order', async () => {
    const call = tcp.GetFlows({ number: 2, follow: true, whitelist: [{ source_pod: ['frontend/'] }] });
    const done = collectUntil(call, (got) => secondsOf(got).length >= 4);
    while (store.followers === 0) await sleep(5);
    store.add(flowAt(11));
    store.add(flowAt(12, { source: { namespace: 'other', podName: 'x' } })); // filtered out
    store.add(flowAt(13));
    assert.deepEqual(secondsOf(await done), [9, 10, 11, 13]);
    while (store.followers > 0) await sleep(5);
  });

  it('follow without number: only new flows', async () => {
    const call = tcp.GetFlows({ follow: true });
    const done = collectUntil(call, (got) => got.length >= 1);
    while (store.followers === 0) await sleep(5);
    store.add(flowAt(14));
    assert.deepEqual(secondsOf(await done), [14]);
    while (store.followers > 0) await sleep(5);
  });

  it('a bad filter is INVALID_ARGUMENT naming the field', async () => {
    await assert.rejects(collect(tcp.GetFlows({ whitelist: [{ http_path: ['('] }] })), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.match(err.details, /http_path/);
      return true;
    });
    await assert.rejects(collect(tcp.GetFlows({ first: true, follow: true })), { code: grpc.status.INVALID_ARGUMENT });
  });

  it('ServerStatus: ring occupancy, capacity, flows seen, uptime', async () => {
    const s = await unary(unix, 'ServerStatus');
    assert.equal(s.num_flows, String(store.size));
    assert.equal(s.max_flows, '1000');
    assert.equal(s.seen_flows, String(store.seen));
    assert.ok(Number(s.uptime_ns) > 0);
    assert.match(s.version, /^nodal v/);
  });

  it('GetNodes: the agent itself', async () => {
    const n = await unary(tcp, 'GetNodes');
    assert.equal(n.nodes.length, 1);
    assert.equal(n.nodes[0].name, 'node-a');
    assert.equal(n.nodes[0].state, 'NODE_CONNECTED');
    assert.equal(n.nodes[0].address, server.addresses[0]);
  });
});

describe('Observer: a slow follower never slows ingest and is told what it lost', () => {
  it('a paused client gets lost_events, and flows + lost add up to every flow', async () => {
    const store = new FlowStore({ capacity: 100, followerQueue: 16 });
    const server = await startObserver({ store, node: 'node-a', tcp: '127.0.0.1:0', logger: quiet });
    const client = testClient(server.addresses[0]!);
    try {
      const call = client.GetFlows({ follow: true });
      let flows = 0;
      let lost = 0;
      let notices = 0;
      call.on('data', (r: Msg) => {
        if (r.flow) flows++;
        if (r.lost_events) {
          notices++;
          lost += Number(r.lost_events.num_events_lost);
          assert.equal(r.lost_events.source, 'OBSERVER_EVENTS_QUEUE');
          assert.equal(r.node_name, 'node-a');
        }
      });
      call.on('error', () => {});
      while (store.followers === 0) await sleep(5);
      call.pause();
      const total = 20_000;
      const big = 'x'.repeat(400); // fill the HTTP/2 window quickly
      for (let i = 0; i < total; i++) {
        store.add(flowAt(i, { summary: big }));
        if (i % 500 === 0) await turns(1);
      }
      // ingest never waited for the client: all of it is counted
      assert.equal(store.seen, total);
      call.resume();
      const deadline = Date.now() + 10_000;
      while (flows + lost < total && Date.now() < deadline) await sleep(20);
      call.cancel();
      assert.equal(flows + lost, total, `flows ${flows} + lost ${lost}`);
      assert.ok(lost > 0, 'the paused client lost flows');
      assert.ok(notices > 0);
    } finally {
      client.close();
      await server.close();
    }
  });
});

describe('Observer: stored flows come before live ones', () => {
  it('live flows wait while a long history is written under backpressure (regression)', async () => {
    const store = new FlowStore({ capacity: 5000, followerQueue: 4096 });
    const big = 'y'.repeat(400);
    for (let i = 0; i < 3000; i++) store.add(flowAt(i, { summary: big }));
    const server = await startObserver({ store, node: 'node-a', tcp: '127.0.0.1:0', logger: quiet });
    const client = testClient(server.addresses[0]!);
    try {
      const call = client.GetFlows({ number: 3000, follow: true });
      const done = collectUntil(call, (got) => got.length >= 3100, 10_000);
      while (store.followers === 0) await sleep(1);
      // live flows arrive while the history is still being written
      for (let i = 3000; i < 3100; i++) {
        store.add(flowAt(i, { summary: big }));
        await turns(1);
      }
      const secs = secondsOf(await done);
      assert.equal(secs.length, 3100);
      for (let i = 1; i < secs.length; i++) assert.ok(secs[i]! > secs[i - 1]!, `out of order at ${i}: ${secs[i - 1]} then ${secs[i]}`);
    } finally {
      client.close();
      await server.close();
    }
  });
});

describe('Observer sockets', () => {
  it('removes a stale socket file left by a crashed process', async () => {
    const path = join(tempDir(), 'stale.sock');
    // a listener killed with SIGKILL leaves its socket file behind
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    assert.ok(existsSync(path), 'the stale socket exists');
    const server = await startObserver({ store: new FlowStore(), node: 'n', socketPath: path, logger: quiet });
    const client = testClient(`unix:${path}`);
    try {
      assert.deepEqual(await collect(client.GetFlows({})), []);
    } finally {
      client.close();
      await server.close();
    }
    assert.equal(existsSync(path), false, 'close() removes the socket');
  });

  it('refuses a socket another process is serving on', async () => {
    const path = join(tempDir(), 'live.sock');
    const live = createServer().listen(path);
    await new Promise((r) => live.once('listening', r));
    try {
      await assert.rejects(startObserver({ store: new FlowStore(), node: 'n', socketPath: path, logger: quiet }),
        (err: Error & { code?: string }) => err.code === 'NODAL_ERR_OBSERVER_BIND' && /in use/.test(err.message));
    } finally {
      live.close();
    }
  });

  it('refuses to remove a file that is not a socket', async () => {
    const path = join(tempDir(), 'file.sock');
    writeFileSync(path, 'keep me');
    await assert.rejects(startObserver({ store: new FlowStore(), node: 'n', socketPath: path, logger: quiet }), { code: 'NODAL_ERR_OBSERVER_BIND' });
    assert.ok(existsSync(path));
  });

  it('close() ends live follow streams', async () => {
    const store = new FlowStore();
    const server = await startObserver({ store, node: 'n', tcp: '127.0.0.1:0', logger: quiet });
    const client = testClient(server.addresses[0]!);
    const call = client.GetFlows({ follow: true });
    const ended = new Promise<string>((resolve) => {
      call.on('end', () => resolve('end'));
      call.on('error', (e: grpc.ServiceError) => resolve(`error ${e.code}`));
      call.on('data', () => {});
    });
    while (store.followers === 0) await sleep(5);
    await server.close();
    assert.ok(['end', `error ${grpc.status.UNAVAILABLE}`, `error ${grpc.status.CANCELLED}`].includes(await ended));
    assert.equal(store.followers, 0);
    client.close();
  });
});
