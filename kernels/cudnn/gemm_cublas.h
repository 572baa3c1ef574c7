// kernels/cudnn/gemm_cublas.h: the GEMMs of the convolutions that run as a GEMM and a gather
// (kernels/conv.h: conv2d_forward_gemm_dims, conv2d_backward_data_gemm_dims), through cuBLAS.
// The one translation unit that talks to cuBLAS (gemm_cublas.cpp) sits behind this header.
// GPU builds only: under the SIMT emulator cpu::gemm_colmajor (BLAS) stands in, with the same
// GemmDims.
//
// TF32: with tf32 (the default, as for cuDNN) the compute type is CUBLAS_COMPUTE_32F_FAST_TF32
// (float inputs rounded to TF32 on the tensor cores, float accumulation); without it
// CUBLAS_COMPUTE_32F under the default math mode, every product in float.
//
// Workspace: cuBLAS gets one buffer of its own (32 MiB, cuBLAS's recommendation for Hopper),
// allocated with the runner and handed over before each call, because cublasSetStream puts
// the handle back on cuBLAS's internal pool, which would allocate inside a CUDA graph capture.
// Results are reproducible run to run: cuBLAS's GEMMs use no atomics unless asked
// (cublasSetAtomicsMode), and the workspace and stream are the same at every call.
//
// Errors: every cuBLAS call is checked; a failure throws CublasError naming the call,
// file:line, cuBLAS's status text and a hint.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>

#include "kernels/conv.h"

namespace unetcu::cudnn {

class CublasError : public std::runtime_error {
 public:
  explicit CublasError(const std::string& message) : std::runtime_error(message) {}
};

// "cuBLAS 13.0.2": the library loaded at run time.
std::string cublas_version();

// One cuBLAS handle; not thread-safe (one per host thread). Calls are asynchronous.
class GemmRunner {
 public:
  explicit GemmRunner(bool tf32);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // C = op(A) * B as `d` says (column-major), on `stream`.
  void run(const GemmDims& d, const float* a, const float* b, float* c, cudaStream_t stream);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace unetcu::cudnn
