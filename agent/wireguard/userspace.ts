// wireguard-go, when the kernel has no WireGuard: a supervised child in the foreground
// (`wireguard-go -f <iface>`). It creates the tun device and serves its UAPI socket at the
// fixed path /var/run/wireguard/<iface>.sock, which `wg` finds on its own: this process
// must run in the node's own mount namespace (or run directory) so that path is per node.
// If the child exits unexpectedly its tun device and routes vanish (the strict-mode
// guards keep cross-node traffic from leaking meanwhile); it is restarted with backoff and
// the owner re-applies the whole configuration through onRestart.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { WG_ERR, WireGuardError } from './errors.ts';
import { readLink } from './link.ts';

export const WIREGUARD_GO = 'wireguard-go';
export const UAPI_DIR = '/var/run/wireguard';
/* wireguard-go opens its socket within a few ms; 5 s allows for a loaded CI machine */
const READY_TIMEOUT_MS = 5_000;
const POLL_MS = 20;
/* SIGTERM makes wireguard-go close the device; after this we stop asking */
const STOP_TIMEOUT_MS = 3_000;
/* restart backoff: quick first retry, capped so a broken install logs every 5 s, not in a loop */
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5_000;
/* a child that lived this long was healthy: the next failure starts the backoff over */
const HEALTHY_AFTER_MS = 30_000;
/* stderr kept to explain an exit */
const STDERR_TAIL = 2_048;

export const uapiSocketPath = (iface: string): string => join(UAPI_DIR, `${iface}.sock`);

export class UserspaceDevice {
  readonly iface: string;
  private readonly logger: Logger;
  private readonly onRestart: () => Promise<void>;
  private child: ChildProcess | undefined;
  private stopping = false;
  private backoffMs = BACKOFF_MIN_MS;
  private restartTimer: NodeJS.Timeout | undefined;
  private stderrTail = '';
  /** children killed on purpose, whose exit must not trigger a restart */
  private readonly retired = new WeakSet<ChildProcess>();
  /** how many times the supervisor restarted wireguard-go */
  private restarts = 0;

  private constructor(iface: string, logger: Logger, onRestart: () => Promise<void>) {
    this.iface = iface;
    this.logger = logger.child({ daemon: 'wireguard-go' });
    this.onRestart = onRestart;
  }

  /** start wireguard-go and resolve once its tun device and UAPI socket exist */
  static async start(iface: string, logger: Logger, onRestart: () => Promise<void>): Promise<UserspaceDevice> {
    const dev = new UserspaceDevice(iface, logger, onRestart);
    await dev.spawnOnce();
    return dev;
  }

  private async spawnOnce(): Promise<void> {
    // a socket left by a dead daemon would look ready before the new one binds
    try { unlinkSync(uapiSocketPath(this.iface)); } catch { /* none */ }
    this.stderrTail = '';
    const child = spawn(WIREGUARD_GO, ['-f', this.iface], {
      stdio: ['ignore', 'pipe', 'pipe'],
      // errors only: its debug level narrates every UAPI call
      env: { ...process.env, LOG_LEVEL: 'error', WG_PROCESS_FOREGROUND: '1' },
    });
    this.child = child;
    const startedAt = Date.now();
    let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let readyResolved = false;
    let spawnError: NodeJS.ErrnoException | undefined;
    child.on('error', (err: NodeJS.ErrnoException) => { spawnError = err; });
    const onLine = (stream: 'stdout' | 'stderr') => (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      if (stream === 'stderr') this.stderrTail = (this.stderrTail + text).slice(-STDERR_TAIL);
      for (const line of text.split('\n')) {
        const l = line.trim();
        // the box-drawn "you could use the kernel module" banner is noise here
        if (!l || /^[┌│└]/.test(l)) continue;
        this.logger.warn({ stream, line: l }, 'wireguard-go says');
      }
    };
    child.stdout?.on('data', onLine('stdout'));
    child.stderr?.on('data', onLine('stderr'));
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      if (this.child === child) this.child = undefined;
      // start-up failures are reported by spawnOnce's caller; retired children were killed on purpose
      if (this.stopping || !readyResolved || this.retired.has(child)) return;
      this.logger.error({ code, signal, daemonPid: child.pid, stderr: this.stderrTail.trim(), ranMs: Date.now() - startedAt },
        'wireguard-go exited unexpectedly: restarting it');
      if (Date.now() - startedAt > HEALTHY_AFTER_MS) this.backoffMs = BACKOFF_MIN_MS;
      this.scheduleRestart();
    });

    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (spawnError) {
        if (spawnError.code === 'ENOENT') {
          throw new WireGuardError(WG_ERR.USERSPACE_MISSING,
            'the kernel has no WireGuard and wireguard-go is not installed (not found on PATH): install wireguard-go (apt-get install wireguard-go) or load the wireguard kernel module');
        }
        throw new WireGuardError(WG_ERR.SETUP, `cannot start \`${WIREGUARD_GO} -f ${this.iface}\`: ${spawnError.message}`, { command: `${WIREGUARD_GO} -f ${this.iface}`, cause: spawnError });
      }
      if (exited) {
        throw new WireGuardError(WG_ERR.SETUP,
          `\`${WIREGUARD_GO} -f ${this.iface}\` exited during start-up (${exited.signal ?? `exit ${exited.code}`}): ${this.stderrTail.trim() || 'no output'}`,
          { command: `${WIREGUARD_GO} -f ${this.iface}`, stderr: this.stderrTail.trim() });
      }
      if (socketExists(uapiSocketPath(this.iface)) && (await readLink(this.iface)) !== undefined) break;
      if (Date.now() > deadline) {
        await this.retire(child);
        throw new WireGuardError(WG_ERR.SETUP,
          `\`${WIREGUARD_GO} -f ${this.iface}\` did not open ${uapiSocketPath(this.iface)} within ${READY_TIMEOUT_MS} ms: ${this.stderrTail.trim() || 'no output'}`,
          { command: `${WIREGUARD_GO} -f ${this.iface}`, stderr: this.stderrTail.trim() });
      }
      await sleep(POLL_MS);
    }
    if (exited) {
      throw new WireGuardError(WG_ERR.SETUP, `\`${WIREGUARD_GO} -f ${this.iface}\` exited right after start-up: ${this.stderrTail.trim() || 'no output'}`,
        { command: `${WIREGUARD_GO} -f ${this.iface}`, stderr: this.stderrTail.trim() });
    }
    readyResolved = true;
    this.logger.info({ daemonPid: child.pid, socket: uapiSocketPath(this.iface) }, 'wireguard-go is up');
  }

  private scheduleRestart(): void {
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopping) return;
      this.spawnOnce()
        .then(async () => {
          this.restarts++;
          await this.onRestart();
          this.logger.info({ restarts: this.restarts }, 'wireguard-go restarted and reconfigured');
        })
        .catch((err: unknown) => {
          if (this.stopping) return;
          this.logger.error({ err: (err as Error).message, code: (err as WireGuardError).code, retryInMs: this.backoffMs },
            'restarting wireguard-go failed');
          // the child may still be running (reconfigure failed): replace it
          const child = this.child;
          void (child ? this.retire(child) : Promise.resolve()).then(() => {
            if (!this.stopping) this.scheduleRestart();
          });
        });
    }, delay);
  }

  /** stop supervising and terminate wireguard-go; its tun device goes with it */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.child) await this.retire(this.child);
  }

  /** terminate one child on purpose: SIGTERM (wireguard-go closes the device), then SIGKILL */
  private async retire(child: ChildProcess): Promise<void> {
    this.retired.add(child);
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await gone;
    clearTimeout(timer);
  }
}

function socketExists(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}

export interface TunHolder { pid: number; comm: string }

/**
 * Processes in THIS network namespace holding the tun device `iface` open: an earlier
 * run's wireguard-go that outlived its agent (its socket may live in another mount
 * namespace, so we look at /proc, where tun fds say `iff: <name>` in their fdinfo).
 */
export function findTunHolders(iface: string): TunHolder[] {
  const ownNet = netnsOf('self');
  const out: TunHolder[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      if (netnsOf(entry) !== ownNet) continue;
      const fdDir = `/proc/${entry}/fd`;
      for (const fd of readdirSync(fdDir)) {
        if (readlinkSync(join(fdDir, fd)) !== '/dev/net/tun') continue;
        const info = readFileSync(`/proc/${entry}/fdinfo/${fd}`, 'utf8');
        if (info.split('\n').some((l) => l.replace(/\s+/g, ' ').trim() === `iff: ${iface}`)) {
          out.push({ pid, comm: readFileSync(`/proc/${entry}/comm`, 'utf8').trim() });
          break;
        }
      }
    } catch {
      // the process went away or is not ours to read
    }
  }
  return out;
}

function netnsOf(pid: string): string {
  return readlinkSync(`/proc/${pid}/ns/net`);
}

/**
 * Stop a wireguard-go left over from an earlier run so a supervised one can take the
 * device. Only wireguard-go is stopped; anything else holding the device is an error.
 */
export async function evictStaleDaemon(iface: string, logger: Logger): Promise<void> {
  const holders = findTunHolders(iface);
  const foreign = holders.filter((h) => h.comm !== WIREGUARD_GO);
  if (foreign.length > 0) {
    throw new WireGuardError(WG_ERR.SETUP,
      `tun device ${iface} is held by ${foreign.map((h) => `${h.comm} (pid ${h.pid})`).join(', ')}, not by wireguard-go: stop it or choose another interface name`);
  }
  for (const h of holders) {
    logger.warn({ daemonPid: h.pid, iface }, 'replacing a wireguard-go left over from an earlier run (the guards drop cross-node traffic meanwhile)');
    try { process.kill(h.pid, 'SIGTERM'); } catch { /* already gone */ }
  }
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while ((await readLink(iface)) !== undefined) {
    if (Date.now() > deadline) {
      for (const h of holders) { try { process.kill(h.pid, 'SIGKILL'); } catch { /* gone */ } }
      await sleep(100);
      if ((await readLink(iface)) === undefined) break;
      throw new WireGuardError(WG_ERR.SETUP, `tun device ${iface} still exists after stopping its wireguard-go; remove it (ip link del ${iface})`);
    }
    await sleep(POLL_MS);
  }
}
