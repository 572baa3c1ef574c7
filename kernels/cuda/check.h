// kernels/cuda/check.h: checking CUDA runtime calls. UNETCU_CUDA_CHECK(expr) throws
// unetcu::CudaError naming the error, the call, file:line and a hint for the user. Shared by nvcc
// builds, host code linked against libcudart, and the SIMT emulator; cuDNN and cuBLAS have their
// own checks.
//
//   UNETCU_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream));
//   UNETCU_CUDA_CHECK_ALLOC(cudaMalloc(&arena, bytes), bytes);  // the message says how much
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>

// The emulator's runtime explains each error it returns (which argument, which limit); weak, so
// a binary linked against the real libcudart simply has no explanation.
extern "C" const char* unetcu_simt_take_problem(cudaError_t error) __attribute__((weak));

namespace unetcu {

class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  cudaError_t code() const { return code_; }

 private:
  cudaError_t code_;
};

// What a user can do about `error`; empty when there is nothing better than the error itself.
inline std::string cuda_hint(cudaError_t error) {
  std::ostringstream hint;
  switch (error) {
    case cudaErrorMemoryAllocation: {
      size_t free_bytes = 0, total_bytes = 0;
      if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
        hint << "the device has " << (free_bytes >> 20) << " MiB free of " << (total_bytes >> 20)
             << " MiB; ";
      }
      hint << "try a smaller --batch-size (or image size)";
      break;
    }
    case cudaErrorInvalidConfiguration:
      hint << "a block has at most 1024 threads (x, y <= 1024, z <= 64) and grid.y, grid.z are "
              "at most 65535: check the sizes this launch was computed from";
      break;
    case cudaErrorLaunchOutOfResources:
      hint << "the block needs more registers or shared memory than a multiprocessor has: "
              "launch fewer threads per block or check __launch_bounds__";
      break;
    case cudaErrorInvalidClusterSize:
      hint << "a cluster launch (compute capability 9.0) that the device cannot place: at most "
              "8 blocks a cluster (16 with the non-portable opt-in), dividing grid.x, all "
              "resident at once";
      break;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
      hint << "no usable CUDA device: check nvidia-smi, or use the CPU backend";
      break;
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorInvalidKernelImage:
    case cudaErrorUnsupportedPtxVersion:
      hint << "the binary holds no code for this GPU: rebuild with CMAKE_CUDA_ARCHITECTURES "
              "set for it (90 for H100/H200)";
      break;
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorMisalignedAddress:
    case cudaErrorIllegalInstruction:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
      hint << "a kernel faulted; the error may surface at a later call: rerun with UNETCU_SYNC=1 "
              "to stop at the faulting launch (UNETCU_BUFFER_GUARDS=1 also names a kernel that "
              "wrote past its output), and run the emulated-kernel tests (ASan) or "
              "compute-sanitizer; UNETCU_DIRECT_CONV=0 leaves the hand-written convolution "
              "kernels out";
      break;
    case cudaErrorStreamCaptureUnsupported:
    case cudaErrorStreamCaptureInvalidated:
    case cudaErrorStreamCaptureImplicit:
    case cudaErrorCapturedEvent:
      hint << "a call that allocates, synchronises or uses the legacy stream ran while a CUDA "
              "graph was being captured";
      break;
    default:
      break;
  }
  return hint.str();
}

// Builds "CUDA error <name> (<text>) in <what> at <file>:<line>: <detail> Hint: <hint>" and
// throws it as CudaError. Clears the runtime's last error so a caller that catches and recovers
// (a smaller batch after out-of-memory) does not meet the same error at the next launch.
[[noreturn]] inline void cuda_fail(cudaError_t error, const char* what, const char* file,
                                   int line, const std::string& detail = std::string()) {
  (void)cudaGetLastError();
  std::ostringstream message;
  message << "CUDA error " << cudaGetErrorName(error) << " (" << cudaGetErrorString(error)
          << ") in " << what << " at " << file << ":" << line;
  if (!detail.empty()) message << ": " << detail;
  if (unetcu_simt_take_problem != nullptr) {
    const char* problem = unetcu_simt_take_problem(error);
    if (problem != nullptr && problem[0] != '\0') message << " [emulator: " << problem << "]";
  }
  const std::string hint = cuda_hint(error);
  if (!hint.empty()) message << ". Hint: " << hint;
  throw CudaError(error, message.str());
}

// "asked for 1536 MiB (1610612736 bytes)": the detail UNETCU_CUDA_CHECK_ALLOC adds.
inline std::string describe_allocation(size_t bytes) {
  std::ostringstream os;
  os << "asked for " << (bytes >> 20) << " MiB (" << bytes << " bytes)";
  return os.str();
}

}  // namespace unetcu

#define UNETCU_CUDA_CHECK(expr)                                                     \
  do {                                                                              \
    const cudaError_t unetcu_error_ = (expr);                                       \
    if (unetcu_error_ != cudaSuccess)                                               \
      ::unetcu::cuda_fail(unetcu_error_, #expr, __FILE__, __LINE__);                \
  } while (0)

#define UNETCU_CUDA_CHECK_ALLOC(expr, bytes)                                        \
  do {                                                                              \
    const cudaError_t unetcu_error_ = (expr);                                       \
    if (unetcu_error_ != cudaSuccess)                                               \
      ::unetcu::cuda_fail(unetcu_error_, #expr, __FILE__, __LINE__,                 \
                          ::unetcu::describe_allocation(bytes));                    \
  } while (0)
