// The Hubble .proto files, loaded at run time from the repository (tsc does not copy
// them to dist/): once for gRPC (proto-loader: service definitions, serializers) and
// once as a protobufjs Root with the original field names, for protojson conversion.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { FlowProtoError } from './errors.ts';
import type { FlowTime } from './flow.ts';

/**
 * How messages look in JS on both sides of our own gRPC code: camelCase names (the Flow
 * record's own), enums as names, 64-bit integers as numbers (flow counts and times fit
 * in 2^53), unset fields absent rather than defaulted.
 */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false, longs: Number, enums: String, defaults: false, oneofs: true,
};

let root: string | undefined;
/** the repository root: the nearest package.json named "nodal" above this file */
export function repoRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'nodal') return (root = dir);
      } catch { /* not ours: keep walking */ }
    }
    const up = dirname(dir);
    if (up === dir) throw new FlowProtoError(`cannot find the nodal repository root above ${fileURLToPath(import.meta.url)} (the .proto files live there)`);
    dir = up;
  }
}

export function protoDir(): string {
  return join(repoRoot(), 'control/proto');
}

let version: string | undefined;
/** what ServerStatus and GetNodes report as the version */
export function nodalVersion(): string {
  if (version) return version;
  try {
    const v = (JSON.parse(readFileSync(join(repoRoot(), 'package.json'), 'utf8')) as { version?: string }).version;
    version = `nodal v${v ?? '0.0.0'}`;
  } catch {
    version = 'nodal';
  }
  return version;
}

let pkgDef: protoLoader.PackageDefinition | undefined;
function observerPackage(): protoLoader.PackageDefinition {
  if (pkgDef) return pkgDef;
  try {
    pkgDef = protoLoader.loadSync('observer/observer.proto', { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
  } catch (err) {
    throw new FlowProtoError(`load observer/observer.proto from ${protoDir()}: ${(err as Error).message}`, { cause: err });
  }
  return pkgDef;
}

/** the observer.Observer service, for grpc.Server.addService */
export function observerService(): grpc.ServiceDefinition {
  return observerPackage()['observer.Observer'] as grpc.ServiceDefinition;
}

// --- the client side, typed as far as we use it ---

export interface WireTimestamp { seconds?: number; nanos?: number }

export interface WireGetFlowsRequest {
  number?: number;
  first?: boolean;
  follow?: boolean;
  whitelist?: object[];
  blacklist?: object[];
  since?: WireTimestamp | FlowTime;
  until?: WireTimestamp | FlowTime;
}

export interface WireNodeStatus { stateChange?: string; nodeNames?: string[]; message?: string }
export interface WireLostEvent { source?: string; numEventsLost?: number; cpu?: { value?: number } }

export interface WireGetFlowsResponse {
  flow?: Record<string, unknown>;
  nodeStatus?: WireNodeStatus;
  lostEvents?: WireLostEvent;
  nodeName?: string;
  time?: WireTimestamp;
  responseTypes?: string;
}

export interface WireServerStatus {
  numFlows?: number;
  maxFlows?: number;
  seenFlows?: number;
  uptimeNs?: number;
  numConnectedNodes?: { value?: number };
  numUnavailableNodes?: { value?: number };
  unavailableNodes?: string[];
  version?: string;
}

export interface WireNode {
  name?: string;
  version?: string;
  address?: string;
  state?: string;
  tls?: { enabled?: boolean; serverName?: string };
  uptimeNs?: number;
  numFlows?: number;
  maxFlows?: number;
  seenFlows?: number;
}

type Unary<Res> = (req: object, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => grpc.ClientUnaryCall;

export interface ObserverClient extends grpc.Client {
  GetFlows(req: WireGetFlowsRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<WireGetFlowsResponse>;
  ServerStatus: Unary<WireServerStatus>;
  GetNodes: Unary<{ nodes?: WireNode[] }>;
}

let ClientCtor: grpc.ServiceClientConstructor | undefined;
/**
 * A client for an Observer at `address`: host:port, or unix:/path (unix:///path too).
 * Plaintext: the agent socket is local and the relay is reached inside the cluster.
 */
export function observerClient(address: string, options?: grpc.ClientOptions): ObserverClient {
  ClientCtor ??= grpc.makeGenericClientConstructor(observerService() as grpc.ServiceDefinition, 'Observer');
  return new ClientCtor(address, grpc.credentials.createInsecure(), options) as unknown as ObserverClient;
}

let jsonRootCache: protobuf.Root | undefined;
/** the same schema with the .proto field names kept (protojson uses them) */
export function jsonRoot(): protobuf.Root {
  if (jsonRootCache) return jsonRootCache;
  const dir = protoDir();
  const r = new protobuf.Root();
  // google/protobuf/* come from protobufjs' bundled well-known types
  r.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? target : join(dir, target));
  try {
    r.loadSync('observer/observer.proto', { keepCase: true });
    r.resolveAll();
  } catch (err) {
    throw new FlowProtoError(`load observer/observer.proto from ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return (jsonRootCache = r);
}

/**
 * Wait until the client's channel is connected. Unlike waitForReady, a failed attempt
 * (refused, no such socket) answers at once instead of retrying until the deadline;
 * only a silent peer costs the full timeout. Resolves with the reason on failure.
 *
 * A channel found backing off from a failed attempt (a reused one: the relay's) fails
 * at once too. A call made on it now fails with that attempt's error, whatever comes
 * after; waiting here for the next attempt could report the channel connected first, and
 * the caller would then see its call fail (the relay told its followers "unavailable"
 * right after "connected" for an agent that had just come up).
 */
export function connectOrFail(client: grpc.Client, timeoutMs: number): Promise<string | undefined> {
  const channel = client.getChannel();
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve) => {
    let attempted = false;
    let first = true;
    const check = (): void => {
      const state = channel.getConnectivityState(true);
      if (state === grpc.connectivityState.READY) return resolve(undefined);
      if (state === grpc.connectivityState.SHUTDOWN) return resolve('client closed');
      if (state === grpc.connectivityState.TRANSIENT_FAILURE && first) return resolve('the last connection attempt failed (refused or unreachable)');
      first = false;
      if (state === grpc.connectivityState.TRANSIENT_FAILURE && attempted) return resolve('connection failed (refused or unreachable)');
      if (state === grpc.connectivityState.CONNECTING) attempted = true;
      channel.watchConnectivityState(state, deadline, (err?: Error) => {
        if (err) return resolve(`no connection within ${timeoutMs}ms`);
        check();
      });
    };
    check();
  });
}
