// kernels/cuda/mma.cuh: the tensor cores' TF32 product for the hand-written kernels, the one
// place outside launch.h with inline PTX (common.cuh has none): each function below has a GPU
// form (PTX) and an emulated one (kernels/simt/simt.h), so the kernels that use it run in CI.
//
//   tf32_round(x)     x rounded to TF32 (10 mantissa bits), to nearest with ties away from
//                     zero, as cvt.rna.tf32.f32 does; the result is a float whose low 13
//                     bits are zero.
//   mma_tf32(d, a, b) d += A (16 x 8) * B (8 x 8) for one warp, all 32 lanes together
//                     (mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32). With
//                     g = lane / 4 and t = lane % 4, a lane holds
//                       a = A[g][t], A[g + 8][t], A[g][t + 4], A[g + 8][t + 4]
//                       b = B[t][g], B[t + 4][g]
//                       d = D[g][2t], D[g][2t + 1], D[g + 8][2t], D[g + 8][2t + 1]
//                     (PTX ISA, "Matrix Fragments for mma.m16n8k8", .tf32). The hardware reads
//                     only an operand's TF32 bits, so operands are passed through tf32_round
//                     first (truncation would bias every product towards zero).
//
// Compute capability 8.0 or later: built for an older architecture the kernel traps, so the
// host side asks mma_kernel_usable before launching one.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/cuda/launch.h"

namespace unetcu::cuda::detail {

// The bits of a float rounded to TF32: infinities and NaNs keep theirs (as cvt keeps them); a
// finite value adds half of the dropped bits' range, so that a carry rounds the magnitude up
// (ties away from zero), and drops them. A carry out of the largest finite values gives
// infinity, as the hardware's.
__host__ __device__ inline uint32_t tf32_round_bits(uint32_t bits) {
  return (bits & 0x7f800000u) == 0x7f800000u ? bits : (bits + 0x1000u) & 0xffffe000u;
}

__device__ inline float tf32_round(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t bits;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(x));
  return __uint_as_float(bits);
#elif defined(__CUDACC__)
  return __uint_as_float(tf32_round_bits(__float_as_uint(x)));  // an older GPU; the host pass
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits = tf32_round_bits(bits);
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
#endif
}

__device__ inline void mma_tf32(float (&d)[4], const float (&a)[4], const float (&b)[2]) {
#if defined(__CUDACC__)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])),
        "r"(__float_as_uint(a[3])), "r"(__float_as_uint(b[0])), "r"(__float_as_uint(b[1])));
#else
  __trap();  // an older architecture (mma_kernel_usable keeps the host from launching it)
#endif
#else
  uint32_t ua[4], ub[2];
  std::memcpy(ua, a, sizeof ua);
  std::memcpy(ub, b, sizeof ub);
  const float c[4] = {d[0], d[1], d[2], d[3]};
  unetcu::simt::mma_tf32_m16n8k8(d, ua, ub, c);
#endif
}

// Whether `kernel`, which calls mma_tf32, can run here: the device has compute capability 8.0
// or later and the kernel was built for it. Asked once per kernel. (The emulator runs it.)
#if defined(__CUDACC__)
inline bool mma_kernel_usable(const void* kernel) {
  return asked_once(kernel, [](const void* k) {
    int device = 0, major = 0;
    cudaFuncAttributes attributes = {};
    return cudaGetDevice(&device) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) ==
               cudaSuccess &&
           major >= 8 && cudaFuncGetAttributes(&attributes, k) == cudaSuccess &&
           attributes.binaryVersion >= 80;
  });
}
#else
inline bool mma_kernel_usable(const void*) { return true; }
#endif

}  // namespace unetcu::cuda::detail
