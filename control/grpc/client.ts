// The agent's side of AgentControl. It keeps enforcing without the control plane: the
// last good snapshot is persisted and applied first on start, and a snapshot is replaced
// only by a newer one that the agent applied without error (ACK); a failed apply is
// NACKed with its message and the previous snapshot stays in force.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Snapshot } from '../api/types.ts';
import { SnapshotStore } from './persisted.ts';
import { applyDelta, deltaBase, loadAgentControl, snapshotFromWire, type WireAgentMessage, type WireSnapshotMessage } from './proto.ts';

export interface AgentControlClientOptions {
  /** host:port of the control plane */
  address: string;
  node: string;
  /** the last good snapshot persists here (snapshot.json and snapshot/, persisted.ts) */
  stateDir: string;
  /** asked on every (re)connect, so a rotated WireGuard key is published */
  hello: () => { wgPublicKey: string };
  /** throw to NACK with the message; the previous snapshot stays in force */
  apply: (s: Snapshot) => void | Promise<void>;
  logger: Logger;
  /** tell the control plane this agent applies deltas (default true) */
  deltas?: boolean;
}

/** reconnect backoff: quick first retries for a control-plane restart, capped so a long outage costs little */
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5_000;

/**
 * A whole snapshot carries every endpoint, service and policy of the cluster: about 12 MB
 * at 50,000 pods and 1,000 policies. gRPC's default limit (4 MiB) would refuse it, and the
 * agent would reconnect, be resent the same snapshot and refuse it again, forever.
 */
const MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024;

/** pings detect a control plane that vanished without closing the connection */
const CLIENT_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_SNAPSHOT_BYTES,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  // the channel's own reconnect backoff defaults to 1 s growing to 120 s, which would
  // hold our calls failing fast long after the control plane is back: match our bounds
  'grpc.initial_reconnect_backoff_ms': BACKOFF_MIN_MS,
  'grpc.max_reconnect_backoff_ms': BACKOFF_MAX_MS,
};

type Stream = grpc.ClientDuplexStream<WireAgentMessage, WireSnapshotMessage>;

export class AgentControlClient {
  readonly #opts: AgentControlClientOptions;
  readonly #log: Logger;
  readonly #store: SnapshotStore;
  readonly #client: grpc.Client & { Stream(): Stream };
  #current: Snapshot | undefined;
  #stream: Stream | undefined;
  #connected = false;
  #closed = false;
  #started = false;
  #backoff = BACKOFF_MIN_MS;
  #retry: NodeJS.Timeout | undefined;
  /** snapshots are applied one at a time, in arrival order */
  #applying: Promise<void> = Promise.resolve();

  constructor(opts: AgentControlClientOptions) {
    this.#opts = opts;
    this.#log = opts.logger.child({ component: 'control-client', node: opts.node });
    this.#store = new SnapshotStore(opts.stateDir);
    const Ctor = loadAgentControl().client;
    this.#client = new Ctor(opts.address, grpc.credentials.createInsecure(), CLIENT_OPTIONS) as unknown as grpc.Client & { Stream(): Stream };
  }

  /** loads and applies the persisted snapshot, then connects; returns at once */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#applying = this.#restore().finally(() => {
      if (!this.#closed) this.#connect();
    });
  }

  current(): Snapshot | undefined {
    return this.#current;
  }

  connected(): boolean {
    return this.#connected;
  }

  /** send a fresh Hello on the open stream, e.g. after a WireGuard key rotation */
  refresh(): void {
    this.#sendHello();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#stream?.cancel();
    this.#stream = undefined;
    this.#connected = false;
    await this.#applying.catch(() => {});
    this.#client.close();
  }

  async #restore(): Promise<void> {
    let saved: Snapshot | undefined;
    try {
      saved = this.#store.load();
    } catch (err) {
      this.#log.error({ err }, 'persisted snapshot unreadable; waiting for the control plane');
      return;
    }
    if (!saved) return;
    if (saved.node !== this.#opts.node || !Number.isSafeInteger(saved.version)) {
      this.#log.warn({ stateDir: this.#opts.stateDir, node: saved.node }, 'persisted snapshot is for another node; ignored');
      return;
    }
    try {
      await this.#opts.apply(saved);
      this.#current = saved;
      this.#log.info({ version: saved.version }, 'applied persisted snapshot; enforcing it until the control plane answers');
    } catch (err) {
      this.#log.error({ err, version: saved.version }, 'persisted snapshot failed to apply');
    }
  }

  #connect(): void {
    if (this.#closed) return;
    const stream = this.#client.Stream();
    this.#stream = stream;
    stream.on('metadata', () => {
      if (this.#stream !== stream) return;
      this.#connected = true;
      this.#backoff = BACKOFF_MIN_MS;
      this.#log.info({ address: this.#opts.address }, 'connected to the control plane');
    });
    stream.on('data', (m: WireSnapshotMessage) => {
      if (this.#stream !== stream) return;
      this.#applying = this.#applying.then(() => this.#receive(stream, m));
    });
    const lost = (why: string): void => {
      if (this.#stream !== stream) return;
      this.#stream = undefined;
      if (this.#connected) this.#log.warn({ why }, 'control plane stream lost; still enforcing the last good snapshot');
      this.#connected = false;
      this.#scheduleReconnect();
    };
    stream.on('error', (err: grpc.ServiceError) => lost(err.details || err.message));
    stream.on('end', () => lost('stream ended'));
    this.#sendHello();
  }

  #sendHello(): void {
    this.#stream?.write({ msg: 'hello', hello: { node: this.#opts.node, wgPublicKey: this.#opts.hello().wgPublicKey, lastVersion: this.#current?.version ?? 0, acceptsDeltas: this.#opts.deltas !== false } });
  }

  #scheduleReconnect(): void {
    if (this.#closed) return;
    // full jitter keeps a fleet of agents from reconnecting in lockstep after a restart
    const delay = BACKOFF_MIN_MS / 2 + Math.random() * this.#backoff;
    this.#backoff = Math.min(this.#backoff * 2, BACKOFF_MAX_MS);
    this.#retry = setTimeout(() => this.#connect(), delay);
    this.#retry.unref();
  }

  async #receive(stream: Stream, m: WireSnapshotMessage): Promise<void> {
    const reply = (msg: WireAgentMessage): void => {
      if (this.#stream === stream) stream.write(msg);
    };
    let snap: Snapshot;
    const base = deltaBase(m);
    if (base !== 0 && base !== this.#current?.version) {
      // a delta onto a snapshot this agent does not hold: ask for the whole one
      const version = Number(m.snapshot?.version ?? 0);
      this.#log.info({ version, deltaFrom: base, holding: this.#current?.version ?? 0 }, 'delta from a version not held; asking for the whole snapshot');
      reply({ msg: 'nack', nack: { version, error: `delta from version ${base}, but holding ${this.#current?.version ?? 0}`, wantFull: true } });
      return;
    }
    try {
      snap = base !== 0 ? applyDelta(this.#current!, m) : snapshotFromWire(m);
    } catch (err) {
      this.#log.error({ err }, 'snapshot does not decode');
      reply({ msg: 'nack', nack: { version: Number(m.snapshot?.version ?? 0), error: (err as Error).message } });
      return;
    }
    const have = this.#current?.version ?? 0;
    if (snap.version <= have) {
      reply({ msg: 'nack', nack: { version: snap.version, error: `version ${snap.version} is not newer than the applied version ${have}` } });
      return;
    }
    if (snap.node !== this.#opts.node) {
      reply({ msg: 'nack', nack: { version: snap.version, error: `snapshot is for node ${snap.node}, not ${this.#opts.node}` } });
      return;
    }
    try {
      await this.#opts.apply(snap);
    } catch (err) {
      this.#log.error({ err, version: snap.version }, 'snapshot rejected; keeping the previous one');
      reply({ msg: 'nack', nack: { version: snap.version, error: (err as Error).message || String(err) } });
      return;
    }
    this.#current = snap;
    try {
      await this.#store.save(snap);
    } catch (err) {
      // enforcement already follows the new snapshot; only an offline restart would miss it
      this.#log.error({ err }, 'cannot persist the snapshot');
    }
    this.#log.info({ version: snap.version }, 'snapshot applied');
    reply({ msg: 'ack', ack: { version: snap.version } });
  }
}
