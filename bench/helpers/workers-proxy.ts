// ProxyWorkers in a process of its own for bench/proxy-cores.ts, so that the bench reads
// the whole proxy's CPU time from /proc. argv: worker count, the lookup module's URL
// (originalDestinationModule), JSON { outbound, backend }. One line on stdout when
// listening; exits when stdin ends, so a bench that dies takes its proxy with it.
import pino from 'pino';
import type { Snapshot } from '../../control/api/types.ts';
import { ProxyWorkers } from '../../agent/proxy/index.ts';

const TRUST = 'cluster.local';
const [count, lookup, json] = process.argv.slice(2);
const cfg = JSON.parse(json ?? '') as { outbound: { host: string; port: number }; backend: { ip: string; port: number } };

const snapshot: Snapshot = {
  version: 1, node: 'node-a', trustDomain: TRUST,
  nodes: [{ name: 'node-a', underlayIp: '127.89.9.1', tunnelIp: '127.89.10.1', podCidrs: [], wgPublicKey: '', proxyIp: cfg.outbound.host }],
  identities: [256, 257].map((id) => ({ id, namespace: 'bench', serviceAccount: `sa-${id}`, labels: {}, spiffeId: `spiffe://${TRUST}/ns/bench/sa/sa-${id}` })),
  endpoints: [
    { namespace: 'bench', name: 'client', uid: 'client', node: 'node-a', ip: '127.0.0.1', identity: 256, labels: {}, serviceAccount: 'client', enrolled: true },
    { namespace: 'bench', name: 'web', uid: 'web', node: 'node-a', ip: cfg.backend.ip, identity: 257, labels: {}, serviceAccount: 'web', enrolled: true },
  ],
  services: [], policies: [], l4: [],
};

const workers = await ProxyWorkers.start({
  workers: Number(count), node: 'node-a', logLevel: 'silent', logger: pino({ level: 'silent' }),
  outbound: cfg.outbound, inbound: { host: '127.89.10.1', port: 0 }, upstreamBindIp: '127.89.20.1',
  pinRoot: '', originalDestinationModule: lookup, onFlow: () => {}, tracing: { sampleRatio: 1 },
});
workers.update(snapshot);
while (!workers.ready) await new Promise((r) => setTimeout(r, 10));
process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);
process.stdin.resume();
process.stdin.once('end', () => void workers.close().then(() => process.exit(0)));
