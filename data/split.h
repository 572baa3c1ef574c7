// data/split.h: seeded train/val/test splits over image indices 0..n-1, and split.json, the
// record of the split a run used.
//
// Two ways to split, both seeded with the project's own generator (engine/rng.h), so a seed
// gives the same split on every platform:
//   random  images shuffled one by one (the recipe's 95 / 2.5 / 2.5)
//   lesion  images grouped by lesion_id and whole groups shuffled, so that no lesion has
//           pictures in two parts (HAM10000 holds 10,015 pictures of 7,470 lesions; a random
//           split lets a network be tested on another picture of a lesion it trained on)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace unetcu::data {

struct Split {
  std::vector<int> train, val, test;  // disjoint, together 0..n-1, each sorted ascending
};

// The recipe's random split (95 / 2.5 / 2.5 by default): the indices are shuffled; the first
// round(n * val_frac) go to val, the next round(n * test_frac) to test, the rest to train.
// A positive fraction always gets at least one image; a zero fraction gets none. Each list is
// sorted, so evaluation order does not depend on the shuffle.
// Throws unetcu::Error for fractions outside [0, 1) or summing to 1 or more, and "too few images
// for the split" when val, test and train cannot each get their minimum (n >= 3 by default).
Split split_random(int n, uint64_t seed, double val_frac = 0.025, double test_frac = 0.025);

// The lesion split over n = lesion_ids.size() images. Images with the same non-empty lesion_id
// form a group; an image with an empty id is a group of its own. Groups are listed in the order
// of their first image, shuffled, and then dealt out whole: val takes groups in shuffled order
// until it holds at least round(n * val_frac) images (the same target as split_random), test
// then does the same with round(n * test_frac), and train gets every remaining group. A part
// can therefore exceed its target by at most the size of its last group minus one.
// Throws unetcu::Error when no image has a lesion id ("--split lesion needs lesion ids ..."),
// for bad fractions (as split_random), and "too few lesions for the split" when train would
// be empty.
Split split_lesion(const std::vector<std::string>& lesion_ids, uint64_t seed,
                   double val_frac = 0.025, double test_frac = 0.025);

// How a split was made, stored beside it in split.json for the reader's benefit.
struct SplitRecipe {
  std::string method;  // "random" or "lesion"
  uint64_t seed = 0;
  double val_frac = 0, test_frac = 0;
};

// split.json: {"method", "seed", "val_frac", "test_frac", "train": [stems], "val": [...],
// "test": [...]}. Stems rather than indices, so the record stays right when images are added
// to the folder or the listing order changes.
std::string split_to_json(const Split& split, const std::vector<std::string>& stems,
                          const SplitRecipe& recipe);

// Reads split.json text back against the stems of the loaded data. Images the file does not
// name are in no part. Throws unetcu::Error naming `source` when the text is not a split record,
// when it names a stem the data does not hold ("the data no longer contains ...") or names a
// stem twice.
Split split_from_json(const std::string& text, const std::string& source,
                      const std::vector<std::string>& stems);

}  // namespace unetcu::data
