// kernels/cpu/concat.cpp: reference channel concatenation of two NHWC tensors and its split.
// One template serves float (the engine) and double (finite-difference checks).
#include "kernels/concat.h"

namespace unetcu::cpu {
namespace {

template <typename T>
void concat_forward_impl(T* y, const T* a, const T* b, const ConcatShape& sh) {
  const int64_t ca = sh.ca, cb = sh.cb, cy = ca + cb;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < sh.rows; ++row) {
    if (a)
      for (int64_t k = 0; k < ca; ++k) y[row * cy + k] = a[row * ca + k];
    for (int64_t k = 0; k < cb; ++k) y[row * cy + ca + k] = b[row * cb + k];
  }
}

// Copies one channel slice of dy (offset, width) into d, honouring the gradient mode.
template <typename T>
void split_slice(T* d, const T* dy, int64_t rows, int64_t cy, int64_t offset, int64_t width,
                 GradMode mode) {
  const bool accumulate = mode == GradMode::accumulate;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t k = 0; k < width; ++k) {
      T g = dy[row * cy + offset + k];
      d[row * width + k] = accumulate ? d[row * width + k] + g : g;
    }
  }
}

template <typename T>
void concat_backward_impl(T* da, T* db, const T* dy, const ConcatShape& sh, GradMode mode_a,
                          GradMode mode_b) {
  const int64_t cy = int64_t(sh.ca) + sh.cb;
  if (da) split_slice(da, dy, sh.rows, cy, 0, sh.ca, mode_a);
  if (db) split_slice(db, dy, sh.rows, cy, sh.ca, sh.cb, mode_b);
}

}  // namespace

void concat_forward(float* y, const float* a, const float* b, const ConcatShape& sh) {
  concat_forward_impl(y, a, b, sh);
}
void concat_forward(double* y, const double* a, const double* b, const ConcatShape& sh) {
  concat_forward_impl(y, a, b, sh);
}

void concat_backward(float* da, float* db, const float* dy, const ConcatShape& sh,
                     GradMode mode_a, GradMode mode_b) {
  concat_backward_impl(da, db, dy, sh, mode_a, mode_b);
}
void concat_backward(double* da, double* db, const double* dy, const ConcatShape& sh,
                     GradMode mode_a, GradMode mode_b) {
  concat_backward_impl(da, db, dy, sh, mode_a, mode_b);
}

}  // namespace unetcu::cpu
