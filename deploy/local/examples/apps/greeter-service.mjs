// The greeter's gRPC service, shared by server and client: demo.v1.Greeter/SayHello with
// JSON messages, so the example needs no .proto compilation (the wire is still gRPC).
const json = {
  serialize: (o) => Buffer.from(JSON.stringify(o)),
  deserialize: (b) => JSON.parse(b.toString('utf8')),
};

export const greeterService = {
  sayHello: {
    path: '/demo.v1.Greeter/SayHello',
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
};
