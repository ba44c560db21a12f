// The admin gRPC service (nodal.v1.Admin) on a unix socket: Status and Explain over the
// control plane's current view. Read-only and off the agents' path: it has its own
// server, so a slow Status (agents that do not answer) never delays a snapshot.
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { ClusterView } from '../plane.ts';
import type { Snapshot } from '../api/types.ts';
import { AdminBindError, AdminErrorCode, ExplainError } from './errors.ts';
import { explain } from './explain.ts';
import { adminService } from './proto.ts';
import { clusterStatus, type StatusOptions } from './status.ts';
import type { ClusterStatus, ExplainRequest, Explanation, StatusRequest } from './types.ts';

export interface AdminLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface AdminServerOptions extends Omit<StatusOptions, 'version'> {
  /** the control plane (or anything with its view) */
  plane: { state(): ClusterView; snapshotFor(node: string): Snapshot };
  socketPath?: string;
  /** host:port; off by default: the socket's file mode is the access control */
  tcp?: string;
  logger: AdminLogger;
  /** reported as the control plane's build; default "nodal" */
  version?: string;
}

export interface AdminServer {
  readonly addresses: string[];
  close(): Promise<void>;
}

/** operators of the node (the socket's group) and nobody else */
const SOCKET_MODE = 0o660;
/** how long a probe of an existing socket waits before calling it stale */
const PROBE_TIMEOUT_MS = 500;
/** in-flight calls get this long to finish on close */
const CLOSE_GRACE_MS = 1000;

export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const server = new grpc.Server();
  const statusOpts: StatusOptions = {
    version: opts.version ?? 'nodal',
    ...(opts.agentPort !== undefined ? { agentPort: opts.agentPort } : {}),
    ...(opts.agentTimeoutMs !== undefined ? { agentTimeoutMs: opts.agentTimeoutMs } : {}),
    ...(opts.agentUrl ? { agentUrl: opts.agentUrl } : {}),
  };

  server.addService(adminService(), {
    Status: (call: grpc.ServerUnaryCall<StatusRequest, ClusterStatus>, cb: grpc.sendUnaryData<ClusterStatus>) => {
      clusterStatus(opts.plane.state(), statusOpts, call.request).then((s) => cb(null, s), (err: Error) => {
        opts.logger.warn({ err }, 'admin Status failed');
        cb({ code: grpc.status.INTERNAL, details: err.message });
      });
    },
    Explain: (call: grpc.ServerUnaryCall<ExplainRequest, Explanation>, cb: grpc.sendUnaryData<Explanation>) => {
      try {
        const view = opts.plane.state();
        // the entries each agent really holds: MeshPolicy and NetworkPolicy merged
        const snap = (node: string) => opts.plane.snapshotFor(node);
        const first = view.nodes[0]?.name;
        cb(null, explain({ ...view, l4For: (node) => snap(node).l4, ...(first ? { networkPolicies: snap(first).networkPolicies ?? [] } : {}) }, call.request));
      } catch (err) {
        if (err instanceof ExplainError) {
          cb({ code: err.code === AdminErrorCode.NOT_FOUND ? grpc.status.NOT_FOUND : grpc.status.INVALID_ARGUMENT, details: err.message });
          return;
        }
        opts.logger.warn({ err, request: call.request }, 'admin Explain failed');
        cb({ code: grpc.status.INTERNAL, details: (err as Error).message });
      }
    },
  });

  const addresses: string[] = [];
  try {
    if (opts.tcp) {
      const port = await bind(server, opts.tcp);
      addresses.push(`${opts.tcp.slice(0, opts.tcp.lastIndexOf(':'))}:${port}`);
    }
    if (opts.socketPath) {
      await prepareSocket(opts.socketPath);
      await bind(server, `unix:${opts.socketPath}`);
      chmodSync(opts.socketPath, SOCKET_MODE);
      addresses.push(`unix:${opts.socketPath}`);
    }
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  if (addresses.length === 0) throw new AdminBindError('(none)', 'neither a socket path nor a TCP address given');
  opts.logger.info({ addresses }, 'admin API listening');

  return {
    addresses,
    close: async () => {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => { server.forceShutdown(); resolve(); }, CLOSE_GRACE_MS);
        server.tryShutdown(() => { clearTimeout(t); resolve(); });
      });
      if (opts.socketPath) {
        try { unlinkSync(opts.socketPath); } catch { /* already gone */ }
      }
    },
  };
}

function bind(server: grpc.Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) =>
      (err ? reject(new AdminBindError(address, err.message, { cause: err })) : resolve(port)));
  });
}

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

/** make room for the socket: remove a stale one, refuse a live one or a non-socket */
async function prepareSocket(path: string): Promise<void> {
  const address = `unix:${path}`;
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  } catch (err) {
    throw new AdminBindError(address, (err as Error).message, { cause: err });
  }
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new AdminBindError(address, (err as Error).message, { cause: err });
  }
  if (!st.isSocket()) throw new AdminBindError(address, 'exists and is not a socket (refusing to remove it)');
  if (await probe(path)) throw new AdminBindError(address, 'in use: another process is serving on this socket');
  unlinkSync(path);
}
