// kernels/cuda/fastest_path.h: how an op of kernels/cuda with more than one way to run picks
// one (kernels/path_timing.h says what path timing is for).
//
//   run_fastest(PathOp("conv.narrow_fwd", kNames, kPaths, {n, h, w, c}).then(kRowSweep)
//                   .then(kPerPixel),
//               repeatable, stream, [&](int path) { return launch path `path`; });
//
// `launch(path)` runs the op by path `path` and returns true, or returns false, launching
// nothing, where that path does not apply to this call (this shape, this device). Timing runs
// it more than once, so an op with path timing writes only its outputs and workspace (no
// accumulated output, no running statistics). The last path of `order` must apply to every
// call.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/capture_timing.h"
#include "kernels/cuda/check.h"
#include "kernels/path_timing.h"

namespace unetcu::cuda::detail {

// An op and shape with the paths it may take. Built at every call of the op (a kernel
// launch's host side), so it holds numbers only: the key string is formed when path timing
// looks the shape up.
constexpr int kMaxPaths = 4, kMaxDims = 4;
struct PathOp {
  const char* op;            // "conv.narrow_fwd"
  const char* const* names;  // every path's name, by index
  int paths;                 // how many names
  int64_t shape[kMaxDims];   // the shape's dims, "65536x64" in the key
  int dims = 0;
  int order[kMaxPaths];      // untimed: the first of these that applies
  int orders = 0;
  PathOp(const char* op_name, const char* const* path_names, int path_count,
         std::initializer_list<int64_t> dims_of_shape)
      : op(op_name), names(path_names), paths(path_count) {
    for (int64_t d : dims_of_shape)
      if (dims < kMaxDims) shape[dims++] = d;
  }
  // Appends `path` to the untimed order.
  PathOp& then(int path) {
    if (orders < kMaxPaths) order[orders++] = path;
    return *this;
  }
  std::string key() const;  // "OP D0xD1x..."
};

// The path recorded for `key`, or -1.
int recorded_path(const std::string& key);
// Records the fastest of `us` (negative: the path did not apply, or failed) for `key` with its
// report line, and returns it; -1 (nothing recorded) when none ran.
int record_fastest(const std::string& key, const PathOp& op, const std::vector<double>& us);
// The test hook's time for `key` and path `name` (kernels/path_timing.h), or negative.
double cost_for_tests(const std::string& key, const char* name);
// Whether `stream` is being captured (a graph's calls cannot be timed, nor run twice).
bool stream_capturing(cudaStream_t stream);

// Calls each timed path's graph holds, and timed replays (the median serves). The emulator's
// times mean nothing, so it runs each path as few times as the choice allows.
#if defined(UNETCU_SIMT)
constexpr int kPathCalls = 1, kPathRuns = 1;
#else
constexpr int kPathCalls = 4, kPathRuns = 5;
#endif

// Every path of `op` timed on `stream`: microseconds per call, negative where it does not apply
// or fails (a launch error: cleared, so that it does not surface at a later launch).
template <class Launch>
std::vector<double> time_paths(const std::string& key, const PathOp& op, cudaStream_t stream,
                               const Launch& launch) {
  std::vector<double> us(size_t(op.paths), -1.0);
  cudaEvent_t start = nullptr, stop = nullptr;
  UNETCU_CUDA_CHECK(cudaEventCreate(&start));
  UNETCU_CUDA_CHECK(cudaEventCreate(&stop));
  for (int p = 0; p < op.paths; ++p) {
    float ms = -1.0f;
    try {
      ms = time_captured(stream, start, stop, kPathCalls, kPathRuns,
                         [&] { return launch(p); });
    } catch (const CudaError&) {
      (void)cudaGetLastError();
      ms = -1.0f;
    }
    if (ms < 0.0f) continue;
    const double hook = cost_for_tests(key, op.names[p]);
    us[size_t(p)] = hook >= 0.0 ? hook : double(ms) * 1000.0;
  }
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  return us;
}

// Runs `op` by its recorded path; without one, and where path timing is on, the call may be
// repeated and `stream` is not being captured, by the fastest path after timing them all;
// otherwise by the first of op.order that applies.
template <class Launch>
void run_fastest(const PathOp& op, bool repeatable, cudaStream_t stream, const Launch& launch) {
  if (path_timing()) {
    const std::string key = op.key();
    int path = recorded_path(key);
    if (path < 0 && repeatable && !stream_capturing(stream))
      path = record_fastest(key, op, time_paths(key, op, stream, launch));
    if (path >= 0 && launch(path)) return;
  }
  for (int i = 0; i < op.orders; ++i)
    if (launch(op.order[i])) return;
  throw std::logic_error(op.key() + ": no path of its order applies (a bug in the caller)");
}

}  // namespace unetcu::cuda::detail
