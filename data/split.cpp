// data/split.cpp: split_random.
#include "data/split.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/rng.h"
#include "engine/error.h"

namespace unetcu::data {

Split split_random(int n, uint64_t seed, double val_frac, double test_frac) {
  if (!(val_frac >= 0 && val_frac < 1) || !(test_frac >= 0 && test_frac < 1) ||
      val_frac + test_frac >= 1)
    fail("split fractions must lie in [0, 1) and sum to less than 1: val ", val_frac, ", test ",
         test_frac);

  auto part_size = [n](double frac) {
    if (frac == 0) return 0;
    return std::max(1, int(std::llround(double(n) * frac)));
  };
  const int n_val = part_size(val_frac), n_test = part_size(test_frac);
  const int minimum = 1 + (val_frac > 0) + (test_frac > 0);  // one image per non-empty part
  if (n < minimum || n - n_val - n_test < 1)
    fail("too few images for the split: ", n, " images, need at least ", minimum,
         " (train must get at least 1 image after val ", n_val, " and test ", n_test, ")");

  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  Rng rng(seed);
  shuffle(order, rng);

  Split split;
  split.val.assign(order.begin(), order.begin() + n_val);
  split.test.assign(order.begin() + n_val, order.begin() + n_val + n_test);
  split.train.assign(order.begin() + n_val + n_test, order.end());
  for (auto* part : {&split.train, &split.val, &split.test}) std::sort(part->begin(), part->end());
  return split;
}

}  // namespace unetcu::data
