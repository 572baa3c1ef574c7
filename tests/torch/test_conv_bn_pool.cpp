// tests/torch/test_conv_bn_pool.cpp: the cpu:: convolution, BatchNorm and max-pool kernels
// against LibTorch (float32, autograd for every gradient), at the real UNet shapes (batch 2)
// and at odd shapes that exercise the edges.
//
// Outputs are written into guarded buffers: overwrite-mode outputs start as NaN (a kernel that
// reads them instead of overwriting shows up as NaN), accumulate-mode outputs start as random
// values that must be added to, and guard cells on both sides must come back untouched.
//
// Tolerances. Every check is |got - want| <= tol * (rms(want) + |want|), with tol derived from
// how the value is computed, never tuned to pass:
//  * a GEMM-type sum of L float32 products has a rounding error of about eps * sqrt(L) times the
//    typical partial sum; both we and LibTorch make such an error, so tol = 8 * eps * sqrt(L)
//    (L = R*S*C forward, K*R*S backward-data, N*P*Q backward-filter and bias);
//  * BatchNorm is compared with LibTorch run in float64 on the same (float) inputs: LibTorch's
//    float32 backward sums dy in float, an error ~100x larger than that of our double
//    accumulation, which a float32 reference would hide. What remains on our side is a few
//    float roundings of values that, when the mean is far from zero, are |mean| * invstd
//    times larger than the normalised output, so tol = 16 * eps * (1 + max |mean| * invstd);
//  * max-pool moves values without arithmetic: forward and argmax must match exactly; the
//    backward adds at most four values per element, tol = 4 * eps.
#include <doctest/doctest.h>
#include <omp.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/batchnorm.h"
#include "kernels/conv.h"
#include "kernels/pool.h"
#include "test_util.h"
#include "torch/torch_util.h"

using namespace unetcu;
using namespace unetcu::test;

namespace {

constexpr double kEps = FLT_EPSILON;

// An output buffer with guard cells on both sides holding a sentinel bit pattern.
template <typename T>
class Guarded {
 public:
  Guarded(size_t count, const std::vector<T>& init) : store_(count + 2 * kGuard), count_(count) {
    REQUIRE(init.size() == count);
    std::fill(store_.begin(), store_.end(), sentinel());
    std::copy(init.begin(), init.end(), data());
  }
  T* data() { return store_.data() + kGuard; }
  std::vector<T> values() const {
    return std::vector<T>(store_.begin() + kGuard, store_.begin() + kGuard + count_);
  }
  bool guards_intact() const {
    const T s = sentinel();
    for (size_t i = 0; i < kGuard; ++i) {
      if (std::memcmp(&store_[i], &s, sizeof(T)) != 0) return false;
      if (std::memcmp(&store_[kGuard + count_ + i], &s, sizeof(T)) != 0) return false;
    }
    return true;
  }

 private:
  static constexpr size_t kGuard = 37;
  static T sentinel() { return T(-12345); }
  std::vector<T> store_;
  size_t count_;
};

// LibTorch sets OpenMP to its own thread count when it starts (one thread on some machines),
// which would leave our kernels' threaded paths untested. Three threads also give splits
// that are not halves.
class OurThreads {
 public:
  OurThreads() : before_(omp_get_max_threads()) { omp_set_num_threads(3); }
  ~OurThreads() { omp_set_num_threads(before_); }

 private:
  int before_;
};

std::vector<float> nan_vector(size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return v.empty() ? 0.0 : std::sqrt(s / double(v.size()));
}

// |got - want| <= tol * (rms(want) + |want|): the rms term covers outputs that cancel to near
// zero, whose absolute error still scales with the size of the terms.
void check_scaled(const std::vector<float>& got, const std::vector<float>& want, double tol,
                  const std::string& what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what);
  check_close(got, want, tol * rms(want), tol, what);
}

std::vector<float> plus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = float(double(a[i]) + double(b[i]));
  return out;
}

std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

template <typename T>
torch::Tensor vector_to_torch(const std::vector<T>& v, bool grad = false) {
  const auto dtype = std::is_same_v<T, double> ? torch::kFloat64 : torch::kFloat32;
  auto t = torch::from_blob(const_cast<T*>(v.data()), {int64_t(v.size())}, dtype).clone();
  return grad ? t.requires_grad_(true) : t;
}

// ---- convolution ------------------------------------------------------------------------

struct ConvCase {
  const char* name;
  int n, h, w, c, k, r, s, stride, pad;
  bool bias;
};

void check_conv(const ConvCase& cc, uint64_t seed) {
  const OurThreads threads;
  const ConvShape sh = ConvShape::make(cc.n, cc.h, cc.w, cc.c, cc.k, cc.r, cc.s, cc.stride, cc.pad);
  INFO("conv " << std::string(cc.name) << ": n" << sh.n << " " << sh.h << "x" << sh.w << "x" << sh.c << " -> "
               << sh.p << "x" << sh.q << "x" << sh.k << " k" << sh.r << "x" << sh.s << " s"
               << sh.stride << " p" << sh.pad);
  const auto x = random_vector<float>(size_t(sh.x_size()), seed);
  const auto wt = random_vector<float>(size_t(sh.w_size()), seed + 1);
  const auto bias = random_vector<float>(size_t(sh.k), seed + 2);
  const auto dy = random_vector<float>(size_t(sh.y_size()), seed + 3);

  auto x_t = nhwc_to_torch(x, sh.n, sh.h, sh.w, sh.c, true);
  auto w_t = krsc_to_torch(wt, sh.k, sh.r, sh.s, sh.c, true);
  auto b_t = vector_to_torch(bias, true);
  auto y_t = torch::conv2d(x_t, w_t, cc.bias ? b_t : torch::Tensor(),
                           {int64_t(sh.stride), int64_t(sh.stride)}, {int64_t(sh.pad), int64_t(sh.pad)});
  REQUIRE(y_t.size(2) == sh.p);
  REQUIRE(y_t.size(3) == sh.q);
  y_t.backward(nhwc_to_torch(dy, sh.n, sh.p, sh.q, sh.k));
  const auto y_want = torch_to_nhwc(y_t);
  const auto dx_want = torch_to_nhwc(x_t.grad());
  const auto dw_want = torch_to_krsc(w_t.grad());
  const auto db_want = cc.bias ? torch_to_vector(b_t.grad()) : std::vector<float>();

  const double tol_fwd = 8 * kEps * std::sqrt(double(sh.r) * sh.s * sh.c);
  const double tol_data = 8 * kEps * std::sqrt(double(sh.k) * sh.r * sh.s);
  const double tol_filter = 8 * kEps * std::sqrt(double(sh.n) * sh.p * sh.q);

  Guarded<float> y(y_want.size(), nan_vector(y_want.size()));
  cpu::conv2d_forward(y.data(), x.data(), wt.data(), cc.bias ? bias.data() : nullptr, sh);
  CHECK(y.guards_intact());
  check_scaled(y.values(), y_want, tol_fwd, "forward y");

  // Each backward twice: overwrite into NaN, and accumulate onto random values.
  const auto dx0 = random_vector<float>(dx_want.size(), seed + 4);
  Guarded<float> dx(dx_want.size(), nan_vector(dx_want.size()));
  cpu::conv2d_backward_data(dx.data(), dy.data(), wt.data(), sh, GradMode::overwrite);
  CHECK(dx.guards_intact());
  check_scaled(dx.values(), dx_want, tol_data, "backward data, overwrite");
  Guarded<float> dx_acc(dx0.size(), dx0);
  cpu::conv2d_backward_data(dx_acc.data(), dy.data(), wt.data(), sh, GradMode::accumulate);
  CHECK(dx_acc.guards_intact());
  check_scaled(dx_acc.values(), plus(dx0, dx_want), tol_data, "backward data, accumulate");

  const auto dw0 = random_vector<float>(dw_want.size(), seed + 5);
  Guarded<float> dw(dw_want.size(), nan_vector(dw_want.size()));
  cpu::conv2d_backward_filter(dw.data(), dy.data(), x.data(), sh, GradMode::overwrite);
  CHECK(dw.guards_intact());
  check_scaled(dw.values(), dw_want, tol_filter, "backward filter, overwrite");
  Guarded<float> dw_acc(dw0.size(), dw0);
  cpu::conv2d_backward_filter(dw_acc.data(), dy.data(), x.data(), sh, GradMode::accumulate);
  CHECK(dw_acc.guards_intact());
  check_scaled(dw_acc.values(), plus(dw0, dw_want), tol_filter, "backward filter, accumulate");

  if (cc.bias) {
    const auto db0 = random_vector<float>(db_want.size(), seed + 6);
    Guarded<float> db(db_want.size(), nan_vector(db_want.size()));
    cpu::conv2d_backward_bias(db.data(), dy.data(), sh, GradMode::overwrite);
    CHECK(db.guards_intact());
    check_scaled(db.values(), db_want, tol_filter, "backward bias, overwrite");
    Guarded<float> db_acc(db0.size(), db0);
    cpu::conv2d_backward_bias(db_acc.data(), dy.data(), sh, GradMode::accumulate);
    CHECK(db_acc.guards_intact());
    check_scaled(db_acc.values(), plus(db0, db_want), tol_filter, "backward bias, accumulate");
  }
}

TEST_CASE("conv2d vs LibTorch: the UNet's layers at batch 2") {
  const ConvCase cases[] = {
      {"stem 7x7/2", 2, 128, 128, 3, 64, 7, 7, 2, 3, false},
      {"layer1 3x3", 2, 32, 32, 64, 64, 3, 3, 1, 1, false},
      {"layer2.0 conv1 3x3/2", 2, 32, 32, 64, 128, 3, 3, 2, 1, false},
      {"layer2.0 downsample 1x1/2", 2, 32, 32, 64, 128, 1, 1, 2, 0, false},
      {"layer4.0 conv1 3x3/2", 2, 8, 8, 256, 512, 3, 3, 2, 1, false},
      {"layer4 3x3 at 4x4", 2, 4, 4, 512, 512, 3, 3, 1, 1, false},
      {"decoder 0 conv1", 2, 8, 8, 768, 256, 3, 3, 1, 1, false},
      {"decoder 1 conv1", 2, 16, 16, 384, 128, 3, 3, 1, 1, false},
      {"decoder 2 conv1", 2, 32, 32, 192, 64, 3, 3, 1, 1, false},
      {"decoder 3 conv1", 2, 64, 64, 128, 32, 3, 3, 1, 1, false},
      {"decoder 4 conv1", 2, 128, 128, 32, 16, 3, 3, 1, 1, false},
      {"decoder 4 conv2", 2, 128, 128, 16, 16, 3, 3, 1, 1, false},
      {"head", 2, 128, 128, 16, 1, 3, 3, 1, 1, true},
  };
  uint64_t seed = 100;
  for (const auto& cc : cases) {
    SUBCASE(cc.name) { check_conv(cc, seed); }
    seed += 10;
  }
}

TEST_CASE("conv2d vs LibTorch: odd shapes, strides, paddings and kernels") {
  const ConvCase cases[] = {
      {"3x3/2 odd sizes", 3, 7, 9, 5, 6, 3, 3, 2, 1, true},
      {"5x5/3 pad 2", 2, 11, 13, 4, 3, 5, 5, 3, 2, false},
      {"1x1 direct with bias", 3, 5, 7, 6, 5, 1, 1, 1, 0, true},
      {"1x1 padded", 2, 4, 5, 3, 2, 1, 1, 1, 1, false},
      {"2x2/2 no pad", 1, 6, 7, 3, 4, 2, 2, 2, 0, false},
      {"4x3 kernel/2 pad 1", 2, 9, 8, 3, 5, 4, 3, 2, 1, true},
      {"kernel as large as the input", 2, 5, 5, 3, 4, 5, 5, 1, 0, false},
      {"pad wider than the stride", 1, 3, 3, 2, 3, 3, 3, 1, 2, false},
      // Column matrices of several MB: many column tiles, the last one short.
      {"uneven column tiles", 5, 128, 128, 16, 8, 3, 3, 1, 1, false},
  };
  uint64_t seed = 500;
  for (const auto& cc : cases) {
    SUBCASE(cc.name) { check_conv(cc, seed); }
    seed += 10;
  }
}

// ---- batchnorm --------------------------------------------------------------------------

struct BnCase {
  const char* name;
  int n, h, w, c;
  double offset;  // added to x: a mean far from zero tests the statistics' precision
};

void check_batchnorm(const BnCase& bc, uint64_t seed) {
  const OurThreads threads;
  INFO("batchnorm " << std::string(bc.name) << ": " << bc.n << "x" << bc.h << "x" << bc.w << "x" << bc.c);
  const BatchNormShape sh{int64_t(bc.n) * bc.h * bc.w, bc.c};
  const float momentum = 0.1f, eps = 1e-5f;
  const auto x = random_vector<float>(size_t(sh.rows * sh.c), seed, bc.offset - 1, bc.offset + 1);
  const auto gamma = random_vector<float>(size_t(sh.c), seed + 1, 0.5, 1.5);
  const auto beta = random_vector<float>(size_t(sh.c), seed + 2);
  const auto rm0 = random_vector<float>(size_t(sh.c), seed + 3);
  const auto rv0 = random_vector<float>(size_t(sh.c), seed + 4, 0.5, 2.0);
  const auto dy = random_vector<float>(x.size(), seed + 5);

  auto x_t = nhwc_to_torch(to_double(x), bc.n, bc.h, bc.w, bc.c, true);
  auto g_t = vector_to_torch(to_double(gamma), true);
  auto b_t = vector_to_torch(to_double(beta), true);
  auto rm_t = vector_to_torch(to_double(rm0));
  auto rv_t = vector_to_torch(to_double(rv0));
  auto [y_t, mean_t, invstd_t] =
      torch::native_batch_norm(x_t, g_t, b_t, rm_t, rv_t, true, momentum, eps);
  y_t.backward(nhwc_to_torch(to_double(dy), bc.n, bc.h, bc.w, bc.c));
  const auto y_want = torch_to_nhwc(y_t);
  const auto mean_want = torch_to_vector(mean_t);
  const auto invstd_want = torch_to_vector(invstd_t);

  double spread = 0;  // max |mean| * invstd: how many bits x - mean cancels
  for (int c = 0; c < sh.c; ++c)
    spread = std::max(spread, std::fabs(double(mean_want[size_t(c)])) * invstd_want[size_t(c)]);
  const double tol = 16 * kEps * (1 + spread);

  Guarded<float> y(x.size(), nan_vector(x.size()));
  Guarded<float> mean(size_t(sh.c), nan_vector(size_t(sh.c)));
  Guarded<float> invstd(size_t(sh.c), nan_vector(size_t(sh.c)));
  Guarded<float> rm(rm0.size(), rm0), rv(rv0.size(), rv0);
  cpu::batchnorm_train_forward(y.data(), mean.data(), invstd.data(), rm.data(), rv.data(),
                               x.data(), gamma.data(), beta.data(), sh, momentum, eps);
  CHECK((y.guards_intact() && mean.guards_intact() && invstd.guards_intact() &&
         rm.guards_intact() && rv.guards_intact()));
  check_scaled(y.values(), y_want, tol, "train forward y");
  check_scaled(mean.values(), mean_want, tol, "saved mean");
  check_scaled(invstd.values(), invstd_want, tol, "saved invstd");
  // The running statistics are a double-accumulated statistic rounded once or twice.
  check_scaled(rm.values(), torch_to_vector(rm_t), 4 * kEps * (1 + spread), "running_mean");
  check_scaled(rv.values(), torch_to_vector(rv_t), 4 * kEps * (1 + spread), "running_var");

  // Backward in both modes for dx and for the parameters.
  const auto dx_want = torch_to_nhwc(x_t.grad());
  const auto dg_want = torch_to_vector(g_t.grad());
  const auto db_want = torch_to_vector(b_t.grad());
  // dgamma and dbeta: double sums (exact for our purposes) rounded to float, plus the
  // rounding of the saved float mean that dgamma's sum of dy * (x - mean) inherits.
  const double tol_param = 8 * kEps * (1 + spread);
  {
    Guarded<float> dx(x.size(), nan_vector(x.size()));
    Guarded<float> dg(size_t(sh.c), nan_vector(size_t(sh.c)));
    Guarded<float> db(size_t(sh.c), nan_vector(size_t(sh.c)));
    const auto saved_mean = mean.values(), saved_invstd = invstd.values();
    cpu::batchnorm_backward(dx.data(), dg.data(), db.data(), dy.data(), x.data(), gamma.data(),
                            saved_mean.data(), saved_invstd.data(), sh, GradMode::overwrite,
                            GradMode::overwrite);
    CHECK((dx.guards_intact() && dg.guards_intact() && db.guards_intact()));
    check_scaled(dx.values(), dx_want, tol, "backward dx, overwrite");
    check_scaled(dg.values(), dg_want, tol_param, "backward dgamma, overwrite");
    check_scaled(db.values(), db_want, tol_param, "backward dbeta, overwrite");
  }
  {
    const auto dx0 = random_vector<float>(x.size(), seed + 6);
    const auto dg0 = random_vector<float>(size_t(sh.c), seed + 7);
    const auto db0 = random_vector<float>(size_t(sh.c), seed + 8);
    Guarded<float> dx(x.size(), dx0), dg(size_t(sh.c), dg0), db(size_t(sh.c), db0);
    const auto saved_mean = mean.values(), saved_invstd = invstd.values();
    cpu::batchnorm_backward(dx.data(), dg.data(), db.data(), dy.data(), x.data(), gamma.data(),
                            saved_mean.data(), saved_invstd.data(), sh, GradMode::accumulate,
                            GradMode::accumulate);
    CHECK((dx.guards_intact() && dg.guards_intact() && db.guards_intact()));
    check_scaled(dx.values(), plus(dx0, dx_want), tol, "backward dx, accumulate");
    check_scaled(dg.values(), plus(dg0, dg_want), tol_param, "backward dgamma, accumulate");
    check_scaled(db.values(), plus(db0, db_want), tol_param, "backward dbeta, accumulate");
  }
  {
    // The two modes are independent arguments: accumulate dx, overwrite the parameters.
    const auto dx0 = random_vector<float>(x.size(), seed + 9);
    Guarded<float> dx(x.size(), dx0);
    Guarded<float> dg(size_t(sh.c), nan_vector(size_t(sh.c)));
    Guarded<float> db(size_t(sh.c), nan_vector(size_t(sh.c)));
    const auto saved_mean = mean.values(), saved_invstd = invstd.values();
    cpu::batchnorm_backward(dx.data(), dg.data(), db.data(), dy.data(), x.data(), gamma.data(),
                            saved_mean.data(), saved_invstd.data(), sh, GradMode::accumulate,
                            GradMode::overwrite);
    check_scaled(dx.values(), plus(dx0, dx_want), tol, "backward dx, mixed modes");
    check_scaled(dg.values(), dg_want, tol_param, "backward dgamma, mixed modes");
    check_scaled(db.values(), db_want, tol_param, "backward dbeta, mixed modes");
  }

  // Eval forward with the (random) running statistics, which must stay untouched.
  {
    auto x_eval = nhwc_to_torch(to_double(x), bc.n, bc.h, bc.w, bc.c);
    auto y_eval_t = torch::batch_norm(
        x_eval, vector_to_torch(to_double(gamma)), vector_to_torch(to_double(beta)),
        vector_to_torch(to_double(rm0)), vector_to_torch(to_double(rv0)), false, momentum, eps,
        false);
    const auto y_eval_want = torch_to_nhwc(y_eval_t);
    double eval_spread = 0;
    for (int c = 0; c < sh.c; ++c)
      eval_spread = std::max(eval_spread, (std::fabs(bc.offset) + 1) / std::sqrt(rv0[size_t(c)]));
    Guarded<float> y_eval(x.size(), nan_vector(x.size()));
    cpu::batchnorm_eval_forward(y_eval.data(), x.data(), gamma.data(), beta.data(), rm0.data(),
                                rv0.data(), sh, eps);
    CHECK(y_eval.guards_intact());
    check_scaled(y_eval.values(), y_eval_want, 16 * kEps * (1 + eval_spread), "eval forward y");
  }
}

TEST_CASE("batchnorm vs LibTorch: train forward, running statistics, backward, eval") {
  const BnCase cases[] = {
      {"stem 2x64x64x64", 2, 64, 64, 64, 0.0},
      {"layer4 2x4x4x512", 2, 4, 4, 512, 0.0},
      {"decoder 4 2x128x128x16", 2, 128, 128, 16, 0.0},
      {"odd 3x5x7x3", 3, 5, 7, 3, 0.0},
      {"two rows 1x1x2x5", 1, 1, 2, 5, 0.0},
      {"mean far from zero", 2, 9, 11, 7, 50.0},
      {"rows not a multiple of the chunk", 3, 37, 41, 6, 0.5},
  };
  uint64_t seed = 900;
  for (const auto& bc : cases) {
    SUBCASE(bc.name) { check_batchnorm(bc, seed); }
    seed += 20;
  }
}

// ---- max-pool ---------------------------------------------------------------------------

void check_maxpool(const char* name, int n, int h, int w, int c, const std::vector<float>& x,
                   uint64_t seed) {
  const OurThreads threads;
  INFO("maxpool " << std::string(name) << ": " << n << "x" << h << "x" << w << "x" << c);
  const MaxPoolShape sh = MaxPoolShape::make(n, h, w, c);
  auto x_t = nhwc_to_torch(x, n, h, w, c, true);
  auto [y_t, idx_t] = torch::max_pool2d_with_indices(x_t, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false);
  REQUIRE(y_t.size(2) == sh.p);
  REQUIRE(y_t.size(3) == sh.q);
  const size_t y_count = size_t(n) * sh.p * sh.q * c;
  const auto dy = random_vector<float>(y_count, seed);
  y_t.backward(nhwc_to_torch(dy, n, sh.p, sh.q, c));
  const auto y_want = torch_to_nhwc(y_t);
  const auto idx_nhwc = idx_t.permute({0, 2, 3, 1}).contiguous();
  const std::vector<int64_t> idx_want(idx_nhwc.data_ptr<int64_t>(),
                                      idx_nhwc.data_ptr<int64_t>() + idx_nhwc.numel());
  const auto dx_want = torch_to_nhwc(x_t.grad());

  Guarded<float> y(y_count, nan_vector(y_count));
  Guarded<int32_t> argmax(y_count, std::vector<int32_t>(y_count, -7));
  cpu::maxpool_forward(y.data(), argmax.data(), x.data(), sh);
  CHECK((y.guards_intact() && argmax.guards_intact()));
  check_close(y.values(), y_want, 0, 0, "forward y (exact)");
  const auto got_idx = argmax.values();
  size_t idx_mismatch = 0, first_bad = 0;
  for (size_t i = 0; i < y_count; ++i) {
    if (int64_t(got_idx[i]) != idx_want[i] && idx_mismatch++ == 0) first_bad = i;
  }
  CHECK_MESSAGE(idx_mismatch == 0, idx_mismatch << " argmax mismatches; first at " << first_bad
                                                << ": got " << got_idx[first_bad] << " want "
                                                << idx_want[first_bad]);

  Guarded<float> dx(x.size(), nan_vector(x.size()));
  cpu::maxpool_backward(dx.data(), dy.data(), got_idx.data(), sh, GradMode::overwrite);
  CHECK(dx.guards_intact());
  check_scaled(dx.values(), dx_want, 4 * kEps, "backward dx, overwrite");
  const auto dx0 = random_vector<float>(x.size(), seed + 1);
  Guarded<float> dx_acc(x.size(), dx0);
  cpu::maxpool_backward(dx_acc.data(), dy.data(), got_idx.data(), sh, GradMode::accumulate);
  CHECK(dx_acc.guards_intact());
  check_scaled(dx_acc.values(), plus(dx0, dx_want), 4 * kEps, "backward dx, accumulate");
}

TEST_CASE("maxpool 3x3/2/1 vs LibTorch: values, argmax, routed gradients") {
  SUBCASE("stem output 2x64x64x64") {
    check_maxpool("stem", 2, 64, 64, 64, random_vector<float>(2 * 64 * 64 * 64, 1300), 1301);
  }
  SUBCASE("odd sizes 3x7x9x5 and 1x1x1x2") {
    check_maxpool("odd", 3, 7, 9, 5, random_vector<float>(3 * 7 * 9 * 5, 1310), 1311);
    check_maxpool("single pixel", 1, 1, 1, 2, random_vector<float>(2, 1312), 1313);
  }
  SUBCASE("ties after a ReLU: about half the inputs are exactly zero") {
    auto x = random_vector<float>(2 * 16 * 15 * 8, 1320);
    for (auto& v : x) v = std::max(v, 0.0f);
    // Some windows entirely zero, so the tie rule decides every one of their elements.
    for (int i = 0; i < 3 * 15 * 8; ++i) x[size_t(i)] = 0.0f;
    check_maxpool("relu ties", 2, 16, 15, 8, x, 1321);
  }
  SUBCASE("ties among non-zero values: inputs from {1, 2, 3}") {
    auto x = random_vector<float>(2 * 11 * 12 * 4, 1330, 0.0, 3.0);
    for (auto& v : x) v = std::floor(v) + 1.0f;
    check_maxpool("small alphabet", 2, 11, 12, 4, x, 1331);
  }
}

}  // namespace
