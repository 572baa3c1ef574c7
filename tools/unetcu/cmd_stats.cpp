// tools/unetcu/cmd_stats.cpp: `unetcu stats DATA [--out DIR]`: what is in a dataset folder.
//
// stdout: a text table (pairs, image sizes, diagnoses, lesion-fraction summary and histogram,
// empty / possibly inverted / non-binary masks, lesions and images per lesion, unusable files).
// With --out DIR: DIR/stats.json (the same numbers plus every image's lesion fraction),
// DIR/lesion_fraction.svg (the histogram: the recipe's exploratory plot) and, when diagnoses are
// known, DIR/diagnosis.svg. Unpaired and unreadable files are reported, not fatal: the command
// is meant for looking at a folder before training on it.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "data/stats.h"
#include "engine/error.h"
#include "engine/fileio.h"
#include "engine/json.h"
#include "tools/unetcu/args.h"
#include "tools/unetcu/charts.h"
#include "tools/unetcu/commands.h"

namespace fs = std::filesystem;

namespace unetcu::cli {
namespace {

std::string bin_label(int k, int bins) {
  return percent(double(k) / bins, 0) + "-" + percent(double(k + 1) / bins, 0);
}

// One "label  value" line of the table.
void row(std::ostringstream& os, const std::string& label, const std::string& value) {
  os << label << std::string(label.size() < 22 ? 22 - label.size() : 1, ' ') << value << "\n";
}

std::string count_and_names(const std::vector<std::string>& names) {
  return names.empty() ? "0" : std::to_string(names.size()) + ": " + data::list_names(names);
}

std::string table(const data::DatasetStats& st, size_t unpaired) {
  std::ostringstream os;
  row(os, "pairs", std::to_string(st.n_pairs));
  row(os, "unpaired files", std::to_string(unpaired));
  row(os, "unusable pairs", std::to_string(st.unusable.size()));
  std::string sizes;
  for (const auto& [size, count] : st.image_sizes)
    sizes += (sizes.empty() ? "" : ", ") + size + ": " + std::to_string(count);
  row(os, "image sizes", sizes.empty() ? "-" : sizes);
  for (const auto& [dx, count] : st.diagnoses)
    row(os, "diagnosis " + dx,
        std::to_string(count) + " (" + percent(double(count) / std::max(st.n_pairs, 1)) + ")");
  char summary[160];
  std::snprintf(summary, sizeof summary, "mean %.4f  median %.4f  min %.4f  max %.4f",
                st.fraction_mean, st.fraction_median, st.fraction_min, st.fraction_max);
  row(os, "lesion fraction", summary);
  const int bins = int(st.fraction_histogram.size());
  const int peak = std::max(1, *std::max_element(st.fraction_histogram.begin(),
                                                 st.fraction_histogram.end()));
  for (int k = 0; k < bins; ++k) {
    const int count = st.fraction_histogram[size_t(k)];
    std::string line = std::to_string(count);
    const std::string bar(size_t((count * 40 + peak - 1) / peak), '#');
    if (!bar.empty()) line += std::string(line.size() < 7 ? 7 - line.size() : 1, ' ') + bar;
    row(os, "  " + bin_label(k, bins), line);
  }
  row(os, "empty masks", count_and_names(st.empty_masks));
  row(os, "possibly inverted", count_and_names(st.inverted_masks));
  row(os, "non-binary masks", count_and_names(st.nonbinary_masks));
  if (st.n_lesions > 0) {
    std::string per;
    for (const auto& [images, lesions] : st.images_per_lesion)
      per += (per.empty() ? "" : ", ") + std::to_string(lesions) + " with " +
             std::to_string(images);
    row(os, "lesions", std::to_string(st.n_lesions) + " (images per lesion: " + per + ")");
  } else {
    row(os, "lesions", "unknown (no lesion ids in the metadata)");
  }
  for (const auto& e : st.unusable) row(os, "unusable", e);
  return os.str();
}

json::Value counts_json(const std::vector<std::pair<std::string, int>>& counts) {
  json::Object o;
  for (const auto& [label, count] : counts) o.emplace_back(label, count);
  return o;
}

json::Value names_json(const std::vector<std::string>& names) {
  json::Array a;
  for (const auto& n : names) a.push_back(n);
  return a;
}

std::string stats_json(const data::DatasetStats& st, const data::Pairing& pairs,
                       const std::string& dir) {
  json::Object o;
  o.emplace_back("data", dir);
  o.emplace_back("n_pairs", st.n_pairs);
  o.emplace_back("n_usable", st.n_usable);
  o.emplace_back("unpaired_files", names_json(pairs.unpaired));
  o.emplace_back("unusable", names_json(st.unusable));
  o.emplace_back("image_sizes", counts_json(st.image_sizes));
  o.emplace_back("diagnoses", counts_json(st.diagnoses));
  json::Object fraction;
  fraction.emplace_back("mean", st.fraction_mean);
  fraction.emplace_back("median", st.fraction_median);
  fraction.emplace_back("min", st.fraction_min);
  fraction.emplace_back("max", st.fraction_max);
  json::Array hist;
  for (int c : st.fraction_histogram) hist.push_back(c);
  fraction.emplace_back("histogram", hist);
  o.emplace_back("lesion_fraction", fraction);
  o.emplace_back("empty_masks", names_json(st.empty_masks));
  o.emplace_back("possibly_inverted_masks", names_json(st.inverted_masks));
  o.emplace_back("nonbinary_masks", names_json(st.nonbinary_masks));
  o.emplace_back("n_lesions", st.n_lesions);
  json::Object per_lesion;
  for (const auto& [images, lesions] : st.images_per_lesion)
    per_lesion.emplace_back(std::to_string(images), lesions);
  o.emplace_back("lesions_by_image_count", per_lesion);
  json::Object per_image;
  for (size_t i = 0; i < st.stems.size(); ++i)
    per_image.emplace_back(st.stems[i], st.lesion_fraction[i]);
  o.emplace_back("lesion_fraction_per_image", per_image);
  return json::dump_pretty(o) + "\n";
}

}  // namespace

int cmd_stats(int argc, char** argv) {
  Args a("stats", "stats DATA [--out DIR]");
  a.option("out", "", "also write DIR/stats.json, DIR/lesion_fraction.svg, DIR/diagnosis.svg");
  a.option("bins", "20", "bins of the lesion-fraction histogram");
  add_source_options(a);
  if (!a.parse(argc, argv, 2)) return 0;
  if (a.positional().size() != 1) fail("unetcu stats: expected one DATA folder");
  const std::string dir = a.positional()[0];
  const std::string out = a.str("out");
  if (!out.empty()) make_folder(out, "the output folder");  // before reading every image

  const data::Pairing pairs = find_folder_pairs(dir, source_options(a), true);
  data::StatsOptions opt;
  opt.bins = int(a.integer("bins", 1, 1000));
  const data::DatasetStats st = data::compute_stats(pairs.samples, opt);
  std::fputs(table(st, pairs.unpaired.size()).c_str(), stdout);

  if (out.empty()) return 0;
  write_file_atomic((fs::path(out) / "stats.json").string(), stats_json(st, pairs, dir));
  std::vector<std::string> bin_labels;
  for (int k = 0; k < opt.bins; ++k) bin_labels.push_back(bin_label(k, opt.bins));
  write_file_atomic((fs::path(out) / "lesion_fraction.svg").string(),
                    bar_chart_svg("Lesion area as a fraction of the image (" +
                                      std::to_string(st.n_usable) + " images)",
                                  "lesion fraction", bin_labels, st.fraction_histogram));
  std::vector<std::string> dx_labels;
  std::vector<int> dx_counts;
  for (const auto& [dx, count] : st.diagnoses)
    if (dx != "unknown") {
      dx_labels.push_back(dx);
      dx_counts.push_back(count);
    }
  if (!dx_labels.empty())
    write_file_atomic((fs::path(out) / "diagnosis.svg").string(),
                      bar_chart_svg("Diagnoses (" + std::to_string(st.n_pairs) + " images)",
                                    "diagnosis", dx_labels, dx_counts));
  std::fprintf(stderr, "stats: wrote %s\n", out.c_str());
  return 0;
}

}  // namespace unetcu::cli
