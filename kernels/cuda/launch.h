// kernels/cuda/launch.h: the one way kernels/cuda launches a kernel and declares dynamic shared
// memory, identical under nvcc and under the SIMT emulator (kernels/simt/simt.h).
//
//   UNETCU_LAUNCH(relu_kernel, blocks, 256, 0, stream)(y, x, count);
//   UNETCU_LAUNCH((reduce_kernel<float, 256>), blocks, 256, smem_bytes, stream)(out, in, n);
//     nvcc: kernel<<<grid, block, smem_bytes, stream>>>(args...), then a launch check;
//     emulator: every block runs on the CPU before the statement ends (or is recorded while
//     `stream` is being captured). A template kernel goes in parentheses (macro commas).
//     The macro is a statement (a one-pass for loop), not an expression.
//     The check throws unetcu::CudaError naming the kernel, the configuration and file:line;
//     with UNETCU_SYNC=1 in the environment it also synchronises the stream (outside stream
//     capture), so an asynchronous fault is reported at the launch that caused it.
//
//   UNETCU_DYNAMIC_SHARED(float, tile);   // inside the kernel body
//     float* tile: the block's dynamic shared memory (the launch's smem_bytes). Under the
//     emulator the bytes start as 0xFF so a read before a write shows.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <sstream>

#include "kernels/cuda/check.h"

namespace unetcu {

// UNETCU_SYNC=1: every launch synchronises and checks (slow; for finding a faulting kernel).
inline bool sync_every_launch() {
  static const bool on = [] {
    const char* value = std::getenv("UNETCU_SYNC");
    return value != nullptr && value[0] == '1';
  }();
  return on;
}

// One launch statement: the configuration (evaluated once), and the check run after the launch.
// UNETCU_LAUNCH is a one-pass for statement around the launch expression so that the check can
// follow the (args...) the caller writes after the macro.
struct LaunchSite {
  const char* kernel;
  const char* file;
  int line;
  dim3 grid;
  dim3 block;
  size_t shared_bytes;
  cudaStream_t stream;
  bool done = false;

  bool pending() const { return !done; }

  void check() {
    done = true;
    cudaError_t error = cudaGetLastError();
    if (error == cudaSuccess && sync_every_launch()) {
      cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
      // Synchronising a stream under capture would invalidate the capture: skip it there.
      if (cudaStreamIsCapturing(stream, &capture) == cudaSuccess &&
          capture == cudaStreamCaptureStatusNone) {
        error = cudaStreamSynchronize(stream);
      } else {
        (void)cudaGetLastError();
      }
    }
    if (error != cudaSuccess) {
      std::ostringstream what;
      what << "launch " << kernel << "<<<(" << grid.x << "," << grid.y << "," << grid.z << "), ("
           << block.x << "," << block.y << "," << block.z << "), " << shared_bytes << " B>>>";
      cuda_fail(error, what.str().c_str(), file, line);
    }
  }
};

}  // namespace unetcu

#if defined(__CUDACC__)

// The parameters carry a prefix: a parameter named `block` would also replace the member
// unetcu_launch_.block.
#define UNETCU_LAUNCH(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)      \
  for (::unetcu::LaunchSite unetcu_launch_{#unetcu_kernel,        __FILE__,                       \
                                           __LINE__,              dim3(unetcu_grid),              \
                                           dim3(unetcu_block),    size_t(unetcu_smem),            \
                                           (unetcu_stream)};                                      \
       unetcu_launch_.pending(); unetcu_launch_.check())                                         \
  unetcu_kernel<<<unetcu_launch_.grid, unetcu_launch_.block, unetcu_launch_.shared_bytes,        \
                  unetcu_launch_.stream>>>

// One name for every kernel, as raw bytes: extern __shared__ arrays of different element types
// in one translation unit would otherwise be conflicting declarations.
#define UNETCU_DYNAMIC_SHARED(type, name)                                        \
  extern __shared__ __align__(16) unsigned char unetcu_dynamic_shared_[];        \
  type* const name = reinterpret_cast<type*>(unetcu_dynamic_shared_)

#elif defined(UNETCU_SIMT)

#define UNETCU_LAUNCH(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)      \
  for (::unetcu::LaunchSite unetcu_launch_{#unetcu_kernel,        __FILE__,                       \
                                           __LINE__,              dim3(unetcu_grid),              \
                                           dim3(unetcu_block),    size_t(unetcu_smem),            \
                                           (unetcu_stream)};                                      \
       unetcu_launch_.pending(); unetcu_launch_.check())                                         \
  ::unetcu::simt::launcher(unetcu_kernel, unetcu_launch_.grid, unetcu_launch_.block,             \
                           unetcu_launch_.shared_bytes, unetcu_launch_.stream, #unetcu_kernel,   \
                           __FILE__, __LINE__)

#define UNETCU_DYNAMIC_SHARED(type, name) \
  type* const name = reinterpret_cast<type*>(::unetcu::simt::detail::dynamic_shared_base)

#else
#error "kernels/cuda/launch.h launches kernels: compile with nvcc, or as an emulated library"
#endif
