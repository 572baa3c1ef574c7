// data/image.cpp: decode (stb_image), encode (stb_image_write) and the separable area/bilinear
// resize. The stb implementations themselves are compiled once, in stb_impl.cpp.
#include "data/image.h"

#include <stb_image.h>
#include <stb_image_write.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <initializer_list>

#include "engine/error.h"

namespace unetcu::data {

namespace {

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail("cannot open ", path, ": ", std::strerror(errno));
  file.seekg(0, std::ios::end);
  const std::streamoff size = file.tellg();
  file.seekg(0, std::ios::beg);
  std::vector<uint8_t> bytes(size > 0 ? size_t(size) : 0);
  if (size < 0 || !file.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size())))
    fail("cannot read ", path, ": ", std::strerror(errno));
  return bytes;
}

bool has_prefix(const std::vector<uint8_t>& bytes, std::initializer_list<uint8_t> prefix) {
  return bytes.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), bytes.begin());
}

// One axis of a separable resample: output position i reads source positions
// taps[first[i] .. first[i+1]) with the given weights (which sum to 1).
struct AxisTaps {
  std::vector<int> first;
  std::vector<int> index;
  std::vector<float> weight;
};

AxisTaps make_taps(int in, int out) {
  AxisTaps t;
  t.first.push_back(0);
  const double scale = double(in) / double(out);  // source pixels per output pixel
  for (int i = 0; i < out; ++i) {
    if (scale >= 1.0) {
      // Area: output pixel i covers the source interval [lo, hi); each source pixel j is weighted
      // by the length of its overlap with that interval.
      const double lo = i * scale, hi = (i + 1) * scale;
      for (int j = int(std::floor(lo)); j < std::min(in, int(std::ceil(hi))); ++j) {
        const double overlap = std::min(hi, j + 1.0) - std::max(lo, double(j));
        if (overlap <= 0) continue;
        t.index.push_back(j);
        t.weight.push_back(float(overlap / scale));
      }
    } else {
      // Bilinear between the two source pixel centres around the output pixel centre.
      const double x = std::clamp((i + 0.5) * scale - 0.5, 0.0, double(in - 1));
      const int j0 = int(std::floor(x));
      const int j1 = std::min(j0 + 1, in - 1);
      const double f = x - j0;
      t.index.push_back(j0);
      t.weight.push_back(float(1.0 - f));
      t.index.push_back(j1);
      t.weight.push_back(float(f));
    }
    t.first.push_back(int(t.index.size()));
  }
  return t;
}

uint8_t to_u8(float v) { return uint8_t(std::clamp(std::floor(v + 0.5f), 0.0f, 255.0f)); }

}  // namespace

Image read_image(const std::string& path, int channels) {
  if (channels < 0 || channels > 4) fail("read_image: channels must be 0..4, got ", channels);
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  if (bytes.empty()) fail("cannot decode ", path, ": empty file (0 bytes)");
  // Name the format from the file's signature: when a damaged JPEG fails, stb_image goes on to
  // try the other formats and reports the last one's complaint ("Not a PNG").
  const char* format = has_prefix(bytes, {0xFF, 0xD8, 0xFF})                  ? "JPEG"
                       : has_prefix(bytes, {0x89, 'P', 'N', 'G', '\r', '\n'}) ? "PNG"
                                                                              : nullptr;
  if (!format) fail("cannot decode ", path, ": not a JPEG or PNG file");

  Image img;
  stbi_uc* pixels = stbi_load_from_memory(bytes.data(), int(bytes.size()), &img.width, &img.height,
                                          &img.channels, channels);
  if (!pixels)
    fail("cannot decode ", path, ": damaged or truncated ", format,
         " (stb_image: ", stbi_failure_reason(), ")");
  if (channels != 0) img.channels = channels;
  img.pixels.assign(pixels, pixels + size_t(img.width) * img.height * img.channels);
  stbi_image_free(pixels);
  return img;
}

void resize_image(uint8_t* out, int out_w, int out_h, const uint8_t* in, int in_w, int in_h,
                  int channels) {
  if (out_w <= 0 || out_h <= 0 || in_w <= 0 || in_h <= 0 || channels <= 0)
    fail("resize_image: bad sizes ", in_w, "x", in_h, " -> ", out_w, "x", out_h, " (", channels,
         " channels)");
  const AxisTaps tx = make_taps(in_w, out_w);
  const AxisTaps ty = make_taps(in_h, out_h);

  // Horizontal pass into float rows (in_h x out_w x C), then vertical pass into the output.
  std::vector<float> rows(size_t(in_h) * out_w * channels);
  for (int y = 0; y < in_h; ++y) {
    const uint8_t* src = in + size_t(y) * in_w * channels;
    float* dst = rows.data() + size_t(y) * out_w * channels;
    for (int x = 0; x < out_w; ++x)
      for (int c = 0; c < channels; ++c) {
        float sum = 0;
        for (int k = tx.first[x]; k < tx.first[x + 1]; ++k)
          sum += tx.weight[k] * src[size_t(tx.index[k]) * channels + c];
        dst[size_t(x) * channels + c] = sum;
      }
  }
  const size_t row_len = size_t(out_w) * channels;
  std::vector<float> acc(row_len);
  for (int y = 0; y < out_h; ++y) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int k = ty.first[y]; k < ty.first[y + 1]; ++k) {
      const float* src = rows.data() + size_t(ty.index[k]) * row_len;
      for (size_t i = 0; i < row_len; ++i) acc[i] += ty.weight[k] * src[i];
    }
    uint8_t* dst = out + size_t(y) * row_len;
    for (size_t i = 0; i < row_len; ++i) dst[i] = to_u8(acc[i]);
  }
}

void write_jpeg(const std::string& path, int width, int height, const uint8_t* rgb, int quality) {
  if (!stbi_write_jpg(path.c_str(), width, height, 3, rgb, quality))
    fail("cannot write ", path, " (disk full or folder not writable?)");
}

void write_png_gray(const std::string& path, int width, int height, const uint8_t* gray) {
  if (!stbi_write_png(path.c_str(), width, height, 1, gray, width))
    fail("cannot write ", path, " (disk full or folder not writable?)");
}

}  // namespace unetcu::data
