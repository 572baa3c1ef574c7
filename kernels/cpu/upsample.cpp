// kernels/cpu/upsample.cpp: reference nearest-neighbour 2x upsampling, NHWC.
// One template serves float (the engine) and double (finite-difference checks).
#include "kernels/upsample.h"

namespace unetcu::cpu {
namespace {

template <typename T>
void upsample2x_forward_impl(T* y, const T* x, const UpsampleShape& sh) {
  const int64_t c = sh.c, pitch = sh.out_pitch(), wo = 2 * int64_t(sh.w), ho = 2 * int64_t(sh.h);
  // One output row (n, oy) per iteration: each reads one input row.
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < int64_t(sh.n) * ho; ++row) {
    const int64_t n = row / ho, oy = row % ho;
    const T* src = x + (n * sh.h + oy / 2) * sh.w * c;
    T* dst = y + row * wo * pitch;
    for (int64_t ox = 0; ox < wo; ++ox)
      for (int64_t k = 0; k < c; ++k) dst[ox * pitch + k] = src[(ox / 2) * c + k];
  }
}

template <typename T>
void upsample2x_backward_impl(T* dx, const T* dy, const UpsampleShape& sh, GradMode mode) {
  const int64_t c = sh.c, pitch = sh.out_pitch(), w = sh.w, wo = 2 * w;
  const bool accumulate = mode == GradMode::accumulate;
  // One input row (n, iy) per iteration; it owns its 2x2 blocks, so no two threads write the
  // same dx. The block is summed row-major (top-left, top-right, bottom-left, bottom-right),
  // the order PyTorch's CPU backward adds them in.
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < int64_t(sh.n) * sh.h; ++row) {
    const int64_t n = row / sh.h, iy = row % sh.h;
    const T* top = dy + ((n * 2 * sh.h) + 2 * iy) * wo * pitch;
    const T* bottom = top + wo * pitch;
    T* out = dx + row * w * c;
    for (int64_t ix = 0; ix < w; ++ix) {
      for (int64_t k = 0; k < c; ++k) {
        const int64_t left = 2 * ix * pitch + k, right = left + pitch;
        T g = top[left] + top[right] + bottom[left] + bottom[right];
        out[ix * c + k] = accumulate ? out[ix * c + k] + g : g;
      }
    }
  }
}

}  // namespace

void upsample2x_forward(float* y, const float* x, const UpsampleShape& sh) {
  upsample2x_forward_impl(y, x, sh);
}
void upsample2x_forward(double* y, const double* x, const UpsampleShape& sh) {
  upsample2x_forward_impl(y, x, sh);
}

void upsample2x_backward(float* dx, const float* dy, const UpsampleShape& sh, GradMode mode) {
  upsample2x_backward_impl(dx, dy, sh, mode);
}
void upsample2x_backward(double* dx, const double* dy, const UpsampleShape& sh, GradMode mode) {
  upsample2x_backward_impl(dx, dy, sh, mode);
}

}  // namespace unetcu::cpu
