// JS-facing half of the addon: argument checks, errors, and the free functions.
// Thin by design: every kernel call goes through bpf_ops.c. C++ exceptions are off
// (NAPI_DISABLE_CPP_EXCEPTIONS): a failing function throws a JS error and returns.
#include <napi.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "addon.h"
#include "bpf_ops.h"

namespace nodal {

// each .cc file contributes one class
Napi::Function InitObject(Napi::Env env);
Napi::Function InitMap(Napi::Env env);
Napi::Function InitLink(Napi::Env env);
Napi::Function InitReader(Napi::Env env);

namespace {

struct AddonData {
  // native/errors.ts fromNative(): turns {kind, op, errno, ...} into a BpfError
  Napi::FunctionReference makeError;
};

}  // namespace

Napi::Value MakeBpfError(Napi::Env env, const char *kind, const std::string &op, int err,
                         const std::string &detail, const std::string &hint,
                         const std::string *log) {
  Napi::Object info = Napi::Object::New(env);
  info.Set("kind", kind);
  info.Set("op", op);
  info.Set("errno", Napi::Number::New(env, err < 0 ? -err : err));
  if (!detail.empty()) info.Set("detail", detail);
  if (!hint.empty()) info.Set("hint", hint);
  if (log) info.Set("verifierLog", *log);

  AddonData *data = env.GetInstanceData<AddonData>();
  if (data && !data->makeError.IsEmpty()) {
    Napi::Value e = data->makeError.Call({info});
    if (env.IsExceptionPending()) return Napi::Value();
    return e;
  }
  // init() was not called: still say what failed
  std::string msg = op + ": " + (detail.empty() ? "errno " + std::to_string(err < 0 ? -err : err) : detail);
  Napi::Object e = Napi::Error::New(env, msg).Value();
  e.Set("code", "NODAL_ERR_BPF_" + std::string(kind));
  return e;
}

void ThrowBpf(Napi::Env env, const char *kind, const std::string &op, int err,
              const std::string &detail, const std::string &hint, const std::string *log) {
  Napi::Value e = MakeBpfError(env, kind, op, err, detail, hint, log);
  if (!e.IsEmpty()) napi_throw(env, e);
}

bool ArgString(const Napi::CallbackInfo &info, size_t i, const std::string &op,
               const char *what, std::string *out) {
  if (!info[i].IsString()) {
    ThrowBpf(info.Env(), "arg", op, EINVAL, std::string(what) + " must be a string", "", nullptr);
    return false;
  }
  *out = info[i].As<Napi::String>().Utf8Value();
  if (out->empty() || out->find('\0') != std::string::npos) {
    ThrowBpf(info.Env(), "arg", op, EINVAL, std::string(what) + " must be a non-empty string", "", nullptr);
    return false;
  }
  return true;
}

bool ArgBytes(const Napi::CallbackInfo &info, size_t i, const std::string &op,
              const char *what, uint8_t **data, size_t *len) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowBpf(info.Env(), "arg", op, EINVAL, std::string(what) + " must be a Buffer", "", nullptr);
    return false;
  }
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  *data = a.Data();
  *len = a.ByteLength();
  return true;
}

bool ArgU32(const Napi::CallbackInfo &info, size_t i, const std::string &op, const char *what,
            uint32_t *out) {
  Napi::Value v = info[i];
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0 && d <= 4294967295.0) || d != static_cast<double>(static_cast<uint32_t>(d))) {
    ThrowBpf(info.Env(), "arg", op, EINVAL, std::string(what) + " must be an integer in [0, 2^32)", "",
             nullptr);
    return false;
  }
  *out = static_cast<uint32_t>(d);
  return true;
}

bool ArgFd(const Napi::CallbackInfo &info, size_t i, const std::string &op, int *fd) {
  uint32_t v;
  if (!ArgU32(info, i, op, "fd", &v)) return false;
  if (v > 0x7fffffff) {
    ThrowBpf(info.Env(), "arg", op, EBADF, "fd out of range", "", nullptr);
    return false;
  }
  *fd = static_cast<int>(v);
  return true;
}

namespace {

Napi::Value SetErrorFactory(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) {
    ThrowBpf(env, "arg", "native init", EINVAL, "error factory must be a function", "", nullptr);
    return env.Undefined();
  }
  env.GetInstanceData<AddonData>()->makeError = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

// openPinned(path, "link" | "map"): fd of a pinned object of that kind
Napi::Value OpenPinned(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path, what;
  if (!ArgString(info, 1, "open pinned object", "kind", &what)) return env.Undefined();
  std::string op = "open pinned " + what;
  if (!ArgString(info, 0, op, "path", &path)) return env.Undefined();
  op += " " + path;
  int fd, err = nb_obj_get(path.c_str(), &fd);
  if (err) {
    ThrowBpf(env, "pin", op, err, "", "", nullptr);
    return env.Undefined();
  }
  char kind[64];
  err = nb_fd_kind(fd, kind, sizeof(kind));
  std::string want = "bpf-" + what;
  if (err || want != kind) {
    nb_close_fd(fd);
    ThrowBpf(env, "pin", op, err ? err : EINVAL,
             err ? "" : std::string("pinned object is a ") + kind + ", not a " + want, "", nullptr);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

Napi::Value Unpin(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgString(info, 0, "unpin", "path", &path)) return env.Undefined();
  int err = nb_unpin(path.c_str());
  if (err) ThrowBpf(env, "pin", "unpin " + path, err, "", "", nullptr);
  return env.Undefined();
}

Napi::Value CloseFd(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, "close fd", &fd)) return env.Undefined();
  int err = nb_close_fd(fd);
  if (err) ThrowBpf(env, "arg", "close fd " + std::to_string(fd), err, "", "", nullptr);
  return env.Undefined();
}

Napi::Value NetnsEnter(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgString(info, 0, "enter netns", "path", &path)) return env.Undefined();
  int saved, err = nb_netns_enter(path.c_str(), &saved);
  if (err) {
    ThrowBpf(env, "netns", "enter netns " + path, err, "", "", nullptr);
    return env.Undefined();
  }
  return Napi::Number::New(env, saved);
}

Napi::Value NetnsLeave(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int saved;
  if (!ArgFd(info, 0, "leave netns", &saved)) return env.Undefined();
  int err = nb_netns_leave(saved);
  if (err)
    ThrowBpf(env, "netns", "leave netns", err, "",
             "the main thread could not return to its own network namespace", nullptr);
  return env.Undefined();
}

// socketInNetns(path, 4 | 6, "tcp" | "udp")
Napi::Value SocketInNetns(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path, type;
  uint32_t family;
  if (!ArgString(info, 0, "socket in netns", "path", &path) ||
      !ArgU32(info, 1, "socket in netns", "family", &family) ||
      !ArgString(info, 2, "socket in netns", "type", &type))
    return env.Undefined();
  std::string op = "socket " + type + std::to_string(family) + " in netns " + path;
  if ((family != 4 && family != 6) || (type != "tcp" && type != "udp")) {
    ThrowBpf(env, "arg", op, EINVAL, "family must be 4 or 6 and type 'tcp' or 'udp'", "", nullptr);
    return env.Undefined();
  }
  int fd, err = nb_socket_in_netns(path.c_str(), family == 4 ? AF_INET : AF_INET6,
                                   type == "tcp" ? SOCK_STREAM : SOCK_DGRAM, &fd);
  if (err) {
    ThrowBpf(env, "netns", op, err, "", "", nullptr);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// listenTcpInNetns(path, host, port, backlog)
Napi::Value ListenTcpInNetns(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path, host;
  uint32_t port, backlog;
  if (!ArgString(info, 0, "listen in netns", "path", &path) ||
      !ArgString(info, 1, "listen in netns", "host", &host) ||
      !ArgU32(info, 2, "listen in netns", "port", &port) ||
      !ArgU32(info, 3, "listen in netns", "backlog", &backlog))
    return env.Undefined();
  std::string op = "listen tcp " + host + ":" + std::to_string(port) + " in netns " + path;
  if (port > 65535 || backlog > 65535) {
    ThrowBpf(env, "arg", op, EINVAL, "port and backlog must be at most 65535", "", nullptr);
    return env.Undefined();
  }
  int fd, err = nb_listen_tcp_in_netns(path.c_str(), host.c_str(), static_cast<uint16_t>(port),
                                       static_cast<int>(backlog), &fd);
  if (err) {
    ThrowBpf(env, "netns", op, err, "", "", nullptr);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

bool AttachTypeByName(const std::string &name, enum bpf_attach_type *type) {
  static const struct {
    const char *name;
    enum bpf_attach_type type;
  } kTypes[] = {
      {"connect4", BPF_CGROUP_INET4_CONNECT}, {"connect6", BPF_CGROUP_INET6_CONNECT},
      {"sock_ops", BPF_CGROUP_SOCK_OPS},      {"ingress", BPF_CGROUP_INET_INGRESS},
      {"egress", BPF_CGROUP_INET_EGRESS},
  };
  for (const auto &t : kTypes) {
    if (name == t.name) {
      *type = t.type;
      return true;
    }
  }
  return false;
}

// cgroupQuery(path, "connect4" | ...): prog ids attached directly to that cgroup
Napi::Value CgroupQuery(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path, name;
  if (!ArgString(info, 0, "cgroup query", "cgroup path", &path) ||
      !ArgString(info, 1, "cgroup query", "attach type", &name))
    return env.Undefined();
  std::string op = "query cgroup/" + name + " on " + path;
  enum bpf_attach_type type;
  if (!AttachTypeByName(name, &type)) {
    ThrowBpf(env, "arg", op, EINVAL, "unknown attach type '" + name + "'", "", nullptr);
    return env.Undefined();
  }
  std::vector<uint32_t> ids(64);
  uint32_t count = static_cast<uint32_t>(ids.size());
  int err = nb_cgroup_query(path.c_str(), type, ids.data(), &count);
  if (err == -ENOSPC && count > ids.size()) {
    ids.resize(count);
    err = nb_cgroup_query(path.c_str(), type, ids.data(), &count);
  }
  if (err) {
    ThrowBpf(env, "attach", op, err, "", "", nullptr);
    return env.Undefined();
  }
  Napi::Array out = Napi::Array::New(env, count);
  for (uint32_t i = 0; i < count && i < ids.size(); i++) out.Set(i, Napi::Number::New(env, ids[i]));
  return out;
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int n = nb_num_possible_cpus();
  if (n < 0) {
    ThrowBpf(env, "map", "count possible CPUs", n, "", "", nullptr);
    return env.Undefined();
  }
  return Napi::Number::New(env, n);
}

// probe(): {bpfSyscall, ringbuf, cgroupSockAddr}, each 1 / 0 / -errno
Napi::Value Probe(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct nb_probe_result r;
  nb_probe(&r);
  Napi::Object out = Napi::Object::New(env);
  out.Set("bpfSyscall", r.bpf_syscall);
  out.Set("ringbuf", r.ringbuf);
  out.Set("cgroupSockAddr", r.cgroup_sock_addr);
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  nb_init();
  env.SetInstanceData(new AddonData());
  exports.Set("init", Napi::Function::New(env, SetErrorFactory, "init"));
  exports.Set("openPinned", Napi::Function::New(env, OpenPinned, "openPinned"));
  exports.Set("unpin", Napi::Function::New(env, Unpin, "unpin"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("netnsEnter", Napi::Function::New(env, NetnsEnter, "netnsEnter"));
  exports.Set("netnsLeave", Napi::Function::New(env, NetnsLeave, "netnsLeave"));
  exports.Set("socketInNetns", Napi::Function::New(env, SocketInNetns, "socketInNetns"));
  exports.Set("listenTcpInNetns", Napi::Function::New(env, ListenTcpInNetns, "listenTcpInNetns"));
  exports.Set("cgroupQuery", Napi::Function::New(env, CgroupQuery, "cgroupQuery"));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus, "numPossibleCpus"));
  exports.Set("probe", Napi::Function::New(env, Probe, "probe"));
  exports.Set("BpfObject", InitObject(env));
  exports.Set("BpfMap", InitMap(env));
  exports.Set("BpfLink", InitLink(env));
  exports.Set("RingReader", InitReader(env));
  return exports;
}

}  // namespace
}  // namespace nodal

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return nodal::Init(env, exports); }

NODE_API_MODULE(nodal_native, InitModule)
