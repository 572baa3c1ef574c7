// tests/cpu/test_split.cpp: the lesion-grouped split (on a HAM10000-shaped id list: 10,015
// images of 7,470 lesions) and the split.json record that --resume and eval read back.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "data/split.h"
#include "engine/error.h"
#include "engine/rng.h"
#include "test_util.h"

using namespace unetcu;
using namespace unetcu::data;

namespace {

using test::contains;
using test::error_of;

// Lesion ids shaped like HAM10000's: 7,470 lesions, 10,015 images, most lesions pictured once
// and a few up to six times, the images of one lesion scattered over the list (as sorting by
// file name scatters them).
std::vector<std::string> ham_like_ids() {
  // pictures per lesion -> lesions: 5,547 + 1,500 + 300 + 70 + 30 + 23 = 7,470 lesions and
  // 5,547 + 3,000 + 900 + 280 + 150 + 138 = 10,015 images.
  const std::vector<std::pair<int, int>> shape = {{1, 5547}, {2, 1500}, {3, 300},
                                                  {4, 70},   {5, 30},   {6, 23}};
  std::vector<std::string> ids;
  int lesion = 0;
  for (const auto& [pictures, lesions] : shape)
    for (int l = 0; l < lesions; ++l, ++lesion) {
      char id[32];
      std::snprintf(id, sizeof id, "HAM_%07d", lesion);
      for (int p = 0; p < pictures; ++p) ids.push_back(id);
    }
  Rng rng(11);
  shuffle(ids, rng);
  return ids;
}

// Which part (0 train, 1 val, 2 test) each image is in; checks the parts cover 0..n-1 once.
std::vector<int> part_of(const Split& s, size_t n) {
  std::vector<int> part(n, -1);
  int p = 0;
  for (const auto* list : {&s.train, &s.val, &s.test}) {
    CHECK(std::is_sorted(list->begin(), list->end()));
    for (int i : *list) {
      REQUIRE(part[size_t(i)] == -1);
      part[size_t(i)] = p;
    }
    ++p;
  }
  CHECK(std::count(part.begin(), part.end(), -1) == 0);
  return part;
}

}  // namespace

TEST_CASE("split_lesion: HAM10000-shaped ids, no lesion in two parts, greedy sizes") {
  const std::vector<std::string> ids = ham_like_ids();
  REQUIRE(ids.size() == 10015);
  const Split s = split_lesion(ids, 5);
  const std::vector<int> part = part_of(s, ids.size());

  std::map<std::string, int> lesion_part;
  std::map<std::string, int> lesion_size;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto [it, inserted] = lesion_part.emplace(ids[i], part[i]);
    CHECK(it->second == part[i]);  // every picture of a lesion in the same part
    ++lesion_size[ids[i]];
  }
  CHECK(lesion_part.size() == 7470);

  // Each of val and test reaches its target round(10015 * 0.025) = 250 with whole lesions and
  // stops there: dropping one of its lesions would put it below the target.
  for (const auto* list : {&s.val, &s.test}) {
    CHECK(list->size() >= 250);
    CHECK(list->size() <= 255);  // overshoot below the largest lesion (6 pictures)
    int smallest_drop = 1 << 30;
    for (int i : *list)
      smallest_drop = std::min(smallest_drop, int(list->size()) - lesion_size[ids[size_t(i)]]);
    CHECK(smallest_drop < 250);
  }
  CHECK(s.train.size() == ids.size() - s.val.size() - s.test.size());

  // Seeded: the same seed gives the same split, another seed another one.
  const Split again = split_lesion(ids, 5), other = split_lesion(ids, 6);
  CHECK(again.train == s.train);
  CHECK(again.val == s.val);
  CHECK(again.test == s.test);
  CHECK(other.val != s.val);

  // Other fractions.
  const Split big = split_lesion(ids, 5, 0.1, 0.2);
  part_of(big, ids.size());
  CHECK(big.val.size() >= 1002);  // round(1001.5)
  CHECK(big.test.size() >= 2003);
  CHECK(big.val.size() <= 1002 + 5);
}

TEST_CASE("split_lesion: images without a lesion id are groups of their own") {
  // 40 pairs sharing an id and 60 images with none.
  std::vector<std::string> ids;
  for (int l = 0; l < 40; ++l) ids.insert(ids.end(), 2, "L" + std::to_string(l));
  ids.insert(ids.end(), 60, "");
  const Split s = split_lesion(ids, 3, 0.2, 0.2);
  const std::vector<int> part = part_of(s, ids.size());
  for (int l = 0; l < 40; ++l) CHECK(part[size_t(2 * l)] == part[size_t(2 * l + 1)]);
  // The unlabelled images are not lumped together: they land in more than one part.
  std::vector<int> seen(3, 0);
  for (size_t i = 80; i < ids.size(); ++i) seen[size_t(part[i])] = 1;
  CHECK(seen[0] + seen[1] + seen[2] >= 2);
  CHECK(s.val.size() >= 28);  // round(140 * 0.2)
  CHECK(s.val.size() <= 29);
}

TEST_CASE("split_lesion: errors") {
  const std::string none = error_of([] { split_lesion(std::vector<std::string>(50, ""), 1); });
  CHECK(contains(none, "--split lesion needs lesion ids"));
  CHECK(contains(none, "HAM10000_metadata.csv"));
  CHECK(contains(none, "50 images"));
  // One lesion only: val takes it all and train gets nothing.
  CHECK(contains(error_of([] { split_lesion({"a", "a", "a"}, 1); }), "too few lesions"));
  CHECK(contains(error_of([] { split_lesion({"a", "b", "c"}, 1, 0.7, 0.4); }), "fractions"));
  // Three lesions are enough for three parts.
  const Split three = split_lesion({"a", "b", "c"}, 1);
  CHECK(three.train.size() == 1);
  CHECK(three.val.size() == 1);
  CHECK(three.test.size() == 1);
}

TEST_CASE("split.json: written as stems, read back against the data by name") {
  const std::vector<std::string> stems = {"ISIC_a", "ISIC_b", "ISIC_c", "ISIC_d", "ISIC_e"};
  Split s;
  s.train = {0, 2, 4};
  s.val = {1};
  s.test = {3};
  const std::string text = split_to_json(s, stems, {"lesion", 7, 0.2, 0.2});
  CHECK(contains(text, "\"method\": \"lesion\""));
  CHECK(contains(text, "\"ISIC_d\""));

  const Split back = split_from_json(text, "run/split.json", stems);
  CHECK(back.train == s.train);
  CHECK(back.val == s.val);
  CHECK(back.test == s.test);

  // The data listed in another order, with an extra image: parts follow the names, and the new
  // image is in none of them.
  const std::vector<std::string> moved = {"ISIC_new", "ISIC_e", "ISIC_d",
                                          "ISIC_c",   "ISIC_b", "ISIC_a"};
  const Split m = split_from_json(text, "run/split.json", moved);
  CHECK(m.train == std::vector<int>{1, 3, 5});
  CHECK(m.val == std::vector<int>{4});
  CHECK(m.test == std::vector<int>{2});

  const std::vector<std::string> fewer = {"ISIC_a", "ISIC_b", "ISIC_c", "ISIC_e"};
  const std::string gone = error_of([&] { split_from_json(text, "run/split.json", fewer); });
  CHECK(contains(gone, "run/split.json"));
  CHECK(contains(gone, "no longer contains ISIC_d"));

  Split twice = s;
  twice.test = {3, 1};
  const std::string dup =
      error_of([&] { split_from_json(split_to_json(twice, stems, {}), "s.json", stems); });
  CHECK(contains(dup, "ISIC_b twice"));
  CHECK(contains(error_of([&] { split_from_json("[1, 2]", "s.json", stems); }),
                 "not a split record"));
  CHECK(
      contains(error_of([&] { split_from_json("{\"train\": []}", "s.json", stems); }), "\"val\""));
  CHECK(contains(error_of([&] { split_from_json("{\"train\": [", "s.json", stems); }), "s.json"));
}
