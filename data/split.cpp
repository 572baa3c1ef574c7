// data/split.cpp: split_random, split_lesion and the split.json record.
#include "data/split.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "engine/error.h"
#include "engine/json.h"
#include "engine/rng.h"

namespace unetcu::data {

namespace {

void check_fractions(double val_frac, double test_frac) {
  if (!(val_frac >= 0 && val_frac < 1) || !(test_frac >= 0 && test_frac < 1) ||
      val_frac + test_frac >= 1)
    fail("split fractions must lie in [0, 1) and sum to less than 1: val ", val_frac, ", test ",
         test_frac);
}

// Images a part aims for: round(n * frac), at least one for a positive fraction.
int part_size(int n, double frac) {
  if (frac == 0) return 0;
  return std::max(1, int(std::llround(double(n) * frac)));
}

void sort_parts(Split& split) {
  for (auto* part : {&split.train, &split.val, &split.test}) std::sort(part->begin(), part->end());
}

}  // namespace

Split split_random(int n, uint64_t seed, double val_frac, double test_frac) {
  check_fractions(val_frac, test_frac);
  const int n_val = part_size(n, val_frac), n_test = part_size(n, test_frac);
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
  sort_parts(split);
  return split;
}

Split split_lesion(const std::vector<std::string>& lesion_ids, uint64_t seed, double val_frac,
                   double test_frac) {
  check_fractions(val_frac, test_frac);
  const int n = int(lesion_ids.size());
  if (std::all_of(lesion_ids.begin(), lesion_ids.end(),
                  [](const std::string& id) { return id.empty(); }))
    fail(
        "--split lesion needs lesion ids: HAM10000_metadata.csv (with a lesion_id column) was not "
        "found beside the data or names none of its ",
        n, " images; use --split random");

  // Groups in the order of their first image, so the grouping itself is seed-independent.
  std::vector<std::vector<int>> groups;
  std::unordered_map<std::string, size_t> group_of;
  for (int i = 0; i < n; ++i) {
    if (lesion_ids[i].empty()) {
      groups.push_back({i});
      continue;
    }
    auto [it, inserted] = group_of.emplace(lesion_ids[i], groups.size());
    if (inserted) groups.emplace_back();
    groups[it->second].push_back(i);
  }
  std::vector<size_t> order(groups.size());
  std::iota(order.begin(), order.end(), size_t(0));
  Rng rng(seed);
  shuffle(order, rng);

  const int n_val = part_size(n, val_frac), n_test = part_size(n, test_frac);
  Split split;
  size_t next = 0;
  auto deal = [&](std::vector<int>& part, int target) {
    while (int(part.size()) < target && next < order.size()) {
      const auto& g = groups[order[next++]];
      part.insert(part.end(), g.begin(), g.end());
    }
  };
  deal(split.val, n_val);
  deal(split.test, n_test);
  deal(split.train, n);
  if (split.train.empty())
    fail("too few lesions for the split: ", n, " images of ", groups.size(),
         " lesions leave none for training after val ", split.val.size(), " and test ",
         split.test.size());
  sort_parts(split);
  return split;
}

std::string split_to_json(const Split& split, const std::vector<std::string>& stems,
                          const SplitRecipe& recipe) {
  auto names = [&](const std::vector<int>& part) {
    json::Array a;
    for (int i : part) a.emplace_back(stems.at(size_t(i)));
    return a;
  };
  json::Object o;
  o.emplace_back("method", recipe.method);
  o.emplace_back("seed", recipe.seed);
  o.emplace_back("val_frac", recipe.val_frac);
  o.emplace_back("test_frac", recipe.test_frac);
  o.emplace_back("train", names(split.train));
  o.emplace_back("val", names(split.val));
  o.emplace_back("test", names(split.test));
  return json::dump_pretty(json::Value(o)) + "\n";
}

Split split_from_json(const std::string& text, const std::string& source,
                      const std::vector<std::string>& stems) {
  const json::Value doc = json::parse(text, source);
  if (!doc.is_object()) fail(source, ": not a split record (expected a JSON object)");
  std::unordered_map<std::string, int> index_of;
  for (size_t i = 0; i < stems.size(); ++i) index_of.emplace(stems[i], int(i));

  std::vector<char> taken(stems.size(), 0);
  Split split;
  for (auto [key, part] : {std::pair<const char*, std::vector<int>*>{"train", &split.train},
                           {"val", &split.val},
                           {"test", &split.test}}) {
    const json::Value* list = doc.find(key);
    if (!list || !list->is_array()) fail(source, ": not a split record (no \"", key, "\" list)");
    for (const json::Value& v : list->as_array()) {
      if (!v.is_string())
        fail(source, ": \"", key, "\" holds a ", json::kind_name(v.kind()),
             ", expected image names");
      const auto it = index_of.find(v.as_string());
      if (it == index_of.end())
        fail(source, ": the data no longer contains ", v.as_string(), " (in \"", key,
             "\"); train on the same data folder and --limit, or start a new run");
      if (taken[size_t(it->second)]++) fail(source, ": names ", v.as_string(), " twice");
      part->push_back(it->second);
    }
  }
  sort_parts(split);
  return split;
}

}  // namespace unetcu::data
