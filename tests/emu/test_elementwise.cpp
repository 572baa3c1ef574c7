// tests/emu/test_elementwise.cpp: relu, add, add+relu and input normalisation (kernels/cuda)
// against kernels/cpu. These kernels do the reference's float operations in its order, so the
// results must match bit for bit.
#include <limits>

#include "kernel_test.h"
#include "kernels/elementwise.h"
#include "kernels/normalize.h"

namespace unetcu::test {
namespace {

// Odd sizes exercise the scalar tail after the float4 body; shift 1 misaligns every buffer so
// the whole array takes the scalar path.
struct FlatCase {
  int64_t count;
  size_t shift;
};
constexpr FlatCase kFlatCases[] = {{1, 0}, {3, 0}, {4, 0}, {5, 0}, {1000, 0}, {4099, 0},
                                   {65543, 0}, {7, 1}, {4099, 1}};

std::vector<float> relu_input(int64_t count, uint64_t seed) {
  auto x = random_vector<float>(size_t(count), seed, -2.0, 2.0);
  // Zeros of both signs and a NaN: relu keeps the NaN and maps -0 to -0 (as `v < 0 ? 0 : v`).
  if (count > 3) {
    x[0] = 0.0f;
    x[1] = -0.0f;
    x[2] = std::numeric_limits<float>::quiet_NaN();
  }
  return x;
}

TEST_CASE("cuda relu_forward matches the reference") {
  for (const FlatCase& fc : kFlatCases) {
    CAPTURE(fc.count);
    CAPTURE(fc.shift);
    const auto x = relu_input(fc.count, 11);
    std::vector<float> want(x.size());
    cpu::relu_forward(want.data(), x.data(), fc.count);
    const Outputs out = run_deterministic([&] {
      DeviceBuffer<float> dx(x, fc.shift), dy(x.size(), fc.shift);
      dy.poison();
      cuda::relu_forward(dy.get(), dx.get(), fc.count, nullptr);
      sync_device();
      Outputs o;
      o.add("y", dy);
      return o;
    });
    check_same_bits(out.get<float>("y"), want, "relu y");
  }
}

TEST_CASE("cuda relu_forward in place") {
  const auto x = relu_input(4099, 12);
  std::vector<float> want(x.size());
  cpu::relu_forward(want.data(), x.data(), int64_t(x.size()));
  const Outputs out = run_deterministic([&] {
    DeviceBuffer<float> buf(x);
    cuda::relu_forward(buf.get(), buf.get(), int64_t(x.size()), nullptr);
    sync_device();
    Outputs o;
    o.add("y", buf);
    return o;
  });
  check_same_bits(out.get<float>("y"), want, "relu in place");
}

TEST_CASE("cuda relu_backward matches the reference in both grad modes") {
  for (const FlatCase& fc : kFlatCases) {
    for (GradMode mode : kGradModes) {
      CAPTURE(fc.count);
      CAPTURE(fc.shift);
      CAPTURE(mode_name(mode));
      const auto x = relu_input(fc.count, 21);
      std::vector<float> y(x.size());
      cpu::relu_forward(y.data(), x.data(), fc.count);
      const auto dy = random_vector<float>(x.size(), 22);
      const auto dx0 = random_vector<float>(x.size(), 23);
      std::vector<float> want = dx0;
      cpu::relu_backward(want.data(), dy.data(), y.data(), fc.count, mode);
      const Outputs out = run_deterministic([&] {
        DeviceBuffer<float> ddy(dy, fc.shift), dyv(y, fc.shift), ddx(dx0, fc.shift);
        if (mode == GradMode::overwrite) ddx.poison();
        cuda::relu_backward(ddx.get(), ddy.get(), dyv.get(), fc.count, mode, nullptr);
        sync_device();
        Outputs o;
        o.add("dx", ddx);
        return o;
      });
      check_same_bits(out.get<float>("dx"), want, "relu dx");
    }
  }
}

TEST_CASE("cuda add_forward and add_relu_forward match the reference") {
  for (const FlatCase& fc : kFlatCases) {
    for (bool with_relu : {false, true}) {
      CAPTURE(fc.count);
      CAPTURE(fc.shift);
      CAPTURE(with_relu);
      const auto a = random_vector<float>(size_t(fc.count), 31, -2.0, 2.0);
      const auto b = random_vector<float>(size_t(fc.count), 32, -2.0, 2.0);
      std::vector<float> want(a.size());
      if (with_relu) cpu::add_relu_forward(want.data(), a.data(), b.data(), fc.count);
      else cpu::add_forward(want.data(), a.data(), b.data(), fc.count);
      const Outputs out = run_deterministic([&] {
        DeviceBuffer<float> da(a, fc.shift), db(b, fc.shift), dy(a.size(), fc.shift);
        dy.poison();
        if (with_relu) cuda::add_relu_forward(dy.get(), da.get(), db.get(), fc.count, nullptr);
        else cuda::add_forward(dy.get(), da.get(), db.get(), fc.count, nullptr);
        sync_device();
        Outputs o;
        o.add("y", dy);
        return o;
      });
      check_same_bits(out.get<float>("y"), want, "add y");
    }
  }
}

TEST_CASE("cuda add_relu_forward in place on its first input") {
  const auto a = random_vector<float>(1001, 33);
  const auto b = random_vector<float>(1001, 34);
  std::vector<float> want(a.size());
  cpu::add_relu_forward(want.data(), a.data(), b.data(), int64_t(a.size()));
  const Outputs out = run_deterministic([&] {
    DeviceBuffer<float> da(a), db(b);
    cuda::add_relu_forward(da.get(), da.get(), db.get(), int64_t(a.size()), nullptr);
    sync_device();
    Outputs o;
    o.add("y", da);
    return o;
  });
  check_same_bits(out.get<float>("y"), want, "add_relu in place");
}

TEST_CASE("cuda normalize_input matches the reference") {
  // Pixel counts around multiples of 4 (the vector step handles 4 pixels); shift 1 misaligns
  // both the bytes and the floats.
  const NormalizeParams prm;
  for (const FlatCase& fc : {FlatCase{1, 0}, FlatCase{3, 0}, FlatCase{4, 0}, FlatCase{5, 0},
                             FlatCase{1000, 0}, FlatCase{4099, 0}, FlatCase{17, 1}}) {
    CAPTURE(fc.count);
    CAPTURE(fc.shift);
    const auto raw = random_vector<double>(size_t(fc.count) * 3, 41, 0.0, 256.0);
    std::vector<uint8_t> img(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) img[i] = uint8_t(raw[i]);
    img[0] = 0;
    if (img.size() > 1) img[1] = 255;
    std::vector<float> want(img.size());
    cpu::normalize_input(want.data(), img.data(), fc.count, prm);
    const Outputs out = run_deterministic([&] {
      DeviceBuffer<uint8_t> dimg(img, fc.shift);
      DeviceBuffer<float> dx(img.size(), fc.shift);
      dx.poison();
      cuda::normalize_input(dx.get(), dimg.get(), fc.count, prm, nullptr);
      sync_device();
      Outputs o;
      o.add("x", dx);
      return o;
    });
    check_same_bits(out.get<float>("x"), want, "normalized x");
  }
}

}  // namespace
}  // namespace unetcu::test
