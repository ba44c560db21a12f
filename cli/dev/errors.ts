// Errors of the sandbox, with stable codes so tests and callers match on the code, never
// on the wording. Every message says what failed and, where one helps, what to do next.

export const SandboxErrorCode = {
  /** a manifest is malformed or names something the sandbox cannot run */
  MANIFEST: 'NODAL_ERR_SANDBOX_MANIFEST',
  /** something the sandbox needs is missing on this machine */
  PREREQ: 'NODAL_ERR_SANDBOX_PREREQ',
  /** a sandbox (or its leftovers) already exists */
  EXISTS: 'NODAL_ERR_SANDBOX_EXISTS',
  /** the command needs a sandbox and there is none */
  NOT_UP: 'NODAL_ERR_SANDBOX_NOT_UP',
  /** a control plane or agent did not come up */
  NOT_READY: 'NODAL_ERR_SANDBOX_NOT_READY',
  /** a system command (ip, nsenter, ...) failed */
  COMMAND: 'NODAL_ERR_SANDBOX_COMMAND',
  /** a pod cannot be placed: unknown node, address taken, pool exhausted */
  SCHEDULE: 'NODAL_ERR_SANDBOX_SCHEDULE',
  /** another nodal dev command holds the sandbox lock */
  BUSY: 'NODAL_ERR_SANDBOX_BUSY',
  /** no such pod / object */
  NOT_FOUND: 'NODAL_ERR_SANDBOX_NOT_FOUND',
} as const;
export type SandboxErrorCode = (typeof SandboxErrorCode)[keyof typeof SandboxErrorCode];

export class SandboxError extends Error {
  readonly code: SandboxErrorCode;
  constructor(code: SandboxErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SandboxError';
    this.code = code;
  }
}

/** every problem found in a batch of manifests, reported together */
export class ManifestError extends SandboxError {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(SandboxErrorCode.MANIFEST, problems.length === 1
      ? problems[0]!
      : `${problems.length} problems in the manifests:\n  ${problems.join('\n  ')}`);
    this.name = 'ManifestError';
    this.problems = problems;
  }
}
