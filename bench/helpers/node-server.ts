// Node's own servers, answering by themselves, for bench/proxy.ts: the ceiling of the
// runtime nodal's proxy is built on. node:http answers HTTP/1.1 and node:http2 answers h2c
// and gRPC, as the bench's backends do (`hello world\n`; gRPC /demo.Greeter/Hello answers
// "hello <request>" with grpc-status 0), with no upstream, no policy and no telemetry: a
// proxy on the same runtime does this much and a client's work besides, so these rows are
// the most a Node proxy could reach on the core it is given.
// argv[2]: the host; argv[3..5]: the HTTP/1.1, h2c and gRPC ports. Prints "ready" once
// listening; exits when stdin ends, so a bench that dies takes it with it.
import { createServer } from 'node:http';
import { createServer as createH2Server, type ServerHttp2Stream } from 'node:http2';
import type { Server } from 'node:net';
import { grpcMessage, grpcPayload } from '../../agent/proxy/exchange.ts';

const [host, h1Port, h2Port, grpcPort] = process.argv.slice(2);
if (!host || !h1Port || !h2Port || !grpcPort) throw new Error('usage: node-server.js <host> <http1-port> <h2-port> <grpc-port>');
const HELLO = 'hello world\n';

const h1 = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(HELLO);
});
h1.keepAliveTimeout = 60_000;

/** a load tool that resets a stream or drops a connection must not end the server */
function ignoreErrors(server: Server): void {
  server.on('session', (session: { on(event: 'error', f: () => void): void }) => session.on('error', () => {}));
  server.on('stream', (stream: ServerHttp2Stream) => stream.on('error', () => {}));
}

const h2 = createH2Server();
ignoreErrors(h2);
h2.on('stream', (stream: ServerHttp2Stream) => {
  stream.respond({ ':status': 200, 'content-type': 'text/plain' });
  stream.end(HELLO);
});

const grpc = createH2Server();
ignoreErrors(grpc);
grpc.on('stream', (stream: ServerHttp2Stream) => {
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  stream.on('end', () => {
    const message = grpcPayload(Buffer.concat(chunks));
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end(grpcMessage(Buffer.concat([Buffer.from('hello '), message])));
  });
});

async function listen(server: Server, port: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(port), host, () => resolve());
  });
}

await listen(h1, h1Port);
await listen(h2, h2Port);
await listen(grpc, grpcPort);
process.stdout.write('ready\n');
process.stdin.resume();
process.stdin.once('end', () => process.exit(0));
