// kernels/elementwise.h: relu and add over flat float arrays of `count` elements.
// In-place use is allowed (y == x, y == a).
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace unetcu {
namespace cpu {

void relu_forward(float* y, const float* x, int64_t count);
// dx (+)= dy * (y > 0): the mask uses the forward output, as PyTorch's inplace ReLU does.
void relu_backward(float* dx, const float* dy, const float* y, int64_t count, GradMode mode);

void add_forward(float* y, const float* a, const float* b, int64_t count);
// y = relu(a + b): the end of every BasicBlock.
void add_relu_forward(float* y, const float* a, const float* b, int64_t count);

// Double versions of the same ops, for finite-difference gradient checks.
void relu_forward(double* y, const double* x, int64_t count);
void relu_backward(double* dx, const double* dy, const double* y, int64_t count, GradMode mode);
void add_forward(double* y, const double* a, const double* b, int64_t count);
void add_relu_forward(double* y, const double* a, const double* b, int64_t count);

}  // namespace cpu

// CUDA kernels (kernels/cuda/elementwise.cu): the float ops above, asynchronous on `stream`.
namespace cuda {

void relu_forward(float* y, const float* x, int64_t count, cudaStream_t stream);
void relu_backward(float* dx, const float* dy, const float* y, int64_t count, GradMode mode,
                   cudaStream_t stream);
void add_forward(float* y, const float* a, const float* b, int64_t count, cudaStream_t stream);
void add_relu_forward(float* y, const float* a, const float* b, int64_t count,
                      cudaStream_t stream);

}  // namespace cuda
}  // namespace unetcu
