// kernels/concat.h: channel concatenation of two NHWC tensors with the same n, h, w:
//   y[row][0..ca) = a[row][..], y[row][ca..ca+cb) = b[row][..], rows = n*h*w.
// smp concatenates [upsampled, skip] in that order.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace unetcu {

struct ConcatShape {
  int64_t rows = 0;
  int ca = 0, cb = 0;
};

namespace cpu {

// a may be null: its channels of y are left alone (written in place by a's producer, as the
// decoder's upsampling does: UpsampleShape::pitch).
void concat_forward(float* y, const float* a, const float* b, const ConcatShape& sh);
// Splits dy back; da or db may be null (no gradient wanted there, or read in place).
void concat_backward(float* da, float* db, const float* dy, const ConcatShape& sh,
                     GradMode mode_a, GradMode mode_b);

// Double versions, for finite-difference gradient checks.
void concat_forward(double* y, const double* a, const double* b, const ConcatShape& sh);
void concat_backward(double* da, double* db, const double* dy, const ConcatShape& sh,
                     GradMode mode_a, GradMode mode_b);

}  // namespace cpu

// CUDA kernels (kernels/cuda/concat.cu), asynchronous on `stream`; same results as above.
namespace cuda {

void concat_forward(float* y, const float* a, const float* b, const ConcatShape& sh,
                    cudaStream_t stream);
void concat_backward(float* da, float* db, const float* dy, const ConcatShape& sh,
                     GradMode mode_a, GradMode mode_b, cudaStream_t stream);

}  // namespace cuda
}  // namespace unetcu
