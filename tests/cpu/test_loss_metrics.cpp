// tests/cpu/test_loss_metrics.cpp: hand-checkable cases for the sigmoid + batch Dice loss, the
// per-image confusion counts and the micro-imagewise IoU (spec sections 7 and 8), and the
// Dice reduction's independence from the OpenMP thread count.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/loss.h"
#include "test_util.h"

namespace unetcu::test {
namespace {

// Pixels of one image with the given confusion counts: a positive prediction has logit +3,
// a negative one -3.
void append_image(std::vector<float>& logits, std::vector<uint8_t>& target, int tp, int fp,
                  int fn, int tn) {
  auto put = [&](int n, float logit, uint8_t t) {
    for (int i = 0; i < n; ++i) { logits.push_back(logit); target.push_back(t); }
  };
  put(tp, 3.0f, 1);
  put(fp, 3.0f, 0);
  put(fn, -3.0f, 1);
  put(tn, -3.0f, 0);
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

TEST_CASE("Dice by hand: p = 0.5 everywhere, half the pixels positive") {
  // p = 0.5, t = {1, 1, 0, 0}: Sp = 2, St = 2, I = 1, den = 2, loss = 1 - 1/2 = 0.5.
  // dL/dp = 2I/S^2 - 2t/S with S = 4: 1/8 - t/2; dp/dx = 1/4.
  // So dL/dx = -3/32 for t = 1 and 1/32 for t = 0.
  const std::vector<float> x(4, 0.0f);
  const std::vector<uint8_t> t = {1, 1, 0, 0};
  float loss = -1;
  DiceSums sums;
  cpu::dice_loss_forward(&loss, &sums, x.data(), t.data(), 4);
  // float32 sigmoid(0) goes through log1p and exp: within a few ulp of 0.5.
  CHECK(sums.sum_p == doctest::Approx(2.0).epsilon(1e-6));
  CHECK(sums.sum_t == 2.0);
  CHECK(sums.intersection == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(loss == doctest::Approx(0.5).epsilon(1e-6));

  std::vector<float> dx(4, std::numeric_limits<float>::quiet_NaN());
  cpu::dice_loss_backward(dx.data(), x.data(), t.data(), sums, 4, 1.0f, GradMode::overwrite);
  check_close(dx, std::vector<double>{-3.0 / 32, -3.0 / 32, 1.0 / 32, 1.0 / 32}, 0, 1e-6,
              "dice gradient by hand");

  // The upstream gradient scales it; 2 is a power of two, so the scaling is exact.
  std::vector<float> dx2(4);
  cpu::dice_loss_backward(dx2.data(), x.data(), t.data(), sums, 4, 2.0f, GradMode::overwrite);
  for (size_t i = 0; i < 4; ++i) CHECK(dx2[i] == 2.0f * dx[i]);
}

TEST_CASE("Dice by hand: a confident, correct prediction has a loss near 0") {
  // Logits of +-20: p is 1 or 2e-9, so Dice = 2 * 2 / (2 + 2 + 4e-9): loss ~ 1e-9.
  const std::vector<float> x = {20.0f, 20.0f, -20.0f, -20.0f};
  const std::vector<uint8_t> t = {1, 1, 0, 0};
  float loss = -1;
  DiceSums sums;
  cpu::dice_loss_forward(&loss, &sums, x.data(), t.data(), 4);
  CHECK(loss >= 0.0f);
  CHECK(loss < 1e-8f);

  // p rounds to 1.0f at x = 20, yet dp/dx = p * sigmoid(-x) = 2.06e-9 must not vanish as the
  // cancelling 1 - p would make it. dL/dp = 2I/S^2 - 2t/S with I = 2, S = 4: -1/4 for t = 1,
  // +1/4 for t = 0, so dL/dx = -+ sigmoid(20) * sigmoid(-20) / 4.
  std::vector<float> dx(4);
  cpu::dice_loss_backward(dx.data(), x.data(), t.data(), sums, 4, 1.0f, GradMode::overwrite);
  const double s = 1.0 / (1.0 + std::exp(20.0));  // sigmoid(-20)
  const double mag = 0.25 * (1.0 - s) * s;
  check_close(dx, std::vector<double>{-mag, -mag, mag, mag}, 0, 1e-5, "saturated dice gradient");
}

TEST_CASE("Dice: a batch without positive pixels gives loss 0 and gradient exactly 0") {
  const int64_t count = 3 * 9 * 7;
  const auto x = random_vector<float>(count, 201, -5.0, 5.0);
  const std::vector<uint8_t> t(count, 0);
  float loss = std::numeric_limits<float>::quiet_NaN();
  DiceSums sums;
  cpu::dice_loss_forward(&loss, &sums, x.data(), t.data(), count);
  CHECK(sums.sum_t == 0.0);
  CHECK(sums.sum_p > 0.0);  // the predictions are not empty: only the mask zeroes the loss
  CHECK(same_bits(loss, 0.0f));

  std::vector<float> dx(count, std::numeric_limits<float>::quiet_NaN());
  cpu::dice_loss_backward(dx.data(), x.data(), t.data(), sums, count, 1.0f, GradMode::overwrite);
  for (float g : dx) REQUIRE(same_bits(g, 0.0f));

  // Accumulating an exact zero leaves earlier gradients bit for bit.
  const auto prior = random_vector<float>(count, 202);
  auto acc = prior;
  cpu::dice_loss_backward(acc.data(), x.data(), t.data(), sums, count, 1.0f,
                          GradMode::accumulate);
  for (int64_t i = 0; i < count; ++i) REQUIRE(same_bits(acc[i], prior[i]));
}

TEST_CASE("Dice: the result does not depend on the number of OpenMP threads") {
  // Several reduction chunks plus a ragged end.
  const int64_t count = 3 * 16384 + 123;
  const auto x = random_vector<float>(count, 211, -4.0, 4.0);
  const auto t = random_binary(count, 212, 0.3);
  const int saved = omp_get_max_threads();

  float loss1 = 0;
  DiceSums sums1;
  std::vector<float> dx1(count);
  omp_set_num_threads(1);
  cpu::dice_loss_forward(&loss1, &sums1, x.data(), t.data(), count);
  cpu::dice_loss_backward(dx1.data(), x.data(), t.data(), sums1, count, 1.0f,
                          GradMode::overwrite);
  for (int threads : {2, 3, 7}) {
    CAPTURE(threads);
    omp_set_num_threads(threads);
    float loss = 0;
    DiceSums sums;
    std::vector<float> dx(count);
    cpu::dice_loss_forward(&loss, &sums, x.data(), t.data(), count);
    cpu::dice_loss_backward(dx.data(), x.data(), t.data(), sums, count, 1.0f,
                            GradMode::overwrite);
    CHECK(std::memcmp(&sums, &sums1, sizeof sums) == 0);
    CHECK(same_bits(loss, loss1));
    CHECK(std::memcmp(dx.data(), dx1.data(), dx.size() * sizeof(float)) == 0);
  }
  omp_set_num_threads(saved);
}

TEST_CASE("confusion counts by hand, and spec's IoU example (2/12, 5/14, 1) -> 0.507937") {
  std::vector<float> x;
  std::vector<uint8_t> t;
  append_image(x, t, 2, 4, 6, 4);   // IoU 2/12
  append_image(x, t, 5, 5, 4, 2);   // IoU 5/14
  append_image(x, t, 0, 0, 0, 16);  // empty GT, empty prediction: 0/0 -> 1
  const int64_t pixels = 16;

  std::vector<ConfusionCounts> c(3);
  cpu::confusion_counts(c.data(), x.data(), t.data(), 3, pixels);
  const int64_t want[3][4] = {{2, 4, 6, 4}, {5, 5, 4, 2}, {0, 0, 0, 16}};
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(c[i].tp == want[i][0]);
    CHECK(c[i].fp == want[i][1]);
    CHECK(c[i].fn == want[i][2]);
    CHECK(c[i].tn == want[i][3]);
  }
  CHECK(image_iou(c[2]) == 1.0);
  const double mean_iou = (image_iou(c[0]) + image_iou(c[1]) + image_iou(c[2])) / 3;
  CHECK(mean_iou == doctest::Approx(0.507937).epsilon(1e-6));
  CHECK(image_dice(c[0]) == doctest::Approx(4.0 / 14.0));
}

TEST_CASE("IoU is 0 for an empty GT with a non-empty prediction, and the reverse") {
  std::vector<float> x;
  std::vector<uint8_t> t;
  append_image(x, t, 0, 3, 0, 6);  // empty GT, 3 false positives
  append_image(x, t, 0, 0, 3, 6);  // 3 positives, none predicted
  std::vector<ConfusionCounts> c(2);
  cpu::confusion_counts(c.data(), x.data(), t.data(), 2, 9);
  CHECK(c[0].fp == 3);
  CHECK(c[1].fn == 3);
  CHECK(image_iou(c[0]) == 0.0);
  CHECK(image_iou(c[1]) == 0.0);
}

TEST_CASE("the prediction threshold is float32 sigmoid(x) > 0.5, strictly") {
  // sigmoid(0) is exactly 0.5: negative. For 1e-8, exp(-1e-8) rounds to 1.0f in float32, so
  // sigmoid is again exactly 0.5: negative, although the logit is positive. 1e-3 is positive.
  const std::vector<float> x = {0.0f, -0.0f, 1e-8f, 1e-3f, -1e-3f, 5.0f};
  const std::vector<uint8_t> t(x.size(), 1);
  ConfusionCounts c;
  cpu::confusion_counts(&c, x.data(), t.data(), 1, int64_t(x.size()));
  CHECK(c.tp == 2);  // 1e-3 and 5
  CHECK(c.fn == 4);
  CHECK(c.fp == 0);
  CHECK(c.tn == 0);
}

}  // namespace unetcu::test
