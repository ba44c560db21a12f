// Errors of the control plane, as classes with stable codes so callers and tests match
// on `code`, never on message text.

/** one rejected YAML document (or a whole file that does not parse) */
export class ConfigError extends Error {
  readonly code = 'NODAL_ERR_CONFIG_INVALID';
  /** the file, relative to the watched directory's parent as the operator named it */
  readonly file: string;
  /** `Kind namespace/name`, `Kind name` or `document N` when the name is unknown */
  readonly object: string | undefined;
  /** the field path inside the document, e.g. spec.rules[0].to[0].operation.ports[0] */
  readonly field: string | undefined;
  /** what is wrong with the field, without the location prefix */
  readonly reason: string;

  constructor(file: string, object: string | undefined, field: string | undefined, reason: string) {
    super([file, object, field, reason].filter((p) => p !== undefined && p !== '').join(': '));
    this.name = 'ConfigError';
    this.file = file;
    this.object = object;
    this.field = field;
    this.reason = reason;
  }

  /** status output and the relay serialize errors as JSON; Error's own fields are not enumerable */
  toJSON(): { code: string; file: string; object?: string; field?: string; message: string } {
    return {
      code: this.code, file: this.file,
      ...(this.object !== undefined ? { object: this.object } : {}),
      ...(this.field !== undefined ? { field: this.field } : {}),
      message: this.message,
    };
  }
}

/** the watched directory cannot be read at start-up */
export class ConfigSourceError extends Error {
  readonly code = 'NODAL_ERR_CONFIG_SOURCE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ConfigSourceError';
  }
}

/** the state directory (ids, versions, node keys, the agent's last snapshot) cannot be used */
export class StateError extends Error {
  readonly code = 'NODAL_ERR_CONTROL_STATE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StateError';
  }
}

/** a snapshot on the wire does not decode into the model */
export class SnapshotDecodeError extends Error {
  readonly code = 'NODAL_ERR_SNAPSHOT_DECODE';
  constructor(message: string) {
    super(message);
    this.name = 'SnapshotDecodeError';
  }
}

/** the gRPC listener could not bind */
export class ControlListenError extends Error {
  readonly code = 'NODAL_ERR_CONTROL_LISTEN';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ControlListenError';
  }
}
