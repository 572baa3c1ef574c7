// tests/emu/test_stream_hold.cpp: the benchmark's hold on a stream (bench/stream_hold.h). On a
// GPU the held stream is seen not to run until released; under the emulator the stream queues
// its work until the host needs it (the late order), as a GPU's stream runs apart from the
// host, so what both show is the release, the time limit and the rounds kept apart.
#include <chrono>
#include <thread>
#include <vector>

#include "bench/stream_hold.h"
#include "kernel_test.h"

namespace unetcu::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

struct HeldStream {
  cudaStream_t stream = nullptr;
  unsigned char* buf = nullptr;
  static constexpr size_t kBytes = 4096;
  HeldStream() {
    UNETCU_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
#if defined(UNETCU_TEST_EMULATED)
    UNETCU_CUDA_CHECK(simt::set_stream_order(stream, simt::StreamOrder::late));
#endif
    UNETCU_CUDA_CHECK(cudaMalloc(&buf, kBytes));
    UNETCU_CUDA_CHECK(cudaMemset(buf, 0, kBytes));
  }
  ~HeldStream() {
    cudaStreamSynchronize(stream);
    cudaFree(buf);
    cudaStreamDestroy(stream);
  }
  // Every byte of the buffer equals `value`.
  bool all(unsigned char value) const {
    std::vector<unsigned char> host(kBytes);
    UNETCU_CUDA_CHECK(cudaMemcpy(host.data(), buf, kBytes, cudaMemcpyDeviceToHost));
    for (unsigned char b : host)
      if (b != value) return false;
    return true;
  }
};

double ms_since(steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(steady_clock::now() - t0).count();
}

TEST_CASE("a held stream runs its work once released, and the round is not expired") {
  HeldStream s;
  bench::StreamHold hold(milliseconds(5000));
  for (unsigned char value : {7, 9}) {  // two rounds on one hold
    hold.hold(s.stream);
    UNETCU_CUDA_CHECK(cudaMemsetAsync(s.buf, value, HeldStream::kBytes, s.stream));
#if !defined(UNETCU_TEST_EMULATED)
    // A GPU would have run the memset long before this: the hold keeps it back.
    std::this_thread::sleep_for(milliseconds(20));
    CHECK(cudaStreamQuery(s.stream) == cudaErrorNotReady);
#endif
    const auto t0 = steady_clock::now();
    hold.release();
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(s.stream));
    CHECK(ms_since(t0) < 2500.0);  // released at once, not at the limit
    CHECK_FALSE(hold.expired());
    CHECK(s.all(value));
  }
}

TEST_CASE("a hold that the issuing host waits on gives up at its limit and says so") {
  HeldStream s;
  const milliseconds limit(150);
  bench::StreamHold hold(limit);
  hold.hold(s.stream);
  UNETCU_CUDA_CHECK(cudaMemsetAsync(s.buf, 5, HeldStream::kBytes, s.stream));
  // An issue that synchronises with its own stream before the release, as a LibTorch call that
  // reads a value back would: without the limit this would never return.
  const auto t0 = steady_clock::now();
  UNETCU_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  CHECK(ms_since(t0) >= 0.9 * double(limit.count()));
  CHECK(hold.expired());
  CHECK(s.all(5));
  hold.release();  // late: harmless
  CHECK(hold.expired());

  // The next round starts afresh.
  hold.hold(s.stream);
  UNETCU_CUDA_CHECK(cudaMemsetAsync(s.buf, 6, HeldStream::kBytes, s.stream));
  hold.release();
  UNETCU_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  CHECK_FALSE(hold.expired());
  CHECK(s.all(6));
}

}  // namespace
}  // namespace unetcu::test
