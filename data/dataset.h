// data/dataset.h: finding image/mask pairs on disk and decoding them into one in-memory set.
//
// Layout (Kaggle HAM10000 / ISIC style):
//   DIR/images/<stem>.jpg | .jpeg | .png      (extensions in any case)
//   DIR/masks/<stem>_segmentation.png
//
// A Dataset holds every image resized to size x size, uint8 RGB, NHWC, and every mask as 0/1
// bytes (NHW). Image i is at images[i * size * size * 3], mask i at masks[i * size * size]; use
// image(i) / mask(i) rather than the offsets so that the storage can later become a
// memory-mapped cache without touching the callers.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace unetcu::data {

struct Sample {
  std::string stem;        // file name without extension, e.g. ISIC_0024306
  std::string image_path;  // DIR/images/<stem>.<ext>
  std::string mask_path;   // DIR/masks/<stem>_segmentation.png
  // From the dataset's metadata when it has any (HAM10000_metadata.csv, GroundTruth.csv);
  // empty when unknown. lesion_id groups images of one lesion for the lesion split.
  std::string lesion_id;
  std::string dx;          // diagnosis: mel, nv, bcc, akiec, bkl, df, vasc
};

// Lists the pairs under dir, sorted by stem (byte order), so the result is the same on every
// file system. Throws unetcu::Error naming the folder or files when dir, dir/images or dir/masks
// is missing, when nothing is found, when an image has no mask or a mask has no image (the first
// few names are listed), or when two images share a stem (a.jpg and a.png).
std::vector<Sample> find_pairs(const std::string& dir);

struct Dataset {
  int n = 0;     // number of images
  int size = 0;  // every image and mask is size x size
  std::vector<std::string> stems;
  std::vector<std::string> lesion_ids;  // per image, from Sample::lesion_id ("" if unknown)
  std::vector<std::string> dxs;         // per image, from Sample::dx ("" if unknown)
  std::vector<uint8_t> images;  // n * size * size * 3, RGB
  std::vector<uint8_t> masks;   // n * size * size, values 0 or 1
  // Masks whose pixels were not all 0/255 (or all 0/1) and were therefore thresholded at 128.
  int n_nonbinary_masks = 0;

  size_t image_bytes() const { return size_t(size) * size * 3; }
  size_t mask_bytes() const { return size_t(size) * size; }
  const uint8_t* image(int i) const { return images.data() + size_t(i) * image_bytes(); }
  const uint8_t* mask(int i) const { return masks.data() + size_t(i) * mask_bytes(); }
};

struct LoadOptions {
  int threads = 0;  // decoding threads; 0 = all cores (OpenMP default)
  // Called at most once per load_dataset with a one-line warning (e.g. how many masks were not
  // 0/255). Left empty, warnings are only counted in the Dataset.
  std::function<void(const std::string&)> warn;
};

// Decodes every sample (in parallel, output in the order of `samples`) and resizes it to
// size x size: images with area averaging when shrinking and bilinear when enlarging; masks the
// same way as 0/255 and then thresholded back to 0/1 at 128.
//  - Grey and RGBA images become RGB; a mask with several channels keeps its first channel.
//  - A mask of only 0/255 or only 0/1 is taken as is; any other mask is thresholded at 128 and
//    counted in n_nonbinary_masks (one warning through opt.warn, not an error).
// Throws unetcu::Error naming the file for an unreadable, empty or corrupt image or mask, and for
// a mask whose size differs from its image's ("mask 600x400 but image 600x450"). When several
// files fail, the first in sample order is reported with the number of others.
Dataset load_dataset(const std::vector<Sample>& samples, int size, const LoadOptions& opt = {});

}  // namespace unetcu::data
