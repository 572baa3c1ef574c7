// tests/emu/kernel_test.h: the harness of the kernels/cuda tests. The same test sources build
// three ways: under the SIMT emulator (UNETCU_TEST_EMULATED), the same with AddressSanitizer
// (UNETCU_TEST_ASAN too), and natively against a GPU.
//
//  * DeviceBuffer: a device allocation with guard bytes on both sides (a kernel writing out of
//    bounds changes them; checked after every run) and an optional offset that misaligns the
//    data, so the scalar paths behind the float4 ones run too. Outputs are poisoned (every
//    byte 0xFF: NaN for floats) before a kernel that overwrites them. Under ASan there are no
//    guard bytes: exact-size allocations let ASan catch out-of-bounds reads as well.
//  * run_deterministic: runs a test body twice and requires bit-identical outputs. Under the
//    emulator the runs use opposite thread schedules (forward then reverse, the second with two
//    block workers), which exposes a missing barrier or a race on a partial; on a GPU it checks
//    run-to-run determinism.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernels/common.h"
#include "kernels/cuda/check.h"
#include "kernels/path_timing.h"
#include "test_util.h"

#if defined(UNETCU_TEST_EMULATED)
#include "kernels/simt/control.h"
#endif

namespace unetcu::test {

#if defined(UNETCU_TEST_ASAN)
constexpr size_t kGuardBytes = 0;
#else
constexpr size_t kGuardBytes = 256;  // keeps an unshifted buffer 256-byte aligned
#endif
constexpr unsigned char kGuardPattern = 0xA5;

constexpr GradMode kGradModes[] = {GradMode::overwrite, GradMode::accumulate};
inline std::string mode_name(GradMode m) {
  return m == GradMode::overwrite ? "overwrite" : "accumulate";
}

template <typename T>
class DeviceBuffer {
 public:
  // `shift` elements of offset before the data: 1 makes a float buffer 4 bytes off alignment.
  explicit DeviceBuffer(size_t count, size_t shift = 0) : count_(count), shift_(shift) {
    total_ = 2 * kGuardBytes + (shift + count) * sizeof(T);
    UNETCU_CUDA_CHECK(cudaMalloc(&base_, total_ > 0 ? total_ : 1));
    const std::vector<unsigned char> guard(total_, kGuardPattern);
    UNETCU_CUDA_CHECK(cudaMemcpy(base_, guard.data(), total_, cudaMemcpyHostToDevice));
  }
  DeviceBuffer(const std::vector<T>& host, size_t shift = 0) : DeviceBuffer(host.size(), shift) {
    upload(host);
  }
  ~DeviceBuffer() { cudaFree(base_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const {
    return reinterpret_cast<T*>(static_cast<unsigned char*>(base_) + kGuardBytes +
                                shift_ * sizeof(T));
  }
  size_t size() const { return count_; }

  void upload(const std::vector<T>& host) {
    REQUIRE(host.size() == count_);
    UNETCU_CUDA_CHECK(cudaMemcpy(get(), host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  // Every byte 0xFF: NaN for floats, -1 for integers; a kernel that forgets an element shows.
  void poison() { UNETCU_CUDA_CHECK(cudaMemset(get(), 0xFF, count_ * sizeof(T))); }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    UNETCU_CUDA_CHECK(cudaMemcpy(host.data(), get(), count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  // The bytes around the data, the shift included, still hold the guard pattern.
  void check_guards(const std::string& what) const {
    std::vector<unsigned char> all(total_);
    UNETCU_CUDA_CHECK(cudaMemcpy(all.data(), base_, total_, cudaMemcpyDeviceToHost));
    const size_t begin = kGuardBytes + shift_ * sizeof(T);
    const size_t end = begin + count_ * sizeof(T);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < total_; ++i) {
      if ((i < begin || i >= end) && all[i] != kGuardPattern) {
        if (bad++ == 0) first = i;
      }
    }
    CHECK_MESSAGE(bad == 0, what << ": " << bad << " guard bytes overwritten, first at byte offset "
                                 << (long long)first - (long long)begin << " from the data");
  }

 private:
  void* base_ = nullptr;
  size_t count_ = 0, shift_ = 0, total_ = 0;
};

// A run's outputs as raw bytes under names, so that runs can be compared bit for bit.
class Outputs {
 public:
  template <typename T>
  void add(const std::string& name, const DeviceBuffer<T>& buffer) {
    buffer.check_guards(name);
    const std::vector<T> host = buffer.download();
    std::vector<unsigned char> bytes(host.size() * sizeof(T));
    if (!bytes.empty()) std::memcpy(bytes.data(), host.data(), bytes.size());
    items_.emplace_back(name, std::move(bytes));
  }
  template <typename T>
  std::vector<T> get(const std::string& name) const {
    for (const auto& [key, bytes] : items_) {
      if (key != name) continue;
      std::vector<T> out(bytes.size() / sizeof(T));
      if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
      return out;
    }
    FAIL("no output named " << name);
    return {};
  }
  const std::vector<std::pair<std::string, std::vector<unsigned char>>>& items() const {
    return items_;
  }

 private:
  std::vector<std::pair<std::string, std::vector<unsigned char>>> items_;
};

// Runs `body` (which allocates, launches, synchronises and returns Outputs) twice and requires
// the same bytes from both runs; returns the first run's outputs.
template <class Body>
Outputs run_deterministic(Body&& body) {
#if defined(UNETCU_TEST_EMULATED)
  simt::set_schedule(simt::Schedule::forward);
  simt::set_workers(1);
  Outputs first = body();
  simt::set_schedule(simt::Schedule::reverse);
  simt::set_workers(2);
  Outputs second = body();
  simt::set_schedule(simt::Schedule::forward);
  simt::set_workers(1);
  const std::string how = "forward vs reverse schedule";
#else
  Outputs first = body();
  Outputs second = body();
  const std::string how = "two runs on the GPU";
#endif
  REQUIRE(first.items().size() == second.items().size());
  for (size_t k = 0; k < first.items().size(); ++k) {
    const auto& [name, a] = first.items()[k];
    const auto& b = second.items()[k].second;
    REQUIRE(a.size() == b.size());
    size_t diff = 0;
    while (diff < a.size() && a[diff] == b[diff]) ++diff;
    CHECK_MESSAGE(diff == a.size(), name << ": " << how << " differ, first at byte " << diff);
  }
  return first;
}

// A stream of its own for the scope: path timing captures the stream it times on, which the
// legacy default stream (nullptr) cannot be on a GPU.
struct TestStream {
  cudaStream_t stream = nullptr;
  TestStream() { UNETCU_CUDA_CHECK(cudaStreamCreate(&stream)); }
  TestStream(const TestStream&) = delete;
  ~TestStream() { (void)cudaStreamDestroy(stream); }
};

// Path timing (kernels/path_timing.h) on for the scope, with the path named `cheapest` made the
// fastest by the test hook (1 us, every other path 2 us); every choice is forgotten before and
// after, and the switch and hook are put back.
class TimedPaths {
 public:
  explicit TimedPaths(const char* cheapest) : before_(cuda::path_timing()) {
    cheapest_name() = cheapest;
    cuda::forget_path_choices();
    cuda::set_path_cost_for_tests(&cost);
    cuda::set_path_timing(true);
  }
  TimedPaths(const TimedPaths&) = delete;
  ~TimedPaths() {
    cuda::set_path_timing(before_);
    cuda::set_path_cost_for_tests(nullptr);
    cuda::forget_path_choices();
  }
  // The report's lines (kernels/path_timing.h).
  static std::vector<std::string> lines() {
    std::vector<std::string> out;
    std::istringstream in(cuda::path_timing_report());
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }

 private:
  static std::string& cheapest_name() {
    static std::string name;
    return name;
  }
  static double cost(const std::string&, const std::string& path) {
    return path == cheapest_name() ? 1.0 : 2.0;
  }
  bool before_;
};

inline void sync_device() { UNETCU_CUDA_CHECK(cudaDeviceSynchronize()); }

// Runs `issue` (which launches kernels) and synchronises: the kernels it launched under the
// emulator; -1 on a GPU, where nothing counts them.
template <class F>
int launches_of(F&& issue) {
#if defined(UNETCU_TEST_EMULATED)
  simt::reset_counters();
#endif
  issue();
  sync_device();
#if defined(UNETCU_TEST_EMULATED)
  return int(simt::counters().launches);
#else
  return -1;
#endif
}

// Bit-for-bit equality (NaN equal to the same NaN), for ops whose CUDA kernel performs the
// reference's float operations in the reference's order.
template <typename T>
void check_same_bits(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what << ": size " << got.size() << " vs " << want.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      if (bad++ == 0) first = i;
    }
  }
  std::ostringstream os;
  if (bad) os << what << ": " << bad << " of " << got.size() << " differ; first [" << first
              << "] got " << double(got[first]) << " want " << double(want[first]);
  CHECK_MESSAGE(bad == 0, os.str());
}

}  // namespace unetcu::test
