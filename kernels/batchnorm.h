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

// Double-precision twins of the above, for the finite-difference gradient checks.
void batchnorm_train_forward(double* y, double* save_mean, double* save_invstd,
                             double* running_mean, double* running_var,
                             const double* x, const double* gamma, const double* beta,
                             const BatchNormShape& sh, double momentum, double eps);
void batchnorm_eval_forward(double* y, const double* x, const double* gamma, const double* beta,
                            const double* running_mean, const double* running_var,
                            const BatchNormShape& sh, double eps);
void batchnorm_backward(double* dx, double* dgamma, double* dbeta,
                        const double* dy, const double* x, const double* gamma,
                        const double* save_mean, const double* save_invstd,
                        const BatchNormShape& sh, GradMode dx_mode, GradMode param_mode);

}  // namespace cpu

// CUDA kernels (kernels/cuda/batchnorm.cu), asynchronous on `stream`. The per-channel sums are
// deterministic two-stage reductions through `workspace` (device memory of at least
// batchnorm_workspace_bytes(sh) bytes, 8-byte aligned; contents need not be initialised and
// are scratch after the call). Results do not depend on thread timing.
namespace cuda {

size_t batchnorm_workspace_bytes(const BatchNormShape& sh);

// Where the training forward and the backward take three kernels (more rows than one block
// holds: the sums' partials, their final addition, then a pass that reads the tensor again to
// write y or dx), UNETCU_BN_PASS_LAST_FIRST=1 (or set_batchnorm_pass_last_first(true)) runs
// that pass from the last rows to the first in one wave of blocks, so that it reads first what
// the sums read last (the likeliest to be still in L2). Off by default until a GPU has timed
// it; the outputs are the same bits either way (the pass is element by element).
void set_batchnorm_pass_last_first(bool on);
bool batchnorm_pass_last_first();
// The kernels a training forward or backward of `sh` takes on 16-byte-aligned buffers: 1 where
// one block a column holds the rows, else 3 (the path the setting above changes); 0 when empty.
int batchnorm_kernel_count(const BatchNormShape& sh);

void batchnorm_train_forward(float* y, float* save_mean, float* save_invstd,
                             float* running_mean, float* running_var,
                             const float* x, const float* gamma, const float* beta,
                             const BatchNormShape& sh, float momentum, float eps,
                             void* workspace, cudaStream_t stream);
void batchnorm_eval_forward(float* y, const float* x, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var,
                            const BatchNormShape& sh, float eps, cudaStream_t stream);
void batchnorm_backward(float* dx, float* dgamma, float* dbeta,
                        const float* dy, const float* x, const float* gamma,
                        const float* save_mean, const float* save_invstd,
                        const BatchNormShape& sh, GradMode dx_mode, GradMode param_mode,
                        void* workspace, cudaStream_t stream);

// Fused with the ReLU that follows a BatchNorm: y = relu(bn(x)). The backward takes dy, the
// gradient of that relu output, and equals relu_backward (the mask y > 0) followed by
// batchnorm_backward without the intermediate tensor. By default it forms the mask from x,
// repeating the training forward's normalisation bit for bit with beta and the saved
// statistics, so its two passes read dy and x but not y (two reads of the tensor fewer);
// UNETCU_BN_RELU_MASK_FROM_INPUT=0 (or set_batchnorm_relu_mask_from_input(false)) reads y
// instead. Both give the same bits when y, save_mean and save_invstd are what
// batchnorm_relu_train_forward wrote from this x, gamma and beta (as in a training step).
void set_batchnorm_relu_mask_from_input(bool on);
bool batchnorm_relu_mask_from_input();

void batchnorm_relu_train_forward(float* y, float* save_mean, float* save_invstd,
                                  float* running_mean, float* running_var,
                                  const float* x, const float* gamma, const float* beta,
                                  const BatchNormShape& sh, float momentum, float eps,
                                  void* workspace, cudaStream_t stream);
void batchnorm_relu_eval_forward(float* y, const float* x, const float* gamma, const float* beta,
                                 const float* running_mean, const float* running_var,
                                 const BatchNormShape& sh, float eps, cudaStream_t stream);
void batchnorm_relu_backward(float* dx, float* dgamma, float* dbeta,
                             const float* dy, const float* y, const float* x, const float* gamma,
                             const float* beta, const float* save_mean, const float* save_invstd,
                             const BatchNormShape& sh, GradMode dx_mode, GradMode param_mode,
                             void* workspace, cudaStream_t stream);

// The end of a BasicBlock fused: y = relu(bn(x) + residual). The backward also writes the
// residual's gradient, dresidual (+)= dy * (y > 0).
void batchnorm_add_relu_train_forward(float* y, float* save_mean, float* save_invstd,
                                      float* running_mean, float* running_var,
                                      const float* x, const float* residual, const float* gamma,
                                      const float* beta, const BatchNormShape& sh,
                                      float momentum, float eps, void* workspace,
                                      cudaStream_t stream);
void batchnorm_add_relu_eval_forward(float* y, const float* x, const float* residual,
                                     const float* gamma, const float* beta,
                                     const float* running_mean, const float* running_var,
                                     const BatchNormShape& sh, float eps, cudaStream_t stream);
void batchnorm_add_relu_backward(float* dx, float* dresidual, float* dgamma, float* dbeta,
                                 const float* dy, const float* y, const float* x,
                                 const float* gamma, const float* save_mean,
                                 const float* save_invstd, const BatchNormShape& sh,
                                 GradMode dx_mode, GradMode dresidual_mode, GradMode param_mode,
                                 void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace unetcu
