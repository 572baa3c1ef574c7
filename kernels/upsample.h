// kernels/upsample.h: nearest-neighbour 2x upsampling, NHWC.
//   x: [n][h][w][c] -> y: [n][2h][2w][c], y[n][i][j][c] = x[n][i/2][j/2][c].
// Backward sums each 2x2 block of dy.
// y (and dy) may be the first c channels of a wider NHWC tensor, `pitch` channels a pixel: the
// decoder's upsampled half of a concatenation, written (and its gradient read) in place.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace unetcu {

struct UpsampleShape {
  int n = 0, h = 0, w = 0, c = 0;  // input
  int pitch = 0;                   // channels from one pixel of y / dy to the next; 0: c
  int out_pitch() const { return pitch > 0 ? pitch : c; }
};

namespace cpu {

void upsample2x_forward(float* y, const float* x, const UpsampleShape& sh);
void upsample2x_backward(float* dx, const float* dy, const UpsampleShape& sh, GradMode mode);

// Double versions, for finite-difference gradient checks.
void upsample2x_forward(double* y, const double* x, const UpsampleShape& sh);
void upsample2x_backward(double* dx, const double* dy, const UpsampleShape& sh, GradMode mode);

}  // namespace cpu

// CUDA kernels (kernels/cuda/upsample.cu), asynchronous on `stream`; same results as above.
namespace cuda {

void upsample2x_forward(float* y, const float* x, const UpsampleShape& sh, cudaStream_t stream);
void upsample2x_backward(float* dx, const float* dy, const UpsampleShape& sh, GradMode mode,
                         cudaStream_t stream);

}  // namespace cuda
}  // namespace unetcu
