// tests/cpu/test_checkpoint.cpp: checkpoints round-trip exactly (weights, BN buffers, Adam
// state, metadata), are smp-shaped on disk (OIHW, int64 num_batches_tracked), and bad
// checkpoints are rejected naming every missing, extra or mis-shaped tensor.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>

#include "engine/error.h"
#include "engine/fileio.h"
#include "engine/safetensors.h"
#include "model/checkpoint.h"

using namespace unetcu;
namespace fs = std::filesystem;

namespace {
fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("unetcu_test_ckpt_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}
}  // namespace

TEST_CASE("checkpoint round trip with optimizer state and metadata") {
  const ModelSpec& spec = unet_spec();
  HostModelState m = initial_state(spec, 3);
  for (size_t i = 0; i < m.running.size(); ++i) m.running[i] = 0.001f * float(i % 997);
  for (size_t i = 0; i < m.num_batches_tracked.size(); ++i) m.num_batches_tracked[i] = int64_t(i + 100);
  HostOptimizerState o;
  o.exp_avg.resize(m.params.size());
  o.exp_avg_sq.resize(m.params.size());
  for (size_t i = 0; i < m.params.size(); ++i) { o.exp_avg[i] = float(i % 13) - 6; o.exp_avg_sq[i] = float(i % 7); }
  o.step = 1234;

  fs::path d = temp_dir("rt");
  const std::string path = (d / "last.safetensors").string();
  save_checkpoint(path, spec, m, &o, {{"epoch", "4"}});
  LoadedCheckpoint ck = load_checkpoint(path, spec);
  CHECK(ck.model.params == m.params);
  CHECK(ck.model.running == m.running);
  CHECK(ck.model.num_batches_tracked == m.num_batches_tracked);
  REQUIRE(ck.has_optimizer);
  CHECK(ck.optimizer.exp_avg == o.exp_avg);
  CHECK(ck.optimizer.exp_avg_sq == o.exp_avg_sq);
  CHECK(ck.optimizer.step == 1234);
  CHECK(ck.metadata_value("epoch") == "4");
  CHECK(ck.metadata_value("format") == kCheckpointFormat);

  // On disk: smp names and PyTorch layouts.
  SafetensorsFile f(path);
  CHECK(f.names().size() == 278 + 2 * 140 + 1);
  CHECK(f.names()[0] == "encoder.conv1.weight");
  const auto& info = f.info("encoder.conv1.weight");
  CHECK(info.shape == std::vector<int64_t>{64, 3, 7, 7});
  CHECK(f.info("encoder.bn1.num_batches_tracked").dtype == DType::I64);
  CHECK(f.info("encoder.bn1.num_batches_tracked").shape.empty());
  // OIHW element (o=5, i=2, h=3, w=4) equals our KRSC element (5, 3, 4, 2).
  std::vector<float> oihw = f.read_f32("encoder.conv1.weight", {64, 3, 7, 7});
  const ParamEntry* p = spec.find("encoder.conv1.weight");
  CHECK(oihw[size_t(((5 * 3 + 2) * 7 + 3) * 7 + 4)] == m.params[size_t(p->offset + ((5 * 7 + 3) * 7 + 4) * 3 + 2)]);

  // Weights only (no optimizer part) loads too.
  save_checkpoint(path, spec, m, nullptr, {});
  CHECK_FALSE(load_checkpoint(path, spec).has_optimizer);
  // No temporary files are left behind.
  int files = 0;
  for (auto& e : fs::directory_iterator(d)) { (void)e; ++files; }
  CHECK(files == 1);
  fs::remove_all(d);
}

TEST_CASE("bad checkpoints name every problem") {
  const ModelSpec& spec = unet_spec();
  fs::path d = temp_dir("bad");
  HostModelState m = initial_state(spec, 0);
  std::vector<float> params(m.params.size());
  // A state_dict missing one tensor, with one extra and one mis-shaped.
  std::vector<TensorView> views;
  for (const auto& p : spec.params) {
    if (p.name == "decoder.blocks.1.conv2.0.weight") continue;
    std::vector<int64_t> shape = p.torch_shape;
    if (p.name == "segmentation_head.0.bias") shape = {1, 1};
    views.push_back({p.name, DType::F32, shape, params.data() + p.offset});
  }
  std::vector<float> ones(512, 1.0f);
  std::vector<int64_t> tracked(spec.bns.size(), 0);
  for (size_t i = 0; i < spec.bns.size(); ++i) {
    const auto& bn = spec.bns[i];
    if (i == 0) continue;  // encoder.bn1's buffers are missing
    views.push_back({bn.prefix + ".running_mean", DType::F32, {bn.c}, ones.data()});
    views.push_back({bn.prefix + ".running_var", DType::F32, {bn.c}, ones.data()});
    views.push_back({bn.prefix + ".num_batches_tracked", DType::I64, {}, &tracked[i]});
  }
  float extra = 1;
  views.push_back({"fc.weight", DType::F32, {1}, &extra});
  const std::string path = (d / "bad.safetensors").string();
  save_safetensors(path, views, {});
  try {
    load_checkpoint(path, spec);
    FAIL("expected an error");
  } catch (const Error& e) {
    std::string msg = e.what();
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find("decoder.blocks.1.conv2.0.weight") != std::string::npos);
    CHECK(msg.find("segmentation_head.0.bias is F32 [1,1], expected F32 [1]") != std::string::npos);
    CHECK(msg.find("fc.weight") != std::string::npos);
    CHECK(msg.find("encoder.bn1.running_mean") != std::string::npos);  // a buffer missing too
  }
  // Not a safetensors file at all.
  write_file_atomic((d / "junk.safetensors").string(), std::string("hello, this is not a checkpoint"));
  CHECK_THROWS_AS(load_checkpoint((d / "junk.safetensors").string(), spec), Error);
  CHECK_THROWS_AS(load_checkpoint((d / "missing.safetensors").string(), spec), Error);
  fs::remove_all(d);
}
