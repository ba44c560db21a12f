// The agent's Observer API: Hubble's observer.Observer over gRPC, on TCP 4244 and a unix
// socket. GetFlows serves stored flows (last N, first N, a time window) and then, with
// follow, live ones through a bounded per-client queue; a client that falls behind is
// told how many flows it lost (lost_events), never silently skipped.
import * as grpc from '@grpc/grpc-js';
import { FlowFilterError } from './errors.ts';
import { compareTime, nowTime, type Flow } from './flow.ts';
import { bindListeners, parseFlowsRequest, shutdown, statusError, waitDrain, type FlowLogger } from './listen.ts';
import { nodalVersion, observerService, type WireGetFlowsRequest, type WireGetFlowsResponse, type WireNode, type WireServerStatus } from './proto.ts';
import type { FlowStore, FlowSubscription, FollowEvent } from './store.ts';
import { flowToWire } from './wire.ts';

export interface ObserverOptions {
  store: FlowStore;
  node: string;
  /** host:port, e.g. 0.0.0.0:4244 (port 0: any free port) */
  tcp?: string;
  socketPath?: string;
  logger: FlowLogger;
}

export interface ObserverServer {
  close(): Promise<void>;
  /** what was bound: host:port and/or unix:/path */
  addresses: string[];
}

export function flowResponse(f: Flow): WireGetFlowsResponse {
  return { flow: flowToWire(f), nodeName: f.nodeName, time: f.time };
}

type FlowsCall = grpc.ServerWritableStream<WireGetFlowsRequest, WireGetFlowsResponse>;

export async function startObserver(opts: ObserverOptions): Promise<ObserverServer> {
  const { store, node, logger } = opts;
  const server = new grpc.Server();
  const calls = new Set<FlowsCall>();
  const subs = new Set<FlowSubscription>();
  let addresses: string[] = [];

  const lostResponse = (ev: Extract<FollowEvent, { kind: 'lost' }>): WireGetFlowsResponse =>
    ({ lostEvents: { source: ev.source, numEventsLost: ev.count }, nodeName: node, time: ev.time });

  async function getFlows(call: FlowsCall): Promise<void> {
    let req;
    try {
      req = parseFlowsRequest(call.request);
    } catch (err) {
      if (!(err instanceof FlowFilterError)) throw err;
      call.emit('error', statusError(grpc.status.INVALID_ARGUMENT, err.message));
      return;
    }
    calls.add(call);
    let ended = false;
    let sub: FlowSubscription | undefined;
    let untilTimer: NodeJS.Timeout | undefined;
    let live = false;
    const finish = (): void => {
      if (ended) return;
      ended = true;
      clearTimeout(untilTimer);
      if (sub) { sub.close(); subs.delete(sub); }
      calls.delete(call);
    };
    call.on('cancelled', finish);
    call.on('close', finish);
    call.on('error', finish);
    const end = (): void => {
      if (ended) return;
      finish();
      call.end();
    };

    if (req.follow) {
      // subscribe before reading the ring: nothing falls between stored and live flows
      const until = req.until;
      sub = store.follow(req.match, {
        deliver: (ev) => {
          if (ended) return false;
          if (ev.kind === 'lost') return call.write(lostResponse(ev));
          if (until && compareTime(ev.flow.time, until) > 0) {
            end();
            return false;
          }
          return call.write(flowResponse(ev.flow));
        },
      }, { paused: true });
      subs.add(sub);
      // a drain while stored flows are still being written must not let live ones in between
      call.on('drain', () => { if (live) sub?.resume(); });
    }

    // follow with neither number nor since: only what happens from now on (as Hubble)
    const history = req.follow && !req.number && !req.since
      ? []
      : store.query(req.match, { number: req.number, first: req.first, ...(req.since ? { since: req.since } : {}), ...(req.until ? { until: req.until } : {}) });
    for (const f of history) {
      if (ended) return;
      if (!call.write(flowResponse(f)) && !(await waitDrain(call))) return;
    }
    if (!req.follow || ended) {
      end();
      return;
    }
    if (req.until) {
      const now = nowTime();
      const ms = (req.until.seconds - now.seconds) * 1000 + (req.until.nanos - now.nanos) / 1e6;
      if (ms <= 0) {
        end();
        return;
      }
      untilTimer = setTimeout(end, Math.min(ms, 2 ** 31 - 1));
    }
    live = true;
    sub?.resume();
  }

  const status = (): WireServerStatus => ({
    numFlows: store.size, maxFlows: store.capacity, seenFlows: store.seen, uptimeNs: store.uptimeNs, version: nodalVersion(),
  });

  server.addService(observerService(), {
    GetFlows: (call: FlowsCall) => {
      getFlows(call).catch((err: unknown) => {
        logger.error({ err }, 'observer GetFlows failed');
        call.emit('error', statusError(grpc.status.INTERNAL, `GetFlows: ${(err as Error).message}`));
      });
    },
    ServerStatus: (_call: grpc.ServerUnaryCall<object, WireServerStatus>, cb: grpc.sendUnaryData<WireServerStatus>) => cb(null, status()),
    GetNodes: (_call: grpc.ServerUnaryCall<object, { nodes: WireNode[] }>, cb: grpc.sendUnaryData<{ nodes: WireNode[] }>) => {
      const s = status();
      cb(null, {
        nodes: [{
          name: node, version: s.version, address: addresses[0] ?? '', state: 'NODE_CONNECTED', tls: { enabled: false },
          uptimeNs: s.uptimeNs, numFlows: s.numFlows, maxFlows: s.maxFlows, seenFlows: s.seenFlows,
        }],
      });
    },
  });

  addresses = await bindListeners(server, opts);
  logger.info({ addresses, capacity: store.capacity }, 'observer listening');

  return {
    addresses,
    async close(): Promise<void> {
      for (const s of subs) s.close();
      subs.clear();
      for (const c of calls) c.end();
      calls.clear();
      await shutdown(server, opts.socketPath);
    },
  };
}
