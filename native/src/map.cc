// BpfMap and BpfLink: each owns one fd (dup'd from an object, or opened from a pin)
// and outlives the object it came from.
#include <napi.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "addon.h"
#include "bpf_ops.h"

namespace nodal {

namespace {

std::string Bytes(size_t n) { return std::to_string(n) + (n == 1 ? " byte" : " bytes"); }

class BpfMapWrap : public Napi::ObjectWrap<BpfMapWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "BpfMap",
                       {
                           InstanceMethod<&BpfMapWrap::Info>("info"),
                           InstanceMethod<&BpfMapWrap::Fd>("fd"),
                           InstanceMethod<&BpfMapWrap::Lookup>("lookup"),
                           InstanceMethod<&BpfMapWrap::Update>("update"),
                           InstanceMethod<&BpfMapWrap::Delete>("delete"),
                           InstanceMethod<&BpfMapWrap::NextKey>("nextKey"),
                           InstanceMethod<&BpfMapWrap::Keys>("keys"),
                           InstanceMethod<&BpfMapWrap::UpdateBatch>("updateBatch"),
                           InstanceMethod<&BpfMapWrap::Pin>("pin"),
                           InstanceMethod<&BpfMapWrap::Close>("close"),
                       });
  }

  // new BpfMap(fd, name | null): takes ownership of fd, also when it throws
  explicit BpfMapWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<BpfMapWrap>(info) {
    Napi::Env env = info.Env();
    int fd;
    if (!ArgFd(info, 0, "map open", &fd)) return;
    int err = nb_map_info(fd, &info_);
    if (!err) err = nb_map_value_buffer_size(info_.type, info_.value_size, &value_buf_size_);
    if (err) {
      nb_close_fd(fd);
      ThrowBpf(env, "map", "map info (fd " + std::to_string(fd) + ")", err, "", "", nullptr);
      return;
    }
    // the kernel keeps 15 characters of a name; libbpf knows the whole one
    name_ = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : std::string(info_.name);
    fd_ = fd;
  }

  ~BpfMapWrap() override {
    if (fd_ >= 0) nb_close_fd(fd_);
  }

 private:
  std::string Op(const char *what) const { return "map " + name_ + " " + what; }

  bool Open(Napi::Env env, const char *what) {
    if (fd_ >= 0) return true;
    ThrowBpf(env, "arg", Op(what), EBADF, "map is closed", "", nullptr);
    return false;
  }

  // a short buffer would let the kernel read past it: sizes are checked before every syscall
  bool Key(const Napi::CallbackInfo &info, size_t i, const char *what, uint8_t **key) {
    size_t len;
    if (!ArgBytes(info, i, Op(what), "key", key, &len)) return false;
    if (len == info_.key_size) return true;
    ThrowBpf(info.Env(), "map", Op(what), EINVAL,
             "key is " + Bytes(len) + ", map expects " + std::to_string(info_.key_size), "", nullptr);
    return false;
  }

  bool Value(const Napi::CallbackInfo &info, size_t i, const char *what, uint8_t **value) {
    size_t len;
    if (!ArgBytes(info, i, Op(what), "value", value, &len)) return false;
    if (len == value_buf_size_) return true;
    std::string per_cpu = nb_map_is_percpu(info_.type)
                              ? " (per-CPU: value size rounded up to 8, times possible CPUs)"
                              : "";
    ThrowBpf(info.Env(), "map", Op(what), EINVAL,
             "value is " + Bytes(len) + ", map expects " + std::to_string(value_buf_size_) + per_cpu, "",
             nullptr);
    return false;
  }

  Napi::Value Info(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", name_);
    o.Set("id", Napi::Number::New(env, info_.id));
    o.Set("type", Napi::Number::New(env, info_.type));
    o.Set("keySize", Napi::Number::New(env, info_.key_size));
    o.Set("valueSize", Napi::Number::New(env, info_.value_size));
    o.Set("maxEntries", Napi::Number::New(env, info_.max_entries));
    o.Set("flags", Napi::Number::New(env, info_.flags));
    o.Set("perCpu", Napi::Boolean::New(env, nb_map_is_percpu(info_.type)));
    o.Set("valueBufferSize", Napi::Number::New(env, static_cast<double>(value_buf_size_)));
    return o;
  }

  Napi::Value Fd(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env, "fd")) return env.Undefined();
    return Napi::Number::New(env, fd_);
  }

  Napi::Value Lookup(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    uint8_t *key;
    if (!Open(env, "lookup") || !Key(info, 0, "lookup", &key)) return env.Undefined();
    Napi::Buffer<uint8_t> value = Napi::Buffer<uint8_t>::New(env, value_buf_size_);
    int err = nb_map_lookup(fd_, key, value.Data());
    if (err == -ENOENT) return env.Undefined();
    if (err) {
      ThrowBpf(env, "map", Op("lookup"), err, "", "", nullptr);
      return env.Undefined();
    }
    return value;
  }

  Napi::Value Update(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    uint8_t *key, *value;
    uint32_t flags = 0;
    if (!Open(env, "update") || !Key(info, 0, "update", &key) || !Value(info, 1, "update", &value))
      return env.Undefined();
    if (!info[2].IsUndefined() && !ArgU32(info, 2, Op("update"), "flags", &flags)) return env.Undefined();
    int err = nb_map_update(fd_, key, value, flags);
    if (err) ThrowBpf(env, "map", Op("update"), err, "", "", nullptr);
    return env.Undefined();
  }

  Napi::Value Delete(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    uint8_t *key;
    if (!Open(env, "delete") || !Key(info, 0, "delete", &key)) return env.Undefined();
    int err = nb_map_delete(fd_, key);
    if (err == -ENOENT) return Napi::Boolean::New(env, false);
    if (err) {
      ThrowBpf(env, "map", Op("delete"), err, "", "", nullptr);
      return env.Undefined();
    }
    return Napi::Boolean::New(env, true);
  }

  Napi::Value NextKey(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    uint8_t *key = nullptr;
    if (!Open(env, "next key")) return env.Undefined();
    if (!info[0].IsNull() && !info[0].IsUndefined() && !Key(info, 0, "next key", &key))
      return env.Undefined();
    Napi::Buffer<uint8_t> next = Napi::Buffer<uint8_t>::New(env, info_.key_size);
    int err = nb_map_next_key(fd_, key, next.Data());
    if (err == -ENOENT) return env.Undefined();
    if (err) {
      ThrowBpf(env, "map", Op("next key"), err, "", "", nullptr);
      return env.Undefined();
    }
    return next;
  }

  // keys(): every key back to back in one Buffer; the facade slices it
  Napi::Value Keys(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env, "keys")) return env.Undefined();
    uint8_t *keys = nullptr;
    size_t n = 0;
    int err = nb_map_keys(fd_, info_.key_size, info_.max_entries, &keys, &n);
    if (err) {
      ThrowBpf(env, "map", Op("keys"), err, "", "", nullptr);
      return env.Undefined();
    }
    Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::Copy(env, keys, n * info_.key_size);
    free(keys);
    return out;
  }

  // updateBatch(keys, values, count): entries written
  Napi::Value UpdateBatch(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    std::string op = Op("update batch");
    uint8_t *keys, *values;
    size_t keys_len, values_len;
    uint32_t count, flags = 0;
    if (!Open(env, "update batch") || !ArgBytes(info, 0, op, "keys", &keys, &keys_len) ||
        !ArgBytes(info, 1, op, "values", &values, &values_len) || !ArgU32(info, 2, op, "count", &count))
      return env.Undefined();
    if (!info[3].IsUndefined() && !ArgU32(info, 3, op, "flags", &flags)) return env.Undefined();
    size_t want_keys = static_cast<size_t>(count) * info_.key_size;
    size_t want_values = static_cast<size_t>(count) * value_buf_size_;
    if (keys_len != want_keys || values_len != want_values) {
      ThrowBpf(env, "map", op, EINVAL,
               "keys are " + Bytes(keys_len) + " and values " + Bytes(values_len) + ", " +
                   std::to_string(count) + " entries need " + std::to_string(want_keys) + " and " +
                   std::to_string(want_values),
               "", nullptr);
      return env.Undefined();
    }
    uint32_t written = 0;
    int err = nb_map_update_batch(fd_, keys, values, info_.key_size, value_buf_size_, count, flags,
                                  &written);
    if (err) {
      ThrowBpf(env, "map", op, err, "",
               "wrote " + std::to_string(written) + " of " + std::to_string(count) + " entries", nullptr);
      return env.Undefined();
    }
    return Napi::Number::New(env, written);
  }

  Napi::Value Pin(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    std::string path;
    if (!Open(env, "pin") || !ArgString(info, 0, Op("pin"), "path", &path)) return env.Undefined();
    int err = nb_obj_pin(fd_, path.c_str());
    if (err) ThrowBpf(env, "pin", Op("pin") + " " + path, err, "", "", nullptr);
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    if (fd_ >= 0) nb_close_fd(fd_);
    fd_ = -1;
    return info.Env().Undefined();
  }

  int fd_ = -1;
  std::string name_;
  struct nb_map_info info_ = {};
  size_t value_buf_size_ = 0;
};

class BpfLinkWrap : public Napi::ObjectWrap<BpfLinkWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "BpfLink",
                       {
                           InstanceMethod<&BpfLinkWrap::Info>("info"),
                           InstanceMethod<&BpfLinkWrap::Pin>("pin"),
                           InstanceMethod<&BpfLinkWrap::Update>("update"),
                           InstanceMethod<&BpfLinkWrap::Detach>("detach"),
                           InstanceMethod<&BpfLinkWrap::Close>("close"),
                       });
  }

  // new BpfLink(fd): takes ownership of fd, also when it throws
  explicit BpfLinkWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<BpfLinkWrap>(info) {
    Napi::Env env = info.Env();
    int fd;
    if (!ArgFd(info, 0, "link open", &fd)) return;
    struct nb_link_info li;
    int err = nb_link_info(fd, &li);
    if (err) {
      nb_close_fd(fd);
      ThrowBpf(env, "attach", "link info (fd " + std::to_string(fd) + ")", err, "", "", nullptr);
      return;
    }
    id_ = li.id;
    fd_ = fd;
  }

  ~BpfLinkWrap() override {
    if (fd_ >= 0) nb_close_fd(fd_);
  }

 private:
  std::string Op(const char *what) const { return "link " + std::to_string(id_) + " " + what; }

  bool Open(Napi::Env env, const char *what) {
    if (fd_ >= 0) return true;
    ThrowBpf(env, "arg", Op(what), EBADF, "link is closed", "", nullptr);
    return false;
  }

  // info(): read live, so progId follows update()
  Napi::Value Info(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env, "info")) return env.Undefined();
    struct nb_link_info li;
    int err = nb_link_info(fd_, &li);
    if (err) {
      ThrowBpf(env, "attach", Op("info"), err, "", "", nullptr);
      return env.Undefined();
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", Napi::Number::New(env, li.id));
    o.Set("progId", Napi::Number::New(env, li.prog_id));
    o.Set("type", Napi::Number::New(env, li.type));
    o.Set("attachType", Napi::Number::New(env, li.attach_type));
    o.Set("cgroupId", Napi::Number::New(env, static_cast<double>(li.cgroup_id)));
    return o;
  }

  Napi::Value Pin(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    std::string path;
    if (!Open(env, "pin") || !ArgString(info, 0, Op("pin"), "path", &path)) return env.Undefined();
    int err = nb_obj_pin(fd_, path.c_str());
    if (err) ThrowBpf(env, "pin", Op("pin") + " " + path, err, "", "", nullptr);
    return env.Undefined();
  }

  // update(progFd): atomic replace, the hook never runs without a program
  Napi::Value Update(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    int prog_fd;
    if (!Open(env, "update") || !ArgFd(info, 0, Op("update"), &prog_fd)) return env.Undefined();
    int err = nb_link_update(fd_, prog_fd);
    if (err) ThrowBpf(env, "attach", Op("update"), err, "", "", nullptr);
    return env.Undefined();
  }

  Napi::Value Detach(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env, "detach")) return env.Undefined();
    int err = nb_link_detach(fd_);
    if (err) ThrowBpf(env, "attach", Op("detach"), err, "", "", nullptr);
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    if (fd_ >= 0) nb_close_fd(fd_);
    fd_ = -1;
    return info.Env().Undefined();
  }

  int fd_ = -1;
  uint32_t id_ = 0;
};

}  // namespace

Napi::Function InitMap(Napi::Env env) { return BpfMapWrap::Init(env); }
Napi::Function InitLink(Napi::Env env) { return BpfLinkWrap::Init(env); }

}  // namespace nodal
