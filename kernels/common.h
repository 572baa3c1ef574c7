// kernels/common.h: what every kernel family shares.
//
// Conventions (see the design notes in README.md):
//  * kernels work on raw pointers plus a shape struct and own nothing;
//  * argument order: outputs first, then inputs, then the shape, then (cuda::) the stream;
//  * activations are NHWC float32, conv filters KRSC (out, kh, kw, in);
//  * every backward takes an explicit GradMode: overwrite the gradient buffer or add into it
//    (fan-out points such as the residual identity and the encoder skips accumulate).
#pragma once

#include <cstddef>
#include <cstdint>

// The CUDA stream handle, declared exactly as the CUDA runtime declares it, so that the cuda::
// declarations in the kernel headers compile in translation units that never include CUDA.
struct CUstream_st;
typedef CUstream_st* cudaStream_t;

// Small helpers that both host code and CUDA kernels call (one definition for both).
#ifdef __CUDACC__
#define UNETCU_HOST_DEVICE __host__ __device__
#else
#define UNETCU_HOST_DEVICE
#endif

namespace unetcu {

enum class GradMode { overwrite, accumulate };

// Writes `value` into *dst honouring the gradient mode; used by every cpu:: backward so the
// overwrite/accumulate rule lives in one place.
inline void store_grad(float* dst, float value, GradMode mode) {
  if (mode == GradMode::accumulate) *dst += value; else *dst = value;
}

}  // namespace unetcu
