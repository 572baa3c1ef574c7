// bench/cpu_loader.cpp: throughput of the prefetching loader (data/loader.h) at 128x128, and
// the decode-once cache's cold build and warm load.
//
//   bench_cpu_loader [google benchmark flags]
//       loader images/s, 1 and 2 workers, with and without augmentation, batch 16, from an
//       in-memory set of 2,000 generated images, beside BatchIterator::fill on the calling
//       thread (the loop the loader replaces).
//   bench_cpu_loader --data DIR --cache-dir CDIR [--size 128] [google benchmark flags]
//       the same from the memory-mapped cache of a data folder (built first if missing).
//   bench_cpu_loader --cache-timing DIR --cache-dir CDIR [--size 128]
//       removes the folder's cache, then times the cold build (decode on all cores, resize,
//       write) and the warm load (open, check, map) plus a first pass over every pixel; prints
//       a table and runs no benchmarks.
//
// Before anything is timed, the first batches of each configuration are compared with what
// BatchIterator (and, with augmentation, dihedral_copy) gives: a wrong loader posts no number.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "data/batch.h"
#include "data/cache.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "engine/error.h"
#include "engine/rng.h"

using namespace unetcu;
using namespace unetcu::data;

namespace {

constexpr int kBatch = 16;
constexpr int kRing = 4;
constexpr int kGeneratedImages = 2000;

Dataset g_data;
std::vector<int> g_indices;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Random pixels: the loader only moves bytes, so content does not change its speed.
Dataset generated(int n, int size) {
  Dataset ds;
  ds.n = n;
  ds.size = size;
  ds.allocate();
  Rng rng(1);
  for (int i = 0; i < n; ++i) {
    uint8_t* img = ds.writable_image(i);
    for (size_t k = 0; k < ds.image_bytes(); k += 8) {
      const uint64_t r = rng.next_u64();
      std::memcpy(img + k, &r, std::min<size_t>(8, ds.image_bytes() - k));
    }
    uint8_t* msk = ds.writable_mask(i);
    for (size_t k = 0; k < ds.mask_bytes(); ++k) msk[k] = uint8_t(rng.next_u64() & 1);
    ds.stems.push_back(std::to_string(i));
  }
  return ds;
}

LoaderOptions options(int workers, bool augment) {
  LoaderOptions opt;
  opt.batch_size = kBatch;
  opt.seed = 7;
  opt.augment = augment;
  opt.workers = workers;
  opt.ring = kRing;
  return opt;
}

// Compares the loader's first batches of epochs 0 and 1 with an independent assembly.
bool validate(int workers, bool augment) {
  Loader loader(g_data, g_indices, options(workers, augment));
  BatchIterator it(g_data, g_indices, kBatch, 7, true);
  const size_t ib = g_data.image_bytes(), mb = g_data.mask_bytes();
  std::vector<uint8_t> images(kBatch * ib), masks(kBatch * mb);
  for (int epoch : {0, 1}) {
    loader.start_epoch(epoch);
    it.set_epoch(epoch);
    for (int b = 0; b < 3; ++b) {
      const LoaderBatch got = loader.next();
      if (augment) {
        for (int k = 0; k < it.batch_count(b); ++k) {
          const int position = b * kBatch + k, i = it.order()[size_t(position)];
          const int t = augment_transform(7, epoch, position);
          dihedral_copy(images.data() + k * ib, g_data.image(i), g_data.size, 3, t);
          dihedral_copy(masks.data() + k * mb, g_data.mask(i), g_data.size, 1, t);
        }
      } else {
        it.fill(b, images.data(), masks.data());
      }
      const int n = it.batch_count(b);
      if (got.n != n || std::memcmp(got.images, images.data(), n * ib) != 0 ||
          std::memcmp(got.masks, masks.data(), n * mb) != 0) {
        std::fprintf(stderr, "loader check FAILED: workers %d augment %d epoch %d batch %d\n",
                     workers, int(augment), epoch, b);
        return false;
      }
      loader.release(got);
    }
  }
  return true;
}

// One iteration = one batch handed to the consumer, which only looks at one byte of it (the
// GPU copy that follows in training is not the loader's time).
void BM_loader(benchmark::State& state) {
  const int workers = int(state.range(0));
  const bool augment = state.range(1) != 0;
  Loader loader(g_data, g_indices, options(workers, augment));
  int epoch = 0;
  int64_t images = 0;
  for (auto _ : state) {
    LoaderBatch b = loader.next();
    if (!b) {
      loader.start_epoch(++epoch);
      b = loader.next();
    }
    benchmark::DoNotOptimize(b.images[0]);
    images += b.n;
    loader.release(b);
  }
  state.SetItemsProcessed(images);
  state.SetBytesProcessed(images * int64_t(g_data.image_bytes() + g_data.mask_bytes()));
}

// The loop the loader replaces: BatchIterator::fill on the training thread.
void BM_batch_iterator_fill(benchmark::State& state) {
  BatchIterator it(g_data, g_indices, kBatch, 7, true);
  std::vector<uint8_t> images(kBatch * g_data.image_bytes()), masks(kBatch * g_data.mask_bytes());
  int b = 0, epoch = 0;
  int64_t n = 0;
  for (auto _ : state) {
    if (b == it.num_batches()) {
      it.set_epoch(++epoch);
      b = 0;
    }
    n += it.fill(b++, images.data(), masks.data());
    benchmark::DoNotOptimize(images.data());
  }
  state.SetItemsProcessed(n);
  state.SetBytesProcessed(n * int64_t(g_data.image_bytes() + g_data.mask_bytes()));
}

int cache_timing(const std::string& dir, const std::string& cache_dir, int size) {
  const std::vector<Sample> samples = find_pairs(dir);
  const std::string path = cache_path(samples, size, cache_dir);
  std::filesystem::remove(path);
  CacheReport r;
  auto t0 = std::chrono::steady_clock::now();
  const int n_cold = load_cached(samples, size, cache_dir, {}, &r).n;
  const double cold = seconds_since(t0);
  if (r.outcome != CacheReport::Outcome::kBuilt) {
    std::fprintf(stderr, "cache was not written: %s\n", r.reason.c_str());
    return 1;
  }
  const auto file_bytes = std::filesystem::file_size(path);

  t0 = std::chrono::steady_clock::now();
  const Dataset warm = load_cached(samples, size, cache_dir, {}, &r);
  const double open = seconds_since(t0);
  if (r.outcome != CacheReport::Outcome::kHit) {
    std::fprintf(stderr, "second load was not a hit: %s\n", r.reason.c_str());
    return 1;
  }
  uint64_t sum = 0;  // touch every page of both blocks
  for (int i = 0; i < warm.n; ++i) {
    for (size_t k = 0; k < warm.image_bytes(); k += 512) sum += warm.image(i)[k];
    for (size_t k = 0; k < warm.mask_bytes(); k += 512) sum += warm.mask(i)[k];
  }
  const double touched = seconds_since(t0);

  std::printf("cache timing: %d images of %s at %dx%d, cache %s (%.1f MiB)\n", n_cold, dir.c_str(),
              size, size, path.c_str(), double(file_bytes) / (1 << 20));
  std::printf("| step | seconds | images/s |\n|---|---|---|\n");
  std::printf("| cold: decode + resize + write | %.2f | %.0f |\n", cold, n_cold / cold);
  std::printf("| warm: open + check + map | %.3f | %.0f |\n", open, warm.n / open);
  std::printf("| warm: open + map + read every page | %.3f | %.0f |\n", touched, warm.n / touched);
  std::printf("(checksum %llu)\n", static_cast<unsigned long long>(sum));
  return 0;
}

// Removes "--name value" from argv; returns value or "".
std::string take_option(int& argc, char** argv, const char* name) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) {
      std::string v = argv[i + 1];
      for (int j = i; j + 2 <= argc; ++j) argv[j] = argv[j + 2];
      argc -= 2;
      return v;
    }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string data_dir = take_option(argc, argv, "--data");
    const std::string timing_dir = take_option(argc, argv, "--cache-timing");
    std::string cache_dir = take_option(argc, argv, "--cache-dir");
    const std::string size_text = take_option(argc, argv, "--size");
    const int size = size_text.empty() ? 128 : std::atoi(size_text.c_str());
    if (cache_dir.empty()) cache_dir = default_cache_dir();
    if (!timing_dir.empty()) return cache_timing(timing_dir, cache_dir, size);

    if (data_dir.empty()) {
      g_data = generated(kGeneratedImages, size);
      benchmark::AddCustomContext("source",
                                  std::to_string(g_data.n) + " generated images in memory");
    } else {
      CacheReport r;
      g_data = load_cached(find_pairs(data_dir), size, cache_dir, {}, &r);
      std::fprintf(stderr, "cache: %s\n", r.path.c_str());
      benchmark::AddCustomContext(
          "source", std::to_string(g_data.n) + " images, cache " + r.path +
                        (r.outcome == CacheReport::Outcome::kHit ? " (hit)" : " (built)"));
    }
    benchmark::AddCustomContext("image size", std::to_string(size) + "x" + std::to_string(size));
    for (int i = 0; i < g_data.n; ++i) g_indices.push_back(i);
    for (int workers : {1, 2})
      for (bool augment : {false, true})
        if (!validate(workers, augment)) return 1;
    std::fprintf(stderr, "loader check: the first batches match BatchIterator / dihedral_copy\n");
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_cpu_loader: error: %s\n", e.what());
    return 1;
  }

  benchmark::RegisterBenchmark("batch_iterator_fill/batch:16", BM_batch_iterator_fill)
      ->UseRealTime();
  benchmark::RegisterBenchmark("loader/batch:16", BM_loader)
      ->ArgNames({"workers", "augment"})
      ->Args({1, 0})
      ->Args({2, 0})
      ->Args({1, 1})
      ->Args({2, 1})
      ->UseRealTime();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
