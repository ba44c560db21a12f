// Errors of the WireGuard part: one class, stable codes that tests and callers match on,
// and a message that names the failing command and what it printed on stderr.

export const WG_ERR = {
  /** creating, adopting or configuring the interface failed */
  SETUP: 'NODAL_ERR_WG_SETUP',
  /** reading, creating or validating the private key failed */
  KEY: 'NODAL_ERR_WG_KEY',
  /** a peer list that cannot be applied (bad key, address, duplicate) or a failed apply */
  PEERS: 'NODAL_ERR_WG_PEERS',
  /** reading the interface state failed */
  STATUS: 'NODAL_ERR_WG_STATUS',
  /** userspace mode needs wireguard-go and it is not installed */
  USERSPACE_MISSING: 'NODAL_ERR_WG_USERSPACE_MISSING',
  /** `wg` (wireguard-tools) or `ip` (iproute2) is not installed */
  TOOLS_MISSING: 'NODAL_ERR_WG_TOOLS_MISSING',
  /** the object was used after close() */
  CLOSED: 'NODAL_ERR_WG_CLOSED',
} as const;

export type WireGuardErrorCode = (typeof WG_ERR)[keyof typeof WG_ERR];

export class WireGuardError extends Error {
  readonly code: WireGuardErrorCode;
  /** the command line that failed, when a command failed (never holds key material) */
  readonly command: string | undefined;
  /** what that command printed on stderr */
  readonly stderr: string | undefined;

  constructor(code: WireGuardErrorCode, message: string, opts: { command?: string; stderr?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'WireGuardError';
    this.code = code;
    this.command = opts.command;
    this.stderr = opts.stderr;
  }
}
