// The pure half of the WireGuard routes: parsing `ip -j route show proto 110` and planning
// tunnel routes and strict-mode guards.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { guardRoute, parseRoutes, planRoutes, routeDelArgs, routeReplaceArgs, tunnelRoute, type RouteEntry } from '../../agent/wireguard/routes.ts';

const IFACE = 'nodal-wg0';
const TIP = '10.99.0.1';

describe('wireguard route parsing', () => {
  it('reads iproute2 JSON (host routes without /32, metric 0 omitted, guards typed unreachable)', () => {
    // captured from iproute2 6.1 on a veth, as the agent sees it
    const v4 = '[{"dst":"10.98.2.0/24","dev":"nodal-wg0","scope":"link","prefsrc":"10.99.0.1","flags":[]},'
      + '{"type":"unreachable","dst":"10.98.2.0/24","metric":1,"flags":[]},{"dst":"10.99.0.2","dev":"nodal-wg0","scope":"link","flags":[]}]';
    assert.deepEqual(parseRoutes(v4, 4), [
      { kind: 'tunnel', family: 4, dst: '10.98.2.0/24', metric: 0, dev: IFACE, src: TIP },
      { kind: 'guard', family: 4, dst: '10.98.2.0/24', metric: 1 },
      { kind: 'tunnel', family: 4, dst: '10.99.0.2/32', metric: 0, dev: IFACE },
    ]);
    const v6 = '[{"type":"unreachable","dst":"fd00::/64","dev":"lo","metric":2,"flags":[],"pref":"medium"},{"dst":"fd00::/64","dev":"nodal-wg0","metric":1,"flags":[],"pref":"medium"}]';
    assert.deepEqual(parseRoutes(v6, 6), [
      { kind: 'guard', family: 6, dst: 'fd00::/64', metric: 2 },
      { kind: 'tunnel', family: 6, dst: 'fd00::/64', metric: 1, dev: IFACE },
    ]);
    assert.deepEqual(parseRoutes('', 4), []);
    assert.deepEqual(parseRoutes('[]', 6), []);
  });
});

describe('wireguard route plan', () => {
  const tunnels = ['10.99.0.2/32', '10.98.2.0/24'];

  it('from nothing: a guard and a tunnel route per prefix, guards first', () => {
    const plan = planRoutes([], tunnels, tunnels, IFACE, TIP);
    assert.deepEqual(plan.replace.map((r) => `${r.kind} ${r.dst} ${r.metric}`), [
      'guard 10.99.0.2/32 1', 'guard 10.98.2.0/24 1', 'tunnel 10.99.0.2/32 0', 'tunnel 10.98.2.0/24 0',
    ]);
    assert.deepEqual(plan.remove, []);
  });

  it('is a no-op when the table already matches', () => {
    const current = [...tunnels.map(guardRoute), ...tunnels.map((d) => tunnelRoute(d, IFACE, TIP))];
    assert.deepEqual(planRoutes(current, tunnels, tunnels, IFACE, TIP), { replace: [], remove: [] });
  });

  it('a departed peer loses its tunnel routes and keeps its guards', () => {
    const current = [...tunnels.map(guardRoute), ...tunnels.map((d) => tunnelRoute(d, IFACE, TIP))];
    const plan = planRoutes(current, [], tunnels, IFACE, TIP);
    assert.deepEqual(plan.replace, []);
    assert.deepEqual(plan.remove.map((r) => `${r.kind} ${r.dst}`), ['tunnel 10.99.0.2/32', 'tunnel 10.98.2.0/24']);
  });

  it('a route that replace overwrites is not deleted afterwards (changed tunnel address)', () => {
    const current: RouteEntry[] = [guardRoute('10.98.2.0/24'), tunnelRoute('10.98.2.0/24', IFACE, '10.99.0.7')];
    const plan = planRoutes(current, ['10.98.2.0/24'], ['10.98.2.0/24'], IFACE, TIP);
    assert.deepEqual(plan.replace, [tunnelRoute('10.98.2.0/24', IFACE, TIP)]);
    assert.deepEqual(plan.remove, []);
  });

  it('removes everything of ours when nothing is wanted (close with removeInterface)', () => {
    const current = [...tunnels.map(guardRoute), tunnelRoute('10.98.2.0/24', IFACE, TIP)];
    assert.equal(planRoutes(current, [], [], IFACE, TIP).remove.length, 3);
  });

  it('IPv6 metrics start at 1 (the kernel turns 0 into 1024); no IPv4 source hint on IPv6 routes', () => {
    const plan = planRoutes([], ['fd00:98:2::/64'], ['fd00:98:2::/64'], IFACE, TIP);
    assert.deepEqual(plan.replace, [
      { kind: 'guard', family: 6, dst: 'fd00:98:2::/64', metric: 2 },
      { kind: 'tunnel', family: 6, dst: 'fd00:98:2::/64', metric: 1, dev: IFACE },
    ]);
  });

  it('builds ip argv tagged with our route protocol', () => {
    assert.deepEqual(routeReplaceArgs(guardRoute('10.98.2.0/24')), ['-4', 'route', 'replace', 'unreachable', '10.98.2.0/24', 'proto', '110', 'metric', '1']);
    assert.deepEqual(routeReplaceArgs(tunnelRoute('10.98.2.0/24', IFACE, TIP)),
      ['-4', 'route', 'replace', '10.98.2.0/24', 'dev', IFACE, 'src', TIP, 'proto', '110', 'metric', '0']);
    assert.deepEqual(routeDelArgs(tunnelRoute('10.98.2.0/24', IFACE, TIP)), ['-4', 'route', 'del', '10.98.2.0/24', 'dev', IFACE, 'proto', '110', 'metric', '0']);
    assert.deepEqual(routeDelArgs(guardRoute('fd00::/64')), ['-6', 'route', 'del', 'unreachable', 'fd00::/64', 'proto', '110', 'metric', '2']);
  });
});
