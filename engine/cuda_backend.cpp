// engine/cuda_backend.cpp: CudaBackend, the Backend on a CUDA device (see cuda_backend.h).
//
// One source, two builds (engine/CMakeLists.txt):
//   native      nvcc, libcudart, cuDNN: the ops are the kernels/cuda kernels, the convolutions
//               cuDNN calls (kernels/cudnn) except the one-output-channel head's, which are
//               kernels/cuda's narrow kernels in both builds, the convolutions of few
//               output channels where a direct kernel beats cuDNN (UNETCU_DIRECT_CONV), and
//               the deep layers' where a cuBLAS GEMM and a gather do (UNETCU_GEMM_CONV);
//   emulated    g++ with kernels/simt/simt.h force-included (it defines UNETCU_SIMT): the same
//               kernels run on the CPU, and the convolutions run the cpu:: reference as host
//               functions in stream order (host-function nodes while a graph is being captured),
//               so that they run between the right kernels in every stream order and replay.
//               cuDNN is never faked.
//
// Streams: every op runs on one non-blocking compute stream, except that between
// fork_weight_grads() and join_weight_grads() the weight and bias gradients run on a side
// stream (with its own workspace, and a cuDNN handle of the side streams'), beside the data
// gradient on the compute stream and the ops of the layers below until the end of the
// backward pass (UNETCU_LATE_JOIN=0: each convolution joins its own), on N side streams in turn
// (UNETCU_WGRAD_STREAMS=N, default 3), beside each other; events fork and join them, also
// inside a graph capture, where they become parallel branches. The parts of the Adam update
// whose gradients are final run on a stream of their own (UNETCU_EARLY_ADAM=0: after the
// backward pass), forked and joined the same way (fork_optimizer). Those streams are side
// streams to kernels/cuda/chaining.h: their kernels go unchained (UNETCU_SIDE_PDL=1: chained, as
// the compute stream's are), so none is placed early to wait on an SM. The per-step
// batch upload (upload_batch) runs on a copy stream, from the loader's page-locked batch
// buffers or else through pinned, double-buffered host staging; the compute stream waits for
// it through an event, and the copy stream first waits for the compute work
// already issued, so a batch never overwrites device staging an earlier step still reads. Other
// copies go through the compute stream: a plain cudaMemcpy would use the legacy stream, which
// does not order with non-blocking streams.
//
// Memory: device allocations are cudaMalloc calls checked with the size asked and a hint
// (a smaller --batch-size). The workspaces of the reductions (BatchNorm, conv bias, Dice,
// confusion counts) and of cuDNN come from one scratch buffer per stream (compute, and each
// weight-gradient side stream), used by one op at a time since each stream runs its ops in
// order. Each is sized by the eager first step of each batch size and grows only outside a
// capture; a buffer that a captured graph may still use is kept (retired) until the backend
// goes, because graphs hold raw pointers.
//
// Adam: the step counter, the learning rate and the step's scalars live in device memory
// (kernels/adam.h), so a replayed graph advances t on the device and reads the current lr.
//
// UNETCU_SYNC=1: every kernel launch synchronises and checks (kernels/cuda/launch.h); this file
// does the same after its own asynchronous work (cuDNN calls, copies, graph launches), outside
// captures.
#include "engine/cuda_backend.h"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <utility>
#include <vector>

#include "engine/error.h"
#include "kernels/batchnorm.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/launch.h"
#include "kernels/elementwise.h"
#include "kernels/path_timing.h"
#if !defined(UNETCU_SIMT)
#include "kernels/cudnn/conv_cudnn.h"
#include "kernels/cudnn/gemm_cublas.h"
#endif

namespace unetcu {
namespace {

size_t round_up_256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Adam updates the parameters whose gradients are final on a stream of its own while the
// backward pass goes on below them (Backend::early_adam, ModelSession). On unless
// UNETCU_EARLY_ADAM=0: with the late join and three weight-gradient streams, the step ran 1.6%
// faster with it on an H200 (bench/RESULTS.md); alone it gains nothing, as Adam then waits
// for each convolution's join.
EnvSwitch& early_adam_switch() {
  static EnvSwitch on{"UNETCU_EARLY_ADAM", true};
  return on;
}

// The backward pass joins the weight gradients' streams once, at its end, instead of after
// each convolution (Backend::late_weight_grad_join), so they also overlap the BatchNorm
// backward and the other ops of the layers below. On unless UNETCU_LATE_JOIN=0: the step ran
// 9.6% faster with it on an H200 (bench/RESULTS.md).
EnvSwitch& late_join_switch() {
  static EnvSwitch on{"UNETCU_LATE_JOIN", true};
  return on;
}

// The compute stream, which carries the step's critical path (the forward pass, the data
// gradients, BatchNorm), at the device's greatest priority, the other streams at the default
// (the least), and each captured graph instantiated to keep its kernels' priorities
// (cudaGraphInstantiateFlagUseNodePriority: the capture copies a stream's priority into its
// kernel nodes). Then, as SMs free up, waiting blocks of the critical path are scheduled
// before those of the weight gradients on the side streams, where otherwise the first issued
// go first. On unless UNETCU_STREAM_PRIORITY=0: the step ran 1.3% faster with it on an H100
// in one run and 2.7% in another, alternating with and without (bench/RESULTS.md).
EnvSwitch& stream_priority_switch() {
  static EnvSwitch on{"UNETCU_STREAM_PRIORITY", true};
  return on;
}

// The decoder's upsampling written into its concatenation in place (Backend::
// fuses_upsample_concat): one copy of the upsampled tensor fewer each way, 8 kernels fewer a
// step (4 concatenations). On unless UNETCU_UPSAMPLE_IN_PLACE=0 (which copies, as before; read
// when an executor is built).
EnvSwitch& upsample_in_place_switch() {
  static EnvSwitch on{"UNETCU_UPSAMPLE_IN_PLACE", true};
  return on;
}

// Guards of NaNs after the executor's buffers (Backend::buffer_guard_bytes): always under the
// emulator, where ctest's training steps then find a kernel that wrote past its output (the
// plan's buffers are adjacent, so nothing else would); on a GPU with UNETCU_BUFFER_GUARDS=1,
// to find one there.
EnvSwitch& buffer_guards_switch() {
#if defined(UNETCU_SIMT)
  static EnvSwitch on{"UNETCU_BUFFER_GUARDS", true};
#else
  static EnvSwitch on{"UNETCU_BUFFER_GUARDS", false};
#endif
  return on;
}

// UNETCU_WGRAD_STREAMS=N (1 to kMaxSideStreams, default 3): with the late join, successive
// convolutions' weight gradients take N side streams in turn, so they can also run beside one
// another. At the deepest layers one weight gradient fills a fraction of the GPU (layer3's
// 3x3 weight gradient is a 256 x 2304 GEMM over 1,024 pixels at batch 16), and with one side
// stream they queue behind each other (three streams: 1.3% faster steps on an H200 than one,
// bench/RESULTS.md). Read by each backend; a value outside 1..kMaxSideStreams fails.
constexpr int kMaxSideStreams = 4;
constexpr int kDefaultSideStreams = 3;

// A count from 1 to `most` in `variable` (`fallback` when unset or empty); anything else fails,
// naming the variable, the value and what it counts.
int env_count(const char* variable, int fallback, int most, const char* what) {
  const EnvInt n = read_env_int(variable, 1, most);
  if (n.state == EnvInt::bad)
    fail(variable, "=", n.text, ": expected a number of ", what, " from 1 to ", most);
  return n.state == EnvInt::ok ? int(n.value) : fallback;
}

int side_stream_count() {
  return env_count("UNETCU_WGRAD_STREAMS", kDefaultSideStreams, kMaxSideStreams,
                   "weight-gradient streams");
}

// The convolutions that may replace cuDNN's where they apply (kernels/conv.h), each with its
// variable:
//   UNETCU_DIRECT_CONV  the hand-written direct convolutions (kernels/cuda/conv_narrow.cu) for
//                       few output channels: forward, backward-data, weight gradient (the
//                       last only when "1": see conv_backward_filter);
//   UNETCU_GEMM_CONV    the forward and backward-data as a cuBLAS GEMM and a gather
//                       (conv_gemm.cu) where the column matrix is small: the deep layers,
//                       where cuDNN's data-gradient kernels ran on 16 thread blocks of a
//                       132-SM GPU.
// Unset ("auto"): on a GPU, each timed against cuDNN's choice per shape and direction, the
// faster serves; under the emulator, off (the reference convolution runs), so there one that
// is not off is always used. "1": always, in both builds (how ctest runs them in the emulated
// training step; the emulated GEMM is BLAS). "0": never. Read by each backend; another value
// fails. Where both apply to a convolution, the direct kernel is the one offered.
enum class ConvChoice { off, timed, always };
ConvChoice conv_choice(const char* variable, const char* kernels) {
  const char* value = std::getenv(variable);
  const std::string v = value != nullptr ? value : "";
  if (v == "0") return ConvChoice::off;
  if (v == "1") return ConvChoice::always;
  if (v.empty() || v == "auto") {
#if defined(UNETCU_SIMT)
    return ConvChoice::off;
#else
    return ConvChoice::timed;
#endif
  }
  fail(variable, "=", v, ": expected 0 (cuDNN only), 1 (always the ", kernels,
       " where they apply) or auto (the faster per shape)");
}
const char* conv_choice_name(ConvChoice d) {
  switch (d) {
    case ConvChoice::off: return "off";
    case ConvChoice::timed: return "timed against cuDNN";
    case ConvChoice::always: return "always";
  }
  return "?";
}

// Adam's device-resident state: read and advanced by the kernels, set by set_adam.
struct AdamDeviceState {
  int64_t t = 0;
  double lr = 0;
  AdamStepScalars scalars;
};

#if defined(UNETCU_SIMT)
// Work the emulated build runs on the host in stream order (cudaLaunchHostFunc): it runs
// between the right kernels in every stream order of the emulator (issue order, late, early),
// and during a capture it becomes a host node of the graph, which keeps the HostWork.
struct HostWork {
  std::function<void()> fn;
  static void run(void* self) { static_cast<const HostWork*>(self)->fn(); }
  static void run_once(void* self) {
    run(self);
    delete static_cast<HostWork*>(self);
  }
};

// One convolution of the cpu:: reference (host work).
struct HostConv {
  enum class Kind { forward, backward_data, backward_filter } kind;
  float* out;
  const float* a;     // x (forward, filter) or dy (data)
  const float* b;     // wt (forward, data) or dy (filter)
  const float* bias;  // forward only; may be null
  ConvShape sh;
  GradMode mode;

  void operator()() const {
    switch (kind) {
      case Kind::forward: cpu::conv2d_forward(out, a, b, bias, sh); break;
      case Kind::backward_data: cpu::conv2d_backward_data(out, a, b, sh, mode); break;
      case Kind::backward_filter: cpu::conv2d_backward_filter(out, b, a, sh, mode); break;
    }
  }
};

// The GEMM of a GEMM-and-gather convolution (C = A * B, kernels/conv.h) through BLAS (host
// work): the emulated build's stand-in for cuBLAS.
struct HostGemm {
  GemmDims dims;
  const float* a;
  const float* b;
  float* c;
  void operator()() const { cpu::gemm_colmajor(dims, a, b, c); }
};
#endif

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& opt)
      : direct_conv_(conv_choice("UNETCU_DIRECT_CONV", "direct kernels")),
        tf32_(opt.tf32),
        gemm_conv_(conv_choice("UNETCU_GEMM_CONV", "GEMM convolutions")),
        side_count_(side_stream_count()),
        prioritised_(stream_priority_switch().get()) {
    int device = 0;
    UNETCU_CUDA_CHECK(cudaGetDevice(&device));
    cudaDeviceProp prop;
    UNETCU_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    if (prioritised_) {
      int least = 0, greatest = 0;
      UNETCU_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
      UNETCU_CUDA_CHECK(cudaStreamCreateWithPriority(&compute_, cudaStreamNonBlocking, greatest));
    } else {
      UNETCU_CUDA_CHECK(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking));
    }
    UNETCU_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
    for (int i = 0; i < side_count_; ++i) {
      SideStream& side = sides_[i];
      UNETCU_CUDA_CHECK(cudaStreamCreateWithFlags(&side.stream, cudaStreamNonBlocking));
      for (cudaEvent_t* e : {&side.fork, &side.join, &side.optimizer_wait})
        UNETCU_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
    }
    UNETCU_CUDA_CHECK(cudaStreamCreateWithFlags(&optimizer_, cudaStreamNonBlocking));
    // The weight gradients' and Adam's kernels are launched unchained (unless UNETCU_SIDE_PDL=1):
    // early-placed blocks of theirs would hold SMs the compute stream's next kernel waits for
    // (kernels/cuda/chaining.h).
    for (int i = 0; i < side_count_; ++i) set_side_stream(sides_[i].stream, true);
    set_side_stream(optimizer_, true);
    for (cudaEvent_t* e : {&optimizer_fork_, &optimizer_join_})
      UNETCU_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
    UNETCU_CUDA_CHECK(cudaEventCreateWithFlags(&compute_mark_, cudaEventDisableTiming));
    UNETCU_CUDA_CHECK(cudaEventCreateWithFlags(&direct_copied_, cudaEventDisableTiming));
    for (Staging& s : staging_)
      UNETCU_CUDA_CHECK(cudaEventCreateWithFlags(&s.copied, cudaEventDisableTiming));
    adam_ = static_cast<AdamDeviceState*>(alloc(sizeof(AdamDeviceState)));
    set_adam(AdamConfig{}, 0);

    std::ostringstream os;
    os << "cuda: " << prop.name << " (sm_" << prop.major << prop.minor << ", "
       << (prop.totalGlobalMem >> 20) << " MiB), ";
#if defined(UNETCU_SIMT)
    os << "kernels emulated on the CPU, convolutions on the CPU reference";
#else
    // A setting the runner refuses (UNETCU_CUDNN_CANDIDATES) is the user's error, not ours.
    try {
      conv_ = std::make_unique<cudnn::ConvRunner>(compute_, cudnn::ConvOptions{opt.tf32});
      side_conv_ = std::make_unique<cudnn::ConvRunner>(sides_[0].stream,
                                                       cudnn::ConvOptions{opt.tf32});
    } catch (const cudnn::CudnnError& e) {
      fail(e.what());
    }
    if (gemm_conv_ != ConvChoice::off) {
      try {
        gemm_ = std::make_unique<cudnn::GemmRunner>(opt.tf32);
      } catch (const cudnn::CublasError& e) {
        fail(e.what(), " (UNETCU_GEMM_CONV=0 runs without cuBLAS)");
      }
    }
    os << cudnn::version() << ", TF32 " << (opt.tf32 ? "on" : "off") << ", "
       << conv_->settings();
#endif
    os << ", direct convolutions " << conv_choice_name(direct_conv_)
       << ", GEMM convolutions " << conv_choice_name(gemm_conv_);
#if !defined(UNETCU_SIMT)
    if (gemm_ && !gemm_->settings().empty()) os << " (" << gemm_->settings() << ")";
#endif
    description_ = os.str();
  }

  // No exceptions from here: errors at teardown have nowhere useful to go.
  ~CudaBackend() override {
    abort_capture();
    (void)cudaStreamSynchronize(copy_);
    for (int i = 0; i < side_count_; ++i) (void)cudaStreamSynchronize(sides_[i].stream);
    (void)cudaStreamSynchronize(optimizer_);
    (void)cudaStreamSynchronize(compute_);
#if !defined(UNETCU_SIMT)
    conv_.reset();
    side_conv_.reset();
    gemm_.reset();
#endif
    for (GraphEntry& g : graphs_) {
      if (!g.exec) continue;  // released
      (void)cudaGraphExecDestroy(g.exec);
      (void)cudaGraphDestroy(g.graph);
    }
    for (void* p : retired_) (void)cudaFree(p);
    if (main_ws_.ptr) (void)cudaFree(main_ws_.ptr);
    for (int i = 0; i < side_count_; ++i)
      if (sides_[i].ws.ptr) (void)cudaFree(sides_[i].ws.ptr);
    (void)cudaFree(adam_);
    for (cudaEvent_t e : markers_) (void)cudaEventDestroy(e);
    for (Staging& s : staging_) {
      if (s.host) (void)cudaFreeHost(s.host);
      (void)cudaEventDestroy(s.copied);
    }
    (void)cudaEventDestroy(compute_mark_);
    (void)cudaEventDestroy(direct_copied_);
    for (cudaEvent_t e : {optimizer_fork_, optimizer_join_}) (void)cudaEventDestroy(e);
    for (int i = 0; i < side_count_; ++i) {
      for (cudaEvent_t e : {sides_[i].fork, sides_[i].join, sides_[i].optimizer_wait})
        (void)cudaEventDestroy(e);
      set_side_stream(sides_[i].stream, false);
      (void)cudaStreamDestroy(sides_[i].stream);
    }
    set_side_stream(optimizer_, false);
    (void)cudaStreamDestroy(optimizer_);
    (void)cudaStreamDestroy(copy_);
    (void)cudaStreamDestroy(compute_);
    (void)cudaGetLastError();
  }

  DeviceKind kind() const override { return DeviceKind::cuda; }
  // The schedule is read when asked: tests switch it after construction.
  std::string describe() const override {
    std::ostringstream os;
    os << description_ << ", weight gradients on " << side_count_ << " stream(s) joined "
       << (late_join_switch().get() ? "once a backward pass" : "after each convolution")
       << ", Adam " << (early_adam_switch().get() ? "in parts beside the backward pass"
                                                  : "after it");
    if (prioritised_) os << ", compute stream at the greatest priority";
    if (side_stream_chaining_switch().get()) os << ", side-stream launches chained";
    // The opt-in kernel paths, read as the kernels read them (at each call).
    if (cuda::batchnorm_pass_last_first()) os << ", BatchNorm passes last rows first";
    if (cuda::path_timing()) os << ", head paths timed per shape";
    return os.str();
  }
  // The convolutions' choices, then our kernels' timed paths (kernels/path_timing.h).
  std::string choices() const override {
#if defined(UNETCU_SIMT)
    return cuda::path_timing_report();
#else
    return conv_->report() + side_conv_->report() + (gemm_ ? gemm_->report() : std::string()) +
           cuda::path_timing_report();
#endif
  }

  // ---- memory ------------------------------------------------------------------------------

  void* alloc(size_t bytes) override {
    not_capturing("alloc");
    void* p = nullptr;
    // cudaMalloc aligns to 256 bytes, as the Backend contract asks.
    UNETCU_CUDA_CHECK_ALLOC(cudaMalloc(&p, bytes > 0 ? bytes : 1), bytes);
    return p;
  }
  void release(void* ptr) override {
    if (ptr) (void)cudaFree(ptr);  // called from destructors: nothing to report to
  }
  void zero(void* dst, size_t bytes) override {
    UNETCU_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, compute_));
    after_async("cudaMemsetAsync");
  }
  // Pageable host memory: the copy is ordered on the compute stream and finished on return,
  // so the caller may reuse its buffer.
  void upload(void* dst, const void* src, size_t bytes) override {
    not_capturing("upload");
    UNETCU_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, compute_));
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(compute_));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    not_capturing("download");
    UNETCU_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, compute_));
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(compute_));
  }
  void synchronize() override {
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(copy_));
    for (int i = 0; i < side_count_; ++i) UNETCU_CUDA_CHECK(cudaStreamSynchronize(sides_[i].stream));
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(optimizer_));
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(compute_));
  }

  void* alloc_host(size_t bytes) override {
    not_capturing("alloc_host");
    void* p = nullptr;
    UNETCU_CUDA_CHECK_ALLOC(cudaHostAlloc(&p, bytes > 0 ? bytes : 1, cudaHostAllocDefault), bytes);
    return p;
  }
  void release_host(void* ptr) override {
    if (ptr) (void)cudaFreeHost(ptr);  // called from destructors: nothing to report to
  }
  void download_async(void* host_dst, const void* src, size_t bytes) override {
    not_capturing("download_async");
    UNETCU_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, compute_));
    after_async("cudaMemcpyAsync (device to host)");
  }

  int create_marker() override {
    not_capturing("create_marker");
    cudaEvent_t e = nullptr;
    UNETCU_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    markers_.push_back(e);
    return int(markers_.size()) - 1;
  }
  void record_marker(int id) override {
    not_capturing("record_marker");
    UNETCU_CUDA_CHECK(cudaEventRecord(marker(id), compute_));
  }
  bool marker_reached(int id) override {
    const cudaError_t status = cudaEventQuery(marker(id));
    if (status == cudaErrorNotReady) {
      (void)cudaGetLastError();  // "not ready" is an answer, not an error to keep
      return false;
    }
    UNETCU_CUDA_CHECK(status);
    return true;
  }
  void wait_marker(int id) override { UNETCU_CUDA_CHECK(cudaEventSynchronize(marker(id))); }

  void upload_batch(const HostToDevice* parts, int count, bool pinned_src) override {
    not_capturing("upload_batch");
    // Pinned sources are copied from directly (the caller keeps them until the step is done);
    // others are staged through a pinned slot first.
    Staging* slot = nullptr;
    if (!pinned_src) {
      slot = &staging_[next_staging_];
      next_staging_ = (next_staging_ + 1) % kStagingSlots;
      // This pinned buffer was last used two batches ago: its copies must be done before it is
      // refilled. The other slot's copies may still be in flight (double buffering).
      if (slot->used) UNETCU_CUDA_CHECK(cudaEventSynchronize(slot->copied));
      size_t total = 0;
      for (int i = 0; i < count; ++i) total += round_up_256(parts[i].bytes);
      if (total > slot->capacity) {
        if (slot->host) UNETCU_CUDA_CHECK(cudaFreeHost(slot->host));
        slot->host = nullptr;
        slot->capacity = 0;
        UNETCU_CUDA_CHECK_ALLOC(cudaMallocHost(&slot->host, total), total);
        slot->capacity = total;
      }
    }
    order_after(copy_, compute_, compute_mark_);
    size_t offset = 0;
    for (int i = 0; i < count; ++i) {
      const void* src = parts[i].src;
      if (slot) {
        unsigned char* staged = static_cast<unsigned char*>(slot->host) + offset;
        std::memcpy(staged, parts[i].src, parts[i].bytes);
        src = staged;
        offset += round_up_256(parts[i].bytes);
      }
      UNETCU_CUDA_CHECK(cudaMemcpyAsync(parts[i].dst, src, parts[i].bytes,
                                        cudaMemcpyHostToDevice, copy_));
    }
    cudaEvent_t copied = slot ? slot->copied : direct_copied_;
    order_after(compute_, copy_, copied);
    if (slot) slot->used = true;
    if (sync_every_launch()) UNETCU_CUDA_CHECK(cudaStreamSynchronize(copy_));
  }

  // ---- ops ---------------------------------------------------------------------------------

  void normalize_input(float* x, const uint8_t* img, int64_t pixels,
                       const NormalizeParams& prm) override {
    cuda::normalize_input(x, img, pixels, prm, compute_);
  }

  // One-output-channel convolutions (the segmentation head) run hand-written kernels in both
  // builds (kernels/cuda/conv_narrow.cu); the others cuDNN natively, the reference emulated,
  // except where a direct kernel or the GEMM and gather apply, as UNETCU_DIRECT_CONV and
  // UNETCU_GEMM_CONV say (timed against cuDNN's choice through a ConvRunner::Rival when that
  // choice is made; one rival at most, the direct kernel where both apply).
  void conv_forward(float* y, const float* x, const float* wt, const float* bias,
                    const ConvShape& sh) override {
    if (cuda::conv2d_narrow_applies(sh)) {
      cuda::conv2d_narrow_forward(y, x, wt, bias, sh, compute_);
      return;
    }
    const cuda::DirectKernel kind = direct_conv_ == ConvChoice::off
                                        ? cuda::DirectKernel::none
                                        : cuda::direct_forward_kernel(sh, x, y, tf32_);
    const bool direct = kind != cuda::DirectKernel::none;
    const bool gemm = !direct && gemm_conv_ != ConvChoice::off && cuda::conv2d_gemm_applies(sh);
    const ConvChoice choice = direct ? direct_conv_ : gemm ? gemm_conv_ : ConvChoice::off;
#if defined(UNETCU_SIMT)
    if (choice == ConvChoice::off) {
      host_work(HostConv{HostConv::Kind::forward, y, x, wt, bias, sh, GradMode::overwrite},
                compute_);
      return;
    }
#else
    if (choice != ConvChoice::always) {
      Rival rival;
      if (direct)
        rival = rival_of(cuda::direct_kernel_name(kind), 0,
                         [kind, x, wt, sh](float* out, void*, cudaStream_t stream, GradMode) {
                           cuda::direct_forward(kind, out, x, wt, sh, stream);
                         });
      if (gemm)
        rival = rival_of("GEMM + gather", conv2d_col_bytes(sh),
                         [this, x, wt, sh](float* out, void* ws, cudaStream_t stream,
                                           GradMode) {
                           gemm_forward(out, x, wt, sh, static_cast<float*>(ws), stream);
                         });
      const size_t bytes =
          conv_->prepare_forward(sh, x, wt, choice != ConvChoice::off ? &rival : nullptr);
      if (choice == ConvChoice::off || !conv_->rival_serves_forward(sh)) {
        const Workspace ws = sized(main_ws_, bytes);
        conv_->forward(y, x, wt, sh, ws.ptr, ws.bytes);
        after_async("cuDNN convolution forward");
        if (bias) cuda::conv2d_add_bias(y, bias, sh, compute_);
        return;
      }
    }
#endif
    if (gemm) {
      gemm_forward(y, x, wt, sh, static_cast<float*>(scratch(conv2d_col_bytes(sh))), compute_);
    } else {
      cuda::direct_forward(kind, y, x, wt, sh, compute_);
    }
    if (bias) cuda::conv2d_add_bias(y, bias, sh, compute_);
  }
  // y = conv(x, wt) as col = im2col(x), then the GEMM of wt and col; `col` holds
  // conv2d_col_bytes(sh).
  void gemm_forward(float* y, const float* x, const float* wt, const ConvShape& sh, float* col,
                    cudaStream_t stream) {
    cuda::conv2d_im2col(col, x, sh, stream);
    run_gemm(conv2d_forward_gemm_dims(sh), wt, col, y, stream);
  }
  void conv_backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                          GradMode mode) override {
    if (cuda::conv2d_narrow_applies(sh)) {
      cuda::conv2d_narrow_backward_data(dx, dy, wt, sh, mode, compute_);
      return;
    }
    const cuda::DirectKernel kind = direct_conv_ == ConvChoice::off
                                        ? cuda::DirectKernel::none
                                        : cuda::direct_backward_data_kernel(sh, dy, dx, tf32_);
    const bool direct = kind != cuda::DirectKernel::none;
    const bool gemm = !direct && gemm_conv_ != ConvChoice::off && cuda::conv2d_gemm_applies(sh);
    const ConvChoice choice = direct ? direct_conv_ : gemm ? gemm_conv_ : ConvChoice::off;
#if defined(UNETCU_SIMT)
    if (choice == ConvChoice::off) {
      host_work(HostConv{HostConv::Kind::backward_data, dx, dy, wt, nullptr, sh, mode}, compute_);
      return;
    }
#else
    if (choice != ConvChoice::always) {
      Rival rival;
      if (direct)
        rival = rival_of(cuda::direct_kernel_name(kind), 0,
                         [kind, dy, wt, sh](float* out, void*, cudaStream_t stream,
                                            GradMode m) {
                           cuda::direct_backward_data(kind, out, dy, wt, sh, m, stream);
                         });
      if (gemm)
        rival = rival_of("GEMM + gather", conv2d_col_bytes(sh),
                         [this, dy, wt, sh](float* out, void* ws, cudaStream_t stream,
                                            GradMode m) {
                           gemm_backward_data(out, dy, wt, sh, m, static_cast<float*>(ws),
                                              stream);
                         });
      const size_t bytes = conv_->prepare_backward_data(
          sh, dy, wt, choice != ConvChoice::off ? &rival : nullptr);
      if (choice == ConvChoice::off || !conv_->rival_serves_backward_data(sh)) {
        const Workspace ws = sized(main_ws_, bytes);
        conv_->backward_data(dx, dy, wt, sh, mode, ws.ptr, ws.bytes);
        after_async("cuDNN convolution backward data");
        return;
      }
    }
#endif
    if (gemm) {
      gemm_backward_data(dx, dy, wt, sh, mode, static_cast<float*>(scratch(conv2d_col_bytes(sh))),
                         compute_);
      return;
    }
    cuda::direct_backward_data(kind, dx, dy, wt, sh, mode, compute_);
  }
  // dx (+)= conv_transpose(dy, wt) as col = the GEMM of wt and dy, then the gather; `col`
  // holds conv2d_col_bytes(sh).
  void gemm_backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                          GradMode mode, float* col, cudaStream_t stream) {
    run_gemm(conv2d_backward_data_gemm_dims(sh), wt, dy, col, stream);
    cuda::conv2d_col2im(dx, col, sh, mode, stream);
  }
  // C = op(A) * B on `stream`: cuBLAS natively, BLAS as host work emulated.
  void run_gemm(const GemmDims& dims, const float* a, const float* b, float* c,
                cudaStream_t stream) {
#if defined(UNETCU_SIMT)
    host_work(HostGemm{dims, a, b, c}, stream);
#else
    gemm_->run(dims, a, b, c, stream);
    after_async("cuBLAS GEMM of a convolution", stream);
#endif
  }
  void conv_backward_filter(float* dwt, const float* dy, const float* x, const ConvShape& sh,
                            GradMode mode) override {
    const Lane lane = weight_lane();
    if (cuda::conv2d_narrow_applies(sh)) {
      cuda::conv2d_narrow_backward_filter(
          dwt, dy, x, sh, mode,
          grow(*lane.ws, cuda::conv2d_narrow_backward_filter_workspace_bytes(sh)), lane.stream);
      return;
    }
    // With TF32 convolutions the tensor-core weight gradient (kernels/cuda/conv_mma.cu) where
    // it applies, timed against cuDNN's choice like the forward's and data gradient's rivals
    // (unless forced or off). Else the fp32 direct weight gradient only when forced
    // (UNETCU_DIRECT_CONV=1), not timed against cuDNN: it runs on a side stream beside the
    // critical path, where its time alone is not its cost. On an H100 it was timed faster
    // than cuDNN's choice at both 128x128 shapes (145 against 209 us, 90 against 98), and the
    // step ran 1.3% slower with it serving: its blocks (two per SM, 80 registers a thread, the
    // whole kernel long) leave no room on the SMs for the compute stream's kernels
    // (bench/RESULTS.md). The tensor-core one takes a fraction of cuDNN's time where it serves
    // (the eighth H100 run: 72 against 99 us at 16 -> 16, 126 against 194 at 32 -> 16), and
    // the step with them and the tensor-core forward and data gradients serving ran 2.3% faster
    // than without the direct kernels (UNETCU_DIRECT_CONV=0); the weight gradients' own share
    // of that is unmeasured.
    const cuda::DirectKernel kind = direct_conv_ == ConvChoice::off
                                        ? cuda::DirectKernel::none
                                        : cuda::direct_backward_filter_kernel(sh, dy, x, tf32_);
    const bool runs = kind == cuda::DirectKernel::tensor_cores ||
                      (kind == cuda::DirectKernel::fp32 && direct_conv_ == ConvChoice::always);
    const size_t direct_bytes = cuda::direct_backward_filter_workspace_bytes(kind, sh);
#if defined(UNETCU_SIMT)
    if (!runs) {  // the emulator never times (auto is off there)
      host_work(HostConv{HostConv::Kind::backward_filter, dwt, x, dy, nullptr, sh, mode},
                lane.stream);
      return;
    }
#else
    const bool timed =
        kind == cuda::DirectKernel::tensor_cores && direct_conv_ == ConvChoice::timed;
    if (!runs || timed) {
      // The rival's output is checked against cuDNN's, overwriting and accumulating.
      Rival rival;
      if (timed)
        rival = rival_of(cuda::direct_kernel_name(kind), direct_bytes,
                         [kind, sh, dy, x](float* out, void* ws, cudaStream_t stream,
                                           GradMode m) {
                           cuda::direct_backward_filter(kind, out, dy, x, sh, m, ws, stream);
                         });
      const size_t bytes =
          lane.conv->prepare_backward_filter(sh, dy, x, timed ? &rival : nullptr);
      if (!timed || !lane.conv->rival_serves_backward_filter(sh)) {
        const Workspace ws = sized(*lane.ws, bytes);
        lane.conv->backward_filter(dwt, dy, x, sh, mode, ws.ptr, ws.bytes);
        after_async("cuDNN convolution backward filter", lane.stream);
        return;
      }
    }
#endif
    cuda::direct_backward_filter(kind, dwt, dy, x, sh, mode, grow(*lane.ws, direct_bytes),
                                 lane.stream);
  }
  void conv_backward_bias(float* dbias, const float* dy, const ConvShape& sh,
                          GradMode mode) override {
    const Lane lane = weight_lane();
    cuda::conv2d_backward_bias(dbias, dy, sh, mode,
                               grow(*lane.ws, cuda::conv2d_backward_bias_workspace_bytes(sh)),
                               lane.stream);
  }

  // `later`'s next work runs after everything issued to `earlier` so far (through `event`).
  static void order_after(cudaStream_t later, cudaStream_t earlier, cudaEvent_t event) {
    UNETCU_CUDA_CHECK(cudaEventRecord(event, earlier));
    UNETCU_CUDA_CHECK(cudaStreamWaitEvent(later, event, 0));
  }
  void fork_weight_grads() override {
    // The first fork of a pass takes side stream 0; forking again while forked (late joins)
    // takes the next one in turn, which starts after everything issued so far.
    current_side_ = open_sides_ != 0 ? (current_side_ + 1) % side_count_ : 0;
    SideStream& side = sides_[current_side_];
    order_after(side.stream, compute_, side.fork);
    open_sides_ |= 1u << current_side_;
  }
  void join_weight_grads() override {
    if (open_sides_ == 0) fail("join_weight_grads without fork_weight_grads");
    for (int i = 0; i < side_count_; ++i)
      if (open_sides_ & (1u << i)) order_after(compute_, sides_[i].stream, sides_[i].join);
    open_sides_ = 0;
  }
  bool late_weight_grad_join() const override { return late_join_switch().get(); }
  int weight_grad_streams() const override { return side_count_; }

  void batchnorm_train_forward(float* y, float* save_mean, float* save_invstd,
                               float* running_mean, float* running_var, const float* x,
                               const float* gamma, const float* beta, const BatchNormShape& sh,
                               float momentum, float eps) override {
    cuda::batchnorm_train_forward(y, save_mean, save_invstd, running_mean, running_var, x, gamma,
                                  beta, sh, momentum, eps,
                                  scratch(cuda::batchnorm_workspace_bytes(sh)), compute_);
  }
  void batchnorm_eval_forward(float* y, const float* x, const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var,
                              const BatchNormShape& sh, float eps) override {
    cuda::batchnorm_eval_forward(y, x, gamma, beta, running_mean, running_var, sh, eps, compute_);
  }
  void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy,
                          const float* x, const float* gamma, const float* save_mean,
                          const float* save_invstd, const BatchNormShape& sh, GradMode dx_mode,
                          GradMode param_mode) override {
    cuda::batchnorm_backward(dx, dgamma, dbeta, dy, x, gamma, save_mean, save_invstd, sh, dx_mode,
                             param_mode, scratch(cuda::batchnorm_workspace_bytes(sh)), compute_);
  }

  // The fused kernels read x once and write y once where BatchNorm then ReLU would write and
  // re-read the activation in between (and add_relu a third tensor).
  bool fuses_batchnorm_relu() const override { return true; }
  bool fuses_upsample_concat() const override { return upsample_in_place_switch().get(); }
  size_t buffer_guard_bytes() const override { return buffer_guards_switch().get() ? 256 : 0; }
  void batchnorm_relu_train_forward(float* y, float* save_mean, float* save_invstd,
                                    float* running_mean, float* running_var, const float* x,
                                    const float* gamma, const float* beta,
                                    const BatchNormShape& sh, float momentum,
                                    float eps) override {
    cuda::batchnorm_relu_train_forward(y, save_mean, save_invstd, running_mean, running_var, x,
                                       gamma, beta, sh, momentum, eps,
                                       scratch(cuda::batchnorm_workspace_bytes(sh)), compute_);
  }
  void batchnorm_relu_eval_forward(float* y, const float* x, const float* gamma,
                                   const float* beta, const float* running_mean,
                                   const float* running_var, const BatchNormShape& sh,
                                   float eps) override {
    cuda::batchnorm_relu_eval_forward(y, x, gamma, beta, running_mean, running_var, sh, eps,
                                      compute_);
  }
  void batchnorm_relu_backward(float* dx, float* dgamma, float* dbeta, const float* dy,
                               const float* y, const float* x, const float* gamma,
                               const float* beta, const float* save_mean,
                               const float* save_invstd, const BatchNormShape& sh,
                               GradMode dx_mode, GradMode param_mode) override {
    cuda::batchnorm_relu_backward(dx, dgamma, dbeta, dy, y, x, gamma, beta, save_mean,
                                  save_invstd, sh, dx_mode, param_mode,
                                  scratch(cuda::batchnorm_workspace_bytes(sh)), compute_);
  }
  void batchnorm_add_relu_train_forward(float* y, float* save_mean, float* save_invstd,
                                        float* running_mean, float* running_var, const float* x,
                                        const float* residual, const float* gamma,
                                        const float* beta, const BatchNormShape& sh,
                                        float momentum, float eps) override {
    cuda::batchnorm_add_relu_train_forward(y, save_mean, save_invstd, running_mean, running_var,
                                           x, residual, gamma, beta, sh, momentum, eps,
                                           scratch(cuda::batchnorm_workspace_bytes(sh)),
                                           compute_);
  }
  void batchnorm_add_relu_eval_forward(float* y, const float* x, const float* residual,
                                       const float* gamma, const float* beta,
                                       const float* running_mean, const float* running_var,
                                       const BatchNormShape& sh, float eps) override {
    cuda::batchnorm_add_relu_eval_forward(y, x, residual, gamma, beta, running_mean, running_var,
                                          sh, eps, compute_);
  }
  void batchnorm_add_relu_backward(float* dx, float* dresidual, float* dgamma, float* dbeta,
                                   const float* dy, const float* y, const float* x,
                                   const float* gamma, const float* save_mean,
                                   const float* save_invstd, const BatchNormShape& sh,
                                   GradMode dx_mode, GradMode dresidual_mode,
                                   GradMode param_mode) override {
    cuda::batchnorm_add_relu_backward(dx, dresidual, dgamma, dbeta, dy, y, x, gamma, save_mean,
                                      save_invstd, sh, dx_mode, dresidual_mode, param_mode,
                                      scratch(cuda::batchnorm_workspace_bytes(sh)), compute_);
  }

  void relu_forward(float* y, const float* x, int64_t count) override {
    cuda::relu_forward(y, x, count, compute_);
  }
  void relu_backward(float* dx, const float* dy, const float* y, int64_t count,
                     GradMode mode) override {
    cuda::relu_backward(dx, dy, y, count, mode, compute_);
  }
  void add_relu_forward(float* y, const float* a, const float* b, int64_t count) override {
    cuda::add_relu_forward(y, a, b, count, compute_);
  }
  void maxpool_forward(float* y, int32_t* argmax, const float* x,
                       const MaxPoolShape& sh) override {
    cuda::maxpool_forward(y, argmax, x, sh, compute_);
  }
  void maxpool_backward(float* dx, const float* dy, const int32_t* argmax,
                        const MaxPoolShape& sh, GradMode mode) override {
    cuda::maxpool_backward(dx, dy, argmax, sh, mode, compute_);
  }
  void upsample2x_forward(float* y, const float* x, const UpsampleShape& sh) override {
    cuda::upsample2x_forward(y, x, sh, compute_);
  }
  void upsample2x_backward(float* dx, const float* dy, const UpsampleShape& sh,
                           GradMode mode) override {
    cuda::upsample2x_backward(dx, dy, sh, mode, compute_);
  }
  void concat_forward(float* y, const float* a, const float* b, const ConcatShape& sh) override {
    cuda::concat_forward(y, a, b, sh, compute_);
  }
  void concat_backward(float* da, float* db, const float* dy, const ConcatShape& sh,
                       GradMode mode_a, GradMode mode_b) override {
    cuda::concat_backward(da, db, dy, sh, mode_a, mode_b, compute_);
  }

  void dice_loss_forward(float* loss, DiceSums* sums, const float* logits, const uint8_t* target,
                         int64_t count) override {
    cuda::dice_loss_forward(loss, sums, logits, target, count,
                            scratch(cuda::dice_loss_workspace_bytes(count)), compute_);
  }
  void dice_loss_backward(float* dlogits, const float* logits, const uint8_t* target,
                          const DiceSums* sums, int64_t count) override {
    cuda::dice_loss_backward(dlogits, logits, target, sums, count, 1.0f, GradMode::overwrite,
                             compute_);
  }
  void confusion_counts(ConfusionCounts* counts, const float* logits, const uint8_t* target,
                        int n_images, int64_t pixels) override {
    cuda::confusion_counts(counts, logits, target, n_images, pixels,
                           scratch(cuda::confusion_counts_workspace_bytes(n_images, pixels)),
                           compute_);
  }

  void loss_and_counts(float* loss, DiceSums* sums, ConfusionCounts* counts, const float* logits,
                       const uint8_t* target, int n_images, int64_t pixels) override {
    if (!cuda::loss_and_counts_applies(logits, target, n_images, pixels)) {
      Backend::loss_and_counts(loss, sums, counts, logits, target, n_images, pixels);
      return;
    }
    void* workspace = scratch(cuda::loss_and_counts_workspace_bytes(n_images, pixels));
    cuda::loss_and_counts(loss, sums, counts, logits, target, n_images, pixels, workspace,
                          compute_);
  }

  void set_adam(const AdamConfig& cfg, int64_t t) override {
    not_capturing("set_adam");
    adam_cfg_ = cfg;
    AdamDeviceState state;
    state.t = t;
    state.lr = cfg.lr;
    // The scalars are recomputed from t and lr by every step; only t and lr are uploaded.
    upload(adam_, &state, offsetof(AdamDeviceState, scalars));
  }
  void adam_advance() override {
    cuda::adam_advance_step(&adam_->t, &adam_->scalars, adam_cfg_, &adam_->lr, compute_);
  }
  void adam_update(float* param, float* exp_avg, float* exp_avg_sq, const float* grad,
                   int64_t count) override {
    cuda::adam_step(param, exp_avg, exp_avg_sq, grad, count, &adam_->scalars,
                    optimizer_open_ ? optimizer_ : compute_);
  }
  bool early_adam() const override { return early_adam_switch().get(); }
  void fork_optimizer() override {
    // The optimizer stream waits for the compute stream and, when they are forked, for the
    // weight gradients: the parts it updates take gradients from both.
    order_after(optimizer_, compute_, optimizer_fork_);
    for (int i = 0; i < side_count_; ++i)
      if (open_sides_ & (1u << i))
        order_after(optimizer_, sides_[i].stream, sides_[i].optimizer_wait);
    optimizer_open_ = true;
  }
  void join_optimizer() override {
    if (!optimizer_open_) fail("join_optimizer without fork_optimizer");
    order_after(compute_, optimizer_, optimizer_join_);
    optimizer_open_ = false;
  }

  // ---- CUDA graphs -------------------------------------------------------------------------

  bool supports_graphs() const override { return true; }

  void begin_capture() override {
    if (capturing_) fail("begin_capture: a capture is already under way");
    // Thread-local mode: a loader thread using CUDA meanwhile does not invalidate the capture,
    // while this thread's forbidden calls still do.
    UNETCU_CUDA_CHECK(cudaStreamBeginCapture(compute_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
  }

  int end_capture() override {
    if (!capturing_) fail("end_capture without begin_capture");
    capturing_ = false;
    GraphEntry entry;
    UNETCU_CUDA_CHECK(cudaStreamEndCapture(compute_, &entry.graph));
    const cudaError_t error = cudaGraphInstantiate(
        &entry.exec, entry.graph,
        prioritised_ ? cudaGraphInstantiateFlagUseNodePriority : 0);
    if (error != cudaSuccess) {
      (void)cudaGraphDestroy(entry.graph);
      cuda_fail(error, "cudaGraphInstantiate", __FILE__, __LINE__);
    }
#if defined(UNETCU_SIMT)
    entry.host_work = std::move(captured_work_);
    captured_work_.clear();
#endif
    graphs_.push_back(std::move(entry));
    return int(graphs_.size()) - 1;
  }

  void abort_capture() override {
    if (!capturing_) return;
    capturing_ = false;
    open_sides_ = 0;  // a step that failed between fork and join
    optimizer_open_ = false;  // or between fork_optimizer and join_optimizer
    cudaGraph_t graph = nullptr;
    if (cudaStreamEndCapture(compute_, &graph) == cudaSuccess && graph != nullptr)
      (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
#if defined(UNETCU_SIMT)
    captured_work_.clear();
#endif
  }

  void launch_graph(int id) override {
    not_capturing("launch_graph");
    if (id < 0 || id >= int(graphs_.size())) fail("launch_graph: no graph ", id);
    if (!graphs_[size_t(id)].exec) fail("launch_graph: graph ", id, " was released");
    UNETCU_CUDA_CHECK(cudaGraphLaunch(graphs_[size_t(id)].exec, compute_));
    after_async("cudaGraphLaunch");
  }

  void release_graph(int id) override {
    not_capturing("release_graph");
    if (id < 0 || id >= int(graphs_.size())) fail("release_graph: no graph ", id);
    GraphEntry& g = graphs_[size_t(id)];
    if (!g.exec) return;
    // A replay of it may still be running.
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(compute_));
    UNETCU_CUDA_CHECK(cudaGraphExecDestroy(g.exec));
    UNETCU_CUDA_CHECK(cudaGraphDestroy(g.graph));
    g = GraphEntry{};
  }

  // ---- the step's schedule (ModelSession's step tuning) -------------------------------------

  std::vector<std::string> schedule_variants() override {
    if (!variants_listed_) list_variants();
    std::vector<std::string> names;
    for (const ScheduleVariant& v : variants_) names.push_back(v.name);
    return names;
  }
  void use_schedule_variant(int index) override {
    if (!variants_listed_) list_variants();
    if (index < -1 || index >= int(variants_.size()))
      fail("use_schedule_variant: no variant ", index, " (", variants_.size(), " listed)");
    for (const ScheduleVariant& v : variants_) v.apply(false);
    if (index >= 0) variants_[size_t(index)].apply(true);
  }
  bool timings_measure_device() const override {
#if defined(UNETCU_SIMT)
    return false;
#else
    return true;
#endif
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    UNETCU_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, compute_));
    after_async("cudaMemcpyAsync");
  }

 private:
  static constexpr int kStagingSlots = 2;
  struct Staging {
    void* host = nullptr;  // pinned
    size_t capacity = 0;
    cudaEvent_t copied = nullptr;  // recorded on the copy stream after this slot's copies
    bool used = false;
  };

  struct GraphEntry {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;  // null once released
#if defined(UNETCU_SIMT)
    std::vector<std::unique_ptr<HostWork>> host_work;  // the host nodes' work
#endif
  };

  // A schedule variant: apply(true) makes its change to the process's settings, apply(false)
  // puts back what they were when the variants were listed.
  struct ScheduleVariant {
    std::string name;
    std::function<void(bool)> apply;
  };
  // The settings of the step's schedule whose best value depends on the card and that the
  // environment left unset, each flipped from its value now. Measured on the H100 and H200 so
  // far: chained launches +3-4%, Adam beside the backward pass +1.6% (bench/RESULTS.md); the
  // side streams' chaining and the tensor-core weight gradient's waves not yet. Left out: the
  // late join (+9.6%) and the stream priority, fixed when the backend's streams are made.
  void list_variants() {
    variants_listed_ = true;
    // The switches are process-wide statics: the variants may keep references to them.
    auto flip_switch = [&](EnvSwitch& sw, const char* on_name, const char* off_name) {
      if (sw.pinned()) return;
      const bool was = sw.get();
      variants_.push_back({was ? off_name : on_name,
                           [&sw, was](bool flip) { sw.set(flip ? !was : was); }});
    };
    flip_switch(side_stream_chaining_switch(), "side streams chained", "side streams unchained");
    flip_switch(chained_launch_switch(), "chained launches", "chained launches off");
    flip_switch(early_adam_switch(), "Adam beside the backward pass",
                "Adam after the backward pass");
    // The waves matter only where the tensor-core weight gradient runs (TF32, direct kernels
    // allowed).
    if (tf32_ && direct_conv_ != ConvChoice::off &&
        read_env_int("UNETCU_MMA_WGRAD_WAVES", 1, 16).state == EnvInt::unset) {
      const int was = cuda::conv2d_mma_filter_waves_setting();
      const int other = was == 1 ? 4 : 1;
      variants_.push_back({"tensor-core weight gradients in " + std::to_string(other) +
                               (other == 1 ? " wave" : " waves"),
                           [was, other](bool flip) {
                             cuda::set_conv2d_mma_filter_waves(flip ? other : was);
                           }});
    }
  }

  cudaEvent_t marker(int id) const {
    if (id < 0 || id >= int(markers_.size())) fail("no marker ", id);
    return markers_[size_t(id)];
  }

  void not_capturing(const char* what) const {
    if (capturing_)
      fail(what, " was called while a CUDA graph is being captured (a bug in the caller: "
                 "only stream-ordered device work may be captured)");
  }

  // UNETCU_SYNC=1: waits for the stream so a fault is reported here, at its cause.
  void after_async(const char* what, cudaStream_t stream = nullptr) {
    if (!sync_every_launch() || capturing_) return;
    if (!stream) stream = compute_;
    // Also inside a capture that is not ours: cuDNN's runner times a rival in a graph.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) == cudaSuccess &&
        capture != cudaStreamCaptureStatusNone)
      return;
    const cudaError_t error = cudaStreamSynchronize(stream);
    if (error != cudaSuccess)
      cuda_fail(error, what, __FILE__, __LINE__, "found by UNETCU_SYNC=1 right after this call");
  }

  // A stream's workspace (see the file comment) and what runs the weight gradients: the current
  // side stream between fork_weight_grads() and join_weight_grads(), else the compute stream.
  struct Workspace {
    void* ptr = nullptr;
    size_t bytes = 0;
  };
  struct Lane {
    cudaStream_t stream;
    Workspace* ws;
#if !defined(UNETCU_SIMT)
    cudnn::ConvRunner* conv;
#endif
  };
  Lane weight_lane() {
    SideStream& side = sides_[current_side_];
#if defined(UNETCU_SIMT)
    return open_sides_ != 0 ? Lane{side.stream, &side.ws} : Lane{compute_, &main_ws_};
#else
    if (open_sides_ == 0) return Lane{compute_, &main_ws_, conv_.get()};
    // One cuDNN handle (and algorithm cache) serves every side stream, pointed at the one in
    // use before each call, as PyTorch points its per-thread handle at the current stream.
    side_conv_->set_stream(side.stream);
    return Lane{side.stream, &side.ws, side_conv_.get()};
#endif
  }

  // The compute stream's workspace, at least `bytes` long.
  void* scratch(size_t bytes) { return grow(main_ws_, bytes); }

  // `ws` grown to at least `bytes`, pointer and size together, for calls that take both: reading
  // ws.bytes in the same argument list as grow() may read it before the growth (the order is
  // unspecified), which once handed cuDNN the old size.
  Workspace sized(Workspace& ws, size_t bytes) {
    grow(ws, bytes);
    return ws;
  }

  // `ws` grown to at least `bytes`: only outside a capture (the eager step sizes it). The old
  // buffer is freed once the compute and side streams are idle, or kept while a captured graph
  // may use it.
  void* grow(Workspace& ws, size_t bytes) {
    if (bytes <= ws.bytes) return ws.ptr;
    if (capturing_) {
      std::ostringstream os;
      os << "a workspace of " << bytes << " bytes is needed while a CUDA graph is being "
         << "captured, but only " << ws.bytes << " were sized by the eager step (a bug: "
         << "the captured step must repeat an eager one)";
      fail(os.str());
    }
    const size_t grown = (bytes + (size_t(1) << 20) - 1) & ~((size_t(1) << 20) - 1);
    void* fresh = alloc(grown);
    if (ws.ptr) {
      if (graphs_.empty()) {
        for (int i = 0; i < side_count_; ++i)
          UNETCU_CUDA_CHECK(cudaStreamSynchronize(sides_[i].stream));
        UNETCU_CUDA_CHECK(cudaStreamSynchronize(compute_));
        UNETCU_CUDA_CHECK(cudaFree(ws.ptr));
      } else {
        retired_.push_back(ws.ptr);
      }
    }
    ws.ptr = fresh;
    ws.bytes = grown;
    return ws.ptr;
  }

#if defined(UNETCU_SIMT)
  // `fn` as host work on `stream` (HostWork).
  void host_work(std::function<void()> fn, cudaStream_t stream) {
    if (!capturing_) {
      // The function owns its work until it has run.
      UNETCU_CUDA_CHECK(
          cudaLaunchHostFunc(stream, &HostWork::run_once, new HostWork{std::move(fn)}));
      return;
    }
    captured_work_.push_back(std::make_unique<HostWork>(HostWork{std::move(fn)}));
    UNETCU_CUDA_CHECK(cudaLaunchHostFunc(stream, &HostWork::run, captured_work_.back().get()));
  }
  std::vector<std::unique_ptr<HostWork>> captured_work_;
#else
  using Rival = cudnn::ConvRunner::Rival;
  // A kernel of ours as a rival of cuDNN's choice: run(out, workspace, stream, mode), "direct
  // kernel" or "GEMM + gather" (whose workspace is the column matrix, conv2d_col_bytes).
  static Rival rival_of(const char* name, size_t workspace_bytes,
                        std::function<void(float*, void*, cudaStream_t, GradMode)> run) {
    Rival r;
    r.name = name;
    r.workspace_bytes = workspace_bytes;
    r.run = std::move(run);
    return r;
  }
  // One cuDNN handle for the compute stream, one for the side streams (Lane).
  std::unique_ptr<cudnn::ConvRunner> conv_, side_conv_;
  // The GEMM convolutions' cuBLAS handle (compute stream; made unless UNETCU_GEMM_CONV=0).
  std::unique_ptr<cudnn::GemmRunner> gemm_;
#endif

  std::string description_;
  ConvChoice direct_conv_;
  bool tf32_;  // TF32 convolutions: the direct kernels are the tensor-core ones where they apply
  ConvChoice gemm_conv_;
  cudaStream_t compute_ = nullptr, copy_ = nullptr;
  cudaEvent_t compute_mark_ = nullptr;
  cudaEvent_t direct_copied_ = nullptr;  // after a pinned_src upload's copies
  Staging staging_[kStagingSlots];
  int next_staging_ = 0;
  // The weight gradients' streams (see fork_weight_grads), each with its workspace and the
  // events that fork it from the compute stream, join it back, and order the optimizer after it.
  struct SideStream {
    cudaStream_t stream = nullptr;
    cudaEvent_t fork = nullptr, join = nullptr, optimizer_wait = nullptr;
    Workspace ws;
  };
  SideStream sides_[kMaxSideStreams];
  int side_count_ = 1;
  bool prioritised_ = false;  // the compute stream first (unless UNETCU_STREAM_PRIORITY=0)
  int current_side_ = 0;      // the side stream the forked weight gradients go to
  unsigned open_sides_ = 0;   // bit i: side stream i forked and not joined yet
  cudaStream_t optimizer_ = nullptr;  // early Adam's stream (see fork_optimizer)
  cudaEvent_t optimizer_fork_ = nullptr, optimizer_join_ = nullptr;
  bool optimizer_open_ = false;
  Workspace main_ws_;
  std::vector<void*> retired_;
  AdamDeviceState* adam_ = nullptr;
  AdamConfig adam_cfg_;
  bool capturing_ = false;
  std::vector<GraphEntry> graphs_;
  bool variants_listed_ = false;
  std::vector<ScheduleVariant> variants_;
  std::vector<cudaEvent_t> markers_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opt) {
  return std::make_unique<CudaBackend>(opt);
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: not an error for --device auto
    return 0;
  }
  return count;
}

}  // namespace unetcu
