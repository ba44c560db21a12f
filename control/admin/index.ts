// control/admin: the operators' API of the control plane (nodal.v1.Admin on a unix
// socket): Status (the cluster and every agent's own report) and Explain (the verdict the
// mesh would give one connection, and what decides it). `nodal status` and
// `nodal policy check` reach the control plane only through here.
export { startAdminServer } from './server.ts';
export type { AdminServer, AdminServerOptions, AdminLogger } from './server.ts';
export { adminClient, adminService } from './proto.ts';
export type { AdminClient } from './proto.ts';
export { explain, declaredProtocol } from './explain.ts';
export type { ExplainModel } from './explain.ts';
export { clusterStatus, fetchReport, AGENT_HEALTH_PORT, DEFAULT_AGENT_TIMEOUT_MS } from './status.ts';
export type { StatusOptions } from './status.ts';
export { closeMatches } from './resolve.ts';
export { ExplainError, AdminBindError, AdminErrorCode } from './errors.ts';
export type * from './types.ts';

/** the admin socket beside the relay's: /x/relay.sock → /x/control.sock */
export const ADMIN_SOCKET_NAME = 'control.sock';
export const DEFAULT_ADMIN_SOCKET = '/run/nodal/control.sock';
