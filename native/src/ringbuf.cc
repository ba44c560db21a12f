// RingReader: a native thread polls one BPF ring buffer and hands records to JS in
// batches through a thread-safe function owned by this reader (never a global).
//
// Backpressure: the queue towards JS is bounded and the thread uses BlockingCall, so
// a slow JS side stops the thread from consuming; the kernel ring then fills and the
// BPF program counts the records it could not reserve. Nothing is dropped here.
//
// Lifetime: the state is shared by the JS wrapper and the TSFN finalizer. The finalizer
// runs on the main thread after the reader thread released the TSFN (close()) or when
// the environment is torn down (the TSFN is closed first, so a blocked BlockingCall
// returns napi_closing); either way it joins the thread before anything is freed.
#include <napi.h>
#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "addon.h"
#include "bpf_ops.h"

namespace nodal {

namespace {

// batches in flight towards JS; with maxBatch records each this bounds user-space
// buffering to (kMaxQueuedBatches + 1) * maxBatch records
constexpr size_t kMaxQueuedBatches = 4;

struct Batch {
  std::vector<uint8_t> data;
  std::vector<uint32_t> lens;
};

struct ReaderState;
class RingReaderWrap;
void CallJs(Napi::Env env, Napi::Function fn, ReaderState *s, Batch *batch);
using Tsfn = Napi::TypedThreadSafeFunction<ReaderState, Batch, CallJs>;
using Holder = std::shared_ptr<ReaderState>;

struct ReaderState {
  // set on the main thread before the reader thread starts
  int fd = -1;
  struct ring_buffer *rb = nullptr;
  Tsfn tsfn;
  size_t max_batch = 256;
  int poll_ms = 50;
  pthread_t thread{};
  bool thread_started = false;
  std::atomic<bool> stop{false};
  // reader thread only (read by the main thread after join)
  Batch *cur = nullptr;
  bool tsfn_closing = false;
  int poll_err = 0;
  // main thread only
  double delivered = 0;
  bool closing = false;
  bool finished = false;
  bool env_teardown = false;
  bool hook_added = false;
  RingReaderWrap *wrap = nullptr;
  std::vector<Napi::Promise::Deferred> waiters;
};

// reader thread: hand the current batch to JS, waiting while the queue is full
bool Flush(ReaderState *s) {
  if (!s->cur) return !s->tsfn_closing;
  Batch *b = s->cur;
  s->cur = nullptr;
  if (s->tsfn.BlockingCall(b) != napi_ok) {
    delete b;  // the environment is going away: nobody is left to deliver to
    s->tsfn_closing = true;
    return false;
  }
  return true;
}

// reader thread, inside ring_buffer__poll: the record is only valid during this call
int OnRecord(void *ctx, void *data, size_t size) {
  ReaderState *s = static_cast<ReaderState *>(ctx);
  if (s->tsfn_closing) return -ECANCELED;
  if (!s->cur) {
    s->cur = new Batch();
    s->cur->lens.reserve(s->max_batch);
  }
  const uint8_t *p = static_cast<const uint8_t *>(data);
  s->cur->data.insert(s->cur->data.end(), p, p + size);
  s->cur->lens.push_back(static_cast<uint32_t>(size));
  if (s->cur->lens.size() >= s->max_batch && !Flush(s)) return -ECANCELED;
  return 0;
}

void *Run(void *arg) {
  ReaderState *s = static_cast<ReaderState *>(arg);
  while (!s->stop.load(std::memory_order_acquire)) {
    int n = nb_ringbuf_poll(s->rb, s->poll_ms);
    if (n < 0 && n != -EINTR) {
      if (n != -ECANCELED) s->poll_err = n;
      break;
    }
    if (!Flush(s)) break;
  }
  if (!s->tsfn_closing) Flush(s);
  delete s->cur;
  s->cur = nullptr;
  s->tsfn.Release();
  return nullptr;
}

// main thread: one batch becomes one Buffer plus record lengths; the facade slices.
// Raw N-API calls on purpose: while the environment is torn down they fail instead of
// throwing, and the batch goes with the environment.
void CallJs(Napi::Env env, Napi::Function fn, ReaderState *s, Batch *b) {
  std::unique_ptr<Batch> batch(b);
  napi_env e = env;
  if (e == nullptr || fn.IsEmpty() || !batch) return;
  size_t n = batch->lens.size();
  napi_value argv[2], ab, recv;
  void *lens = nullptr;
  if (napi_create_buffer_copy(e, batch->data.size(), batch->data.data(), nullptr, &argv[0]) != napi_ok ||
      napi_create_arraybuffer(e, n * sizeof(uint32_t), &lens, &ab) != napi_ok ||
      napi_create_typedarray(e, napi_uint32_array, n, ab, 0, &argv[1]) != napi_ok ||
      napi_get_undefined(e, &recv) != napi_ok)
    return;
  if (n) memcpy(lens, batch->lens.data(), n * sizeof(uint32_t));
  s->delivered += static_cast<double>(n);
  batch.reset();
  // a throwing callback stays pending and Node reports it as an uncaught exception
  napi_call_function(e, recv, fn, 2, argv, nullptr);
}

void OnEnvCleanup(void *arg) {
  ReaderState *s = static_cast<ReaderState *>(arg);
  s->env_teardown = true;
  s->hook_added = false;
  s->stop.store(true, std::memory_order_release);
}

class RingReaderWrap : public Napi::ObjectWrap<RingReaderWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "RingReader",
                       {
                           InstanceMethod<&RingReaderWrap::Close>("close"),
                           InstanceMethod<&RingReaderWrap::Delivered>("delivered"),
                           InstanceMethod<&RingReaderWrap::RefLoop>("ref"),
                           InstanceMethod<&RingReaderWrap::UnrefLoop>("unref"),
                       });
  }

  // new RingReader(mapFd, onBatch(buf, lens), maxBatch, pollMs): mapFd is borrowed
  explicit RingReaderWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<RingReaderWrap>(info) {
    Napi::Env env = info.Env();
    const std::string op = "subscribe ring buffer";
    int map_fd;
    uint32_t max_batch, poll_ms;
    if (!ArgFd(info, 0, op, &map_fd) || !ArgU32(info, 2, op, "maxBatch", &max_batch) ||
        !ArgU32(info, 3, op, "pollMs", &poll_ms))
      return;
    if (!info[1].IsFunction() || max_batch == 0 || poll_ms == 0 || poll_ms > 60000) {
      ThrowBpf(env, "arg", op, EINVAL, "needs a callback, maxBatch >= 1 and 1 <= pollMs <= 60000", "",
               nullptr);
      return;
    }
    struct nb_map_info mi;
    int err = nb_map_info(map_fd, &mi);
    if (!err && mi.type != BPF_MAP_TYPE_RINGBUF) {
      ThrowBpf(env, "arg", op + " " + mi.name, EINVAL,
               "map " + std::string(mi.name) + " is not a ring buffer (type " + std::to_string(mi.type) + ")", "",
               nullptr);
      return;
    }
    Holder s = std::make_shared<ReaderState>();
    s->max_batch = max_batch;
    s->poll_ms = static_cast<int>(poll_ms);
    if (!err) err = nb_dup_fd(map_fd, &s->fd);
    if (!err) err = nb_ringbuf_open(s->fd, OnRecord, s.get(), &s->rb);
    if (err) {
      if (s->fd >= 0) nb_close_fd(s->fd);
      ThrowBpf(env, "map", op, err, "", "", nullptr);
      return;
    }
    s->tsfn = Tsfn::New(env, info[1].As<Napi::Function>(), "nodal:ringbuf", kMaxQueuedBatches, 1, s.get(),
                        Finalize, new Holder(s));
    if (env.IsExceptionPending()) {
      nb_ringbuf_free(s->rb);
      nb_close_fd(s->fd);
      return;
    }
    if (napi_add_env_cleanup_hook(env, OnEnvCleanup, s.get()) == napi_ok) s->hook_added = true;
    err = pthread_create(&s->thread, nullptr, Run, s.get());
    if (err) {
      s->tsfn.Release();  // the finalizer frees the ring and the fd
      ThrowBpf(env, "map", op, -err, "", "could not start the reader thread", nullptr);
      return;
    }
    s->thread_started = true;
    s->wrap = this;
    state_ = s;
    Ref();  // a running reader stays alive without a JS reference, like a socket
  }

  ~RingReaderWrap() override {
    if (state_) state_->wrap = nullptr;
  }

 private:
  static void Finalize(Napi::Env env, Holder *holder, ReaderState *s) {
    if (s->thread_started) pthread_join(s->thread, nullptr);
    s->thread_started = false;
    nb_ringbuf_free(s->rb);
    s->rb = nullptr;
    if (s->fd >= 0) nb_close_fd(s->fd);
    s->fd = -1;
    s->finished = true;
    if (!s->env_teardown) {
      if (s->hook_added) napi_remove_env_cleanup_hook(env, OnEnvCleanup, s);
      s->hook_added = false;
      for (auto &d : s->waiters) Settle(env, s, d);
      s->waiters.clear();
      if (s->wrap) s->wrap->Unref();
    }
    delete holder;
  }

  static void Settle(Napi::Env env, ReaderState *s, Napi::Promise::Deferred &d) {
    if (!s->poll_err) {
      d.Resolve(env.Undefined());
      return;
    }
    Napi::Value e = MakeBpfError(env, "map", "ring buffer poll", s->poll_err, "", "", nullptr);
    if (e.IsEmpty()) e = env.GetAndClearPendingException().Value();
    d.Reject(e);
  }

  // close(): stop, join, release; resolves when the thread is gone. Idempotent.
  Napi::Value Close(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
    ReaderState *s = state_.get();
    if (!s || s->finished) {
      if (s) Settle(env, s, d);
      else d.Resolve(env.Undefined());
      return d.Promise();
    }
    s->waiters.push_back(d);
    if (!s->closing) {
      s->closing = true;
      s->stop.store(true, std::memory_order_release);
      s->tsfn.Ref(env);  // keep the loop alive until the finalizer settles this promise
    }
    return d.Promise();
  }

  Napi::Value Delivered(const Napi::CallbackInfo &info) {
    return Napi::Number::New(info.Env(), state_ ? state_->delivered : 0);
  }

  Napi::Value RefLoop(const Napi::CallbackInfo &info) {
    if (state_ && !state_->finished && !state_->closing) state_->tsfn.Ref(info.Env());
    return info.Env().Undefined();
  }

  Napi::Value UnrefLoop(const Napi::CallbackInfo &info) {
    if (state_ && !state_->finished && !state_->closing) state_->tsfn.Unref(info.Env());
    return info.Env().Undefined();
  }

  Holder state_;
};

}  // namespace

Napi::Function InitReader(Napi::Env env) { return RingReaderWrap::Init(env); }

}  // namespace nodal
