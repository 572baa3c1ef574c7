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

// How a candidate way of making a call that writes out = result + beta * out (a cuDNN plan, a
// rival kernel) is checked against the reference way of making it, before it may serve; the
// caller gives two scratch outputs of `out_bytes`. `run_reference(beta, dst)` and
// `run_candidate(dst)` issue their call on `stream` and say whether it was issued.
//
// Overwriting (beta 0): both outputs start poisoned (0x3e bytes, ~0.19 each), so an element the
// candidate never writes is off by that. Accumulating: both start from the reference's own
// result R (made overwriting first), so each ends as R + beta R: a candidate that overwrites
// instead of adding is off by R, and one whose result is wrong is judged on the scale of the
// result. Why not a poisoned start there too: compare_outputs bounds each element by the
// reference's magnitude, which a constant start sets; a data gradient of rms 2e-6 added to
// 0.19 passed whatever it added (bench/RESULTS.md), so the check could not fail.
struct Checked {
  bool ran = false;     // both calls were issued and finished without error
  Agreement agreement;  // agree is false where they were not
};
template <class RunReference, class RunCandidate>
Checked check_candidate(float beta, void* out, void* ref, size_t out_bytes, cudaStream_t stream,
                        const RunReference& run_reference, const RunCandidate& run_candidate) {
  Checked c;
  bool ran = true;
  if (beta == 0.0f) {
    UNETCU_CUDA_CHECK(cudaMemsetAsync(out, 0x3e, out_bytes, stream));
    UNETCU_CUDA_CHECK(cudaMemsetAsync(ref, 0x3e, out_bytes, stream));
  } else {
    UNETCU_CUDA_CHECK(cudaMemsetAsync(ref, 0x3e, out_bytes, stream));
    ran = run_reference(0.0f, ref);
    UNETCU_CUDA_CHECK(cudaMemcpyAsync(out, ref, out_bytes, cudaMemcpyDeviceToDevice, stream));
  }
  ran = ran && run_reference(beta, ref);
  ran = ran && run_candidate(out);
  UNETCU_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (!ran) {
    (void)cudaGetLastError();  // a failed call's error must not surface at a later launch
    c.agreement.agree = false;
    return c;
  }
  c.ran = true;
  c.agreement = compare_outputs(out, ref, out_bytes);
  return c;
}

}  // namespace unetcu::cudnn
