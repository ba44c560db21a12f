// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/* cgroup_skb/ingress: a new TCP connection to an enrolled endpoint is accepted only from
 * the node proxy, or when L4 policy allows the source's identity. Packets of existing
 * connections always pass: enrolling must not reset live connections. */
#include "lib/datapath.h"

#define ETH_P_IP      0x0800
#define ETH_P_IPV6    0x86DD
#define IPPROTO_TCP   6
#define IPPROTO_UDP   17
#define IPPROTO_ICMPV6 58
#define TCP_FLAG_SYN  0x02
#define TCP_FLAG_ACK  0x10
#define SKB_PASS 1
#define SKB_DROP 0

struct ports {
	__u16 sport_be;
	__u16 dport_be;
};

SEC("cgroup_skb/ingress")
int nodal_ingress(struct __sk_buff *skb)
{
	__u64 cgid = bpf_skb_cgroup_id(skb);
	struct endpoint_value *ep = bpf_map_lookup_elem(&nodal_endpoints, &cgid);
	if (!ep || !(ep->flags & EP_F_ENROLLED))
		return SKB_PASS;

	struct verdict_event ev = {
		.cgroup_id = cgid,
		.hook = HOOK_INGRESS,
		.direction = DIR_INGRESS,
		.endpoint_id = ep->endpoint_id,
		.dst_identity = ep->identity,
	};
	__u32 l4_off;
	__u8 proto;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return SKB_PASS;
		proto = ip.protocol;
		/* later fragments carry no TCP header and belong to an existing flow */
		if (ip.frag_off & bpf_htons(0x1fff))
			return SKB_PASS;
		l4_off = (__u32)ip.ihl * 4;
		addr_from_v4(ev.saddr, ip.saddr);
		addr_from_v4(ev.daddr, ip.daddr);
		ev.family = 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return SKB_PASS;
		proto = ip6.nexthdr;
		l4_off = sizeof(ip6);
		__builtin_memcpy(ev.saddr, &ip6.saddr, 16);
		__builtin_memcpy(ev.daddr, &ip6.daddr, 16);
		ev.family = 6;
		if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMPV6) {
			/* extension headers could hide a SYN: refuse rather than guess */
			ev.verdict = VERDICT_DROPPED;
			ev.reason = REASON_UNSUPPORTED_L3;
			ev.proto = proto;
			ev.src_identity = identity_of(ev.saddr);
			counter_add(COUNTER_DROP_INGRESS, 1);
			emit_event(&ev);
			return SKB_DROP;
		}
	} else {
		return SKB_PASS;
	}

	if (proto != IPPROTO_TCP)
		return SKB_PASS;

	struct ports ports;
	__u8 flags;
	if (bpf_skb_load_bytes(skb, l4_off, &ports, sizeof(ports)) ||
	    bpf_skb_load_bytes(skb, l4_off + 13, &flags, 1))
		return SKB_PASS;
	/* only a new connection is judged */
	if (!(flags & TCP_FLAG_SYN) || (flags & TCP_FLAG_ACK))
		return SKB_PASS;

	__u8 proxy[16];
	addr_from_v4(proxy, nodal_cfg.proxy_addr4);
	if (addr_eq(ev.saddr, proxy))
		return SKB_PASS;
	__u32 p6[4] = { nodal_cfg.proxy_addr6[0], nodal_cfg.proxy_addr6[1],
			nodal_cfg.proxy_addr6[2], nodal_cfg.proxy_addr6[3] };
	addr_from_v6(proxy, p6);
	if (ev.family == 6 && addr_eq(ev.saddr, proxy))
		return SKB_PASS;
	/* a pod talking to itself */
	if (addr_eq(ev.saddr, ev.daddr) || addr_is_v4_loopback(ev.saddr) ||
	    addr_is_v6_loopback(ev.saddr))
		return SKB_PASS;

	ev.proto = IPPROTO_TCP;
	ev.sport = bpf_ntohs(ports.sport_be);
	ev.dport = bpf_ntohs(ports.dport_be);
	ev.src_identity = identity_of(ev.saddr);
	ev.cookie = bpf_get_socket_cookie(skb);

	struct verdict v = {};
	if (policy_lookup(DIR_INGRESS, ep->identity, ev.src_identity, ev.dport, IPPROTO_TCP, &v) &&
	    v.action == POLICY_ALLOW) {
		ev.verdict = VERDICT_FORWARDED;
		ev.reason = v.reason;
		ev.rule = v.rule;
		ev.policy_id = v.policy_id;
		emit_event(&ev);
		return SKB_PASS;
	}
	ev.verdict = VERDICT_DROPPED;
	if (v.action == POLICY_DENY) {
		ev.reason = v.reason;
		ev.rule = v.rule;
		ev.policy_id = v.policy_id;
	} else if (ep->flags & EP_F_INGRESS_ENFORCED) {
		ev.reason = REASON_DEFAULT_DENY;
		ev.policy_id = ep->ingress_policy_id;
	} else {
		ev.reason = REASON_NOT_FROM_PROXY;
	}
	counter_add(COUNTER_DROP_INGRESS, 1);
	emit_event(&ev);
	return SKB_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
