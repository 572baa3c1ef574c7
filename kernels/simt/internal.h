// kernels/simt/internal.h: what the emulator's own files share (block scheduler <-> runtime).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "kernels/simt/control.h"

namespace unetcu {
namespace simt {
namespace detail {

// H100 limits the launch checks use (cudaDeviceProp reports the same).
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxSharedBytes = 227 * 1024;     // with cudaFuncSetAttribute opt-in
constexpr size_t kDefaultSharedBytes = 48 * 1024;  // without it

// Runs every block of a launch whose configuration has been checked; returns when all are done.
void run_grid(const KernelCall& call);

// Records `error` as the runtime's last error, with a sentence saying what was wrong (read by
// kernels/cuda/check.h through unetcu_simt_take_problem), and returns it.
cudaError_t fail(cudaError_t error, std::string problem);

}  // namespace detail
}  // namespace simt
}  // namespace unetcu
