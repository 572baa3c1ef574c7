// tests/cpu/test_predict.cpp: `unetcu predict` on the CPU: masks at the original size that
// respect the threshold, overlays, probabilities equal to the sigmoid of the session's logits,
// batching of folders, clear errors; and the pieces it is built from (bilinear resize of
// probabilities, outlines, .npy bytes).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "cli_util.h"
#include "data/image.h"
#include "data/prediction.h"
#include "engine/cpu_backend.h"
#include "engine/fileio.h"
#include "model/checkpoint.h"
#include "model/session.h"

using namespace unetcu;
using test::run_tool;
namespace fs = std::filesystem;

namespace {

struct Npy {
  std::string descr, shape;  // as written in the header: "<f4", "64, 64" without parentheses
  std::string data;
};

// A reader written from the .npy format description (magic, version 1.0, little-endian
// header length, a Python dict literal, data from a 64-byte boundary).
Npy read_npy(const std::string& path) {
  const std::string b = read_file(path);
  REQUIRE(b.size() >= 10);
  REQUIRE(b.compare(0, 6, "\x93NUMPY") == 0);
  REQUIRE(b[6] == 1);
  REQUIRE(b[7] == 0);
  const size_t len = size_t(uint8_t(b[8])) | size_t(uint8_t(b[9])) << 8;
  CHECK((10 + len) % 64 == 0);
  const std::string header = b.substr(10, len);
  CHECK(header.back() == '\n');
  CHECK(header.find("'fortran_order': False") != std::string::npos);
  Npy n;
  const size_t d = header.find("'descr': '") + 10;
  n.descr = header.substr(d, header.find('\'', d) - d);
  const size_t s = header.find("'shape': (") + 10;
  n.shape = header.substr(s, header.find(')', s) - s);
  n.data = b.substr(10 + len);
  return n;
}

std::vector<float> floats(const Npy& n) {
  std::vector<float> v(n.data.size() / 4);
  std::memcpy(v.data(), n.data.data(), v.size() * 4);
  return v;
}

}  // namespace

TEST_CASE("resize_probs: exact copy at equal size, PyTorch's bilinear (align_corners=False) when enlarging") {
  const float in[4] = {0, 1, 2, 3};  // 2x2
  CHECK(data::resize_probs(in, 2, 2, 2, 2) == std::vector<float>(in, in + 4));
  // Output pixel centres (x + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped
  // to the last pixel): weights by hand.
  const std::vector<float> out = data::resize_probs(in, 2, 2, 4, 4);
  const std::vector<float> want = {0,   0.25f, 0.75f, 1,    0.5f, 0.75f, 1.25f, 1.5f,
                                   1.5f, 1.75f, 2.25f, 2.5f, 2,    2.25f, 2.75f, 3};
  for (size_t i = 0; i < want.size(); ++i) CHECK(out[i] == doctest::Approx(want[i]));
}

TEST_CASE("outline: the inside pixels next to the outside, not the image border") {
  // A 3x3 block inside a 5x5 image: its 8 border pixels are outline, its centre is not.
  std::vector<uint8_t> m(25, 0);
  for (int y = 1; y <= 3; ++y)
    for (int x = 1; x <= 3; ++x) m[size_t(y * 5 + x)] = 1;
  const auto o = data::outline(m, 5, 5, 1);
  int count = 0;
  for (auto v : o) count += v;
  CHECK(count == 8);
  CHECK(o[12] == 0);
  // A full image has no outline (the border is not an edge).
  const auto full = data::outline(std::vector<uint8_t>(25, 1), 5, 5, 1);
  CHECK(std::count(full.begin(), full.end(), 1) == 0);
}

TEST_CASE("encode_npy: header, alignment and data") {
  const float v[3] = {1.5f, -2, 0.25f};
  const std::string b = data::encode_npy("<f4", 4, {3}, v);
  test::TempDir t("npy");
  write_file_atomic(t.str("a.npy"), b);
  const Npy n = read_npy(t.str("a.npy"));
  CHECK(n.descr == "<f4");
  CHECK(n.shape == "3,");  // a one-element tuple
  CHECK(floats(n) == std::vector<float>(v, v + 3));
  const uint8_t u[6] = {1, 2, 3, 4, 5, 6};
  const Npy m = [&] {
    write_file_atomic(t.str("b.npy"), data::encode_npy("|u1", 1, {1, 2, 3}, u));
    return read_npy(t.str("b.npy"));
  }();
  CHECK(m.descr == "|u1");
  CHECK(m.shape == "1,2,3");
  CHECK(m.data == std::string(reinterpret_cast<const char*>(u), 6));
}

TEST_CASE("predict: masks at the original size, overlays, probabilities equal to the session's") {
  test::TempDir t("predict");
  // 3 images of 100x75 (not the network's size, not square), batch 2: a full and a partial batch.
  REQUIRE(run_tool("synth " + t.str("d") + " --count 3 --seed 2 --width 100 --height 75").status == 0);
  REQUIRE(run_tool("init --seed 5 --out " + t.str("w.safetensors")).status == 0);
  const auto r = run_tool("predict --weights " + t.str("w.safetensors") + " --image-size 64 --device cpu "
                          "--batch-size 2 --overlay --probs --out " + t.str("out") + " " + t.str("d"));
  INFO(r.output);
  REQUIRE(r.status == 0);

  // The same batches as the command (sorted by name, 2 per batch), so that the same GEMM shapes
  // sum in the same order and the logits are the same bits.
  auto be = make_cpu_backend();
  ModelSession session(*be, 64, 64);
  session.set_state(load_checkpoint(t.str("w.safetensors"), unet_spec()).model);
  std::vector<fs::path> paths;
  for (const auto& e : fs::directory_iterator(t.path / "d" / "images")) paths.push_back(e.path());
  std::sort(paths.begin(), paths.end());
  REQUIRE(paths.size() == 3);
  std::vector<float> logits;
  for (size_t first = 0; first < paths.size(); first += 2) {
    const int n = int(std::min<size_t>(2, paths.size() - first));
    std::vector<uint8_t> batch(static_cast<size_t>(n) * 64 * 64 * 3);
    for (int i = 0; i < n; ++i) {
      const data::Image img = data::read_image(paths[first + size_t(i)].string(), 3);
      data::resize_image(batch.data() + size_t(i) * 64 * 64 * 3, 64, 64, img.pixels.data(), img.width,
                         img.height, 3);
    }
    const std::vector<float> l = session.predict(batch.data(), n);
    logits.insert(logits.end(), l.begin(), l.end());
  }

  for (size_t k = 0; k < paths.size(); ++k) {
    const std::string stem = paths[k].stem().string();
    CAPTURE(stem);
    // The mask: original size, 0/255.
    const data::Image mask = data::read_image(t.str("out/" + stem + "_mask.png"), 0);
    CHECK(mask.width == 100);
    CHECK(mask.height == 75);
    CHECK(mask.channels == 1);
    for (uint8_t v : mask.pixels) REQUIRE((v == 0 || v == 255));

    // The probabilities: the sigmoid of this process's own session's logits.
    const Npy probs = read_npy(t.str("out/" + stem + "_probs.npy"));
    CHECK(probs.descr == "<f4");
    CHECK(probs.shape == "64,64");
    const std::vector<float> p = floats(probs);
    REQUIRE(p.size() == 64 * 64);
    for (size_t i = 0; i < p.size(); ++i)
      REQUIRE(p[i] == doctest::Approx(1.0 / (1.0 + std::exp(-double(logits[k * 64 * 64 + i])))).epsilon(1e-6));

    const data::Image img = data::read_image(paths[k].string(), 3);
    // The overlay: the image, with only outline pixels painted, and the true outline (cyan)
    // drawn because the dataset's mask was found.
    const data::Image overlay = data::read_image(t.str("out/" + stem + "_overlay.png"), 0);
    CHECK(overlay.width == 100);
    CHECK(overlay.height == 75);
    REQUIRE(overlay.channels == 3);
    int cyan = 0, other = 0;
    for (size_t i = 0; i < overlay.pixels.size(); i += 3) {
      const uint8_t* o = &overlay.pixels[i];
      const uint8_t* s = &img.pixels[i];
      if (o[0] == 0 && o[1] == 200 && o[2] == 255) ++cyan;
      else if (!(o[0] == 255 && o[1] == 230 && o[2] == 0) && std::memcmp(o, s, 3) != 0) ++other;
    }
    CHECK(cyan > 0);
    CHECK(other == 0);
  }
}

TEST_CASE("predict: --threshold is respected (p > threshold) at the network's own size") {
  test::TempDir t("predict_thr");
  // 64x64 images at --image-size 64: the mask is the thresholded probabilities, pixel for pixel.
  REQUIRE(run_tool("synth " + t.str("d") + " --count 1 --seed 4 --width 64 --height 64").status == 0);
  REQUIRE(run_tool("init --seed 6 --out " + t.str("w.safetensors")).status == 0);
  const std::string base = "predict --weights " + t.str("w.safetensors") + " --image-size 64 --device cpu --probs ";
  REQUIRE(run_tool(base + "--out " + t.str("a") + " " + t.str("d")).status == 0);
  const std::string stem = fs::directory_iterator(t.path / "d" / "images")->path().stem().string();
  std::vector<float> p = floats(read_npy(t.str("a/" + stem + "_probs.npy")));
  // A threshold at the median splits the pixels in two, whatever the weights predict.
  std::vector<float> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  const double threshold = sorted[sorted.size() / 2];
  char arg[64];
  std::snprintf(arg, sizeof arg, "%.9g", threshold);
  REQUIRE(run_tool(base + "--threshold " + arg + " --out " + t.str("b") + " " + t.str("d")).status == 0);
  const data::Image mask = data::read_image(t.str("b/" + stem + "_mask.png"), 0);
  REQUIRE(mask.pixels.size() == p.size());
  int on = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    REQUIRE((mask.pixels[i] == 255) == (double(p[i]) > std::strtod(arg, nullptr)));
    on += mask.pixels[i] == 255;
  }
  CHECK(on > 0);
  CHECK(on < int(p.size()));
}

TEST_CASE("predict: bad input gives one clear error naming the problem") {
  test::TempDir t("predict_bad");
  REQUIRE(run_tool("synth " + t.str("d") + " --count 1 --seed 1 --width 64 --height 48").status == 0);
  REQUIRE(run_tool("init --seed 1 --out " + t.str("w.safetensors")).status == 0);
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    const auto r = run_tool(args);
    CAPTURE(args);
    CHECK(r.status == 1);
    CHECK_MESSAGE(r.output.find("unetcu: error:") != std::string::npos, r.output);
    CHECK_MESSAGE(r.output.find(needle) != std::string::npos, r.output);
  };
  const std::string w = " --weights " + t.str("w.safetensors");
  expect_error("predict --out " + t.str("o") + " " + t.str("d"), "--weights");
  expect_error("predict" + w + " " + t.str("d"), "--out");
  expect_error("predict" + w + " --out " + t.str("o") + " " + t.str("nothing.jpg"), "nothing.jpg");
  fs::create_directories(t.path / "empty");
  expect_error("predict" + w + " --out " + t.str("o") + " " + t.str("empty"), "no images");
  write_file_atomic(t.str("broken.jpg"), std::string("\xff\xd8\xff not really a jpeg"));
  expect_error("predict" + w + " --out " + t.str("o") + " " + t.str("broken.jpg"), "broken.jpg");
  write_file_atomic(t.str("junk.safetensors"), std::string("not a checkpoint"));
  expect_error("predict --weights " + t.str("junk.safetensors") + " --out " + t.str("o") + " " + t.str("d"),
               "junk.safetensors");
  // The same stem twice would overwrite outputs: refused before anything is written.
  const std::string image = fs::directory_iterator(t.path / "d" / "images")->path().string();
  expect_error("predict" + w + " --out " + t.str("o2") + " " + image + " " + t.str("d"), "same outputs");
  CHECK_FALSE(fs::exists(t.path / "o2"));
}
