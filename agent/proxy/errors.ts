// Errors the proxy throws (start-up, configuration). Per-connection failures are not
// thrown: they become ERROR/DROPPED flows, because one bad connection must not stop others.

export type ProxyErrorCode =
  /** a listener could not bind; the message names the address */
  | 'NODAL_ERR_PROXY_BIND'
  /** start options that cannot work (bad address, missing callback) */
  | 'NODAL_ERR_PROXY_CONFIG'
  /** used after close() */
  | 'NODAL_ERR_PROXY_CLOSED'
  /** a proxy worker thread could not start (it exited, or threw before listening) */
  | 'NODAL_ERR_PROXY_WORKER';

/**
 * The errno code of a socket error when there is one (ECONNREFUSED says more than a
 * message), taken from the root cause: a tunnel stream fails with ERR_HTTP2_STREAM_CANCEL
 * whose cause is the session's connect error, and the cause is what an operator needs.
 */
export function errorText(err: unknown): string {
  let e = err as (NodeJS.ErrnoException & { cause?: unknown }) | undefined;
  for (let depth = 0; depth < 4 && e?.cause instanceof Error; depth++) e = e.cause as NodeJS.ErrnoException;
  return e?.code ?? e?.message ?? String(err);
}

export class ProxyError extends Error {
  readonly code: ProxyErrorCode;

  constructor(code: ProxyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ProxyError';
    this.code = code;
  }
}
