// tests/cpu/test_gradcheck_conv_bn_pool.cpp: the cpu:: convolution, BatchNorm and max-pool
// backward passes checked by central finite differences in double precision, plus the
// properties that need no outside reference: BatchNorm statistics against their definition,
// the tie rule of max-pool, gradient modes, and results independent of the thread count.
//
// Every gradient is that of the scalar loss L = sum(y * g) with a random g, so each backward
// is fed a nontrivial dy = g and must reproduce dL/d(input) element by element.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/batchnorm.h"
#include "kernels/conv.h"
#include "kernels/pool.h"
#include "test_util.h"

using namespace unetcu;
using namespace unetcu::test;

namespace {

using Vec = std::vector<double>;

double dot(const Vec& a, const Vec& b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

// Central differences of loss() with respect to every element of v (v is restored).
Vec numeric_gradient(Vec& v, const std::function<double()>& loss, double step) {
  Vec grad(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const double keep = v[i];
    v[i] = keep + step;
    const double up = loss();
    v[i] = keep - step;
    const double down = loss();
    v[i] = keep;
    grad[i] = (up - down) / (2 * step);
  }
  return grad;
}

Vec plus(const Vec& a, const Vec& b) {
  Vec out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = a[i] + b[i];
  return out;
}

// Checks that calling `backward` in accumulate mode onto random values gives those values plus
// the overwrite-mode result, and that overwrite mode ignores what was in the buffer (NaN).
void check_modes(size_t count, const std::function<void(double*, GradMode)>& backward,
                 uint64_t seed, const char* what) {
  Vec overwritten(count, std::nan(""));
  backward(overwritten.data(), GradMode::overwrite);
  const Vec start = random_vector<double>(count, seed);
  Vec accumulated = start;
  backward(accumulated.data(), GradMode::accumulate);
  INFO(what);
  for (double v : overwritten) REQUIRE(std::isfinite(v));
  check_close(accumulated, plus(start, overwritten), 1e-13, 1e-13, "accumulate vs overwrite");
}

// ---- convolution ------------------------------------------------------------------------

struct ConvCase {
  const char* name;
  int n, h, w, c, k, r, s, stride, pad;
  bool bias;
};

TEST_CASE("conv2d gradients match finite differences (double)") {
  const ConvCase cases[] = {
      {"3x3 s1 p1", 2, 5, 5, 3, 4, 3, 3, 1, 1, false},
      {"3x3 s2 p1", 2, 5, 5, 3, 4, 3, 3, 2, 1, true},
      {"1x1 s1 p0 (no column matrix)", 2, 5, 5, 3, 4, 1, 1, 1, 0, true},
      {"1x1 s2 p0", 2, 5, 5, 3, 4, 1, 1, 2, 0, false},
      {"2x2 s2 p0 (last row and column unused)", 2, 5, 5, 3, 4, 2, 2, 2, 0, false},
      {"5x5 s1 p2", 2, 5, 5, 3, 4, 5, 5, 1, 2, false},
      {"3x2 s3 p2, 5x6 input", 2, 5, 6, 3, 4, 3, 2, 3, 2, true},
      {"7x7 s2 p3 (stem)", 1, 6, 7, 3, 2, 7, 7, 2, 3, false},
  };
  uint64_t seed = 10;
  for (const auto& cc : cases) {
    SUBCASE(cc.name) {
      const ConvShape sh =
          ConvShape::make(cc.n, cc.h, cc.w, cc.c, cc.k, cc.r, cc.s, cc.stride, cc.pad);
      Vec x = random_vector<double>(size_t(sh.x_size()), seed);
      Vec wt = random_vector<double>(size_t(sh.w_size()), seed + 1);
      Vec bias = random_vector<double>(size_t(sh.k), seed + 2);
      const Vec g = random_vector<double>(size_t(sh.y_size()), seed + 3);
      Vec y(g.size());
      auto loss = [&] {
        cpu::conv2d_forward(y.data(), x.data(), wt.data(), cc.bias ? bias.data() : nullptr, sh);
        return dot(y, g);
      };
      // L is linear in each input, so central differences are exact but for rounding
      // (|L| ~ 10, step 1e-3: error ~ 1e-15 * 10 / 1e-3 = 1e-11).
      const double step = 1e-3, tol = 1e-8;

      Vec dx(x.size()), dw(wt.size()), db(bias.size());
      cpu::conv2d_backward_data(dx.data(), g.data(), wt.data(), sh, GradMode::overwrite);
      cpu::conv2d_backward_filter(dw.data(), g.data(), x.data(), sh, GradMode::overwrite);
      check_close(dx, numeric_gradient(x, loss, step), tol, tol, "dx");
      check_close(dw, numeric_gradient(wt, loss, step), tol, tol, "dweight");
      if (cc.bias) {
        cpu::conv2d_backward_bias(db.data(), g.data(), sh, GradMode::overwrite);
        check_close(db, numeric_gradient(bias, loss, step), tol, tol, "dbias");
      }

      check_modes(dx.size(), [&](double* out, GradMode m) {
        cpu::conv2d_backward_data(out, g.data(), wt.data(), sh, m);
      }, seed + 4, "backward data");
      check_modes(dw.size(), [&](double* out, GradMode m) {
        cpu::conv2d_backward_filter(out, g.data(), x.data(), sh, m);
      }, seed + 5, "backward filter");
      check_modes(db.size(), [&](double* out, GradMode m) {
        cpu::conv2d_backward_bias(out, g.data(), sh, m);
      }, seed + 6, "backward bias");
    }
    seed += 10;
  }
}

TEST_CASE("conv2d forward equals the direct sum over taps (double)") {
  // Independent of im2col: the definition written as nested loops, at a stride/pad mix.
  const ConvShape sh = ConvShape::make(2, 6, 5, 3, 4, 3, 2, 2, 1);
  const Vec x = random_vector<double>(size_t(sh.x_size()), 70);
  const Vec wt = random_vector<double>(size_t(sh.w_size()), 71);
  const Vec bias = random_vector<double>(size_t(sh.k), 72);
  Vec want(size_t(sh.y_size()));
  for (int n = 0; n < sh.n; ++n)
    for (int p = 0; p < sh.p; ++p)
      for (int q = 0; q < sh.q; ++q)
        for (int k = 0; k < sh.k; ++k) {
          double sum = bias[size_t(k)];
          for (int r = 0; r < sh.r; ++r)
            for (int s = 0; s < sh.s; ++s) {
              const int ih = p * sh.stride - sh.pad + r, iw = q * sh.stride - sh.pad + s;
              if (ih < 0 || ih >= sh.h || iw < 0 || iw >= sh.w) continue;
              for (int c = 0; c < sh.c; ++c)
                sum += x[size_t(((n * sh.h + ih) * sh.w + iw) * sh.c + c)] *
                       wt[size_t(((k * sh.r + r) * sh.s + s) * sh.c + c)];
            }
          want[size_t(((n * sh.p + p) * sh.q + q) * sh.k + k)] = sum;
        }
  Vec y(want.size(), std::nan(""));
  cpu::conv2d_forward(y.data(), x.data(), wt.data(), bias.data(), sh);
  check_close(y, want, 1e-13, 1e-13, "forward");
}

TEST_CASE("conv2d adjoint identities at a shape split into many column tiles (double)") {
  // L = <conv(x, w), g> is bilinear, so L = <x, dL/dx> = <w, dL/dw> exactly (up to rounding).
  // At 128x128x16 one image's double column matrix is ~19 MB, processed in tiles of a few MB
  // whose filter gradients must add up; the stride-2 case takes the dcol + col2im path.
  for (int stride : {1, 2}) {
    CAPTURE(stride);
    const ConvShape sh = ConvShape::make(3, 128, 128, 16, 8, 3, 3, stride, 1);
    const Vec x = random_vector<double>(size_t(sh.x_size()), 80);
    const Vec wt = random_vector<double>(size_t(sh.w_size()), 81);
    const Vec g = random_vector<double>(size_t(sh.y_size()), 82);
    Vec y(g.size()), dx(x.size()), dw(wt.size());
    cpu::conv2d_forward(y.data(), x.data(), wt.data(), nullptr, sh);
    cpu::conv2d_backward_data(dx.data(), g.data(), wt.data(), sh, GradMode::overwrite);
    cpu::conv2d_backward_filter(dw.data(), g.data(), x.data(), sh, GradMode::overwrite);
    const double loss = dot(y, g);
    // |L| ~ 1e3 against a sum of ~1e6 terms of size ~0.1: double rounding stays far below this.
    CHECK(dot(x, dx) == doctest::Approx(loss).epsilon(1e-10));
    CHECK(dot(wt, dw) == doctest::Approx(loss).epsilon(1e-10));
  }
}

// ---- batchnorm --------------------------------------------------------------------------

struct BnCase {
  const char* name;
  int n, h, w, c;
};

TEST_CASE("batchnorm training-mode gradients match finite differences (double)") {
  const BnCase cases[] = {
      {"2x5x5x3", 2, 5, 5, 3},
      {"1x2x3x4", 1, 2, 3, 4},
      {"3x4x1x2", 3, 4, 1, 2},
  };
  uint64_t seed = 200;
  for (const auto& bc : cases) {
    SUBCASE(bc.name) {
      const BatchNormShape sh{int64_t(bc.n) * bc.h * bc.w, bc.c};
      Vec x = random_vector<double>(size_t(sh.rows * sh.c), seed, -2.0, 2.0);
      Vec gamma = random_vector<double>(size_t(sh.c), seed + 1, 0.5, 1.5);
      Vec beta = random_vector<double>(size_t(sh.c), seed + 2);
      const Vec g = random_vector<double>(x.size(), seed + 3);
      Vec y(x.size()), mean(size_t(sh.c)), invstd(size_t(sh.c));
      auto loss = [&] {
        Vec rm(size_t(sh.c), 0.0), rv(size_t(sh.c), 1.0);
        cpu::batchnorm_train_forward(y.data(), mean.data(), invstd.data(), rm.data(), rv.data(),
                                     x.data(), gamma.data(), beta.data(), sh, 0.1, 1e-5);
        return dot(y, g);
      };
      loss();
      const Vec saved_mean = mean, saved_invstd = invstd;
      Vec dx(x.size()), dgamma(size_t(sh.c)), dbeta(size_t(sh.c));
      cpu::batchnorm_backward(dx.data(), dgamma.data(), dbeta.data(), g.data(), x.data(),
                              gamma.data(), saved_mean.data(), saved_invstd.data(), sh,
                              GradMode::overwrite, GradMode::overwrite);
      // Nonlinear in x: the central difference's truncation error is O(step^2) ~ 1e-10.
      const double step = 1e-5, tol = 1e-7;
      check_close(dx, numeric_gradient(x, loss, step), tol, tol, "dx");
      check_close(dgamma, numeric_gradient(gamma, loss, step), tol, tol, "dgamma");
      check_close(dbeta, numeric_gradient(beta, loss, step), tol, tol, "dbeta");

      check_modes(dx.size(), [&](double* out, GradMode m) {
        Vec dg(size_t(sh.c)), db(size_t(sh.c));
        cpu::batchnorm_backward(out, dg.data(), db.data(), g.data(), x.data(), gamma.data(),
                                saved_mean.data(), saved_invstd.data(), sh, m,
                                GradMode::overwrite);
      }, seed + 4, "dx");
      check_modes(dgamma.size(), [&](double* out, GradMode m) {
        Vec dxs(x.size()), db(size_t(sh.c));
        cpu::batchnorm_backward(dxs.data(), out, db.data(), g.data(), x.data(), gamma.data(),
                                saved_mean.data(), saved_invstd.data(), sh, GradMode::overwrite,
                                m);
      }, seed + 5, "dgamma");
      check_modes(dbeta.size(), [&](double* out, GradMode m) {
        Vec dxs(x.size()), dg(size_t(sh.c));
        cpu::batchnorm_backward(dxs.data(), dg.data(), out, g.data(), x.data(), gamma.data(),
                                saved_mean.data(), saved_invstd.data(), sh, GradMode::overwrite,
                                m);
      }, seed + 6, "dbeta");
    }
    seed += 10;
  }
}

TEST_CASE("batchnorm statistics and eval forward follow their definitions (double)") {
  const BatchNormShape sh{5 * 7 * 3, 4};
  const double momentum = 0.1, eps = 1e-5;
  const Vec x = random_vector<double>(size_t(sh.rows * sh.c), 300, 3.0, 5.0);
  const Vec gamma = random_vector<double>(size_t(sh.c), 301, 0.5, 1.5);
  const Vec beta = random_vector<double>(size_t(sh.c), 302);
  const Vec rm0 = random_vector<double>(size_t(sh.c), 303);
  const Vec rv0 = random_vector<double>(size_t(sh.c), 304, 0.5, 2.0);

  Vec y(x.size()), mean(size_t(sh.c)), invstd(size_t(sh.c)), rm = rm0, rv = rv0;
  cpu::batchnorm_train_forward(y.data(), mean.data(), invstd.data(), rm.data(), rv.data(),
                               x.data(), gamma.data(), beta.data(), sh, momentum, eps);
  const double n = double(sh.rows);
  for (int c = 0; c < sh.c; ++c) {
    // Two-pass textbook statistics.
    double m = 0, ss = 0;
    for (int64_t i = 0; i < sh.rows; ++i) m += x[size_t(i * sh.c + c)];
    m /= n;
    for (int64_t i = 0; i < sh.rows; ++i) ss += std::pow(x[size_t(i * sh.c + c)] - m, 2);
    const double biased = ss / n, unbiased = ss / (n - 1);
    CAPTURE(c);
    CHECK(mean[size_t(c)] == doctest::Approx(m).epsilon(1e-13));
    CHECK(invstd[size_t(c)] == doctest::Approx(1 / std::sqrt(biased + eps)).epsilon(1e-12));
    CHECK(rm[size_t(c)] == doctest::Approx(0.9 * rm0[size_t(c)] + 0.1 * m).epsilon(1e-13));
    CHECK(rv[size_t(c)] == doctest::Approx(0.9 * rv0[size_t(c)] + 0.1 * unbiased).epsilon(1e-12));
    for (int64_t i = 0; i < sh.rows; ++i) {
      const size_t at = size_t(i * sh.c + c);
      const double want = gamma[size_t(c)] * (x[at] - m) / std::sqrt(biased + eps) + beta[size_t(c)];
      REQUIRE(y[at] == doctest::Approx(want).epsilon(1e-11));
    }
  }

  Vec y_eval(x.size(), std::nan(""));
  cpu::batchnorm_eval_forward(y_eval.data(), x.data(), gamma.data(), beta.data(), rm0.data(),
                              rv0.data(), sh, eps);
  Vec want(x.size());
  for (int64_t i = 0; i < sh.rows; ++i)
    for (int c = 0; c < sh.c; ++c) {
      const size_t at = size_t(i * sh.c + c);
      want[at] = gamma[size_t(c)] * (x[at] - rm0[size_t(c)]) / std::sqrt(rv0[size_t(c)] + eps) +
                 beta[size_t(c)];
    }
  check_close(y_eval, want, 1e-12, 1e-12, "eval forward");
}

// ---- max-pool ---------------------------------------------------------------------------

// Distinct values at least 1/size apart in shuffled order: no ties, and a finite-difference
// step far below the gap never changes which element wins a window.
Vec distinct_values(size_t size, uint64_t seed) {
  Vec v(size);
  for (size_t i = 0; i < size; ++i) v[i] = double(i) / double(size) - 0.5;
  std::mt19937_64 gen(seed);
  std::shuffle(v.begin(), v.end(), gen);
  return v;
}

TEST_CASE("maxpool gradient matches finite differences (double, no ties)") {
  const int shapes[][4] = {{2, 5, 5, 3}, {1, 6, 7, 2}, {2, 1, 4, 3}, {1, 2, 2, 1}};
  uint64_t seed = 400;
  for (const auto& s : shapes) {
    const MaxPoolShape sh = MaxPoolShape::make(s[0], s[1], s[2], s[3]);
    CAPTURE(sh.n); CAPTURE(sh.h); CAPTURE(sh.w); CAPTURE(sh.c);
    Vec x = distinct_values(size_t(sh.n) * sh.h * sh.w * sh.c, seed);
    const size_t y_count = size_t(sh.n) * sh.p * sh.q * sh.c;
    const Vec g = random_vector<double>(y_count, seed + 1);
    Vec y(y_count);
    std::vector<int32_t> argmax(y_count);
    auto loss = [&] {
      cpu::maxpool_forward(y.data(), argmax.data(), x.data(), sh);
      return dot(y, g);
    };
    loss();
    // Each output is the input its argmax names, and that input lies inside the window.
    for (int n = 0; n < sh.n; ++n)
      for (int p = 0; p < sh.p; ++p)
        for (int q = 0; q < sh.q; ++q)
          for (int c = 0; c < sh.c; ++c) {
            const size_t at = size_t(((n * sh.p + p) * sh.q + q) * sh.c + c);
            const int ih = argmax[at] / sh.w, iw = argmax[at] % sh.w;
            REQUIRE(std::abs(ih - 2 * p) <= 1);
            REQUIRE(std::abs(iw - 2 * q) <= 1);
            REQUIRE(y[at] == x[size_t(((n * sh.h + ih) * sh.w + iw) * sh.c + c)]);
          }
    const std::vector<int32_t> saved = argmax;
    Vec dx(x.size());
    cpu::maxpool_backward(dx.data(), g.data(), saved.data(), sh, GradMode::overwrite);
    check_close(dx, numeric_gradient(x, loss, 1e-6), 1e-9, 1e-9, "dx");
    check_modes(dx.size(), [&](double* out, GradMode m) {
      cpu::maxpool_backward(out, g.data(), saved.data(), sh, m);
    }, seed + 2, "maxpool backward");
    seed += 10;
  }
}

TEST_CASE("maxpool ties go to the first maximum in row-major window order") {
  // All inputs equal: each window must report its top-left in-image position.
  const MaxPoolShape sh = MaxPoolShape::make(2, 7, 6, 3);
  const std::vector<float> x(size_t(sh.n) * sh.h * sh.w * sh.c, 0.0f);
  std::vector<float> y(size_t(sh.n) * sh.p * sh.q * sh.c);
  std::vector<int32_t> argmax(y.size(), -1);
  cpu::maxpool_forward(y.data(), argmax.data(), x.data(), sh);
  for (int n = 0; n < sh.n; ++n)
    for (int p = 0; p < sh.p; ++p)
      for (int q = 0; q < sh.q; ++q)
        for (int c = 0; c < sh.c; ++c) {
          const int first = std::max(2 * p - 1, 0) * sh.w + std::max(2 * q - 1, 0);
          REQUIRE(argmax[size_t(((n * sh.p + p) * sh.q + q) * sh.c + c)] == first);
        }
  // A later equal value must not take over; a later larger one must.
  const MaxPoolShape one = MaxPoolShape::make(1, 3, 3, 1);
  std::vector<float> v = {1, 5, 2, 5, 0, 5, 1, 1, 1};  // window of output (1,1): rows 1..2
  std::vector<float> out(size_t(one.p) * one.q);
  std::vector<int32_t> where(out.size());
  cpu::maxpool_forward(out.data(), where.data(), v.data(), one);
  CHECK(where[0] == 1);  // (0,0) covers rows 0..1, cols 0..1: 5 at index 1 before 5 at index 3
  CHECK(where[3] == 5);  // (1,1) covers rows 1..2, cols 1..2: only index 5 holds a 5
  v[8] = 6;
  cpu::maxpool_forward(out.data(), where.data(), v.data(), one);
  CHECK(where[3] == 8);
}

// ---- determinism ------------------------------------------------------------------------

template <typename Fn>
void with_threads(int threads, Fn fn) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  fn();
  omp_set_num_threads(before);
}

// Runs BatchNorm, two convolutions and max-pool forward and backward, at sizes large enough
// for every threaded path (several BatchNorm chunks, per-thread column tiles and filter-gradient
// lanes, shared tiles with split GEMMs, col2im); returns every output.
template <typename T>
std::vector<std::vector<T>> run_all_ops() {
  std::vector<std::vector<T>> out;
  const BatchNormShape bn{5 * 33 * 35, 16};
  const auto x = random_vector<T>(size_t(bn.rows * bn.c), 600, -1.0, 3.0);
  const auto gamma = random_vector<T>(size_t(bn.c), 601, 0.5, 1.5);
  const auto beta = random_vector<T>(size_t(bn.c), 602);
  const auto dy = random_vector<T>(x.size(), 603);
  std::vector<T> y(x.size()), mean(size_t(bn.c)), invstd(size_t(bn.c));
  std::vector<T> rm(size_t(bn.c), T(0)), rv(size_t(bn.c), T(1));
  std::vector<T> dx(x.size()), dg(size_t(bn.c)), db(size_t(bn.c));
  cpu::batchnorm_train_forward(y.data(), mean.data(), invstd.data(), rm.data(), rv.data(),
                               x.data(), gamma.data(), beta.data(), bn, T(0.1), T(1e-5));
  cpu::batchnorm_backward(dx.data(), dg.data(), db.data(), dy.data(), x.data(), gamma.data(),
                          mean.data(), invstd.data(), bn, GradMode::overwrite,
                          GradMode::overwrite);
  out.insert(out.end(), {y, mean, invstd, rm, rv, dx, dg, db});

  for (const ConvShape& cs : {ConvShape::make(2, 128, 128, 16, 8, 3, 3, 1, 1),
                              ConvShape::make(3, 33, 31, 24, 20, 3, 3, 2, 1)}) {
    const auto cx = random_vector<T>(size_t(cs.x_size()), 604);
    const auto cw = random_vector<T>(size_t(cs.w_size()), 605);
    const auto cdy = random_vector<T>(size_t(cs.y_size()), 606);
    std::vector<T> cy(size_t(cs.y_size())), cdx(cx.size()), cdw(cw.size());
    cpu::conv2d_forward(cy.data(), cx.data(), cw.data(), nullptr, cs);
    cpu::conv2d_backward_data(cdx.data(), cdy.data(), cw.data(), cs, GradMode::overwrite);
    cpu::conv2d_backward_filter(cdw.data(), cdy.data(), cx.data(), cs, GradMode::overwrite);
    out.insert(out.end(), {cy, cdx, cdw});
  }

  const MaxPoolShape ps = MaxPoolShape::make(4, 64, 63, 16);
  const auto px = random_vector<T>(size_t(ps.n) * ps.h * ps.w * ps.c, 607);
  const auto pdy = random_vector<T>(size_t(ps.n) * ps.p * ps.q * ps.c, 608);
  std::vector<T> py(pdy.size()), pdx(px.size());
  std::vector<int32_t> parg(pdy.size());
  cpu::maxpool_forward(py.data(), parg.data(), px.data(), ps);
  cpu::maxpool_backward(pdx.data(), pdy.data(), parg.data(), ps, GradMode::overwrite);
  out.insert(out.end(), {py, pdx});
  return out;
}

// Doubles too: a float result can hide a thread-dependent order of double additions.
TEST_CASE_TEMPLATE("results do not depend on the number of OpenMP threads (bitwise)", T, float,
                   double) {
  std::vector<std::vector<T>> one, three;
  with_threads(1, [&] { one = run_all_ops<T>(); });
  with_threads(3, [&] { three = run_all_ops<T>(); });
  REQUIRE(one.size() == three.size());
  for (size_t i = 0; i < one.size(); ++i) {
    CAPTURE(i);
    REQUIRE(one[i].size() == three[i].size());
    CHECK(std::memcmp(one[i].data(), three[i].data(), one[i].size() * sizeof(T)) == 0);
  }
}

}  // namespace
