// data/stats.h: what is in a dataset, for `unetcu stats`: image sizes, diagnoses, how much of
// each image the lesion covers, and masks worth a look (empty, possibly inverted, non-binary),
// plus images per lesion. Masks are decoded at their own size with read_mask (the same
// binarisation training uses); images only have their header read, so a HAM10000-sized set
// takes seconds.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "data/dataset.h"

namespace unetcu::data {

struct StatsOptions {
  int threads = 0;  // 0 = all cores (OpenMP default)
  int bins = 20;    // lesion-fraction histogram bins over [0, 1]
};

struct DatasetStats {
  int n_pairs = 0;   // pairs examined
  int n_usable = 0;  // pairs whose image header and mask were read and whose sizes agree
  // (label, count), most frequent first, ties by label: "600x450"; diagnoses use "unknown" for
  // pairs without one.
  std::vector<std::pair<std::string, int>> image_sizes;
  std::vector<std::pair<std::string, int>> diagnoses;
  // Per usable pair, in sample order: the fraction of mask pixels that are lesion.
  std::vector<std::string> stems;
  std::vector<double> lesion_fraction;
  // bins equal intervals [k/bins, (k+1)/bins); a fraction of exactly 1 falls in the last one.
  std::vector<int> fraction_histogram;
  double fraction_mean = 0, fraction_median = 0, fraction_min = 0, fraction_max = 0;
  std::vector<std::string> empty_masks;     // stems: no lesion pixel
  std::vector<std::string> inverted_masks;  // stems: all four corners lesion
  std::vector<std::string> nonbinary_masks; // stems: thresholded at half range
  std::vector<std::string> unusable;        // error messages naming the file
  // Lesions (pairs with a lesion_id), and (images per lesion, number of lesions) ascending.
  int n_lesions = 0;
  std::vector<std::pair<int, int>> images_per_lesion;
};

// Never throws for a bad file: it is counted in `unusable` and the rest goes on.
DatasetStats compute_stats(const std::vector<Sample>& samples, const StatsOptions& opt = {});

}  // namespace unetcu::data
