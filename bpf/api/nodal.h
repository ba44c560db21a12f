/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Every map key, map value, event and tunable shared between the BPF programs and
 * user space. Fixed-width types and explicit padding only: agent/datapath/codec.ts
 * mirrors each struct, and test/unit/codec-layout.test.ts checks both against the
 * BTF of the compiled objects.
 *
 * Addresses are always 16 bytes: IPv6 as is, IPv4 as IPv4-mapped IPv6
 * (::ffff:a.b.c.d), both in network byte order. Ports are host order unless the
 * field name says _be.
 */
#ifndef NODAL_API_H
#define NODAL_API_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* reserved identities (DESIGN §4); allocated ids start at 256 */
#define IDENTITY_ANY        0  /* wildcard in policy keys only */
#define IDENTITY_HOST       1
#define IDENTITY_WORLD      2
#define IDENTITY_UNMANAGED  3
#define IDENTITY_HEALTH     4

/* endpoints: cgroup id (u64) -> struct endpoint_value */
#define EP_F_ENROLLED          (1u << 0)
#define EP_F_EGRESS_ENFORCED   (1u << 1) /* some policy selects it for egress: no match = deny */
#define EP_F_INGRESS_ENFORCED  (1u << 2) /* some policy selects it for ingress */

struct endpoint_value {
	__u32 endpoint_id;
	__u32 identity;
	__u32 flags;
	__u32 egress_policy_id;  /* names the policy behind an egress default deny */
	__u32 ingress_policy_id; /* names the policy behind an ingress default deny */
	__u32 _pad;
};

/* ipcache: LPM trie, prefix length counts from the first of the 16 address bytes,
 * so an IPv4 /24 is prefixlen 96 + 24 */
struct ipcache_key {
	__u32 prefixlen;
	__u8  addr[16];
};

struct ipcache_value {
	__u32 identity;
	__u32 flags;
};

/* services: virtual IP, port and protocol -> service and the identity of its backends
 * (IDENTITY_ANY when backends carry several identities: the proxy decides then) */
struct service_key {
	__u8  addr[16];
	__u16 port;
	__u8  proto;
	__u8  _pad;
};

struct service_value {
	__u32 service_id;
	__u32 identity;
};

/* policy: one entry per (local identity, peer identity, port, protocol, direction).
 * peer_identity IDENTITY_ANY and port 0 are wildcards. Lookup order, first match wins:
 * (peer, port), (peer, any port), (any peer, port), (any peer, any port). The policy
 * compiler resolves DENY-over-ALLOW before writing entries. An EGRESS lookup that finds
 * nothing falls to dst_guard: a default deny needs no entry of its own. */
#define DIR_EGRESS  1
#define DIR_INGRESS 2

struct policy_key {
	__u32 local_identity;
	__u32 peer_identity;
	__u16 port;
	__u8  proto;
	__u8  direction;
};

#define POLICY_ALLOW 1
#define POLICY_DENY  2

/* a DENY the compiler wrote because no ALLOW rule of the selecting policy admits the
 * peer (not an explicit DENY rule): reported as a default deny naming that policy */
#define POLICY_F_DEFAULT_DENY (1u << 0)
/* an EGRESS ALLOW that only lets the connection reach the proxy, which decides (L7, and
 * DENY rules that depend on the request): written where a guard would otherwise deny */
#define POLICY_F_TO_PROXY     (1u << 1)

struct policy_value {
	__u8  action;
	__u8  flags;
	__u16 rule;       /* index of the rule within the policy */
	__u32 policy_id;  /* user space maps this to namespace/name */
};

/* dst_guard: destination identity (__u32) -> struct guard_value, for every identity that
 * some ALLOW policy selects. A connect() towards it that no policy entry matches is a
 * default deny naming policy_id (the first such policy), as Cilium denies by absence. */
struct guard_value {
	__u32 policy_id;
};

/* the original destination of a redirected connection: by socket cookie at connect()
 * (nodal_redir_ck), then by the client's local address and port once established
 * (nodal_redir_sk), which is what the proxy sees as the accepted socket's peer */
struct redirect_value {
	__u8  orig_addr[16];
	__u16 orig_port;
	__u16 _pad;
	__u32 endpoint_id;
	__u32 src_identity;
	__u32 dst_identity;
};

struct sock_key {
	__u8  addr[16];
	__u16 port;
	__u16 _pad;
};

/* verdicts use Hubble's flow.Verdict numbers */
#define VERDICT_FORWARDED  1
#define VERDICT_DROPPED    2
#define VERDICT_REDIRECTED 5

#define REASON_NONE            0
#define REASON_POLICY_DENY     1 /* an explicit DENY entry matched */
#define REASON_DEFAULT_DENY    2 /* a policy selects the endpoint and nothing allowed this */
#define REASON_NOT_FROM_PROXY  3 /* new connection to an enrolled endpoint bypassing the proxy */
#define REASON_POLICY_ALLOW    4
#define REASON_DEFAULT_ALLOW   5 /* no policy selects the endpoint */
#define REASON_UNSUPPORTED_L3  6 /* IPv6 extension headers in front of TCP */
#define REASON_TO_PROXY        7 /* L4 admits the source to the proxy, which decides */

#define HOOK_CONNECT4 1
#define HOOK_CONNECT6 2
#define HOOK_INGRESS  3

struct verdict_event {
	__u64 ts_ns;      /* CLOCK_MONOTONIC */
	__u64 cookie;     /* socket cookie */
	__u64 cgroup_id;
	__u8  saddr[16];
	__u8  daddr[16];  /* the original destination */
	__u16 sport;
	__u16 dport;
	__u8  family;     /* 4 or 6 */
	__u8  proto;
	__u8  verdict;
	__u8  reason;
	__u8  hook;
	__u8  direction;
	__u16 rule;
	__u32 endpoint_id;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 policy_id;
};

/* per-CPU counters, array indices */
#define COUNTER_DROP_CONNECT  0
#define COUNTER_DROP_INGRESS  1
#define COUNTER_EVENTS_LOST   2
#define COUNTER_REDIRECTS     3
#define COUNTER_MAX           8

/* read-only tunables, set by the loader before load */
/* addresses as __u32 words in network byte order: read as whole fields, never through
 * memcpy, which would cast away volatile and let clang fold in the zero initializer */
struct nodal_config {
	__u32 proxy_addr4;      /* the node proxy's outbound listener, IPv4 */
	__u32 proxy_addr6[4];   /* and IPv6 (all zero: IPv6 is not redirected) */
	__u16 proxy_port;       /* host order */
	__u16 _pad;
};

#endif
