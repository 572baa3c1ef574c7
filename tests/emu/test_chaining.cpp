// tests/emu/test_chaining.cpp: chained launches on a side stream (kernels/cuda/chaining.h)
// go unchained. The marks are plain host state and are checked everywhere; which launches a GPU
// would chain is counted by the emulator only (simt::counters().overlapping_launches), so the
// native build checks the marks alone.
#include <cstdint>

#include "kernel_test.h"
#include "kernels/cuda/chaining.h"
#include "kernels/elementwise.h"

namespace unetcu::test {
namespace {

// Restores the process-wide switches a case changes, whatever it asserted.
struct SwitchesBack {
  bool side_chaining = side_stream_chaining_switch().get();
  ~SwitchesBack() { side_stream_chaining_switch().set(side_chaining); }
};

cudaStream_t fake_stream(int i) {
  return reinterpret_cast<cudaStream_t>(uintptr_t(0x10000) + uintptr_t(i) * 64);
}

TEST_CASE("side streams are marked, marked once, and unmarked") {
  const cudaStream_t a = fake_stream(1), b = fake_stream(2);
  CHECK_FALSE(is_side_stream(a));
  set_side_stream(a, true);
  set_side_stream(a, true);  // again: still one mark
  CHECK(is_side_stream(a));
  CHECK_FALSE(is_side_stream(b));
  set_side_stream(nullptr, true);
  CHECK_FALSE(is_side_stream(nullptr));
  set_side_stream(a, false);
  CHECK_FALSE(is_side_stream(a));  // a second mark would have kept it marked

  // As many as a process makes: every backend a test binary keeps marks its own.
  for (int i = 0; i < 100; ++i) set_side_stream(fake_stream(100 + i), true);
  for (int i = 0; i < 100; ++i) CHECK(is_side_stream(fake_stream(100 + i)));
  CHECK_FALSE(is_side_stream(b));
  for (int i = 0; i < 100; ++i) set_side_stream(fake_stream(100 + i), false);
  for (int i = 0; i < 100; ++i) CHECK_FALSE(is_side_stream(fake_stream(100 + i)));
}

#if defined(UNETCU_TEST_EMULATED)
TEST_CASE("chained launches on a side stream go unchained unless UNETCU_SIDE_PDL=1") {
  SwitchesBack back;
  side_stream_chaining_switch().set(false);
  cudaStream_t compute = nullptr, side = nullptr;
  UNETCU_CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  UNETCU_CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  const int64_t count = 1000;
  DeviceBuffer<float> x(random_vector<float>(size_t(count), 7));
  DeviceBuffer<float> y{size_t(count)};
  // The launches of one chained op on `stream` that a GPU would issue chained.
  const auto overlapping = [&](cudaStream_t stream) {
    simt::reset_counters();
    cuda::relu_forward(y.get(), x.get(), count, stream);
    sync_device();
    REQUIRE(simt::counters().launches == 1);
    return int(simt::counters().overlapping_launches);
  };
  set_side_stream(side, true);
  CHECK(overlapping(compute) == (chained_launches() ? 1 : 0));
  CHECK(overlapping(side) == 0);
  side_stream_chaining_switch().set(true);
  CHECK(overlapping(side) == (chained_launches() ? 1 : 0));
  side_stream_chaining_switch().set(false);
  set_side_stream(side, false);
  CHECK(overlapping(side) == (chained_launches() ? 1 : 0));
  UNETCU_CUDA_CHECK(cudaStreamDestroy(side));
  UNETCU_CUDA_CHECK(cudaStreamDestroy(compute));
}
#endif

}  // namespace
}  // namespace unetcu::test
