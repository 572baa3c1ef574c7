// kernels/pool.h: MaxPool 3x3, stride 2, pad 1 (padding acts as -inf), NHWC.
//   x: [n][h][w][c], y and argmax: [n][p][q][c], p = (h - 1)/2 + 1, q = (w - 1)/2 + 1.
// argmax holds the input position (ih * w + iw) of the maximum inside its image; ties go to
// the first maximum in row-major window order, as PyTorch does.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace unetcu {

struct MaxPoolShape {
  int n = 0, h = 0, w = 0, c = 0;
  int p = 0, q = 0;
  static MaxPoolShape make(int n, int h, int w, int c) {
    MaxPoolShape sh;
    sh.n = n; sh.h = h; sh.w = w; sh.c = c;
    sh.p = (h + 2 - 3) / 2 + 1;
    sh.q = (w + 2 - 3) / 2 + 1;
    return sh;
  }
};

namespace cpu {

void maxpool_forward(float* y, int32_t* argmax, const float* x, const MaxPoolShape& sh);
// dx (+)= gradient routed to each window's argmax (summed where windows overlap).
void maxpool_backward(float* dx, const float* dy, const int32_t* argmax, const MaxPoolShape& sh,
                      GradMode mode);

// Double-precision twins of the above, for the finite-difference gradient checks.
void maxpool_forward(double* y, int32_t* argmax, const double* x, const MaxPoolShape& sh);
void maxpool_backward(double* dx, const double* dy, const int32_t* argmax,
                      const MaxPoolShape& sh, GradMode mode);

}  // namespace cpu

// CUDA kernels (kernels/cuda/pool.cu), asynchronous on `stream`; same results as above (the
// backward sums the covering windows in the same order).
namespace cuda {

void maxpool_forward(float* y, int32_t* argmax, const float* x, const MaxPoolShape& sh,
                     cudaStream_t stream);
void maxpool_backward(float* dx, const float* dy, const int32_t* argmax, const MaxPoolShape& sh,
                      GradMode mode, cudaStream_t stream);

}  // namespace cuda
}  // namespace unetcu
