// data/prediction.h: turning the network's output into files a person or a script can use:
// probabilities brought back to an image's original size, thresholded masks, outlines drawn
// over the image, and .npy arrays that numpy reads as they are.
//
//   resize_probs   bilinear, half-pixel aligned (PyTorch's interpolate(mode="bilinear",
//                  align_corners=False) when enlarging); equal sizes copy exactly
//   outline        the boundary pixels of a 0/1 mask, thickened to a visible width
//   encode_png / encode_npy   file bytes in memory, so callers write them with
//                  write_file_atomic and never leave half a file behind
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace unetcu::data {

// in: in_h x in_w floats; returns out_h x out_w floats.
std::vector<float> resize_probs(const float* in, int in_w, int in_h, int out_w, int out_h);

// 1 where `mask` (h x w, nonzero = inside) is inside and some pixel within `radius` (Chebyshev
// distance) is outside. The image border does not count as outside, so a mask touching the
// border is not outlined along it.
std::vector<uint8_t> outline(const std::vector<uint8_t>& mask, int w, int h, int radius);

// The colours of every outline the tool draws over an image (predict --overlay, the run
// report's gallery): the predicted lesion's in yellow, the true one's in cyan.
inline constexpr uint8_t kPredictedOutlineRgb[3] = {255, 230, 0};
inline constexpr uint8_t kTrueOutlineRgb[3] = {0, 200, 255};

// Sets the pixels where `where` is nonzero to `rgb` in an h x w x 3 image.
void paint(std::vector<uint8_t>& image, const std::vector<uint8_t>& where, const uint8_t rgb[3]);

// PNG file bytes of an h x w image with 1 (grey) or 3 (RGB) channels.
std::string encode_png(int width, int height, int channels, const uint8_t* pixels);

// .npy (format 1.0, C order, little-endian) file bytes. `descr` is numpy's type string: "<f4"
// for float32, "|u1" for uint8; data holds product(shape) elements of that type.
std::string encode_npy(const std::string& descr, size_t element_size,
                       const std::vector<int64_t>& shape, const void* data);

}  // namespace unetcu::data
