// The example gRPC client: SayHello to HOST:PORT every INTERVAL ms, logging the status.
//   node greeter-client.mjs HOST:PORT [INTERVAL_MS]
import grpc from '@grpc/grpc-js';
import { greeterService } from './greeter-service.mjs';

const [target, interval = '2000'] = process.argv.slice(2);
if (!target) {
  console.error('usage: greeter-client.mjs HOST:PORT [INTERVAL_MS]');
  process.exit(2);
}
const who = `${process.env.POD_NAMESPACE}/${process.env.POD_NAME}`;
const Greeter = grpc.makeGenericClientConstructor(greeterService, 'Greeter');
const client = new Greeter(target, grpc.credentials.createInsecure());
/** a call that takes longer than this fails with DEADLINE_EXCEEDED */
const DEADLINE_MS = 2000;

function once() {
  const t0 = Date.now();
  client.sayHello({ name: who }, { deadline: Date.now() + DEADLINE_MS }, (err, reply) => {
    const outcome = err ? `${grpc.status[err.code] ?? err.code} ${err.details ?? ''}`.trim() : `OK "${reply.message}" from ${reply.from}`;
    console.log(`${new Date().toISOString()} ${who} SayHello ${target} -> ${outcome} (${Date.now() - t0} ms)`);
  });
}

once();
setInterval(once, Number(interval));
