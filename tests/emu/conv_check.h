// tests/emu/conv_check.h: checking a convolution kernel against the double-precision reference
// convolution (kernels/cpu/conv.cpp in double), shared by the tests of kernels/cuda's
// convolutions.
//
// Each element gets its own error bound from how the kernel sums (bounds in the style of
// Higham's gamma_n = n u / (1 - n u), u = 2^-24), with |terms| from the same reference run on
// |inputs|: a kernel that sums L float terms per element is within gamma_L |terms|. A wrong
// tap, channel or border moves an element by about one product (~0.1 with the tests' random
// inputs), orders of magnitude above these bounds.
#pragma once

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "kernel_test.h"
#include "kernels/conv.h"

namespace unetcu::test {

constexpr double kU = 1.0 / (1 << 24);  // float unit roundoff

// What a kernel multiplies for an input value: the value itself, or (tf32_nearest) the value
// rounded to TF32 as the tensor-core kernels round their operands.
using Operand = double (*)(float);
inline double exact(float x) { return x; }
// x rounded to 11 significant bits (TF32), to nearest with ties away from zero (PTX's
// cvt.rna.tf32.f32), written with double arithmetic apart from the kernels' bit form.
inline double tf32_nearest(float x) {
  if (x == 0.0f || !std::isfinite(x)) return x;
  const double step = std::ldexp(1.0, std::ilogb(x) - 10);
  return std::round(double(x) / step) * step;
}

inline std::vector<double> widen(const std::vector<float>& v, Operand op = exact) {
  std::vector<double> a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = op(v[i]);
  return a;
}
inline std::vector<double> magnitude(const std::vector<float>& v, Operand op = exact) {
  std::vector<double> a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = std::fabs(op(v[i]));
  return a;
}

// The float error bound of a sum of L rounded terms whose magnitudes add up to terms[i]:
// gamma_L = L u / (1 - L u) times that magnitude (Higham's bound for recursive summation).
inline std::vector<double> sum_bound(double L, const std::vector<double>& terms) {
  std::vector<double> bound(terms.size());
  for (size_t i = 0; i < bound.size(); ++i) bound[i] = L * kU / (1 - L * kU) * terms[i];
  return bound;
}

// Every |got - want| within its bound; the report names the worst elements.
inline void check_bounded(const std::vector<float>& got, const std::vector<double>& want,
                          const std::vector<double>& bound, const std::string& what) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0, worst = 0;
  double worst_ratio = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    const double ratio = err / bound[i];
    if (!(err <= bound[i])) ++bad;
    if (!(ratio <= worst_ratio)) {
      worst_ratio = ratio;
      worst = i;
    }
  }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << got.size()
                               << " elements outside their bound; worst [" << worst << "] got "
                               << got[worst] << " want " << want[worst] << " bound "
                               << bound[worst]);
}

// A forward kernel against the double reference: seeded inputs, poisoned output, two thread
// schedules; each output sums at most `L` float terms (gamma_L |terms|) of the products of
// op(x) and op(wt). `launch(y, x, wt, bias)` runs it (bias null without one).
template <class Launch>
void check_forward_kernel(const ConvShape& sh, size_t shift, bool with_bias, double L,
                          const std::string& what, Launch launch, Operand op = exact) {
  const auto x = random_vector<float>(size_t(sh.x_size()), 900);
  const auto wt = random_vector<float>(size_t(sh.w_size()), 901);
  const auto bias = random_vector<float>(size_t(sh.k), 902);
  const std::vector<double> b = widen(bias), b_abs = magnitude(bias);
  std::vector<double> want(size_t(sh.y_size())), terms(want.size());
  cpu::conv2d_forward(want.data(), widen(x, op).data(), widen(wt, op).data(),
                      with_bias ? b.data() : nullptr, sh);
  cpu::conv2d_forward(terms.data(), magnitude(x, op).data(), magnitude(wt, op).data(),
                      with_bias ? b_abs.data() : nullptr, sh);
  const std::vector<double> bound = sum_bound(L, terms);

  const Outputs out = run_deterministic([&] {
    DeviceBuffer<float> dx(x, shift), dwt(wt, shift), db(bias, shift),
        dy(size_t(sh.y_size()), shift);
    dy.poison();
    launch(dy.get(), dx.get(), dwt.get(), with_bias ? db.get() : nullptr);
    sync_device();
    Outputs o;
    o.add("y", dy);
    return o;
  });
  check_bounded(out.get<float>("y"), want, bound, what);
}

// A backward-data kernel against the double reference in both grad modes (poisoned output
// when overwriting); each element sums at most `L` float terms, the old value included, of the
// products of op(dy) and op(wt). `launch(dx, dy, wt, mode)` runs it.
template <class Launch>
void check_data_kernel(const ConvShape& sh, size_t shift, double L, const std::string& what,
                       Launch launch, Operand op = exact) {
  for (GradMode mode : kGradModes) {
    CAPTURE(mode_name(mode));
    const auto dy = random_vector<float>(size_t(sh.y_size()), 910);
    const auto wt = random_vector<float>(size_t(sh.w_size()), 911);
    const auto dx0 = random_vector<float>(size_t(sh.x_size()), 912);
    std::vector<double> want = widen(dx0), terms = magnitude(dx0);
    cpu::conv2d_backward_data(want.data(), widen(dy, op).data(), widen(wt, op).data(), sh, mode);
    cpu::conv2d_backward_data(terms.data(), magnitude(dy, op).data(), magnitude(wt, op).data(), sh,
                              mode);
    const std::vector<double> bound = sum_bound(L, terms);

    const Outputs out = run_deterministic([&] {
      DeviceBuffer<float> ddy(dy, shift), dwt(wt, shift), ddx(dx0, shift);
      if (mode == GradMode::overwrite) ddx.poison();
      launch(ddx.get(), ddy.get(), dwt.get(), mode);
      sync_device();
      Outputs o;
      o.add("dx", ddx);
      return o;
    });
    check_bounded(out.get<float>("dx"), want, bound, what);
  }
}

// A weight-gradient kernel against the double reference in both grad modes, seeded inputs,
// poisoned workspace (and output when overwriting), two thread schedules. The kernel sums at
// most `float_run` products in float per thread first (0: none), then in double, rounded to
// float once: the bound is gamma_run |terms| + u |result| + the double sums' n 2^-53 |terms|,
// of the products of op(dy) and op(x). `launch(dwt, dy, x, mode, workspace)` runs it.
template <class Launch>
void check_filter_kernel(const ConvShape& sh, size_t shift, double float_run,
                         size_t workspace_bytes, const std::string& what, Launch launch,
                         Operand op = exact) {
  for (GradMode mode : kGradModes) {
    CAPTURE(mode_name(mode));
    const auto dy = random_vector<float>(size_t(sh.y_size()), 920);
    const auto x = random_vector<float>(size_t(sh.x_size()), 921);
    const auto dw0 = random_vector<float>(size_t(sh.w_size()), 922);
    std::vector<double> want = widen(dw0), terms = magnitude(dw0);
    cpu::conv2d_backward_filter(want.data(), widen(dy, op).data(), widen(x, op).data(), sh, mode);
    cpu::conv2d_backward_filter(terms.data(), magnitude(dy, op).data(), magnitude(x, op).data(),
                                sh, mode);
    const double n = double(sh.n) * sh.p * sh.q + 1;
    std::vector<double> bound = sum_bound(float_run, terms);
    for (size_t i = 0; i < bound.size(); ++i)
      bound[i] += kU * std::fabs(want[i]) + 2 * n * 0x1p-53 * terms[i] + 1e-30;

    const Outputs out = run_deterministic([&] {
      DeviceBuffer<float> ddy(dy, shift), dx(x, shift), ddw(dw0, shift);
      DeviceBuffer<unsigned char> ws(workspace_bytes);
      ws.poison();
      if (mode == GradMode::overwrite) ddw.poison();
      launch(ddw.get(), ddy.get(), dx.get(), mode, ws.get());
      sync_device();
      Outputs o;
      o.add("dwt", ddw);
      o.add("workspace", ws);
      return o;
    });
    check_bounded(out.get<float>("dwt"), want, bound, what);
  }
}

inline std::string shape_name(const ConvShape& sh) {
  std::ostringstream os;
  os << "n" << sh.n << " " << sh.h << "x" << sh.w << "x" << sh.c << " -> " << sh.k << ", "
     << sh.r << "x" << sh.s << " stride " << sh.stride << " pad " << sh.pad;
  return os.str();
}

}  // namespace unetcu::test
