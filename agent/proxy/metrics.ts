// Proxy metrics (DESIGN §8 golden signals). Label values stay bounded: identity numbers,
// code classes and verdicts, never IPs, ports or paths.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export type Direction = 'outbound' | 'inbound';

export class ProxyMetrics {
  readonly requests: Counter<'source_identity' | 'destination_identity' | 'code_class' | 'verdict'>;
  readonly duration: Histogram<'source_identity' | 'destination_identity'>;
  readonly connections: Counter<'direction'>;
  readonly active: Gauge<'direction'>;
  readonly bytes: Counter<'direction'>;
  readonly verdicts: Counter<'verdict'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.requests = new Counter({
      name: 'nodal_proxy_requests_total',
      help: 'HTTP requests seen by the destination proxy, by source/destination identity, status class and verdict',
      labelNames: ['source_identity', 'destination_identity', 'code_class', 'verdict'],
      registers,
    });
    this.duration = new Histogram({
      name: 'nodal_proxy_request_duration_seconds',
      help: 'time from request headers to upstream response headers at the destination proxy',
      labelNames: ['source_identity', 'destination_identity'],
      // 1 ms .. 10 s: in-cluster calls sit at the low end, timeouts at the high end
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.connections = new Counter({
      name: 'nodal_proxy_connections_total',
      help: 'connections accepted: outbound (redirected from a local pod) and inbound (delivered to a local pod)',
      labelNames: ['direction'],
      registers,
    });
    this.active = new Gauge({
      name: 'nodal_proxy_active_connections',
      help: 'connections open now, by side of the proxy',
      labelNames: ['direction'],
      registers,
    });
    this.bytes = new Counter({
      name: 'nodal_proxy_bytes_total',
      help: 'bytes carried both ways, counted on the pod-facing socket of each side when it closes',
      labelNames: ['direction'],
      registers,
    });
    this.verdicts = new Counter({
      name: 'nodal_proxy_policy_verdicts_total',
      help: 'policy decisions taken by the proxy (per opaque connection, per HTTP request)',
      labelNames: ['verdict'],
      registers,
    });
  }
}

export function codeClass(code: number): string {
  if (code >= 100 && code < 600) return `${Math.floor(code / 100)}xx`;
  return 'other';
}
