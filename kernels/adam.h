// kernels/adam.h: torch.optim.Adam (amsgrad=False, weight_decay=0) over one flat array.
//   m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g*g
//   param -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps),  bc_i = 1 - b_i^t  (t starts at 1)
// The hyperparameters are doubles, as PyTorch's are (Python floats, C++ AdamOptions doubles):
// PyTorch forms 1 - b1, 1 - b2, the bias corrections and lr/bc1 in double and rounds each to
// float32 only where it meets a tensor. With float betas, 1 - 0.999f would be 1.3e-5 away from
// PyTorch's float(1 - 0.999) and exp_avg_sq would drift from PyTorch's from the first step.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/common.h"

namespace unetcu {

struct AdamConfig {
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

// The float32 scalars of step t (t >= 1), each formed as PyTorch's single-tensor Adam forms it:
// in double, then rounded to float once. Every backend's Adam uses these, so they agree.
struct AdamStepScalars {
  float step_size = 0;       // lr / bc1
  float bc2_sqrt = 0;        // sqrt(bc2)
  float beta1 = 0, one_minus_beta1 = 0;
  float beta2 = 0, one_minus_beta2 = 0;
  float eps = 0;
  static AdamStepScalars make(const AdamConfig& cfg, int64_t t) {
    double bc1 = 1.0 - std::pow(cfg.beta1, double(t));
    double bc2 = 1.0 - std::pow(cfg.beta2, double(t));
    AdamStepScalars s;
    s.step_size = float(cfg.lr / bc1);
    s.bc2_sqrt = float(std::sqrt(bc2));
    s.beta1 = float(cfg.beta1);
    s.one_minus_beta1 = float(1.0 - cfg.beta1);
    s.beta2 = float(cfg.beta2);
    s.one_minus_beta2 = float(1.0 - cfg.beta2);
    s.eps = float(cfg.eps);
    return s;
  }
};

namespace cpu {

// param, exp_avg, exp_avg_sq are updated in place; t is the step number (first step: 1).
void adam_step(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t count,
               const AdamConfig& cfg, int64_t t);

}  // namespace cpu

// CUDA kernels (kernels/cuda/adam.cu), asynchronous on `stream`, all pointers device memory.
// The step counter lives on the device so that a captured graph can be replayed: each step
// runs adam_advance_step (t += 1, then *scalars = AdamStepScalars::make(cfg, t) computed on the
// device, with cfg.lr replaced by *lr when lr is not null) and then adam_step over the arena.
namespace cuda {

void adam_advance_step(int64_t* step, AdamStepScalars* scalars, const AdamConfig& cfg,
                       const double* lr, cudaStream_t stream);
void adam_step(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t count,
               const AdamStepScalars* scalars, cudaStream_t stream);

}  // namespace cuda
}  // namespace unetcu
