// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/* cgroup/connect6: the IPv6 twin of cgroup/connect4. IPv4-mapped destinations on a
 * dual-stack socket are redirected to the proxy's IPv4 address, mapped. */
#include "lib/connect.h"

SEC("cgroup/connect6")
int nodal_connect6(struct bpf_sock_addr *ctx)
{
	__u8 daddr[16];
	__u32 w[4];
	bool redirect;
	__u16 dport = bpf_ntohs((__u16)ctx->user_port);

	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	addr_from_v6(daddr, w);
	int ret = connect_decide(ctx, HOOK_CONNECT6, daddr, dport, &redirect);
	if (!redirect)
		return ret;

	bool mapped = daddr[10] == 0xff && daddr[11] == 0xff && w[0] == 0 && w[1] == 0;
	if (mapped) {
		w[0] = 0;
		w[1] = 0;
		w[2] = bpf_htonl(0x0000ffff);
		w[3] = nodal_cfg.proxy_addr4;
	} else {
		w[0] = nodal_cfg.proxy_addr6[0];
		w[1] = nodal_cfg.proxy_addr6[1];
		w[2] = nodal_cfg.proxy_addr6[2];
		w[3] = nodal_cfg.proxy_addr6[3];
	}
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = bpf_htons(nodal_cfg.proxy_port);
	return ret;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
