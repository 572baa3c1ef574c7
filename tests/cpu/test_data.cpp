// tests/cpu/test_data.cpp: the data layer: generator, pairing, decoding and its errors,
// resizing, splits and batches. Files are written into fresh folders under the system temp
// folder and removed afterwards.
#include <doctest/doctest.h>
#include <stb_image_write.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "data/batch.h"
#include "data/dataset.h"
#include "data/image.h"
#include "engine/rng.h"
#include "data/split.h"
#include "data/synth.h"
#include "engine/error.h"
#include "cpu/data_files.h"

namespace fs = std::filesystem;
using namespace unetcu;
using namespace unetcu::data;

namespace {

using namespace unetcu::test;

// A folder in the find_pairs layout with empty images/ and masks/.
struct PairDir : TempDir {
  PairDir() {
    fs::create_directories(path / "images");
    fs::create_directories(path / "masks");
  }
  fs::path image(const std::string& name) const { return path / "images" / name; }
  fs::path mask(const std::string& stem) const {
    return path / "masks" / (stem + "_segmentation.png");
  }
};

}  // namespace

// ---- rng ------------------------------------------------------------------------------------

TEST_CASE("rng: fixed stream, bounded draws and shuffles are permutations") {
  Rng a(42), b(42), c(43);
  const uint64_t first = a.next_u64();
  CHECK(first == b.next_u64());
  CHECK(first != c.next_u64());
  // Pinned value: the generator must not change, or every seeded split and synthetic set would.
  CHECK(Rng(0).next_u64() == 0x99EC5F36CB75F2B4ull);

  Rng r(7);
  for (int i = 0; i < 1000; ++i) {
    CHECK(r.below(10) < 10);
    const double u = r.uniform();
    CHECK((u >= 0 && u < 1));
  }
  std::vector<int> v(100);
  std::iota(v.begin(), v.end(), 0);
  shuffle(v, r);
  std::vector<int> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 100; ++i) CHECK(sorted[i] == i);
  CHECK(!std::is_sorted(v.begin(), v.end()));
  CHECK(derive_seed(1, 0) != derive_seed(1, 1));
  CHECK(derive_seed(1, 0) != derive_seed(2, 0));
}

// ---- resize ---------------------------------------------------------------------------------

TEST_CASE("resize: shrinking averages areas, enlarging interpolates, same size copies") {
  SUBCASE("4x4 -> 2x2 gives the 2x2 block means") {
    const std::vector<uint8_t> in = {
        0,   10,  100, 110,  //
        20,  30,  120, 130,  //
        200, 210, 40,  40,   //
        220, 230, 40,  40,   //
    };
    std::vector<uint8_t> out(4);
    resize_image(out.data(), 2, 2, in.data(), 4, 4, 1);
    CHECK(out == std::vector<uint8_t>{15, 115, 215, 40});
  }
  SUBCASE("RGB channels are averaged separately") {
    // 2x2 -> 1x1: red 0/100/100/200, green all 50, blue 255/255/0/0.
    const std::vector<uint8_t> in = {0, 50, 255, 100, 50, 255, 100, 50, 0, 200, 50, 0};
    std::vector<uint8_t> out(3);
    resize_image(out.data(), 1, 1, in.data(), 2, 2, 3);
    CHECK(out == std::vector<uint8_t>{100, 50, 128});  // 127.5 rounds up
  }
  SUBCASE("non-integer shrink weights partial pixels by their overlap") {
    // 3 -> 2: out0 covers [0, 1.5) = px0 + half of px1; out1 covers [1.5, 3).
    const std::vector<uint8_t> in = {0, 30, 60};
    std::vector<uint8_t> out(2);
    resize_image(out.data(), 2, 1, in.data(), 3, 1, 1);
    CHECK(out == std::vector<uint8_t>{10, 50});
  }
  SUBCASE("enlarging is bilinear between pixel centres") {
    const std::vector<uint8_t> in = {0, 100};
    std::vector<uint8_t> out(4);
    resize_image(out.data(), 4, 1, in.data(), 2, 1, 1);
    CHECK(out == std::vector<uint8_t>{0, 25, 75, 100});
  }
  SUBCASE("same size is the identity") {
    std::vector<uint8_t> in(5 * 3 * 3);
    for (size_t i = 0; i < in.size(); ++i) in[i] = uint8_t(i * 37);
    std::vector<uint8_t> out(in.size());
    resize_image(out.data(), 5, 3, in.data(), 5, 3, 3);
    CHECK(out == in);
  }
}

// ---- synthetic data -------------------------------------------------------------------------

TEST_CASE("synth: deterministic files that decode, binary masks, varied lesions") {
  TempDir a, b;
  const int count = 8, w = 160, h = 120;
  synth_dataset(a.str(), count, 123, w, h);
  synth_dataset(b.str(), count, 123, w, h);

  std::vector<double> fractions;
  for (int k = 0; k < count; ++k) {
    char stem[32];
    std::snprintf(stem, sizeof stem, "ISIC_%07d", k);
    const fs::path img = fs::path("images") / (std::string(stem) + ".jpg");
    const fs::path msk = fs::path("masks") / (std::string(stem) + "_segmentation.png");
    REQUIRE(fs::exists(a.path / img));
    REQUIRE(fs::exists(a.path / msk));
    CHECK(file_bytes(a.path / img) == file_bytes(b.path / img));
    CHECK(file_bytes(a.path / msk) == file_bytes(b.path / msk));

    const Image rgb = read_image((a.path / img).string(), 0);
    const Image mask = read_image((a.path / msk).string(), 0);
    CHECK(rgb.width == w);
    CHECK(rgb.height == h);
    CHECK(rgb.channels == 3);
    CHECK(mask.width == w);
    CHECK(mask.height == h);
    CHECK(mask.channels == 1);
    const auto lesion = std::count(mask.pixels.begin(), mask.pixels.end(), 255);
    CHECK(std::count(mask.pixels.begin(), mask.pixels.end(), 0) + lesion ==
          long(mask.pixels.size()));
    fractions.push_back(double(lesion) / mask.pixels.size());
  }
  const auto [lo, hi] = std::minmax_element(fractions.begin(), fractions.end());
  CHECK(*lo > 0.0);
  CHECK(*hi - *lo > 0.1);  // sizes vary from small lesions to large ones

  // A different seed gives different pictures.
  TempDir c;
  synth_dataset(c.str(), 1, 124, w, h);
  CHECK(file_bytes(a.path / "images/ISIC_0000000.jpg") !=
        file_bytes(c.path / "images/ISIC_0000000.jpg"));

  // The generated folder is a valid data set.
  const auto pairs = find_pairs(a.str());
  REQUIRE(pairs.size() == size_t(count));
  const Dataset ds = load_dataset(pairs, 32);
  CHECK(ds.n == count);
  CHECK(ds.n_nonbinary_masks == 0);
}

TEST_CASE("synth: the lesion is darker than the skin around it, over many pictures") {
  const int w = 150, h = 112;
  std::vector<uint8_t> rgb(size_t(w) * h * 3), mask(size_t(w) * h);
  double min_fraction = 1, max_fraction = 0;
  for (int k = 0; k < 40; ++k) {
    synth_image(rgb.data(), mask.data(), w, h, derive_seed(9, k));
    // Compare with skin inside the smallest field of view, so dark corners do not count.
    double in_sum = 0, out_sum = 0;
    int in_n = 0, out_n = 0, lesion = 0;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const size_t i = size_t(y) * w + x;
        const double luma = 0.299 * rgb[3 * i] + 0.587 * rgb[3 * i + 1] + 0.114 * rgb[3 * i + 2];
        lesion += mask[i] != 0;
        const double dx = x + 0.5 - w / 2.0, dy = y + 0.5 - h / 2.0;
        if (mask[i]) {
          in_sum += luma;
          ++in_n;
        } else if (std::sqrt(dx * dx + dy * dy) < 0.5 * 0.5 * std::hypot(w, h)) {
          out_sum += luma;
          ++out_n;
        }
      }
    REQUIRE(in_n > 0);
    if (out_n > 100) CHECK(in_sum / in_n < out_sum / out_n);
    min_fraction = std::min(min_fraction, double(lesion) / (w * h));
    max_fraction = std::max(max_fraction, double(lesion) / (w * h));
  }
  CHECK(min_fraction < 0.06);
  CHECK(max_fraction > 0.35);
}

// ---- find_pairs -----------------------------------------------------------------------------

TEST_CASE("find_pairs: pairs sorted by stem, any extension case, other files ignored") {
  PairDir d;
  for (const char* name : {"c.JPG", "a.jpeg", "b.png"}) touch(d.image(name), "x");
  for (const char* stem : {"a", "b", "c"}) touch(d.mask(stem), "x");
  touch(d.image("notes.txt"));
  touch(d.path / "masks" / "readme.md");

  const auto pairs = find_pairs(d.str());
  REQUIRE(pairs.size() == 3);
  CHECK(pairs[0].stem == "a");
  CHECK(pairs[1].stem == "b");
  CHECK(pairs[2].stem == "c");
  CHECK(fs::path(pairs[2].image_path).filename() == "c.JPG");
  CHECK(fs::path(pairs[0].mask_path) == d.mask("a"));
}

TEST_CASE("find_pairs: errors name the folder or file") {
  SUBCASE("missing data folder") {
    TempDir t;
    const std::string missing = (t.path / "nowhere").string();
    const std::string e = error_of([&] { find_pairs(missing); });
    CHECK(contains(e, "not found"));
    CHECK(contains(e, "nowhere"));
  }
  SUBCASE("missing images folder") {
    TempDir t;
    fs::create_directories(t.path / "masks");
    const std::string e = error_of([&] { find_pairs(t.str()); });
    CHECK(contains(e, "image folder not found"));
    CHECK(contains(e, (t.path / "images").string()));
  }
  SUBCASE("missing masks folder") {
    TempDir t;
    fs::create_directories(t.path / "images");
    const std::string e = error_of([&] { find_pairs(t.str()); });
    CHECK(contains(e, "mask folder not found"));
    CHECK(contains(e, (t.path / "masks").string()));
  }
  SUBCASE("no pairs") {
    PairDir d;
    touch(d.image("readme.txt"));
    const std::string e = error_of([&] { find_pairs(d.str()); });
    CHECK(contains(e, "no images"));
    CHECK(contains(e, (d.path / "images").string()));
  }
  SUBCASE("image without a mask") {
    PairDir d;
    touch(d.image("ISIC_1.jpg"), "x");
    touch(d.image("ISIC_2.jpg"), "x");
    touch(d.mask("ISIC_1"), "x");
    const std::string e = error_of([&] { find_pairs(d.str()); });
    CHECK(contains(e, "have no mask"));
    CHECK(contains(e, "ISIC_2.jpg"));
    CHECK(!contains(e, "ISIC_1.jpg"));
  }
  SUBCASE("many images without masks are listed up to a limit") {
    PairDir d;
    touch(d.image("keep.jpg"), "x");
    touch(d.mask("keep"), "x");
    for (int i = 0; i < 15; ++i) touch(d.image("lost" + std::to_string(10 + i) + ".jpg"), "x");
    const std::string e = error_of([&] { find_pairs(d.str()); });
    CHECK(contains(e, "15 image(s)"));
    CHECK(contains(e, "lost10.jpg"));
    CHECK(contains(e, "and 5 more"));
  }
  SUBCASE("mask without an image") {
    PairDir d;
    touch(d.image("ISIC_1.jpg"), "x");
    touch(d.mask("ISIC_1"), "x");
    touch(d.mask("ISIC_9"), "x");
    const std::string e = error_of([&] { find_pairs(d.str()); });
    CHECK(contains(e, "have no image"));
    CHECK(contains(e, "ISIC_9_segmentation.png"));
  }
  SUBCASE("two images with one stem") {
    PairDir d;
    touch(d.image("a.jpg"), "x");
    touch(d.image("a.png"), "x");
    touch(d.mask("a"), "x");
    const std::string e = error_of([&] { find_pairs(d.str()); });
    CHECK(contains(e, "a.jpg"));
    CHECK(contains(e, "a.png"));
  }
}

// ---- load_dataset ---------------------------------------------------------------------------

TEST_CASE("load_dataset: decoding errors name the file") {
  PairDir d;
  const int w = 6, h = 5;
  std::vector<uint8_t> rgb(size_t(w) * h * 3, 128), mask(size_t(w) * h, 0);

  SUBCASE("truncated JPEG") {
    std::vector<uint8_t> big(64 * 48 * 3), big_mask(64 * 48);
    synth_image(big.data(), big_mask.data(), 64, 48, 1);
    write_jpeg(d.image("cut.jpg").string(), 64, 48, big.data(), 90);
    write_png(d.mask("cut"), 64, 48, 1, big_mask);
    const auto bytes = file_bytes(d.image("cut.jpg"));
    std::ofstream(d.image("cut.jpg"), std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size() / 2));
    const std::string e = error_of([&] { load_dataset(find_pairs(d.str()), 4); });
    CHECK(contains(e, "cannot decode"));
    CHECK(contains(e, "cut.jpg"));
    CHECK(contains(e, "JPEG"));
  }
  SUBCASE("JPEG cut inside its header") {
    write_jpeg(d.image("stub.jpg").string(), w, h, rgb.data(), 90);
    write_png(d.mask("stub"), w, h, 1, mask);
    const auto bytes = file_bytes(d.image("stub.jpg"));
    std::ofstream(d.image("stub.jpg"), std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(bytes.data()), 20);
    const std::string e = error_of([&] { load_dataset(find_pairs(d.str()), 4); });
    CHECK(contains(e, "stub.jpg"));
    CHECK(contains(e, "truncated JPEG"));
  }
  SUBCASE("zero-byte image") {
    touch(d.image("empty.jpg"));
    write_png(d.mask("empty"), w, h, 1, mask);
    const std::string e = error_of([&] { load_dataset(find_pairs(d.str()), 4); });
    CHECK(contains(e, "empty.jpg"));
    CHECK(contains(e, "0 bytes"));
  }
  SUBCASE("not an image at all") {
    touch(d.image("text.png"), "this is not a PNG file");
    write_png(d.mask("text"), w, h, 1, mask);
    const std::string e = error_of([&] { load_dataset(find_pairs(d.str()), 4); });
    CHECK(contains(e, "text.png"));
    CHECK(contains(e, "not a JPEG, PNG or BMP"));
  }
  SUBCASE("mask size differs from the image size") {
    write_jpeg(d.image("odd.jpg").string(), w, h, rgb.data(), 90);
    write_png(d.mask("odd"), w, h - 1, 1, std::vector<uint8_t>(size_t(w) * (h - 1), 0));
    const std::string e = error_of([&] { load_dataset(find_pairs(d.str()), 4); });
    CHECK(contains(e, "mask 6x4 but image 6x5"));
    CHECK(contains(e, "odd_segmentation.png"));
  }
  SUBCASE("several failures report the first in order and the count") {
    touch(d.image("a.jpg"));
    touch(d.image("b.jpg"));
    touch(d.image("c.jpg"));
    for (const char* stem : {"a", "b", "c"}) write_png(d.mask(stem), w, h, 1, mask);
    const std::string e = error_of([&] { load_dataset(find_pairs(d.str()), 4); });
    CHECK(contains(e, "a.jpg"));
    CHECK(contains(e, "and 2 more files failed"));
  }
}

TEST_CASE("load_dataset: channels are converted and masks binarised") {
  PairDir d;
  const int w = 4, h = 4;
  // grey.png: a grey image; every channel of the RGB result equals the grey value.
  std::vector<uint8_t> grey(w * h);
  for (int i = 0; i < w * h; ++i) grey[i] = uint8_t(i * 16);
  write_png(d.image("grey.png"), w, h, 1, grey);
  write_png(d.mask("grey"), w, h, 1, std::vector<uint8_t>(w * h, 255));
  // rgba.png: RGBA with varying alpha; alpha is dropped, colour kept. Its mask is RGB: only the
  // first channel counts (red 255 = lesion, even where green and blue say otherwise).
  std::vector<uint8_t> rgba(w * h * 4), mask_rgb(w * h * 3, 0);
  for (int i = 0; i < w * h; ++i) {
    rgba[4 * i + 0] = 10;
    rgba[4 * i + 1] = 20;
    rgba[4 * i + 2] = 30;
    rgba[4 * i + 3] = uint8_t(i * 16);
    mask_rgb[3 * i + 0] = i < 8 ? 255 : 0;
    mask_rgb[3 * i + 1] = i < 8 ? 0 : 255;
  }
  write_png(d.image("rgba.png"), w, h, 4, rgba);
  write_png(d.mask("rgba"), w, h, 3, mask_rgb);
  // zeroone.png: a 0/1 mask (some tools write those) is taken as is, not thresholded to nothing.
  write_png(d.image("zeroone.png"), w, h, 3, std::vector<uint8_t>(w * h * 3, 200));
  std::vector<uint8_t> zero_one(w * h, 0);
  for (int i = 0; i < 4; ++i) zero_one[i] = 1;
  write_png(d.mask("zeroone"), w, h, 1, zero_one);

  std::vector<std::string> warnings;
  LoadOptions opt;
  opt.warn = [&](const std::string& msg) { warnings.push_back(msg); };
  const Dataset ds = load_dataset(find_pairs(d.str()), w, opt);  // same size: no resampling
  REQUIRE(ds.n == 3);
  CHECK(ds.stems == std::vector<std::string>{"grey", "rgba", "zeroone"});
  for (int i = 0; i < w * h; ++i) {
    const uint8_t* g = ds.image(0) + 3 * i;
    CHECK((g[0] == grey[i] && g[1] == grey[i] && g[2] == grey[i]));
    const uint8_t* c = ds.image(1) + 3 * i;
    CHECK((c[0] == 10 && c[1] == 20 && c[2] == 30));
    CHECK(ds.mask(0)[i] == 1);
    CHECK(ds.mask(1)[i] == (i < 8 ? 1 : 0));
    CHECK(ds.mask(2)[i] == (i < 4 ? 1 : 0));
  }
  CHECK(ds.n_nonbinary_masks == 0);
  // The all-lesion mask of "grey" has lesion in its four corners: the only warning.
  REQUIRE(warnings.size() == 1);
  CHECK(contains(warnings[0], "1 of 3 masks have all four corners marked as lesion"));
  CHECK(ds.report.inverted == std::vector<std::string>{"grey"});
}

TEST_CASE("load_dataset: non-binary masks are thresholded at 128 with one warning") {
  PairDir d;
  const int w = 4, h = 4;  // square, so that loading at size w does not resample
  const std::vector<uint8_t> rgb(w * h * 3, 90);
  const std::vector<uint8_t> soft = {0,   127, 128, 255, 10, 200, 60,  129,
                                     255, 255, 0,   0,   1,  2,   254, 255};
  for (const char* stem : {"s1", "s2", "s3"}) {
    write_png(d.image(std::string(stem) + ".png"), w, h, 3, rgb);
    write_png(d.mask(stem), w, h, 1, soft);
  }
  write_png(d.image("clean.png"), w, h, 3, rgb);
  write_png(d.mask("clean"), w, h, 1, std::vector<uint8_t>(w * h, 0));

  std::vector<std::string> warnings;
  LoadOptions opt;
  opt.warn = [&](const std::string& msg) { warnings.push_back(msg); };
  const Dataset ds = load_dataset(find_pairs(d.str()), w, opt);
  CHECK(ds.n_nonbinary_masks == 3);
  REQUIRE(warnings.size() == 1);
  CHECK(contains(warnings[0], "3 of 4 masks"));
  CHECK(contains(warnings[0], "s1_segmentation.png"));
  const std::vector<uint8_t> expected = {0, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1};
  CHECK(std::vector<uint8_t>(ds.mask(1), ds.mask(1) + w * h) ==
        expected);  // "s1" sorts after "clean"

  // Without a callback the count is still reported.
  CHECK(load_dataset(find_pairs(d.str()), w).n_nonbinary_masks == 3);
}

TEST_CASE("load_dataset: resized masks keep pixels that are at least half lesion") {
  PairDir d;
  // 4x4 mask -> 2x2: top-left block 3/4 lesion, top-right 1/4, bottom-left 2/4, bottom-right 0.
  const std::vector<uint8_t> mask = {
      255, 255, 255, 0,  //
      255, 0,   0,   0,  //
      255, 0,   0,   0,  //
      255, 0,   0,   0,  //
  };
  write_png(d.image("m.png"), 4, 4, 3, std::vector<uint8_t>(4 * 4 * 3, 50));
  write_png(d.mask("m"), 4, 4, 1, mask);
  const Dataset ds = load_dataset(find_pairs(d.str()), 2);
  CHECK(std::vector<uint8_t>(ds.mask(0), ds.mask(0) + 4) == std::vector<uint8_t>{1, 0, 1, 0});
  CHECK(std::vector<uint8_t>(ds.image(0), ds.image(0) + 12) == std::vector<uint8_t>(12, 50));
}

TEST_CASE("load_dataset: output order and bytes do not depend on the thread count") {
  TempDir t;
  synth_dataset(t.str(), 6, 5, 90, 70);
  const auto pairs = find_pairs(t.str());
  LoadOptions one, two;
  one.threads = 1;
  two.threads = 2;
  const Dataset a = load_dataset(pairs, 48, one), b = load_dataset(pairs, 48, two);
  CHECK(a.stems == b.stems);
  const size_t image_block = size_t(a.n) * a.image_bytes();
  const size_t mask_block = size_t(a.n) * a.mask_bytes();
  CHECK(std::equal(a.image(0), a.image(0) + image_block, b.image(0)));
  CHECK(std::equal(a.mask(0), a.mask(0) + mask_block, b.mask(0)));
}

// ---- formats, bit depths, limits ------------------------------------------------------------

TEST_CASE("image: BMP, 16-bit PNG, grey and RGBA are decoded to 8-bit RGB") {
  TempDir t;
  const int w = 5, h = 4;
  std::vector<uint8_t> rgb(size_t(w) * h * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(i * 37 + 11);
  const fs::path bmp = t.path / "a.BMP";
  REQUIRE(stbi_write_bmp(bmp.string().c_str(), w, h, 3, rgb.data()));
  CHECK(read_image(bmp.string(), 3).pixels == rgb);
  const ImageInfo bmp_info = read_image_info(bmp.string());
  CHECK(std::string(bmp_info.format) == "BMP");
  CHECK((bmp_info.width == w && bmp_info.height == h && bmp_info.bits == 8));
  CHECK(has_image_extension("a.BMP"));
  CHECK(has_image_extension("b.JpEg"));
  CHECK(!has_image_extension("c.tif"));
  CHECK(!has_image_extension("LICENSE.txt"));

  // 16-bit RGB: the high byte is kept, so 0x0100..0x01FF all become 1 and 0xFFFF becomes 255.
  std::vector<uint16_t> wide(size_t(w) * h * 3);
  for (size_t i = 0; i < wide.size(); ++i) wide[i] = uint16_t(i * 3001 + 255);
  const fs::path png16 = t.path / "wide.png";
  write_bytes(png16, png16_bytes(w, h, 3, wide));
  const Image img = read_image(png16.string(), 3);
  REQUIRE(img.pixels.size() == wide.size());
  for (size_t i = 0; i < wide.size(); ++i) CHECK(img.pixels[i] == uint8_t(wide[i] >> 8));
  CHECK(read_image_info(png16.string()).bits == 16);

  // 16-bit grey becomes RGB with the grey value (high byte) in every channel.
  std::vector<uint16_t> grey16(size_t(w) * h);
  for (size_t i = 0; i < grey16.size(); ++i) grey16[i] = uint16_t(65535 - i * 2000);
  const fs::path g16 = t.path / "grey16.png";
  write_bytes(g16, png16_bytes(w, h, 1, grey16));
  const Image g = read_image(g16.string(), 3);
  for (size_t i = 0; i < grey16.size(); ++i)
    CHECK((g.pixels[3 * i] == grey16[i] >> 8 && g.pixels[3 * i + 1] == grey16[i] >> 8 &&
           g.pixels[3 * i + 2] == grey16[i] >> 8));

  // RGBA 16-bit: alpha is dropped.
  std::vector<uint16_t> rgba16(size_t(w) * h * 4, 0x4000);
  for (size_t i = 3; i < rgba16.size(); i += 4) rgba16[i] = 0x1234;
  write_bytes(t.path / "rgba16.png", png16_bytes(w, h, 4, rgba16));
  CHECK(read_image((t.path / "rgba16.png").string(), 3).pixels ==
        std::vector<uint8_t>(size_t(w) * h * 3, 0x40));
}

TEST_CASE("mask: 8- and 16-bit masks are binarised at half range; 0/1 labels kept") {
  TempDir t;
  const int w = 4, h = 2;
  auto mask_of = [&](const std::vector<uint16_t>& v) {
    const fs::path p = t.path / "m.png";
    write_bytes(p, png16_bytes(w, h, 1, v));
    return read_mask(p.string());
  };
  const Mask full = mask_of({0, 65535, 65535, 0, 0, 0, 65535, 65535});
  CHECK(!full.thresholded);
  CHECK(full.pixels == std::vector<uint8_t>{0, 255, 255, 0, 0, 0, 255, 255});
  const Mask labels = mask_of({0, 1, 1, 0, 0, 0, 0, 1});
  CHECK(!labels.thresholded);
  CHECK(labels.pixels == std::vector<uint8_t>{0, 255, 255, 0, 0, 0, 0, 255});
  const Mask soft = mask_of({0, 32767, 32768, 65535, 100, 40000, 2, 65534});
  CHECK(soft.thresholded);
  CHECK(soft.pixels == std::vector<uint8_t>{0, 0, 255, 255, 0, 255, 0, 255});

  // 8 bits: 0/1 labels and a soft mask.
  write_png(t.path / "e.png", w, h, 1, {0, 1, 0, 1, 1, 1, 0, 0});
  CHECK(read_mask((t.path / "e.png").string()).pixels ==
        std::vector<uint8_t>{0, 255, 0, 255, 255, 255, 0, 0});
  write_png(t.path / "s.png", w, h, 1, {127, 128, 0, 255, 3, 200, 1, 0});
  const Mask soft8 = read_mask((t.path / "s.png").string());
  CHECK(soft8.thresholded);
  CHECK(soft8.pixels == std::vector<uint8_t>{0, 255, 0, 255, 0, 255, 0, 0});

  // 3 of 8 lesion pixels; corners (0,0),(3,0),(0,1),(3,1) are 0,255,255,0: not all lesion.
  CHECK(soft8.lesion_fraction() == doctest::Approx(3.0 / 8.0));
  CHECK(!soft8.corners_all_lesion());
  const Mask ring = mask_of({65535, 0, 0, 65535, 65535, 0, 0, 65535});
  CHECK(ring.corners_all_lesion());
  CHECK(ring.lesion_fraction() == doctest::Approx(0.5));
}

TEST_CASE("image: images above the pixel limit are refused from the header") {
  TempDir t;
  // A PNG whose header says 20000 x 10000 (200 megapixels); its data is one tiny row, which is
  // never read: the limit is checked before decoding.
  const fs::path p = t.path / "huge.png";
  write_bytes(p, png16_bytes(1, 1, 1, {0}, 20000, 10000));
  for (const auto& e : {error_of([&] { read_image(p.string(), 3); }),
                        error_of([&] { read_mask(p.string()); }),
                        error_of([&] { read_image_info(p.string()); })}) {
    CHECK(contains(e, "huge.png"));
    CHECK(contains(e, "too large: 20000x10000 = 200 megapixels"));
  }
}

TEST_CASE("image: JPEG Huffman tables that would make stb_image read or write out of bounds") {
  // SOI, then a DHT segment whose 16 code counts are 17 each (272 codes: stb_image 2.27 has room
  // for 256 and would write past its table), the 272 symbol bytes, EOI.
  std::vector<uint8_t> jpeg = {0xFF, 0xD8, 0xFF, 0xC4, 0x01, 0x23, 0x00};
  for (int i = 0; i < 16; ++i) jpeg.push_back(17);
  for (int i = 0; i < 272; ++i) jpeg.push_back(uint8_t(i));
  jpeg.insert(jpeg.end(), {0xFF, 0xD9});
  TempDir t;
  const fs::path p = t.path / "dht.jpg";
  write_bytes(p, jpeg);
  for (const auto& e : {error_of([&] { read_image(p.string(), 3); }),
                        error_of([&] { read_mask(p.string()); }),
                        error_of([&] { read_image_info(p.string()); })}) {
    CHECK(contains(e, "dht.jpg"));
    CHECK(contains(e, "more than 256 codes"));
  }
  // Cut inside the counts: stb reads the missing ones as 0, and the two present already make 510.
  write_bytes(p, {0xFF, 0xD8, 0xFF, 0xC4, 0x00, 0x1F, 0x00, 0xFF, 0xFF});
  CHECK(contains(error_of([&] { read_image(p.string(), 3); }), "more than 256 codes"));
  // A scan that decodes with a table no DHT defined (stb would read uninitialised memory).
  write_bytes(p, {0xFF, 0xD8,                                                        // SOI
                  0xFF, 0xC0, 0x00, 0x0B, 8, 0x00, 0x01, 0x00, 0x01, 1, 1, 0x11, 0,  // SOF0 1x1
                  0xFF, 0xDA, 0x00, 0x08, 1, 1, 0x00, 0, 63, 0,                     // SOS
                  0x00, 0xFF, 0xD9});
  CHECK(contains(error_of([&] { read_image(p.string(), 3); }), "Huffman table never defined"));
  // The same segment with 256 codes is not refused by this check (stb then finds no frame).
  jpeg[7] = 1;  // counts 1 + 15 * 17 = 256
  jpeg.erase(jpeg.begin() + 23, jpeg.begin() + 23 + 16);
  jpeg[4] = 0x01;
  jpeg[5] = 0x13;  // 2 + 17 + 256
  write_bytes(p, jpeg);
  const std::string e = error_of([&] { read_image(p.string(), 3); });
  CHECK(contains(e, "dht.jpg"));
  CHECK(!contains(e, "more than 256 codes"));
}

TEST_CASE("load_dataset: 16-bit PNG images and masks") {
  PairDir d;
  const int w = 4, h = 4;
  std::vector<uint16_t> rgb16(size_t(w) * h * 3), mask16(size_t(w) * h, 0);
  for (size_t i = 0; i < rgb16.size(); ++i) rgb16[i] = uint16_t(i * 1300);
  for (int i = 5; i < 11; ++i) mask16[size_t(i)] = 65535;
  write_bytes(d.image("wide.png"), png16_bytes(w, h, 3, rgb16));
  write_bytes(d.mask("wide"), png16_bytes(w, h, 1, mask16));
  const Dataset ds = load_dataset(find_pairs(d.str()), w);
  REQUIRE(ds.n == 1);
  for (size_t i = 0; i < rgb16.size(); ++i) CHECK(ds.image(0)[i] == uint8_t(rgb16[i] >> 8));
  for (int i = 0; i < w * h; ++i) CHECK(ds.mask(0)[i] == (i >= 5 && i < 11 ? 1 : 0));
  CHECK(ds.n_nonbinary_masks == 0);
}

TEST_CASE("load_dataset: skip_bad leaves out unusable pairs with one warning") {
  PairDir d;
  const int w = 6, h = 5;
  std::vector<uint8_t> rgb(size_t(w) * h * 3), mask(size_t(w) * h, 0);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(i);
  mask[size_t(w) + 2] = 255;
  for (const char* stem : {"a", "c", "f"}) {
    write_png(d.image(std::string(stem) + ".png"), w, h, 3, rgb);
    write_png(d.mask(stem), w, h, 1, mask);
  }
  touch(d.image("b.jpg"));  // zero bytes
  write_png(d.mask("b"), w, h, 1, mask);
  write_png(d.image("d.png"), w, h, 3, rgb);  // truncated mask
  write_png(d.mask("d"), w, h, 1, mask);
  const auto whole = file_bytes(d.mask("d"));
  write_bytes(d.mask("d"), std::vector<uint8_t>(whole.begin(), whole.begin() + 40));
  write_png(d.image("e.png"), w, h, 3, rgb);  // mask of another size
  write_png(d.mask("e"), w + 1, h, 1, std::vector<uint8_t>(size_t(w + 1) * h, 0));

  const auto pairs = find_pairs(d.str());
  REQUIRE(pairs.size() == 6);
  const std::string e = error_of([&] { load_dataset(pairs, 4); });
  CHECK(contains(e, "b.jpg"));
  CHECK(contains(e, "and 2 more files failed"));

  std::vector<std::string> warnings;
  LoadOptions opt;
  opt.skip_bad = true;
  opt.warn = [&](const std::string& msg) { warnings.push_back(msg); };
  const Dataset ds = load_dataset(pairs, 4, opt);
  CHECK(ds.stems == std::vector<std::string>{"a", "c", "f"});
  REQUIRE(ds.report.skipped.size() == 3);
  CHECK(contains(ds.report.skipped[0], "b.jpg"));
  CHECK(contains(ds.report.skipped[0], "0 bytes"));
  CHECK(contains(ds.report.skipped[1], "d_segmentation.png"));
  CHECK(contains(ds.report.skipped[2], "e_segmentation.png"));
  CHECK(contains(ds.report.skipped[2], "mask 7x5 but image 6x5"));
  REQUIRE(warnings.size() == 1);
  CHECK(contains(warnings[0], "left out 3 of 6 pairs"));
  CHECK(contains(warnings[0], "b.jpg"));

  // The pairs kept hold the same bytes as loading only them.
  const Dataset good = load_dataset({pairs[0], pairs[2], pairs[5]}, 4);
  CHECK(std::equal(ds.image(0), ds.image(0) + 3 * ds.image_bytes(), good.image(0)));
  CHECK(std::equal(ds.mask(0), ds.mask(0) + 3 * ds.mask_bytes(), good.mask(0)));

  // Nothing usable is an error even with skip_bad.
  const std::string none = error_of([&] { load_dataset({pairs[1], pairs[3]}, 4, opt); });
  CHECK(contains(none, "none of the 2 pairs can be used"));
  CHECK(contains(none, "b.jpg"));
}

TEST_CASE("load_dataset: masks with four lesion corners are reported; flipped only on request") {
  PairDir d;
  const int w = 4, h = 4;
  // "inv": lesion everywhere except the 2x2 centre, the typical look of a swapped mask.
  std::vector<uint8_t> inverted(size_t(w) * h, 255);
  for (int y = 1; y < 3; ++y)
    for (int x = 1; x < 3; ++x) inverted[size_t(y) * w + x] = 0;
  std::vector<uint8_t> normal(size_t(w) * h, 0);
  normal[5] = 255;
  write_png(d.image("inv.png"), w, h, 3, std::vector<uint8_t>(size_t(w) * h * 3, 9));
  write_png(d.mask("inv"), w, h, 1, inverted);
  write_png(d.image("ok.png"), w, h, 3, std::vector<uint8_t>(size_t(w) * h * 3, 9));
  write_png(d.mask("ok"), w, h, 1, normal);

  std::vector<std::string> warnings;
  LoadOptions opt;
  opt.warn = [&](const std::string& msg) { warnings.push_back(msg); };
  const Dataset kept = load_dataset(find_pairs(d.str()), w, opt);
  CHECK(kept.report.inverted == std::vector<std::string>{"inv"});
  CHECK(!kept.report.inverted_fixed);
  REQUIRE(warnings.size() == 1);
  CHECK(contains(warnings[0], "1 of 2 masks have all four corners marked as lesion"));
  CHECK(contains(warnings[0], "inv"));
  CHECK(contains(warnings[0], "--fix-inverted-masks"));
  for (int i = 0; i < w * h; ++i) CHECK(kept.mask(0)[i] == (inverted[size_t(i)] ? 1 : 0));

  warnings.clear();
  opt.fix_inverted = true;
  const Dataset fixed = load_dataset(find_pairs(d.str()), w, opt);
  CHECK(fixed.report.inverted == std::vector<std::string>{"inv"});
  CHECK(fixed.report.inverted_fixed);
  REQUIRE(warnings.size() == 1);
  CHECK(contains(warnings[0], "flipped"));
  for (int i = 0; i < w * h; ++i) {
    CHECK(fixed.mask(0)[i] == (inverted[size_t(i)] ? 0 : 1));
    CHECK(fixed.mask(1)[i] == (normal[size_t(i)] ? 1 : 0));  // the normal mask is untouched
  }
}

// ---- split ----------------------------------------------------------------------------------

TEST_CASE("split_random: sizes, disjoint cover, determinism") {
  const int n = 10015;
  const Split s = split_random(n, 2024);
  CHECK(s.val.size() == 250);  // round(10015 * 0.025) = round(250.375)
  CHECK(s.test.size() == 250);
  CHECK(s.train.size() == 9515);

  std::vector<int> all;
  for (const auto* part : {&s.train, &s.val, &s.test}) {
    CHECK(std::is_sorted(part->begin(), part->end()));
    all.insert(all.end(), part->begin(), part->end());
  }
  std::sort(all.begin(), all.end());
  REQUIRE(all.size() == size_t(n));
  for (int i = 0; i < n; ++i) CHECK(all[i] == i);

  const Split again = split_random(n, 2024), other = split_random(n, 2025);
  CHECK(again.train == s.train);
  CHECK(again.val == s.val);
  CHECK(again.test == s.test);
  CHECK(other.val != s.val);
}

TEST_CASE("split_random: small sets and impossible splits") {
  const Split three = split_random(3, 1);
  CHECK(three.train.size() == 1);
  CHECK(three.val.size() == 1);
  CHECK(three.test.size() == 1);

  const Split no_test = split_random(10, 1, 0.2, 0.0);
  CHECK(no_test.val.size() == 2);
  CHECK(no_test.test.empty());
  CHECK(no_test.train.size() == 8);

  const std::string e = error_of([] { split_random(2, 1); });
  CHECK(contains(e, "too few images for the split"));
  CHECK(contains(e, "2 images"));
  CHECK(contains(e, "at least 3"));
  CHECK(contains(error_of([] { split_random(4, 1, 0.45, 0.45); }), "too few images"));
  CHECK(contains(error_of([] { split_random(100, 1, 0.6, 0.5); }), "fractions"));
}

// ---- batches --------------------------------------------------------------------------------

namespace {

// n images of size x size whose every byte is the image index; mask bytes are index % 2.
Dataset indexed_dataset(int n, int size) {
  Dataset ds;
  ds.n = n;
  ds.size = size;
  ds.allocate();
  for (int i = 0; i < n; ++i) {
    std::fill_n(ds.writable_image(i), ds.image_bytes(), uint8_t(i));
    std::fill_n(ds.writable_mask(i), ds.mask_bytes(), uint8_t(i % 2));
    ds.stems.push_back(std::to_string(i));
  }
  return ds;
}

// Runs one epoch with next() and returns the image indices in visiting order, checking that
// every copied image and mask is whole and matches its index.
std::vector<int> run_epoch(BatchIterator& it, const Dataset& ds, std::vector<int>* batch_sizes) {
  std::vector<uint8_t> images(it.batch_size() * ds.image_bytes(), 0xEE);
  std::vector<uint8_t> masks(it.batch_size() * ds.mask_bytes(), 0xEE);
  std::vector<int> seen;
  while (int count = it.next(images.data(), masks.data())) {
    if (batch_sizes) batch_sizes->push_back(count);
    for (int k = 0; k < count; ++k) {
      const uint8_t* img = images.data() + k * ds.image_bytes();
      const uint8_t* msk = masks.data() + k * ds.mask_bytes();
      CHECK(std::all_of(img, img + ds.image_bytes(), [&](uint8_t v) { return v == img[0]; }));
      CHECK(std::all_of(msk, msk + ds.mask_bytes(), [&](uint8_t v) { return v == img[0] % 2; }));
      seen.push_back(img[0]);
    }
  }
  return seen;
}

}  // namespace

TEST_CASE("BatchIterator: every index once per epoch, last partial batch, seeded order") {
  const Dataset ds = indexed_dataset(12, 3);
  const std::vector<int> indices = {0, 2, 3, 5, 6, 7, 8, 9, 11, 1};  // 10 of 12

  BatchIterator it(ds, indices, 4, 77, /*shuffle=*/true);
  CHECK(it.num_batches() == 3);
  std::vector<int> sizes;
  const std::vector<int> epoch0 = run_epoch(it, ds, &sizes);
  CHECK(sizes == std::vector<int>{4, 4, 2});
  CHECK(epoch0 == it.order());
  std::vector<int> sorted = epoch0, expected = indices;
  std::sort(sorted.begin(), sorted.end());
  std::sort(expected.begin(), expected.end());
  CHECK(sorted == expected);
  CHECK(it.next(nullptr, nullptr) == 0);  // finished

  // Same (seed, epoch) -> same order, from a fresh iterator or after a rewind.
  BatchIterator same(ds, indices, 4, 77, true);
  CHECK(run_epoch(same, ds, nullptr) == epoch0);
  it.set_epoch(0);
  CHECK(run_epoch(it, ds, nullptr) == epoch0);

  // Another epoch or another seed -> another order; the order of epoch 1 does not depend on
  // whether epoch 0 was run first.
  it.set_epoch(1);
  const std::vector<int> epoch1 = run_epoch(it, ds, nullptr);
  CHECK(epoch1 != epoch0);
  BatchIterator direct(ds, indices, 4, 77, true, /*epoch=*/1);
  CHECK(direct.order() == epoch1);
  BatchIterator other_seed(ds, indices, 4, 78, true);
  CHECK(other_seed.order() != epoch0);

  // Random access gives the same batch as sequential use.
  std::vector<uint8_t> images(4 * ds.image_bytes()), masks(4 * ds.mask_bytes());
  CHECK(direct.fill(2, images.data(), masks.data()) == 2);
  CHECK(images[0] == epoch1[8]);
  CHECK(images[ds.image_bytes()] == epoch1[9]);
}

TEST_CASE("BatchIterator: without shuffle the given order is kept; bad arguments throw") {
  const Dataset ds = indexed_dataset(5, 2);
  BatchIterator it(ds, {4, 0, 3}, 2, 1, /*shuffle=*/false, /*epoch=*/5);
  CHECK(run_epoch(it, ds, nullptr) == std::vector<int>{4, 0, 3});

  BatchIterator whole(ds, {0, 1, 2, 3, 4}, 8, 1, true);
  std::vector<int> sizes;
  run_epoch(whole, ds, &sizes);
  CHECK(sizes == std::vector<int>{5});

  CHECK(contains(error_of([&] { BatchIterator(ds, {0, 5}, 2, 1, true); }), "outside the dataset"));
  CHECK(contains(error_of([&] { BatchIterator(ds, {0}, 0, 1, true); }), "batch size"));
}
