// tests/torch/test_unet_vs_libtorch.cpp: the whole ResNet34-UNet training step against the
// same network written with LibTorch ops (conv2d, batch_norm, max_pool2d, interpolate, cat)
// from the same weights: logits, Dice loss, all 140 parameter gradients, BatchNorm running
// statistics, then three Adam steps (losses and parameters). This checks the graph's wiring
// (skips, concat order, fan-out accumulation, in-place ReLU) beyond the per-op tests.
#include <doctest/doctest.h>

#include <cmath>
#include <map>

#include "engine/cpu_backend.h"
#include "kernels/normalize.h"
#include "model/checkpoint.h"
#include "model/session.h"
#include "bench/libtorch_unet.h"
#include "test_util.h"
#include "torch/torch_util.h"

using namespace unetcu;

namespace {

// Relative L2 error of one tensor, ours (our layout) against torch's (converted).
double rel_err(const float* ours, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (double(ours[i]) - ref[i]) * (double(ours[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

std::vector<float> to_ours(const ParamEntry& e, const torch::Tensor& t) {
  auto v = test::torch_to_vector(t);
  if (e.kind != ParamKind::conv_weight) return v;
  std::vector<float> k(v.size());
  oihw_to_krsc(k.data(), v.data(), e.torch_shape);
  return k;
}

}  // namespace

TEST_CASE("whole UNet training step and 3 Adam steps match LibTorch (batch 2, 64x64)") {
  torch::manual_seed(0);
  at::set_num_threads(2);
  const int N = 2, H = 64, W = 64;
  const ModelSpec& spec = unet_spec();
  HostModelState init = initial_state(spec, 11);

  // A batch: random images, masks with a disc per image (so Dice has signal).
  std::vector<uint8_t> images(size_t(N) * H * W * 3), masks(size_t(N) * H * W);
  auto rnd = test::random_vector<double>(images.size(), 5, 0, 255.99);
  for (size_t i = 0; i < images.size(); ++i) images[i] = uint8_t(rnd[i]);
  for (int n = 0; n < N; ++n)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        masks[(size_t(n) * H + y) * W + x] = (x - 30 - 4 * n) * (x - 30 - 4 * n) + (y - 28) * (y - 28) < 300;
  std::vector<float> xin(images.size());
  cpu::normalize_input(xin.data(), images.data(), int64_t(N) * H * W, NormalizeParams{});

  // LibTorch model from the same initial weights.
  auto tu = bench::LibTorchUnet::from_state(spec, init);
  std::vector<torch::Tensor> plist = tu.parameters(spec);
  torch::optim::Adam opt(plist, torch::optim::AdamOptions(1e-4));
  auto x = test::nhwc_to_torch(xin, N, H, W, 3);
  std::vector<float> mask_f(masks.begin(), masks.end());
  auto target = test::nhwc_to_torch(mask_f, N, H, W, 1);

  auto backend = make_cpu_backend();
  ModelSession session(*backend, H, W);
  session.set_state(init);

  // Why the tolerances below are wider than fp32 rounding: ReLU and maxpool are discontinuous.
  // A pre-activation within rounding of 0 (likely among the 2x4x4 maps of layer3 at this size)
  // can be masked in one implementation and not in the other, which moves every gradient
  // upstream of it by ~0.3% (observed: tensors downstream of such a point agree to < 1e-4).
  // Adam then turns tiny gradients into +-lr steps, so one sign flip in a 64-value BN tensor
  // moves that tensor's update by ~25%. Wiring bugs (concat order, a missing skip, a lost
  // accumulation) give errors of order 1, far above these bounds.
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    auto logits = tu.forward(x);
    auto loss = bench::libtorch_dice_loss(logits, target);
    loss.backward();

    StepResult ours = session.train_step(images.data(), masks.data(), N);
    CAPTURE(step);
    MESSAGE("step " << step << " loss ours " << ours.loss << " libtorch " << loss.item<float>());
    // First step: the same weights, so only rounding (a ratio of sums over 8192 sigmoids
    // after ~40 fp32 layers). Later steps follow slightly different updates.
    CHECK(ours.loss == doctest::Approx(loss.item<float>()).epsilon(step == 0 ? 1e-5 : 1e-3));
    if (step == 0) {
      std::vector<float> g = session.gradients(), ref_all(g.size());
      double worst = 0;
      std::string worst_name;
      for (const auto& e : spec.params) {
        auto ref = to_ours(e, tu.p[e.name].grad());
        std::copy(ref.begin(), ref.end(), ref_all.begin() + e.offset);
        double err = rel_err(g.data() + e.offset, ref);
        if (err > worst) { worst = err; worst_name = e.name; }
      }
      const double global = rel_err(g.data(), ref_all);
      MESSAGE("gradients: relative L2 error " << global << " over all parameters, worst tensor "
              << worst << " (" << worst_name << ")");
      CHECK(global < 5e-3);
      CHECK_MESSAGE(worst < 2e-2, worst_name);
      // Running statistics after one training-mode forward (no discontinuity upstream of a
      // forward statistic except through ReLU values, which are continuous).
      HostModelState st = session.state();
      double worst_rs = 0;
      for (const auto& bn : spec.bns) {
        worst_rs = std::max(worst_rs, rel_err(st.running.data() + bn.running_mean, test::torch_to_vector(tu.buf[bn.prefix + ".running_mean"])));
        worst_rs = std::max(worst_rs, rel_err(st.running.data() + bn.running_var, test::torch_to_vector(tu.buf[bn.prefix + ".running_var"])));
      }
      MESSAGE("running statistics: worst relative L2 error " << worst_rs);
      CHECK(worst_rs < 1e-4);
    }
    opt.step();
    if (step == 0) {
      // The first update from the same weights: Adam's first step is lr * g / (|g| + eps),
      // so only gradients whose sign rounding can flip (|g| below the noise above) differ.
      HostModelState st = session.state();
      std::vector<float> dref(st.params.size()), dours(st.params.size());
      int64_t far = 0;
      for (const auto& e : spec.params) {
        auto ref = to_ours(e, tu.p[e.name].detach());
        for (int64_t i = 0; i < e.count; ++i) {
          const size_t k = size_t(e.offset + i);
          dref[k] = ref[size_t(i)] - init.params[k];
          dours[k] = st.params[k] - init.params[k];
          far += std::fabs(dref[k] - dours[k]) > 0.5e-4;  // half of one step (lr 1e-4)
        }
      }
      const double global = rel_err(dours.data(), dref);
      MESSAGE("first Adam update: relative L2 error " << global << "; " << far << " of "
              << dref.size() << " values differ by more than half a step");
      // Each sign flip moves a value by 2 lr, so the L2 error is dominated by the flips; the
      // bound is on their number (observed 3e-4 of the values at this size).
      CHECK(double(far) < 1e-3 * double(dref.size()));
    }
  }
  // Steps 2 and 3 start from weights that differ by the flips above; at batch 2 the 2x2
  // layer4 maps make later gradients sensitive to them, so beyond the first update the
  // comparison is the loss (checked each step above, and once more after the third update).
  auto loss4 = bench::libtorch_dice_loss(tu.forward(x), target).item<float>();
  StepResult ours4 = session.train_step(images.data(), masks.data(), N);
  MESSAGE("loss after 3 updates: ours " << ours4.loss << " libtorch " << loss4);
  CHECK(ours4.loss == doctest::Approx(loss4).epsilon(1e-3));
}
