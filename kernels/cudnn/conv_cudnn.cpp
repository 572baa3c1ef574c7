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
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <tuple>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/env.h"
#include "kernels/cudnn/agreement.h"
#include "kernels/cudnn/graph_api.h"
#include "kernels/cudnn/knob_values.h"
#include "kernels/cudnn/library_error.h"

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
  throw CudnnError(library_error("cuDNN", int(status), cudnnGetErrorString(status), call, file,
                                 line, context, detail, hint(status)));
}

#define UNETCU_CUDNN_CHECK_FOR(expr, context)                                         \
  do {                                                                                \
    const cudnnStatus_t unetcu_status_ = (expr);                                      \
    if (unetcu_status_ != CUDNN_STATUS_SUCCESS)                                       \
      cudnn_fail(unetcu_status_, #expr, __FILE__, __LINE__, (context));               \
  } while (0)
#define UNETCU_CUDNN_CHECK(expr) UNETCU_CUDNN_CHECK_FOR(expr, std::string())

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
// few are timed again before one is taken: a single run of a kernel of a few microseconds is at
// the mercy of clocks and first-launch costs, and an event pair around one call also counts the
// host's time to issue it (more for the graph API, which first builds a variant pack), which a
// captured training step never pays. So the candidate's calls are captured as a CUDA graph,
// as the step runs them, and the graph is timed: the median of kRetimeRuns launches of
// kCallsPerGraph calls. A candidate that cannot be captured cannot serve a captured step and is
// dropped.
constexpr int kRetimeCandidates = 4;
constexpr int kRetimeRuns = 5;
constexpr int kCallsPerGraph = 4;

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

// ---- the graph API ----------------------------------------------------------------------
//
// cudnnFind*AlgorithmEx ranks the descriptor API's eight algorithm families. cuDNN's graph API
// (cudnnBackend*) reaches every engine cuDNN has for a convolution, ranked by its heuristics
// (mode A); PyTorch runs cuDNN that way, and on an H200 our descriptor-API forward lost to
// LibTorch's by 1.51x overall and 5.6x on layer1's 3x3 64->64 (bench/RESULTS.md). So every
// measured shape also builds graph-API plans for the heuristics' best engines and times them
// as the descriptor-API candidates are timed. The path is optional: a graph engine serves only
// when it is faster and its output agrees with the descriptor-API algorithm's on the real
// inputs (a layout or attribute mistake would show there); any failure on the way leaves the
// descriptor-API choice in place, and report() says what happened. UNETCU_CUDNN_GRAPH=0 turns
// the path off (to compare, or to rule it out).
//
// Engines are filtered as the descriptor-API candidates are: none that is non-deterministic,
// converts float32 inputs down or reduces in lower precision, no tensor cores without TF32,
// and none that compiles kernels at run time (seconds per shape at start-up).

// Engine configurations of the heuristics' ranking built and timed per shape and output
// scale: UNETCU_CUDNN_CANDIDATES, 1 to kMaxGraphCandidates, default kDefaultGraphCandidates.
// The ranking is a model's guess, and the network's deep layers are the shapes it guesses
// worst: at 4x4 and 8x8 outputs the chosen data-gradient kernels ran on 16 CTAs of a 132-SM
// card (Nsight Compute, bench/RESULTS.md), where a configuration that splits the reduction
// could fill it. Timing more of the list costs only start-up time (each a captured graph
// replayed five times), and a configuration serves only when it is faster and agrees.
constexpr int kDefaultGraphCandidates = 12;
constexpr int kMaxGraphCandidates = 64;

bool graph_api_enabled() {
  const char* v = std::getenv("UNETCU_CUDNN_GRAPH");
  return v == nullptr || std::string(v) != "0";
}

// The integer in environment variable `variable` (env_int_or_throw), refused as a CudnnError.
int env_int(const char* variable, int fallback, int lo, int hi, const std::string& expected) {
  return env_int_or_throw<CudnnError>(variable, fallback, lo, hi, expected);
}

int graph_candidate_limit() {
  return env_int("UNETCU_CUDNN_CANDIDATES", kDefaultGraphCandidates, 1, kMaxGraphCandidates,
                 "how many graph-API engine configurations to time per shape, from 1 to " +
                     std::to_string(kMaxGraphCandidates));
}

// Knob variants (UNETCU_CUDNN_KNOB_VARIANTS, 0 to kMaxKnobVariants, default 0): for the
// heuristics' best few configurations (kKnobBases), configurations that change one knob to
// another value its engine allows (knob_values: at most 8 a knob), built and timed beside
// them per shape and direction. Why: the heuristics' configurations of the deep layers' data
// gradients ran on 16 CTAs of a 132-SM card (bench/RESULTS.md); a tile size or a split of the
// reduction that the ranking does not offer is one knob away. A variant serves only as any
// candidate does: faster, and agreeing with the descriptor API's output. Off by default until
// a GPU run has measured it; costs start-up time only.
constexpr int kMaxKnobVariants = 256;
constexpr int kKnobBases = 2;

int knob_variant_limit() {
  return env_int("UNETCU_CUDNN_KNOB_VARIANTS", 0, 0, kMaxKnobVariants,
                 "how many knob variants of cuDNN's best engine configurations to time per "
                 "shape, from 0 to " + std::to_string(kMaxKnobVariants));
}

// The weight gradients on part of the card (UNETCU_CUDNN_WGRAD_SMS=N, 0 or unset: off): their
// graph-API configurations come from heuristics asked for N SMs (cuDNN's SM carveout, Hopper
// and later), so that the compute stream's kernels find SMs free beside them. Why: the weight
// gradients run on side streams, and the seventh H100 run's timeline had the compute stream
// waiting 0.27 ms a step with only those streams' kernels running, most of it under weight
// gradients that held every SM for their whole length (bench/RESULTS.md). A carved-out plan
// is slower alone, which is its price: it serves when it agrees with the descriptor API's
// output and takes at most (the card's SMs / N) times the full-card choice's time, i.e. does
// no worse per SM; the step's time says whether it pays.
constexpr int kMaxSmTarget = 1024;

int wgrad_sm_target_setting() {
  return env_int("UNETCU_CUDNN_WGRAD_SMS", 0, 0, kMaxSmTarget,
                 "how many SMs the weight gradients' cuDNN plans may use, from 0 (all, the "
                 "default) to " + std::to_string(kMaxSmTarget));
}

bool graph_aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kGraphAlignment == 0; }

// One finalized graph-API execution plan and what it stands on (the plan refers to its engine
// configuration, and that to the operation graph and its tensors).
struct GraphPlan {
  std::shared_ptr<std::vector<Desc>> graph;  // tensors, convolution, operation, graph
  std::unique_ptr<Desc> config;
  std::unique_ptr<Desc> exec;
  int64_t engine = -1;  // cuDNN's global engine index
  std::string knobs;    // its configuration's knob settings (knob_text)
  // A knob variant's engine and knob choices (add_knob_variants), kept while its configuration
  // refers to them; empty for a configuration of the heuristics.
  std::shared_ptr<Desc> engine_desc;
  std::vector<Desc> choice_descs;
  bool heuristics_b = false;  // offered by heuristics mode B, not mode A (graph_candidates)
  int sm_target = 0;          // asked of the heuristics for a carved-out plan; 0: all SMs
  int timed = 0;        // how many configurations were timed for the choice, this one included
  bool tensor_core = false;
  size_t workspace = 0;
  float time_ms = -1.0f;
  // Finalized variant packs by pointer set (tensor ids 1, 2, 3, then the workspace).
  using Pointers = std::array<void*, 4>;
  mutable std::map<Pointers, std::unique_ptr<Desc>> packs;
};

// " [TILE_SIZE=3 ...]" for a report, or nothing; a knob variant (add_knob_variants) and a
// configuration of heuristics mode B say so.
std::string knob_suffix(const GraphPlan& g) {
  std::string text = g.knobs;
  const std::string marks[] = {
      g.engine_desc ? "knob variant" : "", g.heuristics_b ? "heuristics B" : "",
      g.sm_target > 0 ? std::to_string(g.sm_target) + " SMs" : ""};
  for (const std::string& mark : marks)
    if (!mark.empty()) text += (text.empty() ? "" : ", ") + mark;
  return text.empty() ? text : " [" + text + "]";
}

// The descriptors and the chosen algorithm of one (shape, direction). Each direction has its
// own convolution descriptor because the math type found best may differ between them.
struct Plan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Choice choice;
  bool measured = false;
  std::vector<Choice> timed;  // the candidates timed again, fastest first (for report())
  // Graph-API plans that beat the choice above, for output scale 0 (overwrite) and 1
  // (accumulate: backward directions only); null where none did. graph_note says why not.
  std::unique_ptr<GraphPlan> graph[2];
  std::string graph_note;
  // The caller's rival kernel (ConvRunner::Rival): its time, whether it serves, and why not.
  float rival_ms = -1.0f;
  bool rival_serves = false;
  std::string rival_note;
  size_t workspace = 0;  // the most any of the plans above needs

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
  int device_sms = 0;  // the current device's SM count (the carveout's reference)
  cudnnHandle_t handle = nullptr;
  std::map<Key, std::unique_ptr<Plan>> plans;
  cudaEvent_t timing_start = nullptr, timing_stop = nullptr;  // made by the first time_runs

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

  // One run of the descriptor-API `algo`: out = conv + beta * out. `a`, `b` as plan().
  cudnnStatus_t run_once(const Plan& plan, Dir d, int algo, const float* a, const float* b,
                         void* out, void* ws, size_t ws_bytes, float beta = 0.0f) const {
    const float alpha = 1.0f;
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

  // The time of one call of `run` in ms, measured as described at kRetimeRuns; negative when a
  // call fails or cannot be captured (its error is cleared so that it does not surface at a
  // later launch).
  float time_runs(const std::function<cudnnStatus_t()>& run) {
    if (!timing_start) {
      UNETCU_CUDA_CHECK(cudaEventCreate(&timing_start));
      UNETCU_CUDA_CHECK(cudaEventCreate(&timing_stop));
    }
    return time_captured(stream, timing_start, timing_stop, kCallsPerGraph, kRetimeRuns,
                         [&] { return run() == CUDNN_STATUS_SUCCESS; });
  }

  // Times the first kRetimeCandidates of `list` again and puts those that ran first, fastest
  // first; a candidate that fails or needs more than the search workspace is dropped from the
  // timing (it keeps its place after the timed ones).
  void retime(Plan& plan, Dir d, const float* a, const float* b, void* out, const Scratch& ws,
              std::vector<Choice>* list, const std::string& what) {
    std::vector<Choice> timed, rest;
    for (size_t i = 0; i < list->size(); ++i) {
      Choice c = (*list)[i];
      float ms = -1.0f;
      if (int(i) < kRetimeCandidates) {
        UNETCU_CUDNN_CHECK_FOR(cudnnSetConvolutionMathType(plan.conv, c.math), what);
        if (workspace_for(plan, d, c.algo, what) <= ws.bytes)
          ms = time_runs([&] { return run_once(plan, d, c.algo, a, b, out, ws.ptr, ws.bytes); });
      }
      if (ms >= 0) {
        c.time_ms = ms;
        timed.push_back(c);
      } else {
        rest.push_back(c);
      }
    }
    std::stable_sort(timed.begin(), timed.end(),
                     [](const Choice& x, const Choice& y) { return x.time_ms < y.time_ms; });
    plan.timed = timed;
    timed.insert(timed.end(), rest.begin(), rest.end());
    *list = timed;
  }

  // ---- graph API (see the section comment above GraphPlan) ----

  // The device pointers of one call by tensor unique id: 1 x or dx, 2 w or dw, 3 y or dy.
  static void graph_pointers(Dir d, const float* a, const float* b, void* out,
                             GraphPlan::Pointers& ptrs) {
    void* pa = const_cast<float*>(a);
    void* pb = const_cast<float*>(b);
    if (d == Dir::forward) {  // a x, b w, out y
      ptrs[0] = pa, ptrs[1] = pb, ptrs[2] = out;
    } else if (d == Dir::backward_data) {  // a dy, b w, out dx
      ptrs[0] = out, ptrs[1] = pb, ptrs[2] = pa;
    } else {  // a dy, b x, out dw
      ptrs[0] = pb, ptrs[1] = out, ptrs[2] = pa;
    }
  }

  // Runs plan g on these pointers. Its variant pack (the pointers, finalized) is built once
  // per pointer set and kept: the memory plan fixes every buffer, so an eager step finds each
  // layer's pack already made.
  cudnnStatus_t execute_graph(const GraphPlan& g, Dir d, const float* a, const float* b, void* out,
                              void* ws) const {
    GraphPlan::Pointers ptrs;
    graph_pointers(d, a, b, out, ptrs);
    ptrs[3] = ws;
    std::unique_ptr<Desc>& pack = g.packs[ptrs];
    if (!pack) {
      auto made = std::make_unique<Desc>(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
      const cudnnStatus_t st = make_variant_pack(*made, {1, 2, 3}, {ptrs[0], ptrs[1], ptrs[2]},
                                                 ptrs[3]);
      if (st != CUDNN_STATUS_SUCCESS) {
        g.packs.erase(ptrs);
        return st;
      }
      pack = std::move(made);
    }
    return cudnnBackendExecute(handle, g.exec->get(), pack->get());
  }

  // The finalized operation graph of one direction with output scale `beta`, NHWC tensors as
  // the descriptor API's (filters KRSC, which is the same strides with k for n).
  std::shared_ptr<std::vector<Desc>> build_graph(const ConvShape& sh, Dir d, float beta,
                                                 Steps& st) const {
    GraphBuilder gb;
    cudnnBackendDescriptor_t x = gb.tensor(1, sh.n, sh.c, sh.h, sh.w);
    cudnnBackendDescriptor_t w = gb.tensor(2, sh.k, sh.c, sh.r, sh.s);
    cudnnBackendDescriptor_t y = gb.tensor(3, sh.n, sh.k, sh.p, sh.q);
    cudnnBackendDescriptor_t conv = gb.convolution(sh);
    cudnnBackendDescriptor_t op = gb.convolution_op(d, x, w, y, conv, beta);
    gb.graph(handle, {op});
    st = gb.steps();
    return gb.kept();
  }

  // Whether an engine with these notes may serve here (see the section comment above
  // GraphPlan).
  bool allowed(const EngineNotes& e) const {
    return !e.nondeterministic && !e.down_convert && !e.reduced_precision &&
           !e.runtime_compiled && (!e.tensor_core || options.tf32);
  }

  // g.config's execution plan, finalized, when it needs at most `ws_limit` bytes of workspace.
  bool finish_plan(GraphPlan& g, size_t ws_limit) const {
    g.exec = std::make_unique<Desc>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    int64_t ws = 0;
    if (finalize_plan(handle, g.config->get(), *g.exec, &ws) != CUDNN_STATUS_SUCCESS || ws < 0 ||
        size_t(ws) > ws_limit)
      return false;
    g.workspace = size_t(ws);
    g.knobs = knob_text(g.config->get());
    return true;
  }

  // The SMs the heuristics are asked to plan direction d for; 0: all (no carveout). Only the
  // weight gradients, which run beside the compute stream, and only below the card's count.
  int sm_target(Dir d) const {
    const int n = options.wgrad_sm_target;
    return d == Dir::backward_filter && n > 0 && n < device_sms ? n : 0;
  }

  // Finalized execution plans for the heuristics' best usable engines (at most
  // options.graph_candidates, each needing at most `ws_limit` bytes), best first; then, when
  // options.knob_variants asks, that many knob variants of the first kKnobBases of them.
  std::vector<GraphPlan> graph_candidates(const ConvShape& sh, Dir d, float beta, size_t ws_limit,
                                          std::string* why) const {
    std::vector<GraphPlan> out;
    Steps st;
    std::shared_ptr<std::vector<Desc>> graph = build_graph(sh, d, beta, st);
    if (!st.ok()) {
      *why = "graph API: " + st.failed;
      return out;
    }
    const cudnnBackendDescriptor_t op_graph = graph->back().get();
    // Mode A's ranking, then (options.heuristics_b) mode B's configurations not already taken.
    std::vector<cudnnBackendHeurMode_t> modes = {CUDNN_HEUR_MODE_A};
    if (options.heuristics_b) modes.push_back(CUDNN_HEUR_MODE_B);
    std::string failed;
    auto add_failure = [&](const std::string& why) {
      failed += (failed.empty() ? "" : "; ") + why;
    };
    int64_t offered = 0;
    int skipped = 0;
    for (const cudnnBackendHeurMode_t mode : modes) {
      Steps hs;
      int sms = sm_target(d);
      std::vector<Desc> configs = heuristic_configs(op_graph, mode, hs, sms);
      if (!hs.ok() && sms > 0) {
        // Heuristics that refuse the carveout (a card or library without it) still offer the
        // whole card's configurations, as without the setting.
        add_failure(hs.failed + " (for " + std::to_string(sms) + " SMs)");
        hs = Steps{};
        sms = 0;
        configs = heuristic_configs(op_graph, mode, hs, 0);
      }
      if (!hs.ok()) {
        add_failure(hs.failed);
        continue;
      }
      offered += int64_t(configs.size());
      int taken = 0;
      for (size_t i = 0; i < configs.size() && taken < options.graph_candidates; ++i) {
        Desc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
        EngineNotes notes;
        if (!engine_notes(configs[i].get(), engine, &notes) || !allowed(notes)) {
          ++skipped;
          continue;
        }
        GraphPlan g;
        g.engine = notes.index;
        g.tensor_core = notes.tensor_core;
        g.graph = graph;
        g.heuristics_b = mode == CUDNN_HEUR_MODE_B;
        g.sm_target = sms;
        g.config = std::make_unique<Desc>(std::move(configs[i]));
        if (!finish_plan(g, ws_limit)) {
          ++skipped;
          continue;
        }
        // Mode B's configurations that mode A offered too are left out.
        if (g.heuristics_b && listed(out, g)) continue;
        out.push_back(std::move(g));
        ++taken;
      }
    }
    if (out.empty()) {
      std::ostringstream os;
      if (!failed.empty() && offered == 0)
        os << "graph API: " << failed;
      else
        os << "graph API: none of " << offered << " engines usable (" << skipped
           << " filtered out or failed to build)";
      *why = os.str();
    }
    add_knob_variants(&out, ws_limit);
    return out;
  }

  // Whether `plans` (of one operation graph) holds g's engine with g's knob settings.
  static bool listed(const std::vector<GraphPlan>& plans, const GraphPlan& g) {
    return std::any_of(plans.begin(), plans.end(), [&](const GraphPlan& p) {
      return p.engine == g.engine && p.knobs == g.knobs;
    });
  }

  // A knob an engine offers: its type and the values to try (knob_values).
  struct KnobRange {
    cudnnBackendKnobType_t type;
    std::vector<int64_t> values;
  };
  static std::vector<KnobRange> knob_ranges(cudnnBackendDescriptor_t engine) {
    std::vector<KnobRange> out;
    for (const Desc& info : descriptors_of(engine, CUDNN_ATTR_ENGINE_KNOB_INFO,
                                           CUDNN_BACKEND_KNOB_INFO_DESCRIPTOR)) {
      KnobRange k;
      int64_t lo = 0, hi = 0, stride = 0, n = 0;
      if (cudnnBackendGetAttribute(info.get(), CUDNN_ATTR_KNOB_INFO_TYPE, CUDNN_TYPE_KNOB_TYPE, 1,
                                   &n, &k.type) != CUDNN_STATUS_SUCCESS ||
          cudnnBackendGetAttribute(info.get(), CUDNN_ATTR_KNOB_INFO_MINIMUM_VALUE,
                                   CUDNN_TYPE_INT64, 1, &n, &lo) != CUDNN_STATUS_SUCCESS ||
          cudnnBackendGetAttribute(info.get(), CUDNN_ATTR_KNOB_INFO_MAXIMUM_VALUE,
                                   CUDNN_TYPE_INT64, 1, &n, &hi) != CUDNN_STATUS_SUCCESS ||
          cudnnBackendGetAttribute(info.get(), CUDNN_ATTR_KNOB_INFO_STRIDE, CUDNN_TYPE_INT64, 1,
                                   &n, &stride) != CUDNN_STATUS_SUCCESS)
        continue;
      k.values = knob_values(lo, hi, stride);
      if (k.values.size() > 1) out.push_back(std::move(k));
    }
    return out;
  }

  // Appends to `plans` up to options.knob_variants configurations, each one of the first
  // kKnobBases plans with one knob set to another value its engine allows, that build, need at
  // most `ws_limit` bytes and are not already in the list.
  void add_knob_variants(std::vector<GraphPlan>* plans, size_t ws_limit) const {
    const size_t bases = std::min(plans->size(), size_t(kKnobBases));
    int added = 0;
    for (size_t b = 0; b < bases && added < options.knob_variants; ++b) {
      // By value: the pushes below may move the plans (their descriptors stay where they are).
      const std::shared_ptr<std::vector<Desc>> graph = (*plans)[b].graph;
      const bool heuristics_b = (*plans)[b].heuristics_b;
      const cudnnBackendDescriptor_t base_config = (*plans)[b].config->get();
      const int64_t index = (*plans)[b].engine;
      const bool tensor_core = (*plans)[b].tensor_core;
      const int32_t sms = (*plans)[b].sm_target;
      // A fresh engine of that index on the same operation graph (on the base's SMs when it
      // was carved out), finalized (how the API makes an engine to configure); the one read
      // from the base configuration when that fails.
      auto engine = std::make_shared<Desc>(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
      const cudnnBackendDescriptor_t op_graph = graph->back().get();
      if (engine->created() != CUDNN_STATUS_SUCCESS ||
          cudnnBackendSetAttribute(engine->get(), CUDNN_ATTR_ENGINE_OPERATION_GRAPH,
                                   CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                   &op_graph) != CUDNN_STATUS_SUCCESS ||
          cudnnBackendSetAttribute(engine->get(), CUDNN_ATTR_ENGINE_GLOBAL_INDEX,
                                   CUDNN_TYPE_INT64, 1, &index) != CUDNN_STATUS_SUCCESS ||
          (sms > 0 && cudnnBackendSetAttribute(engine->get(), CUDNN_ATTR_ENGINE_SM_COUNT_TARGET,
                                               CUDNN_TYPE_INT32, 1,
                                               &sms) != CUDNN_STATUS_SUCCESS) ||
          cudnnBackendFinalize(engine->get()) != CUDNN_STATUS_SUCCESS) {
        engine = std::make_shared<Desc>(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
        EngineNotes read;
        if (!engine_notes(base_config, *engine, &read)) continue;
      }
      const std::map<int, int64_t> current = knob_choices(base_config);
      for (const KnobRange& knob : knob_ranges(engine->get())) {
        for (int64_t value : knob.values) {
          if (added >= options.knob_variants) return;
          const auto now = current.find(int(knob.type));
          if (now != current.end() && now->second == value) continue;
          std::map<int, int64_t> settings = current;
          settings[int(knob.type)] = value;
          GraphPlan g;
          g.graph = graph;
          g.heuristics_b = heuristics_b;
          g.sm_target = sms;
          g.engine = index;
          g.tensor_core = tensor_core;
          g.engine_desc = engine;
          if (!make_config(g, settings) || !finish_plan(g, ws_limit) || listed(*plans, g))
            continue;
          plans->push_back(std::move(g));
          ++added;
        }
      }
    }
  }

  // g.config: g.engine_desc with these knob settings, finalized (the choices are kept in g).
  static bool make_config(GraphPlan& g, const std::map<int, int64_t>& settings) {
    std::vector<cudnnBackendDescriptor_t> raw;
    for (const auto& [type, value] : settings) {
      g.choice_descs.emplace_back(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
      Desc& c = g.choice_descs.back();
      const cudnnBackendKnobType_t t = cudnnBackendKnobType_t(type);
      if (c.created() != CUDNN_STATUS_SUCCESS ||
          cudnnBackendSetAttribute(c.get(), CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE,
                                   1, &t) != CUDNN_STATUS_SUCCESS ||
          cudnnBackendSetAttribute(c.get(), CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1,
                                   &value) != CUDNN_STATUS_SUCCESS ||
          cudnnBackendFinalize(c.get()) != CUDNN_STATUS_SUCCESS)
        return false;
      raw.push_back(c.get());
    }
    g.config = std::make_unique<Desc>(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    const cudnnBackendDescriptor_t engine = g.engine_desc->get();
    return g.config->created() == CUDNN_STATUS_SUCCESS &&
           cudnnBackendSetAttribute(g.config->get(), CUDNN_ATTR_ENGINECFG_ENGINE,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                    &engine) == CUDNN_STATUS_SUCCESS &&
           cudnnBackendSetAttribute(g.config->get(), CUDNN_ATTR_ENGINECFG_KNOB_CHOICES,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(raw.size()),
                                    raw.data()) == CUDNN_STATUS_SUCCESS &&
           cudnnBackendFinalize(g.config->get()) == CUDNN_STATUS_SUCCESS;
  }

  // The fastest graph-API plan for output scale `beta` when it beats the descriptor-API choice
  // (timed the same way) and agrees with its output on the real inputs; null otherwise, with
  // the reason appended to plan.graph_note. `out`, `ref` are scratch outputs of the right size.
  std::unique_ptr<GraphPlan> choose_graph(const ConvShape& sh, Dir d, float beta, Plan& plan,
                                          const float* a, const float* b, void* out, void* ref,
                                          size_t out_bytes, const Scratch& ws) {
    std::string why;
    std::vector<GraphPlan> cands = graph_candidates(sh, d, beta, ws.bytes, &why);
    std::unique_ptr<GraphPlan> best;
    for (GraphPlan& g : cands) {
      g.time_ms = time_runs([&] { return execute_graph(g, d, a, b, out, ws.ptr); });
      if (g.time_ms >= 0 && (!best || g.time_ms < best->time_ms))
        best = std::make_unique<GraphPlan>(std::move(g));
    }
    const char* scale = beta == 0.0f ? "overwrite" : "accumulate";
    auto note = [&](const std::string& text) {
      plan.graph_note += std::string(plan.graph_note.empty() ? "" : "; ") + scale + ": " + text;
    };
    if (!best) {
      note(why.empty() ? "graph API: no engine ran" : why);
      return nullptr;
    }
    best->timed = int(cands.size());
    // A carved-out plan (sm_target) may take as much longer as it has fewer SMs.
    const float limit = best->sm_target > 0 ? plan.choice.time_ms * float(device_sms) /
                                                  float(best->sm_target)
                                            : plan.choice.time_ms;
    if (best->time_ms >= limit) {
      std::ostringstream os;
      os << "graph engine " << best->engine << knob_suffix(*best) << " " << best->time_ms
         << " ms (best of " << cands.size() << "), not faster"
         << (best->sm_target > 0 ? " per SM" : "");
      note(os.str());
      return nullptr;
    }
    const Checked checked = check_candidate(
        beta, out, ref, out_bytes, stream,
        [&](float scale, void* dst) {
          return run_once(plan, d, plan.choice.algo, a, b, dst, ws.ptr, ws.bytes, scale) ==
                 CUDNN_STATUS_SUCCESS;
        },
        [&](void* dst) {
          return execute_graph(*best, d, a, b, dst, ws.ptr) == CUDNN_STATUS_SUCCESS;
        });
    if (!checked.ran) {
      note("graph engine could not be checked against the descriptor API");
      return nullptr;
    }
    const Agreement& agreed = checked.agreement;
    if (!agreed.agree) {
      std::ostringstream os;
      os << "graph engine " << best->engine << knob_suffix(*best)
         << " DISAGREES with the descriptor API (max |error| "
         << agreed.worst << ", rms " << agreed.rms << "): not used";
      note(os.str());
      return nullptr;
    }
    return best;
  }

  // The rival (ConvRunner::Rival) against the overwriting choice: timed the same way into the
  // search's output buffer; where faster, both run once more and must agree (check_candidate),
  // overwriting, and for a gradient accumulating too (the way the caller runs it then). Sets
  // plan.rival_*.
  void choose_rival(Plan& plan, Dir d, const ConvRunner::Rival& rival, const float* a,
                    const float* b, void* out, size_t out_bytes, const Scratch& ws) {
    auto note = [&](const std::string& text) { plan.rival_note = rival.name + ": " + text; };
    Scratch rival_ws, ref;
    if (!rival_ws.try_alloc(rival.workspace_bytes) || !ref.try_alloc(out_bytes)) {
      note("not tried (no memory for its workspace and the check)");
      return;
    }
    // A launch error inside a capture must not leave the stream capturing: it fails the run.
    auto run_rival = [&](void* dst, GradMode mode = GradMode::overwrite) {
      try {
        rival.run(static_cast<float*>(dst), rival_ws.ptr, stream, mode);
      } catch (const std::exception&) {
        return CUDNN_STATUS_EXECUTION_FAILED;
      }
      return cudaPeekAtLastError() == cudaSuccess ? CUDNN_STATUS_SUCCESS
                                                  : CUDNN_STATUS_EXECUTION_FAILED;
    };
    plan.rival_ms = time_runs([&] { return run_rival(out); });
    const GraphPlan* g = plan.graph[0].get();
    const float cudnn_ms = g ? g->time_ms : plan.choice.time_ms;
    std::ostringstream os;
    if (plan.rival_ms < 0) {
      note("failed to run or to be captured");
      return;
    }
    if (plan.rival_ms >= cudnn_ms) {
      os << plan.rival_ms << " ms, not faster";
      note(os.str());
      return;
    }
    // Overwriting against the serving plan; accumulating (gradients) against the descriptor
    // API, which takes either scale.
    for (const float beta : {0.0f, 1.0f}) {
      if (beta != 0.0f && d == Dir::forward) break;
      const GradMode mode = beta == 0.0f ? GradMode::overwrite : GradMode::accumulate;
      const Checked checked = check_candidate(
          beta, out, ref.ptr, out_bytes, stream,
          [&](float scale, void* dst) {
            return (g && scale == 0.0f
                        ? execute_graph(*g, d, a, b, dst, ws.ptr)
                        : run_once(plan, d, plan.choice.algo, a, b, dst, ws.ptr, ws.bytes,
                                   scale)) == CUDNN_STATUS_SUCCESS;
          },
          [&](void* dst) { return run_rival(dst, mode) == CUDNN_STATUS_SUCCESS; });
      const char* how = beta == 0.0f ? "" : " accumulating";
      if (!checked.ran) {
        os << plan.rival_ms << " ms, could not be checked against cuDNN" << how
           << ": not used";
        note(os.str());
        return;
      }
      const Agreement& agreed = checked.agreement;
      if (!agreed.agree) {
        os << plan.rival_ms << " ms, DISAGREES with cuDNN" << how << " (max |error| "
           << agreed.worst << ", rms " << agreed.rms << "): not used";
        note(os.str());
        return;
      }
    }
    os << plan.rival_ms << " ms, SERVES (cuDNN's choice " << cudnn_ms << " ms)";
    note(os.str());
    plan.rival_serves = true;
  }

  // Chooses the algorithm of one direction: measured search (cudnnFind, then the fastest few
  // timed again) first, heuristics as the fallback.
  // `a` and `b` are the direction's inputs in the kernel order (fwd: x, wt; bwd-data: dy, wt;
  // bwd-filter: dy, x).
  Plan& plan(const ConvShape& sh, Dir d, const float* a, const float* b,
             const ConvRunner::Rival* rival = nullptr) {
    auto found = plans.find(Key{sh, d});
    if (found != plans.end()) return *found->second;
    require_not_capturing(sh, d);
    // The timings below should see the GPU to themselves: work issued earlier, on this stream
    // or another (the engine runs weight gradients on a second stream), finishes first.
    UNETCU_CUDA_CHECK(cudaDeviceSynchronize());
    std::unique_ptr<Plan> plan = make_descriptors(sh);
    const std::string what = std::string(dir_name(d)) + " " + describe(sh);

    // Measured search; the output goes to a temporary buffer of the output's size.
    const int64_t out_count = d == Dir::forward ? sh.y_size()
                              : d == Dir::backward_data ? sh.x_size()
                                                        : sh.w_size();
    const size_t out_bytes = size_t(out_count) * sizeof(float);
    Scratch out, ws;
    std::vector<Choice> list;
    if (out.try_alloc(out_bytes)) {
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

    // Graph-API engines, measured against the choice above: only when it was measured (the
    // scratch buffers exist) and for aligned real inputs. Backward directions also get a plan
    // for accumulating into their output (graph plans fix the output scale).
    Scratch check_out;
    if (!plan->measured) {
      plan->graph_note = "graph API: not tried (no measured search)";
    } else if (!graph_api_enabled()) {
      plan->graph_note = "graph API: off (UNETCU_CUDNN_GRAPH=0)";
    } else if (!graph_aligned(a) || !graph_aligned(b) || !graph_aligned(out.ptr)) {
      plan->graph_note = "graph API: not tried (inputs not 16-byte aligned)";
    } else if (!check_out.try_alloc(out_bytes)) {
      plan->graph_note = "graph API: not tried (no memory for the output check)";
    } else {
      for (int accumulate = 0; accumulate < (d == Dir::forward ? 1 : 2); ++accumulate) {
        plan->graph[accumulate] = choose_graph(sh, d, float(accumulate), *plan, a, b, out.ptr,
                                               check_out.ptr, out_bytes, ws);
        if (plan->graph[accumulate])
          plan->workspace = std::max(plan->workspace, plan->graph[accumulate]->workspace);
      }
      // The checks ran the descriptor-API algorithm: its math type stays on the descriptor.
    }
    if (rival) {
      if (plan->measured) {
        choose_rival(*plan, d, *rival, a, b, out.ptr, out_bytes, ws);
      } else {
        plan->rival_note = rival->name + ": not tried (no measured search)";
      }
    }
    Plan& ref = *plan;
    plans[Key{sh, d}] = std::move(plan);
    return ref;
  }

  // One call: the graph-API plan for its output scale when there is one and the pointers are
  // aligned as it was built for, else the descriptor-API algorithm. Overwriting (beta 0) never
  // reads the output, so stale NaNs in it cannot leak in.
  void run(Dir d, const ConvShape& sh, const float* a, const float* b, float* out, GradMode mode,
           void* ws, size_t ws_bytes) {
    const Plan& p = chosen(sh, d, ws_bytes);
    const int accumulate = mode == GradMode::accumulate ? 1 : 0;
    const GraphPlan* g = p.graph[accumulate].get();
    if (g && graph_aligned(a) && graph_aligned(b) && graph_aligned(out) && graph_aligned(ws)) {
      UNETCU_CUDNN_CHECK_FOR(execute_graph(*g, d, a, b, out, ws), describe(sh));
      return;
    }
    UNETCU_CUDNN_CHECK_FOR(run_once(p, d, p.choice.algo, a, b, out, ws, ws_bytes,
                                    float(accumulate)),
                           describe(sh));
  }

  bool rival_serves(const ConvShape& sh, Dir d) const {
    auto found = plans.find(Key{sh, d});
    return found != plans.end() && found->second->rival_serves;
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
  if (impl_->options.graph_candidates == 0)
    impl_->options.graph_candidates = graph_candidate_limit();
  else if (impl_->options.graph_candidates < 0)
    throw CudnnError("ConvOptions::graph_candidates must not be negative (a bug in the caller)");
  if (impl_->options.knob_variants < 0) impl_->options.knob_variants = knob_variant_limit();
  if (impl_->options.heuristics_b < 0)
    impl_->options.heuristics_b =
        env_int("UNETCU_CUDNN_HEURISTICS_B", 0, 0, 1,
                "0 or 1 (1: heuristics mode B's configurations timed too)");
  if (impl_->options.wgrad_sm_target < 0)
    impl_->options.wgrad_sm_target = wgrad_sm_target_setting();
  int device = 0;
  UNETCU_CUDA_CHECK(cudaGetDevice(&device));
  UNETCU_CUDA_CHECK(
      cudaDeviceGetAttribute(&impl_->device_sms, cudaDevAttrMultiProcessorCount, device));
  UNETCU_CUDNN_CHECK(cudnnCreate(&impl_->handle));
  const cudnnStatus_t bound = cudnnSetStream(impl_->handle, stream);
  if (bound != CUDNN_STATUS_SUCCESS) {
    // The destructor does not run for a constructor that throws: the handle goes here.
    cudnnDestroy(impl_->handle);
    impl_->handle = nullptr;
    UNETCU_CUDNN_CHECK(bound);
  }
}

void ConvRunner::set_stream(cudaStream_t stream) {
  if (stream == impl_->stream) return;
  UNETCU_CUDNN_CHECK(cudnnSetStream(impl_->handle, stream));
  impl_->stream = stream;
}

ConvRunner::~ConvRunner() {
  impl_->plans.clear();
  if (impl_->timing_start) cudaEventDestroy(impl_->timing_start);
  if (impl_->timing_stop) cudaEventDestroy(impl_->timing_stop);
  if (impl_->handle) cudnnDestroy(impl_->handle);
}

size_t ConvRunner::prepare_forward(const ConvShape& sh, const float* x, const float* wt,
                                   const Rival* rival) {
  return impl_->plan(sh, Dir::forward, x, wt, rival).workspace;
}
size_t ConvRunner::prepare_backward_data(const ConvShape& sh, const float* dy, const float* wt,
                                         const Rival* rival) {
  return impl_->plan(sh, Dir::backward_data, dy, wt, rival).workspace;
}
size_t ConvRunner::prepare_backward_filter(const ConvShape& sh, const float* dy, const float* x,
                                           const Rival* rival) {
  return impl_->plan(sh, Dir::backward_filter, dy, x, rival).workspace;
}
bool ConvRunner::rival_serves_forward(const ConvShape& sh) const {
  return impl_->rival_serves(sh, Dir::forward);
}
bool ConvRunner::rival_serves_backward_data(const ConvShape& sh) const {
  return impl_->rival_serves(sh, Dir::backward_data);
}
bool ConvRunner::rival_serves_backward_filter(const ConvShape& sh) const {
  return impl_->rival_serves(sh, Dir::backward_filter);
}

void ConvRunner::forward(float* y, const float* x, const float* wt, const ConvShape& sh,
                         void* workspace, size_t workspace_bytes) {
  impl_->run(Dir::forward, sh, x, wt, y, GradMode::overwrite, workspace, workspace_bytes);
}

void ConvRunner::backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                               GradMode mode, void* workspace, size_t workspace_bytes) {
  impl_->run(Dir::backward_data, sh, dy, wt, dx, mode, workspace, workspace_bytes);
}

void ConvRunner::backward_filter(float* dwt, const float* dy, const float* x, const ConvShape& sh,
                                 GradMode mode, void* workspace, size_t workspace_bytes) {
  impl_->run(Dir::backward_filter, sh, dy, x, dwt, mode, workspace, workspace_bytes);
}

std::string ConvRunner::settings() const {
  const ConvOptions& o = impl_->options;
  std::ostringstream os;
  if (!graph_api_enabled()) os << "graph API off";
  else os << o.graph_candidates << " graph-API configurations a shape";
  if (o.knob_variants > 0) os << ", " << o.knob_variants << " knob variants";
  if (o.heuristics_b > 0) os << ", heuristics mode B too";
  if (o.wgrad_sm_target > 0 && o.wgrad_sm_target < impl_->device_sms)
    os << ", weight gradients on " << o.wgrad_sm_target << " of " << impl_->device_sms << " SMs";
  else if (o.wgrad_sm_target > 0)
    os << ", weight gradients on all " << impl_->device_sms << " SMs (" << o.wgrad_sm_target
       << " asked)";
  return os.str();
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
    for (int accumulate = 0; accumulate < 2; ++accumulate)
      if (const GraphPlan* g = plan->graph[accumulate].get())
        os << "; " << (accumulate ? "accumulating" : "overwriting") << " runs graph engine "
           << g->engine << knob_suffix(*g) << (g->tensor_core ? " (tensor cores)" : "") << " "
           << g->time_ms << " ms (best of " << g->timed << "), workspace " << g->workspace
           << " B";
    if (!plan->graph_note.empty()) os << "; " << plan->graph_note;
    if (!plan->rival_note.empty()) os << "; rival " << plan->rival_note;
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
