// data/dataset.h: finding image/mask pairs on disk and decoding them into one in-memory set.
//
// Where the files are comes from a DataSource (data/layout.h: the HAM10000 and ISIC layouts are
// recognised, or folders are named explicitly); pair_files lists the image/mask pairs with their
// metadata, load_dataset decodes them.
//
// A Dataset holds every image resized to size x size, uint8 RGB, NHWC, and every mask as 0/1
// bytes (NHW): all images in one block, then all masks in another. The blocks are either owned
// memory (allocate()) or a read-only view of a memory-mapped cache file (data/cache.h); callers
// read through image(i) / mask(i) and never need to know which.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/layout.h"

namespace unetcu::data {

struct Sample {
  std::string stem;        // file name without extension, e.g. ISIC_0024306
  std::string image_path;  // e.g. DIR/images/<stem>.jpg
  std::string mask_path;   // e.g. DIR/masks/<stem>_segmentation.png
  // From the dataset's metadata when it has any (HAM10000_metadata.csv, GroundTruth.csv);
  // empty when unknown. lesion_id groups images of one lesion for the lesion split.
  std::string lesion_id;
  std::string dx;          // diagnosis: mel, nv, bcc, akiec, bkl, df, vasc
};

struct Pairing {
  std::vector<Sample> samples;  // sorted by stem (byte order): the same on every file system
  // With skip_unpaired: the file names of images without a mask and masks without an image.
  std::vector<std::string> unpaired;
  // Pairs that have no row in the metadata, when the source has a metadata file.
  int n_without_metadata = 0;
};

// Lists the image/mask pairs of a source and fills lesion_id/dx from its metadata. Images are
// .jpg/.jpeg/.png/.bmp (any case) in the image folders, except ISIC's <stem>_superpixels.png;
// a mask is <stem><suffix>.<image extension> with the suffix in any case; other files are
// ignored. Throws unetcu::Error naming the folder or files when a folder is missing, when
// nothing is found (with a hint when the mask folder holds images under other names), when two
// images or two masks share a stem (a.jpg and a.png), and, unless skip_unpaired, when an image
// has no mask or a mask has no image (the first few names are listed).
Pairing pair_files(const DataSource& src, bool skip_unpaired = false);

// For messages: the first 10 items joined by separator, then "and N more".
std::string list_names(const std::vector<std::string>& names, const char* separator = ", ");

// pair_files(detect_source(dir)).samples: every pair of a recognised layout, or an error.
std::vector<Sample> find_pairs(const std::string& dir);

// What load_dataset noticed besides n_nonbinary_masks.
struct LoadReport {
  // With LoadOptions::skip_bad: one error message (naming the file) per pair left out.
  std::vector<std::string> skipped;
  // Stems of the masks whose four corner pixels are all lesion (possibly inverted), in order.
  std::vector<std::string> inverted;
  bool inverted_fixed = false;  // those masks were flipped (LoadOptions::fix_inverted)
};

struct Dataset {
  int n = 0;     // number of images
  int size = 0;  // every image and mask is size x size
  std::vector<std::string> stems;
  std::vector<std::string> lesion_ids;  // per image, from Sample::lesion_id ("" if unknown)
  std::vector<std::string> dxs;         // per image, from Sample::dx ("" if unknown)
  // Masks whose pixels were not all 0/255 (or all 0/1) and were therefore thresholded at half
  // range (data/image.h, Mask).
  int n_nonbinary_masks = 0;
  LoadReport report;

  size_t image_bytes() const { return size_t(size) * size * 3; }
  size_t mask_bytes() const { return size_t(size) * size; }
  const uint8_t* image(int i) const { return images_ + size_t(i) * image_bytes(); }
  const uint8_t* mask(int i) const { return masks_ + size_t(i) * mask_bytes(); }

  // Storage. allocate() gives fresh zeroed memory for n images of size x size (set n and size
  // first) that writable_image/writable_mask fill; view() points the Dataset at blocks that
  // `owner` keeps alive (a file mapping). Copies of a Dataset share the pixels.
  void allocate() {
    const size_t total = size_t(n) * (image_bytes() + mask_bytes());
    std::shared_ptr<uint8_t[]> block(new uint8_t[total]());
    writable_ = block.get();
    images_ = writable_;
    masks_ = writable_ + size_t(n) * image_bytes();
    storage_ = std::move(block);
  }
  void view(std::shared_ptr<const void> owner, const uint8_t* images, const uint8_t* masks) {
    storage_ = std::move(owner);
    images_ = images;
    masks_ = masks;
    writable_ = nullptr;
  }
  uint8_t* writable_image(int i) { return writable_ + size_t(i) * image_bytes(); }
  uint8_t* writable_mask(int i) {
    return writable_ + size_t(n) * image_bytes() + size_t(i) * mask_bytes();
  }

 private:
  std::shared_ptr<const void> storage_;  // owns what images_ and masks_ point into
  const uint8_t* images_ = nullptr;      // n * size * size * 3, RGB
  const uint8_t* masks_ = nullptr;       // n * size * size, values 0 or 1
  uint8_t* writable_ = nullptr;          // images then masks, for allocate()d storage only
};

struct LoadOptions {
  int threads = 0;  // decoding threads; 0 = all cores (OpenMP default)
  // Called once per kind of finding (non-binary masks, skipped pairs, possibly inverted masks)
  // with a one-line warning. Left empty, findings are only recorded in the Dataset.
  std::function<void(const std::string&)> warn;
  // Leave out pairs that cannot be used (unreadable, corrupt, too large, mask size differs)
  // instead of failing; they are listed in Dataset::report.skipped and one warning.
  bool skip_bad = false;
  // Flip (1 - m) the masks whose four corners are all lesion; without it they are only reported.
  bool fix_inverted = false;
};

// Decodes every sample (in parallel, output in the order of `samples`) and resizes it to
// size x size: images with area averaging when shrinking and bilinear when enlarging; masks the
// same way as 0/255 and then thresholded back to 0/1 at 128.
//  - Grey and RGBA images become RGB, 16-bit PNGs 8-bit (data/image.h); masks are binarised by
//    read_mask: 0/255 and 0/1 masks (0/65535 for 16 bits) are taken as is, any other mask is
//    thresholded at half range and counted in n_nonbinary_masks (one warning, not an error).
//  - Masks with all four corners lesion are listed in report.inverted (one warning) and, with
//    opt.fix_inverted, flipped before resizing.
// Throws unetcu::Error naming the file for an unreadable, empty, corrupt or too large image or
// mask, and for a mask whose size differs from its image's ("mask 600x400 but image 600x450").
// When several files fail, the first in sample order is reported with the number of others.
// With opt.skip_bad those pairs are left out instead (Dataset::n shrinks); if none is left, the
// error is thrown all the same.
Dataset load_dataset(const std::vector<Sample>& samples, int size, const LoadOptions& opt = {});

}  // namespace unetcu::data
