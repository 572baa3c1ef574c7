// kernels/cudnn/agreement.h: how kernels/cudnn checks a candidate library call's output (a
// cuDNN plan, a rival convolution, a cuBLASLt algorithm) against a reference output before the
// candidate may serve. CUDA runtime only, so each library's translation unit can share it.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <vector>

#include "kernels/cuda/check.h"

namespace unetcu::cudnn {

// Whether two finished float outputs on the device agree. Different algorithms round
// differently (TF32: ~1e-3 of the rms); a wrong layout or scale is off by the order of the
// values themselves: each element within (rms(ref) + |ref|) / 32.
struct Agreement {
  bool agree = true;
  double worst = 0, rms = 0;
};
inline Agreement compare_outputs(const void* out, const void* ref, size_t out_bytes) {
  const size_t count = out_bytes / sizeof(float);
  std::vector<float> got(count), want(count);
  UNETCU_CUDA_CHECK(cudaMemcpy(got.data(), out, out_bytes, cudaMemcpyDeviceToHost));
  UNETCU_CUDA_CHECK(cudaMemcpy(want.data(), ref, out_bytes, cudaMemcpyDeviceToHost));
  Agreement a;
  double sum_sq = 0;
  for (size_t i = 0; i < count; ++i) sum_sq += double(want[i]) * want[i];
  a.rms = count ? std::sqrt(sum_sq / double(count)) : 0.0;
  for (size_t i = 0; i < count; ++i) {
    const double err = std::fabs(double(got[i]) - double(want[i]));
    const double bound = (a.rms + std::fabs(double(want[i]))) / 32;
    if (!(err <= bound)) a.agree = false;
    if (!(err <= a.worst)) a.worst = err;
  }
  return a;
}

}  // namespace unetcu::cudnn
