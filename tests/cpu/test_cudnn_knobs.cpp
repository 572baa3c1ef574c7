// The values the cuDNN knob variants try (kernels/cudnn/knob_values.h): at most kKnobValues,
// increasing, on the knob's grid and within its range, its first value always, all of a short
// range, and no arithmetic overflow at int64_t's ends.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/cudnn/knob_values.h"

using unetcu::cudnn::kKnobValues;
using unetcu::cudnn::knob_values;

namespace {
// Every value on the grid lo + k * stride within [lo, hi], strictly increasing, at most
// kKnobValues, lo first and the last value on the grid last.
void check_values(int64_t lo, int64_t hi, int64_t stride) {
  CAPTURE(lo);
  CAPTURE(hi);
  CAPTURE(stride);
  const std::vector<int64_t> v = knob_values(lo, hi, stride);
  REQUIRE(!v.empty());
  CHECK(v.size() <= size_t(kKnobValues));
  CHECK(v.front() == lo);
  const uint64_t steps = (uint64_t(hi) - uint64_t(lo)) / uint64_t(stride);
  CHECK(uint64_t(v.back()) - uint64_t(lo) == steps * uint64_t(stride));
  for (size_t i = 0; i < v.size(); ++i) {
    CHECK(v[i] >= lo);
    CHECK(v[i] <= hi);
    CHECK((uint64_t(v[i]) - uint64_t(lo)) % uint64_t(stride) == 0);
    if (i > 0) CHECK(v[i] > v[i - 1]);
  }
}
}  // namespace

TEST_CASE("knob values: a short range is taken whole") {
  CHECK(knob_values(0, 3, 1) == std::vector<int64_t>{0, 1, 2, 3});
  CHECK(knob_values(0, 12, 2) == std::vector<int64_t>{0, 2, 4, 6, 8, 10, 12});
  CHECK(knob_values(5, 5, 1) == std::vector<int64_t>{5});
  CHECK(knob_values(1, 8, 1).size() == 8);
}

TEST_CASE("knob values: a long range gives its ends and the powers of two between") {
  CHECK(knob_values(0, 100, 1) == std::vector<int64_t>{0, 1, 2, 4, 8, 16, 32, 100});
  CHECK(knob_values(1, 1024, 1) == std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 1024});
  CHECK(knob_values(0, 1000, 4) == std::vector<int64_t>{0, 4, 8, 16, 32, 64, 128, 1000});
  // The last value on the grid, not hi, and a power of two equal to it only once.
  CHECK(knob_values(0, 65, 4) == std::vector<int64_t>{0, 4, 8, 16, 32, 64});
  for (int64_t stride : {1, 2, 3, 4, 7, 64})
    for (int64_t lo : {-5, 0, 1, 3})
      for (int64_t hi : {int64_t(9), int64_t(100), int64_t(4096), int64_t(1) << 40})
        check_values(lo, hi, stride);
}

TEST_CASE("knob values: int64_t's ends do not overflow") {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  check_values(0, kMax, 1);
  check_values(0, kMax, 3);
  check_values(kMin, kMax, 1);
  check_values(kMin, 0, 5);
  check_values(kMax - 3, kMax, 1);
}

TEST_CASE("knob values: an empty range or a bad stride gives none") {
  CHECK(knob_values(4, 3, 1).empty());
  CHECK(knob_values(0, 10, 0).empty());
  CHECK(knob_values(0, 10, -2).empty());
}
