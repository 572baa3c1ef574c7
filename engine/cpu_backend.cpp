// engine/cpu_backend.cpp: Backend over kernels/cpu. Device memory is aligned host memory.
#include "engine/cpu_backend.h"

#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>

#include "engine/error.h"
#include "kernels/elementwise.h"

namespace unetcu {
namespace {

class CpuBackend final : public Backend {
 public:
  DeviceKind kind() const override { return DeviceKind::cpu; }
  std::string describe() const override {
    std::ostringstream os;
    os << "cpu (" << omp_get_max_threads() << " threads)";
    return os.str();
  }

  void* alloc(size_t bytes) override {
    void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!p) fail("out of host memory allocating ", bytes, " bytes; try a smaller --batch-size");
    return p;
  }
  void release(void* ptr) override { std::free(ptr); }
  void zero(void* dst, size_t bytes) override { std::memset(dst, 0, bytes); }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void synchronize() override {}

  void normalize_input(float* x, const uint8_t* img, int64_t pixels,
                       const NormalizeParams& prm) override {
    cpu::normalize_input(x, img, pixels, prm);
  }
  void conv_forward(float* y, const float* x, const float* wt, const float* bias,
                    const ConvShape& sh) override {
    cpu::conv2d_forward(y, x, wt, bias, sh);
  }
  void conv_backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                          GradMode mode) override {
    cpu::conv2d_backward_data(dx, dy, wt, sh, mode);
  }
  void conv_backward_filter(float* dwt, const float* dy, const float* x, const ConvShape& sh,
                            GradMode mode) override {
    cpu::conv2d_backward_filter(dwt, dy, x, sh, mode);
  }
  void conv_backward_bias(float* dbias, const float* dy, const ConvShape& sh,
                          GradMode mode) override {
    cpu::conv2d_backward_bias(dbias, dy, sh, mode);
  }
  void batchnorm_train_forward(float* y, float* save_mean, float* save_invstd,
                               float* running_mean, float* running_var, const float* x,
                               const float* gamma, const float* beta, const BatchNormShape& sh,
                               float momentum, float eps) override {
    cpu::batchnorm_train_forward(y, save_mean, save_invstd, running_mean, running_var, x, gamma,
                                 beta, sh, momentum, eps);
  }
  void batchnorm_eval_forward(float* y, const float* x, const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var,
                              const BatchNormShape& sh, float eps) override {
    cpu::batchnorm_eval_forward(y, x, gamma, beta, running_mean, running_var, sh, eps);
  }
  void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy,
                          const float* x, const float* gamma, const float* save_mean,
                          const float* save_invstd, const BatchNormShape& sh, GradMode dx_mode,
                          GradMode param_mode) override {
    cpu::batchnorm_backward(dx, dgamma, dbeta, dy, x, gamma, save_mean, save_invstd, sh, dx_mode,
                            param_mode);
  }
  void relu_forward(float* y, const float* x, int64_t count) override {
    cpu::relu_forward(y, x, count);
  }
  void relu_backward(float* dx, const float* dy, const float* y, int64_t count,
                     GradMode mode) override {
    cpu::relu_backward(dx, dy, y, count, mode);
  }
  void add_relu_forward(float* y, const float* a, const float* b, int64_t count) override {
    cpu::add_relu_forward(y, a, b, count);
  }
  void maxpool_forward(float* y, int32_t* argmax, const float* x,
                       const MaxPoolShape& sh) override {
    cpu::maxpool_forward(y, argmax, x, sh);
  }
  void maxpool_backward(float* dx, const float* dy, const int32_t* argmax,
                        const MaxPoolShape& sh, GradMode mode) override {
    cpu::maxpool_backward(dx, dy, argmax, sh, mode);
  }
  void upsample2x_forward(float* y, const float* x, const UpsampleShape& sh) override {
    cpu::upsample2x_forward(y, x, sh);
  }
  void upsample2x_backward(float* dx, const float* dy, const UpsampleShape& sh,
                           GradMode mode) override {
    cpu::upsample2x_backward(dx, dy, sh, mode);
  }
  void concat_forward(float* y, const float* a, const float* b, const ConcatShape& sh) override {
    cpu::concat_forward(y, a, b, sh);
  }
  void concat_backward(float* da, float* db, const float* dy, const ConcatShape& sh,
                       GradMode mode_a, GradMode mode_b) override {
    cpu::concat_backward(da, db, dy, sh, mode_a, mode_b);
  }
  void dice_loss_forward(float* loss, DiceSums* sums, const float* logits, const uint8_t* target,
                         int64_t count) override {
    cpu::dice_loss_forward(loss, sums, logits, target, count);
  }
  void dice_loss_backward(float* dlogits, const float* logits, const uint8_t* target,
                          const DiceSums* sums, int64_t count) override {
    cpu::dice_loss_backward(dlogits, logits, target, *sums, count, 1.0f, GradMode::overwrite);
  }
  void confusion_counts(ConfusionCounts* counts, const float* logits, const uint8_t* target,
                        int n_images, int64_t pixels) override {
    cpu::confusion_counts(counts, logits, target, n_images, pixels);
  }
  void set_adam(const AdamConfig& cfg, int64_t t) override {
    adam_cfg_ = cfg;
    adam_t_ = t;
  }
  void adam_advance() override { ++adam_t_; }
  void adam_update(float* param, float* exp_avg, float* exp_avg_sq, const float* grad,
                   int64_t count) override {
    cpu::adam_step(param, exp_avg, exp_avg_sq, grad, count, adam_cfg_, adam_t_);
  }

 private:
  AdamConfig adam_cfg_;
  int64_t adam_t_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace unetcu
