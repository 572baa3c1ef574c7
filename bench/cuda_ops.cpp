// bench/cuda_ops.cpp: every op family of the training step on the GPU at the UNet's real shapes
// (batch 16, 128x128 by default), ours (kernels/cuda, convolutions through kernels/cudnn)
// beside the LibTorch CUDA call that computes the same thing, and the whole training step, ours
// (ModelSession on the CUDA backend, CUDA graphs) beside the same network in LibTorch.
//
//   bench_cuda_ops [--batch N] [--size S] [--runs R] [--no-tf32] [--no-hold] [benchmark flags...]
//   bench_cuda_ops --profile-steps K [--batch N] [--size S] [--no-tf32]
//   bench_cuda_ops --trace-steps K --trace-out FILE [--batch N] [--size S] [--no-tf32]
//
// --profile-steps runs only our training step: three steps to choose algorithms and capture
// the graph, then K more between cudaProfilerStart and cudaProfilerStop, so that a profiler
// started with profiling off (ncu --profile-from-start off) sees exactly K replayed steps and
// nothing of the set-up. tools/device_check.sh does this and tools/ncu_step_summary.py turns
// the kernel list into a per-family table.
// --trace-steps runs the same three steps, then K replayed steps one at a time (the device
// synchronised between them) under CUPTI's activity trace (bench/kernel_trace.h), and writes
// every kernel, copy and memset with its start and end to FILE as CSV; tools/step_timeline.py
// says from it how the streams overlapped and where the compute stream waited.
//
// Timing: each benchmark is one Google Benchmark iteration whose time is the median of R runs
// (default 30), each timed with CUDA events on one stream after a write of twice the L2 cache
// size to a scratch buffer, so every run starts with a cold L2 (no run reads the previous
// run's output from the cache). The stream is held while the host issues each run
// (bench/stream_hold.h), so the time is the GPU's alone, not the host's where it issues an op
// more slowly than the flush runs; the host's issue times are printed where they exceed the GPU
// times. --no-hold times as before the hold (issue and flush overlapped, the rest in the
// interval). The training step is timed on the host around a synchronised step, median of R/3
// steps; it is far larger than L2.
//
// Checking: before a pair is timed, our GPU output is compared with kernels/cpu, the reference
// the test suite ties to LibTorch (so the same check works without LibTorch):
//  * copies and selections (relu, add+relu, max-pool, upsample, concat, normalisation,
//    confusion counts) must be identical, as tests/emu requires of the emulated kernels;
//  * BatchNorm (plain, and fused with ReLU or add + ReLU as the engine runs it) 1e-5, Dice 1e-6,
//    Adam 2 float ulp (tests/emu's derivations: double sums in a different order, then one
//    rounding);
//  * convolutions with TF32 (the default, as PyTorch's cuDNN default): each input is rounded to
//    11 significant bits (error 2^-11 relative, or 2^-10 where cuDNN truncates), so a sum of
//    random-sign products errs by ~2^-10 of rms(y) per element; 2^-7 = 8 such units covers the
//    largest of millions of elements. Without TF32, and for the one-output-channel head, whose
//    hand-written kernels (kernels/cuda/conv_narrow.cu, as the engine runs them) are always
//    fp32: fp32's 8 eps sqrt(L) as on the CPU;
//  * the step: the first-step loss against our CPU engine, 1e-4 relative in fp32 and 1e-2 with
//    TF32 (36 TF32 convolutions in the forward move the logits by ~1e-3 relative; a wrong layer
//    moves the loss by O(1)).
//
// Peers: LibTorch runs NCHW (its default) on the same stream, with cuDNN TF32 set as ours.
// Built without a CUDA LibTorch, only our side runs (bench/CMakeLists.txt says so).
#include <benchmark/benchmark.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "bench/stream_hold.h"
#if defined(UNETCU_WITH_CUPTI)
#include "bench/kernel_trace.h"
#endif
#include "engine/cpu_backend.h"
#include "engine/device.h"
#include "kernels/adam.h"
#include "kernels/batchnorm.h"
#include "kernels/concat.h"
#include "kernels/conv.h"
#include "kernels/cuda/check.h"
#include "kernels/cudnn/conv_cudnn.h"
#include "kernels/cudnn/gemm_cublas.h"
#include "kernels/elementwise.h"
#include "kernels/loss.h"
#include "kernels/normalize.h"
#include "kernels/path_timing.h"
#include "kernels/pool.h"
#include "kernels/upsample.h"
#include "model/checkpoint.h"
#include "model/session.h"
#include "model/unet.h"
#ifdef UNETCU_WITH_TORCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

#include "bench/libtorch_unet.h"
#include "bench/torch_util.h"
constexpr bool kWithTorch = true;
constexpr const char* kPeers = "LibTorch " TORCH_VERSION " (CUDA, NCHW)";
#else
constexpr bool kWithTorch = false;
constexpr const char* kPeers = "none (built without a CUDA LibTorch)";
#endif

using namespace unetcu;
using namespace unetcu::bench;

namespace {

constexpr double kEps = FLT_EPSILON;
constexpr float kMomentum = 0.1f, kBnEps = 1e-5f;

cudaStream_t g_stream = nullptr;
int g_runs = 30;
bool g_tf32 = true;
bool g_hold = true;  // --no-hold: the host's issue inside the timed interval, as before
std::string g_step_tuning;  // the training step's tuning report (ModelSession)
std::unique_ptr<cudnn::ConvRunner> g_conv;
std::unique_ptr<cudnn::GemmRunner> g_gemm;  // the GEMM convolutions' (UNETCU_GEMM_CONV)

// ---- device memory ------------------------------------------------------------------------

template <typename T>
class Dev {
 public:
  Dev() = default;
  explicit Dev(size_t n) : n_(n) {
    if (n) UNETCU_CUDA_CHECK_ALLOC(cudaMalloc(&p_, n * sizeof(T)), n * sizeof(T));
  }
  // cudaMemcpy from pageable memory may return before its DMA has landed, and g_stream does
  // not wait for the legacy stream: without the synchronisation, a kernel or copy on g_stream
  // could read the buffer's last bytes before they arrive (seen once as a failed copy check).
  explicit Dev(const std::vector<T>& host) : Dev(host.size()) {
    UNETCU_CUDA_CHECK(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
    UNETCU_CUDA_CHECK(cudaDeviceSynchronize());
  }
  Dev(Dev&& o) noexcept : p_(o.p_), n_(o.n_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  Dev& operator=(Dev&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~Dev() {
    if (p_) cudaFree(p_);
  }
  T* get() const { return p_; }
  std::vector<T> host() const {
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(g_stream));
    std::vector<T> v(n_);
    UNETCU_CUDA_CHECK(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

#ifdef UNETCU_WITH_TORCH_CUDA
torch::Tensor cuda_nchw(const std::vector<float>& v, int n, int h, int w, int c) {
  return to_nchw(v, n, h, w, c).to(torch::kCUDA);
}
torch::Tensor cuda_flat(const std::vector<float>& v) { return to_flat(v).to(torch::kCUDA); }
#endif

// ---- timing -------------------------------------------------------------------------------

// Median of g_runs event-timed runs on g_stream, each after flushing L2 by writing a buffer
// twice its size (the write evicts whatever the previous run left there). Unless --no-hold, the
// stream is held (bench/stream_hold.h) while the host issues the flush, the events and the run,
// so the interval is the GPU's alone: unheld, an op whose issue takes the host longer than the
// flush takes the GPU timed the host's issue instead of its kernels. The host's issue time of
// each run is kept too (median), for the table of where the two differ.
class GpuTimer {
 public:
  struct Timing {
    double ms = 0;        // GPU time of one run, median
    double issue_ms = 0;  // the host's time to issue one run, median
    bool expired = false;  // the hold gave up (the issue waited for the stream): timed unheld
  };

  GpuTimer() : hold_(kHoldLimit) {
    int device = 0, l2 = 0;
    UNETCU_CUDA_CHECK(cudaGetDevice(&device));
    UNETCU_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    flush_bytes_ = std::max<size_t>(2 * size_t(l2), size_t(64) << 20);
    flush_ = Dev<unsigned char>(flush_bytes_);
    UNETCU_CUDA_CHECK(cudaEventCreate(&start_));
    UNETCU_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~GpuTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  Timing time(const std::function<void()>& run) {
    run();  // warm-up: lazy initialisation, first-touch
    bool hold = g_hold;
    std::vector<double> ms, issue;
    for (int i = 0; i < g_runs; ++i) {
      if (hold) hold_.hold(g_stream);
      UNETCU_CUDA_CHECK(cudaMemsetAsync(flush_.get(), i & 0xff, flush_bytes_, g_stream));
      UNETCU_CUDA_CHECK(cudaEventRecord(start_, g_stream));
      const auto t0 = std::chrono::steady_clock::now();
      try {
        run();
      } catch (...) {
        if (hold) hold_.release();  // the stream runs on; the op is skipped with the error
        throw;
      }
      issue.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
              .count());
      UNETCU_CUDA_CHECK(cudaEventRecord(stop_, g_stream));
      if (hold) hold_.release();
      UNETCU_CUDA_CHECK(cudaEventSynchronize(stop_));
      if (hold && hold_.expired()) {
        // The issue waited for the stream (or took longer than the limit): this op is timed
        // unheld, from the start.
        hold = false;
        ms.clear();
        issue.clear();
        i = -1;
        continue;
      }
      float t = 0;
      UNETCU_CUDA_CHECK(cudaEventElapsedTime(&t, start_, stop_));
      ms.push_back(t);
    }
    return Timing{median(ms), median(issue), g_hold && !hold};
  }
  size_t flush_bytes() const { return flush_bytes_; }

 private:
  // Longer than any op's issue (LibTorch's Adam issues a thousand kernels or so), short enough
  // that an op whose issue synchronises costs one wait.
  static constexpr std::chrono::milliseconds kHoldLimit{1000};

  static double median(std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  }

  size_t flush_bytes_ = 0;
  Dev<unsigned char> flush_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  StreamHold hold_;
};
std::unique_ptr<GpuTimer> g_timer;

void time_on_gpu(benchmark::State& state, const std::function<void()>& run) {
  for (auto _ : state) {
    const GpuTimer::Timing t = g_timer->time(run);
    state.SetIterationTime(t.ms * 1e-3);
    state.counters[kIssueCounter] = t.issue_ms;
    state.counters[kUnheldCounter] = t.expired ? 1 : 0;
  }
}

// The whole step runs on streams of its own, and in training the host does not wait between
// steps: steady-state time per step = host time of kStepsPerBlock steps issued back to back,
// then one device synchronisation, divided by kStepsPerBlock (median over blocks).
constexpr int kStepsPerBlock = 10;
void time_steps(benchmark::State& state, const std::function<void()>& run) {
  for (auto _ : state) {
    run();
    UNETCU_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<double> s;
    for (int i = 0; i < std::max(3, g_runs / 3); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int k = 0; k < kStepsPerBlock; ++k) run();
      UNETCU_CUDA_CHECK(cudaDeviceSynchronize());
      s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                  kStepsPerBlock);
    }
    std::nth_element(s.begin(), s.begin() + s.size() / 2, s.end());
    state.SetIterationTime(s[s.size() / 2]);
  }
}

void register_gpu_pair(PairInfo info, Factory make) {
  register_pair(std::move(info), std::move(make), time_on_gpu, kWithTorch, true);
}

// ---- convolution --------------------------------------------------------------------------


struct ConvCase : OpCase {
  ConvShape sh;
  bool has_bias;
  ConvDir dir;
  bool narrow;  // one output channel: the hand-written kernels, as the engine runs it
  bool direct = false;  // a direct kernel, which won against cuDNN (as the engine runs it)
  cuda::DirectKernel kernel = cuda::DirectKernel::none;  // the direct kernel of this direction
  bool gemm = false;    // the GEMM and gather, which won against cuDNN (likewise)
  std::vector<float> x, wt, bias, dy;
  Dev<float> dx_in, dwt, dbias_in, ddy, out, dbias;
  Dev<unsigned char> ws, bias_ws;
  size_t ws_bytes = 0;
#ifdef UNETCU_WITH_TORCH_CUDA
  torch::Tensor tx, tw, tb, tdy;
  std::vector<int64_t> bias_sizes;
#endif

  ConvCase(const ConvShape& s, bool b, ConvDir d, uint64_t seed)
      : sh(s), has_bias(b), dir(d), narrow(cuda::conv2d_narrow_applies(s)) {
    x = random_floats(size_t(sh.x_size()), seed);
    wt = random_floats(size_t(sh.w_size()), seed + 1);
    bias = random_floats(size_t(sh.k), seed + 2);
    dy = random_floats(size_t(sh.y_size()), seed + 3);
    dx_in = Dev<float>(x);
    dwt = Dev<float>(wt);
    dbias_in = Dev<float>(bias);
    ddy = Dev<float>(dy);
    out = Dev<float>(size_t(dir == ConvDir::forward         ? sh.y_size()
                            : dir == ConvDir::backward_data ? sh.x_size()
                                                            : sh.w_size()));
    dbias = Dev<float>(size_t(sh.k));
    if (narrow) {
      if (dir == ConvDir::backward_filter)
        ws_bytes = cuda::conv2d_narrow_backward_filter_workspace_bytes(sh);
    } else {
      prepare();
    }
    ws = Dev<unsigned char>(ws_bytes);
    bias_ws = Dev<unsigned char>(cuda::conv2d_backward_bias_workspace_bytes(sh));
#ifdef UNETCU_WITH_TORCH_CUDA
    tx = cuda_nchw(x, sh.n, sh.h, sh.w, sh.c);
    tw = cuda_nchw(wt, sh.k, sh.r, sh.s, sh.c);
    tb = cuda_flat(bias);
    tdy = cuda_nchw(dy, sh.n, sh.p, sh.q, sh.k);
    bias_sizes = {sh.k};
#endif
  }
  // As CudaBackend: a direct kernel competes with cuDNN's choice where it applies, unless
  // UNETCU_DIRECT_CONV=0, else for the forward and backward-data the GEMM and gather, unless
  // UNETCU_GEMM_CONV=0; the timing is cuDNN's runner's (ConvRunner::Rival). The direct weight
  // gradient, which the backend runs only when UNETCU_DIRECT_CONV=1, competes only then (its
  // time alone is then in the rival notes). With TF32 the direct kernel of every direction is
  // the tensor-core one where it applies, the weight gradient's timed as well.
  void prepare() {
    const char* setting = std::getenv("UNETCU_DIRECT_CONV");
    const bool allowed = setting == nullptr || std::string(setting) != "0";
    const bool forced = setting != nullptr && std::string(setting) == "1";
    cudnn::ConvRunner::Rival rival;
    rival.run = [this](float* o, void* w, cudaStream_t, GradMode m) { direct_ours(o, w, m); };
    // Where no direct kernel applies to a forward or backward-data, the GEMM and gather.
    auto offer_gemm = [&](bool direct_applies) {
      if (direct_applies || !g_gemm || !cuda::conv2d_gemm_applies(sh)) return false;
      rival.name = "GEMM + gather";
      rival.workspace_bytes = conv2d_col_bytes(sh);
      rival.run = [this](float* o, void* w, cudaStream_t, GradMode m) { gemm_ours(o, w, m); };
      return true;
    };
    bool applies = false, gemm_applies = false;
    switch (dir) {
      case ConvDir::forward:
        kernel = cuda::direct_forward_kernel(sh, dx_in.get(), out.get(), g_tf32);
        rival.name = cuda::direct_kernel_name(kernel);
        applies = allowed && kernel != cuda::DirectKernel::none;
        gemm_applies = offer_gemm(applies);
        ws_bytes = g_conv->prepare_forward(sh, dx_in.get(), dwt.get(),
                                           applies || gemm_applies ? &rival : nullptr);
        direct = applies && g_conv->rival_serves_forward(sh);
        gemm = gemm_applies && g_conv->rival_serves_forward(sh);
        break;
      case ConvDir::backward_data:
        kernel = cuda::direct_backward_data_kernel(sh, ddy.get(), out.get(), g_tf32);
        rival.name = cuda::direct_kernel_name(kernel);
        applies = allowed && kernel != cuda::DirectKernel::none;
        gemm_applies = offer_gemm(applies);
        ws_bytes = g_conv->prepare_backward_data(sh, ddy.get(), dwt.get(),
                                                 applies || gemm_applies ? &rival : nullptr);
        direct = applies && g_conv->rival_serves_backward_data(sh);
        gemm = gemm_applies && g_conv->rival_serves_backward_data(sh);
        break;
      case ConvDir::backward_filter:
        kernel = cuda::direct_backward_filter_kernel(sh, ddy.get(), dx_in.get(), g_tf32);
        rival.name = cuda::direct_kernel_name(kernel);
        applies = (allowed && kernel == cuda::DirectKernel::tensor_cores) ||
                  (forced && kernel == cuda::DirectKernel::fp32);
        rival.workspace_bytes = cuda::direct_backward_filter_workspace_bytes(kernel, sh);
        ws_bytes = g_conv->prepare_backward_filter(sh, ddy.get(), dx_in.get(),
                                                   applies ? &rival : nullptr);
        direct = applies && g_conv->rival_serves_backward_filter(sh);
        if (direct) ws_bytes = rival.workspace_bytes;
        break;
    }
    if (gemm) ws_bytes = rival.workspace_bytes;
  }
  // The GEMM and gather of this direction (forward or backward-data) into `o` (overwriting),
  // the column matrix in `workspace`, on g_stream, the runner's.
  void gemm_ours(float* o, void* workspace, GradMode mode = GradMode::overwrite) {
    float* col = static_cast<float*>(workspace);
    if (dir == ConvDir::forward) {
      cuda::conv2d_im2col(col, dx_in.get(), sh, g_stream);
      g_gemm->run(conv2d_forward_gemm_dims(sh), dwt.get(), col, o, g_stream);
    } else {
      g_gemm->run(conv2d_backward_data_gemm_dims(sh), dwt.get(), ddy.get(), col, g_stream);
      cuda::conv2d_col2im(o, col, sh, mode, g_stream);
    }
  }
  // The direct kernel of this direction into `o` (overwriting, or for a gradient as `mode`
  // says), on g_stream, the runner's.
  void direct_ours(float* o, void* workspace, GradMode mode = GradMode::overwrite) {
    switch (dir) {
      case ConvDir::forward:
        cuda::direct_forward(kernel, o, dx_in.get(), dwt.get(), sh, g_stream);
        break;
      case ConvDir::backward_data:
        cuda::direct_backward_data(kernel, o, ddy.get(), dwt.get(), sh, mode, g_stream);
        break;
      case ConvDir::backward_filter:
        cuda::direct_backward_filter(kernel, o, ddy.get(), dx_in.get(), sh, mode, workspace,
                                     g_stream);
        break;
    }
  }
  void ours() override {
    if (narrow) {
      narrow_ours();
      return;
    }
    switch (dir) {
      case ConvDir::forward:
        if (direct) {
          direct_ours(out.get(), nullptr);
        } else if (gemm) {
          gemm_ours(out.get(), ws.get());
        } else {
          g_conv->forward(out.get(), dx_in.get(), dwt.get(), sh, ws.get(), ws_bytes);
        }
        if (has_bias) cuda::conv2d_add_bias(out.get(), dbias_in.get(), sh, g_stream);
        break;
      case ConvDir::backward_data:
        if (direct) {
          direct_ours(out.get(), nullptr);
        } else if (gemm) {
          gemm_ours(out.get(), ws.get());
        } else {
          g_conv->backward_data(out.get(), ddy.get(), dwt.get(), sh, GradMode::overwrite,
                                ws.get(), ws_bytes);
        }
        break;
      case ConvDir::backward_filter:
        if (direct) {
          direct_ours(out.get(), ws.get());
        } else {
          g_conv->backward_filter(out.get(), ddy.get(), dx_in.get(), sh, GradMode::overwrite,
                                  ws.get(), ws_bytes);
        }
        if (has_bias)
          cuda::conv2d_backward_bias(dbias.get(), ddy.get(), sh, GradMode::overwrite, bias_ws.get(),
                                     g_stream);
        break;
    }
  }
  // The engine's path for one-output-channel shapes (CudaBackend): kernels/cuda, no cuDNN.
  void narrow_ours() {
    switch (dir) {
      case ConvDir::forward:
        cuda::conv2d_narrow_forward(out.get(), dx_in.get(), dwt.get(),
                                    has_bias ? dbias_in.get() : nullptr, sh, g_stream);
        break;
      case ConvDir::backward_data:
        cuda::conv2d_narrow_backward_data(out.get(), ddy.get(), dwt.get(), sh,
                                          GradMode::overwrite, g_stream);
        break;
      case ConvDir::backward_filter:
        cuda::conv2d_narrow_backward_filter(out.get(), ddy.get(), dx_in.get(), sh,
                                            GradMode::overwrite, ws.get(), g_stream);
        if (has_bias)
          cuda::conv2d_backward_bias(dbias.get(), ddy.get(), sh, GradMode::overwrite, bias_ws.get(),
                                     g_stream);
        break;
    }
  }
  void torch() override {
#ifdef UNETCU_WITH_TORCH_CUDA
    const std::vector<int64_t> stride{sh.stride, sh.stride}, pad{sh.pad, sh.pad};
    if (dir == ConvDir::forward) {
      at::conv2d(tx, tw, has_bias ? tb : torch::Tensor(), stride, pad);
      return;
    }
    const bool data = dir == ConvDir::backward_data;
    at::OptionalIntArrayRef bias_opt;
    if (has_bias) bias_opt = bias_sizes;
    at::convolution_backward(tdy, tx, tw, bias_opt, stride, pad, {1, 1}, false, {0, 0}, 1,
                             {data, !data, !data && has_bias});
#endif
  }
  Check check() override {
    ours();
    const auto got = out.host();
    std::vector<float> want(got.size());
    double L = 0;
    switch (dir) {
      case ConvDir::forward:
        cpu::conv2d_forward(want.data(), x.data(), wt.data(), has_bias ? bias.data() : nullptr, sh);
        L = double(sh.r) * sh.s * sh.c;
        break;
      case ConvDir::backward_data:
        cpu::conv2d_backward_data(want.data(), dy.data(), wt.data(), sh, GradMode::overwrite);
        L = double(sh.k) * sh.r * sh.s;
        break;
      case ConvDir::backward_filter:
        cpu::conv2d_backward_filter(want.data(), dy.data(), x.data(), sh, GradMode::overwrite);
        L = double(sh.n) * sh.p * sh.q;
        break;
    }
    const double tol = g_tf32 && !narrow ? 1.0 / 128 : 8 * kEps * std::sqrt(L);
    Check c = compare(got.data(), want.data(), want.size(), tol, "output");
    if (dir == ConvDir::backward_filter && has_bias) {
      std::vector<float> want_bias(size_t(sh.k));
      cpu::conv2d_backward_bias(want_bias.data(), dy.data(), sh, GradMode::overwrite);
      const auto got_bias = dbias.host();
      c = combine({c, compare(got_bias.data(), want_bias.data(), want_bias.size(),
                              8 * kEps * std::sqrt(double(sh.n) * sh.p * sh.q), "bias gradient")});
    }
    return c;
  }
};

void register_convs(const Graph& g) {
  for_each_conv_pair(g, [](const PairInfo& p, ConvShape sh, bool bias, ConvDir dir, uint64_t s) {
    register_gpu_pair(p, [sh, bias, dir, s] { return std::make_unique<ConvCase>(sh, bias, dir, s); });
  });
}

// ---- BatchNorm ----------------------------------------------------------------------------


// What every BatchNorm pair starts from: seeded inputs on the host, on the device and (with
// LibTorch) as NCHW tensors, output buffers, and the reference forward on x: its output y_ref
// and the saved statistics a backward reads.
struct BnInputs {
  BatchNormShape sh;
  std::vector<float> x, gamma, beta, rm, rv, dy, y_ref, mean, invstd;
  Dev<float> dx_in, dgamma_in, dbeta_in, drm, drv, ddy, dmean, dinvstd, dx, dg, db;
  Dev<unsigned char> ws;
#ifdef UNETCU_WITH_TORCH_CUDA
  torch::Tensor tx, tg, tb, trm, trv, tdy, tmean, tinvstd;
#endif

  BnInputs(const ActInfo& a, uint64_t seed) {
    sh.rows = int64_t(a.n) * a.h * a.w;
    sh.c = a.c;
    const size_t count = size_t(sh.rows) * size_t(sh.c), c = size_t(sh.c);
    x = random_floats(count, seed);
    gamma = random_floats(c, seed + 1, 0.5, 1.5);
    beta = random_floats(c, seed + 2);
    rm = random_floats(c, seed + 3);
    rv = random_floats(c, seed + 4, 0.5, 2.0);
    dy = random_floats(count, seed + 5);
    std::vector<float> rm_ref = rm, rv_ref = rv;
    y_ref.resize(count);
    mean.resize(c);
    invstd.resize(c);
    cpu::batchnorm_train_forward(y_ref.data(), mean.data(), invstd.data(), rm_ref.data(),
                                 rv_ref.data(), x.data(), gamma.data(), beta.data(), sh, kMomentum,
                                 kBnEps);
    dx_in = Dev<float>(x);
    dgamma_in = Dev<float>(gamma);
    dbeta_in = Dev<float>(beta);
    drm = Dev<float>(rm);
    drv = Dev<float>(rv);
    ddy = Dev<float>(dy);
    dmean = Dev<float>(mean);
    dinvstd = Dev<float>(invstd);
    dx = Dev<float>(count);
    dg = Dev<float>(c);
    db = Dev<float>(c);
    ws = Dev<unsigned char>(cuda::batchnorm_workspace_bytes(sh));
#ifdef UNETCU_WITH_TORCH_CUDA
    tx = cuda_nchw(x, a.n, a.h, a.w, a.c);
    tdy = cuda_nchw(dy, a.n, a.h, a.w, a.c);
    tg = cuda_flat(gamma);
    tb = cuda_flat(beta);
    trm = cuda_flat(rm);
    trv = cuda_flat(rv);
    auto saved =
        at::native_batch_norm(tx, tg, tb, trm.clone(), trv.clone(), true, kMomentum, kBnEps);
    tmean = std::get<1>(saved);
    tinvstd = std::get<2>(saved);
#endif
  }
};

struct BnCase : OpCase, BnInputs {
  BnOp op;
  Dev<float> y;

  BnCase(const ActInfo& a, BnOp o, uint64_t seed)
      : BnInputs(a, seed), op(o), y(size_t(sh.rows) * size_t(sh.c)) {}
  void ours() override {
    switch (op) {
      case BnOp::train_forward:
        cuda::batchnorm_train_forward(y.get(), dmean.get(), dinvstd.get(), drm.get(), drv.get(),
                                      dx_in.get(), dgamma_in.get(), dbeta_in.get(), sh, kMomentum,
                                      kBnEps, ws.get(), g_stream);
        break;
      case BnOp::backward:
        cuda::batchnorm_backward(dx.get(), dg.get(), db.get(), ddy.get(), dx_in.get(),
                                 dgamma_in.get(), dmean.get(), dinvstd.get(), sh,
                                 GradMode::overwrite, GradMode::overwrite, ws.get(), g_stream);
        break;
      case BnOp::eval_forward:
        cuda::batchnorm_eval_forward(y.get(), dx_in.get(), dgamma_in.get(), dbeta_in.get(),
                                     drm.get(), drv.get(), sh, kBnEps, g_stream);
        break;
    }
  }
  void torch() override {
#ifdef UNETCU_WITH_TORCH_CUDA
    switch (op) {
      case BnOp::train_forward:
        at::native_batch_norm(tx, tg, tb, trm, trv, true, kMomentum, kBnEps);
        break;
      case BnOp::backward:
        at::native_batch_norm_backward(tdy, tx, tg, trm, trv, tmean, tinvstd, true, kBnEps,
                                       {true, true, true});
        break;
      case BnOp::eval_forward:
        at::batch_norm(tx, tg, tb, trm, trv, false, kMomentum, kBnEps, true);
        break;
    }
#endif
  }
  Check check() override {
    const double tol = 1e-5;
    const size_t count = x.size(), c = size_t(sh.c);
    if (op == BnOp::backward) {
      ours();
      std::vector<float> want_dx(count), want_dg(c), want_db(c);
      cpu::batchnorm_backward(want_dx.data(), want_dg.data(), want_db.data(), dy.data(), x.data(),
                              gamma.data(), mean.data(), invstd.data(), sh, GradMode::overwrite,
                              GradMode::overwrite);
      const auto got_dx = dx.host(), got_dg = dg.host(), got_db = db.host();
      return combine({compare(got_dx.data(), want_dx.data(), count, tol, "dx"),
                      compare(got_dg.data(), want_dg.data(), c, tol, "dgamma"),
                      compare(got_db.data(), want_db.data(), c, tol, "dbeta")});
    }
    if (op == BnOp::eval_forward) {
      ours();
      std::vector<float> want(count);
      cpu::batchnorm_eval_forward(want.data(), x.data(), gamma.data(), beta.data(), rm.data(),
                                  rv.data(), sh, kBnEps);
      const auto got = y.host();
      return compare(got.data(), want.data(), count, tol, "y");
    }
    // The statistics buffers hold the reference's values (a backward's inputs): NaN them first,
    // so that the forward has to write them.
    UNETCU_CUDA_CHECK(cudaMemsetAsync(dmean.get(), 0xff, c * sizeof(float), g_stream));
    UNETCU_CUDA_CHECK(cudaMemsetAsync(dinvstd.get(), 0xff, c * sizeof(float), g_stream));
    ours();
    const auto got = y.host(), got_mean = dmean.host(), got_invstd = dinvstd.host();
    return combine({compare(got.data(), y_ref.data(), count, tol, "y"),
                    compare(got_mean.data(), mean.data(), c, tol, "saved mean"),
                    compare(got_invstd.data(), invstd.data(), c, tol, "saved invstd")});
  }
};

// The fused forms the engine runs on a GPU: relu(bn(x)) after a conv, relu(bn(x) + residual) at
// the end of a BasicBlock, forward and backward; against the composition of the reference ops
// (as tests/emu does), and beside LibTorch's unfused sequence (batch_norm, then relu_ or add_ +
// relu_; backward threshold_backward, then native_batch_norm_backward).
enum class FusedOp { relu_forward, relu_backward, add_relu_forward, add_relu_backward };

struct FusedBnCase : OpCase, BnInputs {
  FusedOp op;
  bool residual_on;
  std::vector<float> residual, y;  // y: the fused forward's output, whose mask a backward reads
  Dev<float> dres_in, dy_fwd, dout, dres;
#ifdef UNETCU_WITH_TORCH_CUDA
  torch::Tensor tres, ty;
#endif

  FusedBnCase(const ActInfo& a, FusedOp o, uint64_t seed)
      : BnInputs(a, seed),
        op(o),
        residual_on(o == FusedOp::add_relu_forward || o == FusedOp::add_relu_backward) {
    const size_t count = x.size();
    residual = random_floats(count, seed + 6);
    y = forward_reference();
    dres_in = Dev<float>(residual);
    dy_fwd = Dev<float>(y);
    dout = Dev<float>(count);
    dres = Dev<float>(count);
#ifdef UNETCU_WITH_TORCH_CUDA
    tres = cuda_nchw(residual, a.n, a.h, a.w, a.c);
    ty = cuda_nchw(y, a.n, a.h, a.w, a.c);
#endif
    if (op == FusedOp::relu_backward) take_our_forward();
  }
  // The BatchNorm + ReLU backward may form its mask from x, repeating our forward's
  // normalisation (kernels/batchnorm.h), so, as in a training step, its y and statistics are
  // what our forward made of these inputs; the reference uses the same ones. (The running
  // statistics it updates are not read by the backward.)
  void take_our_forward() {
    cuda::batchnorm_relu_train_forward(dy_fwd.get(), dmean.get(), dinvstd.get(), drm.get(),
                                       drv.get(), dx_in.get(), dgamma_in.get(), dbeta_in.get(), sh,
                                       kMomentum, kBnEps, ws.get(), g_stream);
    y = dy_fwd.host();
    mean = dmean.host();
    invstd = dinvstd.host();
  }
  // The reference composition: relu(bn(x) [+ residual]).
  std::vector<float> forward_reference() const {
    std::vector<float> out = y_ref;
    if (residual_on)
      cpu::add_relu_forward(out.data(), out.data(), residual.data(), int64_t(out.size()));
    else
      cpu::relu_forward(out.data(), out.data(), int64_t(out.size()));
    return out;
  }
  void ours() override {
    switch (op) {
      case FusedOp::relu_forward:
        cuda::batchnorm_relu_train_forward(dout.get(), dmean.get(), dinvstd.get(), drm.get(),
                                           drv.get(), dx_in.get(), dgamma_in.get(), dbeta_in.get(),
                                           sh, kMomentum, kBnEps, ws.get(), g_stream);
        break;
      case FusedOp::add_relu_forward:
        cuda::batchnorm_add_relu_train_forward(dout.get(), dmean.get(), dinvstd.get(), drm.get(),
                                               drv.get(), dx_in.get(), dres_in.get(),
                                               dgamma_in.get(), dbeta_in.get(), sh, kMomentum,
                                               kBnEps, ws.get(), g_stream);
        break;
      case FusedOp::relu_backward:
        cuda::batchnorm_relu_backward(dx.get(), dg.get(), db.get(), ddy.get(), dy_fwd.get(),
                                      dx_in.get(), dgamma_in.get(), dbeta_in.get(), dmean.get(),
                                      dinvstd.get(), sh, GradMode::overwrite, GradMode::overwrite,
                                      ws.get(), g_stream);
        break;
      case FusedOp::add_relu_backward:
        cuda::batchnorm_add_relu_backward(
            dx.get(), dres.get(), dg.get(), db.get(), ddy.get(), dy_fwd.get(), dx_in.get(),
            dgamma_in.get(), dmean.get(), dinvstd.get(), sh, GradMode::overwrite,
            GradMode::overwrite, GradMode::overwrite, ws.get(), g_stream);
        break;
    }
  }
  void torch() override {
#ifdef UNETCU_WITH_TORCH_CUDA
    switch (op) {
      case FusedOp::relu_forward:
        std::get<0>(at::native_batch_norm(tx, tg, tb, trm, trv, true, kMomentum, kBnEps)).relu_();
        break;
      case FusedOp::add_relu_forward:
        std::get<0>(at::native_batch_norm(tx, tg, tb, trm, trv, true, kMomentum, kBnEps))
            .add_(tres)
            .relu_();
        break;
      case FusedOp::relu_backward:
      case FusedOp::add_relu_backward:  // the residual's gradient is the masked dy itself
        at::native_batch_norm_backward(at::threshold_backward(tdy, ty, 0), tx, tg, trm, trv, tmean,
                                       tinvstd, true, kBnEps, {true, true, true});
        break;
    }
#endif
  }
  Check check() override {
    const double tol = 1e-5;  // tests/emu/test_batchnorm.cpp's, fused against composed
    const size_t count = x.size(), c = size_t(sh.c);
    ours();
    if (op == FusedOp::relu_forward || op == FusedOp::add_relu_forward) {
      const auto got = dout.host();
      return compare(got.data(), y.data(), count, tol, "y");
    }
    std::vector<float> masked(count), want_dx(count), want_dg(c), want_db(c);
    cpu::relu_backward(masked.data(), dy.data(), y.data(), int64_t(count), GradMode::overwrite);
    cpu::batchnorm_backward(want_dx.data(), want_dg.data(), want_db.data(), masked.data(), x.data(),
                            gamma.data(), mean.data(), invstd.data(), sh, GradMode::overwrite,
                            GradMode::overwrite);
    const auto got_dx = dx.host(), got_dg = dg.host(), got_db = db.host();
    Check all = combine({compare(got_dx.data(), want_dx.data(), count, tol, "dx"),
                         compare(got_dg.data(), want_dg.data(), c, tol, "dgamma"),
                         compare(got_db.data(), want_db.data(), c, tol, "dbeta")});
    if (op == FusedOp::add_relu_backward) {
      const auto got_res = dres.host();
      all = combine({all, compare(got_res.data(), masked.data(), count, 0.0, "dresidual")});
    }
    return all;
  }
};

// A case with one of its opt-in paths on (the loss reductions in one launch, the BatchNorm
// passes last rows first), for the same pair as its default form: the probes that decide
// whether they become the default. Path timing (kernels/path_timing.h) is off while a probe
// runs, or it would time the probe's path against the others and run the fastest.
struct OptIn {
  const char* suffix;  // of the probe's family: "bn.fwd" -> "bn.fwd.last_first"
  void (*set)(bool);
  bool (*get)();
};
// The BatchNorms' second pass from the last rows to the first (kernels/batchnorm.h).
constexpr OptIn kBnPassLastFirst{".last_first", cuda::set_batchnorm_pass_last_first,
                                 cuda::batchnorm_pass_last_first};

template <class Case>
struct OptInCase : Case {
  OptIn opt;
  template <class... Args>
  explicit OptInCase(OptIn o, Args&&... args) : Case(std::forward<Args>(args)...), opt(o) {}
  void ours() override {
    const bool before = opt.get(), timing = cuda::path_timing();
    opt.set(true);
    cuda::set_path_timing(false);
    try {
      Case::ours();
    } catch (...) {
      opt.set(before);
      cuda::set_path_timing(timing);
      throw;
    }
    opt.set(before);
    cuda::set_path_timing(timing);
  }
};

PairInfo probe_of(const PairInfo& p, const OptIn& opt) {
  PairInfo probe = p;
  const size_t slash = p.key.find('/');
  probe.key = p.key.substr(0, slash) + opt.suffix + p.key.substr(slash);
  probe.in_totals = false;
  probe.probe = true;
  return probe;
}

template <class Case, class Op>
void register_probe(const PairInfo& p, const OptIn& opt, ActInfo a, Op op, uint64_t s) {
  register_gpu_pair(probe_of(p, opt), [opt, a, op, s] {
    return std::make_unique<OptInCase<Case>>(opt, a, op, s);
  });
}

// Whether a BatchNorm of `a`'s shape takes three kernels, the path the passes-last-first
// setting changes.
bool batchnorm_takes_three_kernels(const ActInfo& a) {
  return cuda::batchnorm_kernel_count(BatchNormShape{int64_t(a.n) * a.h * a.w, a.c}) == 3;
}

void register_batchnorms(const Graph& g) {
  uint64_t seed = for_each_batchnorm_pair(g, [](const PairInfo& p, ActInfo a, BnOp op, uint64_t s) {
    register_gpu_pair(p, [a, op, s] { return std::make_unique<BnCase>(a, op, s); });
    if ((op == BnOp::train_forward || op == BnOp::backward) && batchnorm_takes_three_kernels(a))
      register_probe<BnCase>(p, kBnPassLastFirst, a, op, s);
  });
  // The fused forms go on from the plain ones' seeds, so the two suites' BatchNorm inputs match.
  // The fused forms at the shapes of the ReLUs and add+ReLUs they replace. Bytes a value: each
  // tensor an op must touch, once (the BatchNorm + ReLU backward reads y only when its mask
  // is not formed from x).
  const struct {
    FusedOp op;
    OpKind kind;
    const char* name;
    double bytes_per_value;
  } fused[] = {{FusedOp::relu_forward, OpKind::relu, "bn_relu.train_fwd", 8},
               {FusedOp::relu_backward, OpKind::relu, "bn_relu.bwd",
                cuda::batchnorm_relu_mask_from_input() ? 12.0 : 16.0},
               {FusedOp::add_relu_forward, OpKind::add_relu, "bn_add_relu.train_fwd", 12},
               {FusedOp::add_relu_backward, OpKind::add_relu, "bn_add_relu.bwd", 20}};
  for (const auto& o : fused) {
    for (const LayerShape& ls : distinct_shapes(g, o.kind)) {
      const ActInfo a = g.acts()[size_t(ls.node.out)];
      // One value per channel (a small --batch/--size): PyTorch refuses to train BatchNorm there.
      if (int64_t(a.n) * a.h * a.w < 2) continue;
      PairInfo p;
      p.key = std::string(o.name) + "/" + (ls.node.name.empty() ? a.name : ls.node.name);
      p.shape = describe(a);
      p.count = ls.count;
      p.work = o.bytes_per_value * double(a.numel());
      const FusedOp op = o.op;
      const uint64_t s = seed += 10;
      register_gpu_pair(p, [a, op, s] { return std::make_unique<FusedBnCase>(a, op, s); });
      if (batchnorm_takes_three_kernels(a))
        register_probe<FusedBnCase>(p, kBnPassLastFirst, a, op, s);
    }
  }
}

// ---- elementwise, spatial -----------------------------------------------------------------


struct EltCase : OpCase {
  EltOp op;
  int64_t count;
  std::vector<float> a, b;
  Dev<float> da, db, out;
#ifdef UNETCU_WITH_TORCH_CUDA
  torch::Tensor ta, tb;
#endif

  EltCase(EltOp o, int64_t n, uint64_t seed) : op(o), count(n) {
    a = random_floats(size_t(n), seed);
    b = random_floats(size_t(n), seed + 1);
    if (op == EltOp::relu_backward) cpu::relu_forward(b.data(), b.data(), n);
    da = Dev<float>(a);
    db = Dev<float>(b);
    out = Dev<float>(size_t(n));
#ifdef UNETCU_WITH_TORCH_CUDA
    ta = cuda_flat(a);
    tb = cuda_flat(b);
#endif
  }
  void ours() override {
    switch (op) {
      case EltOp::relu_forward: cuda::relu_forward(out.get(), da.get(), count, g_stream); break;
      case EltOp::relu_backward:
        cuda::relu_backward(out.get(), da.get(), db.get(), count, GradMode::overwrite, g_stream);
        break;
      case EltOp::add_relu_forward:
        cuda::add_relu_forward(out.get(), da.get(), db.get(), count, g_stream);
        break;
    }
  }
  void torch() override {
#ifdef UNETCU_WITH_TORCH_CUDA
    switch (op) {
      case EltOp::relu_forward: at::relu(ta); break;
      case EltOp::relu_backward: at::threshold_backward(ta, tb, 0); break;
      case EltOp::add_relu_forward: at::add(ta, tb).relu_(); break;
    }
#endif
  }
  Check check() override {
    ours();
    std::vector<float> want(static_cast<size_t>(count));
    switch (op) {
      case EltOp::relu_forward: cpu::relu_forward(want.data(), a.data(), count); break;
      case EltOp::relu_backward:
        cpu::relu_backward(want.data(), a.data(), b.data(), count, GradMode::overwrite);
        break;
      case EltOp::add_relu_forward:
        cpu::add_relu_forward(want.data(), a.data(), b.data(), count);
        break;
    }
    const auto got = out.host();
    return compare(got.data(), want.data(), want.size(), 0.0, "output");
  }
};

void register_elementwise(const Graph& g) {
  for_each_elementwise_pair(g, [](const PairInfo& p, EltOp op, int64_t n, uint64_t s) {
    register_gpu_pair(p, [op, n, s] { return std::make_unique<EltCase>(op, n, s); });
  });
}

// Max-pool, upsample and concat forward and backward: data movement, identical results.
enum class SpatialOp { pool, upsample, concat };

struct SpatialCase : OpCase {
  SpatialOp kind;
  bool backward;
  MaxPoolShape pool;
  UpsampleShape up;
  ConcatShape cat;
  ActInfo in, out_act;  // the forward's input (a for concat) and output
  std::vector<float> x, x2, dy;
  std::vector<int32_t> argmax;
  Dev<float> dx_in, dx2_in, ddy, out, out2;
  Dev<int32_t> dargmax;
#ifdef UNETCU_WITH_TORCH_CUDA
  torch::Tensor tx, tx2, tdy, tidx;
#endif

  SpatialCase(SpatialOp k, bool bwd, const Node& node, const Graph& g, uint64_t seed)
      : kind(k),
        backward(bwd),
        pool(node.pool),
        up(node.up),
        cat(node.cat),
        in(g.acts()[size_t(node.in0)]),
        out_act(g.acts()[size_t(node.out)]) {
    const size_t in_count = size_t(in.numel()), out_count = size_t(out_act.numel());
    x = random_floats(in_count, seed);
    dy = random_floats(out_count, seed + 1);
    dx_in = Dev<float>(x);
    ddy = Dev<float>(dy);
    out = Dev<float>(backward ? in_count : out_count);
    if (kind == SpatialOp::concat) {
      x2 = random_floats(size_t(cat.rows) * size_t(cat.cb), seed + 2);
      dx2_in = Dev<float>(x2);
      out2 = Dev<float>(x2.size());
    }
    if (kind == SpatialOp::pool) {
      argmax.resize(out_count);
      std::vector<float> y(out_count);
      cpu::maxpool_forward(y.data(), argmax.data(), x.data(), pool);
      dargmax = Dev<int32_t>(argmax);
    }
#ifdef UNETCU_WITH_TORCH_CUDA
    tx = cuda_nchw(x, in.n, in.h, in.w, in.c);
    tdy = cuda_nchw(dy, out_act.n, out_act.h, out_act.w, out_act.c);
    if (kind == SpatialOp::concat) tx2 = cuda_nchw(x2, in.n, in.h, in.w, cat.cb);
    if (kind == SpatialOp::pool)
      tidx = std::get<1>(at::max_pool2d_with_indices(tx, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false));
#endif
  }
  void ours() override {
    switch (kind) {
      case SpatialOp::pool:
        if (backward)
          cuda::maxpool_backward(out.get(), ddy.get(), dargmax.get(), pool, GradMode::overwrite,
                                 g_stream);
        else
          cuda::maxpool_forward(out.get(), dargmax.get(), dx_in.get(), pool, g_stream);
        break;
      case SpatialOp::upsample:
        if (backward)
          cuda::upsample2x_backward(out.get(), ddy.get(), up, GradMode::overwrite, g_stream);
        else
          cuda::upsample2x_forward(out.get(), dx_in.get(), up, g_stream);
        break;
      case SpatialOp::concat:
        if (backward)
          cuda::concat_backward(out.get(), out2.get(), ddy.get(), cat, GradMode::overwrite,
                                GradMode::overwrite, g_stream);
        else
          cuda::concat_forward(out.get(), dx_in.get(), dx2_in.get(), cat, g_stream);
        break;
    }
  }
  void torch() override {
#ifdef UNETCU_WITH_TORCH_CUDA
    const std::vector<int64_t> up_size{2 * up.h, 2 * up.w}, in_size{up.n, up.c, up.h, up.w};
    switch (kind) {
      case SpatialOp::pool:
        if (backward)
          at::max_pool2d_with_indices_backward(tdy, tx, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false,
                                               tidx);
        else
          at::max_pool2d_with_indices(tx, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false);
        break;
      case SpatialOp::upsample:
        if (backward)
          at::upsample_nearest2d_backward(tdy, up_size, in_size, 2.0, 2.0);
        else
          at::upsample_nearest2d(tx, up_size, 2.0, 2.0);
        break;
      case SpatialOp::concat:
        if (backward) {
          tdy.narrow(1, 0, cat.ca).contiguous();
          tdy.narrow(1, cat.ca, cat.cb).contiguous();
        } else {
          at::cat({tx, tx2}, 1);
        }
        break;
    }
#endif
  }
  Check check() override {
    ours();
    std::vector<float> want(backward ? x.size() : dy.size()), want2(x2.size());
    std::vector<int32_t> want_argmax(argmax.size());
    switch (kind) {
      case SpatialOp::pool:
        if (backward)
          cpu::maxpool_backward(want.data(), dy.data(), argmax.data(), pool, GradMode::overwrite);
        else
          cpu::maxpool_forward(want.data(), want_argmax.data(), x.data(), pool);
        break;
      case SpatialOp::upsample:
        if (backward)
          cpu::upsample2x_backward(want.data(), dy.data(), up, GradMode::overwrite);
        else
          cpu::upsample2x_forward(want.data(), x.data(), up);
        break;
      case SpatialOp::concat:
        if (backward)
          cpu::concat_backward(want.data(), want2.data(), dy.data(), cat, GradMode::overwrite,
                               GradMode::overwrite);
        else
          cpu::concat_forward(want.data(), x.data(), x2.data(), cat);
        break;
    }
    const auto got = out.host();
    Check c = compare(got.data(), want.data(), want.size(), 0.0, "output");
    if (kind == SpatialOp::concat && backward) {
      const auto got2 = out2.host();
      c = combine({c, compare(got2.data(), want2.data(), want2.size(), 0.0, "second output")});
    }
    if (kind == SpatialOp::pool && !backward) {
      const auto got_argmax = dargmax.host();
      c = combine(
          {c, compare(got_argmax.data(), want_argmax.data(), want_argmax.size(), 0.0, "argmax")});
    }
    return c;
  }
};

void register_spatial(const Graph& g) {
  const struct {
    SpatialOp kind;
    OpKind op;
    const char* name;
  } kinds[] = {{SpatialOp::pool, OpKind::maxpool, "maxpool"},
               {SpatialOp::upsample, OpKind::upsample, "upsample"},
               {SpatialOp::concat, OpKind::concat, "concat"}};
  uint64_t seed = 9000;
  for (const auto& k : kinds) {
    for (bool bwd : {false, true}) {
      for (const LayerShape& ls : distinct_shapes(g, k.op)) {
        const ActInfo in = g.acts()[size_t(ls.node.in0)], out = g.acts()[size_t(ls.node.out)];
        PairInfo p;
        p.key = std::string(k.name) + (bwd ? ".bwd/" : ".fwd/") + ls.node.name;
        p.shape = std::to_string(out.n) + "x" + std::to_string(out.h) + "x" +
                  std::to_string(out.w) + "x" + std::to_string(out.c) + " out";
        p.count = ls.count;
        // Every input read once, every output written once (max-pool: with int32 argmax).
        const double in_bytes =
            4.0 * double(k.kind == SpatialOp::concat ? out.numel() : in.numel());
        const double out_bytes = 4.0 * double(out.numel()) * (k.kind == SpatialOp::pool ? 2 : 1);
        p.work = in_bytes + out_bytes;
        const SpatialOp kind = k.kind;
        const Node node = ls.node;
        const Graph* graph = &g;
        const uint64_t s = seed += 10;
        register_gpu_pair(p, [kind, bwd, node, graph, s] {
          return std::make_unique<SpatialCase>(kind, bwd, node, *graph, s);
        });
      }
    }
  }
}

// ---- loss, metrics, normalisation, Adam ---------------------------------------------------

// dice_and_counts: the Dice forward and the confusion counts as the training step issues them
// (cuda::loss_and_counts where it applies, both at once), against LibTorch's two.
enum class LossOp { dice_forward, dice_forward_backward, confusion, dice_and_counts };

struct LossCase : OpCase {
  LossOp op;
  int n;
  int64_t pixels, count;
  std::vector<float> logits;
  std::vector<uint8_t> target;
  Dev<float> dlogits_in, dloss, dgrad;
  Dev<uint8_t> dtarget;
  Dev<DiceSums> dsums;
  Dev<ConfusionCounts> dcounts;
  Dev<unsigned char> ws;
#ifdef UNETCU_WITH_TORCH_CUDA
  torch::Tensor tl, tt, tt_long;
  std::vector<torch::Tensor> counts;  // tp, fp, fn, tn per image
#endif

  LossCase(LossOp o, int n_images, int64_t px, uint64_t seed)
      : op(o), n(n_images), pixels(px), count(n_images * px) {
    logits = random_floats(size_t(count), seed, -4.0, 4.0);
    target = random_mask(size_t(count), seed + 1, 0.3);
    dlogits_in = Dev<float>(logits);
    dtarget = Dev<uint8_t>(target);
    dloss = Dev<float>(1);
    dgrad = Dev<float>(size_t(count));
    dsums = Dev<DiceSums>(1);
    dcounts = Dev<ConfusionCounts>(size_t(n));
    ws = Dev<unsigned char>(op == LossOp::confusion
                                ? cuda::confusion_counts_workspace_bytes(n, pixels)
                            : op == LossOp::dice_and_counts
                                ? cuda::loss_and_counts_workspace_bytes(n, pixels)
                                : cuda::dice_loss_workspace_bytes(count));
#ifdef UNETCU_WITH_TORCH_CUDA
    const int64_t side = int64_t(std::lround(std::sqrt(double(pixels))));
    tl = cuda_flat(logits).reshape({n, 1, side, pixels / side});
    auto t8 = torch::from_blob(target.data(), {n, 1, side, pixels / side}, torch::kUInt8).clone();
    tt = t8.to(torch::kCUDA, torch::kFloat32);
    tt_long = t8.to(torch::kCUDA, torch::kLong);
#endif
  }
  void ours() override {
    switch (op) {
      case LossOp::dice_forward:
        cuda::dice_loss_forward(dloss.get(), dsums.get(), dlogits_in.get(), dtarget.get(), count,
                                ws.get(), g_stream);
        break;
      case LossOp::dice_forward_backward:
        cuda::dice_loss_forward(dloss.get(), dsums.get(), dlogits_in.get(), dtarget.get(), count,
                                ws.get(), g_stream);
        cuda::dice_loss_backward(dgrad.get(), dlogits_in.get(), dtarget.get(), dsums.get(), count,
                                 1.0f, GradMode::overwrite, g_stream);
        break;
      case LossOp::confusion:
        cuda::confusion_counts(dcounts.get(), dlogits_in.get(), dtarget.get(), n, pixels, ws.get(),
                               g_stream);
        break;
      case LossOp::dice_and_counts:
        cuda::loss_and_counts(dloss.get(), dsums.get(), dcounts.get(), dlogits_in.get(),
                              dtarget.get(), n, pixels, ws.get(), g_stream);
        break;
    }
  }
  void torch() override {
#ifdef UNETCU_WITH_TORCH_CUDA
    switch (op) {
      case LossOp::dice_forward: libtorch_dice_loss(tl, tt); break;
      case LossOp::dice_forward_backward: {
        auto x = tl.detach().requires_grad_(true);
        torch::autograd::grad({libtorch_dice_loss(x, tt)}, {x});
        break;
      }
      case LossOp::confusion: libtorch_counts(); break;
      case LossOp::dice_and_counts:
        libtorch_dice_loss(tl, tt);
        libtorch_counts();
        break;
    }
#endif
  }
#ifdef UNETCU_WITH_TORCH_CUDA
  void libtorch_counts() {
    auto pred = (tl.sigmoid() > 0.5).to(torch::kLong).reshape({n, -1});
    auto truth = tt_long.reshape({n, -1});
    auto tp = (pred * truth).sum(1);
    auto fp = pred.sum(1) - tp;
    auto fn = truth.sum(1) - tp;
    counts = {tp, fp, fn, pixels - (tp + fp + fn)};
  }
#endif
  Check check_counts() {
    std::vector<ConfusionCounts> want(static_cast<size_t>(n));
    cpu::confusion_counts(want.data(), logits.data(), target.data(), n, pixels);
    const auto got = dcounts.host();
    std::vector<int64_t> g, w;
    for (int i = 0; i < n; ++i) {
      const ConfusionCounts &a = got[size_t(i)], &b = want[size_t(i)];
      g.insert(g.end(), {a.tp, a.fp, a.fn, a.tn});
      w.insert(w.end(), {b.tp, b.fp, b.fn, b.tn});
    }
    return compare(g.data(), w.data(), g.size(), 0.0, "tp, fp, fn, tn");
  }
  Check check() override {
    ours();
    if (op == LossOp::confusion) return check_counts();
    float want_loss = 0;
    DiceSums sums;
    cpu::dice_loss_forward(&want_loss, &sums, logits.data(), target.data(), count);
    const auto got_loss = dloss.host();
    Check c = compare(got_loss.data(), &want_loss, 1, 1e-6, "loss");
    if (op == LossOp::dice_and_counts) c = combine({c, check_counts()});
    if (op == LossOp::dice_forward_backward) {
      std::vector<float> want(static_cast<size_t>(count));
      cpu::dice_loss_backward(want.data(), logits.data(), target.data(), sums, count, 1.0f,
                              GradMode::overwrite);
      const auto got = dgrad.host();
      c = combine({c, compare(got.data(), want.data(), want.size(), 1e-6, "dlogits")});
    }
    return c;
  }
};

struct NormalizeCase : OpCase {
  int64_t pixels;
  std::vector<uint8_t> img;
  Dev<uint8_t> dimg;
  Dev<float> dx;
  NormalizeParams prm;
#ifdef UNETCU_WITH_TORCH_CUDA
  torch::Tensor timg, tmean, tstd;
#endif

  NormalizeCase(int64_t px, uint64_t seed) : pixels(px) {
    Rng rng(seed);
    img.resize(size_t(px) * 3);
    for (auto& v : img) v = uint8_t(rng.below(256));
    dimg = Dev<uint8_t>(img);
    dx = Dev<float>(img.size());
#ifdef UNETCU_WITH_TORCH_CUDA
    timg = torch::from_blob(img.data(), {px, 3}, torch::kUInt8).to(torch::kCUDA);
    tmean = torch::tensor({prm.mean[0], prm.mean[1], prm.mean[2]}).to(torch::kCUDA);
    tstd = torch::tensor({prm.std[0], prm.std[1], prm.std[2]}).to(torch::kCUDA);
#endif
  }
  void ours() override { cuda::normalize_input(dx.get(), dimg.get(), pixels, prm, g_stream); }
  void torch() override {
#ifdef UNETCU_WITH_TORCH_CUDA
    (timg.to(torch::kFloat32) / 255.0f - tmean) / tstd;
#endif
  }
  Check check() override {
    ours();
    std::vector<float> want(img.size());
    cpu::normalize_input(want.data(), img.data(), pixels, prm);
    const auto got = dx.host();
    return compare(got.data(), want.data(), want.size(), 0.0, "x");
  }
};

struct AdamCase : OpCase {
  int64_t count;
  std::vector<float> param, grad;
  Dev<float> dparam, dm, dv, dgrad;
  Dev<int64_t> dstep;
  Dev<AdamStepScalars> dscalars;
  AdamConfig cfg;
#ifdef UNETCU_WITH_TORCH_CUDA
  std::vector<torch::Tensor> tparams;
  std::unique_ptr<torch::optim::Adam> opt;
#endif

  explicit AdamCase(uint64_t seed) {
    const ModelSpec& spec = unet_spec();
    count = spec.param_count;
    param = random_floats(size_t(count), seed, -0.1, 0.1);
    grad = random_floats(size_t(count), seed + 1, -1e-2, 1e-2);
    dparam = Dev<float>(param);
    dgrad = Dev<float>(grad);
    dm = Dev<float>(std::vector<float>(size_t(count), 0.0f));
    dv = Dev<float>(std::vector<float>(size_t(count), 0.0f));
    dstep = Dev<int64_t>(std::vector<int64_t>{0});
    dscalars = Dev<AdamStepScalars>(1);
#ifdef UNETCU_WITH_TORCH_CUDA
    for (const ParamEntry& e : spec.params) {
      auto p = torch::from_blob(param.data() + e.offset, e.torch_shape, torch::kFloat32)
                   .to(torch::kCUDA);
      p.requires_grad_(true);
      p.mutable_grad() =
          torch::from_blob(grad.data() + e.offset, e.torch_shape, torch::kFloat32).to(torch::kCUDA);
      tparams.push_back(p);
    }
    opt = std::make_unique<torch::optim::Adam>(tparams, torch::optim::AdamOptions(cfg.lr));
#endif
  }
  void ours() override {
    cuda::adam_advance_step(dstep.get(), dscalars.get(), cfg, nullptr, g_stream);
    cuda::adam_step(dparam.get(), dm.get(), dv.get(), dgrad.get(), count, dscalars.get(), g_stream);
  }
  void torch() override {
#ifdef UNETCU_WITH_TORCH_CUDA
    opt->step();
#endif
  }
  // Two steps from zero moments (the second reads both), against the reference's two steps.
  Check check() override {
    ours();
    ours();
    std::vector<float> want = param, m(size_t(count), 0.0f), v(size_t(count), 0.0f);
    for (int64_t t = 1; t <= 2; ++t)
      cpu::adam_step(want.data(), m.data(), v.data(), grad.data(), count, cfg, t);
    const auto got = dparam.host();
    return compare(got.data(), want.data(), want.size(), 2 * kEps, "parameters after 2 steps");
  }
};

void register_loss_and_optimizer(const Options& o) {
  const int64_t pixels = int64_t(o.size) * o.size, count = o.batch * pixels;
  const struct {
    LossOp op;
    const char* key;
    double bytes;
  } losses[] = {{LossOp::dice_forward, "dice.fwd", 5.0 * count},
                {LossOp::dice_forward_backward, "dice.fwd_bwd", 14.0 * count},
                {LossOp::confusion, "confusion_counts", 5.0 * count},
                {LossOp::dice_and_counts, "dice_counts.fwd", 5.0 * count}};
  const std::string shape =
      std::to_string(o.batch) + "x" + std::to_string(o.size) + "x" + std::to_string(o.size);
  uint64_t seed = 11000;
  for (const auto& l : losses) {
    PairInfo p;
    p.key = std::string(l.key) + "/logits";
    p.shape = shape;
    p.work = l.bytes;
    if (l.op == LossOp::dice_and_counts) {
      // The fused form of the two pairs above: in the bandwidth table, not in the family
      // totals (which keep counting them apart, as in earlier runs); only where it applies.
      if (pixels % 4 != 0) continue;
      p.in_totals = false;
      p.probe = true;
    }
    const LossOp op = l.op;
    const int n = o.batch;
    const uint64_t s = seed += 10;
    register_gpu_pair(p,
                      [op, n, pixels, s] { return std::make_unique<LossCase>(op, n, pixels, s); });
  }
  PairInfo norm;
  norm.key = "normalize/input";
  norm.shape = shape + "x3 uint8";
  norm.work = 15.0 * count;
  register_gpu_pair(norm, [count] { return std::make_unique<NormalizeCase>(count, 12000); });
  PairInfo adam;
  adam.key = "adam.step/all_parameters";
  adam.shape = std::to_string(unet_spec().param_count) + " values";
  adam.work = 28.0 * double(unet_spec().param_count);
  register_gpu_pair(adam, [] { return std::make_unique<AdamCase>(13000); });
}

// ---- the card's copy bandwidth ------------------------------------------------------------

// A device-to-device cudaMemcpyAsync: the reference the memory-bound kernels are held to (at
// least 70% of it at the UNet's largest shapes). Its size is the largest memory-bound pair's
// traffic, so the copy is not flattered by a size that fits the L2 cache.
struct CopyCase : OpCase {
  size_t bytes;
  Dev<unsigned char> src, dst;
  explicit CopyCase(size_t b) : bytes(b), dst(b) {
    std::vector<unsigned char> host(b);
    for (size_t i = 0; i < b; ++i) host[i] = static_cast<unsigned char>(i * 131 + 7);
    src = Dev<unsigned char>(host);
  }
  void ours() override {
    UNETCU_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice,
                                      g_stream));
  }
  void torch() override {}
  Check check() override {
    ours();
    const auto got = dst.host(), want = src.host();
    return compare(got.data(), want.data(), want.size(), 0.0, "copied bytes");
  }
};

constexpr const char* kCopyKey = "limits/copy_d2d";
constexpr size_t kBigCopyBytes = size_t(256) << 20;

// The family of a pair key: "bn.train_fwd" of "bn.train_fwd/encoder.bn1".
std::string family_of(const std::string& key) { return key.substr(0, key.find('/')); }

// The largest pair of each family of memory-bound ops (work counted in bytes), in
// registration order.
std::vector<const PairInfo*> largest_memory_bound() {
  std::vector<const PairInfo*> out;
  for (const PairInfo& p : pairs()) {
    if (p.kind != Work::bytes || !(p.in_totals || p.probe)) continue;
    auto same = std::find_if(out.begin(), out.end(), [&](const PairInfo* q) {
      return family_of(q->key) == family_of(p.key);
    });
    if (same == out.end())
      out.push_back(&p);
    else if (p.work > (*same)->work)
      *same = &p;
  }
  return out;
}

void register_copy(const std::string& key, size_t bytes) {
  PairInfo p;
  p.key = key;
  p.shape = std::to_string(bytes) + " B read + written";
  p.work = 2.0 * double(bytes);
  p.in_totals = false;
  register_pair(p, [bytes] { return std::make_unique<CopyCase>(bytes); }, time_on_gpu, false,
                true);
}

// Registered after every other memory-bound pair: one 256 MiB copy (the card's sustained
// rate), and per memory-bound family a copy of as many bytes as its largest pair moves (half
// read, half written), which pays the same launch and tail costs: the kernel's reference.
void register_copies() {
  std::vector<std::pair<std::string, size_t>> copies{
      {std::string(kCopyKey) + "/256MiB", kBigCopyBytes}};
  for (const PairInfo* p : largest_memory_bound())  // collected first: registering adds pairs
    copies.emplace_back(std::string(kCopyKey) + "/" + family_of(p->key),
                        std::max<size_t>(size_t(p->work / 2) / 256 * 256, 256));
  for (const auto& [key, bytes] : copies) register_copy(key, bytes);
}

// Each family of memory-bound ops at its largest shape: our rate as a share of the copy of the
// same size. The kernels' bytes are what they must move at least (bench's PairInfo work), so a
// share near 100% means the kernel is as fast as its traffic allows.
void print_bandwidth(const RecordingReporter& rep) {
  auto rate = [&](const std::string& key, double work) {
    auto t = rep.ms.find(key);
    return t == rep.ms.end() || t->second <= 0 ? 0.0 : work / (t->second * 1e-3);
  };
  const double big = rate(std::string(kCopyKey) + "/256MiB/ours", 2.0 * kBigCopyBytes);
  if (big <= 0) return;
  std::printf("\nmemory-bound ops at their largest shape vs a device-to-device copy of as many "
              "bytes (256 MiB copy: %.1f GB/s; target: 70%% or more)\n",
              big * 1e-9);
  std::printf("%-52s %-30s %9s %9s %11s %11s %8s\n", "op / layer", "shape", "MB moved",
              "ours ms", "ours GB/s", "copy GB/s", "of copy");
  int below = 0, compared = 0;
  for (const PairInfo* p : largest_memory_bound()) {
    if (!p->checked || !p->check.ok) continue;
    const double ours = rate(p->key + "/ours", p->work);
    const std::string copy_key = std::string(kCopyKey) + "/" + family_of(p->key);
    double copy = 0;
    for (const PairInfo& c : pairs())
      if (c.key == copy_key) copy = rate(copy_key + "/ours", c.work);
    if (ours <= 0 || copy <= 0) continue;
    const double share = ours / copy;
    ++compared;
    below += share < 0.7;
    std::printf("%-52s %-30s %9.2f %9.4f %11.1f %11.1f %7.1f%%%s\n", p->key.c_str(),
                p->shape.c_str(), p->work * 1e-6, rep.ms.at(p->key + "/ours"), ours * 1e-9,
                copy * 1e-9, 100 * share, share < 0.7 ? "  below" : "");
  }
  std::printf("%d of %d families below 70%% of the copy\n", below, compared);
}

// Where the host took longer to issue a run than the GPU took to run it (the ops an eager caller
// waits on the host for; the training step replays a CUDA graph and does not), and the ops timed
// unheld because the hold ran out (their issue waited for the stream, or took over its limit).
void print_issue_times(const RecordingReporter& rep) {
  int timed = 0, slower = 0, unheld = 0;
  std::vector<std::string> lines;
  for (const PairInfo& p : pairs()) {
    for (const char* side : {"ours", "libtorch"}) {
      const std::string name = p.key + "/" + side;
      auto t = rep.ms.find(name), i = rep.issue_ms.find(name);
      if (t == rep.ms.end() || i == rep.issue_ms.end()) continue;
      ++timed;
      auto u = rep.unheld.find(name);
      const bool held = u == rep.unheld.end() || !u->second;
      unheld += !held;
      if (i->second <= t->second && held) continue;
      slower += i->second > t->second;
      char line[160];
      std::snprintf(line, sizeof line, "%-60s %10.4f %10.4f %8.1f %s", name.c_str(), t->second,
                    i->second, t->second > 0 ? i->second / t->second : 0.0,
                    held ? "" : "  unheld: the hold ran out");
      lines.push_back(line);
    }
  }
  if (timed == 0) return;
  std::printf("\nthe host's time to issue one run against its GPU time, where the issue took "
              "longer (medians; %s)\n",
              g_hold ? "the GPU times above exclude it" : "unheld: the GPU times above include "
                                                          "what the flush did not cover");
  std::printf("%-60s %10s %10s %8s\n", "op / side", "GPU ms", "issue ms", "issue/GPU");
  for (const std::string& l : lines) std::printf("%s\n", l.c_str());
  std::printf("%d of %d timed runs issued more slowly than they ran; %d timed unheld\n", slower,
              timed, unheld);
}

// ---- the whole training step --------------------------------------------------------------

struct StepCase : OpCase {
  int batch, size;
  std::vector<uint8_t> images, masks;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<ModelSession> session;
  HostModelState init;
#ifdef UNETCU_WITH_TORCH_CUDA
  LibTorchUnet net;
  std::unique_ptr<torch::optim::Adam> opt;
  torch::Tensor tx, tt;
#endif

  StepCase(int n, int s) : batch(n), size(s) {
    const size_t px = size_t(n) * s * s;
    Rng rng(12345);
    images.resize(px * 3);
    for (auto& v : images) v = uint8_t(rng.below(256));
    masks.resize(px);
    for (int i = 0; i < n; ++i)
      for (int y = 0; y < s; ++y)
        for (int x = 0; x < s; ++x) {
          const int dx = x - s / 2 - i, dy = y - s / 2;
          masks[(size_t(i) * s + y) * s + x] = dx * dx + dy * dy < s * s / 10;
        }
    init = initial_state(unet_spec(), 0);
    BackendOptions bo;
    bo.tf32 = g_tf32;
    backend = make_backend("cuda", bo);
    session = std::make_unique<ModelSession>(*backend, s, s);
    session->set_state(init);
#ifdef UNETCU_WITH_TORCH_CUDA
    net = LibTorchUnet::from_state(unet_spec(), init);
    for (auto& [name, t] : net.p) t = t.detach().to(torch::kCUDA).requires_grad_(true);
    for (auto& [name, t] : net.buf) t = t.to(torch::kCUDA);
    opt = std::make_unique<torch::optim::Adam>(net.parameters(unet_spec()),
                                               torch::optim::AdamOptions(1e-4));
    std::vector<float> x(px * 3);
    cpu::normalize_input(x.data(), images.data(), int64_t(px), NormalizeParams{});
    tx = to_nchw(x, n, s, s, 3).to(torch::kCUDA);
    tt = torch::from_blob(masks.data(), {n, 1, s, s}, torch::kUInt8)
             .to(torch::kCUDA, torch::kFloat32);
#endif
  }
  // What the session's step tuning kept (printed after the table; the case is gone by then).
  ~StepCase() override {
    if (session) g_step_tuning = session->step_tuning_report();
  }
  // As the trainer does: submit, and take whatever results have arrived without waiting.
  void ours() override {
    session->submit_train_step(images.data(), masks.data(), batch);
    StepResult r;
    while (session->next_train_result(r, false)) {
    }
  }
  void torch() override {
#ifdef UNETCU_WITH_TORCH_CUDA
    opt->zero_grad();
    libtorch_dice_loss(net.forward(tx), tt).backward();
    opt->step();
#endif
  }
  // The first step's loss (before any update) against our CPU engine from the same weights.
  Check check() override {
    StepResult pending;
    while (session->next_train_result(pending, true)) {
    }
    const float got = session->train_step(images.data(), masks.data(), batch).loss;
    std::printf("cuDNN algorithms and our kernels' timed paths of the training step (chosen "
                "in its first step):\n%s",
                backend->choices().c_str());
    auto cpu = make_cpu_backend();
    ModelSession ref(*cpu, size, size);
    ref.set_state(init);
    const float want = ref.train_step(images.data(), masks.data(), batch).loss;
    std::printf("check: first-step Dice loss GPU %.7f, CPU %.7f\n", got, want);
    // compare() scales a scalar by 2|want|: halve the relative tolerance.
    return compare(&got, &want, 1, (g_tf32 ? 1e-2 : 1e-4) / 2, "first-step loss");
  }
};

}  // namespace

// --profile-steps: `steps` replayed training steps inside a profiler range (see the top).
static int profile_steps(const Options& o, int steps) {
  StepCase step(o.batch, o.size);
  StepResult r;
  for (int i = 0; i < 3; ++i)
    step.session->train_step(step.images.data(), step.masks.data(), o.batch);
  UNETCU_CUDA_CHECK(cudaDeviceSynchronize());
  UNETCU_CUDA_CHECK(cudaProfilerStart());
  for (int i = 0; i < steps; ++i) {
    step.session->submit_train_step(step.images.data(), step.masks.data(), o.batch);
    while (step.session->next_train_result(r, false)) {
    }
  }
  while (step.session->next_train_result(r, true)) {
  }
  UNETCU_CUDA_CHECK(cudaDeviceSynchronize());
  UNETCU_CUDA_CHECK(cudaProfilerStop());
  std::printf("profiled %d training steps (batch %d, %dx%d, %s), last loss %.6f\n", steps,
              o.batch, o.size, o.size, g_tf32 ? "TF32" : "fp32", double(r.loss));
  return 0;
}

// --trace-steps: `steps` replayed training steps under KernelTrace, into `path` (see the top).
static int trace_steps(const Options& o, int steps, const std::string& path) {
#if !defined(UNETCU_WITH_CUPTI)
  (void)o;
  (void)steps;
  std::fprintf(stderr, "bench_cuda_ops: built without CUPTI (not found in the CUDA toolkit), so "
                       "--trace-steps cannot write %s\n", path.c_str());
  return 2;
#else
  StepCase step(o.batch, o.size);
  StepResult r;
  for (int i = 0; i < 3; ++i)
    step.session->train_step(step.images.data(), step.masks.data(), o.batch);
  UNETCU_CUDA_CHECK(cudaDeviceSynchronize());
  bench::KernelTrace trace;
  std::vector<uint64_t> starts;
  trace.start();
  for (int i = 0; i < steps; ++i) {
    starts.push_back(bench::KernelTrace::now());
    step.session->submit_train_step(step.images.data(), step.masks.data(), o.batch);
    while (step.session->next_train_result(r, true)) {
    }
    UNETCU_CUDA_CHECK(cudaDeviceSynchronize());
  }
  trace.stop();
  std::FILE* out = std::fopen(path.c_str(), "w");
  if (out == nullptr) {
    std::fprintf(stderr, "bench_cuda_ops: cannot write the trace to %s\n", path.c_str());
    return 1;
  }
  bench::write_trace_csv(out, trace.records(), starts);
  const bool written = std::fclose(out) == 0;
  std::printf("traced %d training steps (batch %d, %dx%d, %s): %zu records (%zu dropped) in %s\n",
              steps, o.batch, o.size, o.size, g_tf32 ? "TF32" : "fp32", trace.records().size(),
              trace.dropped(), path.c_str());
  return written ? 0 : 1;
#endif
}

int main(int argc, char** argv) {
  int kept = 1;
  int profile = 0, trace = 0;
  std::string trace_out;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--profile-steps") && i + 1 < argc)
      profile = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--trace-steps") && i + 1 < argc)
      trace = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--trace-out") && i + 1 < argc)
      trace_out = argv[++i];
    else if (!std::strcmp(argv[i], "--runs") && i + 1 < argc)
      g_runs = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--no-tf32"))
      g_tf32 = false;
    else if (!std::strcmp(argv[i], "--no-hold"))
      g_hold = false;
    else
      argv[kept++] = argv[i];
  }
  argc = kept;
  const Options o = parse_options(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  if (trace > 0 && trace_out.empty()) {
    std::fprintf(stderr, "bench_cuda_ops: --trace-steps needs --trace-out FILE\n");
    return 2;
  }

  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no GPU\n");
    return 0;
  }
  cudaDeviceProp prop{};
  UNETCU_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  if (profile > 0) return profile_steps(o, profile);
  if (trace > 0) return trace_steps(o, trace, trace_out);
  UNETCU_CUDA_CHECK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  g_timer = std::make_unique<GpuTimer>();
  g_conv = std::make_unique<cudnn::ConvRunner>(g_stream, cudnn::ConvOptions{g_tf32});
  const char* gemm_setting = std::getenv("UNETCU_GEMM_CONV");
  if (gemm_setting == nullptr || std::string(gemm_setting) != "0")
    g_gemm = std::make_unique<cudnn::GemmRunner>(g_tf32);
  std::printf(
      "GPU ops: %s, %s, %s; batch %d, %dx%d, fp32%s; median of %d runs, L2 flushed (%zu MiB "
      "written before each), %s; peers: %s\n",
      prop.name, cudnn::version().c_str(), cudnn::cublas_version().c_str(), o.batch, o.size,
      o.size, g_tf32 ? " (convolutions TF32)" : "", g_runs, g_timer->flush_bytes() >> 20,
      g_hold ? "the stream held while the host issues each run"
             : "the stream not held (--no-hold)",
      kPeers);
#ifdef UNETCU_WITH_TORCH_CUDA
  at::globalContext().setAllowTF32CuDNN(g_tf32);
  c10::cuda::CUDAStreamGuard torch_stream(c10::cuda::getStreamFromExternal(g_stream, 0));
#endif

  const Unet net = build_unet(o.batch, o.size, o.size);
  register_convs(net.graph);
  register_batchnorms(net.graph);
  register_elementwise(net.graph);
  register_spatial(net.graph);
  register_loss_and_optimizer(o);
  register_copies();
  PairInfo step;
  step.key = std::string(g_tf32 ? "train_step.tf32" : "train_step.fp32") + "/whole";
  step.shape =
      std::to_string(o.batch) + "x" + std::to_string(o.size) + "x" + std::to_string(o.size);
  step.work = 0;  // images/s are printed below the table
  step.in_totals = false;
  const int batch = o.batch, size = o.size;
  register_pair(
      step, [batch, size] { return std::make_unique<StepCase>(batch, size); }, time_steps,
      kWithTorch, true);

  RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  current_case().op.reset();
  const bool ok = print_table(
      reporter,
      "ours vs LibTorch on the GPU, per op (ratio = time ours / time LibTorch; < 1: ours faster)");
  print_bandwidth(reporter);
  print_issue_times(reporter);
  std::printf("\ncuDNN algorithms chosen for the convolution pairs above (the training step's "
              "own choices are printed by its check)\n%s",
              g_conv->report().c_str());
  const std::string key = step.key;
  if (reporter.ms.count(key + "/ours"))
    std::printf("\ntraining step: ours %.1f images/s",
                o.batch / (reporter.ms[key + "/ours"] * 1e-3));
  if (reporter.ms.count(key + "/libtorch"))
    std::printf(", LibTorch %.1f images/s", o.batch / (reporter.ms[key + "/libtorch"] * 1e-3));
  std::printf("\n");
  if (!g_step_tuning.empty()) std::printf("%s\n", g_step_tuning.c_str());
  // cuDNN's handle and the device buffers go before the CUDA runtime shuts down at exit.
  g_conv.reset();
  g_gemm.reset();
  g_timer.reset();
  return ok ? 0 : 1;
}
