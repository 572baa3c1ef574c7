// kernels/cudnn/fusion_check.h: how the BatchNorm-fusion probe (fusion_probe.cpp) judges a
// fused plan's outputs against the engine's own convolution, in plain C++ so that the CPU
// tests can hold the tolerances to what they must accept and reject. A ratio of at most 1
// agrees; NaN (an output a plan never wrote: the probe poisons them) never does.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace unetcu::cudnn {

// max |out - ref| over 2^-7 rms(ref): TF32's rule of bench/cuda_ops.cpp (each product's inputs
// rounded to 11 bits gives ~2^-10 rms(y) per element; 8 such units bound millions of
// elements). Another algorithm's output, or a layout mistake, is off by O(1) of the tolerance.
inline double tensor_error(const std::vector<float>& out, const std::vector<double>& ref) {
  double sq = 0, worst = 0;
  for (double r : ref) sq += r * r;
  const double tol = std::ldexp(std::sqrt(sq / double(ref.size())), -7);
  for (size_t i = 0; i < out.size(); ++i) {
    const double e = std::fabs(double(out[i]) - ref[i]);
    if (std::isnan(e)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, e);
  }
  return tol > 0 ? worst / tol : (worst == 0 ? 0 : std::numeric_limits<double>::infinity());
}

// Per-channel sums: terms[j] holds column j's terms (the reference's). A sum of `count` terms
// each off by TF32's ~2^-10 rms is off by about sqrt(count) of that; 2^-7 gives 8x room, and
// 2^-20 of the sum of magnitudes allows for float32 accumulation inside a fused kernel.
inline double sums_error(const std::vector<float>& out,
                         const std::vector<std::vector<double>>& terms) {
  double worst = 0;
  for (size_t j = 0; j < terms.size(); ++j) {
    double sum = 0, sq = 0, mag = 0;
    for (double t : terms[j]) sum += t, sq += t * t, mag += std::fabs(t);
    const double count = double(terms[j].size());
    const double tol = std::ldexp(std::sqrt(count) * std::sqrt(sq / count), -7) +
                       std::ldexp(mag, -20);
    const double e = std::fabs(double(out[j]) - sum);
    if (std::isnan(e)) return std::numeric_limits<double>::infinity();
    const double inf = std::numeric_limits<double>::infinity();
    worst = std::max(worst, tol > 0 ? e / tol : (e == 0 ? 0 : inf));
  }
  return worst;
}

}  // namespace unetcu::cudnn
