// The gRPC backend of bench/proxy.ts: a grpc-js server with one raw-bytes unary method
// (/demo.Greeter/Hello answers "hello <request>"), in its own process so the bench can pin
// it. argv: the host:port addresses to bind. Prints "ready" once bound; exits when stdin ends.
import * as grpc from '@grpc/grpc-js';

const raw = { requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b };
const GREETER = { Hello: { path: '/demo.Greeter/Hello', requestStream: false, responseStream: false, ...raw } };

const server = new grpc.Server();
server.addService(GREETER, {
  Hello: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from(`hello ${call.request.toString()}`)),
});
for (const addr of process.argv.slice(2)) {
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(addr, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });
}
process.stdout.write('ready\n');
process.stdin.resume();
process.stdin.on('end', () => {
  server.forceShutdown();
  process.exit(0);
});
