// Admin endpoints, served away from the data path (their own listeners): health on
// :15021 (plus GET /status, the agent's JSON report for `nodal status`) and Prometheus
// metrics on :9964. A slow scrape never touches a proxied request.
import { createServer, type Server } from 'node:http';

export interface Readiness { ready(): { ok: boolean; reasons: string[] } }

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(Object.assign(new Error(`admin listen ${host}:${port}: ${err.code ?? err.message}`), { code: 'NODAL_ERR_ADMIN_BIND' })));
    server.listen(port, host, () => resolve());
  });
}

export async function startAdmin(opts: {
  host: string; healthPort: number; metricsPort: number; readiness: Readiness;
  /** GET /metrics: the exposition text (the agent merges its proxy workers' registries into it) */
  metrics: () => Promise<string>;
  /** the exposition's content type */
  contentType: string;
  /** GET /status: the agent's report (agent/status.ts), as JSON */
  status?: () => Promise<unknown>;
}): Promise<{ close(): Promise<void> }> {
  const health = createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (req.url === '/readyz') {
      const r = opts.readiness.ready();
      res.writeHead(r.ok ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify(r)}\n`);
    } else if (req.url === '/status' && opts.status) {
      opts.status().then((body) => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(body)}\n`);
      }, (err: Error) => res.writeHead(500, { 'content-type': 'application/json' }).end(`${JSON.stringify({ error: err.message })}\n`));
    } else {
      res.writeHead(404).end();
    }
  });
  const metrics = createServer((req, res) => {
    if (req.url !== '/metrics') { res.writeHead(404).end(); return; }
    opts.metrics().then((body) => {
      res.writeHead(200, { 'content-type': opts.contentType }).end(body);
    }, (err: Error) => res.writeHead(500).end(err.message));
  });
  // bind both before serving either: a port conflict stops start-up loudly
  await listen(health, opts.host, opts.healthPort);
  await listen(metrics, opts.host, opts.metricsPort);
  return {
    close: async () => {
      await Promise.all([health, metrics].map((s) => new Promise((r) => { s.closeAllConnections(); s.close(r); })));
    },
  };
}
