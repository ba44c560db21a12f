// The relay: two agents' flows merged in time order, an unreachable agent reported (never
// silently missing), ServerStatus and GetNodes aggregated, live streams merged.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { connectOrFail, FlowStore, observerClient, startObserver, type ObserverServer } from '../../agent/flows/index.ts';
import { mergeSorted, ReorderBuffer, startRelay, type RelayAgent, type RelayServer } from '../../control/relay/index.ts';
import { collect, collectUntil, flowAt, quiet, secondsOf, sleep, tempDir, testClient, unary, type Msg, type TestClient } from '../fixtures/flows/harness.ts';

describe('relay over two agents and one that is down', () => {
  const dir = tempDir('nodal-relay-');
  const storeA = new FlowStore();
  const storeB = new FlowStore();
  let a: ObserverServer;
  let b: ObserverServer;
  let relay: RelayServer;
  let client: TestClient;
  const agents: RelayAgent[] = [];

  before(async () => {
    // interleaved in time: A has the odd seconds, B the even ones
    for (let s = 1; s <= 10; s++) (s % 2 ? storeA : storeB).add(flowAt(s, { nodeName: s % 2 ? 'node-a' : 'node-b' }));
    a = await startObserver({ store: storeA, node: 'node-a', tcp: '127.0.0.1:0', logger: quiet });
    b = await startObserver({ store: storeB, node: 'node-b', socketPath: join(dir, 'b.sock'), logger: quiet });
    agents.push(
      { node: 'node-a', address: a.addresses[0]! },
      { node: 'node-b', address: b.addresses[0]! },
      { node: 'node-c', address: `unix:${join(dir, 'nobody-here.sock')}` },
    );
    relay = await startRelay({ agents: () => agents, tcp: '127.0.0.1:0', socketPath: join(dir, 'relay.sock'), logger: quiet, connectTimeoutMs: 1000, reorderWindowMs: 100, retryMs: 200 });
    client = testClient(`unix:${join(dir, 'relay.sock')}`);
  });
  after(async () => {
    client.close();
    await relay.close();
    await a.close();
    await b.close();
  });

  it('merges both agents\' stored flows in time order and reports the unavailable one', async () => {
    const got = await collect(client.GetFlows({}));
    assert.deepEqual(secondsOf(got), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(got.filter((r) => r.flow).map((r) => r.node_name), ['node-a', 'node-b', 'node-a', 'node-b', 'node-a', 'node-b', 'node-a', 'node-b', 'node-a', 'node-b']);
    const status = got.filter((r) => r.node_status).map((r) => [r.node_status.state_change, r.node_status.node_names]);
    assert.deepEqual(status, [['NODE_CONNECTED', ['node-a', 'node-b']], ['NODE_UNAVAILABLE', ['node-c']]]);
    const unavailable = got.find((r) => r.node_status?.state_change === 'NODE_UNAVAILABLE')!;
    assert.match(unavailable.node_status.message, /nobody-here\.sock/);
    assert.equal(unavailable.node_name, 'nodal-relay');
  });

  it('number applies to the merged result (the last N across nodes)', async () => {
    assert.deepEqual(secondsOf(await collect(client.GetFlows({ number: 3 }))), [8, 9, 10]);
    assert.deepEqual(secondsOf(await collect(client.GetFlows({ number: 3, first: true }))), [1, 2, 3]);
  });

  it('passes filters to the agents', async () => {
    assert.deepEqual(secondsOf(await collect(client.GetFlows({ whitelist: [{ node_name: ['node-b'] }], number: 2 }))), [8, 10]);
  });

  it('ServerStatus adds the agents up and names the unavailable node', async () => {
    const s = await unary(client, 'ServerStatus');
    assert.equal(s.num_flows, '10');
    assert.equal(s.seen_flows, '10');
    assert.equal(s.max_flows, String(storeA.capacity + storeB.capacity));
    assert.deepEqual(s.num_connected_nodes, { value: 2 });
    assert.deepEqual(s.num_unavailable_nodes, { value: 1 });
    assert.deepEqual(s.unavailable_nodes, ['node-c']);
  });

  it('GetNodes lists every node with its state', async () => {
    const n = await unary(client, 'GetNodes');
    assert.deepEqual(n.nodes.map((x: Msg) => [x.name, x.state]), [['node-a', 'NODE_CONNECTED'], ['node-b', 'NODE_CONNECTED'], ['node-c', 'NODE_UNAVAILABLE']]);
    assert.equal(n.nodes[0].num_flows, '5');
  });

  it('follow: live flows from both agents come out in time order, whatever the arrival order', async () => {
    const call = client.GetFlows({ follow: true });
    const done = collectUntil(call, (got) => secondsOf(got).length >= 4);
    while (storeA.followers === 0 || storeB.followers === 0) await sleep(5);
    // B's earlier flows arrive after A's later ones
    storeA.add(flowAt(102, { nodeName: 'node-a' }));
    storeA.add(flowAt(104, { nodeName: 'node-a' }));
    await sleep(20);
    storeB.add(flowAt(101, { nodeName: 'node-b' }));
    storeB.add(flowAt(103, { nodeName: 'node-b' }));
    const got = await done;
    assert.deepEqual(secondsOf(got), [101, 102, 103, 104]);
    const status = got.filter((r) => r.node_status).map((r) => r.node_status.state_change);
    assert.deepEqual(status, ['NODE_CONNECTED', 'NODE_UNAVAILABLE']);
  });
});

describe('relay follow when an agent goes away', () => {
  it('reports the node unavailable mid-stream', async () => {
    const store = new FlowStore();
    const a = await startObserver({ store, node: 'node-a', tcp: '127.0.0.1:0', logger: quiet });
    const relay = await startRelay({ agents: () => [{ node: 'node-a', address: a.addresses[0]! }], tcp: '127.0.0.1:0', logger: quiet, reorderWindowMs: 50, retryMs: 60_000 });
    const client = testClient(relay.addresses[0]!);
    try {
      const call = client.GetFlows({ follow: true });
      const done = collectUntil(call, (got) => got.some((r) => r.node_status?.state_change === 'NODE_UNAVAILABLE'));
      while (store.followers === 0) await sleep(5);
      store.add(flowAt(1));
      await sleep(150);
      await a.close();
      const got = await done;
      assert.deepEqual(secondsOf(got), [1]);
      assert.deepEqual(got.filter((r) => r.node_status).map((r) => [r.node_status.state_change, r.node_status.node_names]),
        [['NODE_CONNECTED', ['node-a']], ['NODE_UNAVAILABLE', ['node-a']]]);
    } finally {
      client.close();
      await relay.close();
    }
  });
});

describe('relay follow when an agent comes up later', () => {
  it('retries it, reports it connected, and merges its flows in', async () => {
    const dir = tempDir('nodal-relay-late-');
    const path = join(dir, 'late.sock');
    const relay = await startRelay({ agents: () => [{ node: 'node-late', address: `unix:${path}` }], tcp: '127.0.0.1:0', logger: quiet, connectTimeoutMs: 300, reorderWindowMs: 50, retryMs: 100 });
    const client = testClient(relay.addresses[0]!);
    const store = new FlowStore();
    let agent: ObserverServer | undefined;
    try {
      const call = client.GetFlows({ follow: true });
      const done = collectUntil(call, (got) => secondsOf(got).length >= 1);
      await sleep(150);
      agent = await startObserver({ store, node: 'node-late', socketPath: path, logger: quiet });
      while (store.followers === 0) await sleep(10);
      store.add(flowAt(7, { nodeName: 'node-late' }));
      const got = await done;
      assert.deepEqual(got.filter((r) => r.node_status).map((r) => [r.node_status.state_change, r.node_status.node_names]),
        [['NODE_UNAVAILABLE', ['node-late']], ['NODE_CONNECTED', ['node-late']]]);
      assert.deepEqual(secondsOf(got), [7]);
    } finally {
      client.close();
      await relay.close();
      await agent?.close();
    }
  });
});

describe('connectOrFail on a channel that is backing off (the relay reuses its channels)', () => {
  it('fails at once while the channel waits to retry, as a call made then would, and connects on the next attempt', async () => {
    const dir = tempDir('nodal-connect-');
    const path = join(dir, 'agent.sock');
    // a long backoff, so the channel is still waiting to retry when the agent comes up
    const client = observerClient(`unix:${path}`, { 'grpc.initial_reconnect_backoff_ms': 1500, 'grpc.max_reconnect_backoff_ms': 1500 });
    let agent: ObserverServer | undefined;
    try {
      assert.equal(await connectOrFail(client, 1000), 'connection failed (refused or unreachable)');
      agent = await startObserver({ store: new FlowStore(), node: 'node-late', socketPath: path, logger: quiet });
      // the agent is up, but the channel has not tried again: a call made now fails with the
      // last attempt's error, so connectOrFail must not answer "connected" before that call
      // has failed (the relay would tell its followers connected, then unavailable)
      const t0 = Date.now();
      assert.match(await connectOrFail(client, 1000) ?? 'ready', /last connection attempt failed/);
      assert.ok(Date.now() - t0 < 500, 'answered at once, not after waiting for the next attempt');
      const callError = await new Promise<string>((resolve) => {
        const call = client.GetFlows({});
        call.on('error', (err: Error) => resolve(err.message));
        call.on('end', () => resolve('ended'));
        call.on('data', () => { /* not expected */ });
      });
      assert.match(callError, /UNAVAILABLE|No connection established/, 'a call made in the backoff fails too');
      // once the backoff is over, the next attempt connects
      await sleep(1600);
      assert.equal(await connectOrFail(client, 2000), undefined);
    } finally {
      client.close();
      await agent?.close();
    }
  });
});

describe('relay merging primitives', () => {
  const res = (s: number, nanos = 0): Msg => ({ flow: { time: { seconds: s, nanos } }, time: { seconds: s, nanos } });

  it('mergeSorted is stable and cuts to the last or first N flows, notices kept among them', () => {
    const lost = { lostEvents: { numEventsLost: 3 }, time: { seconds: 4, nanos: 0 } };
    const merged = mergeSorted([res(5), res(1), res(3, 1), lost, res(3)], 3, false);
    assert.deepEqual(merged.map((r) => (r.flow ? `${(r.time as Msg).seconds}.${(r.time as Msg).nanos}` : 'lost')), ['3.0', '3.1', 'lost', '5.0']);
    assert.deepEqual(mergeSorted([res(5), res(1), res(3)], 2, true).map((r) => (r.time as Msg).seconds), [1, 3]);
  });

  it('the reorder buffer emits in time order, and at once beyond its bound', async () => {
    const out: number[] = [];
    const buf = new ReorderBuffer({ windowMs: 50, max: 3, emit: (r) => out.push(Number((r.time as Msg).seconds)) });
    const now = Math.floor(Date.now() / 1000);
    for (const s of [now + 3, now + 1, now + 2]) buf.push(res(s));
    assert.deepEqual(out, []);
    buf.push(res(now + 4)); // over the bound: the oldest goes now
    assert.deepEqual(out, [now + 1]);
    await sleep(120); // quiet for a window: everything drains, in order
    assert.deepEqual(out, [now + 1, now + 2, now + 3, now + 4]);
    buf.close();
  });
});
