/* Plain C over libbpf and a few namespace syscalls. Every function returns 0 (or a
 * count where documented) on success and -errno on failure; nothing here knows about
 * JavaScript. Errors keep libbpf's codes: LIBBPF_ERRNO__* (4000..) pass through. */
#ifndef NODAL_BPF_OPS_H
#define NODAL_BPF_OPS_H

#include <stddef.h>
#include <stdint.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#ifdef __cplusplus
extern "C" {
#endif

/* the kernel's own "not supported" code; user-space headers do not define it */
#ifndef ENOTSUPP
#define ENOTSUPP 524
#endif

/* libbpf's messages for one operation on one thread: open errors, the verifier log */
struct nb_log {
	char *buf;
	size_t len;
	size_t cap;
	int truncated;
};
void nb_log_free(struct nb_log *log);

/* installs the libbpf print hook; idempotent */
void nb_init(void);

/* objects */
/* pin_root must exist (see nb_mkdir_bpffs) */
int nb_object_open(const char *path, const char *pin_root, struct nb_log *log,
		   struct bpf_object **out);
/* sets a const volatile global before load; -ENOENT unknown name, -EINVAL size differs
 * (*var_size tells the expected size) */
int nb_object_set_rodata(struct bpf_object *obj, const char *var, const void *data,
			 size_t size, size_t *var_size);
int nb_object_set_max_entries(struct bpf_object *obj, const char *map, uint32_t max_entries);
int nb_object_load(struct bpf_object *obj, struct nb_log *log);
/* *section and *fd may be NULL; *fd is -1 before load */
int nb_object_program(const struct bpf_object *obj, const char *name,
		      struct bpf_program **out, const char **section, int *fd);
/* dup()s the map fd (CLOEXEC) so it outlives the object */
int nb_object_map_fd(const struct bpf_object *obj, const char *name, int *fd);

struct nb_map_desc {
	const char *name; /* owned by the object */
	uint32_t type;
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries;
};
/* fills up to cap entries; *count is the total, which may exceed cap */
int nb_object_maps(const struct bpf_object *obj, struct nb_map_desc *descs, size_t cap,
		   size_t *count);
int nb_object_programs(const struct bpf_object *obj, const char **names, size_t cap,
		       size_t *count);

struct nb_member {
	const char *name; /* owned by the object's BTF */
	uint32_t offset;
	uint32_t size;
};
int nb_struct_layout(const struct bpf_object *obj, const char *name, uint32_t *size,
		     struct nb_member *members, size_t cap, size_t *count);

/* links */
int nb_attach_cgroup(struct bpf_program *prog, const char *cgroup, struct nb_log *log,
		     int *link_fd);
struct nb_link_info {
	uint32_t id;
	uint32_t prog_id;
	uint32_t type;
	uint32_t attach_type;
	uint64_t cgroup_id;
};
int nb_link_info(int fd, struct nb_link_info *out);
int nb_link_update(int link_fd, int prog_fd);
int nb_link_detach(int link_fd);
/* prog ids attached directly to a cgroup; *count: capacity in, total out (-ENOSPC when
 * the capacity was too small) */
int nb_cgroup_query(const char *cgroup, enum bpf_attach_type type, uint32_t *ids,
		    uint32_t *count);

/* maps */
struct nb_map_info {
	uint32_t id;
	uint32_t type;
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries;
	uint32_t flags;
	char name[16];
};
int nb_map_info(int fd, struct nb_map_info *out);
int nb_map_is_percpu(uint32_t type);
/* bytes one value occupies in user space: per-CPU maps hold one 8-aligned slot per CPU */
int nb_map_value_buffer_size(uint32_t type, uint32_t value_size, size_t *size);
int nb_map_lookup(int fd, const void *key, void *value);
int nb_map_update(int fd, const void *key, const void *value, uint64_t flags);
int nb_map_delete(int fd, const void *key);
int nb_map_next_key(int fd, const void *key, void *next);
/* every key, malloc'd into *keys (caller frees); stops after max_entries keys so a
 * map mutated during the walk cannot loop forever */
int nb_map_keys(int fd, uint32_t key_size, uint32_t max_entries, uint8_t **keys,
		size_t *count);
/* bpf_map_update_batch, or one update per element when the map type has no batch op */
int nb_map_update_batch(int fd, const void *keys, const void *values, uint32_t key_size,
			size_t value_size, uint32_t count, uint64_t flags, uint32_t *written);

/* pins and fds */
int nb_fd_kind(int fd, char *kind, size_t size);
int nb_obj_get(const char *path, int *fd);
/* creates missing parent directories, but only on a bpffs mount (-EXDEV otherwise) */
int nb_obj_pin(int fd, const char *path);
int nb_unpin(const char *path);
int nb_mkdir_bpffs(const char *dir);
int nb_dup_fd(int fd, int *out); /* CLOEXEC */
int nb_close_fd(int fd);

/* network namespaces (the calling thread only) */
int nb_netns_enter(const char *path, int *saved);
int nb_netns_leave(int saved);
int nb_socket_in_netns(const char *path, int family, int type, int *fd);
int nb_listen_tcp_in_netns(const char *path, const char *host, uint16_t port, int backlog,
			   int *fd);

/* features: each field is 1 (yes), 0 (no) or -errno (could not tell) */
struct nb_probe_result {
	int bpf_syscall;
	int ringbuf;
	int cgroup_sock_addr;
};
int nb_probe(struct nb_probe_result *out);
int nb_num_possible_cpus(void); /* count or -errno */

/* ring buffers */
typedef int (*nb_record_fn)(void *ctx, void *data, size_t size);
int nb_ringbuf_open(int map_fd, nb_record_fn fn, void *ctx, struct ring_buffer **out);
int nb_ringbuf_poll(struct ring_buffer *rb, int timeout_ms); /* records or -errno */
void nb_ringbuf_free(struct ring_buffer *rb);

#ifdef __cplusplus
}
#endif

#endif /* NODAL_BPF_OPS_H */
