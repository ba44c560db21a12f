// The snapshot, indexed for the data path. Built once per update() and swapped whole, so a
// connection sees one consistent view and no lookup walks a list.

import type {
  CompiledPolicy, EndpointInfo, IdentityInfo, NodeInfo, ServiceInfo, ServicePort, Snapshot,
} from '../../control/api/types.ts';
import { ReservedIdentity } from '../../control/api/types.ts';
import type { FlowEndpoint } from '../flows/flow.ts';
import { forSource, type PolicySource } from '../policy/index.ts';

export interface ServiceTarget { service: ServiceInfo; port: ServicePort; /** round-robin key */ key: string }

const NO_POLICIES: readonly CompiledPolicy[] = Object.freeze([]);
/**
 * (destination, source) pairs whose policies are kept per view: far more than the pairs
 * that talk on one node; past it a pair is worked out per request, never unbounded memory
 */
const MAX_CACHED_SOURCES = 16384;

export const WORLD_ENDPOINT: FlowEndpoint = Object.freeze({
  identity: ReservedIdentity.WORLD, labels: Object.freeze(['reserved:world']) as string[],
});

export class MeshView {
  readonly snapshot: Snapshot;
  readonly self: NodeInfo | undefined;
  private readonly nodesByName = new Map<string, NodeInfo>();
  private readonly nodesByTunnelIp = new Map<string, NodeInfo>();
  private readonly endpointsByIp = new Map<string, EndpointInfo>();
  private readonly endpointsByName = new Map<string, EndpointInfo>();
  private readonly identities = new Map<number, IdentityInfo>();
  /** `${node}\0${identity}`: which identities run on which node (spoofing check) */
  private readonly onNode = new Set<string>();
  private readonly services = new Map<string, ServiceTarget>();
  private readonly servicesByName = new Map<string, ServiceTarget>();
  /** pod IP → target port → appProtocol, so the destination knows a declared protocol (per request: no key string to build) */
  private readonly appProtocols = new Map<string, Map<number, string>>();
  private readonly policies = new Map<number, CompiledPolicy[]>();
  /** policiesForSource's results: destination identity → source identity → policies */
  private readonly bySource = new Map<number, Map<number, { principal: string | undefined; namespace: string | undefined; policies: readonly CompiledPolicy[] }>>();
  private sourcesCached = 0;
  /** flow endpoints are shared by every flow of the endpoint: built once, frozen */
  private readonly flowEndpoints = new WeakMap<EndpointInfo, FlowEndpoint>();

  constructor(snapshot: Snapshot) {
    this.snapshot = snapshot;
    for (const n of snapshot.nodes) {
      this.nodesByName.set(n.name, n);
      if (n.tunnelIp) this.nodesByTunnelIp.set(n.tunnelIp, n);
    }
    this.self = this.nodesByName.get(snapshot.node);
    for (const id of snapshot.identities) this.identities.set(id.id, id);
    for (const ep of snapshot.endpoints) {
      if (ep.ip) this.endpointsByIp.set(ep.ip, ep);
      this.endpointsByName.set(`${ep.namespace}/${ep.name}`, ep);
      this.onNode.add(`${ep.node}\0${ep.identity}`);
    }
    for (const svc of snapshot.services) {
      for (const port of svc.ports) {
        if (port.protocol !== 'TCP') continue;
        const key = `${svc.namespace}/${svc.name}:${port.port}`;
        const target = { service: svc, port, key };
        if (svc.clusterIp) this.services.set(`${svc.clusterIp}:${port.port}`, target);
        this.servicesByName.set(key, target);
        if (port.appProtocol) {
          for (const b of svc.backends) {
            let ports = this.appProtocols.get(b.ip);
            if (!ports) this.appProtocols.set(b.ip, (ports = new Map()));
            ports.set(port.targetPort, port.appProtocol);
          }
        }
      }
    }
    for (const p of snapshot.policies) {
      for (const id of p.selects) {
        let list = this.policies.get(id);
        if (!list) this.policies.set(id, (list = []));
        list.push(p);
      }
    }
  }

  node(name: string): NodeInfo | undefined { return this.nodesByName.get(name); }

  /** the peer node whose tunnel address this is; never this node itself */
  peerByTunnelIp(ip: string): NodeInfo | undefined {
    const n = this.nodesByTunnelIp.get(ip);
    return n && n.name !== this.snapshot.node ? n : undefined;
  }

  endpointByIp(ip: string): EndpointInfo | undefined { return this.endpointsByIp.get(ip); }

  /** by `namespace/pod` */
  endpointByName(ref: string): EndpointInfo | undefined { return this.endpointsByName.get(ref); }

  localEndpointByIp(ip: string): EndpointInfo | undefined {
    const ep = this.endpointsByIp.get(ip);
    return ep && ep.node === this.snapshot.node ? ep : undefined;
  }

  identity(id: number): IdentityInfo | undefined { return this.identities.get(id); }

  /** Istio principal form of an identity: its SPIFFE id without the scheme */
  principal(id: number): string | undefined {
    const spiffe = this.identities.get(id)?.spiffeId;
    return spiffe?.startsWith('spiffe://') ? spiffe.slice('spiffe://'.length) : spiffe;
  }

  identityRunsOn(node: string, identity: number): boolean { return this.onNode.has(`${node}\0${identity}`); }

  service(ip: string, port: number): ServiceTarget | undefined { return this.services.get(`${ip}:${port}`); }

  /** a Service port by name (a route's backendRef) */
  serviceByName(namespace: string, name: string, port: number): ServiceTarget | undefined { return this.servicesByName.get(`${namespace}/${name}:${port}`); }

  appProtocol(ip: string, port: number): string | undefined { return this.appProtocols.get(ip)?.get(port); }

  /** only the policies that select this identity: evaluate() then skips nothing */
  policiesFor(identity: number): readonly CompiledPolicy[] { return this.policies.get(identity) ?? NO_POLICIES; }

  /**
   * The policies of `identity` as they stand for one source (agent/policy forSource): the
   * part of a decision that depends only on who is asking is taken once per source and
   * destination for the life of this view, not per request.
   */
  policiesForSource(identity: number, src: PolicySource): readonly CompiledPolicy[] {
    const all = this.policies.get(identity);
    if (all === undefined) return NO_POLICIES;
    let bySrc = this.bySource.get(identity);
    if (bySrc === undefined) this.bySource.set(identity, (bySrc = new Map()));
    const hit = bySrc.get(src.identity);
    if (hit !== undefined && hit.principal === src.principal && hit.namespace === src.namespace) return hit.policies;
    const policies = forSource(all, src);
    // a source's principal and namespace follow from its identity: a second form is not kept
    if (hit === undefined && this.sourcesCached < MAX_CACHED_SOURCES) {
      bySrc.set(src.identity, { principal: src.principal, namespace: src.namespace, policies });
      this.sourcesCached++;
    }
    return policies;
  }

  flowEndpoint(ep: EndpointInfo | undefined, identity?: number): FlowEndpoint {
    if (!ep) return identity === undefined ? {} : { identity };
    let fe = this.flowEndpoints.get(ep);
    if (!fe) {
      const labels = [`k8s:io.kubernetes.pod.namespace=${ep.namespace}`];
      for (const [k, v] of Object.entries(ep.labels)) labels.push(`k8s:${k}=${v}`);
      labels.sort();
      fe = Object.freeze({
        identity: ep.identity, namespace: ep.namespace, podName: ep.name, labels: Object.freeze(labels) as string[],
        // Hubble's Endpoint.workloads: the pod's controller (none for a bare pod)
        ...(ep.workload ? { workloads: Object.freeze([Object.freeze({ name: ep.workload.name, kind: ep.workload.kind })]) as FlowEndpoint['workloads'] } : {}),
      });
      this.flowEndpoints.set(ep, fe);
    }
    return fe;
  }
}
