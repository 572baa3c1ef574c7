// kernels/cpu/adam.cpp: reference Adam step over flat float32 arrays, written operation by
// operation as PyTorch 1.13's single-tensor Adam runs it on CPU tensors, so that each float
// rounding happens at the same place and the result matches bit for bit:
//   exp_avg.mul_(b1).add_(g, 1 - b1)                    add: fma(g, alpha, self)
//   exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)          addcmul: fma(value * t1, t2, self)
//   denom = (exp_avg_sq.sqrt() / sqrt(bc2)).add_(eps)
//   param.addcdiv_(exp_avg, denom, -lr / bc1)            addcdiv: self + value * t1 / t2
// ATen's add-with-alpha and addcmul kernels (its AVX2/AVX512 builds, chosen on any x86-64 CPU
// with FMA) fuse the multiply and the add into one rounding; written unfused, exp_avg would
// differ in the last bit for about a third of the elements (and by more after cancellation).
// CUDA gets the same fusion from nvcc's default contraction.
#include "kernels/adam.h"

#include <cmath>

namespace unetcu::cpu {

void adam_step(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t count,
               const AdamConfig& cfg, int64_t t) {
  const AdamStepScalars s = AdamStepScalars::make(cfg, t);
  const float neg_step_size = -s.step_size;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    const float g = grad[i];
    const float m = std::fma(g, s.one_minus_beta1, exp_avg[i] * s.beta1);
    const float v = std::fma(s.one_minus_beta2 * g, g, exp_avg_sq[i] * s.beta2);
    const float denom = std::sqrt(v) / s.bc2_sqrt + s.eps;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = param[i] + neg_step_size * m / denom;
  }
}

}  // namespace unetcu::cpu
