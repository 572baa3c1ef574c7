// tests/cpu/test_stats.cpp: compute_stats on a hand-built set whose answers are known from the
// masks written: lesion fractions, histogram, empty / possibly inverted / non-binary masks,
// image sizes, diagnoses, images per lesion, and a pair that cannot be used.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "cpu/data_files.h"
#include "data/dataset.h"
#include "data/stats.h"

namespace fs = std::filesystem;
using namespace unetcu;
using namespace unetcu::data;
using namespace unetcu::test;

TEST_CASE("stats: numbers of a constructed set") {
  TempDir t;
  const fs::path images = t.path / "images", masks = t.path / "masks";
  // Five 4x4 pairs and one 8x2 pair (16 pixels each), masks chosen for their lesion fraction:
  //   a: empty (0)            b: 4 of 16 (0.25)      c: all lesion (1, corners: inverted)
  //   d: 8 of 16 (0.5) soft   e: mask 4x3 vs image 4x4 (unusable)   f: 8x2, 2 of 16 (0.125)
  auto image = [&](const std::string& stem, int w, int h) {
    write_png(images / (stem + ".png"), w, h, 3, std::vector<uint8_t>(size_t(w) * h * 3, 60));
  };
  auto mask = [&](const std::string& stem, int w, int h, const std::vector<uint8_t>& m) {
    write_png(masks / (stem + "_segmentation.png"), w, h, 1, m);
  };
  std::vector<uint8_t> b(16, 0), d(16, 0), f(16, 0);
  for (int i : {5, 6, 9, 10}) b[size_t(i)] = 255;
  for (int i = 0; i < 8; ++i) d[size_t(i)] = 200;  // 200 >= 128: lesion, but not 0/255
  f[3] = f[4] = 255;
  for (const char* s : {"a", "b", "c", "d", "e"}) image(s, 4, 4);
  image("f", 8, 2);
  mask("a", 4, 4, std::vector<uint8_t>(16, 0));
  mask("b", 4, 4, b);
  mask("c", 4, 4, std::vector<uint8_t>(16, 255));
  mask("d", 4, 4, d);
  mask("e", 4, 3, std::vector<uint8_t>(12, 0));
  mask("f", 8, 2, f);
  touch(t.path / "HAM10000_metadata.csv",
        "lesion_id,image_id,dx\nL1,a,nv\nL1,b,nv\nL2,c,mel\nL3,d,nv\nL3,e,nv\nL3,f,bkl\n");

  const auto samples = find_pairs(t.str());
  REQUIRE(samples.size() == 6);
  StatsOptions opt;
  opt.bins = 4;
  const DatasetStats st = compute_stats(samples, opt);
  CHECK(st.n_pairs == 6);
  CHECK(st.n_usable == 5);
  REQUIRE(st.unusable.size() == 1);
  CHECK(contains(st.unusable[0], "e_segmentation.png"));
  CHECK(contains(st.unusable[0], "mask 4x3 but image 4x4"));

  CHECK(st.stems == std::vector<std::string>{"a", "b", "c", "d", "f"});
  const std::vector<double> fractions = {0.0, 0.25, 1.0, 0.5, 0.125};
  REQUIRE(st.lesion_fraction.size() == fractions.size());
  for (size_t i = 0; i < fractions.size(); ++i) CHECK(st.lesion_fraction[i] == fractions[i]);
  // Bins [0, .25) [.25, .5) [.5, .75) [.75, 1]: {0, 0.125}, {0.25}, {0.5}, {1}.
  CHECK(st.fraction_histogram == std::vector<int>{2, 1, 1, 1});
  CHECK(st.fraction_mean == doctest::Approx(1.875 / 5));
  CHECK(st.fraction_median == 0.25);
  CHECK(st.fraction_min == 0.0);
  CHECK(st.fraction_max == 1.0);

  CHECK(st.empty_masks == std::vector<std::string>{"a"});
  CHECK(st.inverted_masks == std::vector<std::string>{"c"});
  CHECK(st.nonbinary_masks == std::vector<std::string>{"d"});
  using Counts = std::vector<std::pair<std::string, int>>;
  CHECK(st.image_sizes == Counts{{"4x4", 4}, {"8x2", 1}});
  // Diagnoses count every pair found (the unusable one too): nv a,b,d,e; mel c; bkl f.
  CHECK(st.diagnoses == Counts{{"nv", 4}, {"bkl", 1}, {"mel", 1}});
  // Lesions: L1 {a,b}, L2 {c}, L3 {d,e,f}.
  CHECK(st.n_lesions == 3);
  CHECK(st.images_per_lesion == std::vector<std::pair<int, int>>{{1, 1}, {2, 1}, {3, 1}});

  // The result does not depend on the thread count.
  StatsOptions one = opt;
  one.threads = 1;
  const DatasetStats again = compute_stats(samples, one);
  CHECK(again.lesion_fraction == st.lesion_fraction);
  CHECK(again.unusable == st.unusable);
}
