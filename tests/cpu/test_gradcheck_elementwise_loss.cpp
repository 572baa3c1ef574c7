// tests/cpu/test_gradcheck_elementwise_loss.cpp: the backward passes of relu, add, add+relu,
// nearest 2x upsample, concat and the sigmoid + batch Dice loss checked against central finite
// differences of their forward passes, in double precision.
//
// Each op y = f(x) is reduced to the scalar L = sum_i w_i y_i with random weights w, so that
// dL/dx = backward(dy = w): one finite-difference pass checks the whole Jacobian-vector
// product. Every backward is checked in both gradient modes.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "kernels/concat.h"
#include "kernels/elementwise.h"
#include "kernels/loss.h"
#include "kernels/upsample.h"
#include "test_util.h"

namespace unetcu::test {
namespace {

using Vec = std::vector<double>;

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of `loss` with respect to every element of x (x is restored).
Vec numeric_grad(Vec& x, const std::function<double()>& loss, double h) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i];
    x[i] = xi + h;
    const double up = loss();
    x[i] = xi - h;
    const double down = loss();
    x[i] = xi;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// Calls backward(dx, mode) in both modes and compares with `want`: overwrite into NaN, and
// accumulate onto random earlier values (expected: prior + want).
void check_modes(const Vec& want, uint64_t seed, double atol, double rtol, const std::string& what,
                 const std::function<void(double*, GradMode)>& backward) {
  Vec dx(want.size(), std::nan(""));
  backward(dx.data(), GradMode::overwrite);
  check_close(dx, want, atol, rtol, what + " (overwrite)");

  const Vec prior = random_vector<double>(want.size(), seed);
  Vec acc = prior, want_acc(want.size());
  for (size_t i = 0; i < want.size(); ++i) want_acc[i] = prior[i] + want[i];
  backward(acc.data(), GradMode::accumulate);
  check_close(acc, want_acc, atol, rtol, what + " (accumulate)");
}

// Moves values away from 0 so that no finite-difference step crosses ReLU's kink.
void keep_off_kink(Vec& v, double margin) {
  for (double& x : v)
    if (std::fabs(x) < margin) x = x < 0 ? x - margin : x + margin;
}

// Piecewise-linear ops: with the kink avoided, central differences are exact up to rounding,
// about 1e-16 * |L| / h = 1e-16 * 10 / 1e-6 = 1e-9. A wrong gradient is off by O(|w|) = O(0.1).
constexpr double kLinearH = 1e-6, kLinearAtol = 1e-7, kLinearRtol = 1e-7;

}  // namespace

TEST_CASE("gradcheck: relu") {
  const int64_t count = 97;
  Vec x = random_vector<double>(count, 101);
  keep_off_kink(x, 1e-2);
  const Vec w = random_vector<double>(count, 102);
  Vec y(count);
  auto loss = [&] {
    cpu::relu_forward(y.data(), x.data(), count);
    return dot(w, y);
  };
  const Vec want = numeric_grad(x, loss, kLinearH);
  cpu::relu_forward(y.data(), x.data(), count);
  check_modes(want, 103, kLinearAtol, kLinearRtol, "relu", [&](double* dx, GradMode mode) {
    cpu::relu_backward(dx, w.data(), y.data(), count, mode);
  });
}

TEST_CASE("gradcheck: add and add+relu") {
  const int64_t count = 83;
  Vec a = random_vector<double>(count, 111);
  Vec b = random_vector<double>(count, 112);
  // Keep a + b off ReLU's kink too.
  for (int64_t i = 0; i < count; ++i)
    if (std::fabs(a[i] + b[i]) < 1e-2) a[i] += 0.05;
  const Vec w = random_vector<double>(count, 113);
  Vec y(count);

  // add has no backward kernel: the engine hands dy to both operands. So the check is that the
  // forward's Jacobian with respect to each operand is the identity.
  auto add_loss = [&] {
    cpu::add_forward(y.data(), a.data(), b.data(), count);
    return dot(w, y);
  };
  check_close(numeric_grad(a, add_loss, kLinearH), w, kLinearAtol, kLinearRtol, "add d/da");
  check_close(numeric_grad(b, add_loss, kLinearH), w, kLinearAtol, kLinearRtol, "add d/db");

  // add+relu's backward is relu_backward with the fused output, handed to both operands.
  auto add_relu_loss = [&] {
    cpu::add_relu_forward(y.data(), a.data(), b.data(), count);
    return dot(w, y);
  };
  const Vec want_a = numeric_grad(a, add_relu_loss, kLinearH);
  const Vec want_b = numeric_grad(b, add_relu_loss, kLinearH);
  cpu::add_relu_forward(y.data(), a.data(), b.data(), count);
  auto backward = [&](double* d, GradMode mode) {
    cpu::relu_backward(d, w.data(), y.data(), count, mode);
  };
  check_modes(want_a, 114, kLinearAtol, kLinearRtol, "add+relu d/da", backward);
  check_modes(want_b, 115, kLinearAtol, kLinearRtol, "add+relu d/db", backward);
}

TEST_CASE("gradcheck: nearest 2x upsample") {
  for (const UpsampleShape sh : {UpsampleShape{2, 3, 5, 3}, UpsampleShape{1, 1, 1, 2}}) {
    CAPTURE(sh.h); CAPTURE(sh.w); CAPTURE(sh.c);
    const size_t in_count = size_t(sh.n) * sh.h * sh.w * sh.c;
    Vec x = random_vector<double>(in_count, 121);
    const Vec w = random_vector<double>(4 * in_count, 122);
    Vec y(4 * in_count);
    auto loss = [&] {
      cpu::upsample2x_forward(y.data(), x.data(), sh);
      return dot(w, y);
    };
    check_modes(numeric_grad(x, loss, kLinearH), 123, kLinearAtol, kLinearRtol, "upsample",
                [&](double* dx, GradMode mode) {
                  cpu::upsample2x_backward(dx, w.data(), sh, mode);
                });
  }
}

TEST_CASE("gradcheck: channel concat") {
  const ConcatShape sh{2 * 3 * 5, 4, 3};
  Vec a = random_vector<double>(size_t(sh.rows) * sh.ca, 131);
  Vec b = random_vector<double>(size_t(sh.rows) * sh.cb, 132);
  const Vec w = random_vector<double>(size_t(sh.rows) * (sh.ca + sh.cb), 133);
  Vec y(w.size());
  auto loss = [&] {
    cpu::concat_forward(y.data(), a.data(), b.data(), sh);
    return dot(w, y);
  };
  check_modes(numeric_grad(a, loss, kLinearH), 134, kLinearAtol, kLinearRtol, "concat d/da",
              [&](double* da, GradMode mode) {
                cpu::concat_backward(da, nullptr, w.data(), sh, mode, mode);
              });
  check_modes(numeric_grad(b, loss, kLinearH), 135, kLinearAtol, kLinearRtol, "concat d/db",
              [&](double* db, GradMode mode) {
                cpu::concat_backward(nullptr, db, w.data(), sh, mode, mode);
              });
}

// The Dice loss is smooth for moderate logits. Step 1e-5: truncation h^2/6 * |L'''| (below
// 1e-11 here) and rounding 1e-16 / h = 1e-11, against gradients of about 1e-3..1e-2, so a
// relative tolerance of 1e-6 (plus 1e-9 absolute for the smallest) leaves a wide margin while a
// wrong coefficient (a missing factor 2, a sign, the p(1-p) factor) is off by O(1).
TEST_CASE("gradcheck: sigmoid + batch Dice loss") {
  struct Case { int64_t count; double p_one; double range; double dloss; };
  const Case cases[] = {{2 * 6 * 5, 0.4, 3.0, 1.0},   // mixed targets, two images
                        {3 * 4 * 4, 0.9, 2.0, 1.0},   // mostly positive
                        {1 * 7 * 3, 0.1, 4.0, 0.37},  // few positives, scaled upstream gradient
                        {1, 1.0, 1.0, 1.0}};          // one positive pixel
  for (const Case& c : cases) {
    CAPTURE(c.count); CAPTURE(c.p_one); CAPTURE(c.dloss);
    Vec x = random_vector<double>(size_t(c.count), 141 + c.count, -c.range, c.range);
    auto t = random_binary(size_t(c.count), 142 + c.count, c.p_one);
    if (c.count == 1) t[0] = 1;
    auto loss = [&] {
      double value = 0;
      DiceSums sums;
      cpu::dice_loss_forward(&value, &sums, x.data(), t.data(), c.count);
      return c.dloss * value;
    };
    const Vec want = numeric_grad(x, loss, 1e-5);
    double value = 0;
    DiceSums sums;
    cpu::dice_loss_forward(&value, &sums, x.data(), t.data(), c.count);
    check_modes(want, 143 + c.count, 1e-9, 1e-6, "dice", [&](double* dx, GradMode mode) {
      cpu::dice_loss_backward(dx, x.data(), t.data(), sums, c.count, c.dloss, mode);
    });
  }
}

}  // namespace unetcu::test
