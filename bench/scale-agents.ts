// The simulated agents of bench/scale.ts, in a worker thread of their own: each holds a
// whole decoded snapshot (tens of MiB at 50,000 pods), and in the control plane's thread
// those heaps would be the control plane's to collect, which a real control plane never
// has to do. Real AgentControlClients (gRPC, deltas, per-section persistence); apply only
// records when it ran. Started in waves; every wait is bounded.
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import { AgentControlClient } from '../control/index.ts';

export interface AgentsInput { address: string; names: string[]; dir: string; wave: number; waitMs: number }
export type AgentsMessage =
  | { type: 'applied'; name: string; version: number; at: number }
  | { type: 'connected'; ok: boolean }
  | { type: 'memory'; heapUsed: number }
  | { type: 'closed' };
export type AgentsCommand = { type: 'memory' } | { type: 'close' };

const port = parentPort!;
const input = workerData as AgentsInput;
const logger = pino({ level: 'silent' });
/** a clock both threads read the same way */
const now = (): number => performance.timeOrigin + performance.now();
const post = (m: AgentsMessage): void => port.postMessage(m);

const firstSeen = new Set<string>();
const agents: AgentControlClient[] = [];

async function waitFor(pred: () => boolean, limitMs: number): Promise<boolean> {
  const end = Date.now() + limitMs;
  while (Date.now() < end) {
    if (pred()) return true;
    await new Promise((r) => setTimeout(r, 5));
  }
  return false;
}

async function start(): Promise<void> {
  for (let i = 0; i < input.names.length; i += input.wave) {
    const wave = input.names.slice(i, i + input.wave);
    for (const name of wave) {
      const a = new AgentControlClient({
        address: input.address, node: name, stateDir: join(input.dir, name), logger,
        hello: () => ({ wgPublicKey: '' }),
        apply: (s) => {
          firstSeen.add(name);
          post({ type: 'applied', name, version: s.version, at: now() });
        },
      });
      agents.push(a);
      a.start();
    }
    if (!(await waitFor(() => wave.every((n) => firstSeen.has(n)), input.waitMs))) {
      post({ type: 'connected', ok: false });
      return;
    }
  }
  post({ type: 'connected', ok: true });
}

port.on('message', (c: AgentsCommand) => {
  if (c.type === 'memory') {
    (globalThis as { gc?: () => void }).gc?.();
    post({ type: 'memory', heapUsed: process.memoryUsage().heapUsed });
  } else if (c.type === 'close') {
    void Promise.all(agents.map((a) => a.close())).then(() => post({ type: 'closed' }));
  }
});

void start();
