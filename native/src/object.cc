// BpfObject: one opened BPF ELF object. Opening is synchronous (file parsing only);
// loading runs the verifier and goes to a worker thread, resolving a promise.
#include <napi.h>

#include <cerrno>
#include <string>
#include <vector>

#include "addon.h"
#include "bpf_ops.h"

namespace nodal {

namespace {

std::string LogText(const struct nb_log &log) {
  std::string text = log.truncated ? "[earlier libbpf output truncated]\n" : "";
  if (log.buf) text.append(log.buf, log.len);
  return text;
}

class BpfObjectWrap : public Napi::ObjectWrap<BpfObjectWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "BpfObject",
                       {
                           InstanceMethod<&BpfObjectWrap::Load>("load"),
                           InstanceMethod<&BpfObjectWrap::ProgramNames>("programNames"),
                           InstanceMethod<&BpfObjectWrap::MapInfo>("mapInfo"),
                           InstanceMethod<&BpfObjectWrap::MapFd>("mapFd"),
                           InstanceMethod<&BpfObjectWrap::AttachCgroup>("attachCgroup"),
                           InstanceMethod<&BpfObjectWrap::StructLayout>("structLayout"),
                           InstanceMethod<&BpfObjectWrap::ProgramFd>("programFd"),
                           InstanceMethod<&BpfObjectWrap::Close>("close"),
                       });
  }

  // new BpfObject(path, pinRoot | null, rodata: {name: Buffer} | null, maxEntries: {name: n} | null)
  explicit BpfObjectWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<BpfObjectWrap>(info) {
    Napi::Env env = info.Env();
    if (!ArgString(info, 0, "object open", "path", &path_)) return;
    std::string op = "object open " + path_;
    std::string pin_root;
    if (!info[1].IsNull() && !info[1].IsUndefined()) {
      if (!ArgString(info, 1, op, "pinRoot", &pin_root)) return;
      int err = nb_mkdir_bpffs(pin_root.c_str());
      if (err) {
        ThrowBpf(env, "pin", "create pin root " + pin_root, err, "", "", nullptr);
        return;
      }
    }
    struct nb_log log = {};
    struct bpf_object *obj = nullptr;
    int err = nb_object_open(path_.c_str(), pin_root.empty() ? nullptr : pin_root.c_str(), &log, &obj);
    nb_log_free(&log);
    if (err) {
      ThrowBpf(env, "open", op, err, "", "", nullptr);
      return;
    }
    // nothing half-done: a bad tunable closes the object before anyone sees it
    if (!SetRodata(env, obj, op, info[2]) || !SetMaxEntries(env, obj, op, info[3])) {
      bpf_object__close(obj);
      return;
    }
    obj_ = obj;
  }

  ~BpfObjectWrap() override {
    if (obj_) bpf_object__close(obj_);
  }

  // called on the main thread when the load worker is done
  void FinishLoad(int err) {
    loading_ = false;
    if (err) {
      // libbpf already closed maps and programs it created; drop the rest too
      bpf_object__close(obj_);
      obj_ = nullptr;
      closed_ = true;
    } else {
      loaded_ = true;
    }
    if (close_after_load_) CloseNow();
  }

  const std::string &path() const { return path_; }
  struct bpf_object *obj() const { return obj_; }

 private:
  bool SetRodata(Napi::Env env, struct bpf_object *obj, const std::string &op, Napi::Value v) {
    if (v.IsNull() || v.IsUndefined()) return true;
    if (!v.IsObject()) {
      ThrowBpf(env, "arg", op, EINVAL, "rodata must be an object of Buffers", "", nullptr);
      return false;
    }
    Napi::Object o = v.As<Napi::Object>();
    Napi::Array names = o.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).ToString().Utf8Value();
      Napi::Value val = o.Get(name);
      if (!val.IsTypedArray() || val.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
        ThrowBpf(env, "arg", op, EINVAL, "rodata '" + name + "' must be a Buffer", "", nullptr);
        return false;
      }
      Napi::Uint8Array buf = val.As<Napi::Uint8Array>();
      size_t want = 0;
      int err = nb_object_set_rodata(obj, name.c_str(), buf.Data(), buf.ByteLength(), &want);
      if (err == -ENOENT) {
        ThrowBpf(env, "arg", op, EINVAL, "no const volatile global named '" + name + "'", "", nullptr);
        return false;
      }
      if (err == -EINVAL && want) {
        ThrowBpf(env, "arg", op, EINVAL,
                 "rodata '" + name + "' is " + std::to_string(buf.ByteLength()) +
                     " bytes, the variable is " + std::to_string(want),
                 "", nullptr);
        return false;
      }
      if (err) {
        ThrowBpf(env, "arg", op, err, "", "", nullptr);
        return false;
      }
    }
    return true;
  }

  bool SetMaxEntries(Napi::Env env, struct bpf_object *obj, const std::string &op, Napi::Value v) {
    if (v.IsNull() || v.IsUndefined()) return true;
    if (!v.IsObject()) {
      ThrowBpf(env, "arg", op, EINVAL, "mapMaxEntries must be an object of numbers", "", nullptr);
      return false;
    }
    Napi::Object o = v.As<Napi::Object>();
    Napi::Array names = o.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).ToString().Utf8Value();
      Napi::Value val = o.Get(name);
      double d = val.IsNumber() ? val.As<Napi::Number>().DoubleValue() : 0;
      if (!(d >= 1 && d <= 4294967295.0) || d != static_cast<double>(static_cast<uint32_t>(d))) {
        ThrowBpf(env, "arg", op, EINVAL, "mapMaxEntries '" + name + "' must be a positive integer", "",
                 nullptr);
        return false;
      }
      int err = nb_object_set_max_entries(obj, name.c_str(), static_cast<uint32_t>(d));
      if (err) {
        ThrowBpf(env, "arg", op, err == -ENOENT ? EINVAL : err, err == -ENOENT ? "no map named '" + name + "'" : "", "",
                 nullptr);
        return false;
      }
    }
    return true;
  }

  // throws NODAL_ERR_BPF_ARG unless the object can serve `what` now
  bool Usable(Napi::Env env, const char *what, bool need_loaded) {
    const char *why = nullptr;
    if (closed_ || !obj_) why = "object is closed";
    else if (loading_) why = "object is loading";
    else if (need_loaded && !loaded_) why = "object is not loaded: await load() first";
    if (!why) return true;
    ThrowBpf(env, "arg", std::string("object ") + what + " (" + path_ + ")", EINVAL, why, "", nullptr);
    return false;
  }

  void CloseNow() {
    if (obj_) bpf_object__close(obj_);
    obj_ = nullptr;
    closed_ = true;
  }

  Napi::Value Load(const Napi::CallbackInfo &info);

  Napi::Value ProgramNames(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Usable(env, "programNames", false)) return env.Undefined();
    std::vector<const char *> names(64);
    size_t n = 0;
    nb_object_programs(obj_, names.data(), names.size(), &n);
    if (n > names.size()) {
      names.resize(n);
      nb_object_programs(obj_, names.data(), names.size(), &n);
    }
    Napi::Array out = Napi::Array::New(env, n);
    for (size_t i = 0; i < n; i++) out.Set(static_cast<uint32_t>(i), names[i]);
    return out;
  }

  Napi::Value MapInfo(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Usable(env, "mapInfo", false)) return env.Undefined();
    std::vector<struct nb_map_desc> maps(64);
    size_t n = 0;
    nb_object_maps(obj_, maps.data(), maps.size(), &n);
    if (n > maps.size()) {
      maps.resize(n);
      nb_object_maps(obj_, maps.data(), maps.size(), &n);
    }
    Napi::Array out = Napi::Array::New(env, n);
    for (size_t i = 0; i < n; i++) {
      Napi::Object m = Napi::Object::New(env);
      m.Set("name", maps[i].name);
      m.Set("type", maps[i].type);
      m.Set("keySize", maps[i].key_size);
      m.Set("valueSize", maps[i].value_size);
      m.Set("maxEntries", maps[i].max_entries);
      out.Set(static_cast<uint32_t>(i), m);
    }
    return out;
  }

  // mapFd(name): a dup()ed fd the caller owns (wrapped by a BpfMap in the facade)
  Napi::Value MapFd(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    std::string name;
    if (!Usable(env, "map", true) || !ArgString(info, 0, "object map", "name", &name))
      return env.Undefined();
    int fd, err = nb_object_map_fd(obj_, name.c_str(), &fd);
    if (err) {
      ThrowBpf(env, err == -ENOENT ? "arg" : "map", "object map " + name + " (" + path_ + ")",
               err == -ENOENT ? EINVAL : err, err == -ENOENT ? "no map named '" + name + "'" : "", "", nullptr);
      return env.Undefined();
    }
    return Napi::Number::New(env, fd);
  }

  bool FindProgram(Napi::Env env, const std::string &name, const std::string &op,
                   struct bpf_program **prog, const char **section, int *fd) {
    int err = nb_object_program(obj_, name.c_str(), prog, section, fd);
    if (err) {
      ThrowBpf(env, "arg", op, EINVAL, "no program named '" + name + "' in " + path_, "", nullptr);
      return false;
    }
    return true;
  }

  // attachCgroup(program, cgroupPath): fd of a new BPF link the caller owns
  Napi::Value AttachCgroup(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    std::string name, cgroup;
    if (!Usable(env, "attachCgroup", true) || !ArgString(info, 0, "attach", "program", &name) ||
        !ArgString(info, 1, "attach " + name, "cgroup path", &cgroup))
      return env.Undefined();
    struct bpf_program *prog;
    const char *section = nullptr;
    if (!FindProgram(env, name, "attach " + name + " to " + cgroup, &prog, &section, nullptr))
      return env.Undefined();
    struct nb_log log = {};
    int fd, err = nb_attach_cgroup(prog, cgroup.c_str(), &log, &fd);
    nb_log_free(&log);
    if (err) {
      ThrowBpf(env, "attach", std::string("attach ") + section + " to " + cgroup, err, "", "", nullptr);
      return env.Undefined();
    }
    return Napi::Number::New(env, fd);
  }

  Napi::Value ProgramFd(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    std::string name;
    if (!Usable(env, "programFd", true) || !ArgString(info, 0, "object programFd", "program", &name))
      return env.Undefined();
    struct bpf_program *prog;
    int fd = -1;
    if (!FindProgram(env, name, "object programFd " + name, &prog, nullptr, &fd)) return env.Undefined();
    return Napi::Number::New(env, fd);
  }

  Napi::Value StructLayout(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    std::string name;
    if (!Usable(env, "structLayout", false) || !ArgString(info, 0, "object structLayout", "struct", &name))
      return env.Undefined();
    std::vector<struct nb_member> members(64);
    size_t n = 0;
    uint32_t size = 0;
    int err = nb_struct_layout(obj_, name.c_str(), &size, members.data(), members.size(), &n);
    if (!err && n > members.size()) {
      members.resize(n);
      err = nb_struct_layout(obj_, name.c_str(), &size, members.data(), members.size(), &n);
    }
    if (err) {
      ThrowBpf(env, "arg", "object structLayout " + name, EINVAL,
               err == -ENOENT ? "no struct " + name + " in the BTF of " + path_ : "", "", nullptr);
      return env.Undefined();
    }
    Napi::Object out = Napi::Object::New(env);
    Napi::Array list = Napi::Array::New(env, n);
    for (size_t i = 0; i < n; i++) {
      Napi::Object m = Napi::Object::New(env);
      m.Set("name", members[i].name ? members[i].name : "");
      m.Set("offset", members[i].offset);
      m.Set("size", members[i].size);
      list.Set(static_cast<uint32_t>(i), m);
    }
    out.Set("size", size);
    out.Set("members", list);
    return out;
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    if (loading_) close_after_load_ = true;  // the worker still uses the object
    else CloseNow();
    return info.Env().Undefined();
  }

  std::string path_;
  struct bpf_object *obj_ = nullptr;
  bool loading_ = false;
  bool loaded_ = false;
  bool closed_ = false;
  bool close_after_load_ = false;
};

// bpf_object__load off the main thread; the verifier can take seconds
class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, BpfObjectWrap *wrap, Napi::Object self)
      : Napi::AsyncWorker(env, "nodal:bpf_object_load"),
        deferred_(Napi::Promise::Deferred::New(env)),
        wrap_(wrap),
        obj_(wrap->obj()) {
    self_ = Napi::Persistent(self);  // keeps the wrap (and obj_) alive until OnOK
  }
  ~LoadWorker() override { nb_log_free(&log_); }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override { err_ = nb_object_load(obj_, &log_); }

  void OnOK() override {
    Napi::Env env = Env();
    std::string path = wrap_->path();
    wrap_->FinishLoad(err_);
    if (!err_) {
      deferred_.Resolve(env.Undefined());
      return;
    }
    std::string log = LogText(log_);
    Napi::Value e = MakeBpfError(env, "load", "load " + path, err_, "", "", &log);
    if (e.IsEmpty()) e = env.GetAndClearPendingException().Value();
    deferred_.Reject(e);
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference self_;
  BpfObjectWrap *wrap_;
  struct bpf_object *obj_;
  struct nb_log log_ = {};
  int err_ = 0;
};

Napi::Value BpfObjectWrap::Load(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!Usable(env, "load", false)) return env.Undefined();
  if (loaded_) {
    ThrowBpf(env, "arg", "object load (" + path_ + ")", EINVAL, "object is already loaded", "", nullptr);
    return env.Undefined();
  }
  loading_ = true;
  LoadWorker *w = new LoadWorker(env, this, info.This().As<Napi::Object>());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

Napi::Function InitObject(Napi::Env env) { return BpfObjectWrap::Init(env); }

}  // namespace nodal
