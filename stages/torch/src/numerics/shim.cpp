// The few libtorch settings and facts that tch does not expose, for tureen's numerics
// modes (stages/torch/src/numerics): whether ATen may route convolutions to oneDNN or
// NNPACK, and which CPU capability and library versions this process runs with.
// Plain C functions so Rust can call them; nothing here may let a C++ exception out.

#include <ATen/Context.h>
#include <ATen/Version.h>
#include <torch/headeronly/version.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace {

// Copies `s` (NUL-terminated, truncated to fit) into `buf` and returns its full length.
size_t copy_out(const std::string& s, char* buf, size_t len) {
  if (len > 0) {
    size_t n = std::min(len - 1, s.size());
    std::memcpy(buf, s.data(), n);
    buf[n] = 0;
  }
  return s.size();
}

template <typename F>
size_t string_fact(F f, char* buf, size_t len) {
  try {
    return copy_out(f(), buf, len);
  } catch (...) {
    return copy_out("", buf, len);
  }
}

}  // namespace

extern "C" {

bool tureen_set_mkldnn_enabled(bool on) {
  try {
    at::globalContext().setUserEnabledMkldnn(on);
    return at::globalContext().userEnabledMkldnn() == on;
  } catch (...) {
    return false;
  }
}

bool tureen_set_nnpack_enabled(bool on) {
  try {
    at::globalContext().setUserEnabledNNPACK(on);
    return at::globalContext().userEnabledNNPACK() == on;
  } catch (...) {
    return false;
  }
}

bool tureen_mkldnn_enabled() { return at::globalContext().userEnabledMkldnn(); }

bool tureen_nnpack_enabled() { return at::globalContext().userEnabledNNPACK(); }

size_t tureen_cpu_capability(char* buf, size_t len) {
  return string_fact([] { return at::get_cpu_capability(); }, buf, len);
}

size_t tureen_mkl_version(char* buf, size_t len) {
  return string_fact([] { return at::get_mkl_version(); }, buf, len);
}

size_t tureen_mkldnn_version(char* buf, size_t len) {
  return string_fact([] { return at::get_mkldnn_version(); }, buf, len);
}

size_t tureen_torch_version(char* buf, size_t len) {
  return string_fact([] { return std::string(TORCH_VERSION); }, buf, len);
}

}  // extern "C"
