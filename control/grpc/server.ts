// The AgentControl gRPC service: one bidirectional stream per agent. The agent says Hello
// (node, WireGuard key, the version it holds); the server answers with the node's snapshot
// unless the agent already holds it, then pushes each new version, and records the ACK or
// NACK of every one. To an agent that accepts deltas, a new version goes out as a delta
// from the version it acked (only the top-level sections that changed) when nothing else
// is in flight; an agent that does not hold the base asks for the whole snapshot.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Snapshot } from '../api/types.ts';
import { ControlListenError } from '../errors.ts';
import { encodeSnapshotMessage } from './encode.ts';
import { SNAPSHOT_SECTIONS, changedSections, loadAgentControl, type SnapshotSection, type WireAgentMessage } from './proto.ts';

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
  /** send deltas to agents that accept them (default true); false: always whole snapshots */
  deltas?: boolean;
  /** every message written to an agent, as the bytes that go on the wire (tests and diagnostics) */
  onSend?: (sent: { node: string; version: number; deltaFrom: number; sections: SnapshotSection[] | undefined; bytes: Buffer }) => void;
}

/** snapshots go out already encoded (encode.ts): the stream writes their bytes as they are */
type Call = grpc.ServerDuplexStream<WireAgentMessage, Buffer>;

interface Session {
  call: Call;
  status: AgentStatus;
  /** the agent said it applies deltas */
  deltas: boolean;
  /** the snapshots sent and not yet acked, by version: an ack makes one the delta base */
  inflight: Map<number, Snapshot>;
}

/** unacked snapshots remembered per session; an ack of an older one just finds no base */
const MAX_INFLIGHT = 8;

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
  /** per node, the last snapshot an agent acknowledged: the base of the next delta (kept across reconnects) */
  readonly #acked = new Map<string, Snapshot>();

  constructor(opts: AgentControlServerOptions) {
    this.#opts = opts;
    this.#log = opts.logger.child({ component: 'agent-control' });
    const { definition } = loadAgentControl();
    const stream = definition.Stream!;
    const passBytes: grpc.ServiceDefinition = { ...definition, Stream: { ...stream, responseSerialize: (b: Buffer) => b } };
    this.#server.addService(passBytes, { Stream: (call: Call) => this.#stream(call) });
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
          const snap = session.inflight.get(m.ack.version);
          if (snap) this.#acked.set(session.status.node, snap);
          for (const v of session.inflight.keys()) if (v <= m.ack.version) session.inflight.delete(v);
          this.#log.debug({ node: session.status.node, version: m.ack.version }, 'snapshot acknowledged');
          this.#opts.onAgentChange?.();
        } else if (m.msg === 'nack' && m.nack.wantFull === true) {
          // the agent does not hold the delta's base: not an apply failure, resend whole
          this.#log.info({ node: session.status.node, version: m.nack.version, error: m.nack.error }, 'agent asked for the whole snapshot');
          this.#acked.delete(session.status.node);
          this.#send(session, true);
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

  #hello(call: Call, peer: string, hello: { node: string; wgPublicKey: string; lastVersion: number; acceptsDeltas?: boolean }, current: Session | undefined): Session {
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
      session = { call, status, deltas: hello.acceptsDeltas === true, inflight: new Map() };
      this.#sessions.set(hello.node, session);
      this.#status.set(hello.node, status);
      // headers now, so the agent knows the stream is up even when it needs no snapshot
      call.sendMetadata(new grpc.Metadata());
      this.#log.info({ node: hello.node, peer, lastVersion: hello.lastVersion }, 'agent connected');
    } else {
      session.status.sentVersion = hello.lastVersion;
      session.deltas = hello.acceptsDeltas === true;
    }
    this.#opts.onHello(hello);
    this.#sendIfChanged(session);
    this.#opts.onAgentChange?.();
    return session;
  }

  #sendIfChanged(s: Session): void {
    this.#send(s, false);
  }

  /**
   * the node's snapshot, unless already sent (whole: resend even so): a delta from the
   * version the agent acked when it takes deltas and that base is known, else whole
   */
  #send(s: Session, whole: boolean): void {
    const node = s.status.node;
    const snap = this.#opts.snapshotFor(node);
    if (!whole && snap.version === s.status.sentVersion) return;
    // a delta only when nothing is in flight: the agent then holds exactly the acked base
    // (a delta from it sent behind an unacked snapshot would find the agent past it)
    const settled = s.status.sentVersion === s.status.ackedVersion;
    s.status.sentVersion = snap.version;
    const base = this.#acked.get(node);
    let delta: { from: number; sections: SnapshotSection[] } | undefined;
    if (!whole && settled && s.deltas && this.#opts.deltas !== false && base !== undefined && base.version === s.status.ackedVersion
      && base.version < snap.version && base.node === snap.node && base.trustDomain === snap.trustDomain) {
      const sections = changedSections(base, snap);
      if (sections.length < SNAPSHOT_SECTIONS.length) delta = { from: base.version, sections };
    }
    const bytes = encodeSnapshotMessage(snap, delta);
    s.inflight.set(snap.version, snap);
    if (s.inflight.size > MAX_INFLIGHT) s.inflight.delete(s.inflight.keys().next().value!);
    s.call.write(bytes);
    this.#opts.onSend?.({ node, version: snap.version, deltaFrom: delta?.from ?? 0, sections: delta?.sections, bytes });
    this.#log.debug({ node, version: snap.version, deltaFrom: delta?.from, sections: delta?.sections }, 'snapshot sent');
  }
}
