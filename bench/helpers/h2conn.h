// What the bench's two libnghttp2 helpers share (grpc-backend.c, openloop-h2.c; each
// includes this, and cc finds it next to their source): a connection with its nghttp2
// session on an epoll set, nghttp2's send callback for it, and the epoll interest that
// follows whether the session has bytes to write.
#ifndef NODAL_BENCH_H2CONN_H
#define NODAL_BENCH_H2CONN_H

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <sys/epoll.h>
#include <sys/socket.h>

struct conn {
  int fd;
  int want_write; /* EPOLLOUT is set */
  nghttp2_session *s;
};

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *user) {
  (void)s; (void)flags;
  struct conn *c = user;
  /* a peer gone mid-answer is an error for its connection, not SIGPIPE for the process */
  ssize_t w = send(c->fd, data, len, MSG_NOSIGNAL);
  if (w < 0) return errno == EAGAIN ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
  return w;
}

/* EPOLLOUT on `ep` while the session has bytes the socket did not take */
static void watch_writes(int ep, struct conn *c) {
  int want = nghttp2_session_want_write(c->s);
  if (want == c->want_write) return;
  struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c };
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  c->want_write = want;
}

#endif
