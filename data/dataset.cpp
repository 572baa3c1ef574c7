// data/dataset.cpp: pair_files (directory scan, pairing, metadata) and load_dataset (parallel
// decode, resize, mask binarisation, skipping bad pairs, inverted-mask handling).
#include "data/dataset.h"

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>

#include "data/image.h"
#include "engine/error.h"

namespace unetcu::data {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  for (auto& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void require_dir(const fs::path& p, const char* what, const DataSource& src) {
  std::error_code ec;
  if (!fs::is_directory(p, ec))
    fail(what, " not found: ", p.string(), " (layout: ", src.description, ")");
}

// Regular files directly inside dir, by file name.
std::vector<std::string> file_names(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec)) names.push_back(it->path().filename().string());
  if (ec) fail("cannot list ", dir.string(), ": ", ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

std::string stem_of(const std::string& file_name) { return fs::path(file_name).stem().string(); }

// What load_one noticed about one pair.
struct OneResult {
  bool thresholded = false;
  bool corners_lesion = false;
};

// Decodes one pair into its slots.
OneResult load_one(const Sample& s, int size, bool fix_inverted, uint8_t* image_out,
                   uint8_t* mask_out) {
  const Image img = read_image(s.image_path, 3);
  Mask mask = read_mask(s.mask_path);
  if (mask.width != img.width || mask.height != img.height)
    fail(s.mask_path, ": mask ", mask.width, "x", mask.height, " but image ", img.width, "x",
         img.height, " (", s.image_path, ")");
  OneResult r;
  r.thresholded = mask.thresholded;
  r.corners_lesion = mask.corners_all_lesion();
  if (r.corners_lesion && fix_inverted)
    for (auto& v : mask.pixels) v = uint8_t(255 - v);
  // Resize the mask as 0/255 coverage so that thresholding at 128 keeps a pixel when at least
  // half of the source area it covers is lesion.
  resize_image(image_out, size, size, img.pixels.data(), img.width, img.height, 3);
  resize_image(mask_out, size, size, mask.pixels.data(), img.width, img.height, 1);
  for (size_t i = 0; i < size_t(size) * size; ++i) mask_out[i] = mask_out[i] >= 128 ? 1 : 0;
  return r;
}

// A Dataset with storage for samples[which[k]], k = 0.., and their names and metadata.
Dataset empty_dataset(const std::vector<Sample>& samples, const std::vector<int>& which,
                      int size) {
  Dataset ds;
  ds.n = int(which.size());
  ds.size = size;
  for (int i : which) {
    ds.stems.push_back(samples[i].stem);
    ds.lesion_ids.push_back(samples[i].lesion_id);
    ds.dxs.push_back(samples[i].dx);
  }
  ds.allocate();
  return ds;
}

}  // namespace

Pairing pair_files(const DataSource& src, bool skip_unpaired) {
  for (const auto& dir : src.image_dirs) require_dir(dir, "image folder", src);
  require_dir(src.mask_dir, "mask folder", src);
  const std::string suffix = lower(src.mask_suffix);
  const std::string mask_pattern = "<stem>" + src.mask_suffix + ".png|.jpg|.bmp";

  std::map<std::string, fs::path> images;  // stem -> path
  for (const auto& dir : src.image_dirs) {
    // Masks kept beside their images (--images and --masks naming one folder) are not images.
    const bool shared = fs::path(dir) == fs::path(src.mask_dir);
    for (const auto& name : file_names(dir)) {
      if (!has_image_extension(name)) continue;
      const std::string stem = stem_of(name), low = lower(stem);
      if (ends_with(low, "_superpixels")) continue;  // ISIC 2017 superpixel maps
      if (shared && ends_with(low, suffix)) continue;
      auto [it, inserted] = images.emplace(stem, fs::path(dir) / name);
      if (!inserted)
        fail("two images with the same name: ", it->second.string(), " and ",
             (fs::path(dir) / name).string(), " (keep one)");
    }
  }
  std::map<std::string, std::string> masks;  // stem -> file name
  int other_images_in_mask_dir = 0;
  for (const auto& name : file_names(src.mask_dir)) {
    if (!has_image_extension(name)) continue;
    const std::string full_stem = stem_of(name);
    if (!ends_with(lower(full_stem), suffix) || full_stem.size() == suffix.size()) {
      ++other_images_in_mask_dir;
      continue;
    }
    const std::string stem = full_stem.substr(0, full_stem.size() - suffix.size());
    auto [it, inserted] = masks.emplace(stem, name);
    if (!inserted)
      fail("two masks for ", stem, " in ", src.mask_dir, ": ", it->second, " and ", name,
           " (keep one)");
  }

  std::string image_dirs;
  for (const auto& dir : src.image_dirs) image_dirs += (image_dirs.empty() ? "" : " and ") + dir;
  if (images.empty()) fail("no images (.jpg, .jpeg, .png, .bmp) found in ", image_dirs);
  if (masks.empty()) {
    if (other_images_in_mask_dir > 0 && suffix != "")
      fail("no masks (", mask_pattern, ") found in ", src.mask_dir, "; it holds ",
           other_images_in_mask_dir, " image file(s) named otherwise: give their suffix with "
           "--mask-suffix (--mask-suffix '' when a mask has its image's name)");
    fail("no masks (", mask_pattern, ") found in ", src.mask_dir);
  }

  Pairing p;
  std::vector<std::string> unmasked, orphan_masks;
  for (const auto& [stem, path] : images)
    if (!masks.count(stem)) unmasked.push_back(path.filename().string());
  for (const auto& [stem, name] : masks)
    if (!images.count(stem)) orphan_masks.push_back(name);
  if (!skip_unpaired) {
    if (!unmasked.empty())
      fail(unmasked.size(), " image(s) in ", image_dirs, " have no mask ", mask_pattern, " in ",
           src.mask_dir, ": ", list_names(unmasked));
    if (!orphan_masks.empty())
      fail(orphan_masks.size(), " mask(s) in ", src.mask_dir, " have no image in ", image_dirs,
           ": ", list_names(orphan_masks));
  }
  p.unpaired = unmasked;
  p.unpaired.insert(p.unpaired.end(), orphan_masks.begin(), orphan_masks.end());

  const Metadata meta = read_source_metadata(src);
  const bool has_metadata = !src.metadata_csv.empty() || !src.groundtruth_csv.empty();
  // std::map iterates in byte order of the stem, which is the documented order.
  for (const auto& [stem, path] : images) {
    auto m = masks.find(stem);
    if (m == masks.end()) continue;
    Sample s;
    s.stem = stem;
    s.image_path = path.string();
    s.mask_path = (fs::path(src.mask_dir) / m->second).string();
    auto row = meta.find(stem);
    if (row != meta.end()) {
      s.lesion_id = row->second.lesion_id;
      s.dx = row->second.dx;
    } else if (has_metadata) {
      ++p.n_without_metadata;
    }
    p.samples.push_back(std::move(s));
  }
  if (p.samples.empty())
    fail("no image/mask pairs in ", image_dirs, " and ", src.mask_dir, " (", unmasked.size(),
         " images without a mask, ", orphan_masks.size(), " masks without an image)");
  return p;
}

std::string list_names(const std::vector<std::string>& names, const char* separator) {
  constexpr size_t kMaxListed = 10;
  std::ostringstream os;
  for (size_t i = 0; i < names.size() && i < kMaxListed; ++i) os << (i ? separator : "") << names[i];
  if (names.size() > kMaxListed) os << " and " << names.size() - kMaxListed << " more";
  return os.str();
}

std::vector<Sample> find_pairs(const std::string& dir) {
  return pair_files(detect_source(dir)).samples;
}

Dataset load_dataset(const std::vector<Sample>& samples, int size, const LoadOptions& opt) {
  if (size <= 0) fail("load_dataset: size must be positive, got ", size);
  std::vector<int> all(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) all[i] = int(i);
  Dataset ds = empty_dataset(samples, all, size);

  // Exceptions may not leave an OpenMP region: each item records its error, and the first one
  // in sample order is thrown afterwards so the message does not depend on thread timing.
  std::vector<std::string> errors(samples.size());
  std::vector<OneResult> results(samples.size());
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int i = 0; i < ds.n; ++i) {
    try {
      results[i] = load_one(samples[i], size, opt.fix_inverted, ds.writable_image(i),
                            ds.writable_mask(i));
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  }

  std::vector<int> kept;
  std::vector<std::string> failures;
  for (int i = 0; i < ds.n; ++i) {
    if (errors[i].empty())
      kept.push_back(i);
    else
      failures.push_back(errors[i]);
  }
  if (!failures.empty() && (!opt.skip_bad || kept.empty())) {
    const std::string more =
        failures.size() > 1 ? " (and " + std::to_string(failures.size() - 1) + " more files failed)"
                            : "";
    if (kept.empty() && opt.skip_bad)
      fail("none of the ", samples.size(), " pairs can be used: ", failures[0], more);
    fail(failures[0], more);
  }
  if (!failures.empty()) {
    // Copy the usable pairs into storage of the right size (only when something was skipped).
    Dataset compact = empty_dataset(samples, kept, size);
    for (int k = 0; k < compact.n; ++k) {
      std::memcpy(compact.writable_image(k), ds.image(kept[k]), ds.image_bytes());
      std::memcpy(compact.writable_mask(k), ds.mask(kept[k]), ds.mask_bytes());
    }
    ds = std::move(compact);
    ds.report.skipped = failures;
    if (opt.warn)
      opt.warn("--skip-bad: left out " + std::to_string(failures.size()) + " of " +
               std::to_string(samples.size()) + " pairs that cannot be used: " +
               list_names(failures, "; "));
  }

  std::vector<std::string> nonbinary;
  for (int i : kept) {
    if (results[i].thresholded) nonbinary.push_back(samples[i].mask_path);
    if (results[i].corners_lesion) ds.report.inverted.push_back(samples[i].stem);
  }
  ds.n_nonbinary_masks = int(nonbinary.size());
  ds.report.inverted_fixed = opt.fix_inverted && !ds.report.inverted.empty();
  if (!nonbinary.empty() && opt.warn) {
    std::ostringstream os;
    os << nonbinary.size() << " of " << ds.n
       << " masks had values other than 0 and 255 (first: " << nonbinary[0]
       << "); they were thresholded at half range (128, or 32768 for 16-bit masks)";
    opt.warn(os.str());
  }
  if (!ds.report.inverted.empty() && opt.warn) {
    std::ostringstream os;
    os << ds.report.inverted.size() << " of " << ds.n
       << " masks have all four corners marked as lesion (possibly inverted): "
       << list_names(ds.report.inverted)
       << (opt.fix_inverted ? "; flipped them (--fix-inverted-masks)"
                            : "; check them, or flip them with --fix-inverted-masks");
    opt.warn(os.str());
  }
  return ds;
}

}  // namespace unetcu::data
