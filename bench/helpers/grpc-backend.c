// The gRPC backend of bench/proxy.ts: one raw-bytes unary method over h2c,
// /demo.Greeter/Hello, which answers "hello <request>" (gRPC-framed, grpc-status 0 in the
// trailers). Written in C on libnghttp2 (HTTP/2 framing, HPACK, flow control, PINGs), as
// nginx is the HTTP backend: a backend on a garbage-collected runtime pauses, and every
// gRPC path, direct included, would carry its pauses in its p99 (grpc-js on the load CPU
// read a direct p99 of 18–57 ms at 1,000 evenly spaced calls/s, here). Any other path
// answers 404 with grpc-status 12 (UNIMPLEMENTED).
//
// Build: cc -O2 -o grpc-backend grpc-backend.c -lnghttp2 (bench/proxy.ts builds it).
// Run:   grpc-backend <ip:port>... ; prints "ready" once every address is bound, and exits
// when its stdin ends (the bench holds it open).
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
#include <unistd.h>

#include "h2conn.h"

#define METHOD "/demo.Greeter/Hello"
#define MAX_MESSAGE 4096

struct call {
  int known;                 /* :path is the method */
  uint8_t in[MAX_MESSAGE];   /* the request's gRPC frame */
  size_t inlen;
  uint8_t out[MAX_MESSAGE + 16];
  size_t outlen, outsent;
};

static int ep;

static void die(const char *what) {
  fprintf(stderr, "grpc-backend: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *user) {
  (void)user;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  struct call *k = calloc(1, sizeof *k);
  if (!k) return NGHTTP2_ERR_CALLBACK_FAILURE;
  nghttp2_session_set_stream_user_data(s, f->hd.stream_id, k);
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *user) {
  (void)flags; (void)user;
  struct call *k = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (k && nlen == 5 && memcmp(name, ":path", 5) == 0) k->known = vlen == sizeof METHOD - 1 && memcmp(value, METHOD, vlen) == 0;
  return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user) {
  (void)flags; (void)user;
  struct call *k = nghttp2_session_get_stream_user_data(s, id);
  if (!k) return 0;
  if (k->inlen + len > MAX_MESSAGE) return nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
  memcpy(k->in + k->inlen, data, len);
  k->inlen += len;
  return 0;
}

static ssize_t read_answer(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                           nghttp2_data_source *src, void *user) {
  (void)user;
  struct call *k = src->ptr;
  size_t n = k->outlen - k->outsent < len ? k->outlen - k->outsent : len;
  memcpy(buf, k->out + k->outsent, n);
  k->outsent += n;
  if (k->outsent == k->outlen) {
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    nghttp2_nv trailers[] = { { (uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NONE } };
    if (nghttp2_submit_trailer(s, id, trailers, 1) != 0) return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return (ssize_t)n;
}

/* the request is whole: answer it */
static int on_frame(nghttp2_session *s, const nghttp2_frame *f, void *user) {
  (void)user;
  if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM) || (f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS)) return 0;
  int32_t id = f->hd.stream_id;
  struct call *k = nghttp2_session_get_stream_user_data(s, id);
  if (!k) return 0;
  if (!k->known) {
    nghttp2_nv h[] = { { (uint8_t *)":status", (uint8_t *)"404", 7, 3, 0 }, { (uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0 },
                       { (uint8_t *)"grpc-status", (uint8_t *)"12", 11, 2, 0 } };
    return nghttp2_submit_response(s, id, h, 3, NULL);
  }
  /* "hello " + the message: the request's 5-byte frame header off, the answer's on */
  size_t msg = k->inlen >= 5 ? k->inlen - 5 : 0;
  uint32_t n = (uint32_t)(6 + msg);
  k->out[0] = 0;
  k->out[1] = (uint8_t)(n >> 24); k->out[2] = (uint8_t)(n >> 16); k->out[3] = (uint8_t)(n >> 8); k->out[4] = (uint8_t)n;
  memcpy(k->out + 5, "hello ", 6);
  memcpy(k->out + 11, k->in + 5, msg);
  k->outlen = 11 + msg;
  nghttp2_nv h[] = { { (uint8_t *)":status", (uint8_t *)"200", 7, 3, 0 }, { (uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0 } };
  nghttp2_data_provider dp = { .source.ptr = k, .read_callback = read_answer };
  return nghttp2_submit_response(s, id, h, 2, &dp);
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *user) {
  (void)code; (void)user;
  free(nghttp2_session_get_stream_user_data(s, id));
  return 0;
}

static nghttp2_session_callbacks *callbacks;

static void drop(struct conn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  nghttp2_session_del(c->s); /* calls still open here are not freed: a few KiB, and only at the bench's end */
  free(c);
}

/* write what the session has to send; 0 when the connection is done */
static int flush(struct conn *c) {
  if (nghttp2_session_send(c->s) != 0) return 0;
  if (!nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s)) return 0;
  watch_writes(ep, c);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: grpc-backend <ip:port>...\n"); return 1; }
  ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session_callbacks_set_send_callback(callbacks, on_send);
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_close);

  /* listeners carry their fd as a negative number, connections their struct */
  for (int i = 1; i < argc; i++) {
    char host[64];
    const char *colon = strrchr(argv[i], ':');
    struct sockaddr_in a = { .sin_family = AF_INET };
    if (!colon || (size_t)(colon - argv[i]) >= sizeof host) { fprintf(stderr, "grpc-backend: bad address %s\n", argv[i]); return 1; }
    memcpy(host, argv[i], (size_t)(colon - argv[i]));
    host[colon - argv[i]] = 0;
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) { fprintf(stderr, "grpc-backend: bad address %s\n", argv[i]); return 1; }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    if (fd < 0) die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die(argv[i]);
    if (listen(fd, 1024) < 0) die("listen");
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)(-(int64_t)fd) };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  }
  struct epoll_event in = { .events = EPOLLIN, .data.u64 = 0 }; /* stdin: its end ends this */
  if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &in) < 0) die("epoll_ctl stdin");
  printf("ready\n");
  fflush(stdout);

  struct epoll_event evs[64];
  uint8_t buf[65536];
  for (;;) {
    int n = epoll_wait(ep, evs, 64, -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int e = 0; e < n; e++) {
      int64_t tag = (int64_t)evs[e].data.u64;
      if (tag == 0) {
        if (read(0, buf, sizeof buf) <= 0) return 0;
        continue;
      }
      if (tag < 0) {
        int fd = accept4((int)-tag, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) die("calloc");
        c->fd = fd;
        nghttp2_session_server_new(&c->s, callbacks, c);
        nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000 } };
        nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 1);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
        if (!flush(c)) drop(c);
        continue;
      }
      struct conn *c = evs[e].data.ptr;
      if (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r < 0 && errno == EAGAIN) { /* nothing yet */ }
        else if (r <= 0 || nghttp2_session_mem_recv(c->s, buf, (size_t)r) < 0) { drop(c); continue; }
      }
      if (!flush(c)) drop(c);
    }
  }
}
