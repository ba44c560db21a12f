// How the proxy treats a port, from the Service's appProtocol. One rule for the proxy
// (agent/proxy: the source side chooses its parser by it, the destination its L4/L7 path)
// and for `nodal policy check` (control/admin).

export type DeclaredProtocol = 'http1' | 'h2' | 'opaque' | 'detect';

/** Service appProtocol → how the proxy treats the port */
export function declaredProtocol(appProtocol: string | undefined): DeclaredProtocol {
  if (appProtocol === undefined || appProtocol === '') return 'detect';
  const p = appProtocol.toLowerCase();
  if (p === 'http' || p === 'http1' || p === 'http/1.1') return 'http1';
  // HTTP/2 without TLS (prior knowledge): gRPC, h2c and the Kubernetes standard name
  if (p === 'grpc' || p === 'h2c' || p === 'http2' || p === 'kubernetes.io/h2c') return 'h2';
  // tcp, tls, https, kubernetes.io/ws(s), mysql ...: no HTTP parser can read them (TLS is
  // end to end; the proxy never terminates the application's TLS), so one L4 decision
  return 'opaque';
}
