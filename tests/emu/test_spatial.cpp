// tests/emu/test_spatial.cpp: maxpool, nearest 2x upsample, concat and the conv bias kernels
// (kernels/cuda) against kernels/cpu. Pool, upsample and concat add the same floats in the
// same order as the reference (the pool backward is a gather in window order there too), so
// they must match bit for bit; the bias ops have their own tolerances below.
#include <limits>

#include "kernel_test.h"
#include "kernels/concat.h"
#include "kernels/conv.h"
#include "kernels/pool.h"
#include "kernels/upsample.h"

namespace unetcu::test {
namespace {

struct ImageCase {
  int n, h, w, c;
  size_t shift;  // misaligns the activations (scalar path)
};

// 1x1 and 2x2 images (a window hangs over every edge), odd sizes, c % 4 != 0 (scalar path) and
// the vectorised shapes.
constexpr ImageCase kPoolCases[] = {{1, 1, 1, 1, 0},  {1, 2, 2, 1, 0},   {2, 7, 9, 3, 0},
                                    {2, 16, 16, 8, 0}, {1, 33, 17, 12, 0}, {2, 12, 10, 64, 0},
                                    {1, 9, 7, 8, 1}};

// Values on a coarse grid so that windows hold ties (argmax must pick the first in row-major
// order), with a NaN and some -inf (a NaN wins its windows; padding never does).
std::vector<float> pool_input(size_t count, uint64_t seed) {
  auto x = random_vector<float>(count, seed, -3.0, 3.0);
  for (auto& v : x) v = float(int(v));
  if (count > 10) {
    x[count / 2] = std::numeric_limits<float>::quiet_NaN();
    x[1] = -std::numeric_limits<float>::infinity();
  }
  return x;
}

TEST_CASE("cuda maxpool forward and backward match the reference") {
  for (const ImageCase& ic : kPoolCases) {
    const MaxPoolShape sh = MaxPoolShape::make(ic.n, ic.h, ic.w, ic.c);
    const size_t in_count = size_t(ic.n) * ic.h * ic.w * ic.c;
    const size_t out_count = size_t(ic.n) * sh.p * sh.q * ic.c;
    const auto x = pool_input(in_count, 500 + uint64_t(in_count));
    std::vector<float> y(out_count);
    std::vector<int32_t> argmax(out_count);
    cpu::maxpool_forward(y.data(), argmax.data(), x.data(), sh);
    CAPTURE(ic.n);
    CAPTURE(ic.h);
    CAPTURE(ic.w);
    CAPTURE(ic.c);
    CAPTURE(ic.shift);

    const Outputs fwd = run_deterministic([&] {
      DeviceBuffer<float> dx(x, ic.shift), dy(out_count, ic.shift);
      DeviceBuffer<int32_t> darg(out_count, ic.shift);
      dy.poison();
      darg.poison();
      cuda::maxpool_forward(dy.get(), darg.get(), dx.get(), sh, nullptr);
      sync_device();
      Outputs o;
      o.add("y", dy);
      o.add("argmax", darg);
      return o;
    });
    check_same_bits(fwd.get<float>("y"), y, "maxpool y");
    check_same_bits(fwd.get<int32_t>("argmax"), argmax, "maxpool argmax");

    for (GradMode mode : kGradModes) {
      CAPTURE(mode_name(mode));
      const auto dy = random_vector<float>(out_count, 501);
      const auto dx0 = random_vector<float>(in_count, 502);
      std::vector<float> want = dx0;
      cpu::maxpool_backward(want.data(), dy.data(), argmax.data(), sh, mode);
      const Outputs bwd = run_deterministic([&] {
        DeviceBuffer<float> ddy(dy, ic.shift), ddx(dx0, ic.shift);
        DeviceBuffer<int32_t> darg(argmax, ic.shift);
        if (mode == GradMode::overwrite) ddx.poison();
        cuda::maxpool_backward(ddx.get(), ddy.get(), darg.get(), sh, mode, nullptr);
        sync_device();
        Outputs o;
        o.add("dx", ddx);
        return o;
      });
      check_same_bits(bwd.get<float>("dx"), want, "maxpool dx");
    }
  }
}

constexpr ImageCase kUpsampleCases[] = {{1, 1, 1, 1, 0}, {2, 3, 5, 3, 0}, {2, 8, 8, 16, 0},
                                        {1, 7, 9, 64, 0}, {1, 5, 6, 8, 1}};

TEST_CASE("cuda upsample2x forward and backward match the reference") {
  for (const ImageCase& ic : kUpsampleCases) {
    const UpsampleShape sh{ic.n, ic.h, ic.w, ic.c};
    const size_t in_count = size_t(ic.n) * ic.h * ic.w * ic.c;
    const size_t out_count = 4 * in_count;
    CAPTURE(ic.n);
    CAPTURE(ic.h);
    CAPTURE(ic.w);
    CAPTURE(ic.c);
    CAPTURE(ic.shift);
    const auto x = random_vector<float>(in_count, 600);
    std::vector<float> y(out_count);
    cpu::upsample2x_forward(y.data(), x.data(), sh);
    const Outputs fwd = run_deterministic([&] {
      DeviceBuffer<float> dx(x, ic.shift), dy(out_count, ic.shift);
      dy.poison();
      cuda::upsample2x_forward(dy.get(), dx.get(), sh, nullptr);
      sync_device();
      Outputs o;
      o.add("y", dy);
      return o;
    });
    check_same_bits(fwd.get<float>("y"), y, "upsample y");

    for (GradMode mode : kGradModes) {
      CAPTURE(mode_name(mode));
      const auto dy = random_vector<float>(out_count, 601);
      const auto dx0 = random_vector<float>(in_count, 602);
      std::vector<float> want = dx0;
      cpu::upsample2x_backward(want.data(), dy.data(), sh, mode);
      const Outputs bwd = run_deterministic([&] {
        DeviceBuffer<float> ddy(dy, ic.shift), ddx(dx0, ic.shift);
        if (mode == GradMode::overwrite) ddx.poison();
        cuda::upsample2x_backward(ddx.get(), ddy.get(), sh, mode, nullptr);
        sync_device();
        Outputs o;
        o.add("dx", ddx);
        return o;
      });
      check_same_bits(bwd.get<float>("dx"), want, "upsample dx");
    }
  }
}

struct ConcatCase {
  int64_t rows;
  int ca, cb;
  size_t shift;
};
// Widths that are and are not multiples of 4 (the float4 path needs both), the decoder's 64+64,
// and a misaligned case.
constexpr ConcatCase kConcatCases[] = {
    {10, 3, 5, 0}, {64, 16, 8, 0}, {129, 64, 64, 0}, {50, 4, 6, 0}, {33, 8, 4, 1}};

TEST_CASE("cuda concat forward and backward match the reference") {
  for (const ConcatCase& cc : kConcatCases) {
    const ConcatShape sh{cc.rows, cc.ca, cc.cb};
    const size_t na = size_t(cc.rows) * cc.ca, nb = size_t(cc.rows) * cc.cb, ny = na + nb;
    CAPTURE(cc.rows);
    CAPTURE(cc.ca);
    CAPTURE(cc.cb);
    CAPTURE(cc.shift);
    const auto a = random_vector<float>(na, 700), b = random_vector<float>(nb, 701);
    std::vector<float> y(ny);
    cpu::concat_forward(y.data(), a.data(), b.data(), sh);
    const Outputs fwd = run_deterministic([&] {
      DeviceBuffer<float> da(a, cc.shift), db(b, cc.shift), dy(ny, cc.shift);
      dy.poison();
      cuda::concat_forward(dy.get(), da.get(), db.get(), sh, nullptr);
      sync_device();
      Outputs o;
      o.add("y", dy);
      return o;
    });
    check_same_bits(fwd.get<float>("y"), y, "concat y");

    const auto dy = random_vector<float>(ny, 702);
    const auto da0 = random_vector<float>(na, 703), db0 = random_vector<float>(nb, 704);
    for (GradMode mode_a : kGradModes) {
      for (int which = 0; which < 3; ++which) {  // both gradients, only da, only db
        const bool want_a = which != 2, want_b = which != 1;
        const GradMode mode_b = mode_a == GradMode::overwrite ? GradMode::accumulate
                                                              : GradMode::overwrite;
        CAPTURE(mode_name(mode_a));
        CAPTURE(which);
        std::vector<float> ra = da0, rb = db0;
        cpu::concat_backward(want_a ? ra.data() : nullptr, want_b ? rb.data() : nullptr,
                             dy.data(), sh, mode_a, mode_b);
        const Outputs bwd = run_deterministic([&] {
          DeviceBuffer<float> ddy(dy, cc.shift), dda(da0, cc.shift), ddb(db0, cc.shift);
          if (want_a && mode_a == GradMode::overwrite) dda.poison();
          if (want_b && mode_b == GradMode::overwrite) ddb.poison();
          cuda::concat_backward(want_a ? dda.get() : nullptr, want_b ? ddb.get() : nullptr,
                                ddy.get(), sh, mode_a, mode_b, nullptr);
          sync_device();
          Outputs o;
          o.add("da", dda);
          o.add("db", ddb);
          return o;
        });
        // A gradient that is not wanted must stay untouched.
        check_same_bits(bwd.get<float>("da"), ra, "concat da");
        check_same_bits(bwd.get<float>("db"), rb, "concat db");
      }
    }
  }
}

// The head's 1-channel conv and two wider ones.
const ConvShape kBiasShapes[] = {ConvShape::make(2, 9, 7, 3, 1, 3, 3, 1, 1),
                                 ConvShape::make(1, 8, 8, 4, 8, 3, 3, 1, 1),
                                 ConvShape::make(2, 5, 6, 3, 5, 1, 1, 1, 0),
                                 ConvShape::make(4, 32, 32, 2, 1, 3, 3, 1, 1)};

TEST_CASE("cuda conv2d_add_bias completes the bias-free reference convolution") {
  // The reference preloads the bias into the GEMM output (bias + sum); the kernel adds it
  // after the sum: a few ulp of the partial sums (|y| <= ~10 here) apart.
  for (const ConvShape& sh : kBiasShapes) {
    CAPTURE(sh.n);
    CAPTURE(sh.k);
    const auto x = random_vector<float>(size_t(sh.x_size()), 800);
    const auto wt = random_vector<float>(size_t(sh.w_size()), 801);
    const auto bias = random_vector<float>(size_t(sh.k), 802);
    std::vector<float> y_plain(size_t(sh.y_size())), want(size_t(sh.y_size()));
    cpu::conv2d_forward(y_plain.data(), x.data(), wt.data(), nullptr, sh);
    cpu::conv2d_forward(want.data(), x.data(), wt.data(), bias.data(), sh);
    const Outputs out = run_deterministic([&] {
      DeviceBuffer<float> dy(y_plain), dbias(bias);
      cuda::conv2d_add_bias(dy.get(), dbias.get(), sh, nullptr);
      sync_device();
      Outputs o;
      o.add("y", dy);
      return o;
    });
    check_close(out.get<float>("y"), want, 1e-5, 1e-5, "y with bias");
  }
}

TEST_CASE("cuda conv2d_backward_bias matches the reference in both grad modes") {
  // Both sum in double and round once; only the order differs: 1 float ulp at most (plus an
  // absolute floor for sums that cancel to near zero).
  for (const ConvShape& sh : kBiasShapes) {
    for (GradMode mode : kGradModes) {
      CAPTURE(sh.n);
      CAPTURE(sh.k);
      CAPTURE(mode_name(mode));
      const auto dy = random_vector<float>(size_t(sh.y_size()), 810);
      const auto db0 = random_vector<float>(size_t(sh.k), 811);
      std::vector<float> want = db0;
      cpu::conv2d_backward_bias(want.data(), dy.data(), sh, mode);
      const Outputs out = run_deterministic([&] {
        DeviceBuffer<float> ddy(dy), ddb(db0);
        DeviceBuffer<unsigned char> ws(cuda::conv2d_backward_bias_workspace_bytes(sh));
        ws.poison();
        if (mode == GradMode::overwrite) ddb.poison();
        cuda::conv2d_backward_bias(ddb.get(), ddy.get(), sh, mode, ws.get(), nullptr);
        sync_device();
        Outputs o;
        o.add("dbias", ddb);
        o.add("workspace", ws);
        return o;
      });
      check_close(out.get<float>("dbias"), want, 1e-6, 1e-6, "dbias");
    }
  }
}

// The decoder's upsampling written in place into the first channels of the concatenation
// after it (UpsampleShape::pitch, concat_forward without its first input), and its gradient
// read from there (concat_backward without da): the same bits as upsampling into a tensor of
// its own and concatenating, in the CPU reference and in the kernels, both grad modes. Widths:
// both float4 (16 + 16), an upsampled width that is not (3 + 5), a pitch that is not (4 + 6),
// and misaligned buffers.
struct InPlaceCase {
  int n, h, w, c_up, c_skip;
  size_t shift;
};
constexpr InPlaceCase kInPlaceCases[] = {
    {2, 4, 5, 16, 16, 0}, {1, 3, 3, 3, 5, 0}, {2, 2, 3, 4, 6, 0}, {1, 4, 4, 8, 8, 1}};

TEST_CASE("upsample2x written into a concatenation in place equals upsample then concat") {
  for (const InPlaceCase& ic : kInPlaceCases) {
    CAPTURE(ic.n);
    CAPTURE(ic.h);
    CAPTURE(ic.w);
    CAPTURE(ic.c_up);
    CAPTURE(ic.c_skip);
    CAPTURE(ic.shift);
    const UpsampleShape plain{ic.n, ic.h, ic.w, ic.c_up};
    UpsampleShape in_place = plain;
    in_place.pitch = ic.c_up + ic.c_skip;
    const int64_t rows = int64_t(ic.n) * 4 * ic.h * ic.w;  // output pixels
    const ConcatShape cat{rows, ic.c_up, ic.c_skip};
    const size_t n_x = size_t(rows / 4) * size_t(ic.c_up), n_up = 4 * n_x;
    const size_t n_skip = size_t(rows) * size_t(ic.c_skip), n_y = n_up + n_skip;
    const auto x = random_vector<float>(n_x, 800), skip = random_vector<float>(n_skip, 801);

    // Forward: the composition, then the in-place form over a poisoned output.
    std::vector<float> up(n_up), want(n_y);
    cpu::upsample2x_forward(up.data(), x.data(), plain);
    cpu::concat_forward(want.data(), up.data(), skip.data(), cat);
    std::vector<float> got(n_y, std::numeric_limits<float>::quiet_NaN());
    cpu::upsample2x_forward(got.data(), x.data(), in_place);
    cpu::concat_forward(got.data(), nullptr, skip.data(), cat);
    check_same_bits(got, want, "reference y in place");
    const Outputs fwd = run_deterministic([&] {
      DeviceBuffer<float> dx(x, ic.shift), dskip(skip, ic.shift), dy(n_y, ic.shift);
      dy.poison();
      cuda::upsample2x_forward(dy.get(), dx.get(), in_place, nullptr);
      cuda::concat_forward(dy.get(), nullptr, dskip.get(), cat, nullptr);
      sync_device();
      Outputs o;
      o.add("y", dy);
      return o;
    });
    check_same_bits(fwd.get<float>("y"), want, "y in place");

    // Backward: dy split by the concatenation, then upsampling's sum, against dx read from
    // dy in place and the skip's part split alone.
    const auto dy = random_vector<float>(n_y, 802);
    const auto dx0 = random_vector<float>(n_x, 803), dskip0 = random_vector<float>(n_skip, 804);
    for (GradMode mode : kGradModes) {
      CAPTURE(mode_name(mode));
      std::vector<float> dup(n_up), want_dx = dx0, want_dskip = dskip0;
      cpu::concat_backward(dup.data(), want_dskip.data(), dy.data(), cat, GradMode::overwrite,
                           mode);
      cpu::upsample2x_backward(want_dx.data(), dup.data(), plain, mode);
      std::vector<float> got_dx = dx0, got_dskip = dskip0;
      cpu::concat_backward(nullptr, got_dskip.data(), dy.data(), cat, mode, mode);
      cpu::upsample2x_backward(got_dx.data(), dy.data(), in_place, mode);
      check_same_bits(got_dx, want_dx, "reference dx in place");
      check_same_bits(got_dskip, want_dskip, "reference dskip in place");
      const Outputs bwd = run_deterministic([&] {
        DeviceBuffer<float> ddy(dy, ic.shift), ddx(dx0, ic.shift), ddskip(dskip0, ic.shift);
        if (mode == GradMode::overwrite) {
          ddx.poison();
          ddskip.poison();
        }
        cuda::concat_backward(nullptr, ddskip.get(), ddy.get(), cat, mode, mode, nullptr);
        cuda::upsample2x_backward(ddx.get(), ddy.get(), in_place, mode, nullptr);
        sync_device();
        Outputs o;
        o.add("dx", ddx);
        o.add("dskip", ddskip);
        return o;
      });
      check_same_bits(bwd.get<float>("dx"), want_dx, "dx in place");
      check_same_bits(bwd.get<float>("dskip"), want_dskip, "dskip in place");
    }
  }
}

}  // namespace
}  // namespace unetcu::test
