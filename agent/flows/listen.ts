// Binding an Observer gRPC server (agent or relay) to TCP and a unix socket. Every
// listener is bound before any is served, so a bind failure stops start-up loudly and
// leaves nothing half-open. Also the request parsing both servers share.
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { FlowFilterError, ObserverBindError } from './errors.ts';
import { compileFilters, type FlowFilter } from './filter.ts';
import type { FlowTime } from './flow.ts';
import type { WireGetFlowsRequest } from './proto.ts';
import type { FlowPredicate } from './store.ts';
import { timeFromWire } from './wire.ts';

/** pino-compatible: what the flow servers log with */
export interface FlowLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** the socket is for the node's operators (group) and nobody else */
const SOCKET_MODE = 0o660;
/** how long a probe of an existing socket waits before calling it stale */
const PROBE_TIMEOUT_MS = 500;

function probe(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (alive: boolean): void => {
      clearTimeout(t);
      s.destroy();
      resolve(alive);
    };
    const t = setTimeout(() => done(false), PROBE_TIMEOUT_MS);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** make room for a unix socket: remove a stale one, refuse a live one or a non-socket */
export async function prepareSocket(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ObserverBindError(`unix:${path}`, (err as Error).message, { cause: err });
  }
  if (!st.isSocket()) throw new ObserverBindError(`unix:${path}`, 'exists and is not a socket (refusing to remove it)');
  if (await probe(path)) throw new ObserverBindError(`unix:${path}`, 'in use: another process is serving on this socket');
  unlinkSync(path);
}

function bindAsync(server: grpc.Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port)));
  });
}

/** bind `tcp` (host:port, port 0 for any) and `socketPath`; returns the bound addresses */
export async function bindListeners(server: grpc.Server, opts: { tcp?: string; socketPath?: string }): Promise<string[]> {
  const addresses: string[] = [];
  try {
    if (opts.tcp) {
      const colon = opts.tcp.lastIndexOf(':');
      if (colon < 0) throw new ObserverBindError(opts.tcp, 'expected host:port');
      let port: number;
      try {
        port = await bindAsync(server, opts.tcp);
      } catch (err) {
        throw new ObserverBindError(opts.tcp, (err as Error).message, { cause: err });
      }
      addresses.push(`${opts.tcp.slice(0, colon)}:${port}`);
    }
    if (opts.socketPath) {
      await prepareSocket(opts.socketPath);
      try {
        await bindAsync(server, `unix:${opts.socketPath}`);
        chmodSync(opts.socketPath, SOCKET_MODE);
      } catch (err) {
        throw new ObserverBindError(`unix:${opts.socketPath}`, (err as Error).message, { cause: err });
      }
      addresses.push(`unix:${opts.socketPath}`);
    }
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  if (addresses.length === 0) throw new ObserverBindError('(none)', 'neither tcp nor socketPath given');
  return addresses;
}

/** shut a server down, politely first; and remove its socket file */
export async function shutdown(server: grpc.Server, socketPath: string | undefined, graceMs = 1000): Promise<void> {
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(t);
      resolve();
    });
  });
  if (socketPath) {
    try {
      unlinkSync(socketPath);
    } catch { /* already gone */ }
  }
}

export interface FlowsRequest {
  number: number;
  first: boolean;
  follow: boolean;
  since?: FlowTime;
  until?: FlowTime;
  match: FlowPredicate | undefined;
}

/** a GetFlowsRequest, validated and with its filters compiled; throws FlowFilterError */
export function parseFlowsRequest(req: WireGetFlowsRequest): FlowsRequest {
  const number = Number(req.number ?? 0);
  if (!Number.isFinite(number) || number < 0) throw new FlowFilterError('number', `"${String(req.number)}" is not a count`);
  const first = Boolean(req.first);
  const follow = Boolean(req.follow);
  if (first && follow) throw new FlowFilterError('first', 'first cannot be combined with follow');
  const out: FlowsRequest = {
    number, first, follow,
    match: compileFilters((req.whitelist ?? []) as FlowFilter[], (req.blacklist ?? []) as FlowFilter[]),
  };
  if (req.since) out.since = timeFromWire(req.since);
  if (req.until) out.until = timeFromWire(req.until);
  return out;
}

/** resolves true when the call can take more writes, false when it ended first */
export function waitDrain(call: NodeJS.EventEmitter): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean): void => {
      call.off('drain', onDrain);
      call.off('cancelled', onEnd);
      call.off('close', onEnd);
      call.off('error', onEnd);
      resolve(ok);
    };
    const onDrain = (): void => done(true);
    const onEnd = (): void => done(false);
    call.on('drain', onDrain);
    call.on('cancelled', onEnd);
    call.on('close', onEnd);
    call.on('error', onEnd);
  });
}

/** a gRPC status error for a call */
export function statusError(code: grpc.status, details: string): Partial<grpc.StatusObject> & Error {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}
