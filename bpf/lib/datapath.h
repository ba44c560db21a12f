/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/* Logic shared by the hooks: identity lookups, the policy verdict, events, counters. */
#ifndef NODAL_LIB_DATAPATH_H
#define NODAL_LIB_DATAPATH_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"

#define AF_INET  2
#define AF_INET6 10
#define EPERM_DENY 0 /* a cgroup/connect program returning 0 makes connect() fail with EPERM */

struct verdict {
	__u8  action;   /* POLICY_ALLOW or POLICY_DENY */
	__u8  reason;
	__u16 rule;
	__u32 policy_id;
};

static __always_inline void counter_add(__u32 idx, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&nodal_counters, &idx);
	if (c)
		*c += n; /* per-CPU slot: no atomics needed */
}

static __always_inline void addr_from_v4(__u8 out[16], __u32 be_addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(&out[12], &be_addr, 4);
}

static __always_inline void addr_from_v6(__u8 out[16], const __u32 w[4])
{
	__builtin_memcpy(out, w, 16);
}

static __always_inline bool addr_is_v4_loopback(const __u8 a[16])
{
	return a[10] == 0xff && a[11] == 0xff && a[12] == 127 && a[0] == 0 && a[9] == 0;
}

static __always_inline bool addr_is_v6_loopback(const __u8 a[16])
{
	__u64 hi, lo;
	__builtin_memcpy(&hi, a, 8);
	__builtin_memcpy(&lo, &a[8], 8);
	return hi == 0 && lo == bpf_cpu_to_be64(1);
}

static __always_inline bool addr_eq(const __u8 a[16], const __u8 b[16])
{
	__u64 a0, a1, b0, b1;
	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, &a[8], 8);
	__builtin_memcpy(&b0, b, 8);
	__builtin_memcpy(&b1, &b[8], 8);
	return a0 == b0 && a1 == b1;
}

/* identity of an address: ipcache longest prefix match, else the world */
static __always_inline __u32 identity_of(const __u8 addr[16])
{
	struct ipcache_key k = { .prefixlen = 128 };
	__builtin_memcpy(k.addr, addr, 16);
	struct ipcache_value *v = bpf_map_lookup_elem(&nodal_ipcache, &k);
	return v ? v->identity : IDENTITY_WORLD;
}

/* identity of a destination: a service VIP names its backends' identity */
static __always_inline __u32 dst_identity_of(const __u8 addr[16], __u16 port, __u8 proto)
{
	struct service_key sk = { .port = port, .proto = proto };
	__builtin_memcpy(sk.addr, addr, 16);
	struct service_value *sv = bpf_map_lookup_elem(&nodal_services, &sk);
	if (sv)
		return sv->identity;
	return identity_of(addr);
}

static __always_inline bool policy_probe(struct policy_key *k, struct verdict *out)
{
	struct policy_value *pv = bpf_map_lookup_elem(&nodal_policy, k);
	if (!pv)
		return false;
	out->action = pv->action;
	if (pv->action != POLICY_DENY)
		out->reason = (pv->flags & POLICY_F_TO_PROXY) ? REASON_TO_PROXY : REASON_POLICY_ALLOW;
	else if (pv->flags & POLICY_F_DEFAULT_DENY)
		out->reason = REASON_DEFAULT_DENY;
	else
		out->reason = REASON_POLICY_DENY;
	out->rule = pv->rule;
	out->policy_id = pv->policy_id;
	return true;
}

/* the L4 verdict for one new connection, most specific entry first */
static __always_inline bool policy_lookup(__u8 direction, __u32 local, __u32 peer, __u16 port,
					  __u8 proto, struct verdict *out)
{
	struct policy_key k = {
		.local_identity = local, .peer_identity = peer,
		.port = port, .proto = proto, .direction = direction,
	};
	if (policy_probe(&k, out))
		return true;
	k.port = 0;
	if (policy_probe(&k, out))
		return true;
	k.peer_identity = IDENTITY_ANY;
	k.port = port;
	if (policy_probe(&k, out))
		return true;
	k.port = 0;
	return policy_probe(&k, out);
}

static __always_inline void emit_event(struct verdict_event *tmpl)
{
	struct verdict_event *e = bpf_ringbuf_reserve(&nodal_events, sizeof(*e), 0);
	if (!e) {
		/* the ring is full: count it, so loss is reported, never silent */
		counter_add(COUNTER_EVENTS_LOST, 1);
		return;
	}
	__builtin_memcpy(e, tmpl, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(e, 0);
}

#endif
