// Errors of the admin API, with stable codes: callers and tests match on `code`.

export const AdminErrorCode = {
  /** a pod or Service named in a request does not exist (suggestions say what does) */
  NOT_FOUND: 'NODAL_ERR_EXPLAIN_NOT_FOUND',
  /** a request field is malformed (not ns/name, port out of range, ...) */
  INVALID: 'NODAL_ERR_EXPLAIN_INVALID',
  /** the admin socket could not be bound */
  BIND: 'NODAL_ERR_ADMIN_BIND',
} as const;
export type AdminErrorCode = (typeof AdminErrorCode)[keyof typeof AdminErrorCode];

/** a request the admin API cannot answer as asked; the message says what to ask instead */
export class ExplainError extends Error {
  readonly code: AdminErrorCode;
  /** close matches for a name that does not exist, ns/name */
  readonly suggestions: string[];
  constructor(code: AdminErrorCode, message: string, suggestions: string[] = []) {
    super(message);
    this.name = 'ExplainError';
    this.code = code;
    this.suggestions = suggestions;
  }
}

export class AdminBindError extends Error {
  readonly code = AdminErrorCode.BIND;
  constructor(address: string, message: string, options?: { cause?: unknown }) {
    super(`admin bind ${address}: ${message}`, options);
    this.name = 'AdminBindError';
  }
}
