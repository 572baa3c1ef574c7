// data/stats.cpp: compute_stats (parallel over pairs; the reductions run afterwards in sample
// order so that the result does not depend on the thread count).
#include "data/stats.h"

#include <omp.h>

#include <algorithm>
#include <map>

#include "data/image.h"
#include "engine/error.h"

namespace unetcu::data {

namespace {

struct PairFacts {
  std::string error;  // non-empty: unusable
  int width = 0, height = 0;
  double fraction = 0;
  bool thresholded = false, corners = false;
};

PairFacts examine(const Sample& s) {
  PairFacts f;
  try {
    const ImageInfo info = read_image_info(s.image_path);
    const Mask mask = read_mask(s.mask_path);
    if (mask.width != info.width || mask.height != info.height)
      fail(s.mask_path, ": mask ", mask.width, "x", mask.height, " but image ", info.width, "x",
           info.height, " (", s.image_path, ")");
    f.width = info.width;
    f.height = info.height;
    f.fraction = mask.lesion_fraction();
    f.thresholded = mask.thresholded;
    f.corners = mask.corners_all_lesion();
  } catch (const std::exception& e) {
    f.error = e.what();
  }
  return f;
}

// Counts sorted most frequent first, then by label.
std::vector<std::pair<std::string, int>> by_count(const std::map<std::string, int>& counts) {
  std::vector<std::pair<std::string, int>> v(counts.begin(), counts.end());
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return v;
}

}  // namespace

DatasetStats compute_stats(const std::vector<Sample>& samples, const StatsOptions& opt) {
  if (opt.bins <= 0) fail("compute_stats: bins must be positive, got ", opt.bins);
  std::vector<PairFacts> facts(samples.size());
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 8) num_threads(threads)
  for (int i = 0; i < int(samples.size()); ++i) facts[i] = examine(samples[i]);

  DatasetStats st;
  st.n_pairs = int(samples.size());
  st.fraction_histogram.assign(size_t(opt.bins), 0);
  std::map<std::string, int> sizes, dx;
  std::map<std::string, int> lesion_images;  // lesion_id -> images
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    dx[s.dx.empty() ? "unknown" : s.dx]++;
    if (!s.lesion_id.empty()) lesion_images[s.lesion_id]++;
    const PairFacts& f = facts[i];
    if (!f.error.empty()) {
      st.unusable.push_back(f.error);
      continue;
    }
    ++st.n_usable;
    sizes[std::to_string(f.width) + "x" + std::to_string(f.height)]++;
    st.stems.push_back(s.stem);
    st.lesion_fraction.push_back(f.fraction);
    st.fraction_histogram[std::min(opt.bins - 1, int(f.fraction * opt.bins))]++;
    if (f.fraction == 0) st.empty_masks.push_back(s.stem);
    if (f.corners) st.inverted_masks.push_back(s.stem);
    if (f.thresholded) st.nonbinary_masks.push_back(s.stem);
  }
  st.image_sizes = by_count(sizes);
  st.diagnoses = by_count(dx);

  if (!st.lesion_fraction.empty()) {
    std::vector<double> sorted = st.lesion_fraction;
    std::sort(sorted.begin(), sorted.end());
    const size_t n = sorted.size();
    double sum = 0;
    for (double v : sorted) sum += v;
    st.fraction_mean = sum / double(n);
    st.fraction_median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    st.fraction_min = sorted.front();
    st.fraction_max = sorted.back();
  }

  st.n_lesions = int(lesion_images.size());
  std::map<int, int> per_lesion;
  for (const auto& [id, count] : lesion_images) per_lesion[count]++;
  st.images_per_lesion.assign(per_lesion.begin(), per_lesion.end());
  return st;
}

}  // namespace unetcu::data
