// tests/cpu/test_cache.cpp: the decode-once cache: a second load is a hit with the same bytes
// as decoding; a changed file, another size, a truncated or damaged cache file all lead to a
// rebuild (with the reason); an unwritable cache folder still gives the data. Files are written
// into fresh folders under the system temp folder and removed afterwards.
#include <doctest/doctest.h>
#include <stb_image_write.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/cache.h"
#include "data/dataset.h"
#include "data/synth.h"
#include "engine/fileio.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace unetcu;
using namespace unetcu::data;
using Outcome = CacheReport::Outcome;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("unetcu_test_cache_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

using test::contains;

bool same_pixels(const Dataset& a, const Dataset& b) {
  if (a.n != b.n || a.size != b.size) return false;
  for (int i = 0; i < a.n; ++i)
    if (!std::equal(a.image(i), a.image(i) + a.image_bytes(), b.image(i)) ||
        !std::equal(a.mask(i), a.mask(i) + a.mask_bytes(), b.mask(i)))
      return false;
  return true;
}

// A small generated data set plus a cache folder beside it.
struct Fixture {
  TempDir tmp;
  std::string data = (tmp.path / "data").string(), cache = (tmp.path / "cache").string();
  std::vector<Sample> samples;
  Fixture() {
    synth_dataset(data, 5, 17, 80, 60);
    samples = find_pairs(data);
  }
  Dataset load(int size, CacheReport& r, const LoadOptions& opt = {}) {
    return load_cached(samples, size, cache, opt, &r);
  }
};

}  // namespace

TEST_CASE("cache: built once, then a hit with the bytes of a fresh decode") {
  Fixture f;
  f.samples[2].lesion_id = "HAM_0000002";
  f.samples[3].dx = "mel";
  const Dataset decoded = load_dataset(f.samples, 32);

  CacheReport r;
  const Dataset first = f.load(32, r);
  CHECK(r.outcome == Outcome::kBuilt);
  CHECK(r.reason == "no cache yet");
  CHECK(fs::exists(r.path));
  CHECK(fs::path(r.path).parent_path() == fs::path(f.cache));
  CHECK(contains(fs::path(r.path).filename().string(), "data-32px-5-"));
  CHECK(same_pixels(first, decoded));

  const Dataset hit = f.load(32, r);
  CHECK(r.outcome == Outcome::kHit);
  CHECK(same_pixels(hit, decoded));
  CHECK(hit.stems == decoded.stems);
  CHECK(hit.lesion_ids == decoded.lesion_ids);  // taken from the samples, not the cache
  CHECK(hit.dxs == decoded.dxs);

  // Metadata edits need no rebuild; the hit reflects them.
  f.samples[2].lesion_id = "HAM_0000009";
  CHECK(f.load(32, r).lesion_ids[2] == "HAM_0000009");
  CHECK(r.outcome == Outcome::kHit);

  // Nothing but the cache file is left in the folder (no temporary files).
  CHECK(std::distance(fs::directory_iterator(f.cache), fs::directory_iterator()) == 1);
}

TEST_CASE("cache: a changed file, another size or another decoder rebuilds") {
  Fixture f;
  CacheReport r;
  f.load(24, r);
  REQUIRE(r.outcome == Outcome::kBuilt);

  SUBCASE("a mask rewritten with new content") {
    std::vector<uint8_t> full(80 * 60, 255);
    REQUIRE(stbi_write_png(f.samples[1].mask_path.c_str(), 80, 60, 1, full.data(), 80));
    const auto t = fs::last_write_time(f.samples[1].mask_path);
    fs::last_write_time(f.samples[1].mask_path, t + std::chrono::seconds(2));
    const Dataset rebuilt = f.load(24, r);
    CHECK(r.outcome == Outcome::kBuilt);
    CHECK(contains(r.reason, "1 file changed"));
    CHECK(contains(r.reason, f.samples[1].stem));
    CHECK(same_pixels(rebuilt, load_dataset(f.samples, 24)));
    CHECK(std::all_of(rebuilt.mask(1), rebuilt.mask(1) + rebuilt.mask_bytes(),
                      [](uint8_t v) { return v == 1; }));
    f.load(24, r);
    CHECK(r.outcome == Outcome::kHit);
  }
  SUBCASE("only the modification time changes") {
    const auto t = fs::last_write_time(f.samples[0].image_path);
    fs::last_write_time(f.samples[0].image_path, t + std::chrono::seconds(5));
    f.load(24, r);
    CHECK(r.outcome == Outcome::kBuilt);
    CHECK(contains(r.reason, "changed"));
  }
  SUBCASE("a different training size has its own file") {
    const std::string first_path = r.path;
    f.load(32, r);
    CHECK(r.outcome == Outcome::kBuilt);
    CHECK(r.path != first_path);
    f.load(24, r);
    CHECK(r.outcome == Outcome::kHit);
  }
  SUBCASE("a renamed image changes the file list") {
    const fs::path old_image = f.samples[4].image_path, old_mask = f.samples[4].mask_path;
    fs::rename(old_image, old_image.parent_path() / "ISIC_9999999.jpg");
    fs::rename(old_mask, old_mask.parent_path() / "ISIC_9999999_segmentation.png");
    f.samples = find_pairs(f.data);
    f.load(24, r);
    CHECK(r.outcome == Outcome::kBuilt);
    CHECK(contains(r.reason, "file list changed"));
  }
}

TEST_CASE("cache: truncated, damaged or foreign cache files are rebuilt, never trusted") {
  Fixture f;
  CacheReport r;
  const Dataset decoded = f.load(32, r);
  const std::string path = r.path;
  const std::string good = read_file(path);

  auto rewrite = [&](const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  };
  struct Case {
    const char* name;
    std::string bytes;
    const char* reason;
  };
  std::string bad_header = good;
  std::fill(bad_header.begin() + 30, bad_header.begin() + 60, '#');
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  std::string huge_length = good;
  std::fill(huge_length.begin() + 16, huge_length.begin() + 24, char(0x7f));
  const std::vector<Case> cases = {
      {"cut in the pixels", good.substr(0, good.size() - 100), "truncated"},
      {"cut in the header", good.substr(0, 40), "header"},
      {"empty file", "", "truncated"},
      {"garbage in the header", bad_header, "damaged header"},
      {"wrong magic", bad_magic, "not a unetcu cache"},
      {"absurd header length", huge_length, "damaged header"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    rewrite(c.bytes);
    const Dataset again = f.load(32, r);
    CHECK(r.outcome == Outcome::kBuilt);
    CHECK(contains(r.reason, c.reason));
    CHECK(same_pixels(again, decoded));
    CHECK(read_file(path) == good);  // rebuilt to the same bytes
  }
}

TEST_CASE("cache: an unwritable cache folder still gives the data; warnings replay on a hit") {
  Fixture f;
  SUBCASE("cache folder is a file") {
    const std::string blocker = (f.tmp.path / "blocker").string();
    std::ofstream(blocker) << "x";
    CacheReport r;
    const Dataset ds = load_cached(f.samples, 16, blocker, {}, &r);
    CHECK(r.outcome == Outcome::kNotWritten);
    CHECK(contains(r.reason, blocker));
    CHECK(same_pixels(ds, load_dataset(f.samples, 16)));
  }
  SUBCASE("non-binary masks") {
    std::vector<uint8_t> soft(80 * 60);
    for (size_t i = 0; i < soft.size(); ++i) soft[i] = uint8_t(i % 251);
    REQUIRE(stbi_write_png(f.samples[0].mask_path.c_str(), 80, 60, 1, soft.data(), 80));
    std::vector<std::string> warnings;
    LoadOptions opt;
    opt.warn = [&](const std::string& w) { warnings.push_back(w); };
    CacheReport r;
    CHECK(f.load(16, r, opt).n_nonbinary_masks == 1);
    CHECK(r.outcome == Outcome::kBuilt);
    CHECK(f.load(16, r, opt).n_nonbinary_masks == 1);
    CHECK(r.outcome == Outcome::kHit);
    REQUIRE(warnings.size() == 2);
    CHECK(warnings[0] == warnings[1]);
    CHECK(contains(warnings[1], "thresholded"));
  }
}

TEST_CASE("cache: default folder follows XDG_CACHE_HOME, then HOME") {
  const char* old_xdg = std::getenv("XDG_CACHE_HOME");
  const char* old_home = std::getenv("HOME");
  const std::string saved_xdg = old_xdg ? old_xdg : "", saved_home = old_home ? old_home : "";
  setenv("XDG_CACHE_HOME", "/somewhere/xdg", 1);
  CHECK(default_cache_dir() == "/somewhere/xdg/unetcu");
  unsetenv("XDG_CACHE_HOME");
  setenv("HOME", "/home/someone", 1);
  CHECK(default_cache_dir() == "/home/someone/.cache/unetcu");
  unsetenv("HOME");
  CHECK(default_cache_dir().empty());
  if (old_xdg) setenv("XDG_CACHE_HOME", saved_xdg.c_str(), 1);
  if (old_home) setenv("HOME", saved_home.c_str(), 1);
}
