/* libbpf-facing half of the addon: plain C, every function returns 0 or -errno. */
#include "bpf_ops.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <bpf/btf.h>

/* a verifier log can run to megabytes; the error is at its end, so keep the tail */
#define NB_LOG_MAX (1u << 20)

static __thread struct nb_log *tl_log;
static int nb_debug;

void nb_log_free(struct nb_log *log)
{
	free(log->buf);
	log->buf = NULL;
	log->len = log->cap = 0;
	log->truncated = 0;
}

static void nb_log_append(struct nb_log *log, const char *msg, size_t n)
{
	if (n > NB_LOG_MAX / 2) {
		msg += n - NB_LOG_MAX / 2;
		n = NB_LOG_MAX / 2;
		log->truncated = 1;
	}
	if (log->len + n > NB_LOG_MAX) {
		size_t drop = log->len + n - NB_LOG_MAX;
		memmove(log->buf, log->buf + drop, log->len - drop);
		log->len -= drop;
		log->truncated = 1;
	}
	if (log->len + n + 1 > log->cap) {
		size_t cap = log->cap ? log->cap : 4096;
		char *buf;

		while (cap < log->len + n + 1)
			cap *= 2;
		buf = realloc(log->buf, cap);
		if (!buf)
			return; /* losing diagnostics beats failing the operation */
		log->buf = buf;
		log->cap = cap;
	}
	memcpy(log->buf + log->len, msg, n);
	log->len += n;
	log->buf[log->len] = '\0';
}

static int nb_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	struct nb_log *log = tl_log;
	char *msg;
	int n;

	if (nb_debug) {
		va_list copy;

		va_copy(copy, args);
		vfprintf(stderr, fmt, copy);
		va_end(copy);
	}
	if (!log)
		return !nb_debug && level == LIBBPF_WARN ? vfprintf(stderr, fmt, args) : 0;
	if (level == LIBBPF_DEBUG)
		return 0;
	n = vasprintf(&msg, fmt, args);
	if (n < 0)
		return -ENOMEM;
	nb_log_append(log, msg, (size_t)n);
	free(msg);
	return n;
}

void nb_init(void)
{
	const char *env = getenv("NODAL_LIBBPF_DEBUG");

	nb_debug = env && env[0] == '1';
	libbpf_set_print(nb_print);
}

static int is_fs(const char *path, long magic)
{
	struct statfs st;

	if (statfs(path, &st))
		return -errno;
	return (long)st.f_type == magic;
}

int nb_mkdir_bpffs(const char *dir)
{
	char buf[PATH_MAX];
	size_t len = strlen(dir), existing, i;
	struct stat st;
	char *p, c;
	int ret;

	if (dir[0] != '/')
		return -EINVAL;
	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, dir, len + 1);
	while (len > 1 && buf[len - 1] == '/')
		buf[--len] = '\0';

	/* find the deepest existing ancestor: it must be on bpffs before we create below it */
	existing = len;
	while (stat(buf, &st) != 0) {
		if (errno != ENOENT)
			return -errno;
		p = strrchr(buf, '/');
		existing = (size_t)(p - buf);
		if (existing == 0) {
			strcpy(buf, "/");
			break;
		}
		*p = '\0';
	}
	if (existing == len && !S_ISDIR(st.st_mode))
		return -ENOTDIR;
	ret = is_fs(buf, BPF_FS_MAGIC);
	if (ret < 0)
		return ret;
	if (!ret)
		return -EXDEV;

	memcpy(buf, dir, len);
	buf[len] = '\0';
	for (i = existing + 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		c = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, 0700) && errno != EEXIST)
			return -errno;
		buf[i] = c;
	}
	return 0;
}

static int mkdir_parent_bpffs(const char *path)
{
	char buf[PATH_MAX];
	char *slash;
	size_t len = strlen(path);

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	slash = strrchr(buf, '/');
	if (!slash || slash == buf)
		return -EINVAL;
	*slash = '\0';
	return nb_mkdir_bpffs(buf);
}

int nb_object_open(const char *path, const char *pin_root, struct nb_log *log,
		   struct bpf_object **out)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_root);
	struct bpf_object *obj;
	int err;

	*out = NULL;
	tl_log = log;
	obj = bpf_object__open_file(path, &opts);
	err = obj ? 0 : -errno;
	tl_log = NULL;
	if (err)
		return err;
	*out = obj;
	return 0;
}

/* libbpf names a global-data map "<object prefix><section>", cut to BPF_OBJ_NAME_LEN - 1 */
static int is_section_map(const struct bpf_map *map, const char *sec)
{
	const char *name = bpf_map__name(map);
	size_t sfx = strlen(sec), len = strlen(name);

	if (!bpf_map__is_internal(map))
		return 0;
	if (sfx > BPF_OBJ_NAME_LEN - 1)
		sfx = BPF_OBJ_NAME_LEN - 1;
	return len >= sfx && strncmp(name + len - sfx, sec, sfx) == 0 &&
	       (len == sfx || strchr(sec + 1, '.') == NULL);
}

int nb_object_set_rodata(struct bpf_object *obj, const char *var, const void *data,
			 size_t size, size_t *var_size)
{
	const struct btf *btf = bpf_object__btf(obj);
	__u32 id, n;

	*var_size = 0;
	if (!btf)
		return -ENOENT;
	n = btf__type_cnt(btf);
	for (id = 1; id < n; id++) {
		const struct btf_type *t = btf__type_by_id(btf, id);
		const struct btf_var_secinfo *vs;
		const char *sec;
		int i;

		if (!btf_is_datasec(t))
			continue;
		sec = btf__name_by_offset(btf, t->name_off);
		if (!sec || strncmp(sec, ".rodata", 7) != 0)
			continue;
		vs = btf_var_secinfos(t);
		for (i = 0; i < btf_vlen(t); i++, vs++) {
			const struct btf_type *v = btf__type_by_id(btf, vs->type);
			const char *vname = v ? btf__name_by_offset(btf, v->name_off) : NULL;
			struct bpf_map *map;
			const void *init;
			size_t init_size;
			void *copy;
			int err;

			if (!v || !btf_is_var(v) || !vname || strcmp(vname, var) != 0)
				continue;
			*var_size = vs->size;
			if (size != vs->size)
				return -EINVAL;
			bpf_object__for_each_map(map, obj) {
				if (is_section_map(map, sec))
					break;
			}
			if (!map)
				return -ENOENT;
			init = bpf_map__initial_value(map, &init_size);
			if (!init || (size_t)vs->offset + size > init_size)
				return -EINVAL;
			copy = malloc(init_size);
			if (!copy)
				return -ENOMEM;
			memcpy(copy, init, init_size);
			memcpy((char *)copy + vs->offset, data, size);
			err = bpf_map__set_initial_value(map, copy, init_size);
			free(copy);
			return err;
		}
	}
	return -ENOENT;
}

int nb_object_set_max_entries(struct bpf_object *obj, const char *name, uint32_t max_entries)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);

	if (!map)
		return -ENOENT;
	return bpf_map__set_max_entries(map, max_entries);
}

int nb_object_load(struct bpf_object *obj, struct nb_log *log)
{
	int err;

	tl_log = log;
	err = bpf_object__load(obj);
	tl_log = NULL;
	return err;
}

int nb_object_program(const struct bpf_object *obj, const char *name,
		      struct bpf_program **out, const char **section, int *fd)
{
	*out = bpf_object__find_program_by_name(obj, name);
	if (!*out)
		return -ENOENT;
	if (section)
		*section = bpf_program__section_name(*out);
	if (fd)
		*fd = bpf_program__fd(*out);
	return 0;
}

int nb_object_map_fd(const struct bpf_object *obj, const char *name, int *fd)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);
	int orig;

	*fd = -1;
	if (!map)
		return -ENOENT;
	orig = bpf_map__fd(map);
	if (orig < 0)
		return -EBADF; /* not created: the object is not loaded */
	*fd = fcntl(orig, F_DUPFD_CLOEXEC, 3);
	return *fd < 0 ? -errno : 0;
}

int nb_object_maps(const struct bpf_object *obj, struct nb_map_desc *descs, size_t cap,
		   size_t *count)
{
	struct bpf_map *map;
	size_t n = 0;

	bpf_object__for_each_map(map, obj) {
		if (n < cap) {
			descs[n].name = bpf_map__name(map);
			descs[n].type = bpf_map__type(map);
			descs[n].key_size = bpf_map__key_size(map);
			descs[n].value_size = bpf_map__value_size(map);
			descs[n].max_entries = bpf_map__max_entries(map);
		}
		n++;
	}
	*count = n;
	return 0;
}

int nb_object_programs(const struct bpf_object *obj, const char **names, size_t cap,
		       size_t *count)
{
	struct bpf_program *prog;
	size_t n = 0;

	bpf_object__for_each_program(prog, obj) {
		if (n < cap)
			names[n] = bpf_program__name(prog);
		n++;
	}
	*count = n;
	return 0;
}

int nb_struct_layout(const struct bpf_object *obj, const char *name, uint32_t *size,
		     struct nb_member *members, size_t cap, size_t *count)
{
	const struct btf *btf = bpf_object__btf(obj);
	const struct btf_type *t;
	const struct btf_member *m;
	int id, i;

	*count = 0;
	if (!btf)
		return -ENOENT;
	id = btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT);
	if (id < 0)
		return id;
	t = btf__type_by_id(btf, (__u32)id);
	*size = t->size;
	m = btf_members(t);
	for (i = 0; i < btf_vlen(t); i++, m++) {
		__s64 msize = btf__resolve_size(btf, m->type);
		__u32 bitsz = btf_member_bitfield_size(t, (__u32)i);

		if (msize < 0)
			return (int)msize;
		if ((size_t)i < cap) {
			members[i].name = btf__name_by_offset(btf, m->name_off);
			members[i].offset = btf_member_bit_offset(t, (__u32)i) / 8;
			members[i].size = bitsz ? (bitsz + 7) / 8 : (uint32_t)msize;
		}
	}
	*count = (size_t)btf_vlen(t);
	return 0;
}

int nb_attach_cgroup(struct bpf_program *prog, const char *cgroup, struct nb_log *log,
		     int *link_fd)
{
	struct bpf_link *link;
	int cg, err, fd;

	*link_fd = -1;
	cg = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg < 0)
		return -errno;
	err = is_fs(cgroup, CGROUP2_SUPER_MAGIC);
	if (err <= 0) {
		close(cg);
		return err < 0 ? err : -EBADF; /* what the kernel says for a non-cgroup2 fd */
	}
	tl_log = log;
	link = bpf_program__attach_cgroup(prog, cg);
	err = link ? 0 : -errno;
	tl_log = NULL;
	close(cg);
	if (err)
		return err;
	/* own a plain fd; the link lives as long as any fd or pin refers to it */
	fd = fcntl(bpf_link__fd(link), F_DUPFD_CLOEXEC, 3);
	err = fd < 0 ? -errno : 0;
	bpf_link__destroy(link);
	if (err)
		return err;
	*link_fd = fd;
	return 0;
}

int nb_link_info(int fd, struct nb_link_info *out)
{
	struct bpf_link_info info;
	__u32 len = sizeof(info);
	int err;

	memset(&info, 0, sizeof(info));
	err = bpf_obj_get_info_by_fd(fd, &info, &len);
	if (err)
		return err;
	out->id = info.id;
	out->prog_id = info.prog_id;
	out->type = info.type;
	out->attach_type = info.type == BPF_LINK_TYPE_CGROUP ? info.cgroup.attach_type : 0;
	out->cgroup_id = info.type == BPF_LINK_TYPE_CGROUP ? info.cgroup.cgroup_id : 0;
	return 0;
}

int nb_link_update(int link_fd, int prog_fd)
{
	return bpf_link_update(link_fd, prog_fd, NULL);
}

int nb_link_detach(int link_fd)
{
	return bpf_link_detach(link_fd);
}

int nb_cgroup_query(const char *cgroup, enum bpf_attach_type type, uint32_t *ids,
		    uint32_t *count)
{
	__u32 flags = 0, cnt = *count;
	int cg, err;

	cg = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg < 0)
		return -errno;
	err = bpf_prog_query(cg, type, 0, &flags, ids, &cnt);
	close(cg);
	*count = cnt;
	return err;
}

int nb_map_info(int fd, struct nb_map_info *out)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);
	int err;

	memset(&info, 0, sizeof(info));
	err = bpf_obj_get_info_by_fd(fd, &info, &len);
	if (err)
		return err;
	out->id = info.id;
	out->type = info.type;
	out->key_size = info.key_size;
	out->value_size = info.value_size;
	out->max_entries = info.max_entries;
	out->flags = info.map_flags;
	memcpy(out->name, info.name, sizeof(out->name));
	out->name[sizeof(out->name) - 1] = '\0';
	return 0;
}

int nb_map_is_percpu(uint32_t type)
{
	switch (type) {
	case BPF_MAP_TYPE_PERCPU_HASH:
	case BPF_MAP_TYPE_PERCPU_ARRAY:
	case BPF_MAP_TYPE_LRU_PERCPU_HASH:
	case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
		return 1;
	default:
		return 0;
	}
}

int nb_map_value_buffer_size(uint32_t type, uint32_t value_size, size_t *size)
{
	int ncpus;

	if (!nb_map_is_percpu(type)) {
		*size = value_size;
		return 0;
	}
	ncpus = libbpf_num_possible_cpus();
	if (ncpus < 0)
		return ncpus;
	*size = (((size_t)value_size + 7) & ~(size_t)7) * (size_t)ncpus;
	return 0;
}

int nb_map_lookup(int fd, const void *key, void *value)
{
	return bpf_map_lookup_elem(fd, key, value);
}

int nb_map_update(int fd, const void *key, const void *value, uint64_t flags)
{
	return bpf_map_update_elem(fd, key, value, flags);
}

int nb_map_delete(int fd, const void *key)
{
	return bpf_map_delete_elem(fd, key);
}

int nb_map_next_key(int fd, const void *key, void *next)
{
	return bpf_map_get_next_key(fd, key, next);
}

int nb_map_keys(int fd, uint32_t key_size, uint32_t max_entries, uint8_t **keys,
		size_t *count)
{
	size_t cap = 64, n = 0;
	uint8_t *buf, *grown;
	int err = 0;

	*keys = NULL;
	*count = 0;
	if (key_size == 0)
		return -EINVAL;
	buf = malloc(cap * key_size);
	if (!buf)
		return -ENOMEM;
	while (n < max_entries) {
		if (n == cap) {
			cap *= 2;
			grown = realloc(buf, cap * key_size);
			if (!grown) {
				err = -ENOMEM;
				break;
			}
			buf = grown;
		}
		err = bpf_map_get_next_key(fd, n ? buf + (n - 1) * key_size : NULL,
					   buf + n * key_size);
		if (err == -ENOENT) {
			err = 0;
			break;
		}
		if (err)
			break;
		n++;
	}
	if (err) {
		free(buf);
		return err;
	}
	*keys = buf;
	*count = n;
	return 0;
}

int nb_map_update_batch(int fd, const void *keys, const void *values, uint32_t key_size,
			size_t value_size, uint32_t count, uint64_t flags, uint32_t *written)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = flags);
	__u32 n = count, i;
	int err;

	*written = 0;
	if (count == 0)
		return 0;
	err = bpf_map_update_batch(fd, keys, values, &n, &opts);
	if (!err) {
		*written = count;
		return 0;
	}
	/* no batch op for this map type (LPM trie, ...): the kernel processed nothing */
	if (!(err == -ENOTSUPP || err == -EOPNOTSUPP ||
	      (err == -EINVAL && (n == 0 || n == count)))) {
		*written = n;
		return err;
	}
	for (i = 0; i < count; i++) {
		err = bpf_map_update_elem(fd, (const char *)keys + (size_t)i * key_size,
					  (const char *)values + (size_t)i * value_size, flags);
		if (err) {
			*written = i;
			return err;
		}
	}
	*written = count;
	return 0;
}

int nb_fd_kind(int fd, char *kind, size_t size)
{
	char path[64], target[64];
	const char *p;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = '\0';
	p = strncmp(target, "anon_inode:", 11) == 0 ? target + 11 : target;
	snprintf(kind, size, "%s", p);
	return 0;
}

int nb_obj_get(const char *path, int *fd)
{
	LIBBPF_OPTS(bpf_obj_get_opts, opts);

	*fd = bpf_obj_get_opts(path, &opts);
	if (*fd < 0) {
		int err = *fd;

		*fd = -1;
		return err;
	}
	return 0;
}

int nb_obj_pin(int fd, const char *path)
{
	int err = mkdir_parent_bpffs(path);

	if (err)
		return err;
	return bpf_obj_pin(fd, path);
}

int nb_unpin(const char *path)
{
	int err = is_fs(path, BPF_FS_MAGIC);

	if (err == -ENOENT)
		return 0;
	if (err < 0)
		return err;
	if (!err)
		return -EXDEV; /* never unlink files outside bpffs */
	if (unlink(path) && errno != ENOENT)
		return -errno;
	return 0;
}

int nb_dup_fd(int fd, int *out)
{
	*out = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return *out < 0 ? -errno : 0;
}

int nb_close_fd(int fd)
{
	return close(fd) ? -errno : 0;
}

int nb_netns_enter(const char *path, int *saved)
{
	int self, target, err = 0;

	*saved = -1;
	self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (self < 0)
		return -errno;
	target = open(path, O_RDONLY | O_CLOEXEC);
	if (target < 0) {
		err = -errno;
		close(self);
		return err;
	}
	if (setns(target, CLONE_NEWNET))
		err = -errno;
	close(target);
	if (err) {
		close(self);
		return err;
	}
	*saved = self;
	return 0;
}

int nb_netns_leave(int saved)
{
	int err = setns(saved, CLONE_NEWNET) ? -errno : 0;

	close(saved);
	return err;
}

int nb_socket_in_netns(const char *path, int family, int type, int *fd)
{
	int saved, err, s;

	*fd = -1;
	err = nb_netns_enter(path, &saved);
	if (err)
		return err;
	s = socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	err = s < 0 ? -errno : 0;
	if (nb_netns_leave(saved) && !err) {
		close(s);
		return -EIO; /* could not return to our own namespace */
	}
	if (err)
		return err;
	*fd = s;
	return 0;
}

int nb_listen_tcp_in_netns(const char *path, const char *host, uint16_t port, int backlog,
			   int *fd)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int family, saved, err, s, one = 1;

	*fd = -1;
	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		family = sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		family = sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		len = sizeof(*sin6);
	} else {
		return -EINVAL;
	}

	err = nb_netns_enter(path, &saved);
	if (err)
		return err;
	s = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0)
		err = -errno;
	else if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		 bind(s, (struct sockaddr *)&ss, len) || listen(s, backlog))
		err = -errno;
	if (nb_netns_leave(saved) && !err)
		err = -EIO;
	if (err) {
		if (s >= 0)
			close(s);
		return err;
	}
	*fd = s;
	return 0;
}

int nb_probe(struct nb_probe_result *out)
{
	int fd;

	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "nodal_probe", 4, 4, 1, NULL);
	if (fd >= 0) {
		close(fd);
		out->bpf_syscall = 1;
	} else {
		out->bpf_syscall = fd == -ENOSYS ? 0 : fd;
	}
	out->ringbuf = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL);
	out->cgroup_sock_addr = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, NULL);
	return 0;
}

int nb_num_possible_cpus(void)
{
	return libbpf_num_possible_cpus();
}

int nb_ringbuf_open(int map_fd, nb_record_fn fn, void *ctx, struct ring_buffer **out)
{
	*out = ring_buffer__new(map_fd, fn, ctx, NULL);
	return *out ? 0 : -errno;
}

int nb_ringbuf_poll(struct ring_buffer *rb, int timeout_ms)
{
	return ring_buffer__poll(rb, timeout_ms);
}

void nb_ringbuf_free(struct ring_buffer *rb)
{
	ring_buffer__free(rb);
}
