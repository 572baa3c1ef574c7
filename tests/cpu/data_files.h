// tests/cpu/data_files.h: helpers for the data tests that build small dataset folders on disk:
// a self-removing temp folder and file writers (PNG with any channel count, 16-bit PNG, raw
// bytes); error_of() and contains() come with test_util.h.
#pragma once

#include <doctest/doctest.h>
#include <stb_image_write.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/error.h"
#include "test_util.h"

namespace unetcu::test {

namespace fs = std::filesystem;

// A fresh folder under the system temp folder, removed with everything in it on destruction.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("unetcu_test_data_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path.string(); }
};

inline std::vector<uint8_t> file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)),
                              std::istreambuf_iterator<char>());
}

inline void write_bytes(const fs::path& p, const std::vector<uint8_t>& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  REQUIRE(f.good());
}

inline void touch(const fs::path& p, const std::string& content = "") {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f << content;
}

// Writes an 8-bit PNG with any channel count (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
inline void write_png(const fs::path& p, int w, int h, int channels,
                      const std::vector<uint8_t>& px) {
  REQUIRE(px.size() == size_t(w) * h * channels);
  fs::create_directories(p.parent_path());
  REQUIRE(stbi_write_png(p.string().c_str(), w, h, channels, px.data(), w * channels));
}

// The PNG bytes of a 16-bit image (channels 1 grey, 3 RGB, 4 RGBA; samples big-endian as the
// PNG format says). stb_image_write has no 16-bit mode, so the file is built here: signature,
// IHDR, one IDAT holding a zlib stream of stored (uncompressed) blocks, IEND, each chunk with
// its CRC-32 and the stream with its Adler-32, as the PNG and zlib specifications define them.
inline std::vector<uint8_t> png16_bytes(int w, int h, int channels,
                                        const std::vector<uint16_t>& samples, int width_in_header = 0,
                                        int height_in_header = 0) {
  REQUIRE(samples.size() == size_t(w) * h * channels);
  auto put32 = [](std::vector<uint8_t>& v, uint32_t x) {
    for (int s = 24; s >= 0; s -= 8) v.push_back(uint8_t(x >> s));
  };
  auto crc32 = [](const uint8_t* p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; ++i) {
      c ^= p[i];
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
  };
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  auto chunk = [&](const char* type, const std::vector<uint8_t>& data) {
    put32(out, uint32_t(data.size()));
    std::vector<uint8_t> body(type, type + 4);
    body.insert(body.end(), data.begin(), data.end());
    out.insert(out.end(), body.begin(), body.end());
    put32(out, crc32(body.data(), body.size()));
  };
  const uint8_t color_type = channels == 1 ? 0 : channels == 3 ? 2 : 6;
  std::vector<uint8_t> ihdr;
  put32(ihdr, uint32_t(width_in_header ? width_in_header : w));
  put32(ihdr, uint32_t(height_in_header ? height_in_header : h));
  ihdr.insert(ihdr.end(), {16, color_type, 0, 0, 0});
  chunk("IHDR", ihdr);

  std::vector<uint8_t> raw;  // each row: filter byte 0, then the samples big-endian
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);
    for (int i = 0; i < w * channels; ++i) {
      const uint16_t v = samples[size_t(y) * w * channels + size_t(i)];
      raw.push_back(uint8_t(v >> 8));
      raw.push_back(uint8_t(v & 0xFF));
    }
  }
  std::vector<uint8_t> z = {0x78, 0x01};
  for (size_t pos = 0; pos < raw.size() || pos == 0;) {
    const size_t n = std::min<size_t>(65535, raw.size() - pos);
    const bool last = pos + n == raw.size();
    z.push_back(last ? 1 : 0);
    z.insert(z.end(), {uint8_t(n & 0xFF), uint8_t(n >> 8), uint8_t(~n & 0xFF), uint8_t((~n >> 8) & 0xFF)});
    z.insert(z.end(), raw.begin() + long(pos), raw.begin() + long(pos + n));
    pos += n;
    if (last) break;
  }
  uint32_t a = 1, b = 0;
  for (uint8_t byte : raw) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  put32(z, (b << 16) | a);
  chunk("IDAT", z);
  chunk("IEND", {});
  return out;
}

}  // namespace unetcu::test
