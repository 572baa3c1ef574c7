// The BatchNorm-fusion probe's verdicts (kernels/cudnn/fusion_check.h): what they must accept
// (another TF32 algorithm's rounding, float32 accumulation in a fused reduction) and reject
// (a layout or channel mix-up, a scale error, an output never written).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cudnn/fusion_check.h"

using unetcu::cudnn::sums_error;
using unetcu::cudnn::tensor_error;

namespace {
std::vector<double> normal(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<double> v(n);
  for (double& e : v) e = d(rng);
  return v;
}
// Each value moved by `units` of 2^-10 of the values' rms, with a random sign: TF32 rounding.
std::vector<float> perturbed(const std::vector<double>& ref, double units, unsigned seed) {
  double sq = 0;
  for (double r : ref) sq += r * r;
  const double step = units * std::ldexp(std::sqrt(sq / double(ref.size())), -10);
  std::mt19937 rng(seed);
  std::vector<float> out(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) out[i] = float(ref[i] + (rng() & 1 ? step : -step));
  return out;
}
}  // namespace

TEST_CASE("tensor_error: TF32 rounding agrees, a transposed layout, a scale or NaN does not") {
  const size_t rows = 256, cols = 16;
  const std::vector<double> ref = normal(rows * cols, 1);
  CHECK(tensor_error(perturbed(ref, 0.0, 2), ref) < 1e-3);  // float32 storage alone
  CHECK(tensor_error(perturbed(ref, 1.0, 2), ref) <= 0.2);   // one unit: 1/8 of the tolerance
  CHECK(tensor_error(perturbed(ref, 12.0, 2), ref) > 1.0);   // 12 units: beyond it
  std::vector<float> transposed(ref.size()), scaled(ref.size());
  for (size_t i = 0; i < rows; ++i)
    for (size_t j = 0; j < cols; ++j) transposed[j * rows + i] = float(ref[i * cols + j]);
  for (size_t i = 0; i < ref.size(); ++i) scaled[i] = float(1.05 * ref[i]);
  CHECK(tensor_error(transposed, ref) > 10.0);
  CHECK(tensor_error(scaled, ref) > 1.0);
  std::vector<float> unwritten = perturbed(ref, 0.0, 3);
  unwritten[5] = std::numeric_limits<float>::quiet_NaN();  // a later element must not hide it
  CHECK(std::isinf(tensor_error(unwritten, ref)));
}

TEST_CASE("sums_error: TF32-rounded terms and float32 accumulation agree, mixed channels do not") {
  const size_t count = 16384, channels = 8;
  std::vector<std::vector<double>> terms;
  for (size_t j = 0; j < channels; ++j) terms.push_back(normal(count, 10 + unsigned(j)));
  std::vector<float> exact, rounded, float_sums, swapped;
  for (size_t j = 0; j < channels; ++j) {
    double s = 0, s_rounded = 0;
    float f = 0;
    const std::vector<float> moved = perturbed(terms[j], 1.0, 20 + unsigned(j));
    for (size_t i = 0; i < count; ++i) {
      s += terms[j][i];
      s_rounded += double(moved[i]);
      f += float(terms[j][i]);  // one float32 accumulator, in order: the worst plausible kernel
    }
    exact.push_back(float(s));
    rounded.push_back(float(s_rounded));
    float_sums.push_back(f);
  }
  for (size_t j = 0; j < channels; ++j) swapped.push_back(exact[(j + 1) % channels]);
  CHECK(sums_error(exact, terms) < 0.01);
  CHECK(sums_error(rounded, terms) <= 0.5);
  CHECK(sums_error(float_sums, terms) <= 1.0);
  CHECK(sums_error(swapped, terms) > 10.0);
  std::vector<float> half = exact;
  half[3] = 0.5f * half[3] + 4.0f;  // a lost half of the rows, or a stray offset
  CHECK(sums_error(half, terms) > 1.0);
  std::vector<float> unwritten = exact;
  unwritten[0] = std::numeric_limits<float>::quiet_NaN();
  CHECK(std::isinf(sums_error(unwritten, terms)));
}
