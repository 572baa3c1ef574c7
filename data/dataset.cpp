// data/dataset.cpp: find_pairs (directory scan and pairing) and load_dataset (parallel decode,
// resize and mask binarisation).
#include "data/dataset.h"

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <sstream>

#include "data/image.h"
#include "engine/error.h"

namespace unetcu::data {

namespace fs = std::filesystem;

namespace {

constexpr const char* kMaskSuffix = "_segmentation.png";
constexpr size_t kMaxListed = 10;  // names listed in a pairing error before "and N more"

std::string lower(std::string s) {
  for (auto& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void require_dir(const fs::path& p, const char* what) {
  std::error_code ec;
  if (!fs::is_directory(p, ec))
    fail(what, " not found: ", p.string(),
         " (expected DIR/images/<stem>.jpg and DIR/masks/<stem>_segmentation.png)");
}

// Regular files directly inside dir, by file name.
std::vector<std::string> file_names(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec)) names.push_back(it->path().filename().string());
  if (ec) fail("cannot list ", dir.string(), ": ", ec.message());
  return names;
}

std::string list_some(const std::vector<std::string>& names) {
  std::ostringstream os;
  for (size_t i = 0; i < names.size() && i < kMaxListed; ++i) os << (i ? ", " : "") << names[i];
  if (names.size() > kMaxListed) os << " and " << names.size() - kMaxListed << " more";
  return os.str();
}

enum class MaskKind { kZero255, kZeroOne, kOther };

MaskKind classify_mask(const std::vector<uint8_t>& mask) {
  bool only_0_255 = true, only_0_1 = true;
  for (uint8_t v : mask) {
    only_0_255 &= (v == 0 || v == 255);
    only_0_1 &= (v <= 1);
  }
  if (only_0_255) return MaskKind::kZero255;
  if (only_0_1) return MaskKind::kZeroOne;
  return MaskKind::kOther;
}

// Decodes one pair into its slots; returns true when the mask had to be thresholded.
bool load_one(const Sample& s, int size, uint8_t* image_out, uint8_t* mask_out) {
  const Image img = read_image(s.image_path, 3);
  const Image raw_mask = read_image(s.mask_path, 0);
  if (raw_mask.width != img.width || raw_mask.height != img.height)
    fail(s.mask_path, ": mask ", raw_mask.width, "x", raw_mask.height, " but image ", img.width,
         "x", img.height, " (", s.image_path, ")");

  std::vector<uint8_t> mask(size_t(img.width) * img.height);
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = raw_mask.pixels[i * raw_mask.channels];

  // Resize the mask as 0/255 coverage so that thresholding at 128 keeps a pixel when at least
  // half of the source area it covers is lesion.
  const MaskKind kind = classify_mask(mask);
  for (auto& v : mask) {
    const bool lesion = kind == MaskKind::kZeroOne ? v != 0 : v >= 128;
    v = lesion ? 255 : 0;
  }
  resize_image(image_out, size, size, img.pixels.data(), img.width, img.height, 3);
  resize_image(mask_out, size, size, mask.data(), img.width, img.height, 1);
  for (size_t i = 0; i < size_t(size) * size; ++i) mask_out[i] = mask_out[i] >= 128 ? 1 : 0;
  return kind == MaskKind::kOther;
}

}  // namespace

std::vector<Sample> find_pairs(const std::string& dir) {
  const fs::path root(dir), image_dir = root / "images", mask_dir = root / "masks";
  require_dir(root, "data folder");
  require_dir(image_dir, "image folder");
  require_dir(mask_dir, "mask folder");

  std::map<std::string, std::string> images;  // stem -> file name
  for (const auto& name : file_names(image_dir)) {
    const fs::path p(name);
    const std::string ext = lower(p.extension().string());
    if (ext != ".jpg" && ext != ".jpeg" && ext != ".png") continue;
    const std::string stem = p.stem().string();
    auto [it, inserted] = images.emplace(stem, name);
    if (!inserted)
      fail("two images with the same name in ", image_dir.string(), ": ", it->second, " and ", name,
           " (keep one)");
  }
  std::map<std::string, std::string> masks;  // stem -> file name
  for (const auto& name : file_names(mask_dir)) {
    const std::string low = lower(name);
    if (!ends_with(low, kMaskSuffix)) continue;
    masks.emplace(name.substr(0, name.size() - std::string(kMaskSuffix).size()), name);
  }

  if (images.empty()) fail("no images (.jpg, .jpeg, .png) found in ", image_dir.string());
  if (masks.empty()) fail("no masks (<stem>", kMaskSuffix, ") found in ", mask_dir.string());

  std::vector<std::string> unmasked, orphan_masks;
  for (const auto& [stem, name] : images)
    if (!masks.count(stem)) unmasked.push_back(name);
  for (const auto& [stem, name] : masks)
    if (!images.count(stem)) orphan_masks.push_back(name);
  if (!unmasked.empty())
    fail(unmasked.size(), " image(s) in ", image_dir.string(), " have no mask <stem>", kMaskSuffix,
         " in ", mask_dir.string(), ": ", list_some(unmasked));
  if (!orphan_masks.empty())
    fail(orphan_masks.size(), " mask(s) in ", mask_dir.string(), " have no image in ",
         image_dir.string(), ": ", list_some(orphan_masks));

  // std::map iterates in byte order of the stem, which is the documented order.
  std::vector<Sample> pairs;
  for (const auto& [stem, name] : images)
    pairs.push_back({stem, (image_dir / name).string(), (mask_dir / masks.at(stem)).string()});
  return pairs;
}

Dataset load_dataset(const std::vector<Sample>& samples, int size, const LoadOptions& opt) {
  if (size <= 0) fail("load_dataset: size must be positive, got ", size);
  Dataset ds;
  ds.n = int(samples.size());
  ds.size = size;
  for (const auto& s : samples) {
    ds.stems.push_back(s.stem);
    ds.lesion_ids.push_back(s.lesion_id);
    ds.dxs.push_back(s.dx);
  }
  ds.images.resize(size_t(ds.n) * ds.image_bytes());
  ds.masks.resize(size_t(ds.n) * ds.mask_bytes());

  // Exceptions may not leave an OpenMP region: each item records its error, and the first one
  // in sample order is thrown afterwards so the message does not depend on thread timing.
  std::vector<std::string> errors(samples.size());
  std::vector<char> nonbinary(samples.size(), 0);
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int i = 0; i < ds.n; ++i) {
    try {
      nonbinary[i] = load_one(samples[i], size, ds.images.data() + i * ds.image_bytes(),
                              ds.masks.data() + i * ds.mask_bytes());
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  }

  const auto failed =
      std::count_if(errors.begin(), errors.end(), [](const std::string& e) { return !e.empty(); });
  if (failed > 0) {
    const auto first =
        std::find_if(errors.begin(), errors.end(), [](const std::string& e) { return !e.empty(); });
    if (failed == 1) fail(*first);
    fail(*first, " (and ", failed - 1, " more files failed)");
  }

  ds.n_nonbinary_masks = int(std::count(nonbinary.begin(), nonbinary.end(), 1));
  if (ds.n_nonbinary_masks > 0 && opt.warn) {
    const auto first = std::find(nonbinary.begin(), nonbinary.end(), 1) - nonbinary.begin();
    std::ostringstream os;
    os << ds.n_nonbinary_masks << " of " << ds.n
       << " masks had values other than 0 and 255 (first: " << samples[first].mask_path
       << "); they were thresholded at 128";
    opt.warn(os.str());
  }
  return ds;
}

}  // namespace unetcu::data
