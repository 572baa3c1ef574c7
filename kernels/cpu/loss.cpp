// kernels/cpu/loss.cpp: reference sigmoid + batch Dice loss (forward, backward) and the
// per-image confusion counts behind the IoU metric. The math is spec section 7 and 8.
// One template serves float (the engine) and double (finite-difference checks); the sums are
// always accumulated in double.
#include "kernels/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace unetcu::cpu {
namespace {

// The Dice sums are reduced over fixed chunks of this many elements, each summed in order,
// and the chunk results are then added in chunk order. The split does not depend on the
// thread count, so the loss is bit-identical however many threads run it.
constexpr int64_t kDiceChunk = 1 << 14;

// log(sigmoid(v)) without overflow: min(v, 0) - log1p(exp(-|v|)).
template <typename T>
T log_sigmoid(T v) {
  return std::min(v, T(0)) - std::log1p(std::exp(-std::fabs(v)));
}

// smp forms p as exp(logsigmoid(x)); its derivative is p * sigmoid(-x), where sigmoid(-x) is
// formed the same way so that 1 - p never cancels to 0 for large logits.
template <typename T>
T stable_sigmoid(T v) { return std::exp(log_sigmoid(v)); }

template <typename T>
void dice_loss_forward_impl(T* loss, DiceSums* sums, const T* logits, const uint8_t* target,
                            int64_t count) {
  const int64_t n_chunks = (count + kDiceChunk - 1) / kDiceChunk;
  std::vector<DiceSums> partial(size_t(std::max<int64_t>(n_chunks, 0)));
#pragma omp parallel for schedule(static)
  for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
    const int64_t begin = chunk * kDiceChunk, end = std::min(count, begin + kDiceChunk);
    DiceSums s;
    for (int64_t i = begin; i < end; ++i) {
      const double p = double(stable_sigmoid(logits[i]));
      const double t = target[i] ? 1.0 : 0.0;
      s.sum_p += p;
      s.sum_t += t;
      s.intersection += p * t;
    }
    partial[size_t(chunk)] = s;
  }
  DiceSums total;
  for (const DiceSums& s : partial) {
    total.sum_p += s.sum_p;
    total.sum_t += s.sum_t;
    total.intersection += s.intersection;
  }
  *sums = total;
  *loss = T(dice_loss_from_sums(total));
}

template <typename T>
void dice_loss_backward_impl(T* dlogits, const T* logits, const uint8_t* target,
                             const DiceSums& sums, int64_t count, double dloss, GradMode mode) {
  const bool accumulate = mode == GradMode::accumulate;
  // score = I / max(den, eps) with den = (Sp + St)/2, differentiated the way smp's Tversky form
  // is by autograd: dscore/dI = 1/den and dscore/dSp = -I/(2 den^2). A clamped den passes no
  // gradient through den. With no positive pixel in the batch the loss is multiplied by 0,
  // so the gradient is exactly 0.
  double coef_t = 0, coef_1 = 0;  // dL/dp_i = coef_t * t_i + coef_1
  if (sums.sum_t > 0) {
    const double den = 0.5 * (sums.sum_p + sums.sum_t);
    if (den >= kDiceEps) {
      coef_t = -1.0 / den;
      coef_1 = 0.5 * sums.intersection / (den * den);
    } else {
      coef_t = -1.0 / kDiceEps;
    }
  }
  coef_t *= dloss;
  coef_1 *= dloss;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    const double dl_dp = target[i] ? coef_t + coef_1 : coef_1;
    const double dp_dx = double(stable_sigmoid(logits[i])) * double(stable_sigmoid(-logits[i]));
    const T g = T(dl_dp * dp_dx);
    dlogits[i] = accumulate ? dlogits[i] + g : g;
  }
}

}  // namespace

void dice_loss_forward(float* loss, DiceSums* sums, const float* logits, const uint8_t* target,
                       int64_t count) {
  dice_loss_forward_impl(loss, sums, logits, target, count);
}
void dice_loss_forward(double* loss, DiceSums* sums, const double* logits, const uint8_t* target,
                       int64_t count) {
  dice_loss_forward_impl(loss, sums, logits, target, count);
}

void dice_loss_backward(float* dlogits, const float* logits, const uint8_t* target,
                        const DiceSums& sums, int64_t count, float dloss, GradMode mode) {
  dice_loss_backward_impl(dlogits, logits, target, sums, count, double(dloss), mode);
}
void dice_loss_backward(double* dlogits, const double* logits, const uint8_t* target,
                        const DiceSums& sums, int64_t count, double dloss, GradMode mode) {
  dice_loss_backward_impl(dlogits, logits, target, sums, count, dloss, mode);
}

void confusion_counts(ConfusionCounts* counts, const float* logits, const uint8_t* target,
                      int n_images, int64_t pixels) {
  for (int img = 0; img < n_images; ++img) {
    const float* x = logits + int64_t(img) * pixels;
    const uint8_t* t = target + int64_t(img) * pixels;
    int64_t tp = 0, fp = 0, fn = 0;
    // Integer sums: the reduction order cannot change the result.
#pragma omp parallel for schedule(static) reduction(+ : tp, fp, fn)
    for (int64_t i = 0; i < pixels; ++i) {
      // The smp example's mask: logits.sigmoid() > 0.5 in float32, a strict comparison, with
      // sigmoid formed as PyTorch forms it. Logits in (0, ~1.2e-7) round to exactly 0.5 and
      // count as negative, so this is not the same as x > 0.
      const bool pred = 1.0f / (1.0f + std::exp(-x[i])) > 0.5f;
      const bool truth = t[i] != 0;
      tp += pred && truth;
      fp += pred && !truth;
      fn += !pred && truth;
    }
    counts[img] = ConfusionCounts{tp, fp, fn, pixels - tp - fp - fn};
  }
}

}  // namespace unetcu::cpu
