// kernels/cpu/pool.cpp: reference MaxPool 3x3 / stride 2 / pad 1 over NHWC, in float and in
// double (the double build serves the gradient checks).
//
// Padding acts as -inf, so it never wins. The window is scanned in row-major order and a value
// replaces the current maximum only when strictly greater (or NaN, which PyTorch propagates),
// so ties go to the first maximum as in PyTorch. argmax is ih * w + iw within the image.
#include "kernels/pool.h"

#include <algorithm>
#include <limits>

namespace unetcu::cpu {
namespace {

constexpr int kWindow = 3, kStride = 2, kPad = 1;

// Below this many elements a pass runs on one thread: a parallel region's start and end cost
// more than such a pass.
constexpr int64_t kMinParallelWork = int64_t(1) << 16;

template <typename T>
void forward_impl(T* y, int32_t* argmax, const T* x, const MaxPoolShape& sh) {
  const int c_count = sh.c;
  const int64_t rows = int64_t(sh.n) * sh.p;
#pragma omp parallel for schedule(static) if (rows * sh.q * c_count >= kMinParallelWork)
  for (int64_t row = 0; row < rows; ++row) {
    const int img = int(row / sh.p), op = int(row % sh.p);
    const T* x_img = x + int64_t(img) * sh.h * sh.w * c_count;
    const int ih0 = std::max(op * kStride - kPad, 0);
    const int ih1 = std::min(op * kStride - kPad + kWindow, sh.h);
    for (int oq = 0; oq < sh.q; ++oq) {
      const int iw0 = std::max(oq * kStride - kPad, 0);
      const int iw1 = std::min(oq * kStride - kPad + kWindow, sh.w);
      T* best = y + (row * sh.q + oq) * c_count;
      int32_t* where = argmax + (row * sh.q + oq) * c_count;
      // Start from -inf at the first in-image position, as PyTorch does, so an all -inf
      // window still reports a valid index.
      std::fill(best, best + c_count, -std::numeric_limits<T>::infinity());
      std::fill(where, where + c_count, int32_t(ih0 * sh.w + iw0));
      for (int ih = ih0; ih < ih1; ++ih) {
        for (int iw = iw0; iw < iw1; ++iw) {
          const T* v = x_img + (int64_t(ih) * sh.w + iw) * c_count;
          const int32_t pos = ih * sh.w + iw;
          for (int c = 0; c < c_count; ++c) {
            const bool take = v[c] > best[c] || v[c] != v[c];
            best[c] = take ? v[c] : best[c];
            where[c] = take ? pos : where[c];
          }
        }
      }
    }
  }
}

// Written as a gather: each input pixel sums dy over the (at most 2x2) windows that cover it
// and chose it, in row-major window order. Every dx element is written once by one thread.
template <typename T>
void backward_impl(T* dx, const T* dy, const int32_t* argmax, const MaxPoolShape& sh,
                   GradMode mode) {
  const int c_count = sh.c;
  const int64_t rows = int64_t(sh.n) * sh.h;
#pragma omp parallel for schedule(static) if (rows * sh.w * c_count >= kMinParallelWork)
  for (int64_t row = 0; row < rows; ++row) {
    const int img = int(row / sh.h), ih = int(row % sh.h);
    // Windows op whose rows op*2-1 .. op*2+1 contain ih.
    const int op0 = std::max((ih + kPad - kWindow + kStride) / kStride, 0);
    const int op1 = std::min((ih + kPad) / kStride, sh.p - 1);
    for (int iw = 0; iw < sh.w; ++iw) {
      const int oq0 = std::max((iw + kPad - kWindow + kStride) / kStride, 0);
      const int oq1 = std::min((iw + kPad) / kStride, sh.q - 1);
      const int32_t pos = ih * sh.w + iw;
      T* out = dx + (row * sh.w + iw) * c_count;
      if (mode == GradMode::overwrite) std::fill(out, out + c_count, T(0));
      for (int op = op0; op <= op1; ++op) {
        for (int oq = oq0; oq <= oq1; ++oq) {
          const int64_t at = ((int64_t(img) * sh.p + op) * sh.q + oq) * c_count;
          const T* g = dy + at;
          const int32_t* a = argmax + at;
          // g[c] is loaded whether or not it was chosen: a load under the condition is control
          // flow, and the loop would not vectorise.
          for (int c = 0; c < c_count; ++c) {
            const T v = g[c];
            out[c] += a[c] == pos ? v : T(0);
          }
        }
      }
    }
  }
}

}  // namespace

void maxpool_forward(float* y, int32_t* argmax, const float* x, const MaxPoolShape& sh) {
  forward_impl(y, argmax, x, sh);
}
void maxpool_forward(double* y, int32_t* argmax, const double* x, const MaxPoolShape& sh) {
  forward_impl(y, argmax, x, sh);
}

void maxpool_backward(float* dx, const float* dy, const int32_t* argmax, const MaxPoolShape& sh,
                      GradMode mode) {
  backward_impl(dx, dy, argmax, sh, mode);
}
void maxpool_backward(double* dx, const double* dy, const int32_t* argmax,
                      const MaxPoolShape& sh, GradMode mode) {
  backward_impl(dx, dy, argmax, sh, mode);
}

}  // namespace unetcu::cpu
