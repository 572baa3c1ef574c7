// tests/cpu/test_model.cpp: the ResNet34-UNet's parameter table against smp's state_dict
// (tests/fixtures/smp_unet_resnet34_state_dict.txt, the listing of the spec's Appendix A),
// the graph's shapes, the backward walk's reports of final gradients, and the
// initialisation's statistics and determinism.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/error.h"
#include "engine/executor.h"
#include "model/unet.h"

using namespace unetcu;

namespace {

struct StateEntry { std::string name, shape, kind; };

std::vector<StateEntry> read_fixture() {
  std::ifstream f(std::string(UNETCU_SOURCE_DIR) + "/tests/fixtures/smp_unet_resnet34_state_dict.txt");
  REQUIRE(f.good());
  std::vector<StateEntry> out;
  StateEntry e;
  while (f >> e.name >> e.shape >> e.kind) out.push_back(e);
  return out;
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t;
  for (size_t i = 0; i < s.size(); ++i) t += (i ? "x" : "") + std::to_string(s[i]);
  return t;
}

}  // namespace

TEST_CASE("parameter table matches smp's state_dict: names, order, shapes, counts") {
  const ModelSpec& spec = unet_spec();
  CHECK(spec.params.size() == 140);
  CHECK(spec.param_count == 24436369);
  CHECK(spec.bns.size() == 46);
  int64_t conv = 0;
  for (const auto& p : spec.params)
    if (p.kind == ParamKind::conv_weight) conv += p.count;
  CHECK(conv == 24417360);

  // Walk the fixture: parameters must appear in the same order with the same shapes, and every
  // buffer must belong to the BatchNorm just listed.
  auto fixture = read_fixture();
  REQUIRE(fixture.size() == 278);
  size_t pi = 0, bi = 0;
  for (const auto& e : fixture) {
    if (e.kind == "P") {
      REQUIRE(pi < spec.params.size());
      CHECK_MESSAGE(spec.params[pi].name == e.name, "param " << pi);
      CHECK_MESSAGE(shape_text(spec.params[pi].torch_shape) == e.shape, e.name);
      ++pi;
    } else {
      const std::string suffix = e.name.substr(e.name.rfind('.') + 1);
      const std::string prefix = e.name.substr(0, e.name.rfind('.'));
      REQUIRE(bi < spec.bns.size());
      CHECK_MESSAGE(spec.bns[bi].prefix == prefix, e.name);
      if (suffix == "num_batches_tracked") { CHECK(e.shape == "scalar"); ++bi; }
      else CHECK(e.shape == std::to_string(spec.bns[bi].c));
    }
  }
  CHECK(pi == spec.params.size());
  CHECK(bi == spec.bns.size());
}

TEST_CASE("graph shapes follow the spec at 128x128") {
  Unet u = build_unet(2, 128, 128);
  const auto& acts = u.graph.acts();
  auto find = [&](const std::string& name) -> const ActInfo& {
    for (const auto& a : acts) if (a.name == name) return a;
    FAIL("no activation " << name);
    return acts[0];
  };
  auto check = [&](const std::string& name, int h, int c) {
    const ActInfo& a = find(name);
    CHECK_MESSAGE(a.h == h, name); CHECK_MESSAGE(a.w == h, name); CHECK_MESSAGE(a.c == c, name);
  };
  check("encoder.bn1", 64, 64);
  check("encoder.maxpool", 32, 64);
  check("encoder.layer1.2.out", 32, 64);
  check("encoder.layer2.3.out", 16, 128);
  check("encoder.layer3.5.out", 8, 256);
  check("encoder.layer4.2.out", 4, 512);
  check("decoder.blocks.0.concat", 8, 768);
  check("decoder.blocks.3.concat", 64, 128);
  check("decoder.blocks.4.conv2.1", 128, 16);
  const ActInfo& out = acts[size_t(u.graph.output())];
  CHECK(out.n == 2); CHECK(out.h == 128); CHECK(out.c == 1);
  CHECK_THROWS_AS(build_unet(2, 100, 100), Error);
}

TEST_CASE("fan-out points accumulate their gradients, first writers overwrite") {
  Unet u = build_unet(1, 64, 64);
  int accumulate = 0;
  for (const auto& nd : u.graph.nodes()) {
    if (nd.op == OpKind::relu) continue;
    accumulate += nd.mode0 == GradMode::accumulate;
    if (nd.in1 >= 0) accumulate += nd.mode1 == GradMode::accumulate;
  }
  // Fan-outs: each of the 13 identity blocks reuses its input (16 blocks - 3 with downsample
  // conv, whose input feeds conv1 and downsample.0: also a fan-out), so 16 block inputs, plus
  // the 4 skips f1..f4 each consumed by the encoder and a decoder concat: 16 + 4 = 20.
  CHECK(accumulate == 20);
}

// Early Adam (ModelSession) updates what the backward walk reports as final while the walk
// goes on: every reported offset must have all gradients at and above it written already (the
// CPU backend runs each op as it is issued), and the reports must fall to 0.
TEST_CASE("the backward walk reports, going down, where the final parameter gradients start") {
  const ModelSpec& spec = unet_spec();
  auto backend = make_cpu_backend();
  const Unet u = build_unet(1, 32, 32);
  Executor exec(*backend, u.graph);
  std::vector<float> params(size_t(spec.param_count)), running(size_t(spec.running_count));
  init_unet(params.data(), running.data(), spec, 7);
  float* image = exec.value(u.graph.input());
  const int64_t inputs = u.graph.acts()[size_t(u.graph.input())].numel();
  for (int64_t i = 0; i < inputs; ++i) image[i] = float(i % 29) / 14.0f - 1.0f;
  exec.forward(params.data(), running.data(), true);
  const int64_t outputs = u.graph.acts()[size_t(u.graph.output())].numel();
  std::fill(exec.grad(u.graph.output()), exec.grad(u.graph.output()) + outputs, 0.25f);
  std::vector<float> grads(params.size(), std::nanf(""));
  std::vector<int64_t> reports;
  bool all_written = true, falling = true, tight = true;
  exec.backward(params.data(), grads.data(), [&](int64_t first_final) {
    for (size_t i = size_t(first_final); i < grads.size(); ++i) all_written &= !std::isnan(grads[i]);
    if (!reports.empty()) falling &= first_final <= reports.back();
    // Not trivially low: the parameter just below it is still to come.
    if (first_final > 0) tight &= std::isnan(grads[size_t(first_final - 1)]);
    reports.push_back(first_final);
  });
  CHECK(all_written);
  CHECK(falling);
  CHECK(tight);
  REQUIRE(!reports.empty());
  CHECK(reports.back() == 0);
  // One report per node with parameters (the CPU backend fuses nothing): 47 convolutions and
  // 46 BatchNorms.
  const auto& nodes = u.graph.nodes();
  const auto with_params = std::count_if(nodes.begin(), nodes.end(), [](const Node& nd) {
    return nd.weight >= 0 || nd.gamma >= 0;
  });
  CHECK(with_params == 93);
  CHECK(int64_t(reports.size()) == int64_t(with_params));
  CHECK(std::none_of(grads.begin(), grads.end(), [](float g) { return std::isnan(g); }));
}

TEST_CASE("initialisation: smp's distributions, reproducible per seed") {
  const ModelSpec& spec = unet_spec();
  std::vector<float> p(size_t(spec.param_count)), r(size_t(spec.running_count));
  init_unet(p.data(), r.data(), spec, 7);
  for (const auto& e : spec.params) {
    const float* v = p.data() + e.offset;
    double sum = 0, sq = 0, maxabs = 0;
    for (int64_t i = 0; i < e.count; ++i) { sum += v[i]; sq += double(v[i]) * v[i]; maxabs = std::max(maxabs, std::fabs(double(v[i]))); }
    const double mean = sum / double(e.count), var = sq / double(e.count) - mean * mean;
    const auto& s = e.torch_shape;
    switch (e.init) {
      case InitKind::ones: CHECK(mean == 1.0); CHECK(var == doctest::Approx(0).epsilon(1e-12)); break;
      case InitKind::zeros: CHECK(maxabs == 0.0); break;
      case InitKind::kaiming_normal_fan_out: {
        const double want = 2.0 / double(s[0] * s[2] * s[3]);
        // Sample variance of n normals has relative sd sqrt(2/n); allow 6 sd (n >= 8192 here).
        CHECK_MESSAGE(std::fabs(var / want - 1) < 6 * std::sqrt(2.0 / double(e.count)), e.name);
        break;
      }
      case InitKind::kaiming_uniform_fan_in:
      case InitKind::xavier_uniform: {
        const double fan_in = double(s[1] * s[2] * s[3]), fan_out = double(s[0] * s[2] * s[3]);
        const double bound = e.init == InitKind::xavier_uniform ? std::sqrt(6 / (fan_in + fan_out))
                                                                : std::sqrt(6 / fan_in);
        // float rounding is monotonic, so no draw exceeds the bound rounded to float
        CHECK_MESSAGE(maxabs <= double(float(bound)), e.name);
        CHECK_MESSAGE(maxabs > 0.9 * bound, e.name);  // the draws reach near the bound
        // Uniform(-b, b) variance b^2/3; the head has 144 values, so allow 6 relative sd.
        CHECK_MESSAGE(std::fabs(var / (bound * bound / 3) - 1) < 6 * std::sqrt(0.8 / double(e.count)), e.name);
        break;
      }
    }
  }
  for (const auto& bn : spec.bns) {
    CHECK(r[size_t(bn.running_mean)] == 0.0f);
    CHECK(r[size_t(bn.running_var)] == 1.0f);
  }
  std::vector<float> p2(p.size()), r2(r.size()), p3(p.size());
  init_unet(p2.data(), r2.data(), spec, 7);
  CHECK(p == p2);
  init_unet(p3.data(), r2.data(), spec, 8);
  CHECK(p != p3);
}

TEST_CASE("KRSC <-> OIHW round trip") {
  std::vector<int64_t> shape = {4, 3, 2, 5};
  std::vector<float> oihw(120), krsc(120), back(120);
  for (int i = 0; i < 120; ++i) oihw[size_t(i)] = float(i);
  oihw_to_krsc(krsc.data(), oihw.data(), shape);
  // element (o=1, i=2, h=1, w=3) sits at OIHW index ((1*3+2)*2+1)*5+3 = 58
  CHECK(krsc[size_t(((1 * 2 + 1) * 5 + 3) * 3 + 2)] == 58.0f);
  krsc_to_oihw(back.data(), krsc.data(), shape);
  CHECK(back == oihw);
}
