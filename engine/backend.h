// engine/backend.h: the device interface the graph executor and the trainer run on.
//
// One Backend per device kind: CpuBackend (kernels/cpu) and CudaBackend (kernels/cuda +
// cuDNN natively, or kernels/cuda under the SIMT emulator with convolutions through the CPU
// reference). Every op takes device pointers and the kernel shape structs, in the kernels'
// argument order, and is asynchronous on CUDA (stream order); nothing here allocates except
// alloc(), which the memory plan calls once, before any step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/adam.h"
#include "kernels/batchnorm.h"
#include "kernels/concat.h"
#include "kernels/conv.h"
#include "kernels/loss.h"
#include "kernels/normalize.h"
#include "kernels/pool.h"
#include "kernels/upsample.h"

namespace unetcu {

enum class DeviceKind { cpu, cuda };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string describe() const = 0;
  // What the backend decided while running, for logs (CUDA: the cuDNN algorithm chosen for each
  // convolution shape); empty when there is nothing to tell.
  virtual std::string choices() const { return std::string(); }

  // Memory: device allocations (aligned to 256 bytes) and host<->device copies.
  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* ptr) = 0;
  virtual void zero(void* dst, size_t bytes) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void synchronize() = 0;
  // Bytes the executor leaves after each of its buffers and fills with NaNs that name the
  // guard (a multiple of 256; 0: none). Executor::check_guards() then finds a kernel that
  // wrote past its buffer into the next one, which a plan of adjacent buffers otherwise
  // hides; a read past it gets NaNs. The CUDA backend asks for them under the SIMT emulator
  // (and with UNETCU_BUFFER_GUARDS=1 on a GPU).
  virtual size_t buffer_guard_bytes() const { return 0; }

  // Host memory that the device copies to and from asynchronously (page-locked on CUDA): the
  // loader's batch ring and the step results live in it. The default, 256-byte aligned
  // ordinary memory, suits a backend whose copies are plain memcpy.
  virtual void* alloc_host(size_t bytes) {
    void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!p) fail("out of host memory allocating ", bytes, " bytes; try a smaller --batch-size");
    return p;
  }
  virtual void release_host(void* ptr) { std::free(ptr); }
  // A device -> host copy in stream order that does not wait: host_dst (from alloc_host) holds
  // the data once a marker recorded after this call is reached. The default copies at once.
  virtual void download_async(void* host_dst, const void* src, size_t bytes) {
    download(host_dst, src, bytes);
  }
  // Markers are points in the backend's stream of work, so the host can ask whether work it
  // issued has finished without waiting for everything (CUDA events). record_marker(id) places
  // marker id after everything issued so far; marker_reached(id) does not block; wait_marker(id)
  // does. A marker never recorded counts as reached. The defaults suit a synchronous backend.
  virtual int create_marker() { return 0; }
  virtual void record_marker(int /*id*/) {}
  virtual bool marker_reached(int /*id*/) { return true; }
  virtual void wait_marker(int /*id*/) {}

  // The per-step input copy: every part lands in device memory before the next op runs.
  // By default the host buffers may be reused as soon as this returns: CUDA stages the parts
  // through its own pinned, double-buffered host memory on a copy stream that the compute
  // stream waits for. With `pinned_src` the sources are alloc_host memory that the caller
  // leaves untouched until a marker recorded after the step is reached, and CUDA copies
  // straight from them (no staging copy). The default is plain uploads.
  struct HostToDevice {
    void* dst;
    const void* src;
    size_t bytes;
  };
  virtual void upload_batch(const HostToDevice* parts, int count, bool pinned_src = false) {
    (void)pinned_src;
    for (int i = 0; i < count; ++i) upload(parts[i].dst, parts[i].src, parts[i].bytes);
  }

  // Ops (see the kernel headers for the exact semantics).
  virtual void normalize_input(float* x, const uint8_t* img, int64_t pixels,
                               const NormalizeParams& prm) = 0;
  virtual void conv_forward(float* y, const float* x, const float* wt, const float* bias,
                            const ConvShape& sh) = 0;
  virtual void conv_backward_data(float* dx, const float* dy, const float* wt,
                                  const ConvShape& sh, GradMode mode) = 0;
  virtual void conv_backward_filter(float* dwt, const float* dy, const float* x,
                                    const ConvShape& sh, GradMode mode) = 0;
  virtual void conv_backward_bias(float* dbias, const float* dy, const ConvShape& sh,
                                  GradMode mode) = 0;
  virtual void batchnorm_train_forward(float* y, float* save_mean, float* save_invstd,
                                       float* running_mean, float* running_var, const float* x,
                                       const float* gamma, const float* beta,
                                       const BatchNormShape& sh, float momentum, float eps) = 0;
  virtual void batchnorm_eval_forward(float* y, const float* x, const float* gamma,
                                      const float* beta, const float* running_mean,
                                      const float* running_var, const BatchNormShape& sh,
                                      float eps) = 0;
  virtual void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy,
                                  const float* x, const float* gamma, const float* save_mean,
                                  const float* save_invstd, const BatchNormShape& sh,
                                  GradMode dx_mode, GradMode param_mode) = 0;
  // BatchNorm fused with the ReLU after it, y = relu(bn(x)), and with the end of a residual
  // block, y = relu(bn(x) + residual) (kernels/batchnorm.h, cuda::batchnorm_relu_* and
  // cuda::batchnorm_add_relu_*). A backend offers them when fusing saves it memory traffic; the
  // executor then uses them instead of the separate BatchNorm and ReLU ops. The backwards take
  // dy of the fused output and y itself (its mask y > 0); the BatchNorm + ReLU one also beta,
  // to form the same mask from x instead (kernels/batchnorm.h).
  virtual bool fuses_batchnorm_relu() const { return false; }
  virtual void batchnorm_relu_train_forward(float* /*y*/, float* /*save_mean*/,
                                            float* /*save_invstd*/, float* /*running_mean*/,
                                            float* /*running_var*/, const float* /*x*/,
                                            const float* /*gamma*/, const float* /*beta*/,
                                            const BatchNormShape& /*sh*/, float /*momentum*/,
                                            float /*eps*/) {
    no_fusion();
  }
  virtual void batchnorm_relu_eval_forward(float* /*y*/, const float* /*x*/,
                                           const float* /*gamma*/, const float* /*beta*/,
                                           const float* /*running_mean*/,
                                           const float* /*running_var*/,
                                           const BatchNormShape& /*sh*/, float /*eps*/) {
    no_fusion();
  }
  virtual void batchnorm_relu_backward(float* /*dx*/, float* /*dgamma*/, float* /*dbeta*/,
                                       const float* /*dy*/, const float* /*y*/,
                                       const float* /*x*/, const float* /*gamma*/,
                                       const float* /*beta*/, const float* /*save_mean*/,
                                       const float* /*save_invstd*/,
                                       const BatchNormShape& /*sh*/, GradMode /*dx_mode*/,
                                       GradMode /*param_mode*/) {
    no_fusion();
  }
  virtual void batchnorm_add_relu_train_forward(float* /*y*/, float* /*save_mean*/,
                                                float* /*save_invstd*/, float* /*running_mean*/,
                                                float* /*running_var*/, const float* /*x*/,
                                                const float* /*residual*/, const float* /*gamma*/,
                                                const float* /*beta*/,
                                                const BatchNormShape& /*sh*/,
                                                float /*momentum*/, float /*eps*/) {
    no_fusion();
  }
  virtual void batchnorm_add_relu_eval_forward(float* /*y*/, const float* /*x*/,
                                               const float* /*residual*/,
                                               const float* /*gamma*/, const float* /*beta*/,
                                               const float* /*running_mean*/,
                                               const float* /*running_var*/,
                                               const BatchNormShape& /*sh*/, float /*eps*/) {
    no_fusion();
  }
  virtual void batchnorm_add_relu_backward(float* /*dx*/, float* /*dresidual*/,
                                           float* /*dgamma*/, float* /*dbeta*/,
                                           const float* /*dy*/, const float* /*y*/,
                                           const float* /*x*/, const float* /*gamma*/,
                                           const float* /*save_mean*/,
                                           const float* /*save_invstd*/,
                                           const BatchNormShape& /*sh*/, GradMode /*dx_mode*/,
                                           GradMode /*dresidual_mode*/,
                                           GradMode /*param_mode*/) {
    no_fusion();
  }

  // The decoder's upsampling written straight into the first channels of the concatenation
  // that follows it (UpsampleShape::pitch; concat_forward with a null first input), and its
  // gradient read from there (concat_backward with a null da): one copy of the upsampled
  // tensor fewer in each direction. A backend offers it when that saves it time; its
  // upsample2x_* then see a pitch.
  virtual bool fuses_upsample_concat() const { return false; }

  // A convolution's weight (and bias) gradient feeds only the optimizer, so it may run beside
  // other ops. After fork_weight_grads() the backend may run conv_backward_filter and
  // conv_backward_bias concurrently with the other ops issued until join_weight_grads() (CUDA:
  // on a second stream); they see every op issued before the latest fork (a fork while forked
  // moves that point on), and after the join every later op waits for them. The caller keeps
  // the ops between a fork and the join from writing what the forked ops read or write, and
  // from reading what they write.
  virtual void fork_weight_grads() {}
  virtual void join_weight_grads() {}
  // Whether Executor::backward joins once, at the end of the pass, instead of after each
  // convolution: the weight gradients then also run beside the BatchNorm and other ops of the
  // layers below (CUDA: on unless UNETCU_LATE_JOIN=0).
  virtual bool late_weight_grad_join() const { return false; }
  // How many streams the forked weight gradients take in turn (CUDA: UNETCU_WGRAD_STREAMS,
  // default 3); with the late join, those on different streams may also run beside each other.
  virtual int weight_grad_streams() const { return 1; }

  virtual void relu_forward(float* y, const float* x, int64_t count) = 0;
  virtual void relu_backward(float* dx, const float* dy, const float* y, int64_t count,
                             GradMode mode) = 0;
  virtual void add_relu_forward(float* y, const float* a, const float* b, int64_t count) = 0;
  virtual void maxpool_forward(float* y, int32_t* argmax, const float* x,
                               const MaxPoolShape& sh) = 0;
  virtual void maxpool_backward(float* dx, const float* dy, const int32_t* argmax,
                                const MaxPoolShape& sh, GradMode mode) = 0;
  virtual void upsample2x_forward(float* y, const float* x, const UpsampleShape& sh) = 0;
  virtual void upsample2x_backward(float* dx, const float* dy, const UpsampleShape& sh,
                                   GradMode mode) = 0;
  virtual void concat_forward(float* y, const float* a, const float* b, const ConcatShape& sh) = 0;
  virtual void concat_backward(float* da, float* db, const float* dy, const ConcatShape& sh,
                               GradMode mode_a, GradMode mode_b) = 0;

  // Loss and metrics write device-resident results (loss: 1 float, sums: 1 DiceSums,
  // counts: n_images ConfusionCounts); the trainer downloads them when it needs them.
  virtual void dice_loss_forward(float* loss, DiceSums* sums, const float* logits,
                                 const uint8_t* target, int64_t count) = 0;
  virtual void dice_loss_backward(float* dlogits, const float* logits, const uint8_t* target,
                                  const DiceSums* sums, int64_t count) = 0;
  virtual void confusion_counts(ConfusionCounts* counts, const float* logits,
                                const uint8_t* target, int n_images, int64_t pixels) = 0;
  // Both of the above for one batch of n_images x pixels (ModelSession's call): a backend may
  // fuse them (CUDA: one pass over the logits where the images are small enough).
  virtual void loss_and_counts(float* loss, DiceSums* sums, ConfusionCounts* counts,
                               const float* logits, const uint8_t* target, int n_images,
                               int64_t pixels) {
    dice_loss_forward(loss, sums, logits, target, int64_t(n_images) * pixels);
    confusion_counts(counts, logits, target, n_images, pixels);
  }

  // Adam's configuration and step counter t (updates done so far) are held by the backend, on
  // the device for CUDA, so that a training step captured once as a CUDA graph reads the
  // current learning rate and t at every replay. Set them before the first step and whenever
  // they change (a resumed run, a learning-rate schedule), outside a capture. A captured step
  // keeps the betas and eps it was captured with; lr and t are read when it runs.
  virtual void set_adam(const AdamConfig& cfg, int64_t t) = 0;
  // t += 1, then one Adam update over the flat arenas with the stored configuration.
  void adam_step(float* param, float* exp_avg, float* exp_avg_sq, const float* grad,
                 int64_t count) {
    adam_advance();
    adam_update(param, exp_avg, exp_avg_sq, grad, count);
  }
  // The two halves, for an update issued in parts: t += 1 once a step, then adam_update over
  // disjoint ranges that together cover the arenas once, each with the t of the latest advance
  // (Adam is elementwise, so the parts give the whole update's values bit for bit).
  virtual void adam_advance() = 0;
  virtual void adam_update(float* param, float* exp_avg, float* exp_avg_sq, const float* grad,
                           int64_t count) = 0;
  // Early Adam (ModelSession): the parts of the update whose gradients are final may run beside
  // the rest of the backward pass. After fork_optimizer() the backend may run adam_update
  // concurrently with the ops issued later; the update sees every op issued before the latest
  // fork, on any stream (the forked weight gradients included), and after join_optimizer()
  // every later op waits for it. The caller keeps the later ops off the updated ranges.
  // CUDA: on a stream of its own, unless UNETCU_EARLY_ADAM=0.
  virtual bool early_adam() const { return false; }
  virtual void fork_optimizer() {}
  virtual void join_optimizer() {}

  // CUDA graphs. Where supports_graphs(), the ops issued between begin_capture() and
  // end_capture() are recorded instead of run, and launch_graph(id) runs them again, with the
  // same pointers and shapes, as one launch. Nothing may allocate, synchronise or copy through
  // pageable host memory while capturing; abort_capture() ends a capture that failed half way
  // (ignoring further errors) so the backend stays usable. Graphs live as long as the backend.
  virtual bool supports_graphs() const { return false; }
  virtual void begin_capture() { unsupported("begin_capture"); }
  virtual int end_capture() { unsupported("end_capture"); }
  virtual void abort_capture() {}
  virtual void launch_graph(int id) { unsupported("launch_graph"); }
  // Frees graph `id` (launching it after is an error); its slot is not reused.
  virtual void release_graph(int /*id*/) {}

  // The training step's schedule, for ModelSession's step tuning. Other ways this backend can
  // issue a step (which streams chain their launches, when Adam runs, ...), each one change
  // from its schedule as first asked, among the settings the environment left unset: their
  // names, the same list on every call. Empty: nothing to choose.
  virtual std::vector<std::string> schedule_variants() { return {}; }
  // Issues from now on as variant `index` of schedule_variants(), or as first asked (-1). The
  // settings are the process's: every backend of the process issues so.
  virtual void use_schedule_variant(int /*index*/) {}
  // Whether timing this backend's work on the host measures the device (not so under the
  // SIMT emulator, whose kernels run on the CPU): tuning by time is then worth doing.
  virtual bool timings_measure_device() const { return false; }
  // A device -> device copy, in order with the step's work.
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;

 protected:
  [[noreturn]] void unsupported(const char* what) const {
    fail(describe(), ": ", what, " needs a backend with CUDA graphs");
  }
  [[noreturn]] void no_fusion() const {
    fail(describe(), ": fused BatchNorm+ReLU called on a backend without it (a bug: check "
         "fuses_batchnorm_relu() first)");
  }
};

}  // namespace unetcu
