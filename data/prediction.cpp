// data/prediction.cpp: see prediction.h.
#include "data/prediction.h"

#include <stb_image_write.h>

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace unetcu::data {

namespace {

// Source position and weights of one output coordinate (half-pixel centres, clamped at the
// edges as PyTorch does for align_corners=False).
struct Tap {
  int i0, i1;
  float w1;
};
std::vector<Tap> taps(int in, int out) {
  std::vector<Tap> t(static_cast<size_t>(out));
  const double scale = double(in) / out;
  for (int o = 0; o < out; ++o) {
    const double src = std::max(0.0, (o + 0.5) * scale - 0.5);
    const int i0 = std::min(int(src), in - 1);
    t[size_t(o)] = {i0, std::min(i0 + 1, in - 1), float(src - i0)};
  }
  return t;
}

}  // namespace

std::vector<float> resize_probs(const float* in, int in_w, int in_h, int out_w, int out_h) {
  std::vector<float> out(size_t(out_w) * out_h);
  if (in_w == out_w && in_h == out_h) {
    std::copy(in, in + out.size(), out.begin());
    return out;
  }
  const std::vector<Tap> tx = taps(in_w, out_w), ty = taps(in_h, out_h);
  for (int y = 0; y < out_h; ++y) {
    const Tap& a = ty[size_t(y)];
    const float* r0 = in + size_t(a.i0) * in_w;
    const float* r1 = in + size_t(a.i1) * in_w;
    for (int x = 0; x < out_w; ++x) {
      const Tap& b = tx[size_t(x)];
      const float top = r0[b.i0] + b.w1 * (r0[b.i1] - r0[b.i0]);
      const float bottom = r1[b.i0] + b.w1 * (r1[b.i1] - r1[b.i0]);
      out[size_t(y) * out_w + x] = top + a.w1 * (bottom - top);
    }
  }
  return out;
}

std::vector<uint8_t> outline(const std::vector<uint8_t>& mask, int w, int h, int radius) {
  std::vector<uint8_t> out(mask.size(), 0);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      if (!mask[size_t(y) * w + x]) continue;
      bool edge = false;
      for (int dy = -radius; dy <= radius && !edge; ++dy)
        for (int dx = -radius; dx <= radius && !edge; ++dx) {
          const int yy = y + dy, xx = x + dx;
          edge = yy >= 0 && yy < h && xx >= 0 && xx < w && !mask[size_t(yy) * w + xx];
        }
      out[size_t(y) * w + x] = edge;
    }
  return out;
}

void paint(std::vector<uint8_t>& image, const std::vector<uint8_t>& where, const uint8_t rgb[3]) {
  for (size_t i = 0; i < where.size(); ++i)
    if (where[i]) std::copy(rgb, rgb + 3, image.begin() + 3 * i);
}

std::string encode_png(int width, int height, int channels, const uint8_t* pixels) {
  std::string bytes;
  auto append = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), size_t(size));
  };
  if (!stbi_write_png_to_func(append, &bytes, width, height, channels, pixels, width * channels))
    fail("cannot encode a ", width, "x", height, " PNG");
  return bytes;
}

std::string encode_npy(const std::string& descr, size_t element_size,
                       const std::vector<int64_t>& shape, const void* data) {
  std::string dims;
  size_t count = 1;
  for (int64_t d : shape) {
    dims += std::to_string(d) + ",";
    count *= size_t(d);
  }
  if (shape.size() > 1) dims.pop_back();  // (4,) for one dimension, (4,64) for two
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic, version 1.0, header length; the header is space-padded so that the data starts at a
  // multiple of 64 bytes, and ends with a newline.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += char(header.size() & 0xff);
  out += char(header.size() >> 8);
  out += header;
  out.append(static_cast<const char*>(data), count * element_size);
  return out;
}

}  // namespace unetcu::data
