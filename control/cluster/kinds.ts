// The kinds nodal reads, one table entry each: apiVersion, scope, schema, and the
// conversion into the source-agnostic ClusterState objects. The schemas of the Kubernetes
// kinds are lenient (real manifests carry many fields we do not read); the nodal policy
// kind is strict, because an Istio field we silently ignored would widen a policy.
import { ConfigError } from '../errors.ts';
import type {
  LabelSelector, MeshPolicyObject, NamespaceObject, NetworkPolicyObject, NetworkPolicyPeerObject, NetworkPolicyPortObject,
  NetworkPolicyRuleObject, NodeObject, PodObject, PolicyRule, RouteObject, ServiceObject, TrafficPolicyObject, WorkloadRef,
} from './state.ts';
import { GRPCROUTE_SPEC, HTTPROUTE_SPEC, convertRoute, serviceParents } from './kinds-routes.ts';
import { TRAFFIC_POLICY_SPEC, convertTrafficPolicy } from './kinds-trafficpolicy.ts';
import {
  bool, check, cidr, ip, isMapping, labels, list, mapOf, name, obj, oneOf, parsePort, port, req, str, type Schema,
} from './schema.ts';
import { a, compact, isProblem, m, s, strList, type Doc } from './read.ts';

export type Typed =
  | { kind: 'Namespace'; value: NamespaceObject }
  | { kind: 'Pod'; value: PodObject }
  | { kind: 'Service'; value: ServiceObject }
  | { kind: 'Node'; value: NodeObject }
  | { kind: 'MeshPolicy'; value: MeshPolicyObject }
  | { kind: 'NetworkPolicy'; value: NetworkPolicyObject }
  | { kind: 'HTTPRoute' | 'GRPCRoute'; value: RouteObject }
  | { kind: 'TrafficPolicy'; value: TrafficPolicyObject };

export type Parsed =
  | { result: 'skip'; reason: string }
  | { result: 'ok'; key: string; display: string; object: Typed }
  /** key is set when the document names its object, so the last good version can stay */
  | { result: 'error'; key?: string; error: ConfigError };

interface KindSpec {
  apiVersion: string;
  namespaced: boolean;
  schema: Schema;
  /** runs on a document that passed the schema, so it may read fields without re-checking; `skip`: not nodal's to read */
  convert: (doc: Doc, namespace: string) => Typed | { path: string; reason: string } | { skip: string };
}

const metadata = (annotations: Schema = labels, extra: Record<string, Schema> = {}): Schema =>
  obj({ name: req(name), namespace: str, uid: str, labels, annotations, ...extra });

/** metadata.ownerReferences as the API server writes them; only kind, name and controller are read */
const ownerReferences = list(obj({ apiVersion: str, kind: req(name), name: req(name), uid: str, controller: bool, blockOwnerDeletion: bool }));

const strs = list(str);
const source = obj({ principals: strs, notPrincipals: strs, namespaces: strs, notNamespaces: strs },
  { strict: true, atLeastOne: ['principals', 'notPrincipals', 'namespaces', 'notNamespaces'] });
const operation = obj({
  ports: list(port), notPorts: list(port), methods: strs, notMethods: strs, paths: strs, notPaths: strs, hosts: strs,
  headers: mapOf(list(name)), grpcServices: strs, grpcMethods: strs,
}, { strict: true, atLeastOne: ['ports', 'notPorts', 'methods', 'notMethods', 'paths', 'notPaths', 'hosts', 'headers', 'grpcServices', 'grpcMethods'] });
/** an HTTP header name (RFC 7230 token) */
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const condition = obj({ key: req(name), values: strs, notValues: strs }, { strict: true, atLeastOne: ['values', 'notValues'] });
const rule = obj({
  from: list(obj({ source: req(source) }, { strict: true })),
  to: list(obj({ operation: req(operation) }, { strict: true })),
  when: list(condition),
}, { strict: true });

// NetworkPolicy (networking.k8s.io/v1). Strict like MeshPolicy: a peer or port field we
// ignored would widen what the policy admits.
const labelSelector = obj({
  matchLabels: labels,
  matchExpressions: list(obj({ key: req(name), operator: req(oneOf('In', 'NotIn', 'Exists', 'DoesNotExist')), values: strs }, { strict: true })),
}, { strict: true });
const npPeer = obj({
  podSelector: labelSelector, namespaceSelector: labelSelector,
  ipBlock: obj({ cidr: req(cidr), except: list(cidr) }, { strict: true }),
}, { strict: true, atLeastOne: ['podSelector', 'namespaceSelector', 'ipBlock'] });
const npPort = obj({ protocol: oneOf('TCP', 'UDP', 'SCTP'), port: { t: 'portOrName' }, endPort: port }, { strict: true });
const npRule = (peers: 'from' | 'to'): Schema => obj({ [peers]: list(npPeer), ports: list(npPort) }, { strict: true });
/** the longest range endPort may expand to: each port is one BPF policy entry per local identity and peer */
export const MAX_PORT_RANGE = 1024;

const lbl = (v: unknown): Record<string, string> => ({ ...(m(v) as Record<string, string>) });
const portList = (v: unknown): number[] | undefined => (Array.isArray(v) && v.length > 0 ? v.map((p) => parsePort(p)!) : undefined);

const selectorOf = (v: unknown): LabelSelector => ({
  matchLabels: lbl(m(v).matchLabels),
  matchExpressions: a(m(v).matchExpressions).map((e) => ({
    key: s(m(e).key), operator: s(m(e).operator) as LabelSelector['matchExpressions'][number]['operator'],
    values: a(m(e).values).map((x) => s(x)),
  })),
});

/**
 * MeshPolicy `operation.headers`: names lower-cased (HTTP header names are case-insensitive),
 * each with at least one pattern; undefined when absent or empty
 */
function headerPatterns(v: unknown, at: string): Record<string, string[]> | { path: string; reason: string } | undefined {
  const out: Record<string, string[]> = {};
  // `headers: {}` must not count as a condition: the operation would match every request
  if (isMapping(v) && Object.keys(v).length === 0) return { path: at, reason: 'must name at least one header' };
  for (const [raw, patterns] of Object.entries(m(v))) {
    const nm = raw.toLowerCase();
    if (!HEADER_NAME.test(raw)) return { path: `${at}.${raw}`, reason: `${JSON.stringify(raw)} is not an HTTP header name` };
    if (Object.hasOwn(out, nm)) return { path: `${at}.${raw}`, reason: `${JSON.stringify(raw)} is listed twice (header names are case-insensitive)` };
    // an empty list would read as "this header, any value" to some and "never" to others: say which
    if (a(patterns).length === 0) return { path: `${at}.${raw}`, reason: 'must list at least one pattern ("*" for any non-empty value)' };
    out[nm] = a(patterns).map((x) => s(x));
  }
  return Object.keys(out).length > 0 ? Object.fromEntries(Object.keys(out).sort().map((k) => [k, out[k]!])) : undefined;
}

/** the semantic checks the schema cannot express, as the API server's validation does them */
function convertNetworkPolicy(d: Doc, namespace: string): Typed | { path: string; reason: string } {
  const spec = m(d.spec);
  const rules = (field: 'ingress' | 'egress', peersField: 'from' | 'to'): NetworkPolicyRuleObject[] | { path: string; reason: string } => {
    const out: NetworkPolicyRuleObject[] = [];
    const list = a(spec[field]);
    for (let i = 0; i < list.length; i++) {
      const r = m(list[i]);
      const peers: NetworkPolicyPeerObject[] = [];
      const rawPeers = a(r[peersField]);
      for (let j = 0; j < rawPeers.length; j++) {
        const p = m(rawPeers[j]);
        const at = `spec.${field}[${i}].${peersField}[${j}]`;
        if (p.ipBlock !== undefined && p.ipBlock !== null) {
          if (p.podSelector != null || p.namespaceSelector != null) return { path: at, reason: 'ipBlock cannot be combined with podSelector or namespaceSelector' };
          const ib = m(p.ipBlock), c = s(ib.cidr);
          const except = a(ib.except).map((x) => s(x));
          const bad = except.findIndex((e) => !cidrWithin(e, c));
          if (bad >= 0) return { path: `${at}.ipBlock.except[${bad}]`, reason: `${except[bad]} is not within ${c}` };
          peers.push({ ipBlock: { cidr: c, except } });
        } else {
          peers.push(compact({
            podSelector: p.podSelector != null ? selectorOf(p.podSelector) : undefined,
            namespaceSelector: p.namespaceSelector != null ? selectorOf(p.namespaceSelector) : undefined,
          }));
        }
      }
      const ports: NetworkPolicyPortObject[] = [];
      const rawPorts = a(r.ports);
      for (let j = 0; j < rawPorts.length; j++) {
        const p = m(rawPorts[j]);
        const at = `spec.${field}[${i}].ports[${j}]`;
        const protocol = s(p.protocol, 'TCP') as NetworkPolicyPortObject['protocol'];
        const portNo = typeof p.port === 'number' ? p.port : typeof p.port === 'string' ? (parsePort(p.port) ?? p.port) : undefined;
        if (p.endPort != null) {
          const end = parsePort(p.endPort)!;
          if (typeof portNo !== 'number') return { path: `${at}.endPort`, reason: 'needs a numeric port' };
          if (end < portNo) return { path: `${at}.endPort`, reason: `${end} is below port ${portNo}` };
          if (end - portNo + 1 > MAX_PORT_RANGE) {
            return { path: `${at}.endPort`, reason: `range ${portNo}-${end} has ${end - portNo + 1} ports; nodal expands ranges to one entry per port and supports at most ${MAX_PORT_RANGE}` };
          }
          ports.push({ protocol, port: portNo, endPort: end });
        } else {
          ports.push(portNo === undefined ? { protocol } : { protocol, port: portNo });
        }
      }
      out.push({ peers, ports });
    }
    return out;
  };
  const ingress = rules('ingress', 'from');
  if (!Array.isArray(ingress)) return ingress;
  const egress = rules('egress', 'to');
  if (!Array.isArray(egress)) return egress;
  // policyTypes absent: Ingress always, Egress when the policy has egress rules (Kubernetes defaulting)
  const written = a(spec.policyTypes).map((x) => s(x) as 'Ingress' | 'Egress');
  const policyTypes = written.length > 0 ? [...new Set(written)] : egress.length > 0 ? ['Ingress', 'Egress'] as const : ['Ingress'] as const;
  return {
    kind: 'NetworkPolicy',
    value: {
      namespace, name: s(m(d.metadata).name), podSelector: selectorOf(spec.podSelector),
      policyTypes: [...policyTypes], ingress, egress,
    },
  };
}

/** `inner` (a CIDR) lies within `outer`, same family */
function cidrWithin(inner: string, outer: string): boolean {
  const [ia, il] = inner.split('/'), [oa, ol] = outer.split('/');
  const i = ipBits(ia!), o = ipBits(oa!);
  if (i === undefined || o === undefined || i.v4 !== o.v4) return false;
  const ilen = Number(il), olen = Number(ol);
  if (ilen < olen) return false;
  const width = i.v4 ? 32 : 128;
  const shift = BigInt(width - olen);
  return (i.bits >> shift) === (o.bits >> shift);
}

/** an IPv4 or IPv6 address as an integer, or undefined */
export function ipBits(addr: string): { v4: boolean; bits: bigint } | undefined {
  if (/^[0-9.]+$/.test(addr)) {
    const parts = addr.split('.').map(Number);
    if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255))) return undefined;
    return { v4: true, bits: parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n) };
  }
  let text = addr;
  if (text.includes('.')) {
    // a trailing dotted IPv4 part (::ffff:1.2.3.4) becomes two hex groups
    const lastColon = text.lastIndexOf(':');
    const v4 = ipBits(text.slice(lastColon + 1));
    if (!v4?.v4) return undefined;
    text = `${text.slice(0, lastColon + 1)}${(v4.bits >> 16n).toString(16)}:${(v4.bits & 0xffffn).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const group = (h: string): bigint[] => (h === '' ? [] : h.split(':').map((g) => BigInt(`0x${g || '0'}`)));
  const head = group(halves[0]!), rest = halves.length === 2 ? group(halves[1]!) : [];
  const fill = 8 - head.length - rest.length;
  if (halves.length === 1 ? fill !== 0 : fill < 0) return undefined;
  const groups = [...head, ...Array<bigint>(fill).fill(0n), ...rest];
  return { v4: false, bits: groups.reduce((acc, g) => (acc << 16n) | g, 0n) };
}

const PHASES = ['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown'] as const;

/** the label the Deployment controller puts on a ReplicaSet's pods; the ReplicaSet is named <deployment>-<hash> */
const POD_TEMPLATE_HASH = 'pod-template-hash';

/**
 * the pod's workload as Hubble derives it from the pod alone: the owner reference marked
 * controller, with a ReplicaSet named `<deployment>-<pod-template-hash>` taken back to its
 * Deployment; a bare pod (no controller) has none. A Job's CronJob is not visible from the
 * pod, so a Job stays a Job.
 */
export function workloadOf(ownerRefs: unknown, podLabels: Record<string, string>): WorkloadRef | undefined {
  const ctl = a(ownerRefs).map(m).find((o) => o.controller === true);
  if (!ctl) return undefined;
  const kind = s(ctl.kind), wname = s(ctl.name);
  if (kind === '' || wname === '') return undefined;
  const hash = podLabels[POD_TEMPLATE_HASH];
  if (kind === 'ReplicaSet' && hash && wname.length > hash.length + 1 && wname.endsWith(`-${hash}`)) {
    return { kind: 'Deployment', name: wname.slice(0, -(hash.length + 1)) };
  }
  return { kind, name: wname };
}

export const KINDS: Record<string, KindSpec> = {
  Namespace: {
    apiVersion: 'v1', namespaced: false,
    schema: obj({ metadata: req(metadata()) }),
    convert: (d) => ({ kind: 'Namespace', value: { name: s(m(d.metadata).name), labels: lbl(m(d.metadata).labels) } }),
  },
  Pod: {
    apiVersion: 'v1', namespaced: true,
    schema: obj({
      metadata: req(metadata(labels, { ownerReferences })),
      spec: obj({
        nodeName: str, serviceAccountName: str,
        containers: list(obj({ ports: list(obj({ name: str, containerPort: req(port) })) })),
      }),
      status: obj({ podIP: ip, phase: oneOf(...PHASES) }),
    }),
    convert: (d, namespace) => {
      const md = m(d.metadata), spec = m(d.spec), status = m(d.status);
      const namedPorts: Record<string, number> = {};
      for (const c of a(spec.containers)) {
        for (const p of a(m(c).ports)) if (s(m(p).name) !== '') namedPorts[s(m(p).name)] = parsePort(m(p).containerPort)!;
      }
      const podIp = s(status.podIP);
      const podLabels = lbl(md.labels);
      const workload = workloadOf(md.ownerReferences, podLabels);
      return {
        kind: 'Pod',
        value: {
          namespace, name: s(md.name), uid: s(md.uid, `${namespace}/${s(md.name)}`), labels: podLabels,
          nodeName: s(spec.nodeName), serviceAccount: s(spec.serviceAccountName, 'default'), podIp,
          // hand-written standalone manifests rarely carry a phase: an addressed pod is taken as running
          phase: s(status.phase, podIp !== '' ? 'Running' : 'Pending') as PodObject['phase'],
          namedPorts,
          ...(workload ? { workload } : {}),
        },
      };
    },
  },
  Service: {
    apiVersion: 'v1', namespaced: true,
    schema: obj({
      metadata: req(metadata()),
      spec: obj({
        clusterIP: { t: 'ip', also: ['None', ''] }, selector: labels,
        ports: list(obj({ name: str, port: req(port), targetPort: { t: 'portOrName' }, protocol: oneOf('TCP', 'UDP'), appProtocol: str })),
      }),
    }),
    convert: (d, namespace) => {
      const spec = m(d.spec);
      const clusterIp = s(spec.clusterIP);
      return {
        kind: 'Service',
        value: {
          namespace, name: s(m(d.metadata).name),
          clusterIp: clusterIp === 'None' ? '' : clusterIp,
          selector: isMapping(spec.selector) ? lbl(spec.selector) : undefined,
          ports: a(spec.ports).map((p) => {
            const pm = m(p);
            const portNo = parsePort(pm.port)!;
            const tp = pm.targetPort;
            return compact({
              name: typeof pm.name === 'string' && pm.name !== '' ? pm.name : undefined,
              port: portNo,
              targetPort: typeof tp === 'number' ? tp : typeof tp === 'string' ? tp : portNo,
              protocol: s(pm.protocol, 'TCP') as 'TCP' | 'UDP',
              appProtocol: typeof pm.appProtocol === 'string' ? pm.appProtocol : undefined,
            });
          }),
        },
      };
    },
  },
  Node: {
    apiVersion: 'v1', namespaced: false,
    schema: obj({
      metadata: req(metadata(obj({ 'nodal.io/tunnel-ip': ip, 'nodal.io/proxy-ip': ip, 'nodal.io/wg-pub-key': str }))),
      spec: obj({ podCIDR: cidr, podCIDRs: list(cidr) }),
      status: obj({ addresses: list(obj({ type: req(name), address: req(str) })) }),
    }),
    convert: (d) => {
      const md = m(d.metadata), ann = m(md.annotations), spec = m(d.spec);
      const addresses = a(m(d.status).addresses).map(m);
      const internal = addresses.findIndex((x) => x.type === 'InternalIP');
      if (internal < 0) return { path: 'status.addresses', reason: 'needs an InternalIP address (the underlay address peers reach)' };
      const internalIp = s(addresses[internal]!.address);
      const ipIssue = check(ip, internalIp, `status.addresses[${internal}].address`);
      if (ipIssue) return ipIssue;
      const cidrs = [...(strList(spec.podCIDRs) ?? [])];
      if (typeof spec.podCIDR === 'string' && !cidrs.includes(spec.podCIDR)) cidrs.unshift(spec.podCIDR);
      return {
        kind: 'Node',
        value: {
          name: s(md.name), internalIp, podCidrs: cidrs,
          tunnelIp: s(ann['nodal.io/tunnel-ip']), proxyIp: s(ann['nodal.io/proxy-ip']), wgPublicKey: s(ann['nodal.io/wg-pub-key']),
        },
      };
    },
  },
  MeshPolicy: {
    apiVersion: 'nodal.io/v1alpha1', namespaced: true,
    schema: obj({
      metadata: req(metadata()),
      spec: obj({ selector: obj({ matchLabels: labels }, { strict: true }), action: oneOf('ALLOW', 'DENY', 'AUDIT'), rules: list(rule) }, { strict: true }),
    }),
    convert: (d, namespace) => {
      const spec = m(d.spec);
      const rules: PolicyRule[] = [];
      const rawRules = a(spec.rules);
      for (let i = 0; i < rawRules.length; i++) {
        const r = m(rawRules[i]);
        const to: PolicyRule['to'] = [];
        const rawTo = a(r.to);
        for (let j = 0; j < rawTo.length; j++) {
          const op = m(m(rawTo[j]).operation);
          const headers = headerPatterns(op.headers, `spec.rules[${i}].to[${j}].operation.headers`);
          if (isProblem(headers)) return headers;
          to.push(compact({
            ports: portList(op.ports), notPorts: portList(op.notPorts), methods: strList(op.methods), notMethods: strList(op.notMethods),
            paths: strList(op.paths), notPaths: strList(op.notPaths), hosts: strList(op.hosts),
            headers, grpcServices: strList(op.grpcServices), grpcMethods: strList(op.grpcMethods),
          }));
        }
        rules.push({
          from: a(r.from).map((f) => {
            const src = m(m(f).source);
            return compact({ principals: strList(src.principals), notPrincipals: strList(src.notPrincipals), namespaces: strList(src.namespaces), notNamespaces: strList(src.notNamespaces) });
          }),
          to,
          when: a(r.when).map((w) => compact({ key: s(m(w).key), values: strList(m(w).values), notValues: strList(m(w).notValues) })),
        });
      }
      return {
        kind: 'MeshPolicy',
        value: {
          namespace, name: s(m(d.metadata).name), matchLabels: lbl(m(spec.selector).matchLabels),
          action: s(spec.action, 'ALLOW') as MeshPolicyObject['action'], rules,
        },
      };
    },
  },
  NetworkPolicy: {
    apiVersion: 'networking.k8s.io/v1', namespaced: true,
    schema: obj({
      metadata: req(metadata()),
      spec: req(obj({
        podSelector: req(labelSelector),
        policyTypes: list(oneOf('Ingress', 'Egress')),
        ingress: list(npRule('from')),
        egress: list(npRule('to')),
      }, { strict: true })),
    }),
    convert: convertNetworkPolicy,
  },
  HTTPRoute: {
    apiVersion: 'gateway.networking.k8s.io/v1', namespaced: true,
    schema: obj({ metadata: req(metadata()), spec: req(HTTPROUTE_SPEC) }),
    convert: (d, namespace) => route('HTTPRoute', d, namespace),
  },
  GRPCRoute: {
    apiVersion: 'gateway.networking.k8s.io/v1', namespaced: true,
    schema: obj({ metadata: req(metadata()), spec: req(GRPCROUTE_SPEC) }),
    convert: (d, namespace) => route('GRPCRoute', d, namespace),
  },
  TrafficPolicy: {
    apiVersion: 'nodal.io/v1alpha1', namespaced: true,
    schema: obj({ metadata: req(metadata()), spec: req(TRAFFIC_POLICY_SPEC) }),
    convert: (d, namespace) => {
      const tp = convertTrafficPolicy(d, namespace);
      return 'reason' in tp ? tp : { kind: 'TrafficPolicy', value: tp };
    },
  },
};

/** a route whose parents are all Gateways belongs to the gateway's controller: skipped, not rejected */
function route(kind: 'HTTPRoute' | 'GRPCRoute', d: Doc, namespace: string): Typed | { path: string; reason: string } | { skip: string } {
  const parents = serviceParents(m(d.spec), namespace);
  if ('reason' in parents) return parents;
  if (parents.length === 0) return { skip: `${kind} without a Service parent (GAMMA): another controller's` };
  const r = convertRoute(kind, d, namespace, parents);
  return 'reason' in r ? r : { kind, value: r };
}

/** validate and convert one YAML document; `index` is its position in the file, from 0 */
export function parseDocument(doc: unknown, file: string, index: number): Parsed {
  if (doc === null || doc === undefined) return { result: 'skip', reason: 'empty document' };
  const where = `document ${index + 1}`;
  if (!isMapping(doc)) return { result: 'error', error: new ConfigError(file, where, undefined, 'not a mapping') };
  const kindName = doc.kind;
  if (typeof kindName !== 'string') return { result: 'error', error: new ConfigError(file, where, 'kind', 'is required') };
  const spec = Object.hasOwn(KINDS, kindName) ? KINDS[kindName] : undefined;
  if (!spec) return { result: 'skip', reason: `kind ${kindName} is not read by nodal` };

  const md = isMapping(doc.metadata) ? doc.metadata : {};
  const rawName = typeof md.name === 'string' && md.name !== '' ? md.name : undefined;
  const namespace = spec.namespaced ? (typeof md.namespace === 'string' && md.namespace !== '' ? md.namespace : 'default') : '';
  const display = rawName === undefined ? `${kindName} (${where})` : spec.namespaced ? `${kindName} ${namespace}/${rawName}` : `${kindName} ${rawName}`;
  const key = rawName === undefined ? undefined : `${kindName}/${namespace}/${rawName}`;
  const fail = (path: string | undefined, reason: string): Parsed =>
    ({ result: 'error', ...(key !== undefined ? { key } : {}), error: new ConfigError(file, display, path, reason) });

  if (doc.apiVersion !== spec.apiVersion) return fail('apiVersion', `${JSON.stringify(doc.apiVersion) ?? 'missing'}: expected ${spec.apiVersion}`);
  const issue = check(spec.schema, doc, '');
  if (issue) return fail(issue.path, issue.reason);
  const converted = spec.convert(doc, namespace);
  if ('skip' in converted) return { result: 'skip', reason: converted.skip };
  if ('path' in converted) return fail(converted.path, converted.reason);
  return { result: 'ok', key: key!, display, object: converted };
}
