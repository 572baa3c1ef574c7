// kernels/normalize.h: uint8 RGB NHWC images -> float network input,
//   x = (img / 255 - mean[c]) / std[c], with the ImageNet statistics smp uses for resnet34.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace unetcu {

struct NormalizeParams {
  float mean[3] = {0.485f, 0.456f, 0.406f};
  float std[3] = {0.229f, 0.224f, 0.225f};
};

namespace cpu {

// pixels = n*h*w; img and x have 3 channels.
void normalize_input(float* x, const uint8_t* img, int64_t pixels, const NormalizeParams& prm);

}  // namespace cpu

// CUDA kernel (kernels/cuda/normalize.cu), asynchronous on `stream`; same results as above.
namespace cuda {

void normalize_input(float* x, const uint8_t* img, int64_t pixels, const NormalizeParams& prm,
                     cudaStream_t stream);

}  // namespace cuda
}  // namespace unetcu
