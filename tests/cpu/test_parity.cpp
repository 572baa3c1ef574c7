// tests/cpu/test_parity.cpp: the CPU backend against PyTorch + segmentation_models_pytorch, from
// the fixture that bench/reference/make_parity_fixture.py recorded (see tests/parity_fixture.h),
// and weights moving from PyTorch to unetcu: a state_dict written by safetensors.torch.save_file
// loads and gives smp's logits. The tolerances, and why, are in tests/parity_fixture.h.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "engine/cpu_backend.h"
#include "engine/fileio.h"
#include "parity_fixture.h"

using namespace unetcu;
namespace fs = std::filesystem;

TEST_CASE("CPU backend reproduces PyTorch + smp: logits, loss, gradients, running stats, 3 Adam steps (64x64)") {
  auto be = make_cpu_backend();
  test::check_parity(test::run_parity(*be, 64), 64, test::kFp32Tolerances);
}

TEST_CASE("CPU backend reproduces PyTorch + smp: logits, loss, gradients, running stats, 3 Adam steps (128x128)") {
  auto be = make_cpu_backend();
  test::check_parity(test::run_parity(*be, 128), 128, test::kFp32Tolerances);
}

TEST_CASE("fixture provenance: format, versions and the script that made it") {
  CHECK(test::fixture_meta("format") == "unetcu-parity-1");
  CHECK(test::fixture_meta("script") == "bench/reference/make_parity_fixture.py");
  for (const char* key : {"script_version", "python", "torch", "segmentation_models_pytorch", "numpy"})
    CHECK_MESSAGE(!test::fixture_meta(key).empty(), key);
  MESSAGE("fixture made by torch " << test::fixture_meta("torch") << ", smp "
          << test::fixture_meta("segmentation_models_pytorch"));
}

// The fixture keeps the header of a state_dict that safetensors.torch.save_file wrote (PyTorch's
// key order, data order and padding, no metadata) and that state_dict's non-conv tensors; its
// conv weights are `unetcu init` weights, rebuilt here from the seed. So this test writes back
// Python's file byte for byte, loads it as --weights does, and compares the eval-mode logits
// with smp's for the same batch. Its BatchNorm state is that after 3 Adam steps
// (num_batches_tracked 3, trained running statistics and affine parameters), which the eval
// forward depends on directly. Tolerance: one eval forward, fp32 summation order only.
TEST_CASE("a state_dict written by safetensors.torch.save_file loads and gives smp's logits") {
  const SafetensorsFile& fx = test::parity_fixture();
  const ModelSpec& spec = unet_spec();
  const HostModelState init = initial_state(spec, std::stoull(test::fixture_meta("init_seed")));

  const TensorInfo& hinfo = fx.info("interop.header");
  const std::string header(static_cast<const char*>(fx.data("interop.header")), hinfo.byte_size);
  const int64_t file_size = fx.read_i64("interop.file_size", {})[0];
  const json::Value h = json::parse(header, "interop.header");
  std::string bytes(size_t(file_size), '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char((n >> (8 * i)) & 0xff);
  std::memcpy(&bytes[8], header.data(), header.size());
  const size_t data_start = 8 + header.size();
  int conv = 0, other = 0;
  for (const auto& [key, entry] : h.as_object()) {
    if (key == "__metadata__") continue;
    const size_t begin = size_t(entry.find("data_offsets")->as_array()[0].as_int64());
    const size_t end = size_t(entry.find("data_offsets")->as_array()[1].as_int64());
    REQUIRE(data_start + end <= bytes.size());
    const ParamEntry* p = spec.find(key);
    if (p != nullptr && p->kind == ParamKind::conv_weight) {
      REQUIRE(end - begin == size_t(p->count) * sizeof(float));
      krsc_to_oihw(reinterpret_cast<float*>(&bytes[data_start + begin]), init.params.data() + p->offset,
                   p->torch_shape);
      ++conv;
    } else {
      const std::string name = "interop/" + key;
      REQUIRE(fx.info(name).byte_size == end - begin);
      std::memcpy(&bytes[data_start + begin], fx.data(name), end - begin);
      ++other;
    }
  }
  CHECK(conv == 47);
  CHECK(other == 278 - 47);

  const fs::path dir = fs::temp_directory_path() / ("unetcu_test_interop_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "smp_state_dict.safetensors").string();
  write_file_atomic(path, bytes);
  const LoadedCheckpoint ck = load_checkpoint(path, spec);
  fs::remove_all(dir);
  CHECK_FALSE(ck.has_optimizer);
  CHECK(ck.model.num_batches_tracked == std::vector<int64_t>(spec.bns.size(), 3));

  std::vector<uint8_t> images(size_t(test::kParityImages) * 64 * 64 * 3);
  fx.copy_to("s64.images", DType::U8, {test::kParityImages, 64, 64, 3}, images.data());
  auto be = make_cpu_backend();
  ModelSession session(*be, 64, 64);
  session.set_state(ck.model);
  const std::vector<float> logits = session.predict(images.data(), test::kParityImages);
  const std::vector<float> want = fx.read_f32("interop.logits", {test::kParityImages, 1, 64, 64});
  const double err = test::rel_l2(std::vector<double>(logits.begin(), logits.end()),
                                  std::vector<double>(want.begin(), want.end()));
  MESSAGE("eval logits from the PyTorch-written state_dict: relative L2 " << err);
  CHECK(err < 2e-5);
  // And the weights really are not the initial ones: the initial state gives other logits.
  session.set_state(init);
  const std::vector<float> from_init = session.predict(images.data(), test::kParityImages);
  CHECK(test::rel_l2(std::vector<double>(from_init.begin(), from_init.end()),
                     std::vector<double>(want.begin(), want.end())) > 1e-2);
}
