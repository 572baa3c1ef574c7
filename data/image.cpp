// data/image.cpp: probe and decode (stb_image), mask binarisation, encode (stb_image_write) and
// the separable area/bilinear resize. The stb implementations themselves are compiled once, in
// stb_impl.cpp.
#include "data/image.h"

#include <stb_image.h>
#include <stb_image_write.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <memory>

#include "engine/error.h"
#include "engine/fileio.h"

namespace unetcu::data {

namespace {

bool has_prefix(const uint8_t* bytes, size_t n, std::initializer_list<uint8_t> prefix) {
  return n >= prefix.size() && std::equal(prefix.begin(), prefix.end(), bytes);
}

// The format a file claims to be, from its first bytes; nullptr when none of ours. Checked before
// decoding because when a damaged JPEG fails, stb_image goes on to try the other formats and
// reports the last one's complaint ("Not a PNG").
const char* format_of(const uint8_t* bytes, size_t n) {
  if (has_prefix(bytes, n, {0xFF, 0xD8, 0xFF})) return "JPEG";
  if (has_prefix(bytes, n, {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'})) return "PNG";
  if (has_prefix(bytes, n, {'B', 'M'})) return "BMP";
  return nullptr;
}

const char* require_format(const uint8_t* bytes, size_t n, const std::string& name) {
  if (n == 0) fail("cannot decode ", name, ": empty file (0 bytes)");
  const char* format = format_of(bytes, n);
  if (!format) fail("cannot decode ", name, ": not a JPEG, PNG or BMP file");
  return format;
}

// Two bugs of stb_image 2.27 (the Debian 12 version), both found by fuzz/fuzz_decode.cpp, are
// kept away by checking a JPEG's Huffman tables before stb sees it:
//  - a DHT segment's 16 code counts may add up to more than 256, the size of stb's arrays, and
//    stb writes past them;
//  - a scan may use a table that no DHT defined; stb's tables are uninitialised memory then, and
//    decoding reads at indices computed from it (out of bounds).
// The check walks the marker segments the way stb reads them, entropy-coded data included
// (progressive files define tables between scans). Data cut short ends the walk once the counts
// stb would read (as zeros past the end) are checked: stb fails there too.
enum class JpegTables { kOk, kTooManyCodes, kUndefined };

JpegTables check_jpeg_tables(const uint8_t* bytes, size_t n) {
  auto at = [&](size_t i) { return i < n ? bytes[i] : uint8_t(0); };
  bool defined[2][4] = {};  // [class: 0 DC, 1 AC][table id]
  bool progressive = false;
  size_t pos = 2;  // after SOI
  while (pos + 1 < n) {
    if (bytes[pos] != 0xFF) {  // entropy-coded data: find the next marker
      ++pos;
      continue;
    }
    const uint8_t m = bytes[pos + 1];
    if (m == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    pos += 2;
    if (m == 0x00 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) continue;  // stuffing, RSTn, TEM
    if (m == 0xD9 || pos + 2 > n) return JpegTables::kOk;             // EOI or cut short
    const size_t length = size_t(bytes[pos]) << 8 | bytes[pos + 1];
    if (m == 0xC2) progressive = true;
    if (m == 0xC4) {
      // stb reads tables while the declared length lasts, each 1 + 16 + (sum of counts) bytes.
      long left = long(length) - 2;
      size_t q = pos + 2;
      while (left > 0) {
        if (q >= n) return JpegTables::kOk;
        const int table_class = at(q) >> 4, id = at(q) & 15;
        if (table_class > 1 || id > 3) return JpegTables::kOk;  // stb rejects it
        size_t codes = 0;
        for (size_t i = 1; i <= 16; ++i) codes += at(q + i);
        if (codes > 256) return JpegTables::kTooManyCodes;
        defined[table_class][id] = true;
        q += 17 + codes;
        left -= long(17 + codes);
      }
      if (left != 0) return JpegTables::kOk;  // stb rejects the segment itself
    }
    if (m == 0xDA) {
      // Which tables the scan decodes with (as stb does): baseline, both per component;
      // progressive, DC in a first DC scan (Ss = 0, Ah = 0) and AC in an AC scan (Ss > 0).
      const size_t components = at(pos + 2), after = pos + 3 + 2 * components;
      const int spectral_start = at(after), approx_high = at(after + 2) >> 4;
      const bool uses_dc = !progressive || (spectral_start == 0 && approx_high == 0);
      const bool uses_ac = !progressive || spectral_start != 0;
      for (size_t c = 0; c < components; ++c) {
        const uint8_t selectors = at(pos + 4 + 2 * c);
        const int dc = selectors >> 4, ac = selectors & 15;
        if (dc > 3 || ac > 3) return JpegTables::kOk;  // stb rejects the scan
        if ((uses_dc && !defined[0][dc]) || (uses_ac && !defined[1][ac]))
          return JpegTables::kUndefined;
      }
    }
    pos += length;
  }
  return JpegTables::kOk;
}

// Finishes a probe: stb's header verdict plus our size limit.
ImageInfo checked_info(bool ok, int w, int h, int c, bool is16, const char* format,
                       const std::string& name) {
  if (!ok)
    fail("cannot decode ", name, ": damaged or truncated ", format,
         " header (stb_image: ", stbi_failure_reason(), ")");
  if (w <= 0 || h <= 0) fail("cannot decode ", name, ": ", format, " of size ", w, "x", h);
  if (int64_t(w) * h > kMaxImagePixels)
    fail(name, ": image too large: ", w, "x", h, " = ", int64_t(w) * h / 1000000,
         " megapixels (the limit is ", kMaxImagePixels / 1000000, " megapixels)");
  ImageInfo info;
  info.width = w;
  info.height = h;
  info.channels = c;
  info.bits = is16 ? 16 : 8;
  info.format = format;
  return info;
}

int stb_length(size_t n, const std::string& name) {
  if (n > size_t(INT_MAX)) fail("cannot decode ", name, ": file larger than 2 GB");
  return int(n);
}

[[noreturn]] void decode_failed(const std::string& name, const char* format) {
  fail("cannot decode ", name, ": damaged or truncated ", format,
       " (stb_image: ", stbi_failure_reason(), ")");
}

// stb's pixel buffers, freed with stbi_image_free.
struct StbFree {
  void operator()(void* p) const { stbi_image_free(p); }
};

// Binarises the first channel of a decoded mask (see Mask in image.h); T is uint8_t or uint16_t.
template <typename T>
Mask binarise(const T* pixels, int w, int h, int channels, int full) {
  Mask m;
  m.width = w;
  m.height = h;
  const size_t n = size_t(w) * h;
  bool only_0_full = true, only_0_1 = true;
  for (size_t i = 0; i < n; ++i) {
    const int v = pixels[i * channels];
    only_0_full &= (v == 0 || v == full);
    only_0_1 &= (v <= 1);
  }
  m.thresholded = !only_0_full && !only_0_1;
  const int threshold = only_0_full ? full : only_0_1 ? 1 : (full + 1) / 2;
  m.pixels.resize(n);
  for (size_t i = 0; i < n; ++i) m.pixels[i] = pixels[i * channels] >= threshold ? 255 : 0;
  return m;
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

bool has_image_extension(const std::string& file_name) {
  const size_t dot = file_name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = file_name.substr(dot + 1);
  for (auto& ch : ext) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "bmp";
}

ImageInfo probe_image(const uint8_t* bytes, size_t n, const std::string& name) {
  const char* format = require_format(bytes, n, name);
  const int len = stb_length(n, name);
  if (format == std::string("JPEG")) {
    const JpegTables tables = check_jpeg_tables(bytes, n);
    if (tables == JpegTables::kTooManyCodes)
      fail("cannot decode ", name, ": corrupt JPEG (a Huffman table with more than 256 codes)");
    if (tables == JpegTables::kUndefined)
      fail("cannot decode ", name, ": corrupt JPEG (a scan uses a Huffman table never defined)");
  }
  int w = 0, h = 0, c = 0;
  const bool ok = stbi_info_from_memory(bytes, len, &w, &h, &c) != 0;
  return checked_info(ok, w, h, c, ok && stbi_is_16_bit_from_memory(bytes, len), format, name);
}

ImageInfo read_image_info(const std::string& path) {
  // The header is nearly always in the first 64 KB (a JPEG's EXIF or ICC segments can push its
  // frame header further): probe that, and the whole file only when the prefix is not enough.
  constexpr size_t kPrefix = 64 * 1024;
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) fail("cannot open ", path, ": ", std::strerror(errno));
  std::vector<uint8_t> prefix(kPrefix);
  prefix.resize(std::fread(prefix.data(), 1, prefix.size(), file.get()));
  if (std::ferror(file.get())) fail("cannot read ", path, ": ", std::strerror(errno));
  if (prefix.size() < kPrefix) return probe_image(prefix.data(), prefix.size(), path);
  try {
    return probe_image(prefix.data(), prefix.size(), path);
  } catch (const Error&) {
    const std::string bytes = read_file(path);
    return probe_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
  }
}

Image decode_image(const uint8_t* bytes, size_t n, const std::string& name, int channels) {
  if (channels < 0 || channels > 4) fail("decode_image: channels must be 0..4, got ", channels);
  const ImageInfo info = probe_image(bytes, n, name);
  Image img;
  std::unique_ptr<stbi_uc, StbFree> pixels(stbi_load_from_memory(
      bytes, int(n), &img.width, &img.height, &img.channels, channels));
  if (!pixels) decode_failed(name, info.format);
  if (channels != 0) img.channels = channels;
  img.pixels.assign(pixels.get(), pixels.get() + size_t(img.width) * img.height * img.channels);
  return img;
}

Image read_image(const std::string& path, int channels) {
  const std::string bytes = read_file(path);
  return decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path, channels);
}

Mask decode_mask(const uint8_t* bytes, size_t n, const std::string& name) {
  const ImageInfo info = probe_image(bytes, n, name);
  int w = 0, h = 0, c = 0;
  if (info.bits == 16) {
    std::unique_ptr<stbi_us, StbFree> pixels(
        stbi_load_16_from_memory(bytes, int(n), &w, &h, &c, 0));
    if (!pixels) decode_failed(name, info.format);
    return binarise(pixels.get(), w, h, c, 65535);
  }
  std::unique_ptr<stbi_uc, StbFree> pixels(stbi_load_from_memory(bytes, int(n), &w, &h, &c, 0));
  if (!pixels) decode_failed(name, info.format);
  return binarise(pixels.get(), w, h, c, 255);
}

Mask read_mask(const std::string& path) {
  const std::string bytes = read_file(path);
  return decode_mask(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
}

double Mask::lesion_fraction() const {
  if (pixels.empty()) return 0;
  return double(std::count(pixels.begin(), pixels.end(), uint8_t(255))) / double(pixels.size());
}

bool Mask::corners_all_lesion() const {
  if (pixels.empty()) return false;
  const size_t last_row = size_t(height - 1) * width;
  return pixels[0] && pixels[size_t(width) - 1] && pixels[last_row] &&
         pixels[last_row + size_t(width) - 1];
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
