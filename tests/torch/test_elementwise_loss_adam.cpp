// tests/torch/test_elementwise_loss_adam.cpp: the CPU reference kernels for relu, add,
// add+relu, nearest 2x upsample, concat, input normalisation, sigmoid + batch Dice loss,
// confusion counts and Adam, compared with LibTorch 1.13 in float32.
//
// Our buffers are NHWC; LibTorch tensors are NCHW (converted with torch_util.h). Every output
// buffer is poisoned with NaN and fenced with sentinel values, so an element the kernel forgets
// to write, or a write past either end, fails the comparison. Every backward is run in both
// gradient modes: overwrite (into NaN) and accumulate (onto random earlier gradients).
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/adam.h"
#include "kernels/concat.h"
#include "kernels/elementwise.h"
#include "kernels/loss.h"
#include "kernels/normalize.h"
#include "kernels/upsample.h"
#include "test_util.h"
#include "torch/torch_util.h"

namespace unetcu::test {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A buffer of n floats with kGuard sentinels on each side.
class Guarded {
 public:
  Guarded(size_t n, float fill) : n_(n), buf_(n + 2 * kGuard, kSentinel) {
    std::fill(data(), data() + n, fill);
  }
  explicit Guarded(const std::vector<float>& init) : Guarded(init.size(), 0.0f) {
    std::copy(init.begin(), init.end(), data());
  }
  float* data() { return buf_.data() + kGuard; }
  std::vector<float> values() const {
    return std::vector<float>(buf_.begin() + kGuard, buf_.begin() + kGuard + n_);
  }
  bool guards_intact() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (buf_[i] != kSentinel || buf_[kGuard + n_ + i] != kSentinel) return false;
    return true;
  }

 private:
  static constexpr size_t kGuard = 64;
  static constexpr float kSentinel = -7.25e17f;
  size_t n_;
  std::vector<float> buf_;
};

torch::Tensor flat_tensor(const std::vector<float>& v) {
  return torch::from_blob(const_cast<float*>(v.data()), {int64_t(v.size())}, torch::kFloat32)
      .clone();
}

std::vector<float> add_vectors(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> y(a.size());
  for (size_t i = 0; i < a.size(); ++i) y[i] = a[i] + b[i];
  return y;
}

const GradMode kModes[] = {GradMode::overwrite, GradMode::accumulate};
const char* mode_name(GradMode m) { return m == GradMode::overwrite ? "overwrite" : "accumulate"; }

// Runs `backward(dx, mode)` in both modes and checks dx against `want` (overwrite) and
// `prior + want` (accumulate). The accumulated expectation is formed with one float add,
// the same rounding the kernel performs, so the tolerances stay those of `want`.
template <typename Backward>
void check_backward_modes(const std::vector<float>& want, uint64_t seed, double atol, double rtol,
                          const std::string& what, Backward backward) {
  for (GradMode mode : kModes) {
    const std::vector<float> prior = random_vector<float>(want.size(), seed);
    Guarded dx = mode == GradMode::overwrite ? Guarded(want.size(), kNaN) : Guarded(prior);
    backward(dx.data(), mode);
    CHECK_MESSAGE(dx.guards_intact(), what << " " << mode_name(mode) << ": wrote out of bounds");
    check_close(dx.values(), mode == GradMode::overwrite ? want : add_vectors(prior, want), atol,
                rtol, what + " " + mode_name(mode));
  }
}

// NCHW sizes: odd shapes, and the decoder's shapes at batch 2 for a 128x128 input.
struct Nchw { int n, c, h, w; };
const Nchw kUpsampleShapes[] = {{1, 1, 1, 1},   {3, 5, 7, 3},    {2, 3, 1, 9},    {2, 512, 4, 4},
                                {2, 256, 8, 8}, {2, 128, 16, 16}, {2, 64, 32, 32}, {2, 32, 64, 64}};

}  // namespace

// ReLU, add and add+relu are single IEEE operations or selections per element, so they must
// match LibTorch exactly (atol = rtol = 0).
TEST_CASE("relu forward and backward match LibTorch") {
  for (int64_t count : {1, 7, 1000, 2 * 64 * 64 * 64}) {
    CAPTURE(count);
    auto x = random_vector<float>(size_t(count), 11 + count);
    x[0] = 0.0f;  // an exact zero input must get a zero gradient (output 0, mask y > 0)
    auto dy = random_vector<float>(size_t(count), 12 + count);

    auto tx = flat_tensor(x).requires_grad_(true);
    auto ty = torch::relu(tx);
    ty.backward(flat_tensor(dy));

    Guarded y(size_t(count), kNaN);
    cpu::relu_forward(y.data(), x.data(), count);
    CHECK(y.guards_intact());
    check_close(y.values(), torch_to_vector(ty), 0, 0, "relu forward");

    auto inplace = x;
    cpu::relu_forward(inplace.data(), inplace.data(), count);
    check_close(inplace, torch_to_vector(ty), 0, 0, "relu forward in place");

    const auto yv = y.values();
    check_backward_modes(torch_to_vector(tx.grad()), 13 + count, 0, 0, "relu backward",
                         [&](float* dx, GradMode mode) {
                           cpu::relu_backward(dx, dy.data(), yv.data(), count, mode);
                         });
  }
}

TEST_CASE("add and add+relu match LibTorch") {
  for (int64_t count : {1, 9, 2 * 64 * 64 * 64 + 3}) {
    CAPTURE(count);
    auto a = random_vector<float>(size_t(count), 21 + count);
    auto b = random_vector<float>(size_t(count), 22 + count);
    auto ta = flat_tensor(a), tb = flat_tensor(b);

    Guarded y(size_t(count), kNaN);
    cpu::add_forward(y.data(), a.data(), b.data(), count);
    CHECK(y.guards_intact());
    check_close(y.values(), torch_to_vector(ta + tb), 0, 0, "add");

    Guarded yr(size_t(count), kNaN);
    cpu::add_relu_forward(yr.data(), a.data(), b.data(), count);
    CHECK(yr.guards_intact());
    check_close(yr.values(), torch_to_vector(torch::relu(ta + tb)), 0, 0, "add+relu");

    // In place into the residual operand, as the engine runs a BasicBlock's end.
    auto inplace = a;
    cpu::add_relu_forward(inplace.data(), inplace.data(), b.data(), count);
    check_close(inplace, torch_to_vector(torch::relu(ta + tb)), 0, 0, "add+relu in place");
  }
}

TEST_CASE("nearest 2x upsample matches LibTorch interpolate and its autograd") {
  namespace F = torch::nn::functional;
  for (const Nchw& s : kUpsampleShapes) {
    CAPTURE(s.n); CAPTURE(s.c); CAPTURE(s.h); CAPTURE(s.w);
    const UpsampleShape sh{s.n, s.h, s.w, s.c};
    const size_t in_count = size_t(s.n) * s.c * s.h * s.w, out_count = 4 * in_count;
    auto x = random_vector<float>(in_count, 31 + in_count);
    auto dy = random_vector<float>(out_count, 32 + in_count);

    auto tx = nhwc_to_torch(x, s.n, s.h, s.w, s.c, true);
    auto ty = F::interpolate(tx, F::InterpolateFuncOptions()
                                     .scale_factor(std::vector<double>{2.0, 2.0})
                                     .mode(torch::kNearest));
    ty.backward(nhwc_to_torch(dy, s.n, 2 * s.h, 2 * s.w, s.c));

    Guarded y(out_count, kNaN);
    cpu::upsample2x_forward(y.data(), x.data(), sh);
    CHECK(y.guards_intact());
    check_close(y.values(), torch_to_nhwc(ty), 0, 0, "upsample forward");

    // Each dx is a sum of 4 values in [-1, 1]. Added in another order the result may differ
    // by at most 3 roundings of a value below 4: 3 * 4 * 2^-24 < 1e-6. We add in LibTorch's
    // order and expect equality in practice; 1e-6 only tolerates a different order.
    check_backward_modes(torch_to_nhwc(tx.grad()), 33 + in_count, 1e-6, 0, "upsample backward",
                         [&](float* dx, GradMode mode) {
                           cpu::upsample2x_backward(dx, dy.data(), sh, mode);
                         });
  }
}

TEST_CASE("channel concat matches torch::cat and its autograd") {
  // The four decoder concats [upsampled, skip] at batch 2, and odd shapes.
  const Nchw shapes_a[] = {{2, 512, 8, 8}, {2, 256, 16, 16}, {2, 128, 32, 32}, {2, 64, 64, 64},
                           {3, 5, 7, 3}, {1, 1, 1, 1}};
  const int skip_channels[] = {256, 128, 64, 64, 2, 3};
  for (size_t k = 0; k < std::size(shapes_a); ++k) {
    const Nchw s = shapes_a[k];
    const int cb = skip_channels[k];
    CAPTURE(s.n); CAPTURE(s.c); CAPTURE(cb); CAPTURE(s.h);
    const ConcatShape sh{int64_t(s.n) * s.h * s.w, s.c, cb};
    const size_t rows = size_t(sh.rows);
    auto a = random_vector<float>(rows * s.c, 41 + k);
    auto b = random_vector<float>(rows * cb, 42 + k);
    auto dy = random_vector<float>(rows * (s.c + cb), 43 + k);

    auto ta = nhwc_to_torch(a, s.n, s.h, s.w, s.c, true);
    auto tb = nhwc_to_torch(b, s.n, s.h, s.w, cb, true);
    auto ty = torch::cat({ta, tb}, 1);
    ty.backward(nhwc_to_torch(dy, s.n, s.h, s.w, s.c + cb));

    Guarded y(rows * (s.c + cb), kNaN);
    cpu::concat_forward(y.data(), a.data(), b.data(), sh);
    CHECK(y.guards_intact());
    check_close(y.values(), torch_to_nhwc(ty), 0, 0, "concat forward");

    // A split is a copy: exact. Each side in each mode, the other side not wanted (null).
    check_backward_modes(torch_to_nhwc(ta.grad()), 44 + k, 0, 0, "concat backward da",
                         [&](float* da, GradMode mode) {
                           cpu::concat_backward(da, nullptr, dy.data(), sh, mode, mode);
                         });
    check_backward_modes(torch_to_nhwc(tb.grad()), 45 + k, 0, 0, "concat backward db",
                         [&](float* db, GradMode mode) {
                           cpu::concat_backward(nullptr, db, dy.data(), sh, mode, mode);
                         });
    // Both sides at once with different modes, as the engine splits into a fan-out point.
    auto prior_b = random_vector<float>(b.size(), 46 + k);
    Guarded da(a.size(), kNaN), db(prior_b);
    cpu::concat_backward(da.data(), db.data(), dy.data(), sh, GradMode::overwrite,
                         GradMode::accumulate);
    CHECK(da.guards_intact());
    CHECK(db.guards_intact());
    check_close(da.values(), torch_to_nhwc(ta.grad()), 0, 0, "concat da (overwrite, mixed)");
    check_close(db.values(), add_vectors(prior_b, torch_to_nhwc(tb.grad())), 0, 0,
                "concat db (accumulate, mixed)");
  }
}

// torchvision's ToTensor + Normalize: (img / 255 - mean) / std, three IEEE float operations in
// the same order, each correctly rounded, so the result must be identical.
TEST_CASE("input normalisation matches LibTorch") {
  for (int64_t pixels : {int64_t(1), int64_t(37), int64_t(2) * 128 * 128}) {
    CAPTURE(pixels);
    std::vector<uint8_t> img(size_t(pixels) * 3);
    auto r = random_vector<double>(img.size(), 51 + pixels, 0.0, 256.0);
    for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(std::min(255.0, r[i]));
    img[0] = 0;
    img[img.size() - 1] = 255;
    const NormalizeParams prm;

    auto timg = torch::from_blob(img.data(), {pixels, 3}, torch::kUInt8).to(torch::kFloat32);
    auto mean = torch::tensor({prm.mean[0], prm.mean[1], prm.mean[2]});
    auto stdv = torch::tensor({prm.std[0], prm.std[1], prm.std[2]});
    auto want = ((timg / 255.0f) - mean) / stdv;

    Guarded x(img.size(), kNaN);
    cpu::normalize_input(x.data(), img.data(), pixels, prm);
    CHECK(x.guards_intact());
    check_close(x.values(), torch_to_vector(want), 0, 0, "normalize_input");
  }
}

namespace {

// smp's DiceLoss(mode="binary", from_logits=True) as spec section 7 writes it: the Tversky form
// with alpha = beta = 0.5, smooth 0, eps 1e-7, summed over the batch and pixels (dims 0, 2),
// masked by St > 0, mean over the one class. logits and target: (N, 1, H, W).
torch::Tensor smp_dice_loss(const torch::Tensor& logits, const torch::Tensor& target) {
  const int64_t n = logits.size(0);
  auto p = torch::log_sigmoid(logits).exp().reshape({n, 1, -1});
  auto t = target.to(logits.scalar_type()).reshape({n, 1, -1});
  const std::vector<int64_t> dims{0, 2};
  auto sum_p = p.sum(dims);
  auto sum_t = t.sum(dims);
  auto difference = torch::linalg_vector_norm(p - t, 1, at::IntArrayRef(dims));
  auto intersection = (sum_p + sum_t - difference) / 2;
  auto fp = sum_p - intersection;
  auto fn = sum_t - intersection;
  auto score = intersection / (intersection + 0.5 * fp + 0.5 * fn).clamp_min(1e-7);
  auto loss = (1.0 - score) * (sum_t > 0).to(score.scalar_type());
  return loss.mean();
}

struct DiceCase {
  int n, h, w;
  double p_one;     // fraction of positive target pixels
  double logit_range;
  bool saturate;    // plant logits far beyond where float sigmoid rounds to 0 or 1
};
const DiceCase kDiceCases[] = {
    {2, 128, 128, 0.3, 4.0, false},  // the training shape
    {3, 7, 5, 0.5, 3.0, false},      // odd sizes
    {1, 1, 1, 1.0, 2.0, false},      // one pixel
    {4, 16, 16, 0.05, 6.0, true},    // few positives, saturated logits
    {2, 9, 11, 0.0, 4.0, false},     // empty batch: loss and gradient exactly 0
};

}  // namespace

TEST_CASE("sigmoid + batch Dice loss matches smp's DiceLoss written in LibTorch") {
  for (const DiceCase& dc : kDiceCases) {
    CAPTURE(dc.n); CAPTURE(dc.h); CAPTURE(dc.w); CAPTURE(dc.p_one);
    const int64_t count = int64_t(dc.n) * dc.h * dc.w;
    auto x = random_vector<float>(size_t(count), 61 + count, -dc.logit_range, dc.logit_range);
    auto t = random_binary(size_t(count), 62 + count, dc.p_one);
    if (dc.saturate) {
      const float planted[] = {20.0f, 30.0f, -20.0f, -30.0f, 90.0f, -120.0f};
      for (size_t k = 0; k < std::size(planted); ++k) x[k * 37 % size_t(count)] = planted[k];
    }

    float loss = kNaN;
    DiceSums sums;
    cpu::dice_loss_forward(&loss, &sums, x.data(), t.data(), count);

    for (float dloss : {1.0f, 0.37f}) {
      CAPTURE(dloss);
      for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
        const bool f32 = dtype == torch::kFloat32;
        CAPTURE(f32);
        auto tx = flat_tensor(x).to(dtype).reshape({dc.n, 1, dc.h, dc.w}).requires_grad_(true);
        auto tt = torch::from_blob(t.data(), {dc.n, 1, dc.h, dc.w}, torch::kUInt8).clone();
        auto tloss = smp_dice_loss(tx, tt);
        tloss.backward(torch::full({}, double(dloss), dtype));
        const double want_loss = tloss.item<double>();
        const auto want_grad = torch_to_vector<double>(tx.grad());

        // Loss. LibTorch in float32 sums up to 32768 float32 p values (error ~ log2(n) * 2^-24
        // relative with its pairwise sums, < 1e-6) and then forms I = (Sp + St - D)/2, which
        // loses up to a factor 4 more: 5e-6 absolute on a loss in [0, 1] (seen: 5e-7).
        // Against float64 LibTorch our only error is p rounded to float32 (log1p, exp and a
        // subtraction: at most 3 ulp, 3.6e-7 relative). Even if every p erred by the same
        // relative delta, 2I/S would move by at most delta: 5e-7 bounds it (seen: 1e-8).
        const double loss_atol = f32 ? 5e-6 : 5e-7;
        CHECK_MESSAGE(std::fabs(double(loss) - want_loss) <= loss_atol,
                      "loss " << loss << " want " << want_loss);

        // Gradient. Per pixel it is (2I/S^2 - 2t/S) p sigmoid(-x): a few roundings in p, q and
        // the coefficients (rtol 2e-6 vs float64; vs float32 add the 5e-6 relative error of
        // LibTorch's float32 sums: rtol 2e-5). The atol, 1e-6 of the largest |gradient|,
        // absorbs saturated pixels, where float32 LibTorch gets p == t exactly and sgn(0) = 0
        // changes a gradient that is below 4e-8 / den anyway (spec section 7).
        double max_grad = 0;
        for (double g : want_grad) max_grad = std::max(max_grad, std::fabs(g));
        const double rtol = f32 ? 2e-5 : 2e-6, atol = 1e-6 * max_grad;
        check_backward_modes(std::vector<float>(want_grad.begin(), want_grad.end()), 63 + count,
                             atol, rtol, std::string("dice backward ") + (f32 ? "f32" : "f64"),
                             [&](float* dx, GradMode mode) {
                               cpu::dice_loss_backward(dx, x.data(), t.data(), sums, count, dloss,
                                                       mode);
                             });
      }
    }
    if (dc.p_one == 0.0) {
      // smp's empty-batch rule: exactly zero, not merely small.
      CHECK(loss == 0.0f);
      std::vector<float> dx(size_t(count), kNaN);
      cpu::dice_loss_backward(dx.data(), x.data(), t.data(), sums, count, 1.0f,
                              GradMode::overwrite);
      for (float g : dx) REQUIRE(g == 0.0f);
    }
  }
}

TEST_CASE("confusion counts and micro-imagewise IoU match LibTorch") {
  struct Case { int n, h, w; double p_one; };
  const Case cases[] = {{2, 128, 128, 0.3}, {3, 7, 5, 0.5}, {5, 4, 4, 0.0}, {1, 1, 1, 1.0}};
  for (const Case& c : cases) {
    CAPTURE(c.n); CAPTURE(c.h); CAPTURE(c.w);
    const int64_t pixels = int64_t(c.h) * c.w, count = c.n * pixels;
    auto x = random_vector<float>(size_t(count), 71 + count, -3.0, 3.0);
    auto t = random_binary(size_t(count), 72 + count, c.p_one);
    x[0] = 0.0f;  // sigmoid(0) = 0.5 exactly: not > 0.5, a negative prediction
    if (c.n == 5) {
      // Image 1: everything predicted negative, so with an empty GT its IoU is 0/0 -> 1.
      for (int64_t i = pixels; i < 2 * pixels; ++i) x[size_t(i)] = -1.0f;
    }

    std::vector<ConfusionCounts> counts(size_t(c.n) + 1);
    counts.back().tp = -99;  // sentinel: one past the last image must stay untouched
    cpu::confusion_counts(counts.data(), x.data(), t.data(), c.n, pixels);
    CHECK(counts.back().tp == -99);

    auto tx = flat_tensor(x).reshape({c.n, 1, c.h, c.w});
    auto tt = torch::from_blob(t.data(), {c.n, 1, c.h, c.w}, torch::kUInt8).to(torch::kLong);
    auto pred = (tx.sigmoid() > 0.5).to(torch::kLong).reshape({c.n, 1, -1});
    auto truth = tt.reshape({c.n, 1, -1});
    auto tp = (pred * truth).sum(2);
    auto fp = pred.sum(2) - tp;
    auto fn = truth.sum(2) - tp;
    auto tn = pixels - (tp + fp + fn);
    // iou_score(reduction="micro-imagewise"): per image tp/(tp+fp+fn), NaN -> 1, mean.
    auto iou = tp.to(torch::kFloat32) / (tp + fp + fn).to(torch::kFloat32);
    iou = torch::where(torch::isnan(iou), torch::ones_like(iou), iou);
    const double want_iou = iou.mean().item<double>();

    double iou_sum = 0;
    for (int i = 0; i < c.n; ++i) {
      CAPTURE(i);
      CHECK(counts[size_t(i)].tp == tp[i][0].item<int64_t>());
      CHECK(counts[size_t(i)].fp == fp[i][0].item<int64_t>());
      CHECK(counts[size_t(i)].fn == fn[i][0].item<int64_t>());
      CHECK(counts[size_t(i)].tn == tn[i][0].item<int64_t>());
      iou_sum += image_iou(counts[size_t(i)]);
    }
    // LibTorch divides and averages in float32: a few roundings of values <= 1.
    CHECK(std::fabs(iou_sum / c.n - want_iou) <= 1e-6);
  }
}

TEST_CASE("Adam: three steps match torch::optim::Adam(lr 1e-4), parameters and moments") {
  // Tensors like the model's: a conv filter, a small bias vector that starts at 0 (so its
  // values are the size of one update, the most sensitive case), a vector whose gradients are
  // tiny (so eps matters), and one scalar.
  struct Param { int64_t count; double init_range, grad_range; };
  const Param specs[] = {
      {64 * 7 * 7 * 3, 0.1, 1.0}, {17, 0.0, 1e-2}, {1001, 1.0, 1e-7}, {1, 1.0, 1.0}};
  const AdamConfig cfg;  // lr 1e-4, betas (0.9, 0.999), eps 1e-8: smp's recipe

  std::vector<torch::Tensor> tparams;
  std::vector<std::vector<float>> params, exp_avg, exp_avg_sq;
  for (size_t k = 0; k < std::size(specs); ++k) {
    const Param& s = specs[k];
    params.push_back(s.init_range == 0.0 ? std::vector<float>(size_t(s.count), 0.0f)
                                         : random_vector<float>(size_t(s.count), 81 + k,
                                                                -s.init_range, s.init_range));
    exp_avg.emplace_back(size_t(s.count), 0.0f);
    exp_avg_sq.emplace_back(size_t(s.count), 0.0f);
    tparams.push_back(flat_tensor(params.back()).requires_grad_(true));
  }
  torch::optim::Adam opt(tparams, torch::optim::AdamOptions(cfg.lr));

  for (int64_t step = 1; step <= 3; ++step) {
    CAPTURE(step);
    for (size_t k = 0; k < std::size(specs); ++k) {
      auto g = random_vector<float>(size_t(specs[k].count), 91 + 10 * step + k,
                                    -specs[k].grad_range, specs[k].grad_range);
      if (g.size() > 1) g[0] = 0.0f;  // a zero gradient still moves it through the momentum
      tparams[k].mutable_grad() = flat_tensor(g);
      cpu::adam_step(params[k].data(), exp_avg[k].data(), exp_avg_sq[k].data(), g.data(),
                     specs[k].count, cfg, step);
    }
    opt.step();

    for (size_t k = 0; k < std::size(specs); ++k) {
      CAPTURE(k);
      auto& state = static_cast<torch::optim::AdamParamState&>(
          *opt.state().at(c10::guts::to_string(tparams[k].unsafeGetTensorImpl())));
      // Our step is LibTorch's sequence of float32 operations (fused where ATen fuses) on the
      // same float32 scalars, so parameters and moments must match exactly. A tolerance would
      // hide the one-rounding slips this test exists to catch: unfused, exp_avg is 1 ulp off
      // for a third of the elements, and float betas (1 - 0.999f) put exp_avg_sq 1.3e-5 off.
      check_close(exp_avg[k], torch_to_vector(state.exp_avg()), 0, 0, "exp_avg");
      check_close(exp_avg_sq[k], torch_to_vector(state.exp_avg_sq()), 0, 0, "exp_avg_sq");
      check_close(params[k], torch_to_vector(tparams[k]), 0, 0, "param");
    }
  }
}

}  // namespace unetcu::test
