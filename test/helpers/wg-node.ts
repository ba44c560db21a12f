// The WireGuard side of one node's agent, for kernel tests. Run inside the node's network
// namespace and its own mount namespace (so wireguard-go's UAPI socket path is per node).
// Protocol: JSON lines. stdout: {"event":"ready",publicKey,mode} once set up, then one
// answer per command; stderr: the pino log. stdin commands:
//   {"cmd":"peers","peers":[WireGuardPeer...]}   -> {"event":"peers"}
//   {"cmd":"status"}                             -> {"event":"status","status":{...}}
//   {"cmd":"close","removeInterface":bool}       -> {"event":"closed"} and exit 0
// Any failure -> {"event":"error","code","message"} (and exit 1 if set-up failed).
// Args: --key-dir DIR --tunnel-ip IP [--mode auto|kernel|userspace] [--iface NAME]
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { WireGuard, type WireGuardPeer } from '../../agent/wireguard/index.ts';

const { values } = parseArgs({
  options: {
    'key-dir': { type: 'string' },
    'tunnel-ip': { type: 'string' },
    mode: { type: 'string', default: 'auto' },
    iface: { type: 'string' },
  },
});

const say = (o: Record<string, unknown>): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };
const fail = (err: unknown): Record<string, unknown> => ({
  event: 'error',
  code: (err as { code?: string }).code,
  message: err instanceof Error ? err.message : String(err),
});

const logger = pino({ level: 'debug' }, pino.destination(2));

let wg: WireGuard;
try {
  wg = await WireGuard.setup({
    keyDir: values['key-dir'] ?? '',
    tunnelIp: values['tunnel-ip'] ?? '',
    mode: values.mode as 'auto' | 'kernel' | 'userspace',
    ...(values.iface ? { iface: values.iface } : {}),
    logger,
  });
} catch (err) {
  say(fail(err));
  process.exit(1);
}
say({ event: 'ready', publicKey: wg.publicKey, mode: wg.mode });

let closing = false;
const close = async (removeInterface: boolean): Promise<void> => {
  if (closing) return;
  closing = true;
  await wg.close({ removeInterface });
  say({ event: 'closed' });
  process.exit(0);
};
process.on('SIGTERM', () => { void close(false); });

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  void (async () => {
    try {
      const msg = JSON.parse(line) as { cmd: string; peers?: WireGuardPeer[]; removeInterface?: boolean };
      if (msg.cmd === 'peers') {
        await wg.setPeers(msg.peers ?? []);
        say({ event: 'peers' });
      } else if (msg.cmd === 'status') {
        say({ event: 'status', status: await wg.status() });
      } else if (msg.cmd === 'close') {
        await close(msg.removeInterface === true);
      } else {
        say({ event: 'error', message: `unknown command ${msg.cmd}` });
      }
    } catch (err) {
      say(fail(err));
    }
  })();
});
rl.on('close', () => { void close(false); });
