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
//
// Speed: the library is built for x86-64-v2, which has no FMA instruction, so there std::fma
// is a libm call per element and the loop cannot vectorise. The loop is therefore also
// compiled for FMA hardware (8-wide AVX with vfmadd; target_clones.h) and the CPU picks the
// clone at load time. A fused multiply-add is exact whether the instruction or libm does it,
// every multiply-add here is an explicit std::fma (nothing is left for the compiler to
// contract), and sqrt and division are IEEE in every clone: both clones give the same bits.
// (The sqrt vectorises only because kernels/CMakeLists.txt builds with -fno-math-errno.)
#include "kernels/adam.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/target_clones.h"

namespace unetcu::cpu {
namespace {

// Elements per parallel work item: large enough to stream, small enough to balance.
constexpr int64_t kAdamBlock = int64_t(1) << 16;

// The scalars come by value into locals: through a reference, every store to the arrays might
// change them, and the loop would reload them instead of vectorising.
UNETCU_TARGET_CLONES("fma")
void adam_range(float* param, float* exp_avg, float* exp_avg_sq, const float* grad,
                int64_t begin, int64_t end, const AdamStepScalars s) {
  const float neg_step_size = -s.step_size;
  const float beta1 = s.beta1, one_minus_beta1 = s.one_minus_beta1;
  const float beta2 = s.beta2, one_minus_beta2 = s.one_minus_beta2;
  const float bc2_sqrt = s.bc2_sqrt, eps = s.eps;
  for (int64_t i = begin; i < end; ++i) {
    const float g = grad[i];
    const float m = std::fma(g, one_minus_beta1, exp_avg[i] * beta1);
    const float v = std::fma(one_minus_beta2 * g, g, exp_avg_sq[i] * beta2);
    const float denom = std::sqrt(v) / bc2_sqrt + eps;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = param[i] + neg_step_size * m / denom;
  }
}

}  // namespace

void adam_step(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t count,
               const AdamConfig& cfg, int64_t t) {
  const AdamStepScalars s = AdamStepScalars::make(cfg, t);
  const int64_t blocks = (count + kAdamBlock - 1) / kAdamBlock;
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < blocks; ++block)
    adam_range(param, exp_avg, exp_avg_sq, grad, block * kAdamBlock,
               std::min(count, (block + 1) * kAdamBlock), s);
}

}  // namespace unetcu::cpu
