// The destination side of a connection (not a request) for a local pod: a CONNECT stream
// from a peer node, or a socket handed over in-process by this node's outbound side. HTTP/1.1
// found in it goes to the L7 handler (per-request policy, through Destination); anything
// else is opaque TCP with one L4 decision, then bytes are piped to the pod from the proxy
// address. Requests that arrive as requests (tunnel streams, the source side's L7 path) go
// to Destination directly.

import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { describeDecision, type Decision } from '../policy/index.ts';
import type { FlowVerdict } from '../flows/flow.ts';
import type { InboundConn, ProxyContext } from './context.ts';
import { errorText } from './errors.ts';
import { applyDecision, newFlow } from './flows.ts';
import { Destination, l4Input } from './destination.ts';
import { ReservedIdentity } from '../../control/api/types.ts';
import { HttpIngress } from './http.ts';
import { abort, DETECT_WAIT_MS, sniff, splice } from './stream.ts';
import type { MeshView } from './view.ts';

import { declaredProtocol } from '../policy/index.ts';

export class Inbound {
  private readonly ctx: ProxyContext;
  readonly destination: Destination;
  private readonly http: HttpIngress;
  /** open pooled streams (mesh.ts) and what each was accepted as: a new snapshot checks them again */
  private readonly pooled = new Map<Duplex, InboundConn>();

  constructor(ctx: ProxyContext) {
    this.ctx = ctx;
    this.destination = new Destination(ctx);
    this.http = new HttpIngress(ctx, this.destination);
  }

  /**
   * The L4 decision before the connection is accepted, taken only when the port is declared
   * opaque (then nothing later could change it): a denial can then be answered as a refusal
   * (403 on the tunnel, a reset locally) instead of an accepted-then-closed connection.
   * Emits the DROPPED flow itself; undefined means "decide after detection".
   */
  preflight(conn: InboundConn): Decision | undefined {
    if (declaredProtocol(conn.appProtocol) !== 'opaque') return undefined;
    const d = this.decideL4(conn);
    if (!d.allowed) this.emitL4(conn, 'DROPPED', d);
    return d;
  }

  serve(down: Duplex, conn: InboundConn, early?: Decision): void {
    this.ctx.track(down, 'inbound');
    const declared = declaredProtocol(conn.appProtocol);
    // the source proxy's requests are HTTP/1.1 whatever the port declares: it parsed them
    if (conn.pooled) {
      this.pooled.set(down, conn);
      down.once('close', () => this.pooled.delete(down));
      this.http.servePooled(down, conn);
    } else if (declared === 'http1') {
      this.http.attach(down, conn);
    } else if (declared === 'opaque') {
      this.opaque(down, conn, early);
    } else {
      sniff(down, DETECT_WAIT_MS, (proto) => {
        if (down.destroyed) return;
        if (proto === 'http1') this.http.attach(down, conn);
        else this.opaque(down, conn, undefined);
      });
    }
  }

  /**
   * After a new snapshot. A pooled stream was accepted once, for one source identity on its
   * peer node and one local pod, and every request on it keeps both. The streams the view
   * no longer backs are closed: the peer is gone, the identity no longer runs on it, or the
   * pod's address now names another pod (or the pod another identity). The source's next
   * requests open new streams, checked afresh; the rest stay open.
   */
  recheckPooled(view: MeshView): number {
    let closed = 0;
    for (const [down, conn] of this.pooled) {
      if (stillBacked(view, conn)) continue;
      this.pooled.delete(down);
      down.destroy();
      closed++;
    }
    return closed;
  }

  close(): void {
    this.http.close();
    this.destination.close();
  }

  private decideL4(conn: InboundConn): Decision {
    return this.destination.decide(conn).decision;
  }

  private opaque(down: Duplex, conn: InboundConn, early: Decision | undefined): void {
    const d = early ?? this.decideL4(conn);
    if (!d.allowed) {
      if (!early) this.emitL4(conn, 'DROPPED', d);
      abort(down);
      return;
    }
    const up = connect({ host: conn.dst.ip, port: conn.port, localAddress: this.ctx.upstreamBindIp, allowHalfOpen: true });
    this.ctx.countBytes(up, 'inbound');
    let connected = false;
    up.once('connect', () => {
      connected = true;
      this.ctx.metrics.carried('inbound', up, conn.src.identity, conn.dst.identity, false);
      this.emitL4(conn, 'FORWARDED', d);
      // still subject to policy: a snapshot that no longer allows it closes it
      this.destination.track({ conn, request: l4Input(conn), close: () => { abort(down); up.destroy(); } }, up);
    });
    splice(down, up, (err) => {
      if (err && !connected) {
        conn.upstreamFailed?.();
        this.emitL4(conn, 'ERROR', d, `upstream connect ${conn.dst.ip}:${conn.port}: ${errorText(err)}`);
      }
    });
  }

  private emitL4(conn: InboundConn, verdict: FlowVerdict, d: Decision, summary?: string): void {
    // health probes are not traffic anyone asked to see
    if (conn.src.identity === ReservedIdentity.HEALTH) return;
    const view = this.ctx.view();
    const f = newFlow(this.ctx.node, verdict, 'L3_L4', 'INGRESS',
      { ip: conn.src.ip, port: conn.src.port }, { ip: conn.dst.ip, port: conn.port });
    f.source = conn.src.flow;
    if (view) f.destination = view.flowEndpoint(conn.dst);
    f.traceContext = { parent: { traceId: conn.trace.traceId, spanId: conn.trace.spanId } };
    const why = summary ?? (d.allowed ? undefined : describeDecision(d));
    if (why) f.summary = why;
    applyDecision(f, d);
    this.ctx.emit(f);
  }
}

/** a pooled stream's source still runs on its peer, and its pod is still the one it was accepted for */
function stillBacked(view: MeshView, conn: InboundConn): boolean {
  const dst = view.localEndpointByIp(conn.dst.ip);
  return conn.peer !== undefined && view.node(conn.peer) !== undefined && view.identityRunsOn(conn.peer, conn.src.identity)
    && dst !== undefined && dst.uid === conn.dst.uid && dst.identity === conn.dst.identity;
}
