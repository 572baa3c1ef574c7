// kernels/cpu/normalize.cpp: reference uint8 -> float input normalisation.
#include "kernels/normalize.h"

namespace unetcu::cpu {

void normalize_input(float* x, const uint8_t* img, int64_t pixels, const NormalizeParams& prm) {
  // Same order of operations as torchvision's ToTensor + Normalize: scale to 0..1 first.
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < pixels; ++i) {
    for (int c = 0; c < 3; ++c) {
      float v = float(img[i * 3 + c]) / 255.0f;
      x[i * 3 + c] = (v - prm.mean[c]) / prm.std[c];
    }
  }
}

}  // namespace unetcu::cpu
