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

}  // namespace cpu
}  // namespace unetcu
