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
// Algorithm search (UNETCU_GEMM_SEARCH=1, off by default): the first call of each GEMM shape
// outside a stream capture also times the best algorithms cuBLASLt's heuristics offer for it
// (at most kGemmSearchAlgorithms, within the workspace) beside cublasGemmEx's own choice,
// each as a captured CUDA graph (kernels/cuda/capture_timing.h), and later calls of the shape
// run the fastest; report() lists them. Why: the deep layers' GEMMs are small and oddly shaped
// (256 x 1,024 x 2,304 for layer3's forward), where one ranking's first guess may leave the
// card part empty; the convolutions' GEMM rivals lost to cuDNN by a few microseconds on some
// of those shapes (bench/RESULTS.md). The GEMM rival is itself timed against cuDNN and checked
// against its output, so a slower or wrong algorithm cannot serve.
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

constexpr int kGemmSearchAlgorithms = 8;

// One cuBLAS handle; not thread-safe (one per host thread). Calls are asynchronous.
class GemmRunner {
 public:
  // search: 1 times cuBLASLt's algorithms per shape (above), 0 not; -1: UNETCU_GEMM_SEARCH,
  // else 0 (a value other than 0 or 1 there throws, naming it).
  explicit GemmRunner(bool tf32, int search = -1);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // C = op(A) * B as `d` says (column-major), on `stream`.
  void run(const GemmDims& d, const float* a, const float* b, float* c, cudaStream_t stream);
  // With the search: one line per GEMM shape, the algorithm that serves and the times of
  // those tried; empty without it.
  std::string report() const;
  // "GEMM algorithms searched" when the search is on, else empty (for the backend's
  // description).
  std::string settings() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace unetcu::cudnn
