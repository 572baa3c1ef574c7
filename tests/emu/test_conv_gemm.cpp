// tests/emu/test_conv_gemm.cpp: the forward and backward-data as a GEMM and a gather
// (kernels/conv.h: conv2d_forward_gemm_dims, conv2d_backward_data_gemm_dims;
// kernels/cuda/conv_gemm.cu) against the double-precision reference convolution
// (conv_check.h). The GEMM runs through cpu::gemm_colmajor (BLAS) on the dimensions the engine
// hands cuBLAS, so a wrong leading dimension, transpose or operand order fails here as well as
// a wrong gather. Float roundings per element: forward, r*s*c products summed (im2col copies
// exactly): L = r*s*c; backward-data, k products per col entry, at most r*s col entries, then
// the old value when accumulating: L = k + r*s + 1.
#include <cstdint>
#include <string>
#include <vector>

#include "conv_check.h"
#include "kernel_test.h"
#include "kernels/conv.h"

namespace unetcu::test {
namespace {

struct GemmCase {
  ConvShape sh;
  size_t shift;  // misaligns every buffer: the scalar gather
};

const GemmCase kGemmCases[] = {
    {ConvShape::make(2, 8, 8, 16, 24, 3, 3, 1, 1), 0},    // a BasicBlock conv, small: float4
    {ConvShape::make(2, 8, 8, 16, 24, 3, 3, 1, 1), 1},    // the same misaligned: scalar gather
    {ConvShape::make(2, 9, 7, 12, 8, 3, 3, 2, 1), 0},     // stride 2 at odd sizes
    {ConvShape::make(3, 8, 8, 8, 16, 1, 1, 2, 0), 0},     // the downsample: odd pixels get 0
    {ConvShape::make(1, 5, 6, 5, 4, 3, 3, 1, 1), 0},      // c % 4 != 0: scalar gather
    {ConvShape::make(1, 11, 9, 4, 4, 7, 7, 2, 3), 0},     // 7x7 stride 2 pad 3, as the stem
    {ConvShape::make(2, 4, 4, 32, 32, 3, 3, 1, 0), 0},    // no padding: output smaller
    {ConvShape::make(1, 1, 1, 8, 8, 3, 3, 1, 1), 0},      // 1x1 image: 8 of 9 taps in padding
    {ConvShape::make(4, 16, 16, 64, 32, 3, 3, 1, 1), 0}};  // 1,024 pixels, 16 column groups

TEST_CASE("the GEMM convolutions apply where the column matrix is at most 40 MiB") {
  // Batch 16 at 128x128: layer3's 3x3 (8x8, 256 channels) has a 9.4 MB column buffer, layer4's
  // 4.7 MB, layer1's 37.7 MB, the stem's 38.5 MB (its forward: cuDNN's generic kernel there);
  // a 3x3 of 96 channels at 64x64 226 MB and the last decoder block's 302 MB (not taken).
  const ConvShape layer3 = ConvShape::make(16, 8, 8, 256, 256, 3, 3, 1, 1);
  const ConvShape layer4_down = ConvShape::make(16, 8, 8, 256, 512, 3, 3, 2, 1);
  const ConvShape layer1 = ConvShape::make(16, 32, 32, 64, 64, 3, 3, 1, 1);
  const ConvShape stem = ConvShape::make(16, 128, 128, 3, 64, 7, 7, 2, 3);
  const ConvShape wide64 = ConvShape::make(16, 64, 64, 96, 32, 3, 3, 1, 1);
  const ConvShape decoder4 = ConvShape::make(16, 128, 128, 32, 16, 3, 3, 1, 1);
  CHECK(conv2d_col_bytes(layer3) == size_t(16) * 64 * 9 * 256 * 4);
  CHECK(conv2d_col_bytes(stem) == size_t(16) * 64 * 64 * 49 * 3 * 4);
  CHECK(cuda::conv2d_gemm_applies(layer3));
  CHECK(cuda::conv2d_gemm_applies(layer4_down));
  CHECK(cuda::conv2d_gemm_applies(layer1));
  CHECK(cuda::conv2d_gemm_applies(stem));
  CHECK_FALSE(cuda::conv2d_gemm_applies(wide64));
  CHECK_FALSE(cuda::conv2d_gemm_applies(decoder4));
  // The limit itself: one output pixel more than 40 MiB of columns allows is refused.
  const int64_t row_bytes = int64_t(3) * 3 * 64 * 4;  // 3x3 taps of 64 channels
  const int pixels = int((int64_t(40) << 20) / row_bytes);
  CHECK(cuda::conv2d_gemm_applies(ConvShape::make(1, 1, pixels, 64, 64, 3, 3, 1, 1)));
  CHECK_FALSE(cuda::conv2d_gemm_applies(ConvShape::make(1, 1, pixels + 1, 64, 64, 3, 3, 1, 1)));
  CHECK_FALSE(cuda::conv2d_gemm_applies(ConvShape::make(0, 8, 8, 4, 4, 3, 3, 1, 1)));
  // The GEMMs' dimensions. Backward-data: col^T (r*s*c x pixels) = wt^T (r*s*c x k) * dy^T.
  const GemmDims d = conv2d_backward_data_gemm_dims(layer4_down);
  CHECK(d.m == 9 * 256);
  CHECK(d.n == 16 * 4 * 4);
  CHECK(d.k == 512);
  CHECK(d.lda == d.m);
  CHECK(d.ldb == d.k);
  CHECK(d.ldc == d.m);
  CHECK_FALSE(d.trans_a);
  // Forward: y^T (k x pixels) = wt (k x r*s*c, stored transposed) * col^T (r*s*c x pixels).
  const GemmDims f = conv2d_forward_gemm_dims(layer4_down);
  CHECK(f.m == 512);
  CHECK(f.n == 16 * 4 * 4);
  CHECK(f.k == 9 * 256);
  CHECK(f.lda == f.k);
  CHECK(f.ldb == f.k);
  CHECK(f.ldc == f.m);
  CHECK(f.trans_a);
}

// Downloads `count` floats from the device.
std::vector<float> download(const float* device, size_t count) {
  std::vector<float> host(count);
  UNETCU_CUDA_CHECK(
      cudaMemcpy(host.data(), device, count * sizeof(float), cudaMemcpyDeviceToHost));
  return host;
}

TEST_CASE("cuda im2col + GEMM forward is within its float bound") {
  for (const GemmCase& gc : kGemmCases) {
    const ConvShape& sh = gc.sh;
    CAPTURE(shape_name(sh));
    CAPTURE(gc.shift);
    REQUIRE(cuda::conv2d_gemm_applies(sh));
    check_forward_kernel(
        sh, gc.shift, false, double(sh.r) * sh.s * sh.c, "im2col + GEMM forward y",
        [&](float* y, const float* x, const float* wt, const float*) {
          // The gather on the device, poisoned first (every entry must be written); the GEMM
          // on the host, as the emulated engine runs it, into y.
          DeviceBuffer<float> dcol(conv2d_col_bytes(sh) / sizeof(float), gc.shift);
          dcol.poison();
          cuda::conv2d_im2col(dcol.get(), x, sh, nullptr);
          sync_device();
          dcol.check_guards("col");
          const std::vector<float> col = download(dcol.get(), dcol.size());
          const std::vector<float> host_wt = download(wt, size_t(sh.w_size()));
          std::vector<float> host_y(size_t(sh.y_size()));
          cpu::gemm_colmajor(conv2d_forward_gemm_dims(sh), host_wt.data(), col.data(),
                             host_y.data());
          UNETCU_CUDA_CHECK(cudaMemcpy(y, host_y.data(), host_y.size() * sizeof(float),
                                       cudaMemcpyHostToDevice));
        });
  }
}

TEST_CASE("cuda GEMM + gather backward-data is within its float bound in both grad modes") {
  for (const GemmCase& gc : kGemmCases) {
    const ConvShape& sh = gc.sh;
    CAPTURE(shape_name(sh));
    CAPTURE(gc.shift);
    REQUIRE(cuda::conv2d_gemm_applies(sh));
    check_data_kernel(
        sh, gc.shift, double(sh.k) + double(sh.r) * sh.s + 1, "GEMM + gather backward-data dx",
        [&](float* dx, const float* dy, const float* wt, GradMode mode) {
          // The GEMM on the host, as the emulated engine runs it; its output goes back to the
          // device for the gather.
          const std::vector<float> host_dy = download(dy, size_t(sh.y_size()));
          const std::vector<float> host_wt = download(wt, size_t(sh.w_size()));
          std::vector<float> col(conv2d_col_bytes(sh) / sizeof(float));
          cpu::gemm_colmajor(conv2d_backward_data_gemm_dims(sh), host_wt.data(), host_dy.data(),
                             col.data());
          DeviceBuffer<float> dcol(col, gc.shift);
          cuda::conv2d_col2im(dx, dcol.get(), sh, mode, nullptr);
          sync_device();  // dcol goes at the end of this scope
          dcol.check_guards("col");
        });
  }
}

}  // namespace
}  // namespace unetcu::test
