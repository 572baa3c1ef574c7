// kernels/cuda/adam.cu: torch.optim.Adam over the flat parameter arena, with the step counter
// on the device so a captured CUDA graph can be replayed step after step.
//
// adam_advance_step (one thread) increments t and forms the step's float scalars in double,
// exactly as AdamStepScalars::make does on the host (adam.h; it is host-only); adam_step is the
// elementwise update, written operation by operation as the CPU reference (PyTorch 1.13's
// single-tensor order, with its fused multiply-adds), so all three agree bit for bit. The update streams param, exp_avg, exp_avg_sq and grad (16 bytes read,
// 12 written per value) as float4 with a grid-stride loop: a copy-bandwidth kernel; each thread
// reads the scalars once.
#include "kernels/adam.h"

#include <cmath>

#include "kernels/cuda/common.cuh"

namespace unetcu::cuda {
namespace {

using detail::load_vec;
using detail::store_vec;

__global__ void adam_advance_kernel(int64_t* step, AdamStepScalars* scalars, AdamConfig cfg,
                                    const double* lr) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  const int64_t t = *step + 1;
  *step = t;
  const double rate = lr ? *lr : cfg.lr;
  const double bc1 = 1.0 - pow(cfg.beta1, double(t));
  const double bc2 = 1.0 - pow(cfg.beta2, double(t));
  AdamStepScalars s;
  s.step_size = float(rate / bc1);
  s.bc2_sqrt = float(sqrt(bc2));
  s.beta1 = float(cfg.beta1);
  s.one_minus_beta1 = float(1.0 - cfg.beta1);
  s.beta2 = float(cfg.beta2);
  s.one_minus_beta2 = float(1.0 - cfg.beta2);
  s.eps = float(cfg.eps);
  *scalars = s;
}

__global__ void __launch_bounds__(detail::kThreads)
    adam_update_kernel(float* param, float* exp_avg, float* exp_avg_sq, const float* grad,
                       int64_t count, const AdamStepScalars* scalars, bool vec4) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  const AdamStepScalars s = *scalars;
  const float neg_step_size = -s.step_size;
  detail::grid_stride(count, vec4, [&](auto width, int64_t i) {
    constexpr int V = decltype(width)::value;
    const auto g = load_vec<V>(grad, i);
    auto m = load_vec<V>(exp_avg, i);
    auto v = load_vec<V>(exp_avg_sq, i);
    auto p = load_vec<V>(param, i);
    for (int k = 0; k < V; ++k) {
      // Fused where ATen's CPU kernels fuse (add with alpha, addcmul), spelled out so that
      // the emulator (g++, no contraction) rounds exactly as the GPU and the reference do.
      m.v[k] = fmaf(g.v[k], s.one_minus_beta1, m.v[k] * s.beta1);
      v.v[k] = fmaf(s.one_minus_beta2 * g.v[k], g.v[k], v.v[k] * s.beta2);
      const float denom = sqrtf(v.v[k]) / s.bc2_sqrt + s.eps;
      p.v[k] = p.v[k] + neg_step_size * m.v[k] / denom;
    }
    store_vec<V>(exp_avg, i, m);
    store_vec<V>(exp_avg_sq, i, v);
    store_vec<V>(param, i, p);
  });
}

}  // namespace

void adam_advance_step(int64_t* step, AdamStepScalars* scalars, const AdamConfig& cfg,
                       const double* lr, cudaStream_t stream) {
  UNETCU_LAUNCH_CHAINED(adam_advance_kernel, 1, 1, 0, stream)(step, scalars, cfg, lr);
}

void adam_step(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t count,
               const AdamStepScalars* scalars, cudaStream_t stream) {
  if (count <= 0) return;
  const bool vec4 = detail::all_vec4(param, exp_avg, exp_avg_sq, grad);
  UNETCU_LAUNCH_CHAINED(adam_update_kernel, detail::flat_blocks(count, vec4), detail::kThreads, 0,
                        stream)(param, exp_avg, exp_avg_sq, grad, count, scalars, vec4);
}

}  // namespace unetcu::cuda
