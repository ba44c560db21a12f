// How the destination proxy treats a port, from the Service's appProtocol. One rule for
// the proxy (agent/proxy/inbound.ts) and for `nodal policy check` (control/admin).

export type DeclaredProtocol = 'http1' | 'opaque' | 'detect';

/** Service appProtocol → how the destination treats the port */
export function declaredProtocol(appProtocol: string | undefined): DeclaredProtocol {
  if (appProtocol === undefined || appProtocol === '') return 'detect';
  const p = appProtocol.toLowerCase();
  if (p === 'http' || p === 'http1' || p === 'http/1.1') return 'http1';
  // tcp, tls, https, grpc, http2, kubernetes.io/h2c ...: no HTTP/1.1 parser can read them;
  // HTTP/2 at L7 is not implemented yet, so they are opaque with an L4 decision
  return 'opaque';
}
