// kernels/adam.h: torch.optim.Adam (amsgrad=False, weight_decay=0) over one flat array.
//   m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g*g
//   param -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps),  bc_i = 1 - b_i^t  (t starts at 1)
// The bias corrections are computed in double, as PyTorch does on the host.
#pragma once

#include <cmath>
#include <cstdint>

namespace unetcu {

struct AdamConfig {
  float lr = 1e-4f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
};

// The per-step scalars for step t (t >= 1), as PyTorch's single-tensor Adam forms them.
struct AdamStepScalars {
  float step_size = 0;       // lr / bc1
  float bc2_sqrt = 0;        // sqrt(bc2)
  static AdamStepScalars make(const AdamConfig& cfg, int64_t t) {
    double bc1 = 1.0 - std::pow(double(cfg.beta1), double(t));
    double bc2 = 1.0 - std::pow(double(cfg.beta2), double(t));
    AdamStepScalars s;
    s.step_size = float(double(cfg.lr) / bc1);
    s.bc2_sqrt = float(std::sqrt(bc2));
    return s;
  }
};

namespace cpu {

void adam_step(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t count,
               const AdamConfig& cfg, int64_t t);

}  // namespace cpu
}  // namespace unetcu
