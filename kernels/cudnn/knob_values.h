// kernels/cudnn/knob_values.h: the values of a cuDNN engine knob that the knob variants of
// conv_cudnn.cpp try. Free of cuDNN, so that the CPU tests check it.
#pragma once

#include <cstdint>
#include <vector>

namespace unetcu::cudnn {

constexpr int kKnobValues = 8;

// The values a knob of range [lo, hi] in steps of `stride` may take, at most kKnobValues of
// them: all when there are few, else the first and last on the grid and the powers of two
// between that are on it, which span tile sizes and split counts alike.
inline std::vector<int64_t> knob_values(int64_t lo, int64_t hi, int64_t stride) {
  std::vector<int64_t> out;
  if (stride <= 0 || hi < lo) return out;
  // Steps from lo to hi, in unsigned arithmetic: a range may span most of int64_t.
  const uint64_t steps = (uint64_t(hi) - uint64_t(lo)) / uint64_t(stride);
  if (steps < uint64_t(kKnobValues)) {
    for (uint64_t k = 0; k <= steps; ++k) out.push_back(lo + int64_t(k) * stride);
    return out;
  }
  const int64_t last = int64_t(uint64_t(lo) + steps * uint64_t(stride));  // on the grid
  out.push_back(lo);
  // (p stops short of 2^62: doubling it again would overflow.)
  for (int64_t p = 1; p < last && p < (int64_t(1) << 62) && int(out.size()) < kKnobValues - 1;
       p *= 2)
    if (p > lo && (uint64_t(p) - uint64_t(lo)) % uint64_t(stride) == 0) out.push_back(p);
  out.push_back(last);
  return out;
}

}  // namespace unetcu::cudnn
