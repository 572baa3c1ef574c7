// tests/emu/test_conv_gemm.cpp: the backward-data as a GEMM and a gather (kernels/conv.h:
// conv2d_backward_data_gemm_dims, kernels/cuda/conv_gemm.cu) against the double-precision
// reference convolution (conv_check.h). The GEMM runs through cpu::gemm_colmajor (BLAS) on the
// dimensions the engine hands cuBLAS, so a wrong leading dimension or operand order fails here
// as well as a wrong gather. Each dx element sums k products per col entry, at most r*s col
// entries, then the old value when accumulating: L = k + r*s + 1 float roundings.
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

TEST_CASE("the GEMM backward-data applies where its column buffer is at most 32 MiB") {
  // Batch 16 at 128x128: layer3's 3x3 (8x8, 256 channels) has a 9.4 MB column buffer, layer4's
  // 4.7 MB, layer1's 37.7 MB (not taken), the decoder's last block's 302 MB (not taken).
  const ConvShape layer3 = ConvShape::make(16, 8, 8, 256, 256, 3, 3, 1, 1);
  const ConvShape layer4_down = ConvShape::make(16, 8, 8, 256, 512, 3, 3, 2, 1);
  const ConvShape layer1 = ConvShape::make(16, 32, 32, 64, 64, 3, 3, 1, 1);
  const ConvShape decoder4 = ConvShape::make(16, 128, 128, 32, 16, 3, 3, 1, 1);
  CHECK(conv2d_backward_data_col_bytes(layer3) == size_t(16) * 64 * 9 * 256 * 4);
  CHECK(cuda::conv2d_gemm_backward_data_applies(layer3));
  CHECK(cuda::conv2d_gemm_backward_data_applies(layer4_down));
  CHECK_FALSE(cuda::conv2d_gemm_backward_data_applies(layer1));
  CHECK_FALSE(cuda::conv2d_gemm_backward_data_applies(decoder4));
  CHECK_FALSE(cuda::conv2d_gemm_backward_data_applies(ConvShape::make(0, 8, 8, 4, 4, 3, 3, 1, 1)));
  // The GEMM's dimensions: col^T (r*s*c x pixels) = wt^T (r*s*c x k) * dy^T (k x pixels).
  const GemmDims d = conv2d_backward_data_gemm_dims(layer4_down);
  CHECK(d.m == 9 * 256);
  CHECK(d.n == 16 * 4 * 4);
  CHECK(d.k == 512);
  CHECK(d.lda == d.m);
  CHECK(d.ldb == d.k);
  CHECK(d.ldc == d.m);
}

TEST_CASE("cuda GEMM + gather backward-data is within its float bound in both grad modes") {
  for (const GemmCase& gc : kGemmCases) {
    const ConvShape& sh = gc.sh;
    CAPTURE(shape_name(sh));
    CAPTURE(gc.shift);
    REQUIRE(cuda::conv2d_gemm_backward_data_applies(sh));
    check_data_kernel(
        sh, gc.shift, double(sh.k) + double(sh.r) * sh.s + 1, "GEMM + gather backward-data dx",
        [&](float* dx, const float* dy, const float* wt, GradMode mode) {
          // The GEMM on the host, as the emulated engine runs it; its output goes back to the
          // device for the gather.
          std::vector<float> host_dy(size_t(sh.y_size())), host_wt(size_t(sh.w_size()));
          UNETCU_CUDA_CHECK(cudaMemcpy(host_dy.data(), dy, host_dy.size() * sizeof(float),
                                       cudaMemcpyDeviceToHost));
          UNETCU_CUDA_CHECK(cudaMemcpy(host_wt.data(), wt, host_wt.size() * sizeof(float),
                                       cudaMemcpyDeviceToHost));
          std::vector<float> col(conv2d_backward_data_col_bytes(sh) / sizeof(float));
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
