// kernels/cuda/normalize.cu: uint8 RGB NHWC images -> float network input,
// x = (img / 255 - mean[c]) / std[c], the same operations in the same order as the CPU
// reference (division, not a reciprocal multiply), so results match it exactly.
//
// map_flat over pixels: a vector step handles 4 pixels = 12 bytes in (three 4-byte loads) and
// 12 floats out (three float4 stores), so every access is wide and each warp's 1.5 KB of output
// is contiguous. Input is 3 bytes and output 12 bytes per pixel: a write-bound copy.
#include "kernels/normalize.h"

#include "kernels/cuda/common.cuh"

namespace unetcu::cuda {
namespace {

using detail::load_vec;
using detail::store_vec;
using detail::Vec;
using detail::Width;

struct Normalize {
  float* x;
  const uint8_t* img;
  NormalizeParams prm;
  __device__ float value(uint8_t u, int c) const {
    return (float(u) / 255.0f - prm.mean[c]) / prm.std[c];
  }
  // Width<4>: pixels 4i..4i+3, i.e. bytes 12i..12i+11 and floats 12i..12i+11.
  __device__ void operator()(Width<4>, int64_t i) const {
    for (int part = 0; part < 3; ++part) {
      const auto bytes = load_vec<4>(img, 3 * i + part);
      Vec<float, 4> out;
      for (int k = 0; k < 4; ++k) out.v[k] = value(bytes.v[k], (4 * part + k) % 3);
      store_vec<4>(x, 3 * i + part, out);
    }
  }
  __device__ void operator()(Width<1>, int64_t i) const {
    for (int c = 0; c < 3; ++c) x[3 * i + c] = value(img[3 * i + c], c);
  }
};

}  // namespace

void normalize_input(float* x, const uint8_t* img, int64_t pixels, const NormalizeParams& prm,
                     cudaStream_t stream) {
  detail::map_flat(Normalize{x, img, prm}, pixels, detail::all_vec4(x, img),
                   stream);
}

}  // namespace unetcu::cuda
