// tests/emu/test_loss_adam.cpp: the Dice loss, confusion counts, epoch totals and Adam kernels
// (kernels/cuda) against kernels/cpu, including a captured CUDA graph replayed for several
// Adam steps (the reason the step counter lives on the device).
#include <algorithm>
#include <cmath>
#include <memory>

#include "kernel_test.h"
#include "kernels/adam.h"
#include "kernels/loss.h"

namespace unetcu::test {
namespace {

// Logits spread over the useful range plus saturated ones (|x| = 30 and 100: sigmoid rounds to
// 0 or 1, the gradient must stay finite and tiny) and values at and near 0.
std::vector<float> dice_logits(size_t count, uint64_t seed) {
  auto x = random_vector<float>(count, seed, -6.0, 6.0);
  const float special[] = {30.0f, -30.0f, 100.0f, -100.0f, 0.0f, -0.0f, 1e-3f, -1e-8f, 1e-20f};
  for (size_t i = 0; i < count && i < sizeof(special) / sizeof(special[0]); ++i) x[i * 7 % count] = special[i];
  return x;
}

std::vector<double> sums_vector(const DiceSums& s) { return {s.sum_p, s.sum_t, s.intersection}; }

// Counts are exact: every image's four, as the reference's.
void check_counts(const std::vector<ConfusionCounts>& got,
                  const std::vector<ConfusionCounts>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i].tp == want[i].tp);
    CHECK(got[i].fp == want[i].fp);
    CHECK(got[i].fn == want[i].fn);
    CHECK(got[i].tn == want[i].tn);
  }
}

struct DiceCase {
  int64_t count;
  double p_one;  // fraction of positive targets; 0: the empty-batch case
  size_t shift;
};
constexpr DiceCase kDiceCases[] = {{1, 0.5, 0},    {5, 0.5, 0},      {1000, 0.3, 0},
                                   {4099, 0.5, 0}, {65539, 0.2, 0}, {4099, 0.0, 0},
                                   {1001, 0.5, 1}};

TEST_CASE("cuda dice loss forward and backward match the reference") {
  // The sums are doubles of float sigmoids: the kernel's sigmoid (from exp(-|x|)) and the
  // reference's exp(logsigmoid(x)) differ by a few float ulp per pixel, so the sums agree to
  // ~1e-7 relative and the loss to ~1e-7 absolute. Each gradient element is (coefficient from
  // the sums) * p * sigmoid(-x) in double: a few float ulp apart, 1e-6 relative.
  for (const DiceCase& dc : kDiceCases) {
    CAPTURE(dc.count);
    CAPTURE(dc.p_one);
    CAPTURE(dc.shift);
    const auto x = dice_logits(size_t(dc.count), 900 + uint64_t(dc.count));
    const auto t = random_binary(size_t(dc.count), 901, dc.p_one);
    float want_loss = 0;
    DiceSums want_sums;
    cpu::dice_loss_forward(&want_loss, &want_sums, x.data(), t.data(), dc.count);

    const Outputs fwd = run_deterministic([&] {
      DeviceBuffer<float> dx(x, dc.shift), dloss(1);
      DeviceBuffer<uint8_t> dt(t, dc.shift);
      DeviceBuffer<DiceSums> dsums(1);
      DeviceBuffer<unsigned char> ws(cuda::dice_loss_workspace_bytes(dc.count));
      dloss.poison();
      dsums.poison();
      ws.poison();
      cuda::dice_loss_forward(dloss.get(), dsums.get(), dx.get(), dt.get(), dc.count, ws.get(),
                              nullptr);
      sync_device();
      Outputs o;
      o.add("loss", dloss);
      o.add("sums", dsums);
      o.add("workspace", ws);
      return o;
    });
    const DiceSums got_sums = fwd.get<DiceSums>("sums").at(0);
    check_close(sums_vector(got_sums), sums_vector(want_sums), 1e-9, 1e-6, "dice sums");
    CHECK(got_sums.sum_t == want_sums.sum_t);  // a count of ones: exact
    check_close(fwd.get<float>("loss"), std::vector<float>{want_loss}, 1e-6, 0.0, "dice loss");
    if (dc.p_one == 0.0) CHECK(fwd.get<float>("loss").at(0) == 0.0f);

    for (GradMode mode : kGradModes) {
      for (float upstream : {1.0f, 0.5f}) {
        CAPTURE(mode_name(mode));
        CAPTURE(upstream);
        const auto g0 = random_vector<float>(size_t(dc.count), 902, -1e-4, 1e-4);
        std::vector<float> want = g0;
        cpu::dice_loss_backward(want.data(), x.data(), t.data(), want_sums, dc.count, upstream,
                                mode);
        const Outputs bwd = run_deterministic([&] {
          DeviceBuffer<float> dx(x, dc.shift), dg(g0, dc.shift);
          DeviceBuffer<uint8_t> dt(t, dc.shift);
          DeviceBuffer<DiceSums> dsums(std::vector<DiceSums>{want_sums});
          if (mode == GradMode::overwrite) dg.poison();
          cuda::dice_loss_backward(dg.get(), dx.get(), dt.get(), dsums.get(), dc.count, upstream,
                                   mode, nullptr);
          sync_device();
          Outputs o;
          o.add("dlogits", dg);
          return o;
        });
        // Accumulating adds the gradient to values of similar size; where they cancel, the
        // error is relative to the operands, not to the small result.
        double scale = 0;
        for (size_t i = 0; i < want.size(); ++i)
          scale = std::max({scale, double(std::fabs(want[i])), double(std::fabs(g0[i]))});
        const double atol = mode == GradMode::accumulate ? 1e-6 * scale : 1e-12;
        check_close(bwd.get<float>("dlogits"), want, atol, 1e-6, "dice dlogits");
        if (dc.p_one == 0.0 && mode == GradMode::overwrite) {
          for (float v : bwd.get<float>("dlogits")) REQUIRE(v == 0.0f);
        }
      }
    }
  }
}

TEST_CASE("cuda dice loss backward reads the sums the forward left on the device") {
  const int64_t count = 4099;
  const auto x = dice_logits(size_t(count), 910);
  const auto t = random_binary(size_t(count), 911, 0.4);
  float ref_loss = 0;
  DiceSums ref_sums;
  cpu::dice_loss_forward(&ref_loss, &ref_sums, x.data(), t.data(), count);
  std::vector<float> want(static_cast<size_t>(count));
  cpu::dice_loss_backward(want.data(), x.data(), t.data(), ref_sums, count, 1.0f,
                          GradMode::overwrite);
  const Outputs out = run_deterministic([&] {
    DeviceBuffer<float> dx(x), dloss(1), dg(static_cast<size_t>(count));
    DeviceBuffer<uint8_t> dt(t);
    DeviceBuffer<DiceSums> dsums(1);
    DeviceBuffer<unsigned char> ws(cuda::dice_loss_workspace_bytes(count));
    dg.poison();
    cuda::dice_loss_forward(dloss.get(), dsums.get(), dx.get(), dt.get(), count, ws.get(), nullptr);
    cuda::dice_loss_backward(dg.get(), dx.get(), dt.get(), dsums.get(), count, 1.0f,
                             GradMode::overwrite, nullptr);
    sync_device();
    Outputs o;
    o.add("dlogits", dg);
    return o;
  });
  // The device sums differ from the reference's by ~1e-7 relative, which scales the gradient.
  check_close(out.get<float>("dlogits"), want, 1e-12, 2e-6, "dice dlogits");
}

TEST_CASE("cuda confusion counts and epoch totals match the reference") {
  struct CountCase {
    int n_images;
    int64_t pixels;
    size_t shift;
  };
  for (const CountCase& cc : {CountCase{1, 1, 0}, CountCase{3, 7, 0}, CountCase{5, 1000, 0},
                              CountCase{2, 4101, 0}, CountCase{3, 17, 1}}) {
    CAPTURE(cc.n_images);
    CAPTURE(cc.pixels);
    CAPTURE(cc.shift);
    const size_t count = size_t(cc.n_images) * size_t(cc.pixels);
    auto x = dice_logits(count, 920);
    auto t = random_binary(count, 921, 0.4);
    // Image 0 has no positive target and no positive prediction: IoU counts as 1.
    for (int64_t i = 0; i < cc.pixels; ++i) {
      x[size_t(i)] = -1.0f;
      t[size_t(i)] = 0;
    }
    std::vector<ConfusionCounts> want(size_t(cc.n_images));
    cpu::confusion_counts(want.data(), x.data(), t.data(), cc.n_images, cc.pixels);
    const float batch_loss = 0.25f;
    // Two batches (the same counts twice), the second without a loss.
    cuda::EpochTotals want_totals;
    for (int batch = 0; batch < 2; ++batch) {
      if (batch == 0) {
        want_totals.loss_sum += double(batch_loss);
        want_totals.batches += 1;
      }
      for (const ConfusionCounts& c : want) {
        want_totals.iou_sum += image_iou(c);
        want_totals.dice_sum += image_dice(c);
        want_totals.tp += c.tp;
        want_totals.fp += c.fp;
        want_totals.fn += c.fn;
        want_totals.tn += c.tn;
      }
      want_totals.images += cc.n_images;
    }

    const Outputs out = run_deterministic([&] {
      DeviceBuffer<float> dx(x, cc.shift), dloss(std::vector<float>{batch_loss});
      DeviceBuffer<uint8_t> dt(t, cc.shift);
      DeviceBuffer<ConfusionCounts> dcounts(size_t(cc.n_images));
      DeviceBuffer<cuda::EpochTotals> dtotals(std::vector<cuda::EpochTotals>{cuda::EpochTotals{}});
      DeviceBuffer<unsigned char> ws(cuda::confusion_counts_workspace_bytes(cc.n_images, cc.pixels));
      dcounts.poison();
      ws.poison();
      cuda::confusion_counts(dcounts.get(), dx.get(), dt.get(), cc.n_images, cc.pixels, ws.get(),
                             nullptr);
      cuda::epoch_totals_accumulate(dtotals.get(), dloss.get(), dcounts.get(), cc.n_images, nullptr);
      cuda::epoch_totals_accumulate(dtotals.get(), nullptr, dcounts.get(), cc.n_images, nullptr);
      sync_device();
      Outputs o;
      o.add("counts", dcounts);
      o.add("totals", dtotals);
      return o;
    });
    check_counts(out.get<ConfusionCounts>("counts"), want);
    // Same additions in the same order as the host loop above: exact.
    const cuda::EpochTotals tot = out.get<cuda::EpochTotals>("totals").at(0);
    CHECK(tot.loss_sum == want_totals.loss_sum);
    CHECK(tot.batches == want_totals.batches);
    CHECK(tot.iou_sum == want_totals.iou_sum);
    CHECK(tot.dice_sum == want_totals.dice_sum);
    CHECK(tot.images == want_totals.images);
    CHECK(tot.tp == want_totals.tp);
    CHECK(tot.fp == want_totals.fp);
    CHECK(tot.fn == want_totals.fn);
    CHECK(tot.tn == want_totals.tn);
  }
}

// The fused Dice forward + counts: the counts exactly, the sums as the reference's (to its
// sigmoid's rounding) and as the separate kernels' (the same doubles added in another order:
// 1e-12), at images from 4 pixels to 256 x 256, with an image without positives.
TEST_CASE("cuda fused dice forward and counts match the reference and the separate kernels") {
  struct FusedCase {
    int n_images;
    int64_t pixels;
  };
  // Parts of 512 float4s: 2,048 pixels are one whole part, 2,052 a part and one float4, 4,100
  // two parts and one float4; 16 x 16,384 is the training batch (8 parts an image), 65,536
  // pixels an image of 256 x 256 (32 parts, a part a lane of the totals' warps), 143,364 71
  // parts (two or three a lane); 300 images, more than the totals' block has warps.
  for (const FusedCase& fc :
       {FusedCase{1, 4}, FusedCase{3, 16}, FusedCase{300, 8}, FusedCase{2, 1000},
        FusedCase{2, 2048}, FusedCase{3, 2052}, FusedCase{5, 4100}, FusedCase{16, 16384},
        FusedCase{2, 65536}, FusedCase{1, 143364}}) {
    CAPTURE(fc.n_images);
    CAPTURE(fc.pixels);
    const int64_t count = fc.n_images * fc.pixels;
    auto x = dice_logits(size_t(count), 940 + uint64_t(count));
    auto t = random_binary(size_t(count), 941, 0.4);
    for (int64_t i = 0; i < fc.pixels; ++i) t[size_t(i)] = 0;  // image 0: no positive target
    float want_loss = 0;
    DiceSums want_sums;
    cpu::dice_loss_forward(&want_loss, &want_sums, x.data(), t.data(), count);
    std::vector<ConfusionCounts> want(size_t(fc.n_images));
    cpu::confusion_counts(want.data(), x.data(), t.data(), fc.n_images, fc.pixels);

    int launches = -1;
    const Outputs out = run_deterministic([&] {
      DeviceBuffer<float> dx(x), dloss(1), dloss_sep(1);
      DeviceBuffer<uint8_t> dt(t);
      DeviceBuffer<DiceSums> dsums(1), dsums_sep(1);
      DeviceBuffer<ConfusionCounts> dcounts(size_t(fc.n_images));
      DeviceBuffer<unsigned char> ws(cuda::loss_and_counts_workspace_bytes(fc.n_images, fc.pixels));
      DeviceBuffer<unsigned char> ws_sep(cuda::dice_loss_workspace_bytes(count));
      REQUIRE(cuda::loss_and_counts_applies(dx.get(), dt.get(), fc.n_images, fc.pixels));
      dloss.poison();
      dsums.poison();
      dcounts.poison();
      ws.poison();
      launches = launches_of([&] {
        cuda::loss_and_counts(dloss.get(), dsums.get(), dcounts.get(), dx.get(), dt.get(),
                              fc.n_images, fc.pixels, ws.get(), nullptr);
      });
      cuda::dice_loss_forward(dloss_sep.get(), dsums_sep.get(), dx.get(), dt.get(), count,
                              ws_sep.get(), nullptr);
      sync_device();
      Outputs o;
      o.add("loss", dloss);
      o.add("sums", dsums);
      o.add("counts", dcounts);
      o.add("workspace", ws);
      o.add("separate sums", dsums_sep);
      return o;
    });
    if (launches >= 0) CHECK(launches == 2);
    check_counts(out.get<ConfusionCounts>("counts"), want);
    const DiceSums got_sums = out.get<DiceSums>("sums").at(0);
    check_close(sums_vector(got_sums), sums_vector(want_sums), 1e-9, 1e-6, "dice sums");
    CHECK(got_sums.sum_t == want_sums.sum_t);
    check_close(sums_vector(got_sums), sums_vector(out.get<DiceSums>("separate sums").at(0)),
                0.0, 1e-12, "dice sums against the separate kernels");
    check_close(out.get<float>("loss"), std::vector<float>{want_loss}, 1e-6, 0.0, "dice loss");
  }
}

TEST_CASE("the Dice forward alone and the counts alone on float4 runs are the sums in parts") {
  // Aligned whole float4 runs: the Dice forward alone is loss_and_counts over one "image" of
  // all the values, the same bits; the counts alone are the reference's, as loss_and_counts'
  // are. (Sums of float sigmoids between 0.003 and 1 are exact in double in any order; the
  // logits here reach -90, sigmoids down to 1e-39, so that reduce_rows, the other path, which
  // adds in another order, gives other bits.)
  const int n = 5;
  const int64_t pixels = 4100, count = n * pixels;
  const auto x = random_vector<float>(size_t(count), 980, -90.0, 30.0);
  const auto t = random_binary(size_t(count), 981, 0.4);
  const Outputs out = run_deterministic([&] {
    DeviceBuffer<float> dx(x), dloss(1), dloss_one(1), dloss_fused(1);
    DeviceBuffer<uint8_t> dt(t);
    DeviceBuffer<DiceSums> dsums(1), dsums_one(1), dsums_fused(1);
    DeviceBuffer<ConfusionCounts> dcounts{size_t(n)}, dcounts_fused{size_t(n)};
    const size_t ws_bytes = std::max({cuda::dice_loss_workspace_bytes(count),
                                      cuda::confusion_counts_workspace_bytes(n, pixels),
                                      cuda::loss_and_counts_workspace_bytes(1, count),
                                      cuda::loss_and_counts_workspace_bytes(n, pixels)});
    DeviceBuffer<unsigned char> ws(ws_bytes);
    for (auto* b : {&dloss, &dloss_one, &dloss_fused}) b->poison();
    for (auto* b : {&dsums, &dsums_one, &dsums_fused}) b->poison();
    for (auto* b : {&dcounts, &dcounts_fused}) b->poison();
    ws.poison();
    cuda::dice_loss_forward(dloss.get(), dsums.get(), dx.get(), dt.get(), count, ws.get(),
                            nullptr);
    cuda::loss_and_counts(dloss_one.get(), dsums_one.get(), nullptr, dx.get(), dt.get(), 1,
                          count, ws.get(), nullptr);
    cuda::confusion_counts(dcounts.get(), dx.get(), dt.get(), n, pixels, ws.get(), nullptr);
    cuda::loss_and_counts(dloss_fused.get(), dsums_fused.get(), dcounts_fused.get(), dx.get(),
                          dt.get(), n, pixels, ws.get(), nullptr);
    sync_device();
    Outputs o;
    o.add("dice alone", dsums);
    o.add("loss alone", dloss);
    o.add("dice over one image", dsums_one);
    o.add("loss over one image", dloss_one);
    o.add("counts", dcounts);
    o.add("fused counts", dcounts_fused);
    return o;
  });
  CHECK(out.get<unsigned char>("dice alone") == out.get<unsigned char>("dice over one image"));
  CHECK(out.get<unsigned char>("loss alone") == out.get<unsigned char>("loss over one image"));
  std::vector<ConfusionCounts> want(static_cast<size_t>(n));
  cpu::confusion_counts(want.data(), x.data(), t.data(), n, pixels);
  check_counts(out.get<ConfusionCounts>("counts"), want);
  check_counts(out.get<ConfusionCounts>("fused counts"), want);
}

TEST_CASE("the fused dice forward and counts take whole float4 runs of at most 65,535 images") {
  DeviceBuffer<float> dx(size_t(1 << 20) + 8);
  DeviceBuffer<uint8_t> dt(size_t(1 << 20) + 8);
  CHECK(cuda::loss_and_counts_applies(dx.get(), dt.get(), 16, 16384));
  CHECK(cuda::loss_and_counts_applies(dx.get(), dt.get(), 1, int64_t(1) << 20));  // 1024 x 1024
  CHECK(cuda::loss_and_counts_applies(dx.get(), dt.get(), 65535, 4));
  CHECK_FALSE(cuda::loss_and_counts_applies(dx.get(), dt.get(), 65536, 4));  // grid.y
  CHECK_FALSE(cuda::loss_and_counts_applies(dx.get(), dt.get(), 2, 18));  // not a multiple of 4
  CHECK_FALSE(cuda::loss_and_counts_applies(dx.get(), dt.get(), 0, 16));
  CHECK_FALSE(cuda::loss_and_counts_applies(dx.get() + 1, dt.get(), 1, 16));  // unaligned
  CHECK_FALSE(cuda::loss_and_counts_applies(dx.get(), dt.get() + 1, 1, 16));
}

// Adam: the kernel performs the reference's float operations in its order, with the same
// explicit fused multiply-adds and IEEE sqrt and division, from the same float scalars: the
// results must match bit for bit (nvcc has nothing left to contract).
struct AdamData {
  std::vector<float> param, m, v;
  std::vector<std::vector<float>> grads;
};

AdamData adam_data(size_t count, int steps) {
  AdamData d;
  d.param = random_vector<float>(count, 950);
  d.m = random_vector<float>(count, 951, -1e-3, 1e-3);
  d.v = random_vector<float>(count, 952, 0.0, 1e-5);
  for (int s = 0; s < steps; ++s)
    d.grads.push_back(random_vector<float>(count, 960 + uint64_t(s), -1e-2, 1e-2));
  return d;
}

void check_adam_scalars(const AdamStepScalars& got, const AdamStepScalars& want) {
  // Formed in double from pow(): the emulator uses the host's pow (identical); a GPU's pow is
  // within 2 double ulp, far below the float rounding, so a 1-ulp float tolerance is generous.
  const std::vector<float> g = {got.step_size, got.bc2_sqrt, got.beta1, got.one_minus_beta1,
                                got.beta2, got.one_minus_beta2, got.eps};
  const std::vector<float> w = {want.step_size, want.bc2_sqrt, want.beta1, want.one_minus_beta1,
                                want.beta2, want.one_minus_beta2, want.eps};
  check_close(g, w, 0.0, 1.2e-7, "adam step scalars");
}

TEST_CASE("cuda adam matches the reference over several steps") {
  const int steps = 3;
  for (int64_t count : {int64_t(1), int64_t(7), int64_t(1000), int64_t(4101)}) {
    for (bool lr_on_device : {false, true}) {
      CAPTURE(count);
      CAPTURE(lr_on_device);
      AdamConfig cfg;
      const double device_lr = 3e-4;
      AdamConfig ref_cfg = cfg;
      if (lr_on_device) ref_cfg.lr = device_lr;
      const AdamData d = adam_data(size_t(count), steps);
      std::vector<float> p = d.param, m = d.m, v = d.v;
      for (int s = 0; s < steps; ++s)
        cpu::adam_step(p.data(), m.data(), v.data(), d.grads[size_t(s)].data(), count, ref_cfg, s + 1);

      const Outputs out = run_deterministic([&] {
        DeviceBuffer<float> dp(d.param), dm(d.m), dv(d.v), dg(static_cast<size_t>(count));
        DeviceBuffer<int64_t> dstep(std::vector<int64_t>{0});
        DeviceBuffer<AdamStepScalars> dscalars(1);
        DeviceBuffer<double> dlr(std::vector<double>{device_lr});
        for (int s = 0; s < steps; ++s) {
          dg.upload(d.grads[size_t(s)]);
          cuda::adam_advance_step(dstep.get(), dscalars.get(), cfg, lr_on_device ? dlr.get() : nullptr,
                                  nullptr);
          cuda::adam_step(dp.get(), dm.get(), dv.get(), dg.get(), count, dscalars.get(), nullptr);
        }
        sync_device();
        Outputs o;
        o.add("param", dp);
        o.add("exp_avg", dm);
        o.add("exp_avg_sq", dv);
        o.add("step", dstep);
        o.add("scalars", dscalars);
        return o;
      });
      CHECK(out.get<int64_t>("step").at(0) == steps);
      check_adam_scalars(out.get<AdamStepScalars>("scalars").at(0),
                         AdamStepScalars::make(ref_cfg, steps));
      check_same_bits(out.get<float>("param"), p, "param");
      check_same_bits(out.get<float>("exp_avg"), m, "exp_avg");
      check_same_bits(out.get<float>("exp_avg_sq"), v, "exp_avg_sq");
    }
  }
}

TEST_CASE("cuda adam captured once as a CUDA graph and replayed") {
  const int steps = 3;
  const int64_t count = 1003;
  const AdamConfig cfg;
  const AdamData d = adam_data(size_t(count), 1);
  std::vector<float> p = d.param, m = d.m, v = d.v;
  for (int s = 0; s < steps; ++s)
    cpu::adam_step(p.data(), m.data(), v.data(), d.grads[0].data(), count, cfg, s + 1);

  const Outputs out = run_deterministic([&] {
    DeviceBuffer<float> dp(d.param), dm(d.m), dv(d.v), dg(d.grads[0]);
    DeviceBuffer<int64_t> dstep(std::vector<int64_t>{0});
    DeviceBuffer<AdamStepScalars> dscalars(1);
    cudaStream_t stream = nullptr;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    UNETCU_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    UNETCU_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    cuda::adam_advance_step(dstep.get(), dscalars.get(), cfg, nullptr, stream);
    cuda::adam_step(dp.get(), dm.get(), dv.get(), dg.get(), count, dscalars.get(), stream);
    UNETCU_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    UNETCU_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int s = 0; s < steps; ++s) UNETCU_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(stream));
    UNETCU_CUDA_CHECK(cudaGraphExecDestroy(exec));
    UNETCU_CUDA_CHECK(cudaGraphDestroy(graph));
    UNETCU_CUDA_CHECK(cudaStreamDestroy(stream));
    Outputs o;
    o.add("param", dp);
    o.add("exp_avg", dm);
    o.add("exp_avg_sq", dv);
    o.add("step", dstep);
    return o;
  });
  CHECK(out.get<int64_t>("step").at(0) == steps);
  check_same_bits(out.get<float>("param"), p, "param");
  check_same_bits(out.get<float>("exp_avg"), m, "exp_avg");
  check_same_bits(out.get<float>("exp_avg_sq"), v, "exp_avg_sq");
}

}  // namespace
}  // namespace unetcu::test
