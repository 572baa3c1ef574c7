// data/image.h: single-image I/O and resizing on interleaved uint8 pixels (row-major H x W x C).
//
//   read_image    decode a JPEG/PNG file with stb_image; errors name the file and the reason
//   resize_image  area averaging when shrinking, bilinear when enlarging, chosen per axis
//   write_jpeg / write_png   encode with stb_image_write (used by the synthetic generator)
//
// All functions are thread-safe (stb_image keeps its failure reason per thread).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace unetcu::data {

struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels, interleaved
};

// Decodes a JPEG or PNG file. channels = 1 or 3 converts (grey -> RGB replicates, RGBA -> RGB
// drops alpha, RGB -> grey is stb's luminance); channels = 0 keeps what the file holds (1-4).
// Throws unetcu::Error naming the file for a missing/unreadable file, a zero-byte file and
// anything stb_image cannot decode (truncated or damaged files, other formats); the message says
// which format the file claims to be.
Image read_image(const std::string& path, int channels);

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
