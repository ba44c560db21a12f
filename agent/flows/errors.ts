// Errors of the flow subsystem, as classes with stable codes: callers and tests match on
// `code`, never on message text. Each message names the operation and keeps the cause.

/** a FlowFilter that cannot be compiled (bad CIDR, regex, status code, selector, ...) */
export class FlowFilterError extends Error {
  readonly code = 'NODAL_ERR_FLOW_FILTER_INVALID';
  /** the FlowFilter field at fault, e.g. http_path */
  readonly field: string;
  constructor(field: string, message: string, options?: { cause?: unknown }) {
    super(`flow filter ${field}: ${message}`, options);
    this.name = 'FlowFilterError';
    this.field = field;
  }
}

/** an Observer listener (TCP or unix socket) could not be bound */
export class ObserverBindError extends Error {
  readonly code = 'NODAL_ERR_OBSERVER_BIND';
  readonly address: string;
  constructor(address: string, message: string, options?: { cause?: unknown }) {
    super(`observer bind ${address}: ${message}`, options);
    this.name = 'ObserverBindError';
    this.address = address;
  }
}

/** the .proto files cannot be found or parsed */
export class FlowProtoError extends Error {
  readonly code = 'NODAL_ERR_FLOW_PROTO';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FlowProtoError';
  }
}

/** a JSON flow (from --input-file or a fixture) does not decode */
export class FlowJsonError extends Error {
  readonly code = 'NODAL_ERR_FLOW_JSON';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FlowJsonError';
  }
}
