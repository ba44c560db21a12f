// The control plane: a cluster source → the model → per-node snapshots → the agents'
// gRPC streams. Rebuilding is synchronous and cheap to skip: the model is rebuilt on every
// source change, and an agent is sent a snapshot only when ITS content changed.
import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import type { Logger } from 'pino';
import type { CompiledPolicy, EndpointInfo, IdentityInfo, NodeInfo, ServiceInfo, Snapshot } from './api/types.ts';
import { DirectorySource, type ClusterSource } from './cluster/directory.ts';
import { StateError, type ConfigError } from './errors.ts';
import { AgentControlServer, type AgentStatus } from './grpc/server.ts';
import { buildModel, type Model } from './model/builder.ts';
import { PersistentIds } from './model/ids.ts';
import type { IdStore } from './model/ids-kubernetes.ts';
import { modelHash, shareUnchanged, snapshotContent } from './model/snapshot.ts';
import { NodeKeys, SnapshotVersions } from './model/versions.ts';

/** what status and the relay read: the model, the agents' progress and the rejected documents */
export interface ClusterView {
  trustDomain: string;
  /** the highest snapshot version issued */
  version: number;
  nodes: NodeInfo[];
  identities: IdentityInfo[];
  endpoints: EndpointInfo[];
  services: ServiceInfo[];
  policies: CompiledPolicy[];
  agents: AgentStatus[];
  errors: ConfigError[];
}

export interface ControlPlane {
  /** the host:port actually bound */
  readonly address: string;
  state(): ClusterView;
  snapshotFor(node: string): Snapshot;
  errors(): ConfigError[];
  close(): Promise<void>;
  /** the model, the rejected documents or the agents changed */
  on(event: 'change', fn: () => void): void;
}

export interface ControlPlaneOptions {
  stateDir: string;
  /** host:port, e.g. 10.10.0.1:15012; port 0 picks one */
  listen: string;
  trustDomain?: string;
  logger: Logger;
  /**
   * where ids come from; default the state directory's file (PersistentIds). With the
   * cluster's (KubernetesIds) a build that misses an identity id is held back until the
   * id exists, and a change of the ids rebuilds. The caller starts and closes it.
   */
  ids?: IdStore;
}

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

/** standalone mode: the cluster is a directory of YAML */
export async function startControlPlane(opts: ControlPlaneOptions & { configDir: string }): Promise<ControlPlane> {
  const source = new DirectorySource({ dir: opts.configDir, logger: opts.logger });
  return startControlPlaneWith(source, opts);
}

/** any source: the Kubernetes informer source will come in through here */
export async function startControlPlaneWith(source: ClusterSource, opts: ControlPlaneOptions): Promise<ControlPlane> {
  const log = opts.logger.child({ component: 'control-plane' });
  const trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  try {
    mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new StateError(`state directory ${opts.stateDir}: ${(err as Error).message}`, { cause: err });
  }
  const ids: IdStore = opts.ids ?? new PersistentIds(opts.stateDir);
  const versions = new SnapshotVersions(opts.stateDir);
  const keys = new NodeKeys(opts.stateDir);
  const events = new EventEmitter();
  let snapshots = new Map<string, Snapshot>();
  let model: Model;
  let ready = false;
  let firstModel!: () => void;
  const first = new Promise<void>((resolve) => { firstModel = resolve; });
  let shared = '';
  let server: AgentControlServer | undefined;

  const version = (m: Model, hash: string, node: string): Snapshot => {
    const c = snapshotContent(m, hash, node);
    return { ...c.snapshot, version: versions.versionFor(node, c.hash) };
  };

  /** a node's current snapshot; a node first seen now (an agent of an unlisted node) is versioned on the spot */
  const snapshotFor = (node: string): Snapshot => {
    let snap = snapshots.get(node);
    if (!snap) {
      snap = version(model, shared, node);
      snapshots.set(node, snap);
    }
    // on disk before the snapshot can leave the process: versions never go back (no-op when clean)
    versions.flush();
    return snap;
  };

  /** all or nothing: a failed state write leaves the previous model and snapshots in force */
  const rebuild = (): void => {
    ids.startBuild?.();
    // parts equal to the previous model's stay the same objects: what is derived from them is kept
    const next = shareUnchanged(buildModel({ state: source.state(), trustDomain, ids, wgKeys: keys.all() }), ready ? model : undefined);
    // ids first: no snapshot may carry an id that a crash could hand to another workload
    ids.flush();
    const missing = ids.missing?.() ?? 0;
    if (missing > 0) {
      // ids in the cluster: the leader allocates (a follower waits to see it); onChange rebuilds
      log.info({ missing }, 'waiting for identity ids; keeping the previous model');
      return;
    }
    const hash = modelHash(next);
    if (hash === shared) return;
    const fresh = new Map<string, Snapshot>();
    for (const node of new Set([...next.nodes.map((n) => n.name), ...(server?.connectedNodes() ?? [])])) {
      fresh.set(node, version(next, hash, node));
    }
    versions.flush();
    model = next;
    shared = hash;
    snapshots = fresh;
    if (!ready) {
      ready = true;
      firstModel();
    }
    log.info({ version: versions.latest, identities: model.identities.length, endpoints: model.endpoints.length, policies: model.policies.length }, 'model rebuilt');
    server?.push();
  };

  const onChange = (): void => {
    try {
      rebuild();
    } catch (err) {
      // a state write failed: keep serving the previous model rather than half a new one
      log.error({ err }, 'rebuild failed; keeping the previous model');
    }
    events.emit('change');
  };
  let listening = false;
  // before the source's first sync a build would see an empty cluster; after close nothing is served
  ids.onChange?.(() => { if (listening) onChange(); });
  await source.start(onChange);
  listening = true;
  rebuild();
  // ids from the cluster: nothing is served before every identity of the first model has its id
  if (!ready) await first;

  server = new AgentControlServer({
    logger: opts.logger,
    snapshotFor,
    onHello: (hello) => {
      if (versions.observe(hello.node, hello.lastVersion)) {
        log.warn({ node: hello.node, agentVersion: hello.lastVersion }, 'agent holds a version never issued here (state lost?); versions continue above it');
        snapshots.delete(hello.node);
      }
      if (keys.set(hello.node, hello.wgPublicKey)) {
        log.info({ node: hello.node }, 'node published a new WireGuard key');
        rebuild();
        events.emit('change');
      }
    },
    onAgentChange: () => events.emit('change'),
  });
  let address: string;
  try {
    address = await server.bind(opts.listen);
  } catch (err) {
    await source.close();
    throw err;
  }

  return {
    address,
    state: (): ClusterView => ({
      trustDomain, version: versions.latest, nodes: model.nodes, identities: model.identities, endpoints: model.endpoints,
      services: model.services, policies: model.policies, agents: server.agents(), errors: source.errors(),
    }),
    snapshotFor,
    errors: () => source.errors(),
    close: async () => {
      listening = false;
      await source.close();
      await server.close();
      events.removeAllListeners();
    },
    on: (event, fn) => {
      events.on(event, fn);
    },
  };
}
