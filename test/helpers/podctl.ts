// podctl: what a workload does inside a test pod. Each command prints JSON lines that
// the test reads, so assertions are about what an application observes.
//   serve PORT [HOST]             line echo server: replies "<pod> <line>"
//   connect HOST PORT [TEXT]      one connection, optional request line; prints outcome
//   hold HOST PORT                connection kept open; each stdin line is sent, reply printed
//   connect-many HOST PORT COUNT  COUNT sequential connects; prints outcome counts
//   connect-loop HOST PORT MAX    connects until a line arrives on stdin (or MAX tries); prints counts
import { connect, createServer, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

const pod = process.env.POD_NAME ?? 'pod';
const out = (o: Record<string, unknown>): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };
const CONNECT_TIMEOUT_MS = Number(process.env.PODCTL_TIMEOUT_MS ?? 3000);

function lineReader(sock: Socket, onLine: (l: string) => void): void {
  createInterface({ input: sock }).on('line', onLine);
}

function tryConnect(host: string, port: number): Promise<{ sock?: Socket; error?: string }> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    const timer = setTimeout(() => { sock.destroy(); resolve({ error: 'TIMEOUT' }); }, CONNECT_TIMEOUT_MS);
    sock.once('connect', () => { clearTimeout(timer); resolve({ sock }); });
    sock.once('error', (e: NodeJS.ErrnoException) => { clearTimeout(timer); resolve({ error: e.code ?? e.message }); });
  });
}

const [cmd, a1, a2, a3] = process.argv.slice(2);

switch (cmd) {
  case 'serve': {
    const server = createServer((sock) => {
      out({ event: 'accepted', remote: sock.remoteAddress, remotePort: sock.remotePort });
      lineReader(sock, (l) => sock.write(`${pod} ${l}\n`));
      sock.on('error', () => {});
    });
    server.listen(Number(a1), a2 ?? '0.0.0.0', () => out({ event: 'listening', port: Number(a1) }));
    break;
  }
  case 'connect': {
    const { sock, error } = await tryConnect(a1!, Number(a2));
    if (!sock) { out({ ok: false, error }); process.exit(0); }
    const base = { ok: true, local: sock.localAddress, localPort: sock.localPort, remote: sock.remoteAddress, remotePort: sock.remotePort };
    if (a3 === undefined) { out(base); sock.destroy(); break; }
    sock.write(`${a3}\n`);
    let done = false;
    const finish = (reply: string | null): void => { if (!done) { done = true; out({ ...base, reply }); sock.destroy(); } };
    // a reply that never comes is an outcome too, not a hang
    const timer = setTimeout(() => finish(null), CONNECT_TIMEOUT_MS);
    lineReader(sock, (reply) => { clearTimeout(timer); finish(reply); });
    sock.on('close', () => { clearTimeout(timer); finish(null); });
    sock.on('error', () => {});
    break;
  }
  case 'hold': {
    const { sock, error } = await tryConnect(a1!, Number(a2));
    if (!sock) { out({ ok: false, error }); process.exit(0); }
    out({ ok: true, local: sock.localAddress, localPort: sock.localPort });
    lineReader(sock, (reply) => out({ reply }));
    sock.on('close', () => out({ closed: true }));
    sock.on('error', (e: NodeJS.ErrnoException) => out({ error: e.code }));
    createInterface({ input: process.stdin }).on('line', (l) => sock.write(`${l}\n`));
    break;
  }
  case 'connect-many': {
    const counts: Record<string, number> = {};
    for (let i = 0; i < Number(a3); i++) {
      const { sock, error } = await tryConnect(a1!, Number(a2));
      const k = sock ? 'ok' : (error ?? 'unknown');
      counts[k] = (counts[k] ?? 0) + 1;
      sock?.destroy();
    }
    out({ counts });
    break;
  }
  case 'connect-loop': {
    const counts: Record<string, number> = {};
    let stop = false;
    createInterface({ input: process.stdin }).once('line', () => { stop = true; });
    out({ event: 'looping' });
    for (let i = 0; i < Number(a3) && !stop; i++) {
      const { sock, error } = await tryConnect(a1!, Number(a2));
      const k = sock ? 'ok' : (error ?? 'unknown');
      counts[k] = (counts[k] ?? 0) + 1;
      sock?.destroy();
      // yield to the event loop so the stop line can arrive
      if (i % 16 === 0) await new Promise((r) => setImmediate(r));
    }
    out({ counts });
    process.exit(0);
  }
  default:
    process.stderr.write(`podctl: unknown command ${String(cmd)}\n`);
    process.exit(2);
}
