// kernels/cudnn/gemm_cublas.cpp: GemmRunner (see gemm_cublas.h), the project's cuBLAS calls.
#include "kernels/cudnn/gemm_cublas.h"

#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstdint>
#include <map>
#include <memory>
#include <sstream>
#include <tuple>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/env.h"
#include "kernels/cudnn/agreement.h"
#include "kernels/cuda/capture_timing.h"
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

// The search's timing, as the cuDNN runner times its candidates (conv_cudnn.cpp).
constexpr int kSearchCalls = 4;
constexpr int kSearchRuns = 5;

// The largest power of two, at most 256, that divides the address: what cuBLASLt's heuristics
// are told of a buffer's alignment, so that they offer no algorithm that needs more.
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// A GEMM shape and its buffers' alignments: the search's key.
using ShapeKey = std::tuple<int, int, int, int, int, int, bool, uint32_t, uint32_t, uint32_t>;

// One cuBLASLt object, destroyed with its owner.
template <typename T, cublasStatus_t (*Destroy)(T)>
struct LtObject {
  T p = nullptr;
  LtObject() = default;
  LtObject(const LtObject&) = delete;
  LtObject& operator=(const LtObject&) = delete;
  ~LtObject() {
    if (p) (void)Destroy(p);
  }
};

// What the search found for one shape: cuBLASLt's descriptors of it, the algorithm that serves
// (none: cublasGemmEx's own choice), and every time taken, for report().
struct ShapeChoice {
  GemmDims dims;
  LtObject<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy> op;
  LtObject<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy> a, b, c;
  bool use_lt = false;
  cublasLtMatmulAlgo_t algo{};
  size_t algo_workspace = 0;
  float default_ms = -1;
  std::vector<float> lt_ms;  // per algorithm offered, in the heuristics' order; < 0: did not run
  int serving = -1;          // index into lt_ms of the algorithm that serves
  std::string note;          // why the search could not run, when it could not
};

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
  bool search = false;
  cublasLtHandle_t lt = nullptr;                           // made by the first search
  cudaEvent_t start = nullptr, stop = nullptr;             // likewise
  std::map<ShapeKey, std::unique_ptr<ShapeChoice>> chosen;  // by the search, per shape
  ~Impl() {
    chosen.clear();  // its descriptors before the handle
    if (lt) (void)cublasLtDestroy(lt);
    if (start) (void)cudaEventDestroy(start);
    if (stop) (void)cudaEventDestroy(stop);
    if (handle) (void)cublasDestroy(handle);
    if (workspace) (void)cudaFree(workspace);
  }

  cublasComputeType_t compute() const {
    return tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  }
  // cublasGemmEx with its own algorithm choice, on the stream the handle was set to.
  cublasStatus_t gemm_ex(const GemmDims& d, const float* a, const float* b, float* c) const {
    const float one = 1.0f, zero = 0.0f;
    return cublasGemmEx(handle, d.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, d.m, d.n,
                        d.k, &one, a, CUDA_R_32F, d.lda, b, CUDA_R_32F, d.ldb, &zero, c,
                        CUDA_R_32F, d.ldc, compute(), CUBLAS_GEMM_DEFAULT);
  }
  // cuBLASLt with algorithm `algo` of shape choice `ch`.
  cublasStatus_t lt_matmul(const ShapeChoice& ch, const cublasLtMatmulAlgo_t& algo,
                           const float* a, const float* b, float* c, cudaStream_t stream) const {
    const float one = 1.0f, zero = 0.0f;
    return cublasLtMatmul(lt, ch.op.p, &one, a, ch.a.p, b, ch.b.p, &zero, c, ch.c.p, c, ch.c.p,
                          &algo, workspace, kWorkspaceBytes, stream);
  }

  // Times cublasGemmEx's choice and the algorithms cuBLASLt's heuristics offer for this shape
  // on these buffers (their contents are overwritten: the caller's call comes after).
  std::unique_ptr<ShapeChoice> search_shape(const GemmDims& d, const float* a, const float* b,
                                            float* c, cudaStream_t stream) {
    auto ch = std::make_unique<ShapeChoice>();
    ch->dims = d;
    if (!start) {
      UNETCU_CUDA_CHECK(cudaEventCreate(&start));
      UNETCU_CUDA_CHECK(cudaEventCreate(&stop));
    }
    ch->default_ms = time_captured(stream, start, stop, kSearchCalls, kSearchRuns, [&] {
      return gemm_ex(d, a, b, c) == CUBLAS_STATUS_SUCCESS;
    });
    if (!lt && cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) {
      lt = nullptr;
      ch->note = "cublasLtCreate failed";
      return ch;
    }
    const cublasOperation_t trans_a = d.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t trans_b = CUBLAS_OP_N;
    const uint64_t workspace_bytes = kWorkspaceBytes;
    const uint32_t align[3] = {alignment_of(a), alignment_of(b), alignment_of(c)};
    LtObject<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy> pref;
    // A is stored k x m when transposed, m x k otherwise; B k x n; C m x n (column-major).
    bool ok = cublasLtMatmulDescCreate(&ch->op.p, compute(), CUDA_R_32F) ==
                  CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulDescSetAttribute(ch->op.p, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                             sizeof(trans_a)) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulDescSetAttribute(ch->op.p, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                             sizeof(trans_b)) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&ch->a.p, CUDA_R_32F, d.trans_a ? d.k : d.m,
                                         d.trans_a ? d.m : d.k, d.lda) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&ch->b.p, CUDA_R_32F, d.k, d.n, d.ldb) ==
                  CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&ch->c.p, CUDA_R_32F, d.m, d.n, d.ldc) ==
                  CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulPreferenceCreate(&pref.p) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                   &workspace_bytes, sizeof(workspace_bytes)) ==
                  CUBLAS_STATUS_SUCCESS;
    // D is C (the product is written in place), so it gets C's alignment: unset, the
    // heuristics would take D as 256-byte aligned and could offer an algorithm C's buffer
    // cannot serve.
    const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4 && ok; ++i) {
      const uint32_t bytes = align[i < 3 ? i : 2];
      ok = cublasLtMatmulPreferenceSetAttribute(pref.p, align_attr[i], &bytes, sizeof(bytes)) ==
           CUBLAS_STATUS_SUCCESS;
    }
    cublasLtMatmulHeuristicResult_t results[kGemmSearchAlgorithms] = {};
    int returned = 0;
    ok = ok && cublasLtMatmulAlgoGetHeuristic(lt, ch->op.p, ch->a.p, ch->b.p, ch->c.p, ch->c.p,
                                              pref.p, kGemmSearchAlgorithms, results,
                                              &returned) == CUBLAS_STATUS_SUCCESS;
    if (!ok) {
      (void)cudaGetLastError();
      ch->note = "cuBLASLt offered no algorithm";
      return ch;
    }
    float best = ch->default_ms;
    for (int i = 0; i < returned; ++i) {
      float ms = -1;
      if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= kWorkspaceBytes)
        ms = time_captured(stream, start, stop, kSearchCalls, kSearchRuns, [&] {
          return lt_matmul(*ch, results[i].algo, a, b, c, stream) == CUBLAS_STATUS_SUCCESS;
        });
      ch->lt_ms.push_back(ms);
      if (ms >= 0 && (best < 0 || ms < best)) {
        best = ms;
        ch->use_lt = true;
        ch->algo = results[i].algo;
        ch->algo_workspace = results[i].workspaceSize;
        ch->serving = i;
      }
    }
    if (ch->use_lt && !agrees_with_gemm_ex(*ch, a, b, c, stream)) {
      ch->use_lt = false;
      ch->note = "cuBLASLt algorithm " + std::to_string(ch->serving + 1) +
                 " disagreed with cublasGemmEx: not used";
      ch->serving = -1;
    }
    return ch;
  }

  // The chosen cuBLASLt algorithm's product against cublasGemmEx's on the same inputs (C is
  // overwritten; the caller's call comes after), checked as a rival convolution is against
  // cuDNN's (check_candidate). Every shape searched gets it: a step's buffers can differ in
  // alignment from the ones a rival was checked on, which makes a search of its own.
  bool agrees_with_gemm_ex(const ShapeChoice& ch, const float* a, const float* b, float* c,
                           cudaStream_t stream) const {
    if (ch.dims.m <= 0 || ch.dims.n <= 0) return true;  // an empty product: nothing differs
    // C's extent: n columns ldc apart, the last one m long (rows past m are written by
    // neither product: poisoned alike in both copies, no difference).
    const size_t bytes =
        (size_t(ch.dims.ldc) * size_t(ch.dims.n - 1) + size_t(ch.dims.m)) * sizeof(float);
    float* ref = nullptr;
    if (cudaMalloc(&ref, bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;  // no room for the check: keep cublasGemmEx
    }
    Checked checked;
    try {
      checked = check_candidate(
          0.0f, c, ref, bytes, stream,
          [&](float, void* dst) {
            return gemm_ex(ch.dims, a, b, static_cast<float*>(dst)) == CUBLAS_STATUS_SUCCESS;
          },
          [&](void* dst) {
            return lt_matmul(ch, ch.algo, a, b, static_cast<float*>(dst), stream) ==
                   CUBLAS_STATUS_SUCCESS;
          });
    } catch (const CudaError&) {
      checked.ran = false;
    }
    (void)cudaFree(ref);
    (void)cudaGetLastError();
    return checked.ran && checked.agreement.agree;
  }
};

GemmRunner::GemmRunner(bool tf32, int search) : impl_(std::make_unique<Impl>()) {
  impl_->tf32 = tf32;
  if (search < 0)
    search = env_int_or_throw<CublasError>(
        "UNETCU_GEMM_SEARCH", 0, 0, 1, "0 or 1 (1: cuBLASLt's algorithms timed per GEMM shape)");
  impl_->search = search == 1;
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
  if (impl_->search) {
    const ShapeKey key{d.m,       d.n, d.k, d.lda, d.ldb, d.ldc, d.trans_a, alignment_of(a),
                       alignment_of(b), alignment_of(c)};
    auto it = impl_->chosen.find(key);
    if (it == impl_->chosen.end()) {
      // A shape first seen inside a capture keeps cublasGemmEx's choice for that call (the
      // search runs kernels of its own); the engine's first step of a batch size is eager.
      cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
      UNETCU_CUDA_CHECK(cudaStreamIsCapturing(stream, &capturing));
      if (capturing == cudaStreamCaptureStatusNone)
        it = impl_->chosen.emplace(key, impl_->search_shape(d, a, b, c, stream)).first;
    }
    if (it != impl_->chosen.end() && it->second->use_lt) {
      UNETCU_CUBLAS_CHECK_FOR(impl_->lt_matmul(*it->second, it->second->algo, a, b, c, stream),
                              describe(d) + " (cuBLASLt)");
      return;
    }
  }
  UNETCU_CUBLAS_CHECK_FOR(impl_->gemm_ex(d, a, b, c), describe(d));
}

std::string GemmRunner::settings() const {
  return impl_->search ? "GEMM algorithms searched" : std::string();
}

std::string GemmRunner::report() const {
  std::ostringstream os;
  for (const auto& [key, ch] : impl_->chosen) {
    os << describe(ch->dims) << ": " << (ch->use_lt ? "cuBLASLt algorithm " : "cublasGemmEx")
       << (ch->use_lt ? std::to_string(ch->serving + 1) + " of " + std::to_string(ch->lt_ms.size())
                      : std::string())
       << "; cublasGemmEx " << ch->default_ms << " ms";
    if (!ch->lt_ms.empty()) {
      os << "; cuBLASLt";
      for (float ms : ch->lt_ms) os << " " << ms;
      os << " ms";
    }
    if (!ch->note.empty()) os << "; " << ch->note;
    os << "\n";
  }
  return os.str();
}

}  // namespace unetcu::cudnn
