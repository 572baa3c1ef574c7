// kernels/batchnorm.h: BatchNorm2d over NHWC activations (PyTorch semantics, eps 1e-5,
// momentum 0.1): statistics per channel over rows = n*h*w elements.
//
//   train forward: normalise with the biased batch variance, update running_mean and
//                  running_var (unbiased, n/(n-1)) with weight `momentum` on the new value,
//                  save mean and invstd = 1/sqrt(var + eps) for backward;
//   eval forward : use the running statistics, update nothing;
//   backward     : full training-mode form (batch statistics depend on x).
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace unetcu {

struct BatchNormShape {
  int64_t rows = 0;  // n * h * w
  int c = 0;
};

namespace cpu {

// y, save_mean, save_invstd: outputs; running_mean / running_var: updated in place.
void batchnorm_train_forward(float* y, float* save_mean, float* save_invstd,
                             float* running_mean, float* running_var,
                             const float* x, const float* gamma, const float* beta,
                             const BatchNormShape& sh, float momentum, float eps);

void batchnorm_eval_forward(float* y, const float* x, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var,
                            const BatchNormShape& sh, float eps);

// dx (+)= ..., dgamma/dbeta (+)= ... . x is the forward input; save_* from train forward.
void batchnorm_backward(float* dx, float* dgamma, float* dbeta,
                        const float* dy, const float* x, const float* gamma,
                        const float* save_mean, const float* save_invstd,
                        const BatchNormShape& sh, GradMode dx_mode, GradMode param_mode);

}  // namespace cpu
}  // namespace unetcu
