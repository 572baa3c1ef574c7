// bench/cpu_train_step.cpp: one training step of the ResNet34-UNet (batch 16, 128x128 by
// default: normalise, forward, batch Dice loss, backward, Adam) on the CPU, ours beside the same
// network in LibTorch (bench/libtorch_unet.h) on the same threads, in one run; prints the
// ratio ours / LibTorch last. Before timing, both run one step from the same weights and batch
// and their losses must agree, so a fast wrong engine cannot post a number.
//
//   bench_cpu_train_step [--batch N] [--size S] [--threads T] [benchmark flags...]
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <memory>

#include "bench/bench_util.h"
#include "engine/cpu_backend.h"
#include "kernels/normalize.h"
#include "model/checkpoint.h"
#include "model/session.h"
#ifdef UNETCU_WITH_TORCH
#include "bench/libtorch_unet.h"
#endif

using namespace unetcu;

namespace {

int g_batch = 16, g_size = 128;

struct Batch {
  std::vector<uint8_t> images, masks;
  std::vector<float> normalized, mask_f;
};

Batch make_batch() {
  Batch b;
  const size_t px = size_t(g_batch) * g_size * g_size;
  b.images.resize(px * 3);
  b.masks.resize(px);
  uint64_t s = 12345;
  for (auto& v : b.images) { s = s * 6364136223846793005ull + 1442695040888963407ull; v = uint8_t(s >> 56); }
  for (int n = 0; n < g_batch; ++n)
    for (int y = 0; y < g_size; ++y)
      for (int x = 0; x < g_size; ++x) {
        int dx = x - g_size / 2 - n, dy = y - g_size / 2;
        b.masks[(size_t(n) * g_size + y) * g_size + x] = dx * dx + dy * dy < g_size * g_size / 10;
      }
  b.normalized.resize(px * 3);
  cpu::normalize_input(b.normalized.data(), b.images.data(), int64_t(px), NormalizeParams{});
  b.mask_f.assign(b.masks.begin(), b.masks.end());
  return b;
}

void BM_unetcu_step(benchmark::State& state) {
  Batch b = make_batch();
  auto be = make_cpu_backend();
  ModelSession s(*be, g_size, g_size);
  s.set_state(initial_state(unet_spec(), 0));
  s.train_step(b.images.data(), b.masks.data(), g_batch);  // warm-up (plans, first touches)
  for (auto _ : state) s.train_step(b.images.data(), b.masks.data(), g_batch);
  state.counters["images/s"] = benchmark::Counter(double(g_batch), benchmark::Counter::kIsIterationInvariantRate);
}

#ifdef UNETCU_WITH_TORCH
torch::Tensor to_nchw(const std::vector<float>& v, int c) {
  return torch::from_blob(const_cast<float*>(v.data()), {g_batch, g_size, g_size, c}, torch::kFloat32)
      .permute({0, 3, 1, 2}).contiguous();
}

void torch_step(bench::LibTorchUnet& u, torch::optim::Adam& opt, const torch::Tensor& x,
                const torch::Tensor& t, float* loss_out) {
  opt.zero_grad();
  auto loss = bench::libtorch_dice_loss(u.forward(x), t);
  loss.backward();
  opt.step();
  if (loss_out) *loss_out = loss.item<float>();
}

void BM_libtorch_step(benchmark::State& state) {
  Batch b = make_batch();
  const ModelSpec& spec = unet_spec();
  auto u = bench::LibTorchUnet::from_state(spec, initial_state(spec, 0));
  torch::optim::Adam opt(u.parameters(spec), torch::optim::AdamOptions(1e-4));
  auto x = to_nchw(b.normalized, 3), t = to_nchw(b.mask_f, 1);
  torch_step(u, opt, x, t, nullptr);
  for (auto _ : state) torch_step(u, opt, x, t, nullptr);
  state.counters["images/s"] = benchmark::Counter(double(g_batch), benchmark::Counter::kIsIterationInvariantRate);
}

// Same weights, same batch: the first step's losses must agree before anything is timed.
bool validate() {
  Batch b = make_batch();
  const ModelSpec& spec = unet_spec();
  HostModelState init = initial_state(spec, 0);
  auto be = make_cpu_backend();
  ModelSession s(*be, g_size, g_size);
  s.set_state(init);
  float ours = s.train_step(b.images.data(), b.masks.data(), g_batch).loss, ref = 0;
  auto u = bench::LibTorchUnet::from_state(spec, init);
  torch::optim::Adam opt(u.parameters(spec), torch::optim::AdamOptions(1e-4));
  torch_step(u, opt, to_nchw(b.normalized, 3), to_nchw(b.mask_f, 1), &ref);
  const bool ok = std::fabs(ours - ref) <= 1e-4f * std::fabs(ref);
  std::printf("check: first-step Dice loss ours %.7f, LibTorch %.7f: %s\n", ours, ref, ok ? "agree" : "DISAGREE");
  return ok;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  const bench::Options opt = bench::parse_options(argc, argv);
  g_batch = opt.batch;
  g_size = opt.size;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  std::printf("training step: batch %d, %dx%d, fp32, %d threads\n", g_batch, g_size, g_size, omp_get_max_threads());
  benchmark::RegisterBenchmark("train_step/ours", BM_unetcu_step)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
#ifdef UNETCU_WITH_TORCH
  if (!validate()) return 1;
  benchmark::RegisterBenchmark("train_step/libtorch", BM_libtorch_step)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
#endif
  bench::RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  auto& ms = reporter.ms;
  if (ms.count("train_step/ours") && ms.count("train_step/libtorch"))
    std::printf("\nratio ours/LibTorch (time per step): %.3f  (ours %.1f ms, LibTorch %.1f ms)\n",
                ms["train_step/ours"] / ms["train_step/libtorch"], ms["train_step/ours"],
                ms["train_step/libtorch"]);
  return 0;
}
