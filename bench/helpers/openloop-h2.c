// An open-loop HTTP/2 (h2c, prior knowledge) and gRPC load generator for bench/proxy.ts:
// the same as openloop.c, for HTTP/2. Requests come due at a fixed rate, evenly spaced,
// and each goes out at once as a new stream on one of a few connections (round robin), so
// none waits for another's answer; its latency runs from when it was due to its last frame.
// h2load --rps with ten clients sends its ten requests together every ten milliseconds and
// times each from its own send; this does neither. HTTP/2 framing, HPACK and flow control
// are libnghttp2's (Debian's libnghttp2-dev), the library h2load itself is built on.
//
// Build: cc -O2 -o openloop-h2 openloop-h2.c -lnghttp2 (bench/proxy.ts builds it).
// Run:   openloop-h2 <ip> <port> <path> <requests/s> <seconds> <connections> <log file> [gRPC body file]
// Without a body file: GET, and a 2xx :status is a success. With one: a gRPC unary call
// (POST, content-type application/grpc, te: trailers, the file as its framed message), and
// a success also needs grpc-status 0.
// Prints one JSON line: {"due":N,"done":N,"errors":N,"late":N,"maxLagUs":N}; the log
// file gets a line per request that ended: latency from due (µs), status, and when it was
// due (µs from the first), tab-separated. The status is the :status; 1000 + grpc-status for
// a gRPC call that answered 200 with another grpc-status; minus the error code of a reset
// stream; 0 for a request lost with its connection (which is then opened again). "late"
// counts requests sent over a millisecond after they were due (this process was not run).
// Exits 1 on a usage or connect error, with the reason on stderr.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "h2conn.h"

#define MAX_CONNS 64
#define UA "h2load nghttp2/" NGHTTP2_VERSION /* what the warm-up (h2load) sends */

struct req {
  int64_t due;     /* ns */
  int status;      /* :status */
  int grpc;        /* grpc-status, -1 until seen */
  size_t sent;     /* body bytes handed to nghttp2 */
  struct conn *c;
};

static struct conn conns[MAX_CONNS];
static int nconns, ep;
static struct sockaddr_in addr;
static char *body;
static size_t bodylen;
static FILE *logf;
static int64_t t0;
static long done, errors;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, const char *why) {
  fprintf(stderr, "openloop-h2: %s: %s\n", what, why);
  exit(1);
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *user) {
  (void)flags; (void)user; (void)vlen;
  struct req *r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (!r) return 0;
  if (nlen == 7 && memcmp(name, ":status", 7) == 0) r->status = atoi((const char *)value);
  else if (nlen == 11 && memcmp(name, "grpc-status", 11) == 0) r->grpc = atoi((const char *)value);
  return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *user) {
  (void)user;
  struct req *r = nghttp2_session_get_stream_user_data(s, id);
  if (!r) return 0;
  int64_t t = now_ns();
  int ok = code == NGHTTP2_NO_ERROR && r->status >= 200 && r->status < 300 && (!body || r->grpc == 0);
  int shown = body && r->status == 200 && r->grpc != 0 ? 1000 + r->grpc : r->status;
  if (code != NGHTTP2_NO_ERROR) shown = -(int)code;
  fprintf(logf, "%ld\t%d\t%ld\n", (long)((t - r->due) / 1000), shown, (long)((r->due - t0) / 1000));
  if (ok) done++;
  else errors++;
  r->c = NULL;
  return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                               nghttp2_data_source *src, void *user) {
  (void)s; (void)id; (void)user;
  struct req *r = src->ptr;
  size_t n = bodylen - r->sent < len ? bodylen - r->sent : len;
  memcpy(buf, body + r->sent, n);
  r->sent += n;
  if (r->sent == bodylen) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

/* write what the session has to send; 0 when the connection failed (the caller redials) */
static int flush(struct conn *c) {
  if (nghttp2_session_send(c->s) != 0) return 0;
  watch_writes(ep, c);
  return 1;
}

static void dial(struct conn *c) {
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0) die("socket", strerror(errno));
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect", strerror(errno));
  fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_send_callback(cb, on_send);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
  nghttp2_session_client_new(&c->s, cb, c);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000 } };
  nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 1);
  c->want_write = 0;
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
  if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl", strerror(errno));
  if (!flush(c)) die("send", "a new connection failed at once");
}

static struct req *reqs;
static long sent;

/* the server closed or broke the connection: its streams in flight failed; open another */
static void redial(struct conn *c) {
  int64_t t = now_ns();
  for (long i = 0; i < sent; i++) {
    struct req *r = &reqs[i];
    if (r->c != c) continue;
    fprintf(logf, "%ld\t%d\t%ld\n", (long)((t - r->due) / 1000), 0, (long)((r->due - t0) / 1000));
    errors++;
    r->c = NULL;
  }
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  nghttp2_session_del(c->s);
  dial(c);
}

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME }

int main(int argc, char **argv) {
  if (argc != 8 && argc != 9) {
    fprintf(stderr, "usage: openloop-h2 <ip> <port> <path> <requests/s> <seconds> <connections> <log file> [gRPC body file]\n");
    return 1;
  }
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) die("bad address", argv[1]);
  double rate = atof(argv[4]), seconds = atof(argv[5]);
  nconns = atoi(argv[6]);
  if (rate <= 0 || seconds <= 0 || nconns < 1 || nconns > MAX_CONNS) die("usage", "bad rate, seconds or connections");
  if (argc == 9) {
    FILE *f = fopen(argv[8], "rb");
    if (!f) die(argv[8], strerror(errno));
    body = malloc(1 << 20);
    bodylen = fread(body, 1, 1 << 20, f);
    fclose(f);
  }
  logf = fopen(argv[7], "w");
  if (!logf) die(argv[7], strerror(errno));
  char authority[64], clen[24];
  snprintf(authority, sizeof authority, "%s:%s", argv[1], argv[2]);
  snprintf(clen, sizeof clen, "%zu", bodylen);
  nghttp2_nv get[] = { NV(":method", "GET"), NV(":path", argv[3]), NV(":scheme", "http"), NV(":authority", authority),
                       NV("accept", "*/*"), NV("accept-encoding", "gzip, deflate"), NV("user-agent", UA) };
  nghttp2_nv post[] = { NV(":method", "POST"), NV(":path", argv[3]), NV(":scheme", "http"), NV(":authority", authority),
                        NV("accept", "*/*"), NV("accept-encoding", "gzip, deflate"), NV("user-agent", UA),
                        NV("content-type", "application/grpc"), NV("te", "trailers"), NV("content-length", clen) };

  ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1", strerror(errno));
  for (int i = 0; i < nconns; i++) dial(&conns[i]);

  const int64_t step = (int64_t)(1e9 / rate);
  const long total = (long)(rate * seconds);
  reqs = calloc((size_t)total, sizeof *reqs);
  t0 = now_ns() + 10000000; /* 10 ms from now */
  const int64_t deadline = t0 + (int64_t)(seconds * 1e9) + 5000000000LL;
  long late = 0;
  int64_t maxLag = 0;
  struct epoll_event evs[MAX_CONNS];
  uint8_t buf[65536];

  while (done + errors < total && now_ns() < deadline) {
    int64_t now = now_ns();
    /* every request that has come due goes out now, on the next connection in turn */
    for (; sent < total && t0 + sent * step <= now; sent++) {
      struct req *r = &reqs[sent];
      struct conn *c = &conns[sent % nconns];
      r->due = t0 + sent * step;
      r->grpc = -1;
      r->c = c;
      if (now - r->due > maxLag) maxLag = now - r->due;
      if (now - r->due > 1000000) late++;
      nghttp2_data_provider dp = { .source.ptr = r, .read_callback = read_body };
      int32_t id = body ? nghttp2_submit_request(c->s, NULL, post, sizeof post / sizeof post[0], &dp, r)
                        : nghttp2_submit_request(c->s, NULL, get, sizeof get / sizeof get[0], NULL, r);
      if (id < 0) { errors++; continue; }
      if (!flush(c)) redial(c);
    }
    int64_t wait = sent < total ? t0 + sent * step - now_ns() : 100000000;
    if (wait < 0) wait = 0;
    struct timespec ts = { .tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000 };
    int n = epoll_pwait2(ep, evs, MAX_CONNS, &ts, NULL);
    if (n < 0 && errno != EINTR) die("epoll_pwait2", strerror(errno));
    for (int e = 0; e < n; e++) {
      struct conn *c = evs[e].data.ptr;
      if (evs[e].events & EPOLLIN) {
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r < 0 && errno == EAGAIN) { /* nothing yet */ }
        else if (r <= 0 || nghttp2_session_mem_recv(c->s, buf, (size_t)r) < 0) { redial(c); continue; }
      }
      if (!flush(c)) redial(c);
    }
  }
  fclose(logf);
  printf("{\"due\":%ld,\"done\":%ld,\"errors\":%ld,\"late\":%ld,\"maxLagUs\":%ld}\n", total, done, errors, late, (long)(maxLag / 1000));
  return 0;
}
