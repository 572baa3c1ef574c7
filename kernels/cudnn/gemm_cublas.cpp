// kernels/cudnn/gemm_cublas.cpp: GemmRunner (see gemm_cublas.h), the project's cuBLAS calls.
#include "kernels/cudnn/gemm_cublas.h"

#include <cublas_v2.h>

#include <sstream>

#include "kernels/cuda/check.h"
#include "kernels/cudnn/library_error.h"

namespace unetcu::cudnn {
namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// What a user can do about a failed cuBLAS call.
const char* hint(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "cuBLAS could not start: check that the NVIDIA driver works (nvidia-smi) and that "
             "libcublas matches the CUDA runtime";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "out of memory: try a smaller --batch-size (or image size)";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "cuBLAS rejected an argument: a bug in unetcu (the dimensions are in the message); "
             "please report it";
    case CUBLAS_STATUS_ARCH_MISMATCH:
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "this cuBLAS cannot run the GEMM on this GPU: set UNETCU_GEMM_CONV=0 to use cuDNN "
             "alone";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "a cuBLAS kernel failed; an earlier kernel may have faulted: rerun with "
             "UNETCU_SYNC=1 to stop at the first failing launch";
    default:
      return "";
  }
}

[[noreturn]] void cublas_fail(cublasStatus_t status, const char* call, const char* file,
                              int line, const std::string& context) {
  throw CublasError(library_error("cuBLAS", int(status), cublasGetStatusString(status), call,
                                  file, line, context, std::string(), hint(status)));
}

#define UNETCU_CUBLAS_CHECK_FOR(expr, context)                                        \
  do {                                                                                \
    const cublasStatus_t unetcu_status_ = (expr);                                     \
    if (unetcu_status_ != CUBLAS_STATUS_SUCCESS)                                      \
      cublas_fail(unetcu_status_, #expr, __FILE__, __LINE__, (context));              \
  } while (0)

std::string describe(const GemmDims& d) {
  std::ostringstream os;
  os << "GEMM m " << d.m << " n " << d.n << " k " << d.k << " (A" << (d.trans_a ? "^T" : "")
     << ", lda " << d.lda << ", ldb " << d.ldb << ", ldc " << d.ldc << ")";
  return os.str();
}

}  // namespace

std::string cublas_version() {
  int v = 0;
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) return "cuBLAS (not loadable)";
  (void)cublasGetVersion(handle, &v);
  (void)cublasDestroy(handle);
  std::ostringstream os;
  os << "cuBLAS " << v / 10000 << "." << (v % 10000) / 100 << "." << v % 100;
  return os.str();
}

struct GemmRunner::Impl {
  cublasHandle_t handle = nullptr;
  void* workspace = nullptr;
  bool tf32 = true;
  ~Impl() {
    if (handle) (void)cublasDestroy(handle);
    if (workspace) (void)cudaFree(workspace);
  }
};

GemmRunner::GemmRunner(bool tf32) : impl_(std::make_unique<Impl>()) {
  impl_->tf32 = tf32;
  UNETCU_CUBLAS_CHECK_FOR(cublasCreate(&impl_->handle), std::string());
  UNETCU_CUDA_CHECK_ALLOC(cudaMalloc(&impl_->workspace, kWorkspaceBytes), kWorkspaceBytes);
}

GemmRunner::~GemmRunner() = default;

void GemmRunner::run(const GemmDims& d, const float* a, const float* b, float* c,
                     cudaStream_t stream) {
  // The context (describe(d)) is formed only when a call fails: the macro evaluates it there.
  // cublasSetStream resets the workspace to cuBLAS's pool: ours goes back on after it.
  UNETCU_CUBLAS_CHECK_FOR(cublasSetStream(impl_->handle, stream), describe(d));
  UNETCU_CUBLAS_CHECK_FOR(cublasSetWorkspace(impl_->handle, impl_->workspace, kWorkspaceBytes),
                          describe(d));
  const float one = 1.0f, zero = 0.0f;
  const cublasComputeType_t compute =
      impl_->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  UNETCU_CUBLAS_CHECK_FOR(
      cublasGemmEx(impl_->handle, d.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, d.m, d.n,
                   d.k, &one, a, CUDA_R_32F, d.lda, b, CUDA_R_32F, d.ldb, &zero, c, CUDA_R_32F,
                   d.ldc, compute, CUBLAS_GEMM_DEFAULT),
      describe(d));
}

}  // namespace unetcu::cudnn
