/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/* The maps every nodal program shares. Each object declares them all, pinned by name:
 * the first object loaded creates them under the agent's pin root and every other
 * object (and every later agent) reuses them, so state outlives the agent process. */
#ifndef NODAL_LIB_MAPS_H
#define NODAL_LIB_MAPS_H

#include "api/nodal.h"

/* sizes carry the reason for their number */
#define MAX_ENDPOINTS   4096   /* pods on one node, with ample headroom */
#define MAX_IPCACHE     65536  /* pod CIDRs and pod IPs cluster-wide */
#define MAX_SERVICES    16384
#define MAX_POLICY      262144 /* compiled (local, peer, port) entries for local endpoints */
#define MAX_GUARDS      65536  /* guarded identities cluster-wide: at most one per identity */
#define MAX_REDIRECTS   65536  /* connections in flight between connect() and accept() */
#define EVENTS_BYTES    (1 << 22) /* 4 MiB: ~47k verdict events before loss */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, __u64);
	__type(value, struct endpoint_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodal_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_IPCACHE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodal_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct service_key);
	__type(value, struct service_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodal_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_POLICY);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodal_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_GUARDS);
	__type(key, __u32);
	__type(value, struct guard_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodal_dst_guard SEC(".maps");

/* LRU: a connect() that never completes must not leak an entry */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_REDIRECTS);
	__type(key, __u64);
	__type(value, struct redirect_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodal_redir_ck SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_REDIRECTS);
	__type(key, struct sock_key);
	__type(value, struct redirect_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodal_redir_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodal_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nodal_counters SEC(".maps");

const volatile struct nodal_config nodal_cfg = {};

/* never read: keeps struct verdict_event in the object's BTF (ring buffers carry no
 * value type), so user space can check its codec against the compiled layout */
const volatile struct verdict_event nodal_event_layout = {};

#endif
