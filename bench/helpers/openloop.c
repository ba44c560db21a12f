// An open-loop HTTP/1.1 load generator for bench/proxy.ts: GET requests due at a fixed
// rate, evenly spaced, over a few keep-alive connections, each request's latency counted
// from when it was due, not from when it could be sent. h2load --rps sends about ten
// requests back to back every ten milliseconds and times each from its own send, so a
// request's wait behind the one before it (coordinated omission) is not counted; this
// does not do either. A request due while every connection is busy waits for one, and that
// wait is part of its latency.
//
// Build: cc -O2 -o openloop openloop.c (bench/proxy.ts builds it into its temp directory).
// Run:   openloop <ip> <port> <path> <requests/s> <seconds> <connections> <log file>
// Prints one JSON line: {"due":N,"done":N,"errors":N,"late":N,"maxLagUs":N}; the log
// file gets a line per answered request: latency from due (µs), status, and when it was
// due (µs from the first), tab-separated.
// Exits 1 on a usage or connect error, with the reason on stderr.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64
#define BUF 65536

struct conn {
  int fd;
  int busy;            /* a request is in flight */
  int64_t due;         /* when that request was due (ns) */
  char buf[BUF];
  size_t len;
};

static struct conn conns[MAX_CONNS];
static int nconns;
static struct sockaddr_in addr;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "openloop: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int dial(int ep, int i) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  return fd;
}

/* the length of the first whole response in b, 0 if not whole yet, -1 if not HTTP */
static long whole(const char *b, size_t n, int *status) {
  const char *end = memmem(b, n, "\r\n\r\n", 4);
  if (!end) return 0;
  if (n < 12 || strncmp(b, "HTTP/1.", 7) != 0) return -1;
  *status = atoi(b + 9);
  size_t head = (size_t)(end - b) + 4;
  long body = -1;
  int chunked = 0;
  for (const char *l = memchr(b, '\n', head); l && l < end; l = memchr(l + 1, '\n', (size_t)(end - l))) {
    if (strncasecmp(l + 1, "content-length:", 15) == 0) body = atol(l + 16);
    else if (strncasecmp(l + 1, "transfer-encoding:", 18) == 0 && memmem(l, (size_t)(end - l), "chunked", 7)) chunked = 1;
  }
  if (chunked) {
    const char *last = memmem(b + head, n - head, "0\r\n\r\n", 5);
    return last ? (long)(last - b) + 5 : 0;
  }
  if (body < 0) body = 0;
  return head + (size_t)body <= n ? (long)(head + (size_t)body) : 0;
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: openloop <ip> <port> <path> <requests/s> <seconds> <connections> <log file>\n");
    return 1;
  }
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) { fprintf(stderr, "openloop: bad address %s\n", argv[1]); return 1; }
  double rate = atof(argv[4]), seconds = atof(argv[5]);
  nconns = atoi(argv[6]);
  if (rate <= 0 || seconds <= 0 || nconns < 1 || nconns > MAX_CONNS) { fprintf(stderr, "openloop: bad rate, seconds or connections\n"); return 1; }
  FILE *log = fopen(argv[7], "w");
  if (!log) die(argv[7]);
  char req[1024];
  /* the request wrk sends: the proxy warmed up on wrk's, and one with other headers would
     make V8 throw its optimized code away and compile again during the run */
  int reqlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%s\r\n\r\n", argv[3], argv[1], argv[2]);

  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  for (int i = 0; i < nconns; i++) conns[i].fd = dial(ep, i);

  const int64_t step = (int64_t)(1e9 / rate);
  const long total = (long)(rate * seconds);
  const int64_t t0 = now_ns() + 10000000; /* 10 ms from now */
  const int64_t deadline = t0 + (int64_t)(seconds * 1e9) + 5000000000LL;
  long next = 0;      /* the next request to come due */
  long sent = 0;      /* requests sent: every one before it is due and sent, in order */
  long done = 0, errors = 0, late = 0;
  int64_t maxLag = 0;
  struct epoll_event evs[MAX_CONNS];

  while (done + errors < total && now_ns() < deadline) {
    int64_t now = now_ns();
    while (next < total && t0 + next * step <= now) next++;
    /* send every due request a free connection can take, oldest first */
    for (int i = 0; i < nconns && sent < next; i++) {
      if (conns[i].busy) continue;
      int64_t due = t0 + sent * step;
      if (now - due > maxLag) maxLag = now - due;
      if (now - due > 1000000) late++; /* waited over a millisecond for a connection */
      if (send(conns[i].fd, req, (size_t)reqlen, MSG_NOSIGNAL) != reqlen) { errors++; sent++; continue; }
      conns[i].busy = 1;
      conns[i].due = due;
      sent++;
    }
    int64_t wait = next < total ? t0 + next * step - now_ns() : 100000000;
    if (wait < 0) wait = 0;
    struct timespec ts = { .tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000 };
    int n = epoll_pwait2(ep, evs, MAX_CONNS, &ts, NULL);
    if (n < 0 && errno != EINTR) die("epoll_pwait2");
    for (int e = 0; e < n; e++) {
      struct conn *c = &conns[evs[e].data.u32];
      ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
      if (r <= 0) {
        if (r < 0 && errno == EAGAIN) continue;
        /* the server closed: a request in flight failed; open another connection */
        if (c->busy) errors++;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = dial(ep, (int)(c - conns));
        c->busy = 0;
        c->len = 0;
        continue;
      }
      c->len += (size_t)r;
      int status = 0;
      long len = whole(c->buf, c->len, &status);
      if (len == 0) {
        if (c->len == BUF) { errno = EMSGSIZE; die("answer too large"); }
        continue;
      }
      if (len < 0 || !c->busy) { errno = EPROTO; die("not an HTTP/1.1 answer to a request"); }
      int64_t t = now_ns();
      fprintf(log, "%ld\t%d\t%ld\n", (long)((t - c->due) / 1000), status, (long)((c->due - t0) / 1000));
      if (status >= 200 && status < 300) done++;
      else errors++;
      memmove(c->buf, c->buf + len, c->len - (size_t)len);
      c->len -= (size_t)len;
      c->busy = 0;
    }
  }
  fclose(log);
  printf("{\"due\":%ld,\"done\":%ld,\"errors\":%ld,\"late\":%ld,\"maxLagUs\":%ld}\n", total, done, errors, late, (long)(maxLag / 1000));
  return 0;
}
