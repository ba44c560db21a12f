// Helpers the C++ files share, defined in addon.cc: argument checks that throw a
// BpfError naming the operation, and the error constructor itself.
#ifndef NODAL_NATIVE_ADDON_H
#define NODAL_NATIVE_ADDON_H

#include <napi.h>

#include <cstdint>
#include <string>

namespace nodal {

Napi::Value MakeBpfError(Napi::Env env, const char *kind, const std::string &op, int err,
                         const std::string &detail, const std::string &hint,
                         const std::string *log);
void ThrowBpf(Napi::Env env, const char *kind, const std::string &op, int err,
              const std::string &detail, const std::string &hint, const std::string *log);
bool ArgString(const Napi::CallbackInfo &info, size_t i, const std::string &op,
               const char *what, std::string *out);
bool ArgBytes(const Napi::CallbackInfo &info, size_t i, const std::string &op,
              const char *what, uint8_t **data, size_t *len);
bool ArgU32(const Napi::CallbackInfo &info, size_t i, const std::string &op, const char *what,
            uint32_t *out);
bool ArgFd(const Napi::CallbackInfo &info, size_t i, const std::string &op, int *fd);

}  // namespace nodal

#endif
