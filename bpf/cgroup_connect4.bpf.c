// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/* cgroup/connect4: enrolled endpoints' IPv4 connects go to the node proxy, or fail with
 * EPERM when L4 policy denies them. */
#include "lib/connect.h"

SEC("cgroup/connect4")
int nodal_connect4(struct bpf_sock_addr *ctx)
{
	__u8 daddr[16];
	bool redirect;
	__u16 dport = bpf_ntohs((__u16)ctx->user_port);

	addr_from_v4(daddr, ctx->user_ip4);
	int ret = connect_decide(ctx, HOOK_CONNECT4, daddr, dport, &redirect);
	if (redirect) {
		ctx->user_ip4 = nodal_cfg.proxy_addr4;
		ctx->user_port = bpf_htons(nodal_cfg.proxy_port);
	}
	return ret;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
