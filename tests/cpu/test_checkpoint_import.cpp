// tests/cpu/test_checkpoint_import.cpp: weights that come from PyTorch rather than from unetcu:
// a torchvision ResNet-34 state_dict for --encoder-weights (fc.* ignored, every problem
// named), state_dicts in half, bfloat16 or double precision and without num_batches_tracked,
// and files that are not checkpoints at all (not safetensors, empty, truncated, bad header).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cli_util.h"
#include "engine/error.h"
#include "engine/fileio.h"
#include "engine/safetensors.h"
#include "model/checkpoint.h"
#include "test_util.h"

using namespace unetcu;

namespace {

// A torchvision-style ResNet-34 state_dict (smp's encoder keys without "encoder.", plus the
// classifier) in PyTorch layouts; every value distinct so that a misplaced one shows.
struct TorchvisionState {
  std::vector<std::string> names;
  std::vector<std::vector<float>> values;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<int64_t> tracked;

  explicit TorchvisionState(const ModelSpec& spec) {
    for (const ParamEntry& p : spec.params) {
      if (p.name.rfind("encoder.", 0) != 0) continue;
      add(p.name.substr(8), p.torch_shape, float(names.size()));
    }
    for (const BatchNormEntry& bn : spec.bns) {
      if (bn.prefix.rfind("encoder.", 0) != 0) continue;
      add(bn.prefix.substr(8) + ".running_mean", {bn.c}, 0.25f);
      add(bn.prefix.substr(8) + ".running_var", {bn.c}, 0.75f);
    }
    tracked.assign(spec.bns.size(), 41);
    add("fc.weight", {1000, 512}, 9);
    add("fc.bias", {1000}, 9);
  }
  void add(const std::string& name, const std::vector<int64_t>& shape, float base) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = base + float(i % 1000) * 1e-3f;
    names.push_back(name);
    shapes.push_back(shape);
    values.push_back(std::move(v));
  }
  const std::vector<float>& value(const std::string& name) const {
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == name) return values[i];
    FAIL("no " << name);
    return values[0];
  }
  std::vector<TensorView> views(const ModelSpec& spec) const {
    std::vector<TensorView> v;
    for (size_t i = 0; i < names.size(); ++i) v.push_back({names[i], DType::F32, shapes[i], values[i].data()});
    for (size_t i = 0; i < spec.bns.size(); ++i)
      if (spec.bns[i].prefix.rfind("encoder.", 0) == 0)
        v.push_back({spec.bns[i].prefix.substr(8) + ".num_batches_tracked", DType::I64, {}, &tracked[i]});
    return v;
  }
};

using test::error_of;

}  // namespace

TEST_CASE("--encoder-weights: a torchvision ResNet-34 state_dict replaces the encoder only") {
  const ModelSpec& spec = unet_spec();
  test::TempDir t("encoder");
  const TorchvisionState tv(spec);
  save_safetensors(t.str("resnet34.safetensors"), tv.views(spec), {});

  const HostModelState init = initial_state(spec, 9);
  HostModelState m = init;
  load_encoder_weights(t.str("resnet34.safetensors"), spec, m);
  int encoder = 0;
  for (const ParamEntry& p : spec.params) {
    CAPTURE(p.name);
    const bool in_encoder = p.name.rfind("encoder.", 0) == 0;
    if (!in_encoder) {
      CHECK(std::equal(m.params.begin() + p.offset, m.params.begin() + p.offset + p.count,
                       init.params.begin() + p.offset));
      continue;
    }
    ++encoder;
    const std::vector<float>& want = tv.value(p.name.substr(8));
    if (p.kind == ParamKind::conv_weight) {
      // OIHW element (o, i, h, w) is KRSC element (o, h, w, i).
      const auto& s = p.torch_shape;
      const int64_t o = s[0] - 1, i = s[1] / 2, h = s[2] - 1, w = 0;
      CHECK(m.params[size_t(p.offset + ((o * s[2] + h) * s[3] + w) * s[1] + i)] ==
            want[size_t(((o * s[1] + i) * s[2] + h) * s[3] + w)]);
    } else {
      CHECK(std::equal(want.begin(), want.end(), m.params.begin() + p.offset));
    }
  }
  CHECK(encoder == 108);
  for (size_t i = 0; i < spec.bns.size(); ++i) {
    const BatchNormEntry& bn = spec.bns[i];
    const bool in_encoder = bn.prefix.rfind("encoder.", 0) == 0;
    CHECK(m.running[size_t(bn.running_mean)] == (in_encoder ? 0.25f : 0.0f));
    CHECK(m.running[size_t(bn.running_var)] == (in_encoder ? 0.75f : 1.0f));
    CHECK(m.num_batches_tracked[i] == (in_encoder ? 41 : 0));
  }
}

TEST_CASE("--encoder-weights: missing, extra and mis-shaped tensors are all named") {
  const ModelSpec& spec = unet_spec();
  test::TempDir t("encoder_bad");
  TorchvisionState tv(spec);
  std::vector<TensorView> views;
  for (const TensorView& v : tv.views(spec)) {
    if (v.name == "layer2.0.downsample.0.weight") continue;  // missing
    TensorView w = v;
    if (v.name == "layer4.2.bn2.bias") w.shape = {256, 2};   // mis-shaped
    views.push_back(w);
  }
  const float one = 1;
  views.push_back({"layer5.0.conv1.weight", DType::F32, {1}, &one});  // extra
  save_safetensors(t.str("bad.safetensors"), views, {});
  HostModelState m = initial_state(spec, 0);
  const HostModelState before = m;
  const std::string msg = error_of([&] { load_encoder_weights(t.str("bad.safetensors"), spec, m); });
  CHECK(msg.find(t.str("bad.safetensors")) != std::string::npos);
  CHECK(msg.find("torchvision ResNet-34") != std::string::npos);
  CHECK(msg.find("layer2.0.downsample.0.weight") != std::string::npos);
  CHECK(msg.find("layer4.2.bn2.bias is F32 [256,2], expected F32 [512]") != std::string::npos);
  CHECK(msg.find("layer5.0.conv1.weight") != std::string::npos);
  CHECK(msg.find("fc.weight") == std::string::npos);  // the classifier is not a problem
  CHECK(m.params == before.params);                   // nothing was half-loaded
  // An smp checkpoint is not a torchvision state_dict: every key is then reported.
  save_checkpoint(t.str("smp.safetensors"), spec, m, nullptr, {});
  CHECK(error_of([&] { load_encoder_weights(t.str("smp.safetensors"), spec, m); }).find("missing tensors") !=
        std::string::npos);
}

TEST_CASE("state_dicts in F16, BF16 and F64 load as float32; num_batches_tracked may be absent") {
  const ModelSpec& spec = unet_spec();
  test::TempDir t("dtypes");
  HostModelState m = initial_state(spec, 2);
  save_checkpoint(t.str("f32.safetensors"), spec, m, nullptr, {});
  const SafetensorsFile f32(t.str("f32.safetensors"));

  // Values k/64 for small integers k are exact in every one of these formats.
  const std::string head = "decoder.blocks.4.conv2.1.weight";  // 16 values
  const std::string conv = "segmentation_head.0.weight";        // 1x16x3x3, 144 values
  const std::string var = "decoder.blocks.4.conv2.1.running_var";
  std::vector<uint16_t> half(16), bf(144);
  std::vector<double> dbl(16);
  std::vector<float> want_head(16), want_conv(144), want_var(16);
  for (int i = 0; i < 16; ++i) {
    want_head[size_t(i)] = float(i - 8) / 64;   // F16: sign, exponent 15-biased, 10-bit mantissa
    want_var[size_t(i)] = 1 + float(i) / 64;
    dbl[size_t(i)] = want_var[size_t(i)];
  }
  for (int i = 0; i < 16; ++i) {
    const float v = want_head[size_t(i)];
    if (v == 0) { half[size_t(i)] = 0; continue; }
    // Encode by hand: v = +-2^e * (1 + f/1024).
    const float a = std::fabs(v);
    int e = int(std::floor(std::log2(a)));
    const int mant = int(std::lround((a / std::ldexp(1.0f, e) - 1) * 1024));
    half[size_t(i)] = uint16_t((v < 0 ? 0x8000 : 0) | ((e + 15) << 10) | mant);
  }
  for (int i = 0; i < 144; ++i) {
    want_conv[size_t(i)] = float(i % 9 - 4) / 64;
    uint32_t bits;
    std::memcpy(&bits, &want_conv[size_t(i)], 4);
    bf[size_t(i)] = uint16_t(bits >> 16);  // exact: these floats have 16 zero low bits
  }

  std::vector<TensorView> views;
  for (const std::string& name : f32.names()) {
    if (name.find("num_batches_tracked") != std::string::npos) continue;  // all absent
    const TensorInfo& info = f32.info(name);
    if (name == head) views.push_back({name, DType::F16, info.shape, half.data()});
    else if (name == conv) views.push_back({name, DType::BF16, info.shape, bf.data()});
    else if (name == var) views.push_back({name, DType::F64, info.shape, dbl.data()});
    else views.push_back({name, info.dtype, info.shape, f32.data(name)});
  }
  save_safetensors(t.str("mixed.safetensors"), views, {});
  const LoadedCheckpoint ck = load_checkpoint(t.str("mixed.safetensors"), spec);
  CHECK(ck.model.num_batches_tracked == std::vector<int64_t>(spec.bns.size(), 0));
  const ParamEntry* ph = spec.find(head);
  CHECK(std::equal(want_head.begin(), want_head.end(), ck.model.params.begin() + ph->offset));
  // The head conv is 1x16x3x3 OIHW, 1x3x3x16 KRSC: element (0, i, h, w) -> (h * 3 + w) * 16 + i.
  const ParamEntry* pc = spec.find(conv);
  for (int i = 0; i < 16; ++i)
    for (int k = 0; k < 9; ++k)
      CHECK(ck.model.params[size_t(pc->offset + k * 16 + i)] == want_conv[size_t(i * 9 + k)]);
  const BatchNormEntry& bn4 = spec.bns.back();
  REQUIRE(bn4.prefix == "decoder.blocks.4.conv2.1");
  CHECK(std::equal(want_var.begin(), want_var.end(), ck.model.running.begin() + bn4.running_var));
  // Everything else is unchanged.
  const ParamEntry* p0 = spec.find("encoder.conv1.weight");
  CHECK(std::equal(m.params.begin() + p0->offset, m.params.begin() + p0->offset + p0->count,
                   ck.model.params.begin() + p0->offset));

  // An integer tensor where a float one belongs is named with both dtypes.
  std::vector<int32_t> ints(16, 1);
  for (TensorView& v : views)
    if (v.name == head) v = {head, DType::I32, {16}, ints.data()};
  save_safetensors(t.str("int.safetensors"), views, {});
  CHECK(error_of([&] { load_checkpoint(t.str("int.safetensors"), spec); })
            .find(head + " is I32 [16], expected F32 [16]") != std::string::npos);
}

TEST_CASE("files that are not checkpoints: empty, not safetensors, truncated, bad header") {
  const ModelSpec& spec = unet_spec();
  test::TempDir t("notckpt");
  auto expect = [&](const std::string& name, const std::string& bytes, const std::string& needle) {
    CAPTURE(name);
    write_file_atomic(t.str(name), bytes);
    const std::string msg = error_of([&] { load_checkpoint(t.str(name), spec); });
    CHECK_MESSAGE(msg.find(t.str(name)) != std::string::npos, msg);
    CHECK_MESSAGE(msg.find(needle) != std::string::npos, msg);
  };
  expect("empty.safetensors", "", "too short");
  expect("image.safetensors", std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16), "larger than the file");
  std::string garbage(8, '\0');
  garbage[0] = 12;
  expect("garbage.safetensors", garbage + "{not json!!}", "not valid JSON");

  // A real checkpoint cut short (a copy interrupted): its header promises more data.
  save_checkpoint(t.str("full.safetensors"), spec, initial_state(spec, 1), nullptr, {});
  const std::string full = read_file(t.str("full.safetensors"));
  expect("truncated.safetensors", full.substr(0, full.size() / 2), "out of range");
  expect("header_only.safetensors", full.substr(0, 1000), "larger than the file");
  // The CLI says the same in one line and exits 1.
  const auto r = test::run_tool("predict --weights " + t.str("truncated.safetensors") + " --out " +
                                t.str("o") + " " + t.str("empty.safetensors"));
  CHECK(r.status == 1);
  CHECK(r.output.find("unetcu: error:") != std::string::npos);
  CHECK(r.output.find("truncated.safetensors") != std::string::npos);
}
