// tests/emu/test_conv_narrow.cpp: the convolution kernels for few output channels
// (kernels/cuda/conv_narrow.cu: the one-output-channel head, the direct weight gradient)
// against the double-precision reference convolution (conv_check.h), each element within the
// bound of how the kernel sums:
//   forward          L = r*s*c fused multiply-adds in float, then the bias: (L + 1) u |terms|;
//   backward-data    at most r*s in float, then the old value when accumulating;
//   backward-filter  exact products summed in double, rounded to float once: u |result| plus
//                    the double sum's own n 2^-53 |terms|;
//   direct backward-filter  as backward-filter, after at most `run` products summed in float
//                    per thread: gamma_run |terms| more.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>

#include "conv_check.h"
#include "kernel_test.h"
#include "kernels/conv.h"

namespace unetcu::test {
namespace {

struct NarrowCase {
  ConvShape sh;
  size_t shift;  // misaligns every buffer: the scalar path for any c
};

const NarrowCase kNarrowCases[] = {
    {ConvShape::make(2, 9, 7, 16, 1, 3, 3, 1, 1), 0},   // the head's shape, small: float4 path
    {ConvShape::make(2, 9, 7, 16, 1, 3, 3, 1, 1), 1},   // the same misaligned: scalar path
    {ConvShape::make(2, 7, 5, 3, 1, 3, 3, 1, 1), 0},    // c % 4 != 0
    {ConvShape::make(1, 1, 1, 8, 1, 3, 3, 1, 1), 0},    // 1x1 image: 8 of 9 taps in padding
    {ConvShape::make(1, 6, 5, 4, 1, 1, 3, 1, 1), 0},    // 1x3 filter, output taller than input
    {ConvShape::make(2, 8, 8, 5, 1, 3, 3, 1, 0), 0},    // no padding: output smaller
    {ConvShape::make(3, 4, 4, 12, 1, 1, 1, 1, 0), 0},   // 1x1 filter
    {ConvShape::make(4, 32, 32, 16, 1, 3, 3, 1, 1), 0}  // 4,096 pixels: 64 filter blocks
};

std::string case_name(const NarrowCase& nc) {
  const ConvShape& sh = nc.sh;
  std::ostringstream os;
  os << "n" << sh.n << " " << sh.h << "x" << sh.w << "x" << sh.c << ", " << sh.r << "x" << sh.s
     << " pad " << sh.pad << ", shift " << nc.shift;
  return os.str();
}

TEST_CASE("cuda conv2d_narrow_applies takes one output channel at stride 1 with <= 9 taps") {
  CHECK(cuda::conv2d_narrow_applies(ConvShape::make(16, 128, 128, 16, 1, 3, 3, 1, 1)));
  CHECK(cuda::conv2d_narrow_applies(ConvShape::make(1, 5, 5, 1, 1, 1, 1, 1, 0)));
  CHECK_FALSE(cuda::conv2d_narrow_applies(ConvShape::make(16, 128, 128, 16, 2, 3, 3, 1, 1)));
  CHECK_FALSE(cuda::conv2d_narrow_applies(ConvShape::make(16, 128, 128, 16, 1, 3, 3, 2, 1)));
  CHECK_FALSE(cuda::conv2d_narrow_applies(ConvShape::make(16, 128, 128, 16, 1, 5, 5, 1, 2)));
}

// The thread-per-pixel kernels (path timing made to keep them: untimed, the row sweeps run
// where they apply; the sweeps' own case is further down).
TEST_CASE("cuda narrow conv forward, with and without bias, is within its float bound") {
  const TestStream s;
  for (const NarrowCase& nc : kNarrowCases) {
    const ConvShape& sh = nc.sh;
    CAPTURE(case_name(nc));
    REQUIRE(cuda::conv2d_narrow_applies(sh));
    const TimedPaths timed("per_pixel");
    for (bool with_bias : {false, true}) {
      CAPTURE(with_bias);
      check_forward_kernel(sh, nc.shift, with_bias, double(sh.r) * sh.s * sh.c + 1,
                           "narrow forward y",
                           [&](float* y, const float* x, const float* wt, const float* bias) {
                             cuda::conv2d_narrow_forward(y, x, wt, bias, sh, s.stream);
                           });
    }
  }
}

TEST_CASE("cuda narrow conv backward-data is within its float bound in both grad modes") {
  const TestStream s;
  for (const NarrowCase& nc : kNarrowCases) {
    const ConvShape& sh = nc.sh;
    CAPTURE(case_name(nc));
    const TimedPaths timed("per_pixel");
    check_data_kernel(sh, nc.shift, double(sh.r) * sh.s + 1, "narrow backward-data dx",
                      [&](float* dx, const float* dy, const float* wt, GradMode mode) {
                        cuda::conv2d_narrow_backward_data(dx, dy, wt, sh, mode, s.stream);
                      });
  }
}

TEST_CASE("cuda narrow conv as row sweeps (path timing kept) is within its bounds") {
  // Path timing made to keep the row sweeps where they apply (3x3, padding 1, c % 4 == 0, at
  // most 64 channels, aligned): the head's shape small and larger; rows wider than a warp's 30
  // columns (three strips, the last part-empty); row chunks of 8 and a partial one; one
  // column, one row, one pixel; 4 and 64 channels. Backward-data times at its overwriting
  // call and runs the kept sweep when accumulating too. Where they do not apply (misaligned
  // buffers, 3 channels, a 1x3 filter) the thread-per-pixel kernels are kept.
  struct SweepCase {
    ConvShape sh;
    size_t shift;
    bool sweeps;
  };
  const SweepCase cases[] = {
      {ConvShape::make(2, 9, 7, 16, 1, 3, 3, 1, 1), 0, true},
      {ConvShape::make(4, 32, 32, 16, 1, 3, 3, 1, 1), 0, true},
      {ConvShape::make(1, 10, 70, 8, 1, 3, 3, 1, 1), 0, true},
      {ConvShape::make(2, 17, 3, 4, 1, 3, 3, 1, 1), 0, true},
      {ConvShape::make(1, 1, 40, 12, 1, 3, 3, 1, 1), 0, true},
      {ConvShape::make(3, 12, 1, 64, 1, 3, 3, 1, 1), 0, true},
      {ConvShape::make(1, 1, 1, 16, 1, 3, 3, 1, 1), 0, true},
      {ConvShape::make(2, 9, 7, 16, 1, 3, 3, 1, 1), 1, false},
      {ConvShape::make(2, 7, 5, 3, 1, 3, 3, 1, 1), 0, false},
      {ConvShape::make(1, 6, 5, 4, 1, 1, 3, 1, 1), 0, false}};
  const TestStream s;
  for (const SweepCase& sc : cases) {
    const ConvShape& sh = sc.sh;
    CAPTURE(case_name(NarrowCase{sh, sc.shift}));
    const TimedPaths timed("row_sweep");
    for (bool with_bias : {false, true}) {
      CAPTURE(with_bias);
      check_forward_kernel(sh, sc.shift, with_bias, double(sh.r) * sh.s * sh.c + 1,
                           "sweep forward y",
                           [&](float* y, const float* x, const float* wt, const float* bias) {
                             cuda::conv2d_narrow_forward(y, x, wt, bias, sh, s.stream);
                           });
    }
    check_data_kernel(sh, sc.shift, double(sh.r) * sh.s + 1, "sweep backward-data dx",
                      [&](float* dx, const float* dy, const float* wt, GradMode mode) {
                        cuda::conv2d_narrow_backward_data(dx, dy, wt, sh, mode, s.stream);
                      });
    const auto lines = TimedPaths::lines();
    REQUIRE(lines.size() == 2);
    for (const std::string& line : lines) {
      CAPTURE(line);
      CHECK(line.find(sc.sweeps ? ": row_sweep (" : ": per_pixel (") != std::string::npos);
      CHECK((line.find("row_sweep not applicable") == std::string::npos) == sc.sweeps);
    }
  }
}

// The order without path timing: the row sweeps where they apply (measured faster on an H100),
// else a thread per pixel. Which ran shows in the bits: the two sum the same products in
// different orders, so at the head's shape (16 channels, random values) some outputs differ
// between them, and the untimed call must give the sweeps' bits exactly (and, misaligned, where
// the sweeps do not apply, the per-pixel kernel's).
TEST_CASE("cuda narrow conv runs the row sweeps untimed where they apply, else a pixel a thread") {
  const ConvShape sh = ConvShape::make(2, 9, 7, 16, 1, 3, 3, 1, 1);
  const std::vector<float> x = random_vector<float>(size_t(sh.x_size()), 71);
  const std::vector<float> wt = random_vector<float>(size_t(sh.w_size()), 72);
  const std::vector<float> dy = random_vector<float>(size_t(sh.y_size()), 73);
  const TestStream s;
  // Forward and data gradient by `path` ("per_pixel", "row_sweep", or "" untimed), in that
  // order in one vector.
  auto run = [&](const char* path, size_t shift) {
    std::unique_ptr<TimedPaths> timed;
    if (*path != '\0') timed = std::make_unique<TimedPaths>(path);
    const bool before = cuda::path_timing();
    if (!timed) cuda::set_path_timing(false);
    DeviceBuffer<float> d_x(x, shift), d_wt(wt, shift), d_dy(dy, shift);
    DeviceBuffer<float> d_y(dy.size(), shift), d_dx(x.size(), shift);
    cuda::conv2d_narrow_forward(d_y.get(), d_x.get(), d_wt.get(), nullptr, sh, s.stream);
    cuda::conv2d_narrow_backward_data(d_dx.get(), d_dy.get(), d_wt.get(), sh,
                                      GradMode::overwrite, s.stream);
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(s.stream));
    cuda::set_path_timing(before);
    std::vector<float> out = d_y.download();
    const std::vector<float> dx = d_dx.download();
    out.insert(out.end(), dx.begin(), dx.end());
    return out;
  };
  const auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  };
  const std::vector<float> per_pixel = run("per_pixel", 0), sweeps = run("row_sweep", 0);
  REQUIRE_FALSE(same(per_pixel, sweeps));  // else the bits could not tell them apart
  CHECK(same(run("", 0), sweeps));
  CHECK(same(run("", 1), run("per_pixel", 1)));
}

TEST_CASE("cuda narrow conv backward-filter rounds the double sum once, in both grad modes") {
  for (const NarrowCase& nc : kNarrowCases) {
    CAPTURE(case_name(nc));
    const ConvShape& sh = nc.sh;
    check_filter_kernel(sh, nc.shift, 0, cuda::conv2d_narrow_backward_filter_workspace_bytes(sh),
                        "narrow backward-filter dwt",
                        [&](float* dw, const float* dy, const float* x, GradMode mode, void* ws) {
                          cuda::conv2d_narrow_backward_filter(dw, dy, x, sh, mode, ws, nullptr);
                        });
  }
}

// The direct weight gradient: shapes around the decoder's (k = 16 and 32: 4 and 8 output-
// channel groups of 4; k = 4 to 28 otherwise), odd sizes, 1x1 filters, images smaller than
// the filter, inputs cut into 32-channel chunks (the last one partial), rows longer than a
// 64-pixel segment, segments shorter than the pixel lanes, and segments spread over many
// blocks.
const ConvShape kDirectCases[] = {
    ConvShape::make(2, 9, 7, 32, 16, 3, 3, 1, 1),     // the decoder's last conv1, small
    ConvShape::make(3, 5, 6, 16, 16, 3, 3, 1, 1),     // the decoder's last conv2, small
    ConvShape::make(1, 8, 8, 32, 32, 3, 3, 1, 1),     // k = 32: 2 pixel lanes of 4 pixels
    ConvShape::make(2, 4, 5, 128, 32, 3, 3, 1, 1),    // four input-channel chunks
    ConvShape::make(2, 7, 3, 12, 8, 3, 3, 1, 1),      // k = 8: two groups; c = 12
    ConvShape::make(1, 3, 5, 4, 4, 3, 3, 1, 1),       // k = 4, one channel group: 5 lanes
    ConvShape::make(1, 1, 1, 8, 12, 3, 3, 1, 1),      // k = 12: three groups; 1x1 image
    ConvShape::make(3, 6, 7, 20, 16, 1, 1, 1, 0),     // 1x1 filter
    ConvShape::make(2, 5, 9, 8, 24, 3, 3, 1, 1),      // k = 24; 8 lanes of 2 pixels, 3 idle
    ConvShape::make(1, 3, 70, 40, 28, 3, 3, 1, 1),    // rows of 64 + 6 (one lane idle);
                                                      // chunks of 32 + 8 channels
    ConvShape::make(4, 40, 36, 16, 16, 3, 3, 1, 1)};  // 160 segments: 40 blocks of 4

TEST_CASE("cuda direct conv2d_backward_filter applies to few output channels, same filters") {
  const float* aligned = reinterpret_cast<const float*>(uintptr_t(256));
  const float* misaligned = reinterpret_cast<const float*>(uintptr_t(260));
  auto applies = [&](const ConvShape& sh) {
    return cuda::conv2d_direct_backward_filter_applies(sh, aligned, aligned);
  };
  CHECK(applies(ConvShape::make(16, 128, 128, 32, 16, 3, 3, 1, 1)));
  CHECK(applies(ConvShape::make(16, 128, 128, 16, 16, 3, 3, 1, 1)));
  CHECK(applies(ConvShape::make(16, 64, 64, 128, 32, 3, 3, 1, 1)));
  CHECK(applies(ConvShape::make(2, 5, 5, 8, 4, 1, 1, 1, 0)));
  CHECK_FALSE(applies(ConvShape::make(16, 32, 32, 192, 64, 3, 3, 1, 1)));  // k > 32
  CHECK_FALSE(applies(ConvShape::make(16, 64, 64, 32, 32, 3, 3, 2, 1)));   // stride 2
  CHECK_FALSE(applies(ConvShape::make(16, 64, 64, 32, 32, 3, 3, 1, 0)));   // not "same"
  CHECK_FALSE(applies(ConvShape::make(16, 64, 64, 3, 16, 3, 3, 1, 1)));    // c % 4 != 0
  CHECK_FALSE(applies(ConvShape::make(16, 64, 64, 16, 6, 3, 3, 1, 1)));    // k % 4 != 0
  CHECK_FALSE(applies(ConvShape::make(16, 64, 64, 16, 16, 5, 5, 1, 2)));   // 25 taps
  const ConvShape head = ConvShape::make(16, 128, 128, 32, 16, 3, 3, 1, 1);
  CHECK_FALSE(cuda::conv2d_direct_backward_filter_applies(head, misaligned, aligned));
  CHECK_FALSE(cuda::conv2d_direct_backward_filter_applies(head, aligned, misaligned));
  // The encoder's first convolution (3 channels) is not taken, and has no workspace to size.
  const ConvShape rgb = ConvShape::make(16, 128, 128, 3, 64, 7, 7, 2, 3);
  CHECK_FALSE(applies(rgb));
  CHECK(cuda::conv2d_direct_backward_filter_workspace_bytes(rgb) == 0);
  CHECK(cuda::conv2d_direct_backward_filter_float_run(rgb) == 0);
}

TEST_CASE("cuda direct conv backward-filter is within its float bound in both grad modes") {
  for (const ConvShape& sh : kDirectCases) {
    CAPTURE(shape_name(sh));
    check_filter_kernel(sh, 0, double(cuda::conv2d_direct_backward_filter_float_run(sh)),
                        cuda::conv2d_direct_backward_filter_workspace_bytes(sh),
                        "direct backward-filter dwt",
                        [&](float* dw, const float* dy, const float* x, GradMode mode, void* ws) {
                          REQUIRE(cuda::conv2d_direct_backward_filter_applies(sh, dy, x));
                          cuda::conv2d_direct_backward_filter(dw, dy, x, sh, mode, ws, nullptr);
                        });
  }
}

// The direct forward and backward-data: 16 and 32 output channels of the direction (one and
// two channel blocks), 4 to 64 input channels, 1x1 and 3x3 filters, a 1x1 image, and pixel
// counts that leave the last block part empty (2,046 pixels: two blocks of 1,024).
const ConvShape kDirectConvCases[] = {
    ConvShape::make(2, 9, 7, 32, 16, 3, 3, 1, 1),     // the decoder's last conv1, small
    ConvShape::make(3, 5, 6, 16, 16, 3, 3, 1, 1),     // the decoder's last conv2, small
    ConvShape::make(1, 8, 8, 32, 32, 3, 3, 1, 1),     // two channel blocks either way
    ConvShape::make(2, 4, 5, 64, 16, 3, 3, 1, 1),     // 64 input channels forward
    ConvShape::make(2, 4, 5, 16, 64, 3, 3, 1, 1),     // 64 input channels backward-data
    ConvShape::make(1, 1, 1, 16, 16, 3, 3, 1, 1),     // 1x1 image: 8 of 9 taps in padding
    ConvShape::make(3, 6, 7, 16, 16, 1, 1, 1, 0),     // 1x1 filter
    ConvShape::make(2, 33, 31, 16, 32, 3, 3, 1, 1),   // 2,046 pixels
    ConvShape::make(1, 7, 9, 32, 4, 3, 3, 1, 1)};     // 4 input channels backward-data

TEST_CASE("cuda direct conv forward and backward-data apply to 16 or 32 outputs, <= 64 inputs") {
  const float* aligned = reinterpret_cast<const float*>(uintptr_t(256));
  const float* misaligned = reinterpret_cast<const float*>(uintptr_t(260));
  const ConvShape last = ConvShape::make(16, 128, 128, 32, 16, 3, 3, 1, 1);
  CHECK(cuda::conv2d_direct_forward_applies(last, aligned, aligned));
  CHECK(cuda::conv2d_direct_backward_data_applies(last, aligned, aligned));
  CHECK_FALSE(cuda::conv2d_direct_forward_applies(last, misaligned, aligned));
  CHECK_FALSE(cuda::conv2d_direct_backward_data_applies(last, aligned, misaligned));
  // 128 -> 32: forward reads 128 channels (more than 64); backward-data writes 128 (> 32).
  const ConvShape wide = ConvShape::make(16, 64, 64, 128, 32, 3, 3, 1, 1);
  CHECK_FALSE(cuda::conv2d_direct_forward_applies(wide, aligned, aligned));
  CHECK_FALSE(cuda::conv2d_direct_backward_data_applies(wide, aligned, aligned));
  const ConvShape eight = ConvShape::make(2, 8, 8, 16, 8, 3, 3, 1, 1);  // 8 outputs forward
  CHECK_FALSE(cuda::conv2d_direct_forward_applies(eight, aligned, aligned));
  CHECK(cuda::conv2d_direct_backward_data_applies(eight, aligned, aligned));
  const ConvShape strided = ConvShape::make(2, 8, 8, 16, 16, 3, 3, 2, 1);
  CHECK_FALSE(cuda::conv2d_direct_forward_applies(strided, aligned, aligned));
  CHECK_FALSE(cuda::conv2d_direct_backward_data_applies(strided, aligned, aligned));
}

TEST_CASE("cuda direct conv forward is within its float bound") {
  int ran = 0;
  for (const ConvShape& sh : kDirectConvCases) {
    CAPTURE(shape_name(sh));
    if (sh.k % 16 != 0 || sh.k > 32 || sh.c > 64) continue;  // a backward-data case
    ++ran;
    check_forward_kernel(sh, 0, false, double(sh.r) * sh.s * sh.c, "direct forward y",
                         [&](float* y, const float* x, const float* wt, const float*) {
                           REQUIRE(cuda::conv2d_direct_forward_applies(sh, x, y));
                           cuda::conv2d_direct_forward(y, x, wt, sh, nullptr);
                         });
  }
  CHECK(ran == 7);
}

TEST_CASE("cuda direct conv backward-data is within its float bound in both grad modes") {
  int ran = 0;
  for (const ConvShape& sh : kDirectConvCases) {
    CAPTURE(shape_name(sh));
    if (sh.c % 16 != 0 || sh.c > 32 || sh.k > 64) continue;  // a forward case
    ++ran;
    check_data_kernel(sh, 0, double(sh.r) * sh.s * sh.k + 1, "direct backward-data dx",
                      [&](float* dx, const float* dy, const float* wt, GradMode mode) {
                        REQUIRE(cuda::conv2d_direct_backward_data_applies(sh, dy, dx));
                        cuda::conv2d_direct_backward_data(dx, dy, wt, sh, mode, nullptr);
                      });
  }
  CHECK(ran == 8);
}

}  // namespace
}  // namespace unetcu::test
