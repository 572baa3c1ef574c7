// kernels/cpu/loss.cpp: reference sigmoid + batch Dice loss (forward, backward) and the
// per-image confusion counts behind the IoU metric. The math is spec section 7 and 8.
// One template serves float (the engine) and double (finite-difference checks), all but the
// exp (exp_neg_abs: written out for float, libm's for double); the sums are always
// accumulated in double.
#include "kernels/loss.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/target_clones.h"

namespace unetcu::cpu {
namespace {

// The Dice sums are reduced over fixed chunks of this many elements, and the chunk results
// are then added in chunk order. The split does not depend on the thread count, so the loss
// is bit-identical however many threads run it.
constexpr int64_t kDiceChunk = 1 << 14;

// Logits go through in blocks of this many: first exp(-|x|) of the whole block, then the rest
// of the arithmetic, each a loop free of calls and branches that vectorises.
constexpr int64_t kBlock = 256;

// Within a chunk, element k of a block is added to partial sum k % kLanes, and the lanes are
// added in lane order at the end of the chunk: independent additions vectorise where one
// running sum could not (and its rounding error would grow with the chunk's length).
constexpr int kLanes = 8;

// e[k] = exp(-|x[k]|) for k < n, in float. std::exp would be a libm call per element, the one
// thing left that cannot vectorise, so it is written out: exp(y) = 2^k * exp(r) with
// k = round(y / ln 2) and |r| <= ln(2)/2, exp(r) from its Taylor series to degree 7
// (truncation below 1e-8 relative), 2^k from exponent bits, applied in two halves so that
// subnormal results (y < -87.3) are rounded once. Checked over every float in [-104, 0]
// against exp in double rounded to float: 99.2% the same, the rest 1 ulp apart. |x| is clamped
// to 104 as an integer (exp(-104) rounds to 0), which keeps k in range for inf and NaN too;
// a NaN goes into r instead, so that it comes out as NaN.
UNETCU_TARGET_CLONES("avx2")
void exp_neg_abs(float* e, const float* x, int64_t n) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // 13 significant bits: k * kLn2Hi is exact
  constexpr float kLn2Lo = 1.42860682030941723212e-6f;  // ln 2 - kLn2Hi
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to int
  constexpr uint32_t kClampBits = 0x42D00000u;  // 104.0f
  // simd: without it GCC folds the clamped case to a constant behind a branch, and the loop
  // stays scalar.
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[i];
    uint32_t bits;
    std::memcpy(&bits, &xi, sizeof bits);
    bits &= 0x7fffffffu;
    const bool is_nan = bits > 0x7f800000u;
    bits = std::min(bits, kClampBits);
    float abs_x;
    std::memcpy(&abs_x, &bits, sizeof abs_x);
    const float y = -abs_x;
    const float kf = (y * kLog2e + kRound) - kRound;
    const float r = ((is_nan ? xi : y) - kf * kLn2Hi) - kf * kLn2Lo;
    float poly = 1.0f / 5040;
    poly = poly * r + 1.0f / 720;
    poly = poly * r + 1.0f / 120;
    poly = poly * r + 1.0f / 24;
    poly = poly * r + 1.0f / 6;
    poly = poly * r + 0.5f;
    poly = poly * r + 1.0f;
    poly = poly * r + 1.0f;
    const int32_t k = int32_t(kf);  // in [-150, 0]
    const int32_t k1 = k / 2, k2 = k - k1;  // each >= -75: 2^k1 and 2^k2 are normal floats
    const uint32_t bits1 = uint32_t(k1 + 127) << 23, bits2 = uint32_t(k2 + 127) << 23;
    float scale1, scale2;
    std::memcpy(&scale1, &bits1, sizeof scale1);
    std::memcpy(&scale2, &bits2, sizeof scale2);
    e[i] = poly * scale1 * scale2;
  }
}

// The double build serves the finite-difference checks, which need exp to double precision.
void exp_neg_abs(double* e, const double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) e[i] = std::exp(-std::fabs(x[i]));
}

// p[k] = sigmoid(x[k]) and q[k] = sigmoid(-x[k]) for k < n, from one exp and one division.
// smp forms p as exp(logsigmoid(x)), and autograd differentiates that as p * sigmoid(-x); with
// e = exp(-|x|) <= 1, sigmoid(|x|) = 1/(1+e) and sigmoid(-|x|) = e/(1+e) give both without
// overflow and without the cancelling 1 - p, which would round to 0 for large logits. The
// values are those of exp(logsigmoid(x)) within a few float ulp; kernels/cuda/loss.cu forms
// them the same way.
template <typename T>
void sigmoid_pairs(T* p, T* q, const T* x, int64_t n) {
  exp_neg_abs(q, x, n);
  for (int64_t k = 0; k < n; ++k) {
    const T e = q[k];
    const T big = T(1) / (T(1) + e);
    const T small = e * big;
    p[k] = x[k] >= T(0) ? big : small;
    q[k] = x[k] >= T(0) ? small : big;
  }
}

template <typename T>
void dice_loss_forward_impl(T* loss, DiceSums* sums, const T* logits, const uint8_t* target,
                            int64_t count) {
  const int64_t n_chunks = (count + kDiceChunk - 1) / kDiceChunk;
  std::vector<DiceSums> partial(size_t(std::max<int64_t>(n_chunks, 0)));
#pragma omp parallel for schedule(static)
  for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
    const int64_t begin = chunk * kDiceChunk, end = std::min(count, begin + kDiceChunk);
    double lane_p[kLanes] = {}, lane_t[kLanes] = {}, lane_pt[kLanes] = {};
    T p[kBlock], q[kBlock];
    double t[kBlock];
    for (int64_t block = begin; block < end; block += kBlock) {
      const int64_t n = std::min(kBlock, end - block);
      sigmoid_pairs(p, q, logits + block, n);
      for (int64_t k = 0; k < n; ++k) t[k] = double(target[block + k] != 0);
      // A ragged block is padded to whole lanes with zeros, which add nothing.
      const int64_t padded = (n + kLanes - 1) / kLanes * kLanes;
      for (int64_t k = n; k < padded; ++k) {
        p[k] = T(0);
        t[k] = 0.0;
      }
      for (int64_t k = 0; k < padded; k += kLanes) {
        for (int lane = 0; lane < kLanes; ++lane) {
          const double pk = double(p[k + lane]);
          lane_p[lane] += pk;
          lane_t[lane] += t[k + lane];
          lane_pt[lane] += pk * t[k + lane];
        }
      }
    }
    DiceSums s;
    for (int lane = 0; lane < kLanes; ++lane) {
      s.sum_p += lane_p[lane];
      s.sum_t += lane_t[lane];
      s.intersection += lane_pt[lane];
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
  const int64_t n_blocks = (count + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < n_blocks; ++block) {
    const int64_t begin = block * kBlock, n = std::min(kBlock, count - begin);
    T p[kBlock], q[kBlock];
    double t[kBlock];
    sigmoid_pairs(p, q, logits + begin, n);
    for (int64_t k = 0; k < n; ++k) t[k] = double(target[begin + k] != 0);
    T* dx = dlogits + begin;
    // The mode is chosen outside the loops, and t_i enters as a factor 0 or 1 (exactly
    // coef_1 or coef_t + coef_1): branches there would keep the loops scalar.
    auto grad = [&](int64_t k) {
      const double dl_dp = coef_1 + coef_t * t[k];
      return T(dl_dp * (double(p[k]) * double(q[k])));
    };
    if (accumulate) {
      for (int64_t k = 0; k < n; ++k) dx[k] += grad(k);
    } else {
      for (int64_t k = 0; k < n; ++k) dx[k] = grad(k);
    }
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
      const bool pred = predicted_positive(x[i]);  // kernels/loss.h
      const bool truth = t[i] != 0;
      tp += pred && truth;
      fp += pred && !truth;
      fn += !pred && truth;
    }
    counts[img] = ConfusionCounts{tp, fp, fn, pixels - tp - fp - fn};
  }
}

}  // namespace unetcu::cpu
