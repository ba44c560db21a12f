// The AgentControl gRPC service: one bidirectional stream per agent. The agent says Hello
// (node, WireGuard key, the version it holds); the server answers with the node's snapshot
// unless the agent already holds it, then pushes each new version, and records the ACK or
// NACK of every one.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Snapshot } from '../api/types.ts';
import { ControlListenError } from '../errors.ts';
import { loadAgentControl, snapshotToWire, type WireAgentMessage, type WireSnapshotMessage } from './proto.ts';

export interface AgentStatus {
  node: string;
  connected: boolean;
  /** the agent's address as gRPC saw it */
  peer: string;
  connectedAt?: string;
  /** the last version sent (or that the agent reported holding) */
  sentVersion: number;
  /** the last version the agent applied and acknowledged */
  ackedVersion: number;
  lastNack?: { version: number; error: string; at: string };
}

export interface AgentControlServerOptions {
  logger: Logger;
  /** the node's current snapshot (computes and versions it when the node is new) */
  snapshotFor: (node: string) => Snapshot;
  /** called on every Hello, before the snapshot is sent, so a new key can be folded in */
  onHello: (hello: { node: string; wgPublicKey: string; lastVersion: number }) => void;
  /** an agent connected, disconnected, acked or nacked */
  onAgentChange?: () => void;
}

type Call = grpc.ServerDuplexStream<WireAgentMessage, WireSnapshotMessage>;

interface Session {
  call: Call;
  status: AgentStatus;
}

/** keepalive lets a silently vanished agent (node power loss) be noticed within a minute */
const SERVER_OPTIONS: grpc.ChannelOptions = {
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
};

export class AgentControlServer {
  readonly #server = new grpc.Server(SERVER_OPTIONS);
  readonly #log: Logger;
  readonly #opts: AgentControlServerOptions;
  /** the live stream of each node; a reconnect replaces the older one */
  readonly #sessions = new Map<string, Session>();
  /** every agent seen since start, connected or not, for status */
  readonly #status = new Map<string, AgentStatus>();

  constructor(opts: AgentControlServerOptions) {
    this.#opts = opts;
    this.#log = opts.logger.child({ component: 'agent-control' });
    this.#server.addService(loadAgentControl().definition, { Stream: (call: Call) => this.#stream(call) });
  }

  /** binds before anything is served, so a taken port stops start-up loudly */
  async bind(listen: string): Promise<string> {
    const port = await new Promise<number>((resolve, reject) => {
      this.#server.bindAsync(listen, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
    }).catch((err: unknown) => {
      throw new ControlListenError(`listen ${listen}: ${(err as Error).message}`, { cause: err });
    });
    const host = listen.slice(0, listen.lastIndexOf(':'));
    return `${host}:${port}`;
  }

  /** send every connected agent its snapshot if it changed since the last send */
  push(): void {
    for (const s of this.#sessions.values()) this.#sendIfChanged(s);
  }

  agents(): AgentStatus[] {
    return [...this.#status.values()].sort((a, b) => (a.node < b.node ? -1 : 1)).map((s) => ({ ...s }));
  }

  connectedNodes(): string[] {
    return [...this.#sessions.keys()];
  }

  async close(): Promise<void> {
    // streams never end on their own: cancel them, agents reconnect to the next instance
    this.#server.forceShutdown();
    this.#sessions.clear();
  }

  #stream(call: Call): void {
    let session: Session | undefined;
    const peer = call.getPeer();
    const drop = (why: string): void => {
      if (session && this.#sessions.get(session.status.node) === session) {
        this.#sessions.delete(session.status.node);
        session.status.connected = false;
        this.#log.info({ node: session.status.node, peer, why }, 'agent disconnected');
        this.#opts.onAgentChange?.();
      }
      session = undefined;
    };
    call.on('data', (m: WireAgentMessage) => {
      try {
        if (m.msg === 'hello') {
          session = this.#hello(call, peer, m.hello, session);
        } else if (!session) {
          call.emit('error', { code: grpc.status.FAILED_PRECONDITION, details: 'the first message must be Hello' });
        } else if (m.msg === 'ack') {
          session.status.ackedVersion = m.ack.version;
          this.#log.debug({ node: session.status.node, version: m.ack.version }, 'snapshot acknowledged');
          this.#opts.onAgentChange?.();
        } else if (m.msg === 'nack') {
          session.status.lastNack = { version: m.nack.version, error: m.nack.error, at: new Date().toISOString() };
          this.#log.warn({ node: session.status.node, version: m.nack.version, error: m.nack.error }, 'agent rejected snapshot');
          this.#opts.onAgentChange?.();
        }
      } catch (err) {
        this.#log.warn({ err, peer }, 'agent stream failed');
        const code = (err as { code?: unknown }).code;
        call.emit('error', { code: typeof code === 'number' ? code : grpc.status.INTERNAL, details: (err as Error).message });
      }
    });
    call.on('end', () => {
      drop('stream ended');
      call.end();
    });
    call.on('error', (err) => drop(err.message));
    call.on('cancelled', () => drop('cancelled'));
    call.on('close', () => drop('closed'));
  }

  #hello(call: Call, peer: string, hello: { node: string; wgPublicKey: string; lastVersion: number }, current: Session | undefined): Session {
    if (hello.node === '') throw Object.assign(new Error('Hello without a node name'), { code: grpc.status.INVALID_ARGUMENT });
    let session = current;
    if (!session || session.status.node !== hello.node) {
      const previous = this.#sessions.get(hello.node);
      if (previous && previous.call !== call) {
        // the agent reconnected before the old stream timed out: the new one is the truth
        this.#log.info({ node: hello.node }, 'agent reconnected; closing its previous stream');
        previous.call.end();
      }
      const status: AgentStatus = {
        node: hello.node, connected: true, peer, connectedAt: new Date().toISOString(),
        sentVersion: hello.lastVersion, ackedVersion: hello.lastVersion,
        ...(this.#status.get(hello.node)?.lastNack ? { lastNack: this.#status.get(hello.node)!.lastNack! } : {}),
      };
      session = { call, status };
      this.#sessions.set(hello.node, session);
      this.#status.set(hello.node, status);
      // headers now, so the agent knows the stream is up even when it needs no snapshot
      call.sendMetadata(new grpc.Metadata());
      this.#log.info({ node: hello.node, peer, lastVersion: hello.lastVersion }, 'agent connected');
    } else {
      session.status.sentVersion = hello.lastVersion;
    }
    this.#opts.onHello(hello);
    this.#sendIfChanged(session);
    this.#opts.onAgentChange?.();
    return session;
  }

  #sendIfChanged(s: Session): void {
    const snap = this.#opts.snapshotFor(s.status.node);
    if (snap.version === s.status.sentVersion) return;
    s.status.sentVersion = snap.version;
    s.call.write(snapshotToWire(snap));
    this.#log.debug({ node: s.status.node, version: snap.version }, 'snapshot sent');
  }
}
