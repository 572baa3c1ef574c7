// data/split.h: seeded train/val/test splits over image indices 0..n-1.
#pragma once

#include <cstdint>
#include <vector>

namespace unetcu::data {

struct Split {
  std::vector<int> train, val, test;  // disjoint, together 0..n-1, each sorted ascending
};

// The recipe's random split (95 / 2.5 / 2.5 by default): the indices are shuffled with the
// project's own generator (engine/rng.h), so a seed gives the same split on every platform; the
// first round(n * val_frac) go to val, the next round(n * test_frac) to test, the rest to train.
// A positive fraction always gets at least one image; a zero fraction gets none. Each list is
// sorted, so evaluation order does not depend on the shuffle.
// Throws unetcu::Error for fractions outside [0, 1) or summing to 1 or more, and "too few images
// for the split" when val, test and train cannot each get their minimum (n >= 3 by default).
Split split_random(int n, uint64_t seed, double val_frac = 0.025, double test_frac = 0.025);

}  // namespace unetcu::data
