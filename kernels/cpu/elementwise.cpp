// kernels/cpu/elementwise.cpp: reference relu, add and add+relu over flat arrays.
// One template serves float (the engine) and double (finite-difference checks).
#include "kernels/elementwise.h"

namespace unetcu::cpu {
namespace {

// `v < 0 ? 0 : v` rather than `v > 0 ? v : 0`: a NaN passes through, as in PyTorch's relu,
// so a diverging run shows NaN instead of hiding it behind zeros.
template <typename T>
T relu(T v) { return v < T(0) ? T(0) : v; }

template <typename T>
void relu_forward_impl(T* y, const T* x, int64_t count) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) y[i] = relu(x[i]);
}

// dy is read whatever y's sign, and the mode is decided outside the loop: a load that depends
// on y, or a branch on the mode, is control flow that keeps the compiler from vectorising (the
// scalar loop mispredicts on every other element and ran 15-25x slower than LibTorch).
template <typename T>
void relu_backward_impl(T* dx, const T* dy, const T* y, int64_t count, GradMode mode) {
  if (mode == GradMode::accumulate) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; ++i) {
      const T d = dy[i];
      dx[i] += y[i] > T(0) ? d : T(0);
    }
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; ++i) {
      const T d = dy[i];
      dx[i] = y[i] > T(0) ? d : T(0);
    }
  }
}

template <typename T>
void add_forward_impl(T* y, const T* a, const T* b, int64_t count) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) y[i] = a[i] + b[i];
}

template <typename T>
void add_relu_forward_impl(T* y, const T* a, const T* b, int64_t count) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) y[i] = relu(a[i] + b[i]);
}

}  // namespace

void relu_forward(float* y, const float* x, int64_t count) { relu_forward_impl(y, x, count); }
void relu_forward(double* y, const double* x, int64_t count) { relu_forward_impl(y, x, count); }

void relu_backward(float* dx, const float* dy, const float* y, int64_t count, GradMode mode) {
  relu_backward_impl(dx, dy, y, count, mode);
}
void relu_backward(double* dx, const double* dy, const double* y, int64_t count, GradMode mode) {
  relu_backward_impl(dx, dy, y, count, mode);
}

void add_forward(float* y, const float* a, const float* b, int64_t count) {
  add_forward_impl(y, a, b, count);
}
void add_forward(double* y, const double* a, const double* b, int64_t count) {
  add_forward_impl(y, a, b, count);
}

void add_relu_forward(float* y, const float* a, const float* b, int64_t count) {
  add_relu_forward_impl(y, a, b, count);
}
void add_relu_forward(double* y, const double* a, const double* b, int64_t count) {
  add_relu_forward_impl(y, a, b, count);
}

}  // namespace unetcu::cpu
