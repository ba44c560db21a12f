/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/* cgroup/connect4 and cgroup/connect6 share one decision; only address access differs. */
#ifndef NODAL_LIB_CONNECT_H
#define NODAL_LIB_CONNECT_H

#include "lib/datapath.h"

#define SOCK_STREAM 1
#define IPPROTO_TCP 6

/*
 * Decide a connect() from an enrolled endpoint. Returns 0 to fail the call with EPERM,
 * 1 to let it proceed; on allow *redirect tells the caller to point it at the proxy.
 */
static __always_inline int connect_decide(struct bpf_sock_addr *ctx, __u8 hook,
					  const __u8 daddr[16], __u16 dport, bool *redirect)
{
	*redirect = false;
	__u64 cgid = bpf_get_current_cgroup_id();
	struct endpoint_value *ep = bpf_map_lookup_elem(&nodal_endpoints, &cgid);
	if (!ep || !(ep->flags & EP_F_ENROLLED))
		return 1;
	/* TCP only: UDP and raw sockets are not redirected in this version */
	if (ctx->type != SOCK_STREAM)
		return 1;
	/* a pod talking to itself stays inside the pod */
	if (addr_is_v4_loopback(daddr) || addr_is_v6_loopback(daddr))
		return 1;

	__u32 dst_identity = dst_identity_of(daddr, dport, IPPROTO_TCP);
	struct verdict v = {};
	if (!policy_lookup(DIR_EGRESS, ep->identity, dst_identity, dport, IPPROTO_TCP, &v)) {
		struct guard_value *g;
		if (ep->flags & EP_F_EGRESS_ENFORCED) {
			v.action = POLICY_DENY;
			v.reason = REASON_DEFAULT_DENY;
			v.policy_id = ep->egress_policy_id;
		} else if ((g = bpf_map_lookup_elem(&nodal_dst_guard, &dst_identity))) {
			/* an ALLOW policy selects the destination and no entry admits this
			 * source: deny by absence, named after that policy */
			v.action = POLICY_DENY;
			v.reason = REASON_DEFAULT_DENY;
			v.policy_id = g->policy_id;
		} else {
			v.action = POLICY_ALLOW;
			v.reason = REASON_DEFAULT_ALLOW;
		}
	}

	struct verdict_event ev = {
		.cookie = bpf_get_socket_cookie(ctx),
		.cgroup_id = cgid,
		.dport = dport,
		.family = hook == HOOK_CONNECT4 ? 4 : 6,
		.proto = IPPROTO_TCP,
		.reason = v.reason,
		.hook = hook,
		.direction = DIR_EGRESS,
		.rule = v.rule,
		.endpoint_id = ep->endpoint_id,
		.src_identity = ep->identity,
		.dst_identity = dst_identity,
		.policy_id = v.policy_id,
	};
	__builtin_memcpy(ev.daddr, daddr, 16);

	if (v.action == POLICY_DENY) {
		ev.verdict = VERDICT_DROPPED;
		counter_add(COUNTER_DROP_CONNECT, 1);
		emit_event(&ev);
		return EPERM_DENY;
	}

	struct redirect_value rv = {
		.orig_port = dport,
		.endpoint_id = ep->endpoint_id,
		.src_identity = ep->identity,
		.dst_identity = dst_identity,
	};
	__builtin_memcpy(rv.orig_addr, daddr, 16);
	bpf_map_update_elem(&nodal_redir_ck, &ev.cookie, &rv, BPF_ANY);

	ev.verdict = VERDICT_REDIRECTED;
	counter_add(COUNTER_REDIRECTS, 1);
	emit_event(&ev);
	*redirect = true;
	return 1;
}

#endif
