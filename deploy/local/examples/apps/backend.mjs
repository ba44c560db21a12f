// The example backend: GET /api/* and /admin answer JSON naming this pod; anything else
// is 404. One JSON access line per request on stdout (`nodal dev logs demo/backend`).
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 8080);
const me = { pod: process.env.POD_NAME, namespace: process.env.POD_NAMESPACE, ip: process.env.POD_IP, node: process.env.NODE_NAME };
const started = Date.now();

const server = createServer((req, res) => {
  const path = new URL(req.url ?? '/', 'http://backend').pathname;
  let status = 200;
  let body;
  if (req.method === 'GET' && path.startsWith('/api/')) {
    body = { ...me, path, items: [{ id: 1, name: 'anvil' }, { id: 2, name: 'rocket skates' }] };
  } else if (path === '/admin') {
    body = { ...me, path, admin: true, uptimeSeconds: Math.round((Date.now() - started) / 1000) };
  } else {
    status = 404;
    body = { ...me, path, error: 'not found' };
  }
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(`${JSON.stringify(body)}\n`);
  console.log(JSON.stringify({ time: new Date().toISOString(), method: req.method, path, status, from: req.socket.remoteAddress }));
});
server.listen(port, '0.0.0.0', () => console.log(JSON.stringify({ time: new Date().toISOString(), listening: port, ...me })));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
