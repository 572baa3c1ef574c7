// kernels/cuda/env.h: process-wide settings read from the environment, for the CUDA kernels,
// the cuDNN runner and the CUDA backend alike (plain C++: no CUDA here).
#pragma once

#include <atomic>
#include <cstdlib>
#include <string>

namespace unetcu {

// A process-wide on/off setting: its environment variable ("1..." on, "0..." off, otherwise
// or unset `fallback`), read at the first get(), until set() overrides it.
class EnvSwitch {
 public:
  constexpr EnvSwitch(const char* name, bool fallback) : name_(name), fallback_(fallback) {}
  bool get() {
    int on = value_.load(std::memory_order_relaxed);
    if (on < 0) {
      const char* value = std::getenv(name_);
      on = value != nullptr && (value[0] == '0' || value[0] == '1') ? value[0] == '1' : fallback_;
      value_.store(on, std::memory_order_relaxed);
    }
    return on != 0;
  }
  void set(bool on) { value_.store(on ? 1 : 0, std::memory_order_relaxed); }
  // Whether the environment sets it ("0..." or "1..."): the user's choice, which the training
  // step's schedule tuning leaves alone.
  bool pinned() const {
    const char* value = std::getenv(name_);
    return value != nullptr && (value[0] == '0' || value[0] == '1');
  }

 private:
  const char* name_;
  bool fallback_;
  std::atomic<int> value_{-1};  // -1: not read from the environment yet
};

// A whole number from lo to hi in an environment variable: `unset` when it is unset or empty,
// `bad` (with its text, for the caller's error) when it is anything else.
struct EnvInt {
  enum State { unset, ok, bad } state = unset;
  long value = 0;
  const char* text = nullptr;
};
inline EnvInt read_env_int(const char* variable, long lo, long hi) {
  EnvInt r;
  r.text = std::getenv(variable);
  if (r.text == nullptr || r.text[0] == '\0') return r;
  char* end = nullptr;
  r.value = std::strtol(r.text, &end, 10);
  r.state = *end == '\0' && r.value >= lo && r.value <= hi ? EnvInt::ok : EnvInt::bad;
  return r;
}

// The integer from lo to hi in `variable`; `fallback` when it is unset or empty; anything else
// throws Error("VARIABLE=value: expected <expected>") (the cuDNN and cuBLAS runners' settings).
template <class Error>
int env_int_or_throw(const char* variable, int fallback, long lo, long hi,
                     const std::string& expected) {
  const EnvInt n = read_env_int(variable, lo, hi);
  if (n.state == EnvInt::bad)
    throw Error(std::string(variable) + "=" + n.text + ": expected " + expected);
  return n.state == EnvInt::ok ? int(n.value) : fallback;
}

}  // namespace unetcu
