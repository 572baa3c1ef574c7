// kernels/cudnn/conv_cudnn.cpp: cuDNN convolutions (see conv_cudnn.h for the layouts, the
// algorithm choice and the TF32 rule).
//
// cuDNN 9 still ships the descriptor-based convolution API (cudnn_cnn.h: cudnnConvolution*,
// cudnnFind*AlgorithmEx, cudnnGet*Algorithm_v7); it is marked deprecated in favour of the graph
// API but stays fully supported, and it is the shortest correct way to run three fixed
// convolutions per layer. The deprecation attribute only shows with CUDNN_WARN_DEPRECATED.
#include "kernels/cudnn/conv_cudnn.h"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <tuple>
#include <vector>

#include "kernels/cuda/check.h"

namespace unetcu::cudnn {
namespace {

// What a user can do about a failed cuDNN call, by the status's category (cuDNN 9 codes are
// category * 1000 + detail).
std::string hint(cudnnStatus_t status) {
  switch (status) {
    case CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH:
      return "this cuDNN has no kernels for this GPU: install a cuDNN 9 build that supports it";
    case CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER:
    case CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART:
      return "cuDNN needs a newer NVIDIA driver or CUDA runtime than this machine has";
    case CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED:
    case CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED:
      return "out of memory: try a smaller --batch-size (or image size)";
    default:
      break;
  }
  switch (CUDNN_STATUS_CATEGORY(status)) {
    case 1000:
      return "cuDNN could not initialise or load its sub-libraries (libcudnn_cnn, "
             "libcudnn_engines_*): they must sit beside libcudnn.so.9 with the same version; "
             "check LD_LIBRARY_PATH and that only one cuDNN is loaded in the process";
    case 2000:
      return "cuDNN rejected an argument: a bug in unetcu (the shape is in the message); "
             "please report it";
    case 3000:
      return "cuDNN has no algorithm for this convolution, layout or math mode: try --no-tf32";
    case 4000:
    case 5000:
      return "a cuDNN kernel failed; an earlier kernel may have faulted: rerun with "
             "UNETCU_SYNC=1 to stop at the first failing launch";
    default:
      return "";
  }
}

[[noreturn]] void cudnn_fail(cudnnStatus_t status, const char* call, const char* file, int line,
                             const std::string& context) {
  char detail[1024] = {};
  cudnnGetLastErrorString(detail, sizeof(detail));
  std::ostringstream message;
  message << "cuDNN error " << int(status) << " (" << cudnnGetErrorString(status) << ") in "
          << call << " at " << file << ":" << line;
  if (!context.empty()) message << " for " << context;
  if (detail[0] != '\0') message << ": " << detail;
  const std::string h = hint(status);
  if (!h.empty()) message << ". Hint: " << h;
  throw CudnnError(message.str());
}

#define UNETCU_CUDNN_CHECK_FOR(expr, context)                                         \
  do {                                                                                \
    const cudnnStatus_t unetcu_status_ = (expr);                                      \
    if (unetcu_status_ != CUDNN_STATUS_SUCCESS)                                       \
      cudnn_fail(unetcu_status_, #expr, __FILE__, __LINE__, (context));               \
  } while (0)
#define UNETCU_CUDNN_CHECK(expr) UNETCU_CUDNN_CHECK_FOR(expr, std::string())

enum class Dir { forward, backward_data, backward_filter };

const char* dir_name(Dir d) {
  return d == Dir::forward ? "fwd" : d == Dir::backward_data ? "bwd-data" : "bwd-filter";
}

std::string describe(const ConvShape& sh) {
  std::ostringstream os;
  os << "n" << sh.n << " " << sh.h << "x" << sh.w << "x" << sh.c << " -> " << sh.p << "x" << sh.q
     << "x" << sh.k << " (" << sh.r << "x" << sh.s << " stride " << sh.stride << " pad "
     << sh.pad << ")";
  return os.str();
}

const char* algo_name(Dir d, int algo) {
  static const char* const fwd[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT",
                                    "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  static const char* const bwd_data[] = {"ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD",
                                         "WINOGRAD_NONFUSED"};
  static const char* const bwd_filter[] = {"ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD",
                                           "WINOGRAD_NONFUSED", "FFT_TILING"};
  const char* const* names = d == Dir::forward ? fwd : d == Dir::backward_data ? bwd_data : bwd_filter;
  const int count = d == Dir::forward ? 8 : d == Dir::backward_data ? 6 : 7;
  return algo >= 0 && algo < count ? names[algo] : "?";
}

const char* math_name(cudnnMathType_t m) {
  switch (m) {
    case CUDNN_DEFAULT_MATH: return "default(tf32)";
    case CUDNN_TENSOR_OP_MATH: return "tensor-op";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "tensor-op-conv";
    case CUDNN_FMA_MATH: return "fma";
  }
  return "?";
}

// The three perf-result structs of cuDNN share their fields; this is what a choice keeps.
struct Choice {
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  bool deterministic = true;
  float time_ms = -1.0f;  // measured time; negative when chosen by heuristics
};

// The candidates a choice may take, in cuDNN's order (fastest first when measured, best first
// from the heuristics): those that ran, and only the deterministic ones when there are any (a
// training run should repeat bit for bit on one GPU; backward-data ALGO_0 and backward-filter
// ALGO_0/ALGO_3 accumulate with atomics). A candidate that would convert float32 data to half
// precision (ALLOW_CONVERSION) is never usable: this engine trains in float32.
template <typename Perf>
std::vector<Choice> candidates(const Perf* results, int count, bool measured) {
  std::vector<Choice> all, deterministic;
  for (int i = 0; i < count; ++i) {
    const Perf& p = results[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
      continue;
    Choice c;
    c.algo = int(p.algo);
    c.math = p.mathType;
    c.deterministic = p.determinism == CUDNN_DETERMINISTIC;
    c.time_ms = measured ? p.time : -1.0f;
    all.push_back(c);
    if (c.deterministic) deterministic.push_back(c);
  }
  return deterministic.empty() ? all : deterministic;
}

// cudnnFind times each candidate once, and a choice is kept for the whole run, so the fastest
// few are timed again (median of kRetimeRuns after a warm-up run) before one is taken: a single
// run of a kernel of a few microseconds is at the mercy of clocks and first-launch costs.
constexpr int kRetimeCandidates = 4;
constexpr int kRetimeRuns = 5;

// Device memory for the search, freed at scope exit.
struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (ptr) cudaFree(ptr);
  }
  bool try_alloc(size_t n) {
    if (n == 0) return true;
    if (cudaMalloc(&ptr, n) != cudaSuccess) {
      (void)cudaGetLastError();  // an allocation the search can do without
      ptr = nullptr;
      return false;
    }
    bytes = n;
    return true;
  }
};

struct Key {
  ConvShape sh;
  Dir dir;
  bool operator<(const Key& o) const {
    auto tie = [](const Key& k) {
      return std::make_tuple(k.sh.n, k.sh.h, k.sh.w, k.sh.c, k.sh.k, k.sh.r, k.sh.s, k.sh.stride,
                             k.sh.pad, int(k.dir));
    };
    return tie(*this) < tie(o);
  }
};

// The descriptors and the chosen algorithm of one (shape, direction). Each direction has its
// own convolution descriptor because the math type found best may differ between them.
struct Plan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Choice choice;
  bool measured = false;
  std::vector<Choice> timed;  // the candidates timed again, fastest first (for report())
  size_t workspace = 0;

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
  }
};

// Largest search workspace: a quarter of the free memory, at most 1 GiB, so the search never
// pushes the training allocations (already made) out.
constexpr size_t kMaxSearchWorkspace = size_t(1) << 30;

}  // namespace

std::string version() {
  const size_t v = cudnnGetVersion();
  std::ostringstream os;
  os << "cuDNN " << v / 10000 << "." << (v % 10000) / 100 << "." << v % 100 << " (headers "
     << CUDNN_MAJOR << "." << CUDNN_MINOR << "." << CUDNN_PATCHLEVEL << ")";
  return os.str();
}

struct ConvRunner::Impl {
  cudaStream_t stream = nullptr;
  ConvOptions options;
  cudnnHandle_t handle = nullptr;
  std::map<Key, std::unique_ptr<Plan>> plans;

  cudnnMathType_t requested_math() const { return options.tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH; }

  // Descriptors for `sh`, the convolution descriptor in the requested math mode.
  std::unique_ptr<Plan> make_descriptors(const ConvShape& sh) {
    const std::string what = describe(sh);
    auto plan = std::make_unique<Plan>();
    UNETCU_CUDNN_CHECK_FOR(cudnnCreateTensorDescriptor(&plan->x), what);
    UNETCU_CUDNN_CHECK_FOR(cudnnCreateTensorDescriptor(&plan->y), what);
    UNETCU_CUDNN_CHECK_FOR(cudnnCreateFilterDescriptor(&plan->w), what);
    UNETCU_CUDNN_CHECK_FOR(cudnnCreateConvolutionDescriptor(&plan->conv), what);
    UNETCU_CUDNN_CHECK_FOR(cudnnSetTensor4dDescriptor(plan->x, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT,
                                                      sh.n, sh.c, sh.h, sh.w), what);
    UNETCU_CUDNN_CHECK_FOR(cudnnSetTensor4dDescriptor(plan->y, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT,
                                                      sh.n, sh.k, sh.p, sh.q), what);
    // KRSC is cuDNN's NHWC filter layout: dimensions given as (k, c, r, s), C fastest in memory.
    UNETCU_CUDNN_CHECK_FOR(cudnnSetFilter4dDescriptor(plan->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC,
                                                      sh.k, sh.c, sh.r, sh.s), what);
    UNETCU_CUDNN_CHECK_FOR(cudnnSetConvolution2dDescriptor(plan->conv, sh.pad, sh.pad, sh.stride,
                                                           sh.stride, 1, 1,
                                                           CUDNN_CROSS_CORRELATION,
                                                           CUDNN_DATA_FLOAT), what);
    UNETCU_CUDNN_CHECK_FOR(cudnnSetConvolutionMathType(plan->conv, requested_math()), what);
    int n = 0, k = 0, p = 0, q = 0;
    UNETCU_CUDNN_CHECK_FOR(cudnnGetConvolution2dForwardOutputDim(plan->conv, plan->x, plan->w, &n,
                                                                 &k, &p, &q), what);
    if (n != sh.n || k != sh.k || p != sh.p || q != sh.q) {
      std::ostringstream os;
      os << "cuDNN computes output " << n << "x" << p << "x" << q << "x" << k << " for " << what
         << ", but the shape says " << sh.n << "x" << sh.p << "x" << sh.q << "x" << sh.k;
      throw CudnnError(os.str());
    }
    return plan;
  }

  // Throws when the stream is being captured: choosing an algorithm runs kernels and allocates.
  void require_not_capturing(const ConvShape& sh, Dir d) const {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    UNETCU_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
    if (status != cudaStreamCaptureStatusNone) {
      throw CudnnError(std::string("cuDNN: the ") + dir_name(d) + " convolution " + describe(sh) +
                       " is first seen while a CUDA graph is being captured; its algorithm must "
                       "be chosen in an eager step first (a bug in the caller)");
    }
  }

  // A search workspace as large as allowed and obtainable (halving on failure).
  static void search_workspace(Scratch* ws) {
    size_t free_bytes = 0, total_bytes = 0;
    UNETCU_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    for (size_t want = std::min(free_bytes / 4, kMaxSearchWorkspace); want >= (size_t(1) << 20);
         want /= 2)
      if (ws->try_alloc(want)) return;
  }

  // The workspace `algo` needs for this plan in the convolution descriptor's current math type.
  size_t workspace_for(const Plan& plan, Dir d, int algo, const std::string& what) const {
    size_t bytes = 0;
    if (d == Dir::forward) {
      UNETCU_CUDNN_CHECK_FOR(cudnnGetConvolutionForwardWorkspaceSize(
                                 handle, plan.x, plan.w, plan.conv, plan.y,
                                 cudnnConvolutionFwdAlgo_t(algo), &bytes), what);
    } else if (d == Dir::backward_data) {
      UNETCU_CUDNN_CHECK_FOR(cudnnGetConvolutionBackwardDataWorkspaceSize(
                                 handle, plan.w, plan.y, plan.conv, plan.x,
                                 cudnnConvolutionBwdDataAlgo_t(algo), &bytes), what);
    } else {
      UNETCU_CUDNN_CHECK_FOR(cudnnGetConvolutionBackwardFilterWorkspaceSize(
                                 handle, plan.x, plan.y, plan.conv, plan.w,
                                 cudnnConvolutionBwdFilterAlgo_t(algo), &bytes), what);
    }
    return bytes;
  }

  // One overwriting run of `algo` into `out` (the search's scratch output); `a`, `b` as plan().
  cudnnStatus_t run_once(const Plan& plan, Dir d, int algo, const float* a, const float* b,
                         void* out, void* ws, size_t ws_bytes) const {
    const float alpha = 1.0f, beta = 0.0f;
    if (d == Dir::forward)
      return cudnnConvolutionForward(handle, &alpha, plan.x, a, plan.w, b, plan.conv,
                                     cudnnConvolutionFwdAlgo_t(algo), ws, ws_bytes, &beta, plan.y,
                                     out);
    if (d == Dir::backward_data)
      return cudnnConvolutionBackwardData(handle, &alpha, plan.w, b, plan.y, a, plan.conv,
                                          cudnnConvolutionBwdDataAlgo_t(algo), ws, ws_bytes,
                                          &beta, plan.x, out);
    return cudnnConvolutionBackwardFilter(handle, &alpha, plan.x, b, plan.y, a, plan.conv,
                                          cudnnConvolutionBwdFilterAlgo_t(algo), ws, ws_bytes,
                                          &beta, plan.w, out);
  }

  // Times the first kRetimeCandidates of `list` again (see kRetimeRuns) and puts those that
  // ran first, fastest first; a candidate that fails or needs more than the search workspace
  // is dropped from the timing (it keeps its place after the timed ones).
  void retime(Plan& plan, Dir d, const float* a, const float* b, void* out, const Scratch& ws,
              std::vector<Choice>* list, const std::string& what) {
    cudaEvent_t start = nullptr, stop = nullptr;
    UNETCU_CUDA_CHECK(cudaEventCreate(&start));
    UNETCU_CUDA_CHECK(cudaEventCreate(&stop));
    std::vector<Choice> timed, rest;
    for (size_t i = 0; i < list->size(); ++i) {
      Choice c = (*list)[i];
      bool ok = int(i) < kRetimeCandidates;
      if (ok) {
        UNETCU_CUDNN_CHECK_FOR(cudnnSetConvolutionMathType(plan.conv, c.math), what);
        ok = workspace_for(plan, d, c.algo, what) <= ws.bytes &&
             run_once(plan, d, c.algo, a, b, out, ws.ptr, ws.bytes) == CUDNN_STATUS_SUCCESS;
      }
      std::vector<float> ms;
      for (int r = 0; ok && r < kRetimeRuns; ++r) {
        UNETCU_CUDA_CHECK(cudaEventRecord(start, stream));
        ok = run_once(plan, d, c.algo, a, b, out, ws.ptr, ws.bytes) == CUDNN_STATUS_SUCCESS;
        UNETCU_CUDA_CHECK(cudaEventRecord(stop, stream));
        UNETCU_CUDA_CHECK(cudaEventSynchronize(stop));
        float t = 0;
        UNETCU_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
        ms.push_back(t);
      }
      if (ok) {
        std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
        c.time_ms = ms[ms.size() / 2];
        timed.push_back(c);
      } else {
        (void)cudaGetLastError();  // a candidate that failed leaves no error behind
        rest.push_back(c);
      }
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    std::stable_sort(timed.begin(), timed.end(),
                     [](const Choice& x, const Choice& y) { return x.time_ms < y.time_ms; });
    plan.timed = timed;
    timed.insert(timed.end(), rest.begin(), rest.end());
    *list = timed;
  }

  // Chooses the algorithm of one direction: measured search (cudnnFind, then the fastest few
  // timed again) first, heuristics as the fallback.
  // `a` and `b` are the direction's inputs in the kernel order (fwd: x, wt; bwd-data: dy, wt;
  // bwd-filter: dy, x).
  Plan& plan(const ConvShape& sh, Dir d, const float* a, const float* b) {
    auto found = plans.find(Key{sh, d});
    if (found != plans.end()) return *found->second;
    require_not_capturing(sh, d);
    std::unique_ptr<Plan> plan = make_descriptors(sh);
    const std::string what = std::string(dir_name(d)) + " " + describe(sh);

    // Measured search; the output goes to a temporary buffer of the output's size.
    const int64_t out_count = d == Dir::forward ? sh.y_size()
                              : d == Dir::backward_data ? sh.x_size()
                                                        : sh.w_size();
    Scratch out, ws;
    std::vector<Choice> list;
    if (out.try_alloc(size_t(out_count) * sizeof(float))) {
      search_workspace(&ws);
      int returned = 0;
      cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
      if (d == Dir::forward) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        status = cudnnFindConvolutionForwardAlgorithmEx(
            handle, plan->x, a, plan->w, b, plan->conv, plan->y, out.ptr,
            CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf, ws.ptr, ws.bytes);
        if (status == CUDNN_STATUS_SUCCESS) list = candidates(perf, returned, true);
      } else if (d == Dir::backward_data) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        status = cudnnFindConvolutionBackwardDataAlgorithmEx(
            handle, plan->w, b, plan->y, a, plan->conv, plan->x, out.ptr,
            CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf, ws.ptr, ws.bytes);
        if (status == CUDNN_STATUS_SUCCESS) list = candidates(perf, returned, true);
      } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        status = cudnnFindConvolutionBackwardFilterAlgorithmEx(
            handle, plan->x, b, plan->y, a, plan->conv, plan->w, out.ptr,
            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned, perf, ws.ptr, ws.bytes);
        if (status == CUDNN_STATUS_SUCCESS) list = candidates(perf, returned, true);
      }
      // A failed search leaves cuDNN usable; the heuristics below decide instead. The CUDA
      // runtime's sticky-free last error is cleared so it does not surface at the next launch.
      if (status != CUDNN_STATUS_SUCCESS) (void)cudaGetLastError();
      if (!list.empty()) retime(*plan, d, a, b, out.ptr, ws, &list, what);
    }
    plan->measured = !list.empty();
    if (list.empty()) {
      UNETCU_CUDNN_CHECK_FOR(cudnnSetConvolutionMathType(plan->conv, requested_math()), what);
      int returned = 0;
      if (d == Dir::forward) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        UNETCU_CUDNN_CHECK_FOR(cudnnGetConvolutionForwardAlgorithm_v7(
                                   handle, plan->x, plan->w, plan->conv, plan->y,
                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf), what);
        list = candidates(perf, returned, false);
      } else if (d == Dir::backward_data) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        UNETCU_CUDNN_CHECK_FOR(cudnnGetConvolutionBackwardDataAlgorithm_v7(
                                   handle, plan->w, plan->y, plan->conv, plan->x,
                                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf), what);
        list = candidates(perf, returned, false);
      } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        UNETCU_CUDNN_CHECK_FOR(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                                   handle, plan->x, plan->y, plan->conv, plan->w,
                                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned, perf), what);
        list = candidates(perf, returned, false);
      }
      if (list.empty())
        throw CudnnError("cuDNN offers no working algorithm for the " + what +
                         " convolution. Hint: try --no-tf32 or another image size");
    }
    plan->choice = list.front();

    // Run with the math type the choice was made with, except that TF32 stays off when it
    // was not allowed.
    if (options.tf32) {
      UNETCU_CUDNN_CHECK_FOR(cudnnSetConvolutionMathType(plan->conv, plan->choice.math), what);
    } else {
      UNETCU_CUDNN_CHECK_FOR(cudnnSetConvolutionMathType(plan->conv, CUDNN_FMA_MATH), what);
      plan->choice.math = CUDNN_FMA_MATH;
    }
    plan->workspace = workspace_for(*plan, d, plan->choice.algo, what);
    Plan& ref = *plan;
    plans[Key{sh, d}] = std::move(plan);
    return ref;
  }

  // The plan a run needs, which prepare_* made; checks the caller's workspace.
  const Plan& chosen(const ConvShape& sh, Dir d, size_t workspace_bytes) const {
    auto found = plans.find(Key{sh, d});
    if (found == plans.end())
      throw CudnnError(std::string("cuDNN: the ") + dir_name(d) + " convolution " + describe(sh) +
                       " runs before prepare chose its algorithm (a bug in the caller)");
    if (workspace_bytes < found->second->workspace) {
      std::ostringstream os;
      os << "cuDNN: the " << dir_name(d) << " convolution " << describe(sh) << " needs "
         << found->second->workspace << " bytes of workspace, got " << workspace_bytes
         << " (a bug in the caller)";
      throw CudnnError(os.str());
    }
    return *found->second;
  }
};

ConvRunner::ConvRunner(cudaStream_t stream, const ConvOptions& options)
    : impl_(std::make_unique<Impl>()) {
  impl_->stream = stream;
  impl_->options = options;
  UNETCU_CUDNN_CHECK(cudnnCreate(&impl_->handle));
  UNETCU_CUDNN_CHECK(cudnnSetStream(impl_->handle, stream));
}

ConvRunner::~ConvRunner() {
  impl_->plans.clear();
  if (impl_->handle) cudnnDestroy(impl_->handle);
}

size_t ConvRunner::prepare_forward(const ConvShape& sh, const float* x, const float* wt) {
  return impl_->plan(sh, Dir::forward, x, wt).workspace;
}
size_t ConvRunner::prepare_backward_data(const ConvShape& sh, const float* dy, const float* wt) {
  return impl_->plan(sh, Dir::backward_data, dy, wt).workspace;
}
size_t ConvRunner::prepare_backward_filter(const ConvShape& sh, const float* dy, const float* x) {
  return impl_->plan(sh, Dir::backward_filter, dy, x).workspace;
}

void ConvRunner::forward(float* y, const float* x, const float* wt, const ConvShape& sh,
                         void* workspace, size_t workspace_bytes) {
  const Plan& p = impl_->chosen(sh, Dir::forward, workspace_bytes);
  const float alpha = 1.0f, beta = 0.0f;
  UNETCU_CUDNN_CHECK_FOR(cudnnConvolutionForward(impl_->handle, &alpha, p.x, x, p.w, wt, p.conv,
                                                 cudnnConvolutionFwdAlgo_t(p.choice.algo),
                                                 workspace, workspace_bytes, &beta, p.y, y),
                         describe(sh));
}

void ConvRunner::backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                               GradMode mode, void* workspace, size_t workspace_bytes) {
  const Plan& p = impl_->chosen(sh, Dir::backward_data, workspace_bytes);
  // beta 0 overwrites (cuDNN then never reads dx, so stale NaNs cannot leak in); 1 accumulates.
  const float alpha = 1.0f, beta = mode == GradMode::accumulate ? 1.0f : 0.0f;
  UNETCU_CUDNN_CHECK_FOR(cudnnConvolutionBackwardData(
                             impl_->handle, &alpha, p.w, wt, p.y, dy, p.conv,
                             cudnnConvolutionBwdDataAlgo_t(p.choice.algo), workspace,
                             workspace_bytes, &beta, p.x, dx),
                         describe(sh));
}

void ConvRunner::backward_filter(float* dwt, const float* dy, const float* x, const ConvShape& sh,
                                 GradMode mode, void* workspace, size_t workspace_bytes) {
  const Plan& p = impl_->chosen(sh, Dir::backward_filter, workspace_bytes);
  const float alpha = 1.0f, beta = mode == GradMode::accumulate ? 1.0f : 0.0f;
  UNETCU_CUDNN_CHECK_FOR(cudnnConvolutionBackwardFilter(
                             impl_->handle, &alpha, p.x, x, p.y, dy, p.conv,
                             cudnnConvolutionBwdFilterAlgo_t(p.choice.algo), workspace,
                             workspace_bytes, &beta, p.w, dwt),
                         describe(sh));
}

std::string ConvRunner::report() const {
  std::ostringstream os;
  for (const auto& [key, plan] : impl_->plans) {
    const Choice& c = plan->choice;
    os << dir_name(key.dir) << " " << describe(key.sh) << ": " << algo_name(key.dir, c.algo)
       << " math " << math_name(c.math) << " workspace " << plan->workspace;
    if (plan->measured) os << " B, " << c.time_ms << " ms measured";
    else os << " B, heuristic";
    if (!c.deterministic) os << ", NON-DETERMINISTIC (no deterministic algorithm worked)";
    if (plan->timed.size() > 1) {
      os << "; also timed:";
      for (size_t i = 1; i < plan->timed.size(); ++i)
        os << " " << algo_name(key.dir, plan->timed[i].algo) << " ("
           << math_name(plan->timed[i].math) << ") " << plan->timed[i].time_ms << " ms";
    }
    os << "\n";
  }
  return os.str();
}

}  // namespace unetcu::cudnn
