// tests/emu/test_conv_mma.cpp: the tensor-core (TF32) forward and backward-data
// (kernels/cuda/conv_mma.cu) against the double-precision reference convolution of the
// operands rounded to TF32 (conv_check.h's tf32_nearest), each element within the bound of how
// the products are added. That leaves only the accumulation's rounding, so a kernel that
// truncated its operands to TF32 instead of rounding them (an error of up to 2^-11 of each
// operand) falls outside it, as does a wrong tap, channel, border or fragment layout.
//   emulated  each product of 8 (tap, channel) terms is added to the running sum in double and
//             rounded once (kernels/simt): at most 9 c / 8 roundings, and one more for the old
//             value when accumulating: gamma_L |terms| with L = 9 c / 8 + 1;
//   on a GPU  the tensor cores' accumulation order and rounding are not documented: the bound
//             of adding every product one at a time, rounded towards zero (two units of
//             roundoff a step), L = 2 * 9 c + 1.
// The weight gradient likewise adds each block's pixels 8 at a time in float (L = pixels / 8,
// on a GPU 2 * pixels), then the blocks' sums in double, rounded to float once.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "conv_check.h"
#include "kernel_test.h"
#include "kernels/conv.h"

namespace unetcu::test {
namespace {

// Terms an output adds: L in the header's comment, for `in` input channels of the direction.
double mma_bound_terms(int in) {
#if defined(UNETCU_TEST_EMULATED)
  return 9.0 * in / 8 + 1;
#else
  return 2.0 * 9 * in + 1;
#endif
}
// The same for the weight gradient's float sums of at most `pixels` products.
double mma_filter_terms(int64_t pixels) {
#if defined(UNETCU_TEST_EMULATED)
  return double((pixels + 7) / 8);
#else
  return 2.0 * double(pixels);
#endif
}

// Around the decoder's 3x3 convolutions of 16 and 32 output channels: partial tiles of rows (4)
// and columns (32), one and several chunks of 16 input channels, a 1x1 image, two tile columns,
// and 64 and 128 output channels of a direction (two and four blocks of 32).
const ConvShape kMmaCases[] = {
    ConvShape::make(2, 9, 7, 32, 16, 3, 3, 1, 1),    // the decoder's last conv1, small
    ConvShape::make(3, 5, 6, 16, 16, 3, 3, 1, 1),    // its conv2: one chunk either way
    ConvShape::make(1, 8, 8, 32, 32, 3, 3, 1, 1),    // 32 output channels either way
    ConvShape::make(2, 4, 5, 64, 16, 3, 3, 1, 1),    // four chunks forward
    ConvShape::make(2, 4, 5, 16, 64, 3, 3, 1, 1),    // four chunks backward-data
    ConvShape::make(1, 1, 1, 16, 16, 3, 3, 1, 1),    // 1x1 image: 8 of 9 taps in padding
    ConvShape::make(1, 6, 35, 128, 32, 3, 3, 1, 1),  // decoder block 3's conv1 forward, 2 columns
    ConvShape::make(2, 33, 31, 16, 32, 3, 3, 1, 1)}; // 9 x 1 tiles an image

TEST_CASE("cuda tensor-core conv applies to 3x3 same, 16 or 32 outputs, inputs a multiple of 16") {
  const float* aligned = reinterpret_cast<const float*>(uintptr_t(256));
  const float* misaligned = reinterpret_cast<const float*>(uintptr_t(264));
  const ConvShape last = ConvShape::make(16, 128, 128, 32, 16, 3, 3, 1, 1);
  CHECK(cuda::conv2d_mma_forward_applies(last, aligned, aligned));
  CHECK(cuda::conv2d_mma_backward_data_applies(last, aligned, aligned));
  CHECK_FALSE(cuda::conv2d_mma_forward_applies(last, misaligned, aligned));
  CHECK_FALSE(cuda::conv2d_mma_backward_data_applies(last, aligned, misaligned));
  // 128 -> 32: both (backward-data writes 128 channels in four blocks of 32); not 256.
  const ConvShape wide = ConvShape::make(16, 64, 64, 128, 32, 3, 3, 1, 1);
  CHECK(cuda::conv2d_mma_forward_applies(wide, aligned, aligned));
  CHECK(cuda::conv2d_mma_backward_data_applies(wide, aligned, aligned));
  const ConvShape wider = ConvShape::make(16, 64, 64, 256, 32, 3, 3, 1, 1);
  CHECK_FALSE(cuda::conv2d_mma_backward_data_applies(wider, aligned, aligned));
  // The weight gradient: 16 or 32 output channels only.
  CHECK(cuda::conv2d_mma_backward_filter_applies(wide, aligned, aligned));
  CHECK_FALSE(cuda::conv2d_mma_backward_filter_applies(
      ConvShape::make(2, 8, 8, 16, 64, 3, 3, 1, 1), aligned, aligned));
  // 8 input channels (not a chunk of 16); a 1x1 filter; stride 2; 3x3 without padding.
  CHECK_FALSE(cuda::conv2d_mma_forward_applies(ConvShape::make(2, 8, 8, 8, 16, 3, 3, 1, 1),
                                               aligned, aligned));
  CHECK_FALSE(cuda::conv2d_mma_forward_applies(ConvShape::make(2, 8, 8, 16, 16, 1, 1, 1, 0),
                                               aligned, aligned));
  CHECK_FALSE(cuda::conv2d_mma_forward_applies(ConvShape::make(2, 8, 8, 16, 16, 3, 3, 2, 1),
                                               aligned, aligned));
  CHECK_FALSE(cuda::conv2d_mma_forward_applies(ConvShape::make(2, 8, 8, 16, 16, 3, 3, 1, 0),
                                               aligned, aligned));
  CHECK_FALSE(cuda::conv2d_mma_forward_applies(ConvShape::make(2, 8, 8, 16, 48, 3, 3, 1, 1),
                                               aligned, aligned));  // 48 outputs
}

TEST_CASE("cuda tensor-core conv forward is within its bound of the TF32 operands' product") {
  for (const ConvShape& sh : kMmaCases) {
    CAPTURE(shape_name(sh));
    check_forward_kernel(
        sh, 0, false, mma_bound_terms(sh.c), "tensor-core forward y",
        [&](float* y, const float* x, const float* wt, const float*) {
          REQUIRE(cuda::conv2d_mma_forward_applies(sh, x, y));
          cuda::conv2d_mma_forward(y, x, wt, sh, nullptr);
        },
        tf32_nearest);
  }
}

TEST_CASE("cuda tensor-core conv backward-data is within its bound in both grad modes") {
  for (const ConvShape& sh : kMmaCases) {
    CAPTURE(shape_name(sh));
    check_data_kernel(
        sh, 0, mma_bound_terms(sh.k), "tensor-core backward-data dx",
        [&](float* dx, const float* dy, const float* wt, GradMode mode) {
          REQUIRE(cuda::conv2d_mma_backward_data_applies(sh, dy, dx));
          cuda::conv2d_mma_backward_data(dx, dy, wt, sh, mode, nullptr);
        },
        tf32_nearest);
  }
}

// More tiles than the launch has blocks (1,056), so each block takes two, with its filters
// staged once for both: two chunks of 16 input channels forward (32 -> 16), one backward-data.
TEST_CASE("cuda tensor-core conv with several tiles a block is within its bound") {
  const ConvShape sh = ConvShape::make(4, 132, 270, 32, 16, 3, 3, 1, 1);  // 1,188 tiles
  check_forward_kernel(
      sh, 0, false, mma_bound_terms(sh.c), "tensor-core forward y",
      [&](float* y, const float* x, const float* wt, const float*) {
        cuda::conv2d_mma_forward(y, x, wt, sh, nullptr);
      },
      tf32_nearest);
  check_data_kernel(
      sh, 0, mma_bound_terms(sh.k), "tensor-core backward-data dx",
      [&](float* dx, const float* dy, const float* wt, GradMode mode) {
        cuda::conv2d_mma_backward_data(dx, dy, wt, sh, mode, nullptr);
      },
      tf32_nearest);
}

TEST_CASE("cuda tensor-core conv backward-filter is within its bound in both grad modes") {
  // The forward's shapes, and a block of several segments: rows of 64 + 6 pixels, 20 segments
  // over 5 blocks; inputs in chunks of 32 (128 channels) and of 16 (48).
  std::vector<ConvShape> cases;
  for (const ConvShape& sh : kMmaCases)
    if (sh.k == 16 || sh.k == 32) cases.push_back(sh);
  cases.push_back(ConvShape::make(2, 5, 70, 48, 16, 3, 3, 1, 1));
  for (const ConvShape& sh : cases) {
    CAPTURE(shape_name(sh));
    check_filter_kernel(
        sh, 0, mma_filter_terms(cuda::conv2d_mma_backward_filter_pixels(sh)),
        cuda::conv2d_mma_backward_filter_workspace_bytes(sh), "tensor-core backward-filter dwt",
        [&](float* dw, const float* dy, const float* x, GradMode mode, void* ws) {
          REQUIRE(cuda::conv2d_mma_backward_filter_applies(sh, dy, x));
          cuda::conv2d_mma_backward_filter(dw, dy, x, sh, mode, ws, nullptr);
        },
        tf32_nearest);
  }
  CHECK(cases.size() == 8);
}

// In waves (UNETCU_MMA_WGRAD_WAVES): each launch takes a share of every block's segments (rows
// of 64 + 6 pixels here) and adds its float sum to the block's partial, wave 0 overwriting the
// (poisoned) workspace. 3 x 7 x 70 x 16: 42 segments over 11 blocks of 4, the last of 2, so
// 2 waves of 2 segments leave the last block's second wave empty (3 asked gives the same), 4
// of one its last two. 2 x 70 x 70 x 128: 280 segments over 56 blocks of 5 (the grid capped
// at 66 for 4 chunks of 32 channels), so the last wave is shorter: 3 + 2, or 2 + 2 + 1. Within
// the bound of the shorter float runs, a launch a wave more.
TEST_CASE("cuda tensor-core conv backward-filter in waves is within its bound, a launch a wave") {
  struct Waves {
    int asked, taken, segments;  // a wave's segments (the last's at most)
  };
  struct WaveCase {
    ConvShape sh;
    std::vector<Waves> waves;
  };
  const WaveCase cases[] = {
      {ConvShape::make(3, 7, 70, 16, 16, 3, 3, 1, 1), {{2, 2, 2}, {3, 2, 2}, {4, 4, 1}}},
      {ConvShape::make(2, 70, 70, 128, 16, 3, 3, 1, 1), {{2, 2, 3}, {4, 3, 2}}}};
  for (const WaveCase& c : cases) {
    const ConvShape& sh = c.sh;
    CAPTURE(shape_name(sh));
    cuda::set_conv2d_mma_filter_waves(1);
    CHECK(cuda::conv2d_mma_backward_filter_waves(sh) == 1);
    const auto launches = [&] {
      DeviceBuffer<float> dy(size_t(sh.y_size())), x(size_t(sh.x_size()));
      DeviceBuffer<float> dw(size_t(sh.w_size()));
      DeviceBuffer<unsigned char> ws(cuda::conv2d_mma_backward_filter_workspace_bytes(sh));
      return launches_of([&] {
        cuda::conv2d_mma_backward_filter(dw.get(), dy.get(), x.get(), sh, GradMode::overwrite,
                                         ws.get(), nullptr);
      });
    };
    const int one_wave_launches = launches();
    for (const Waves& w : c.waves) {
      CAPTURE(w.asked);
      cuda::set_conv2d_mma_filter_waves(w.asked);
      CHECK(cuda::conv2d_mma_backward_filter_waves(sh) == w.taken);
      CHECK(cuda::conv2d_mma_backward_filter_pixels(sh) == 64 * w.segments);
      if (one_wave_launches >= 0) CHECK(launches() == one_wave_launches + w.taken - 1);
      check_filter_kernel(
          sh, 0, mma_filter_terms(cuda::conv2d_mma_backward_filter_pixels(sh)),
          cuda::conv2d_mma_backward_filter_workspace_bytes(sh), "tensor-core dwt in waves",
          [&](float* dw, const float* dy, const float* x, GradMode mode, void* ws) {
            cuda::conv2d_mma_backward_filter(dw, dy, x, sh, mode, ws, nullptr);
          },
          tf32_nearest);
    }
  }
  cuda::set_conv2d_mma_filter_waves(1);
  CHECK_THROWS_AS(cuda::set_conv2d_mma_filter_waves(0), std::invalid_argument);
  CHECK_THROWS_AS(cuda::set_conv2d_mma_filter_waves(17), std::invalid_argument);
}

// The stem (3 -> 64 or 32, 7x7, stride 2, padding 3): 19 products of 8 of its 147 terms (152
// with the padding), so L = 19 + 1 emulated, 2 * 147 + 1 on a GPU; partial tiles of rows and
// columns, two tile rows and columns, a 1x1 output, two blocks of 32 output channels.
TEST_CASE("cuda tensor-core stem forward is within its bound of the TF32 operands' product") {
  const float* aligned = reinterpret_cast<const float*>(uintptr_t(256));
  const float* misaligned = reinterpret_cast<const float*>(uintptr_t(260));
  const ConvShape stem = ConvShape::make(16, 128, 128, 3, 64, 7, 7, 2, 3);
  CHECK(cuda::conv2d_mma_forward_applies(stem, misaligned, aligned));  // images: any alignment
  CHECK_FALSE(cuda::conv2d_mma_forward_applies(stem, aligned, misaligned));
  CHECK_FALSE(cuda::conv2d_mma_forward_applies(ConvShape::make(2, 9, 9, 3, 64, 7, 7, 1, 3),
                                               aligned, aligned));  // stride 1
  CHECK_FALSE(cuda::conv2d_mma_forward_applies(ConvShape::make(2, 9, 9, 3, 48, 7, 7, 2, 3),
                                               aligned, aligned));  // 48 outputs
  CHECK_FALSE(cuda::conv2d_mma_backward_data_applies(stem, aligned, aligned));
  const double L =
#if defined(UNETCU_TEST_EMULATED)
      20;
#else
      2.0 * 147 + 1;
#endif
  for (const ConvShape& sh : {ConvShape::make(2, 13, 17, 3, 64, 7, 7, 2, 3),
                              ConvShape::make(2, 70, 66, 3, 32, 7, 7, 2, 3),
                              ConvShape::make(1, 1, 1, 3, 64, 7, 7, 2, 3)}) {
    CAPTURE(shape_name(sh));
    check_forward_kernel(
        sh, 0, false, L, "tensor-core stem y",
        [&](float* y, const float* x, const float* wt, const float*) {
          REQUIRE(cuda::conv2d_mma_forward_applies(sh, x, y));
          cuda::conv2d_mma_forward(y, x, wt, sh, nullptr);
        },
        tf32_nearest);
  }
}

}  // namespace
}  // namespace unetcu::test
