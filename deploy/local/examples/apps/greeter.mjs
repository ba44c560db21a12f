// The example gRPC server: demo.v1.Greeter/SayHello answers naming this pod.
// @grpc/grpc-js resolves from the repository's node_modules (this folder is inside it).
import grpc from '@grpc/grpc-js';
import { greeterService } from './greeter-service.mjs';

const port = Number(process.env.PORT ?? 9090);
const pod = process.env.POD_NAME;
const server = new grpc.Server();
server.addService(greeterService, {
  sayHello(call, callback) {
    console.log(JSON.stringify({ time: new Date().toISOString(), method: 'SayHello', name: call.request?.name, peer: call.getPeer() }));
    callback(null, { message: `hello ${call.request?.name ?? 'stranger'}`, from: pod });
  },
});
server.bindAsync(`0.0.0.0:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) {
    console.error(`bind :${port}: ${err.message}`);
    process.exit(1);
  }
  console.log(JSON.stringify({ time: new Date().toISOString(), listening: port, pod }));
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
