// tests/simt/test_simt_kernels.cpp: the SIMT emulator running real kernels: barriers, warp
// shuffles and votes, atomics, dynamic shared memory, schedules, workers, cooperative, chained
// and cluster launches, and the reports for faulty kernels (deadlock, early exit, divergent
// barrier, poisoned shuffle, cluster misuse, launch checks).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/simt/control.h"
#include "tests/simt/simt_test_kernels.h"
#include "tests/simt/simt_test_util.h"

using simt_test::DeviceArray;
using unetcu::simt::Schedule;

namespace {

std::vector<float> random_floats(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Runs `launch`: the code of the CudaError it threw (cudaSuccess if none), its text in *message.
cudaError_t launch_error(const std::function<void()>& launch, std::string* message) {
  try {
    launch();
  } catch (const unetcu::CudaError& e) {
    *message = e.what();
    return e.code();
  }
  return cudaSuccess;
}

std::vector<double> block_sums(const std::vector<float>& in, int block) {
  std::vector<double> sums((in.size() + block - 1) / block, 0.0);
  for (size_t i = 0; i < in.size(); ++i) sums[i / block] += in[i];
  return sums;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

uint32_t bits_of(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

// Workers and schedule go back to their defaults after each test that changes them.
struct RestoreSettings {
  ~RestoreSettings() {
    unetcu::simt::set_workers(1);
    unetcu::simt::set_schedule(Schedule::forward);
  }
};

}  // namespace

TEST_CASE("simt: shared-memory tree reduction, both schedules bit-identical") {
  const int n = 10000, block = 256;
  const std::vector<float> in = random_floats(n, 1);
  DeviceArray<float> d_in(in);
  DeviceArray<float> d_out((n + block - 1) / block);
  bool identical = false;
  const std::vector<float> out = simt_test::run_both_schedules(
      d_out, [&] { simt_test::block_sum_tree(d_out.get(), d_in.get(), n, block, nullptr); },
      &identical);
  CHECK(identical);
  const std::vector<double> expected = block_sums(in, block);
  for (size_t b = 0; b < expected.size(); ++b) {
    CHECK(out[b] == doctest::Approx(expected[b]).epsilon(1e-5));
  }
}

TEST_CASE("simt: warp-shuffle reduction matches the tree, both schedules bit-identical") {
  const int n = 5000;
  const std::vector<float> in = random_floats(n, 2);
  DeviceArray<float> d_in(in);
  for (int block : {32, 96, 256, 1024}) {
    CAPTURE(block);
    DeviceArray<float> d_out((n + block - 1) / block);
    bool identical = false;
    const std::vector<float> out = simt_test::run_both_schedules(
        d_out, [&] { simt_test::block_sum_shuffle(d_out.get(), d_in.get(), n, block, nullptr); },
        &identical);
    CHECK(identical);
    const std::vector<double> expected = block_sums(in, block);
    for (size_t b = 0; b < expected.size(); ++b) {
      CHECK(out[b] == doctest::Approx(expected[b]).epsilon(1e-5));
    }
  }
}

TEST_CASE("simt: shuffles follow the CUDA rules for every width") {
  // The documented semantics, written independently of the emulator's PTX formulation.
  std::vector<int> src(32);
  for (int lane = 0; lane < 32; ++lane) src[lane] = (lane * 7 + 3) % 40;  // some beyond 31
  DeviceArray<int> d_src(src);
  DeviceArray<int> d_out(4 * 32);
  for (int width : {32, 16, 8, 4, 2, 1}) {
    for (int delta : {1, 3, 8}) {
      for (int lane_mask : {1, 5, 16}) {
        CAPTURE(width);
        CAPTURE(delta);
        CAPTURE(lane_mask);
        unetcu::simt::reset_counters();
        simt_test::shuffles(d_out.get(), d_src.get(), delta, lane_mask, width, nullptr);
        const std::vector<int> out = d_out.read();
        for (int lane = 0; lane < 32; ++lane) {
          CAPTURE(lane);
          const int segment = lane / width * width, in_segment = lane % width;
          CHECK(out[lane] == 100 + segment + src[lane] % width);
          CHECK(out[32 + lane] == 100 + (in_segment >= delta ? lane - delta : lane));
          CHECK(out[64 + lane] == 100 + (in_segment + delta < width ? lane + delta : lane));
          const int partner = lane ^ lane_mask;
          CHECK(out[96 + lane] == 100 + (partner < segment + width ? partner : lane));
        }
        CHECK(unetcu::simt::counters().poisoned_reads == 0);
        CHECK(unetcu::simt::counters().warp_collectives == 4);
      }
    }
  }
}

// The TF32 value the hardware reads from a float: its top 19 bits (sign, exponent, 10 mantissa
// bits), the low 13 ignored; written apart from the emulator's own masking.
double tf32_truncated(float x) {
  if (x == 0.0f) return 0.0;
  const int exponent = std::ilogb(x);  // x = m 2^e, 1 <= |m| < 2
  const double step = std::ldexp(1.0, exponent - 10);
  return std::trunc(double(x) / step) * step;
}

TEST_CASE("simt: the tensor-core product follows PTX's m16n8k8 TF32 fragment layout") {
  std::mt19937 rng(41);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  auto random = [&](size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
  };
  const std::vector<float> a = random(16 * 8), b = random(8 * 8), c = random(16 * 8);
  DeviceArray<float> da(a), db(b), dc(c), dd(16 * 8);
  unetcu::simt::reset_counters();
  simt_test::mma_tf32_product(dd.get(), da.get(), db.get(), dc.get(), nullptr);
  const std::vector<float> d = dd.read();
  CHECK(unetcu::simt::counters().warp_collectives == 1);
  int wrong = 0;
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      // The products of the TF32 operands are exact in double; the sum is rounded once.
      double want = c[i * 8 + j], terms = std::fabs(c[i * 8 + j]);
      for (int k = 0; k < 8; ++k) {
        want += tf32_truncated(a[i * 8 + k]) * tf32_truncated(b[k * 8 + j]);
        terms += std::fabs(tf32_truncated(a[i * 8 + k]) * tf32_truncated(b[k * 8 + j]));
      }
      const double err = std::fabs(double(d[i * 8 + j]) - want);
      if (!(err <= terms * std::ldexp(1.0, -24))) {
        ++wrong;
        CAPTURE(i);
        CAPTURE(j);
        CHECK(d[i * 8 + j] == doctest::Approx(want));
      }
    }
  }
  CHECK(wrong == 0);
}

TEST_CASE("simt: a tensor-core product with a lane gone aborts") {
  bool aborted = false;
  const std::string report =
      simt_test::run_in_child([] { simt_test::mma_short_warp(5, nullptr); }, &aborted);
  CAPTURE(report);
  CHECK(aborted);
  CHECK(report.find("mma.sync.m16n8k8.tf32") != std::string::npos);
  CHECK(report.find("with lanes 0xffffffdf only") != std::string::npos);
}

TEST_CASE("simt: ballot, any and all per warp") {
  const int threads = 64;
  std::vector<int> pred(threads, 7);                                  // warp 0: all true
  for (int t = 32; t < threads; ++t) pred[t] = (t % 3 == 0) ? 1 : 0;  // warp 1: mixed
  DeviceArray<int> d_pred(pred);
  DeviceArray<unsigned> d_out(3 * threads);
  bool identical = false;
  const std::vector<unsigned> out = simt_test::run_both_schedules(
      d_out, [&] { simt_test::votes(d_out.get(), d_pred.get(), threads, nullptr); }, &identical);
  CHECK(identical);
  unsigned ballot1 = 0;
  for (int lane = 0; lane < 32; ++lane) ballot1 |= (pred[32 + lane] != 0 ? 1u : 0u) << lane;
  for (int t = 0; t < threads; ++t) {
    CAPTURE(t);
    if (t < 32) {
      CHECK(out[3 * t] == 0xffffffffu);
      CHECK(out[3 * t + 1] == 1);
      CHECK(out[3 * t + 2] == 1);
    } else {
      CHECK(out[3 * t] == ballot1);
      CHECK(out[3 * t + 1] == 1);
      CHECK(out[3 * t + 2] == 0);
    }
  }
}

TEST_CASE("simt: warp reductions, __activemask and __syncwarp with a partial last warp") {
  const int threads = 40;  // warp 1 has 8 live lanes
  std::vector<int> values(threads);
  for (int t = 0; t < threads; ++t) values[t] = (t * 37) % 23 - 11;
  DeviceArray<int> d_values(values);
  DeviceArray<int> d_out(4 * threads);
  bool identical = false;
  const std::vector<int> out = simt_test::run_both_schedules(
      d_out, [&] { simt_test::warp_reductions(d_out.get(), d_values.get(), threads, nullptr); },
      &identical);
  CHECK(identical);
  for (int t = 0; t < threads; ++t) {
    CAPTURE(t);
    const int first = t / 32 * 32, last = std::min(first + 32, threads);
    int sum = 0, lo = values[first], hi = values[first];
    for (int u = first; u < last; ++u) {
      sum += values[u];
      lo = std::min(lo, values[u]);
      hi = std::max(hi, values[u]);
    }
    CHECK(out[4 * t] == sum);
    CHECK(out[4 * t + 1] == lo);
    CHECK(out[4 * t + 2] == hi);
    CHECK(static_cast<unsigned>(out[4 * t + 3]) == (t < 32 ? 0xffffffffu : 0xffu));
  }
}

TEST_CASE("simt: __syncthreads_count/and/or with a partial last warp") {
  const int threads = 100;
  std::vector<int> pred(threads);
  for (int t = 0; t < threads; ++t) pred[t] = t % 4 == 0;
  DeviceArray<int> d_pred(pred);
  DeviceArray<int> d_counts(3);
  simt_test::barrier_votes(d_counts.get(), d_pred.get(), threads, nullptr);
  std::vector<int> counts = d_counts.read();
  CHECK(counts[0] == 25);
  CHECK(counts[1] == 0);
  CHECK(counts[2] == 1);
  DeviceArray<int> all_true(std::vector<int>(threads, 1));
  simt_test::barrier_votes(d_counts.get(), all_true.get(), threads, nullptr);
  counts = d_counts.read();
  CHECK(counts[0] == threads);
  CHECK(counts[1] == 1);
  CHECK(counts[2] == 1);
}

TEST_CASE("simt: atomics across many blocks and several workers") {
  RestoreSettings restore;
  const int blocks = 50, total = blocks * 256;
  for (int workers : {1, 2, 4}) {
    CAPTURE(workers);
    unetcu::simt::set_workers(workers);
    DeviceArray<float> fsum(std::vector<float>{0.0f});
    DeviceArray<int> isum(std::vector<int>{0});
    DeviceArray<int> imax(std::vector<int>{0});
    DeviceArray<unsigned long long> casum(std::vector<unsigned long long>{0});
    simt_test::atomics(fsum.get(), isum.get(), imax.get(), casum.get(), blocks, nullptr);
    CHECK(fsum.read()[0] == static_cast<float>(total));  // integers: exact in any order
    CHECK(isum.read()[0] == total);
    CHECK(imax.read()[0] == total);
    CHECK(casum.read()[0] == 2ull * total);
  }
}

TEST_CASE("simt: several workers give the bits of one") {
  RestoreSettings restore;
  const int n = 100000, block = 128;
  const std::vector<float> in = random_floats(n, 3);
  DeviceArray<float> d_in(in);
  DeviceArray<float> d_out((n + block - 1) / block);
  simt_test::block_sum_shuffle(d_out.get(), d_in.get(), n, block, nullptr);
  const std::vector<float> one = d_out.read();
  for (int workers : {2, 3}) {
    unetcu::simt::set_workers(workers);
    unetcu::simt::reset_counters();
    simt_test::block_sum_shuffle(d_out.get(), d_in.get(), n, block, nullptr);
    CHECK(same_bits(d_out.read(), one));
    const unetcu::simt::Counters c = unetcu::simt::counters();
    CHECK(c.blocks == (n + block - 1) / block);
    CHECK(c.threads == uint64_t((n + block - 1) / block) * block);
    CHECK(c.barriers == c.blocks);
  }
}

TEST_CASE("simt: dynamic shared memory is per block and starts poisoned") {
  const int n = 1000, block = 128;
  std::vector<float> in(n);
  for (int i = 0; i < n; ++i) in[i] = static_cast<float>(i);
  DeviceArray<float> d_in(in);
  DeviceArray<float> d_out(std::vector<float>(n, -1.0f));
  simt_test::reverse_blocks(d_out.get(), d_in.get(), n, block, nullptr);
  const std::vector<float> out = d_out.read();
  for (int i = 0; i < (n / block) * block; ++i) {
    const int base = i / block * block;
    CHECK(out[i] == in[base + block - 1 - (i - base)]);
  }

  DeviceArray<unsigned> words(256);
  simt_test::read_dynamic_shared(words.get(), 256, nullptr);
  for (unsigned w : words.read()) CHECK(w == 0xffffffffu);
}

TEST_CASE("simt: static shared arrays start poisoned in every block") {
  // One worker runs the blocks one after another on one OS thread: a plain `__shared__`
  // (thread_local) array would show block 0's writes to block 1.
  unetcu::simt::set_workers(1);
  const int blocks = 3;
  DeviceArray<unsigned> out(blocks * 64);
  simt_test::static_shared_fresh(out.get(), blocks, nullptr);
  const std::vector<unsigned> words = out.read();
  for (int i = 0; i < blocks * 64; ++i) {
    CAPTURE(i);
    CHECK(words[i] == 0xffffffffu);
  }
}

TEST_CASE("simt: a static shared array is one per block, aligned and apart from the others") {
  const int threads = 64;
  DeviceArray<unsigned long long> out(5 * threads);
  simt_test::static_shared_places(out.get(), threads, nullptr);
  const std::vector<unsigned long long> v = out.read();
  for (int t = 1; t < threads; ++t) {
    CAPTURE(t);
    for (int k = 0; k < 4; ++k) CHECK(v[5 * t + k] == v[k]);  // every thread, the same arrays
  }
  CHECK(v[1] == v[0]);   // the device function's second call: the same array
  CHECK(v[4] == 24u);    // sizeof sees the array type
  struct Range {
    unsigned long long begin, bytes;
  };
  const Range ranges[] = {{v[0], 64 * 4}, {v[2], 3 * 8}, {v[3], 5}};
  for (const Range& a : ranges) {
    CHECK(a.begin % 16 == 0);
    for (const Range& b : ranges) {
      if (&a != &b) CHECK((a.begin + a.bytes <= b.begin || b.begin + b.bytes <= a.begin));
    }
  }
}

TEST_CASE("simt: static shared arrays past what a kernel may declare abort") {
  bool aborted = false;
  std::string report =
      simt_test::run_in_child([] { simt_test::static_shared_too_large(nullptr); }, &aborted);
  CAPTURE(report);
  CHECK(aborted);
  CHECK(report.find("declared the static shared array second (16388 bytes) at "
                    "tests/simt/simt_test_kernels.cu:") != std::string::npos);
  CHECK(report.find("the block's static arrays take 49156 bytes, more than the 48 KB") !=
        std::string::npos);
  CHECK(report.find("in kernel static_shared_too_large_kernel") != std::string::npos);

  // 16 KB static and 211 KB dynamic fit the 227 KB a block may have; 4 bytes more do not.
  CHECK_NOTHROW(simt_test::static_with_dynamic(211 * 1024, nullptr));
  report = simt_test::run_in_child(
      [] { simt_test::static_with_dynamic(211 * 1024 + 4, nullptr); }, &aborted);
  CAPTURE(report);
  CHECK(aborted);
  CHECK(report.find("with the launch's 216068 bytes of dynamic shared memory, the 227 KB") !=
        std::string::npos);
}

TEST_CASE("simt: an index past a static shared array is a bounds report") {
  // -fsanitize=bounds in every emulated build: the array's type carries its extent.
  bool aborted = false;
  CHECK_NOTHROW(simt_test::static_shared_index(31, false, nullptr));
  const std::string report =
      simt_test::run_in_child([] { simt_test::static_shared_index(32, false, nullptr); },
                              &aborted);
  CAPTURE(report);
  CHECK(report.find("index 32 out of bounds for type 'int [32]'") != std::string::npos);
}

TEST_CASE("simt: a missing __syncthreads shows as a schedule difference") {
  const int block = 64;
  DeviceArray<float> out(block);
  bool identical = true;
  simt_test::run_both_schedules(out, [&] { simt_test::missing_barrier(out.get(), block, nullptr); },
                                &identical);
  CHECK_FALSE(identical);
}

TEST_CASE("simt: 3-D grids and blocks map threadIdx/blockIdx like CUDA") {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const int total = 3 * 2 * 2 * 4 * 3 * 2;
  DeviceArray<int> out(total);
  simt_test::index_3d(out.get(), grid, block, nullptr);
  const std::vector<int> got = out.read();
  for (int i = 0; i < total; ++i) CHECK(got[i] == i);
}

TEST_CASE("simt: a shuffle from a lane outside the mask reads poison and is counted") {
  DeviceArray<float> out(32);
  unetcu::simt::reset_counters();
  simt_test::poisoned_shuffle(out.get(), nullptr);
  const std::vector<float> got = out.read();
  for (int lane = 0; lane < 16; ++lane) {
    CHECK(std::isnan(got[lane]));
    CHECK(bits_of(got[lane]) == 0xffffffffu);
  }
  CHECK(unetcu::simt::counters().poisoned_reads == 16);
}

TEST_CASE("simt: a deadlock aborts naming where each thread waits") {
  for (Schedule schedule : {Schedule::forward, Schedule::reverse}) {
    bool aborted = false;
    const std::string report = simt_test::run_in_child(
        [&] {
          unetcu::simt::set_schedule(schedule);
          simt_test::deadlock(nullptr);
        },
        &aborted);
    CAPTURE(report);
    CHECK(aborted);
    CHECK(report.find("deadlock") != std::string::npos);
    CHECK(report.find("63 thread(s) wait at __syncthreads at tests/simt/simt_test_kernels.cu:") !=
          std::string::npos);
    CHECK(report.find("1 thread(s) wait at __shfl_sync (mask 0x3)") != std::string::npos);
    CHECK(report.find("deadlock_kernel") != std::string::npos);
  }
}

TEST_CASE("simt: a cooperative launch runs its blocks together across grid barriers") {
  const int rounds = 5;
  for (Schedule schedule : {Schedule::forward, Schedule::reverse}) {
    for (int blocks : {1, 3, 8}) {
      for (int threads : {32, 96}) {
        CAPTURE(blocks);
        CAPTURE(threads);
        unetcu::simt::set_schedule(schedule);
        DeviceArray<int> slots(std::vector<int>(size_t(rounds * blocks), -1));
        DeviceArray<int> out(std::vector<int>(size_t(rounds * blocks), -1));
        unetcu::simt::reset_counters();
        simt_test::grid_rounds(slots.get(), out.get(), blocks, threads, rounds, nullptr);
        const std::vector<int> got = out.read();
        for (int r = 0; r < rounds; ++r) {
          const int want = blocks * (r + 1) * 1000 + blocks * (blocks - 1) / 2;
          for (int b = 0; b < blocks; ++b) CHECK(got[size_t(r * blocks + b)] == want);
        }
        const auto c = unetcu::simt::counters();
        CHECK(c.blocks == uint64_t(blocks));
        CHECK(c.barriers == uint64_t(blocks * rounds));  // each grid barrier counts per block
      }
    }
  }
  unetcu::simt::set_schedule(Schedule::forward);
}

TEST_CASE("simt: a cooperative launch beyond the co-resident limit fails as on a GPU") {
  const int blocks = unetcu::simt::kMaxCooperativeBlocks + 1;
  DeviceArray<int> slots(static_cast<size_t>(blocks)), out(static_cast<size_t>(blocks));
  std::string message;
  const cudaError_t code = launch_error(
      [&] { simt_test::grid_rounds(slots.get(), out.get(), blocks, 32, 1, nullptr); }, &message);
  CAPTURE(message);
  CHECK(code == cudaErrorCooperativeLaunchTooLarge);
  CHECK(message.find("grid_rounds_kernel") != std::string::npos);
  CHECK(message.find("cooperative launch of 65 blocks") != std::string::npos);
  CHECK(cudaPeekAtLastError() == cudaSuccess);
}

TEST_CASE("simt: a grid barrier outside a cooperative launch aborts") {
  bool aborted = false;
  const std::string report =
      simt_test::run_in_child([] { simt_test::grid_sync_in_ordinary_launch(nullptr); }, &aborted);
  CAPTURE(report);
  CHECK(aborted);
  CHECK(report.find("reached a grid barrier at tests/simt/simt_test_kernels.cu:") !=
        std::string::npos);
  CHECK(report.find("not launched with UNETCU_LAUNCH_COOPERATIVE") != std::string::npos);
}

TEST_CASE("simt: a block finishing while others wait at a grid barrier aborts") {
  bool aborted = false;
  const std::string report =
      simt_test::run_in_child([] { simt_test::grid_sync_after_block_exit(nullptr); }, &aborted);
  CAPTURE(report);
  CHECK(aborted);
  // Block 1 either finishes while others wait, or finishes first and a later block reports it.
  CHECK(report.find("block (1,0,0)") != std::string::npos);
  CHECK(report.find("every block of a cooperative launch must reach each grid barrier") !=
        std::string::npos);
  CHECK(report.find("grid_sync_early_exit_kernel") != std::string::npos);
}

TEST_CASE("simt: a chained launch runs after the previous kernel of its stream") {
  const int n = 200;  // four blocks of 64, the last one partial
  std::vector<int> first(n);
  for (int i = 0; i < n; ++i) first[size_t(i)] = i - 50;
  DeviceArray<int> a(first), b(static_cast<size_t>(n)), c(static_cast<size_t>(n));
  unetcu::simt::reset_counters();
  simt_test::chained_scale(b.get(), a.get(), n, nullptr);  // b = 2a + 1
  simt_test::chained_scale(c.get(), b.get(), n, nullptr);  // c = 2b + 1 = 4a + 3
  CHECK(unetcu::simt::counters().launches == 2u);
  const std::vector<int> got = c.read();
  for (int i = 0; i < n; ++i) CHECK(got[size_t(i)] == 4 * (i - 50) + 3);
}

TEST_CASE("simt: a thread of a chained launch finishing without the dependency sync aborts") {
  bool aborted = false;
  const std::string report = simt_test::run_in_child(
      [] {
        DeviceArray<int> in(std::vector<int>(64, 1)), out(size_t(64));
        simt_test::chained_missing_sync(out.get(), in.get(), 64, nullptr);
      },
      &aborted);
  CAPTURE(report);
  CHECK(aborted);
  CHECK(report.find("thread (3,0,0) finished without UNETCU_GRID_DEPENDENCY_SYNC()") !=
        std::string::npos);
  CHECK(report.find("chained_missing_sync_kernel") != std::string::npos);
}

namespace {

// What block (x, y) of cluster_exchange reads: word (t + 1) % threads of the next rank's block.
int exchanged(dim3 grid, unsigned cluster, int threads, unsigned x, unsigned y, int t) {
  const unsigned rank = x % cluster, peer = x - rank + (rank + 1) % cluster;
  return static_cast<int>((y * grid.x + peer) * 1000) + (t + 1) % threads;
}

// A faulty launch run in a child: the report it aborted with (empty if it did not abort).
std::string abort_report(const std::function<void()>& launch) {
  bool aborted = false;
  const std::string report = simt_test::run_in_child(launch, &aborted);
  return aborted ? report : std::string();
}

}  // namespace

TEST_CASE("simt: a cluster launch runs a cluster's blocks together and maps their shared memory") {
  for (unsigned cluster : {1u, 2u, 4u, 8u}) {
    for (int threads : {32, 96}) {
      CAPTURE(cluster);
      CAPTURE(threads);
      const dim3 grid(3 * cluster, 2);  // three clusters along x in each of two rows
      const int blocks = static_cast<int>(grid.x * grid.y);
      DeviceArray<int> out(size_t(blocks * threads));
      unetcu::simt::reset_counters();
      bool identical = false;
      const std::vector<int> got = simt_test::run_both_schedules(
          out,
          [&] {
            UNETCU_CUDA_CHECK(cudaMemset(out.get(), 0xFF, out.size() * sizeof(int)));
            simt_test::cluster_exchange(out.get(), grid, threads, cluster, nullptr);
          },
          &identical);
      CHECK(identical);
      int wrong = 0;
      for (unsigned y = 0; y < grid.y; ++y) {
        for (unsigned x = 0; x < grid.x; ++x) {
          for (int t = 0; t < threads; ++t) {
            const size_t i = size_t((y * grid.x + x) * threads + t);
            if (got[i] != exchanged(grid, cluster, threads, x, y, t)) ++wrong;
          }
        }
      }
      CHECK(wrong == 0);
      const auto c = unetcu::simt::counters();
      CHECK(c.launches == 2u);
      CHECK(c.blocks == uint64_t(2 * blocks));
      CHECK(c.barriers == uint64_t(2 * 2 * blocks));  // two cluster barriers per block
    }
  }
}

TEST_CASE("simt: cluster ranks, and a reduction over the cluster done twice in one kernel") {
  const int threads = 64;
  for (unsigned cluster : {2u, 3u, 8u}) {
    CAPTURE(cluster);
    const int blocks = static_cast<int>(2 * cluster);
    DeviceArray<int> sums(size_t(2 * blocks * threads)), info(size_t(2 * blocks));
    bool identical = false;
    const std::vector<int> got = simt_test::run_both_schedules(
        sums,
        [&] {
          simt_test::cluster_rounds(sums.get(), info.get(), blocks, threads, cluster, nullptr);
        },
        &identical);
    CHECK(identical);
    int wrong = 0;
    for (int round = 0; round < 2; ++round) {
      for (int b = 0; b < blocks; ++b) {
        const int first = b / int(cluster) * int(cluster);
        int ranks = 0;  // the sum of b + 1 over the blocks of b's cluster
        for (int k = first; k < first + int(cluster); ++k) ranks += k + 1;
        for (int t = 0; t < threads; ++t) {
          if (got[size_t((round * blocks + b) * threads + t)] != (round + 1) * (t + 1) * ranks) {
            ++wrong;
          }
        }
      }
    }
    CHECK(wrong == 0);
    const std::vector<int> ranks = info.read();
    for (int b = 0; b < blocks; ++b) {
      CHECK(ranks[size_t(2 * b)] == b % int(cluster));
      CHECK(ranks[size_t(2 * b + 1)] == threads);  // one past the end maps too
    }
  }
}

TEST_CASE("simt: a cluster launch whose cluster is too large or does not divide grid.x fails") {
  const int threads = 32;
  struct Bad {
    dim3 grid;
    unsigned cluster;
    const char* why;
  };
  for (const Bad& bad : {Bad{dim3(8), 3, "grid.x 8 is not a multiple of the cluster size 3"},
                         Bad{dim3(16), 16, "a cluster of 16 blocks; a cluster has 1 to 8"}}) {
    CAPTURE(bad.why);
    DeviceArray<int> out(std::vector<int>(size_t(bad.grid.x * threads), -1));
    unetcu::simt::reset_counters();
    std::string message;
    const cudaError_t code = launch_error(
        [&] { simt_test::cluster_exchange(out.get(), bad.grid, threads, bad.cluster, nullptr); },
        &message);
    CAPTURE(message);
    CHECK(code == cudaErrorInvalidClusterSize);
    CHECK(message.find("cluster_exchange_kernel") != std::string::npos);
    CHECK(message.find(bad.why) != std::string::npos);
    CHECK(unetcu::simt::counters().launches == 0u);  // nothing ran
    for (int v : out.read()) CHECK(v == -1);
    CHECK(cudaPeekAtLastError() == cudaSuccess);
  }
}

TEST_CASE("simt: clusters above 8 blocks run after the kernel's non-portable opt-in, to 16") {
  const int threads = 32;
  auto exchange_error = [&](dim3 grid, unsigned cluster, std::string* message) {
    DeviceArray<int> out(size_t(grid.x * threads));
    return launch_error(
        [&] { simt_test::cluster_exchange(out.get(), grid, threads, cluster, nullptr); }, message);
  };
  std::string message;
  // Not opted in: refused, and the message says how to opt in; cluster_fits says no for 32.
  REQUIRE(simt_test::set_cluster_exchange_non_portable(0) == cudaSuccess);
  CHECK(exchange_error(dim3(16), 16, &message) == cudaErrorInvalidClusterSize);
  CHECK(message.find("cudaFuncAttributeNonPortableClusterSizeAllowed") != std::string::npos);
  CHECK_FALSE(simt_test::cluster_exchange_fits(32));
  // cluster_fits opts the kernel in; clusters of 16 then run and exchange as smaller ones do.
  CHECK(simt_test::cluster_exchange_fits(16));
  const dim3 grid(32, 1);
  DeviceArray<int> out(size_t(grid.x * threads));
  bool identical = false;
  const std::vector<int> got = simt_test::run_both_schedules(
      out, [&] { simt_test::cluster_exchange(out.get(), grid, threads, 16, nullptr); },
      &identical);
  CHECK(identical);
  int wrong = 0;
  for (unsigned x = 0; x < grid.x; ++x)
    for (int t = 0; t < threads; ++t)
      if (got[size_t(x * threads + t)] != exchanged(grid, 16, threads, x, 0, t)) ++wrong;
  CHECK(wrong == 0);
  // Opted in, 32 is still above the limit.
  message.clear();
  CHECK(exchange_error(dim3(32), 32, &message) == cudaErrorInvalidClusterSize);
  CHECK(message.find("a cluster of 32 blocks; a cluster has 1 to 16") != std::string::npos);
  CHECK(simt_test::set_cluster_exchange_non_portable(2) == cudaErrorInvalidValue);
  (void)cudaGetLastError();
  // Opting out again restores the portable limit (and leaves the other tests as they were).
  REQUIRE(simt_test::set_cluster_exchange_non_portable(0) == cudaSuccess);
  CHECK(exchange_error(dim3(16), 16, &message) == cudaErrorInvalidClusterSize);
  CHECK(cudaPeekAtLastError() == cudaSuccess);
}

TEST_CASE("simt: a block finishing while its cluster waits at a cluster barrier aborts") {
  for (Schedule schedule : {Schedule::forward, Schedule::reverse}) {
    const std::string report = abort_report([&] {
      unetcu::simt::set_schedule(schedule);
      simt_test::cluster_sync_after_block_exit(nullptr);
    });
    CAPTURE(report);
    // Rank 1 of the first cluster either finishes while the others wait, or finishes first
    // and the next block to arrive reports it.
    CHECK(report.find("block (1,0,0)") != std::string::npos);
    CHECK(report.find("cluster barrier at tests/simt/simt_test_kernels.cu:") != std::string::npos);
    CHECK(report.find("every block of a cluster must reach each cluster barrier") !=
          std::string::npos);
    CHECK(report.find("cluster_early_exit_kernel launched (clusters of 4 blocks) at") !=
          std::string::npos);
  }
}

TEST_CASE("simt: blocks of a cluster at different cluster barriers abort") {
  const std::string report =
      abort_report([] { simt_test::divergent_cluster_barriers(nullptr); });
  CAPTURE(report);
  CHECK(report.find("divergent cluster barriers: block (") != std::string::npos);
  CHECK(report.find("cluster_divergent_kernel") != std::string::npos);
}

TEST_CASE("simt: the cluster calls outside a cluster launch abort") {
  const char* what[] = {"reached a cluster barrier at ", "asked for its cluster rank at ",
                        "mapped shared memory to another block at "};
  for (int call = 0; call < 3; ++call) {
    CAPTURE(call);
    const std::string report =
        abort_report([call] { simt_test::cluster_call_in_chained_launch(call, nullptr); });
    CAPTURE(report);
    CHECK(report.find(std::string(what[call]) + "tests/simt/simt_test_kernels.cu:") !=
          std::string::npos);
    CHECK(report.find("not launched with UNETCU_LAUNCH_CLUSTER") != std::string::npos);
    CHECK(report.find("cluster_call_kernel") != std::string::npos);
  }
}

TEST_CASE("simt: a grid barrier in a cluster launch aborts (it is not cooperative)") {
  const std::string report =
      abort_report([] { simt_test::grid_sync_in_cluster_launch(nullptr); });
  CAPTURE(report);
  CHECK(report.find("reached a grid barrier at tests/simt/simt_test_kernels.cu:") !=
        std::string::npos);
  CHECK(report.find("not launched with UNETCU_LAUNCH_COOPERATIVE") != std::string::npos);
}

TEST_CASE("simt: mapping memory that is not dynamic shared memory, or a rank beyond the cluster, "
          "aborts") {
  for (int what : {0, 1}) {
    CAPTURE(what);
    const std::string report = abort_report([what] { simt_test::cluster_bad_map(what, nullptr); });
    CAPTURE(report);
    CHECK(report.find("to another block at tests/simt/simt_test_kernels.cu:") !=
          std::string::npos);
    CHECK(report.find("not in this block's dynamic shared memory (128 bytes") !=
          std::string::npos);
    CHECK(report.find("only dynamic shared memory (UNETCU_DYNAMIC_SHARED) can be mapped") !=
          std::string::npos);
    CHECK(report.find("in kernel cluster_bad_map_kernel launched (clusters of 2 blocks)") !=
          std::string::npos);
    CHECK(report.find(", block (") != std::string::npos);
  }
  const std::string report = abort_report([] { simt_test::cluster_bad_map(2, nullptr); });
  CAPTURE(report);
  CHECK(report.find("mapped shared memory to rank 2 at tests/simt/simt_test_kernels.cu:") !=
        std::string::npos);
  CHECK(report.find("has 2 block(s), ranks 0 to 1") != std::string::npos);
  CHECK(report.find("cluster_bad_map_kernel") != std::string::npos);
}

TEST_CASE("simt: mapping the shared memory of a block that has finished aborts") {
  const std::string report = abort_report([] {
    DeviceArray<int> out(1);
    simt_test::map_finished_block(out.get(), nullptr);
  });
  CAPTURE(report);
  CHECK(report.find("thread (0,0,0) mapped the shared memory of rank 0 at") != std::string::npos);
  CHECK(report.find("after that block had finished") != std::string::npos);
  CHECK(report.find("block (1,0,0)") != std::string::npos);
}

TEST_CASE("simt: a thread exiting before a __syncthreads aborts") {
  for (Schedule schedule : {Schedule::forward, Schedule::reverse}) {
    bool aborted = false;
    const std::string report = simt_test::run_in_child(
        [&] {
          unetcu::simt::set_schedule(schedule);
          simt_test::early_exit_before_barrier(nullptr);
        },
        &aborted);
    CAPTURE(report);
    CHECK(aborted);
    CHECK(report.find("thread (5,0,0) exited while") != std::string::npos);
    CHECK(report.find("early return before a barrier") != std::string::npos);
  }
}

TEST_CASE("simt: threads at different __syncthreads abort as a divergent barrier") {
  for (Schedule schedule : {Schedule::forward, Schedule::reverse}) {
    bool aborted = false;
    const std::string report = simt_test::run_in_child(
        [&] {
          unetcu::simt::set_schedule(schedule);
          simt_test::divergent_barrier(nullptr);
        },
        &aborted);
    CAPTURE(report);
    CHECK(aborted);
    CHECK(report.find("divergent __syncthreads") != std::string::npos);
    CHECK(report.find("divergent_barrier_kernel") != std::string::npos);
  }
}

TEST_CASE("simt: a lane passing a mask without itself aborts") {
  bool aborted = false;
  const std::string report =
      simt_test::run_in_child([] { simt_test::shuffle_outside_own_mask(nullptr); }, &aborted);
  CAPTURE(report);
  CHECK(aborted);
  CHECK(report.find("thread (5,0,0) (lane 5) called __shfl_sync") != std::string::npos);
  CHECK(report.find("does not include its own lane") != std::string::npos);
}

// Not the emulator's own rules but the row order of common.cuh's map skeletons, which no op's
// output shows (an element-by-element pass gives the same bits in any order): every element is
// visited once, map_rows takes a thread's rows from its first up, map_rows_last_first from its
// last down, in one wave of blocks (the emulator's kMaxCooperativeBlocks), so that its threads
// take several rows each here. Scalar and multi-tile columns.
TEST_CASE("simt: map_rows walks a thread's rows up, map_rows_last_first down in one wave") {
  for (const auto& [rows, cols] :
       {std::pair<int64_t, int>{20000, 3}, {10000, 16}, {777, 300}}) {
    for (bool last_first : {false, true}) {
      CAPTURE(rows);
      CAPTURE(cols);
      CAPTURE(last_first);
      const size_t n = size_t(rows) * size_t(cols);
      DeviceArray<int> thread_of(std::vector<int>(n, -1)), visit_of(std::vector<int>(n, -1));
      unetcu::simt::reset_counters();
      simt_test::map_rows_visits(thread_of.get(), visit_of.get(), rows, cols, last_first,
                                 nullptr);
      UNETCU_CUDA_CHECK(cudaDeviceSynchronize());
      const uint64_t blocks = unetcu::simt::counters().blocks;
      const std::vector<int> thread = thread_of.read(), visit = visit_of.read();
      // Each thread's visit numbers in the order of its rows (a thread keeps one column, so
      // element order is row order).
      std::map<int, std::vector<int>> visits_of_thread;
      size_t unvisited = 0;
      for (size_t e = 0; e < n; ++e) {
        if (thread[e] < 0)
          ++unvisited;
        else
          visits_of_thread[thread[e]].push_back(visit[e]);
      }
      CHECK(unvisited == 0);
      size_t out_of_order = 0, several = 0;
      for (const auto& [t, visits] : visits_of_thread) {
        const size_t k = visits.size();
        for (size_t i = 0; i < k; ++i)
          out_of_order += visits[i] != int(last_first ? k - 1 - i : i);
        several += k > 1;
      }
      CHECK(out_of_order == 0);
      if (last_first) {
        CHECK(blocks <= uint64_t(unetcu::simt::kMaxCooperativeBlocks));
        CHECK(several > 0);
      }
    }
  }
}

TEST_CASE("simt: launch configuration errors name the kernel, the limit and the call site") {
  auto message_of = [](const std::function<void()>& launch, cudaError_t* code) {
    try {
      launch();
    } catch (const unetcu::CudaError& e) {
      *code = e.code();
      return std::string(e.what());
    }
    *code = cudaSuccess;
    return std::string();
  };
  cudaError_t code = cudaSuccess;
  std::string message = message_of([] { simt_test::launch_config(1, 2048, 0, nullptr); }, &code);
  CAPTURE(message);
  CHECK(code == cudaErrorInvalidConfiguration);
  CHECK(message.find("empty_kernel<<<(1,1,1), (2048,1,1), 0 B>>>") != std::string::npos);
  CHECK(message.find("tests/simt/simt_test_kernels.cu:") != std::string::npos);
  CHECK(message.find("at most 1024 threads") != std::string::npos);

  message_of([] { simt_test::launch_config(1, dim3(32, 32, 2), 0, nullptr); }, &code);
  CHECK(code == cudaErrorInvalidConfiguration);
  message_of([] { simt_test::launch_config(1, dim3(1, 1, 65), 0, nullptr); }, &code);
  CHECK(code == cudaErrorInvalidConfiguration);
  message_of([] { simt_test::launch_config(dim3(1, 70000), 32, 0, nullptr); }, &code);
  CHECK(code == cudaErrorInvalidConfiguration);
  message_of([] { simt_test::launch_config(0, 32, 0, nullptr); }, &code);
  CHECK(code == cudaErrorInvalidConfiguration);
  message = message_of([] { simt_test::launch_config(1, 32, 300 * 1024, nullptr); }, &code);
  CHECK(code == cudaErrorInvalidValue);
  CHECK(message.find("227 KB") != std::string::npos);

  // Above 48 KB a kernel needs the opt-in attribute, as on a GPU.
  message = message_of([] { simt_test::use_dynamic_shared(64 * 1024, nullptr); }, &code);
  CHECK(code == cudaErrorInvalidValue);
  CHECK(message.find("cudaFuncSetAttribute") != std::string::npos);
  simt_test::allow_dynamic_shared(64 * 1024);
  CHECK_NOTHROW(simt_test::use_dynamic_shared(64 * 1024, nullptr));

  // The error was consumed by the check: the next launch is clean.
  CHECK(cudaPeekAtLastError() == cudaSuccess);
  CHECK_NOTHROW(simt_test::launch_config(2, 32, 0, nullptr));
}

#if !defined(__SANITIZE_ADDRESS__)
// Without AddressSanitizer, the tail after each cudaMalloc'd block: checked at cudaFree, and at
// the end of the process for the blocks still allocated.
TEST_CASE("simt: a kernel writing past its cudaMalloc block is reported") {
  for (const bool freed : {true, false}) {
    CAPTURE(freed);
    bool aborted = false;
    const std::string report = simt_test::run_in_child(
        [freed] {
          const int n = 100;
          float* data = nullptr;
          UNETCU_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data), n * sizeof(float)));
          simt_test::out_of_bounds_write(data, n, nullptr);
          if (freed) cudaFree(data);
          std::exit(0);  // runs the end-of-process check, which _exit would skip
        },
        &aborted);
    CAPTURE(report);
    CHECK(aborted);
    CHECK(report.find("the 256 bytes past the end of a 400-byte cudaMalloc allocation at ") !=
          std::string::npos);
    CHECK(report.find(std::string("were written (byte 0 of them first), found ") +
                      (freed ? "at its cudaFree" : "at the end of the process")) !=
          std::string::npos);
  }
  // A kernel that stays inside its block: nothing to report.
  bool aborted = true;
  const std::string report = simt_test::run_in_child(
      [] {
        DeviceArray<float> data(101);
        simt_test::out_of_bounds_write(data.get(), 100, nullptr);
      },
      &aborted);
  CAPTURE(report);
  CHECK_FALSE(aborted);
}
#endif

#if defined(__SANITIZE_ADDRESS__)
TEST_CASE("simt: AddressSanitizer catches a kernel writing past its buffer") {
  bool aborted = false;
  const std::string report = simt_test::run_in_child(
      [] {
        const int n = 100;
        DeviceArray<float> data(n);
        simt_test::out_of_bounds_write(data.get(), n, nullptr);
      },
      &aborted);
  CAPTURE(report);
  CHECK(report.find("heap-buffer-overflow") != std::string::npos);
  CHECK(report.find("out_of_bounds_kernel") != std::string::npos);
}

TEST_CASE("simt: AddressSanitizer catches a write past a static shared array") {
  bool aborted = false;
  CHECK_NOTHROW(simt_test::static_shared_index(31, true, nullptr));
  const std::string report =
      simt_test::run_in_child([] { simt_test::static_shared_index(32, true, nullptr); },
                              &aborted);
  CAPTURE(report);
  CHECK(report.find("use-after-poison") != std::string::npos);
  CHECK(report.find("static_shared_index_kernel") != std::string::npos);
}

TEST_CASE("simt: AddressSanitizer catches a read of a finished cluster block's shared memory") {
  bool aborted = false;
  const std::string report = simt_test::run_in_child(
      [] {
        DeviceArray<int> out(1);
        simt_test::read_finished_block(out.get(), nullptr);
      },
      &aborted);
  CAPTURE(report);
  CHECK(report.find("use-after-poison") != std::string::npos);
  CHECK(report.find("read_finished_block_kernel") != std::string::npos);
}
#endif

// Not run by default: `unetcu_simt_tests -tc='*speed*' --no-skip` prints the cost per thread,
// as CPU time (all workers together), which a busy machine does not inflate, and wall time.
TEST_CASE("simt: speed" * doctest::skip()) {
  struct Cost {
    double cpu_ns, wall_ns;
  };
  auto measure = [](const std::function<void()>& run) {
    run();  // warm: stacks mapped, pages touched
    const int reps = 3;
    const std::clock_t cpu_start = std::clock();
    const auto wall_start = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) run();
    const double wall = std::chrono::duration<double, std::nano>(
                            std::chrono::steady_clock::now() - wall_start).count();
    const double cpu = double(std::clock() - cpu_start) * 1e9 / CLOCKS_PER_SEC;
    return Cost{cpu / reps, wall / reps};
  };
  const int blocks = 4096, threads = 256, n = blocks * threads;
  DeviceArray<int> out(n);
  const std::vector<float> in = random_floats(n, 4);
  DeviceArray<float> d_in(in);
  DeviceArray<float> sums(blocks);
  for (int workers : {1, 2}) {
    unetcu::simt::set_workers(workers);
    const Cost plain = measure([&] { simt_test::touch(out.get(), blocks, threads, nullptr); });
    const Cost barriers = measure(
        [&] { simt_test::touch_with_barriers(out.get(), blocks, threads, 4, nullptr); });
    const Cost tree =
        measure([&] { simt_test::block_sum_tree(sums.get(), d_in.get(), n, threads, nullptr); });
    const Cost shuffle = measure(
        [&] { simt_test::block_sum_shuffle(sums.get(), d_in.get(), n, threads, nullptr); });
    MESSAGE(workers << " worker(s), " << blocks << " x " << threads << " threads, CPU time: "
                    << plain.cpu_ns / n << " ns/thread launched, "
                    << (barriers.cpu_ns - plain.cpu_ns) / n / 4
                    << " ns/thread per __syncthreads; 1M-element sums: tree "
                    << tree.cpu_ns / 1e6 << " ms, shuffle " << shuffle.cpu_ns / 1e6
                    << " ms. Wall time: " << plain.wall_ns / n << " ns/thread, tree "
                    << tree.wall_ns / 1e6 << " ms, shuffle " << shuffle.wall_ns / 1e6 << " ms");
  }
  unetcu::simt::set_workers(1);
}
