// A loopback port for a test whose server or helper takes its address as an argument.
import { createServer, type AddressInfo } from 'node:net';

/** a port on 127.0.0.1 nothing listens on right now (bound, then released) */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
