// data/image.h: single-image I/O and resizing on interleaved uint8 pixels (row-major H x W x C).
//
//   probe_image / read_image_info   format, size, channels and bit depth from the header only
//   decode_image / read_image       decode JPEG, PNG (8 or 16 bit) or BMP with stb_image
//   decode_mask / read_mask         decode a mask and binarise it to 0/255 (the one place where
//                                   "what counts as lesion" is decided)
//   resize_image                    area averaging when shrinking, bilinear when enlarging
//   write_jpeg / write_png_gray     encode with stb_image_write (used by the synthetic generator)
//
// Errors are unetcu::Error naming the file (or the name given for a memory buffer) and the reason:
// empty file, unknown format (the signature is checked first, so a damaged JPEG is reported as a
// damaged JPEG and not as "not a PNG"), truncated or corrupt data, and images above
// kMaxImagePixels, which are refused from the header before any pixel memory is allocated.
// All functions are thread-safe (stb_image keeps its failure reason per thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace unetcu::data {

// The largest image accepted: 100 megapixels (HAM10000 images are 0.27 MP, the largest ISIC
// images about 30 MP). Decoding 100 MP as 16-bit RGBA would already take 800 MB.
constexpr int64_t kMaxImagePixels = 100'000'000;

struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels, interleaved
};

struct ImageInfo {
  int width = 0, height = 0;
  int channels = 0;            // as stored in the file (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA)
  int bits = 8;                // 8, or 16 for 16-bit PNG
  const char* format = "";     // "JPEG", "PNG" or "BMP"
};

// Whether a file name ends in .jpg, .jpeg, .png or .bmp (any case): the files taken as images.
bool has_image_extension(const std::string& file_name);

// Header only: format, size, channels, bit depth. Throws for an empty file, an unknown format,
// an unreadable header or an image above kMaxImagePixels.
ImageInfo probe_image(const uint8_t* bytes, size_t n, const std::string& name);
// The same from a file, reading only as much of it as the header needs.
ImageInfo read_image_info(const std::string& path);

// Decodes an image. channels = 1 or 3 converts (grey -> RGB replicates, RGBA -> RGB drops alpha,
// RGB -> grey is stb's luminance); channels = 0 keeps what the file holds (1-4). A 16-bit PNG is
// brought to 8 bits by keeping the high byte (v >> 8, what stb_image does), so 0..65535 maps
// onto 0..255 with every 8-bit level covering the same number of 16-bit values.
Image decode_image(const uint8_t* bytes, size_t n, const std::string& name, int channels);
Image read_image(const std::string& path, int channels);

// A mask binarised to 0/255 at its own size. The first channel decides (an RGB mask whose red
// channel marks the lesion works). Values: a mask holding only 0 and the full value (255, or
// 65535 for 16 bits) or only 0 and 1 (label images) is taken as is; anything else is thresholded
// at half range (>= 128, or >= 32768 for 16 bits) and `thresholded` is set.
struct Mask {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;  // height * width, 0 or 255
  bool thresholded = false;
  // Fraction of pixels that are lesion, and whether all four corner pixels are lesion (a hint
  // that foreground and background are swapped: lesions sit near the centre of a dermoscopy).
  double lesion_fraction() const;
  bool corners_all_lesion() const;
};
Mask decode_mask(const uint8_t* bytes, size_t n, const std::string& name);
Mask read_mask(const std::string& path);

// Resizes `in` (in_h x in_w x channels) into `out` (out_h x out_w x channels). Each axis is
// resampled on its own: when it shrinks, each output pixel is the exact area-weighted mean of the
// source pixels it covers (no aliasing, 4x4 -> 2x2 gives the block means); when it grows, pixel
// centres are interpolated linearly (half-pixel aligned, like align_corners=False). Results are
// rounded to nearest. Equal sizes copy the pixels unchanged.
void resize_image(uint8_t* out, int out_w, int out_h, const uint8_t* in, int in_w, int in_h,
                  int channels);

// Writes an RGB image as a baseline JPEG (quality 1-100). Throws unetcu::Error on failure.
void write_jpeg(const std::string& path, int width, int height, const uint8_t* rgb, int quality);
// Writes a single-channel 8-bit PNG. Throws unetcu::Error on failure.
void write_png_gray(const std::string& path, int width, int height, const uint8_t* gray);

}  // namespace unetcu::data
