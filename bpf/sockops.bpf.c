// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/* sockops: once a redirected connection is established, re-key its original destination
 * by the client's local address and port: the proxy sees exactly that as the accepted
 * socket's peer and finds the destination with one lookup. */
#include "lib/datapath.h"

SEC("sockops")
int nodal_sockops(struct bpf_sock_ops *skops)
{
	/* the client's side is established before its final ACK leaves, so the entry
	 * exists before the proxy's accept() can return */
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;

	__u64 cookie = bpf_get_socket_cookie(skops);
	struct redirect_value *rv = bpf_map_lookup_elem(&nodal_redir_ck, &cookie);
	if (!rv)
		return 1;

	struct sock_key k = { .port = (__u16)skops->local_port };
	if (skops->family == AF_INET) {
		addr_from_v4(k.addr, skops->local_ip4);
	} else {
		__u32 w[4] = { skops->local_ip6[0], skops->local_ip6[1],
			       skops->local_ip6[2], skops->local_ip6[3] };
		addr_from_v6(k.addr, w);
	}
	bpf_map_update_elem(&nodal_redir_sk, &k, rv, BPF_ANY);
	bpf_map_delete_elem(&nodal_redir_ck, &cookie);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
