// Loading admin.proto (from the repository: tsc does not copy .proto files into dist/) and
// a typed client. Messages cross as the types in ./types.ts: camelCase names, 64-bit
// integers as numbers, every scalar present ('' and 0 for "none"), a missing sub-message
// absent.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoDir } from '../../agent/flows/index.ts';
import type { ClusterStatus, ExplainRequest, Explanation, StatusRequest } from './types.ts';

const PROTO = 'nodal/v1/admin.proto';

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false, longs: Number, enums: String, defaults: true, arrays: true, objects: true, oneofs: false,
};

let service: grpc.ServiceDefinition | undefined;
export function adminService(): grpc.ServiceDefinition {
  if (service) return service;
  let pkg: protoLoader.PackageDefinition;
  try {
    pkg = protoLoader.loadSync(PROTO, { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
  } catch (err) {
    throw new Error(`load ${PROTO} from ${protoDir()}: ${(err as Error).message}`, { cause: err });
  }
  return (service = pkg['nodal.v1.Admin'] as grpc.ServiceDefinition);
}

/** proto-loader gives an unset sub-message as null; the types say absent */
function dropNulls<T>(v: T): T {
  if (Array.isArray(v)) return v.map(dropNulls) as T;
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (x !== null && x !== undefined) out[k] = dropNulls(x);
    return out as T;
  }
  return v;
}

export interface AdminClient {
  status(req: Partial<StatusRequest>, opts?: { deadlineMs?: number }): Promise<ClusterStatus>;
  explain(req: Partial<ExplainRequest>, opts?: { deadlineMs?: number }): Promise<Explanation>;
  /** the underlying channel, e.g. to wait for a connection */
  readonly grpc: grpc.Client;
  close(): void;
}

type Unary<Req, Res> = (req: Req, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => grpc.ClientUnaryCall;
interface RawClient extends grpc.Client {
  Status: Unary<Partial<StatusRequest>, ClusterStatus>;
  Explain: Unary<Partial<ExplainRequest>, Explanation>;
}

let Ctor: grpc.ServiceClientConstructor | undefined;

/** a client for the admin API at `address`: unix:/path or host:port (plaintext: a local socket) */
export function adminClient(address: string): AdminClient {
  Ctor ??= grpc.makeGenericClientConstructor(adminService(), 'Admin');
  const raw = new Ctor(address, grpc.credentials.createInsecure()) as unknown as RawClient;
  const call = <Req, Res>(fn: Unary<Req, Res>, req: Req, deadlineMs: number | undefined): Promise<Res> =>
    new Promise((resolve, reject) => {
      fn.call(raw, req, deadlineMs ? { deadline: Date.now() + deadlineMs } : {}, (err, res) => (err ? reject(err) : resolve(dropNulls(res!))));
    });
  return {
    status: (req, opts = {}) => call(raw.Status, req, opts.deadlineMs),
    explain: (req, opts = {}) => call(raw.Explain, req, opts.deadlineMs),
    grpc: raw,
    close: () => raw.close(),
  };
}
