// Errors from the native addon. Every error names its operation, keeps the errno and
// carries a hint where one helps; callers and tests match on `code`, never on text.
import { constants } from 'node:os';

export type BpfErrorCode =
  | 'NODAL_ERR_BPF_OPEN'
  | 'NODAL_ERR_BPF_LOAD'
  | 'NODAL_ERR_BPF_ATTACH'
  | 'NODAL_ERR_BPF_PIN'
  | 'NODAL_ERR_BPF_MAP'
  | 'NODAL_ERR_BPF_ARG'
  | 'NODAL_ERR_NETNS'
  | 'NODAL_ERR_PERMISSION'
  | 'NODAL_ERR_NATIVE_MISSING';

export interface BpfErrorInit {
  code: BpfErrorCode;
  errno: number;
  op: string;
  /** replaces the errno name in the message when the errno alone would mislead */
  detail?: string;
  hint?: string;
  verifierLog?: string;
}

export class BpfError extends Error {
  readonly code: BpfErrorCode;
  readonly errno: number;
  readonly op: string;
  readonly hint?: string;
  readonly verifierLog?: string;

  constructor(init: BpfErrorInit) {
    const what = init.detail ?? errnoName(init.errno);
    super(`${init.op}: ${what}${init.hint ? ` (${init.hint})` : ''}`);
    this.name = 'BpfError';
    this.code = init.code;
    this.errno = init.errno;
    this.op = init.op;
    if (init.hint !== undefined) this.hint = init.hint;
    if (init.verifierLog !== undefined) this.verifierLog = init.verifierLog;
  }
}

export const EPERM = 1;
export const ENOENT = 2;
export const EACCES = 13;
export const EINVAL = 22;
/** the kernel's own "not supported"; not in user-space errno.h */
export const ENOTSUPP = 524;

// libbpf's private codes (libbpf.h, enum libbpf_errno), returned negated like errnos
const LIBBPF_ERRNO_START = 4000;
const LIBBPF_ERRNOS = [
  'LIBELF', 'FORMAT', 'KVERSION', 'ENDIAN', 'INTERNAL', 'RELOC', 'LOAD', 'VERIFY',
  'PROG2BIG', 'KVER', 'PROGTYPE', 'WRNGPID', 'INVSEQ', 'NLPARSE',
];

const errnoNames = new Map<number, string>();
// aliases share a number; the names the kernel documents win
for (const [name, n] of [['EOPNOTSUPP', 95], ['EAGAIN', 11], ['EDEADLK', 35]] as const) errnoNames.set(n, name);
for (const [name, n] of Object.entries(constants.errno)) if (!errnoNames.has(n)) errnoNames.set(n, name);
errnoNames.set(ENOTSUPP, 'ENOTSUPP');
LIBBPF_ERRNOS.forEach((name, i) => errnoNames.set(LIBBPF_ERRNO_START + i, `LIBBPF_ERRNO__${name}`));

export function errnoName(errno: number): string {
  return errnoNames.get(Math.abs(errno)) ?? `errno ${Math.abs(errno)}`;
}

/** what the addon reports; `kind` says which operation family failed */
export type NativeErrorKind = 'open' | 'load' | 'attach' | 'pin' | 'map' | 'arg' | 'netns';

export interface NativeErrorInfo {
  kind: NativeErrorKind;
  op: string;
  errno: number;
  detail?: string;
  hint?: string;
  verifierLog?: string;
}

const KIND_CODES: Record<NativeErrorKind, BpfErrorCode> = {
  open: 'NODAL_ERR_BPF_OPEN',
  load: 'NODAL_ERR_BPF_LOAD',
  attach: 'NODAL_ERR_BPF_ATTACH',
  pin: 'NODAL_ERR_BPF_PIN',
  map: 'NODAL_ERR_BPF_MAP',
  arg: 'NODAL_ERR_BPF_ARG',
  netns: 'NODAL_ERR_NETNS',
};

const PERMISSION_HINT = 'needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)';
const NOT_SUPPORTED_HINT = 'not supported by this kernel for this map or program type';

function defaultHint(kind: NativeErrorKind, name: string, verifierLog: string | undefined): string | undefined {
  if (kind === 'load' && verifierLog && (name === 'EACCES' || name === 'EINVAL' || name === 'E2BIG')) {
    const reason = verifierReason(verifierLog);
    return reason ? `rejected by the verifier: ${reason}` : 'rejected by the verifier; see verifierLog';
  }
  if (name === 'EPERM' || name === 'EACCES') return PERMISSION_HINT;
  if (name === 'ENOTSUPP' || name === 'EOPNOTSUPP') return NOT_SUPPORTED_HINT;
  switch (kind) {
    case 'open':
      if (name === 'ENOENT') return 'object file not found: run make build';
      if (name === 'EINVAL' || name.startsWith('LIBBPF_ERRNO__')) return 'not a valid BPF ELF object';
      return undefined;
    case 'attach':
      if (name === 'ENOENT' || name === 'ENOTDIR') return 'cgroup does not exist';
      if (name === 'EBADF') return 'not a cgroup2 directory';
      if (name === 'EINVAL') return 'program type does not match this attach point?';
      return undefined;
    case 'pin':
      if (name === 'ENOENT') return 'nothing pinned at that path';
      if (name === 'EEXIST') return 'something is already pinned at that path';
      if (name === 'EXDEV') return 'path is not on a bpffs mount';
      return undefined;
    case 'map':
      if (name === 'E2BIG' || name === 'ENOSPC') return 'map is full';
      if (name === 'EEXIST') return 'key exists (BPF_NOEXIST)';
      if (name === 'ENOENT') return 'key absent (BPF_EXIST)';
      return undefined;
    case 'netns':
      if (name === 'ENOENT') return 'network namespace does not exist';
      if (name === 'EADDRINUSE') return 'address already in use in that namespace';
      return undefined;
    case 'load':
      if (name === 'ENOMEM') return 'memlock limit too low?';
      return undefined;
    default:
      return undefined;
  }
}

/**
 * The verifier's own complaint: the last line of a program's load log before its
 * "processed N insns" summary.
 */
export function verifierReason(log: string): string | undefined {
  const begin = log.lastIndexOf('-- BEGIN PROG LOAD LOG --');
  const end = log.indexOf('-- END PROG LOAD LOG --', begin);
  if (begin < 0 || end < 0) return undefined;
  const lines = log.slice(begin, end).split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const summary = lines.findIndex((l) => l.startsWith('processed '));
  const line = summary > 0 ? lines[summary - 1] : lines.at(-1);
  return line && !line.startsWith('-- BEGIN') ? line : undefined;
}

/** the single place errno + operation family become a code and a hint */
export function fromNative(info: NativeErrorInfo): BpfError {
  const errno = Math.abs(info.errno);
  const name = errnoName(errno);
  let code = KIND_CODES[info.kind];
  // a verifier rejection is EACCES too; only the kernel's refusal to let us in is a permission problem
  const verifierRejection = info.kind === 'load' && name === 'EACCES' && !!info.verifierLog;
  if ((name === 'EPERM' || name === 'EACCES') && info.kind !== 'arg' && !verifierRejection) code = 'NODAL_ERR_PERMISSION';
  const init: BpfErrorInit = { code, errno, op: info.op };
  if (info.detail) init.detail = info.detail;
  const hint = info.hint || defaultHint(info.kind, name, info.verifierLog);
  if (hint) init.hint = hint;
  if (info.verifierLog !== undefined) init.verifierLog = info.verifierLog;
  return new BpfError(init);
}

export function argError(op: string, detail: string): BpfError {
  return new BpfError({ code: 'NODAL_ERR_BPF_ARG', errno: EINVAL, op, detail });
}
