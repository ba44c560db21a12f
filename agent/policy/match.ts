// String matching the way Istio's AuthorizationPolicy spells it, so a MeshPolicy reads and
// behaves like the AuthorizationPolicy a user already knows.

/**
 * Istio value syntax: `*` (any non-empty value: presence), `prefix*`, `*suffix`, or exact.
 * Nothing else is a wildcard: `/a/*\/b` is matched literally, as in Istio.
 */
export function matchValue(pattern: string, value: string): boolean {
  if (pattern === '*') return value.length > 0;
  if (pattern.length > 1 && pattern.endsWith('*')) return value.startsWith(pattern.slice(0, -1));
  if (pattern.length > 1 && pattern.startsWith('*')) return value.endsWith(pattern.slice(1));
  return pattern === value;
}

export function matchAny(patterns: readonly string[], value: string | undefined): boolean {
  if (value === undefined) return false;
  for (const p of patterns) if (matchValue(p, value)) return true;
  return false;
}

/**
 * Hosts compare case-insensitively; a pattern without a port also matches the host with
 * its port (`example.com` matches `example.com:8080`), because clients add the port to the
 * Host header for non-default ports and users rarely write it in policy.
 */
export function matchHost(patterns: readonly string[], host: string | undefined): boolean {
  if (host === undefined || host === '') return false;
  const h = host.toLowerCase();
  const bare = stripPort(h);
  for (const raw of patterns) {
    const p = raw.toLowerCase();
    if (matchValue(p, h)) return true;
    if (bare !== h && matchValue(p, bare)) return true;
  }
  return false;
}

function stripPort(host: string): string {
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    return end < 0 ? host : host.slice(0, end + 1);
  }
  const colon = host.lastIndexOf(':');
  // more than one colon without brackets is a bare IPv6 address, not host:port
  if (colon < 0 || host.indexOf(':') !== colon) return host;
  return host.slice(0, colon);
}
