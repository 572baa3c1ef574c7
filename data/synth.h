// data/synth.h: synthetic HAM10000-like dermoscopy images with exact lesion masks, for tests,
// benchmarks and GPU checks on machines without the real data set.
//
// Each picture: a skin-toned background (tone, lighting gradient, low-frequency mottling, sensor
// noise), one irregular pigmented lesion near the centre (a star-shaped region whose radius is a
// sum of a few low-frequency sinusoids of the angle, stretched and rotated; 2% to 70% of the
// frame), coloured brown / dark brown / reddish / bluish-grey with varied contrast, a fuzzy or
// sharp border, blotchy texture and dark globules, sometimes dark hairs across it, and dermoscope
// vignetting (a dark circular field of view or a gentle fall-off). The mask is the lesion inside
// the field of view; hair does not change it, as in the ISIC ground truth. The lesion is always
// darker than the skin around it, so a network can learn it, but contrast, hair and vignetting
// keep it from being a brightness threshold.
#pragma once

#include <cstdint>
#include <string>

namespace unetcu::data {

// Renders one picture: rgb is height x width x 3, mask height x width with values 0 or 255.
// The same (width, height, image_seed) gives the same bytes every time.
void synth_image(uint8_t* rgb, uint8_t* mask, int width, int height, uint64_t image_seed);

// Writes `count` pictures in the find_pairs layout:
//   out_dir/images/ISIC_%07d.jpg              (JPEG, quality 90)
//   out_dir/masks/ISIC_%07d_segmentation.png  (single-channel PNG, 0/255)
// numbered 0 .. count-1; picture k uses derive_seed(seed, k), so the files are byte-identical
// from run to run and independent of the thread count. Folders are created; existing files with
// the same names are overwritten. Throws unetcu::Error when a folder or file cannot be written.
void synth_dataset(const std::string& out_dir, int count, uint64_t seed, int width = 600,
                   int height = 450);

}  // namespace unetcu::data
