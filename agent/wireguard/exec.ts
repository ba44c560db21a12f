// Running `ip` and `wg`: argv only (no shell), a timeout, and failures that name the
// command line and its stderr. Key material never travels on a command line: the private
// key is passed to `wg` as a file path.
import { execFile } from 'node:child_process';
import { WG_ERR, WireGuardError, type WireGuardErrorCode } from './errors.ts';

/* ip and wg answer in milliseconds; 10 s only trips on a wedged wireguard-go UAPI socket */
const COMMAND_TIMEOUT_MS = 10_000;

const INSTALL_HINT: Record<string, string> = {
  ip: 'install iproute2',
  wg: 'install wireguard-tools (apt-get install --no-install-recommends wireguard-tools)',
};

export interface CommandResult { stdout: string; stderr: string }

export class CommandFailure extends Error {
  readonly commandLine: string;
  readonly stderr: string;
  readonly exitCode: number | null;
  readonly missing: boolean;
  constructor(commandLine: string, stderr: string, exitCode: number | null, missing: boolean, cause?: unknown) {
    super(`${commandLine}: ${missing ? 'command not found' : stderr || `exit ${exitCode}`}`, cause === undefined ? undefined : { cause });
    this.commandLine = commandLine;
    this.stderr = stderr;
    this.exitCode = exitCode;
    this.missing = missing;
  }
}

/** run a command; rejects with CommandFailure (exit != 0, timeout, not installed) */
export function runCommand(cmd: string, args: readonly string[]): Promise<CommandResult> {
  const line = [cmd, ...args].join(' ');
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve({ stdout, stderr });
      const e = err as NodeJS.ErrnoException & { code?: unknown; killed?: boolean };
      const missing = e.code === 'ENOENT';
      const exitCode = typeof e.code === 'number' ? e.code : null;
      // a string code is a spawn failure (EACCES, E2BIG...), not an exit status
      const why = e.killed ? `timed out after ${COMMAND_TIMEOUT_MS} ms`
        : typeof e.code === 'string' ? `cannot run it: ${e.code}` : stderr.trim();
      reject(new CommandFailure(line, why, exitCode, missing, err));
    });
  });
}

/** run a command and turn a failure into a WireGuardError with the given code */
export async function must(code: WireGuardErrorCode, what: string, cmd: string, args: readonly string[]): Promise<string> {
  try {
    return (await runCommand(cmd, args)).stdout;
  } catch (err) {
    throw toWireGuardError(code, what, err);
  }
}

export function toWireGuardError(code: WireGuardErrorCode, what: string, err: unknown): WireGuardError {
  if (err instanceof WireGuardError) return err;
  if (err instanceof CommandFailure) {
    const cmd = err.commandLine.split(' ')[0] ?? '';
    if (err.missing) {
      return new WireGuardError(WG_ERR.TOOLS_MISSING, `${what}: ${cmd} is not installed: ${INSTALL_HINT[cmd] ?? `install ${cmd}`}`, {
        command: err.commandLine, cause: err,
      });
    }
    return new WireGuardError(code, `${what}: \`${err.commandLine}\` failed: ${err.stderr || `exit ${err.exitCode}`}`, {
      command: err.commandLine, stderr: err.stderr, cause: err,
    });
  }
  return new WireGuardError(code, `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}
