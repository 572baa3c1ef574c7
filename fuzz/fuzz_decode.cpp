// fuzz/fuzz_decode.cpp: libFuzzer target over what every dataset file goes through: the header
// probe, decoding as an image (to RGB) and as a mask (binarised), and the area/bilinear resize
// both ways. Any input must end in pixels or in a unetcu::Error; a crash, a sanitizer report, a
// leak or an uncaught exception of another type is a bug.
//
// Inputs whose header declares more than kFuzzPixels are only probed: decoding them is correct
// but slow (up to data::kMaxImagePixels), and speed is what finds bugs here; the pixel limit
// itself is covered by the unit tests.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "data/image.h"
#include "engine/error.h"

namespace {

constexpr int64_t kFuzzPixels = 1 << 16;

void resize_both_ways(const uint8_t* pixels, int w, int h, int channels) {
  std::vector<uint8_t> small(size_t(7) * 5 * channels), large(size_t(w + 3) * (h + 2) * channels);
  unetcu::data::resize_image(small.data(), 7, 5, pixels, w, h, channels);
  unetcu::data::resize_image(large.data(), w + 3, h + 2, pixels, w, h, channels);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace unetcu::data;
  try {
    const ImageInfo info = probe_image(data, size, "input");
    if (int64_t(info.width) * info.height > kFuzzPixels) return 0;
  } catch (const unetcu::Error&) {
    return 0;
  }
  try {
    const Image img = decode_image(data, size, "input", 3);
    if (img.pixels.size() != size_t(img.width) * img.height * 3) __builtin_trap();
    resize_both_ways(img.pixels.data(), img.width, img.height, 3);
  } catch (const unetcu::Error&) {
  }
  try {
    const Mask mask = decode_mask(data, size, "input");
    if (mask.pixels.size() != size_t(mask.width) * mask.height) __builtin_trap();
    for (uint8_t v : mask.pixels)
      if (v != 0 && v != 255) __builtin_trap();
    const double f = mask.lesion_fraction();
    if (!(f >= 0 && f <= 1)) __builtin_trap();
    mask.corners_all_lesion();
    resize_both_ways(mask.pixels.data(), mask.width, mask.height, 1);
  } catch (const unetcu::Error&) {
  }
  return 0;
}
