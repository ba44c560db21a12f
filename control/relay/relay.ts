// The flow relay (DESIGN §8): Hubble's observer.Observer on TCP 4245, answered by asking
// every agent's Observer and merging the answers in time order. Nodes that cannot be
// reached are reported (node_status events, ServerStatus.unavailable_nodes), never
// silently left out; lost_events from the agents pass through.
import * as grpc from '@grpc/grpc-js';
import {
  bindListeners, connectOrFail, FlowFilterError, nodalVersion, nowTime, observerClient, observerService, parseFlowsRequest, shutdown,
  statusError, type FlowLogger, type FlowsRequest, type ObserverClient, type WireGetFlowsRequest, type WireGetFlowsResponse,
  type WireNode, type WireServerStatus,
} from '../../agent/flows/index.ts';
import { mergeSorted, ReorderBuffer, responseTime } from './merge.ts';

export interface RelayAgent {
  node: string;
  /** host:port or unix:/path */
  address: string;
}

export interface RelayOptions {
  /** the agents to ask, read afresh for every request (nodes come and go) */
  agents: () => RelayAgent[];
  tcp?: string;
  socketPath?: string;
  logger: FlowLogger;
  /** how the relay names itself in node_status events */
  name?: string;
  /** how long an agent may take to accept a connection before it counts as unavailable */
  connectTimeoutMs?: number;
  /** how long a live flow waits for earlier flows from other nodes */
  reorderWindowMs?: number;
  /** most live flows held for reordering */
  reorderMax?: number;
  /** how often a follow request retries unavailable agents and looks for new ones */
  retryMs?: number;
}

export interface RelayServer {
  close(): Promise<void>;
  addresses: string[];
}

/** long enough for a TLS-less local connect across a busy node, short enough for a CLI */
const DEFAULT_CONNECT_TIMEOUT_MS = 2000;
/** Hubble relay's drain timeout is 1s; nodal nodes share one clock source more often */
const DEFAULT_REORDER_WINDOW_MS = 500;
const DEFAULT_REORDER_MAX = 1024;
const DEFAULT_RETRY_MS = 5000;

type FlowsCall = grpc.ServerWritableStream<WireGetFlowsRequest, WireGetFlowsResponse>;

const errText = (err: unknown): string =>
  ((err as grpc.ServiceError).details || (err as Error).message || String(err)).replace(/\.?\s*Resolution note:\s*$/, '');

export async function startRelay(opts: RelayOptions): Promise<RelayServer> {
  const { logger } = opts;
  const name = opts.name ?? 'nodal-relay';
  const connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const windowMs = opts.reorderWindowMs ?? DEFAULT_REORDER_WINDOW_MS;
  const reorderMax = opts.reorderMax ?? DEFAULT_REORDER_MAX;
  const retryMs = opts.retryMs ?? DEFAULT_RETRY_MS;
  const clients = new Map<string, ObserverClient>();
  const active = new Set<{ stop(): void }>();
  let addresses: string[] = [];

  /** one channel per agent address, reused across requests; dropped when the agent leaves */
  function clientFor(address: string): ObserverClient {
    let c = clients.get(address);
    if (!c) {
      // a node back from a reboot should rejoin within a retry period, not grpc's 2 minutes
      c = observerClient(address, { 'grpc.initial_reconnect_backoff_ms': Math.min(1000, retryMs), 'grpc.max_reconnect_backoff_ms': retryMs });
      clients.set(address, c);
    }
    return c;
  }
  function agentsNow(): RelayAgent[] {
    const list = opts.agents();
    const keep = new Set(list.map((a) => a.address));
    for (const [addr, c] of clients) if (!keep.has(addr)) { c.close(); clients.delete(addr); }
    return list;
  }

  const nodeStatus = (state: string, nodes: string[], message?: string): WireGetFlowsResponse =>
    ({ nodeStatus: { stateChange: state, nodeNames: nodes, ...(message ? { message } : {}) }, nodeName: name, time: nowTime() });

  /**
   * One upstream GetFlows: resolves with its responses (no follow), or streams them to
   * onData (follow). `connected` fires once the agent accepted the connection.
   */
  function upstream(agent: RelayAgent, req: WireGetFlowsRequest, h: {
    onData(r: WireGetFlowsResponse): void;
    onConnected(): void;
    onFail(message: string): void;
    onEnd(): void;
  }): { call: grpc.ClientReadableStream<WireGetFlowsResponse>; cancel(): void } {
    const client = clientFor(agent.address);
    const call = client.GetFlows(req);
    let settled = false;
    let connected = false;
    let cancelled = false;
    void connectOrFail(client, connectTimeoutMs).then((why) => {
      if (settled || cancelled || connected) return;
      if (why) {
        settled = true;
        call.cancel();
        h.onFail(`${agent.address}: ${why}`);
        return;
      }
      connected = true;
      h.onConnected();
    });
    call.on('data', (r: WireGetFlowsResponse) => {
      if (!connected) { connected = true; h.onConnected(); }
      h.onData(r);
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (settled || cancelled) return;
      settled = true;
      h.onFail(`${agent.address}: ${errText(err)}`);
    });
    call.on('end', () => {
      if (settled || cancelled) return;
      settled = true;
      if (!connected) { connected = true; h.onConnected(); }
      h.onEnd();
    });
    return { call, cancel: () => { cancelled = true; call.cancel(); } };
  }

  /** no follow: ask everyone, wait for all, sort, cut to number */
  async function collect(call: FlowsCall, req: FlowsRequest): Promise<void> {
    const agents = agentsNow();
    const upstreamReq: WireGetFlowsRequest = { ...call.request, follow: false };
    const got: WireGetFlowsResponse[] = [];
    const connectedNodes: string[] = [];
    const unavailable: Array<{ node: string; message: string }> = [];
    const cancels: Array<() => void> = [];
    const stopper = { stop: () => { for (const c of cancels) c(); } };
    active.add(stopper);
    call.on('cancelled', stopper.stop);
    await Promise.all(agents.map((a) => new Promise<void>((resolve) => {
      const u = upstream(a, upstreamReq, {
        onData: (r) => got.push(r),
        onConnected: () => connectedNodes.push(a.node),
        onFail: (message) => {
          const i = connectedNodes.indexOf(a.node);
          if (i >= 0) connectedNodes.splice(i, 1);
          unavailable.push({ node: a.node, message });
          resolve();
        },
        onEnd: resolve,
      });
      cancels.push(u.cancel);
    })));
    active.delete(stopper);
    if (call.cancelled) return;
    // in the order the agents were listed, not the order they answered
    const connectedInOrder = agents.map((a) => a.node).filter((n) => connectedNodes.includes(n));
    if (connectedInOrder.length > 0) call.write(nodeStatus('NODE_CONNECTED', connectedInOrder));
    for (const u of unavailable) call.write(nodeStatus('NODE_UNAVAILABLE', [u.node], u.message));
    for (const r of mergeSorted(got, req.number, req.first)) call.write(r);
    call.end();
  }

  /** follow: keep a stream open to every agent, merge through the reorder window */
  function follow(call: FlowsCall, req: FlowsRequest): void {
    interface Up {
      agent: RelayAgent;
      cancel?: () => void;
      pause?: () => void;
      resume?: () => void;
      last?: { seconds: number; nanos: number };
      state: 'connecting' | 'connected' | 'unavailable' | 'done';
      /** what the client was last told about this node: report changes, not retries */
      told?: 'NODE_CONNECTED' | 'NODE_UNAVAILABLE';
    }
    const ups = new Map<string, Up>();
    let stopped = false;
    let paused = false;
    let initial = true;
    const initialConnected: string[] = [];
    const initialUnavailable: Array<{ node: string; message: string }> = [];

    const write = (r: WireGetFlowsResponse): void => {
      if (stopped) return;
      if (!call.write(r) && !paused) {
        // the client is slow: stop reading from agents; their own queues count the loss
        paused = true;
        for (const u of ups.values()) u.pause?.();
      }
    };
    call.on('drain', () => {
      if (!paused) return;
      paused = false;
      for (const u of ups.values()) u.resume?.();
    });
    const buffer = new ReorderBuffer({ windowMs, max: reorderMax, emit: write });

    const stop = (): void => {
      if (stopped) return;
      stopped = true;
      clearInterval(retryTimer);
      clearTimeout(initialTimer);
      buffer.close();
      for (const u of ups.values()) u.cancel?.();
      active.delete(stopper);
    };
    const stopper = { stop: () => { stop(); call.end(); } };
    active.add(stopper);
    call.on('cancelled', stop);
    call.on('error', stop);

    const finishIfDone = (): void => {
      // only an `until` lets a follow end: every agent has then finished its stream
      if (stopped || !req.until) return;
      if ([...ups.values()].every((u) => u.state === 'done' || u.state === 'unavailable')) {
        buffer.flush();
        stop();
        call.end();
      }
    };

    const reportInitial = (): void => {
      if (!initial) return;
      initial = false;
      const order = [...ups.keys()];
      initialConnected.sort((x, y) => order.indexOf(x) - order.indexOf(y));
      if (initialConnected.length > 0) write(nodeStatus('NODE_CONNECTED', initialConnected));
      for (const u of initialUnavailable) write(nodeStatus('NODE_UNAVAILABLE', [u.node], u.message));
    };
    const tell = (u: Up, state: 'NODE_CONNECTED' | 'NODE_UNAVAILABLE', message?: string): void => {
      if (u.told === state) return;
      u.told = state;
      write(nodeStatus(state, [u.agent.node], message));
    };
    const initialSettled = (): void => {
      if (initial && [...ups.values()].every((u) => u.state !== 'connecting')) reportInitial();
    };

    const start = (u: Up): void => {
      u.state = 'connecting';
      // after a reconnect, continue where this node left off instead of repeating it
      const r: WireGetFlowsRequest = u.last
        ? { ...call.request, number: 0, since: { seconds: u.last.seconds, nanos: u.last.nanos + 1 } }
        : call.request;
      const up = upstream(u.agent, r, {
        onData: (res) => {
          if (res.flow) u.last = responseTime(res);
          buffer.push(res.nodeName ? res : { ...res, nodeName: u.agent.node });
        },
        onConnected: () => {
          u.state = 'connected';
          if (initial) { u.told = 'NODE_CONNECTED'; initialConnected.push(u.agent.node); initialSettled(); } else tell(u, 'NODE_CONNECTED');
        },
        onFail: (message) => {
          u.state = 'unavailable';
          logger.warn({ node: u.agent.node, message }, 'relay: agent unavailable');
          if (initial) {
            // still in the first report: move the node to its unavailable list
            const i = initialConnected.indexOf(u.agent.node);
            if (i >= 0) initialConnected.splice(i, 1);
            u.told = 'NODE_UNAVAILABLE';
            initialUnavailable.push({ node: u.agent.node, message });
            initialSettled();
          } else {
            tell(u, 'NODE_UNAVAILABLE', message);
          }
          finishIfDone();
        },
        onEnd: () => {
          if (req.until) { u.state = 'done'; finishIfDone(); return; }
          // an agent ends a follow only when it shuts down
          u.state = 'unavailable';
          tell(u, 'NODE_UNAVAILABLE', `${u.agent.address}: stream ended`);
        },
      });
      u.cancel = up.cancel;
      u.pause = () => up.call.pause();
      u.resume = () => up.call.resume();
      if (paused) up.call.pause();
    };

    for (const a of agentsNow()) {
      const u: Up = { agent: a, state: 'connecting' };
      ups.set(a.node, u);
      start(u);
    }
    if (ups.size === 0) reportInitial();
    // do not hold the first status back for a node that never answers
    const initialTimer = setTimeout(reportInitial, connectTimeoutMs + 100);

    const retryTimer = setInterval(() => {
      if (stopped) return;
      const now = agentsNow();
      const names = new Set(now.map((a) => a.node));
      for (const [node, u] of ups) {
        if (!names.has(node)) {
          u.cancel?.();
          ups.delete(node);
          write(nodeStatus('NODE_GONE', [node]));
        }
      }
      for (const a of now) {
        const u = ups.get(a.node);
        if (!u) {
          const nu: Up = { agent: a, state: 'connecting' };
          ups.set(a.node, nu);
          start(nu);
        } else if (u.state === 'unavailable') {
          u.agent = a;
          start(u);
        }
      }
    }, retryMs);
    retryTimer.unref();
  }

  function getFlows(call: FlowsCall): void {
    let req: FlowsRequest;
    try {
      // validate here so a bad filter is one clear error, not one per node
      req = parseFlowsRequest(call.request);
    } catch (err) {
      if (!(err instanceof FlowFilterError)) throw err;
      call.emit('error', statusError(grpc.status.INVALID_ARGUMENT, err.message));
      return;
    }
    if (req.follow) {
      follow(call, req);
      return;
    }
    collect(call, req).catch((err: unknown) => {
      logger.error({ err }, 'relay GetFlows failed');
      call.emit('error', statusError(grpc.status.INTERNAL, `GetFlows: ${(err as Error).message}`));
    });
  }

  function unary<Res>(agent: RelayAgent, method: 'ServerStatus' | 'GetNodes'): Promise<Res> {
    return new Promise((resolve, reject) => {
      const c = clientFor(agent.address);
      const cb = (err: grpc.ServiceError | null, res?: unknown): void => (err ? reject(err) : resolve(res as Res));
      c[method]({}, { deadline: Date.now() + connectTimeoutMs }, cb);
    });
  }

  async function serverStatus(): Promise<WireServerStatus> {
    const agents = agentsNow();
    const results = await Promise.allSettled(agents.map((a) => unary<WireServerStatus>(a, 'ServerStatus')));
    const out = { numFlows: 0, maxFlows: 0, seenFlows: 0, uptimeNs: 0 };
    const unavailableNodes: string[] = [];
    results.forEach((r, i) => {
      if (r.status === 'rejected') { unavailableNodes.push(agents[i]!.node); return; }
      out.numFlows += Number(r.value.numFlows ?? 0);
      out.maxFlows += Number(r.value.maxFlows ?? 0);
      out.seenFlows += Number(r.value.seenFlows ?? 0);
      out.uptimeNs = Math.max(out.uptimeNs, Number(r.value.uptimeNs ?? 0));
    });
    return {
      ...out,
      numConnectedNodes: { value: agents.length - unavailableNodes.length },
      numUnavailableNodes: { value: unavailableNodes.length },
      unavailableNodes,
      version: nodalVersion(),
    };
  }

  async function getNodes(): Promise<{ nodes: WireNode[] }> {
    const agents = agentsNow();
    const results = await Promise.allSettled(agents.map((a) => unary<{ nodes?: WireNode[] }>(a, 'GetNodes')));
    return {
      nodes: results.map((r, i): WireNode => {
        const a = agents[i]!;
        if (r.status === 'rejected') return { name: a.node, address: a.address, state: 'NODE_UNAVAILABLE', tls: { enabled: false } };
        const n = r.value.nodes?.[0] ?? {};
        return { ...n, name: a.node, address: a.address, state: 'NODE_CONNECTED' };
      }),
    };
  }

  const server = new grpc.Server();
  server.addService(observerService(), {
    GetFlows: getFlows,
    ServerStatus: (_c: grpc.ServerUnaryCall<object, WireServerStatus>, cb: grpc.sendUnaryData<WireServerStatus>) => {
      serverStatus().then((s) => cb(null, s), (err: unknown) => cb(statusError(grpc.status.INTERNAL, errText(err))));
    },
    GetNodes: (_c: grpc.ServerUnaryCall<object, { nodes: WireNode[] }>, cb: grpc.sendUnaryData<{ nodes: WireNode[] }>) => {
      getNodes().then((n) => cb(null, n), (err: unknown) => cb(statusError(grpc.status.INTERNAL, errText(err))));
    },
  });
  addresses = await bindListeners(server, opts);
  logger.info({ addresses }, 'relay listening');

  return {
    addresses,
    async close(): Promise<void> {
      for (const s of [...active]) s.stop();
      active.clear();
      await shutdown(server, opts.socketPath);
      for (const c of clients.values()) c.close();
      clients.clear();
    },
  };
}
