// tests/simt/test_simt_runtime.cpp: the emulator's CUDA runtime: poisoned allocations, range
// checks, the out-of-memory message, device queries, events, and stream capture + graph replay
// (including the calls a GPU forbids during capture).
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/simt/control.h"
#include "tests/simt/simt_test_kernels.h"
#include "tests/simt/simt_test_util.h"

using simt_test::DeviceArray;

namespace {

// Runs a statement expected to throw CudaError; returns the message (empty if nothing thrown).
template <typename F>
std::string cuda_error_of(F&& body, cudaError_t* code) {
  try {
    body();
  } catch (const unetcu::CudaError& e) {
    *code = e.code();
    return e.what();
  }
  *code = cudaSuccess;
  return std::string();
}

void CUDART_CB count_call(void* counter) { ++*static_cast<int*>(counter); }

}  // namespace

TEST_CASE("simt runtime: cudaMalloc returns memory poisoned with 0xFF") {
  DeviceArray<float> a(1000);
  const std::vector<float> v = a.read();
  for (float x : v) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof(bits));
    CHECK(bits == 0xffffffffu);
    CHECK(std::isnan(x));
  }
  void* p = reinterpret_cast<void*>(1);
  CHECK(cudaMalloc(&p, 0) == cudaSuccess);
  CHECK(p == nullptr);
  CHECK(cudaFree(nullptr) == cudaSuccess);
}

TEST_CASE("simt runtime: bad frees and out-of-range copies fail with an explanation") {
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, 64) == cudaSuccess);
  REQUIRE(cudaFree(p) == cudaSuccess);
  cudaError_t code = cudaSuccess;
  std::string message = cuda_error_of([&] { UNETCU_CUDA_CHECK(cudaFree(p)); }, &code);
  CHECK(code == cudaErrorInvalidValue);
  CHECK(message.find("did not return (or already freed)") != std::string::npos);
  CHECK(cudaGetLastError() == cudaSuccess);  // cleared by the check

  DeviceArray<float> a(16);
  std::vector<float> host(32, 1.0f);
  message = cuda_error_of(
      [&] {
        UNETCU_CUDA_CHECK(
            cudaMemcpy(a.get(), host.data(), 32 * sizeof(float), cudaMemcpyHostToDevice));
      },
      &code);
  CHECK(code == cudaErrorInvalidValue);
  CHECK(message.find("overruns its 64-byte allocation") != std::string::npos);
  message = cuda_error_of(
      [&] {
        UNETCU_CUDA_CHECK(
            cudaMemcpy(host.data(), host.data() + 16, 4, cudaMemcpyDeviceToHost));
      },
      &code);
  CHECK(message.find("is not device memory") != std::string::npos);
  CHECK(cudaMemset(a.get() + 8, 0, 8 * sizeof(float)) == cudaSuccess);
  CHECK(cudaMemset(a.get() + 8, 0, 9 * sizeof(float)) == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaSuccess);
}

TEST_CASE("simt runtime: out of memory says how much was asked and what to do") {
  unetcu::simt::set_memory_limit(size_t{1} << 20);
  size_t free_bytes = 0, total_bytes = 0;
  REQUIRE(cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess);
  CHECK(total_bytes == size_t{1} << 20);
  void* p = nullptr;
  const size_t bytes = size_t{2} << 20;
  cudaError_t code = cudaSuccess;
  const std::string message =
      cuda_error_of([&] { UNETCU_CUDA_CHECK_ALLOC(cudaMalloc(&p, bytes), bytes); }, &code);
  CAPTURE(message);
  CHECK(code == cudaErrorMemoryAllocation);
  CHECK(message.find("cudaErrorMemoryAllocation (out of memory) in cudaMalloc(&p, bytes) at "
                     "tests/simt/test_simt_runtime.cpp:") != std::string::npos);
  CHECK(message.find("asked for 2 MiB (2097152 bytes)") != std::string::npos);
  CHECK(message.find("free of 1 MiB") != std::string::npos);
  CHECK(message.find("try a smaller --batch-size") != std::string::npos);
  unetcu::simt::set_memory_limit(0);
  REQUIRE(cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess);
  CHECK(total_bytes > size_t{1} << 20);
}

// A fault surfaces at whatever call comes next: the message says how to find the kernel.
TEST_CASE("a kernel fault's message says how to find the kernel") {
  cudaError_t code = cudaSuccess;
  const std::string message = cuda_error_of(
      [] { unetcu::cuda_fail(cudaErrorIllegalAddress, "cudaStreamSynchronize", "x.cpp", 7); },
      &code);
  CAPTURE(message);
  CHECK(code == cudaErrorIllegalAddress);
  CHECK(message.find("in cudaStreamSynchronize at x.cpp:7") != std::string::npos);
  for (const char* lead : {"UNETCU_SYNC=1", "UNETCU_BUFFER_GUARDS=1", "compute-sanitizer",
                           "UNETCU_DIRECT_CONV=0"})
    CHECK(message.find(lead) != std::string::npos);
}

TEST_CASE("simt runtime: one emulated device with H100 limits") {
  int count = 0;
  REQUIRE(cudaGetDeviceCount(&count) == cudaSuccess);
  CHECK(count == 1);
  CHECK(cudaSetDevice(0) == cudaSuccess);
  CHECK(cudaSetDevice(1) == cudaErrorInvalidDevice);
  (void)cudaGetLastError();
  cudaDeviceProp prop;
  REQUIRE(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
  CHECK(std::string(prop.name) == "SIMT emulator");
  CHECK(prop.warpSize == 32);
  CHECK(prop.maxThreadsPerBlock == 1024);
  CHECK(prop.sharedMemPerBlockOptin == 227 * 1024);
  CHECK(prop.major == 9);
  int smem = 0;
  CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) == cudaSuccess);
  CHECK(smem == 227 * 1024);
  CHECK(std::string(cudaGetErrorName(cudaErrorInvalidValue)) == "cudaErrorInvalidValue");
  CHECK(std::string(cudaGetErrorString(cudaErrorMemoryAllocation)) == "out of memory");

  cudaError_t code = cudaSuccess;
  const std::string message = cuda_error_of([] { UNETCU_CUDA_CHECK(cudaSetDevice(3)); }, &code);
  CHECK(message.find("cudaErrorInvalidDevice (invalid device ordinal) in cudaSetDevice(3) at "
                     "tests/simt/test_simt_runtime.cpp:") != std::string::npos);
}

TEST_CASE("simt runtime: streams and events") {
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  cudaEvent_t start = nullptr, stop = nullptr, untimed = nullptr;
  REQUIRE(cudaEventCreate(&start) == cudaSuccess);
  REQUIRE(cudaEventCreate(&stop) == cudaSuccess);
  REQUIRE(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming) == cudaSuccess);
  CHECK(cudaEventRecord(start, stream) == cudaSuccess);
  DeviceArray<float> y(std::vector<float>(1000, 1.0f));
  DeviceArray<float> x(std::vector<float>(1000, 2.0f));
  simt_test::axpy(y.get(), x.get(), 0.5f, 1000, stream);
  CHECK(cudaEventRecord(stop, stream) == cudaSuccess);
  CHECK(cudaEventRecord(untimed, stream) == cudaSuccess);
  CHECK(cudaStreamWaitEvent(nullptr, stop, 0) == cudaSuccess);
  CHECK(cudaEventSynchronize(stop) == cudaSuccess);
  CHECK(cudaEventQuery(stop) == cudaSuccess);
  CHECK(cudaStreamQuery(stream) == cudaSuccess);
  float ms = -1.0f;
  CHECK(cudaEventElapsedTime(&ms, start, stop) == cudaSuccess);
  CHECK(ms >= 0.0f);
  CHECK(cudaEventElapsedTime(&ms, start, untimed) == cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
  CHECK(y.read()[999] == 2.0f);  // streams run in issue order: done by the time we look
  CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaEventDestroy(untimed);
  cudaStreamDestroy(stream);
}

TEST_CASE("simt runtime: stream priorities within the device's range") {
  int least = 1, greatest = 1;
  REQUIRE(cudaDeviceGetStreamPriorityRange(&least, &greatest) == cudaSuccess);
  CHECK(least == 0);
  CHECK(greatest == -5);
  for (int priority : {least, greatest}) {
    CAPTURE(priority);
    cudaStream_t stream = nullptr;
    REQUIRE(cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking, priority) ==
            cudaSuccess);
    DeviceArray<float> y(std::vector<float>(64, 1.0f));
    DeviceArray<float> x(std::vector<float>(64, 2.0f));
    simt_test::axpy(y.get(), x.get(), 0.5f, 64, stream);
    CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
    CHECK(y.read()[63] == 2.0f);
    cudaStreamDestroy(stream);
  }
  cudaStream_t outside = nullptr;
  CHECK(cudaStreamCreateWithPriority(&outside, cudaStreamNonBlocking, greatest - 1) ==
        cudaErrorInvalidValue);
  CHECK(cudaStreamCreateWithPriority(&outside, cudaStreamNonBlocking, least + 1) ==
        cudaErrorInvalidValue);
  (void)cudaGetLastError();
}

TEST_CASE("simt runtime: stream capture records work that graph replay runs") {
  const int n = 1000;
  cudaStream_t stream = nullptr, side = nullptr;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  REQUIRE(cudaStreamCreate(&side) == cudaSuccess);
  cudaEvent_t fork = nullptr, join = nullptr;
  REQUIRE(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming) == cudaSuccess);
  REQUIRE(cudaEventCreateWithFlags(&join, cudaEventDisableTiming) == cudaSuccess);
  DeviceArray<float> y(std::vector<float>(n, 5.0f));
  DeviceArray<float> x(std::vector<float>(n, 1.0f));
  std::vector<float> host(n, -1.0f);
  int host_calls = 0;
  unetcu::simt::reset_counters();

  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  REQUIRE(cudaStreamIsCapturing(stream, &status) == cudaSuccess);
  CHECK(status == cudaStreamCaptureStatusActive);
  UNETCU_CUDA_CHECK(cudaMemsetAsync(y.get(), 0, n * sizeof(float), stream));
  simt_test::axpy(y.get(), x.get(), 2.0f, n, stream);
  // Fork onto a second stream and join back, as a multi-stream step would.
  UNETCU_CUDA_CHECK(cudaEventRecord(fork, stream));
  UNETCU_CUDA_CHECK(cudaStreamWaitEvent(side, fork, 0));
  simt_test::axpy(y.get(), x.get(), 1.0f, n, side);
  UNETCU_CUDA_CHECK(cudaEventRecord(join, side));
  UNETCU_CUDA_CHECK(cudaStreamWaitEvent(stream, join, 0));
  UNETCU_CUDA_CHECK(cudaLaunchHostFunc(stream, count_call, &host_calls));
  UNETCU_CUDA_CHECK(
      cudaMemcpyAsync(host.data(), y.get(), n * sizeof(float), cudaMemcpyDeviceToHost, stream));
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  REQUIRE(graph != nullptr);

  // Nothing ran during capture.
  CHECK(y.read()[0] == 5.0f);
  CHECK(host[0] == -1.0f);
  CHECK(host_calls == 0);
  CHECK(unetcu::simt::counters().launches == 0);
  size_t nodes = 0;
  CHECK(cudaGraphGetNodes(graph, nullptr, &nodes) == cudaSuccess);
  CHECK(nodes == 5);
  REQUIRE(cudaStreamIsCapturing(side, &status) == cudaSuccess);
  CHECK(status == cudaStreamCaptureStatusNone);

  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  CHECK(cudaGraphDestroy(graph) == cudaSuccess);  // the executable graph keeps its own copy
  for (int replay = 1; replay <= 2; ++replay) {
    std::fill(host.begin(), host.end(), -1.0f);
    REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);  // as on a GPU (and in the late order)
    CHECK(host_calls == replay);
    CHECK(unetcu::simt::counters().launches == 2u * replay);
    for (float v : host) CHECK(v == 3.0f);  // memset then 0 + 2*1 + 1*1, every replay
  }
  CHECK(cudaGraphExecDestroy(exec) == cudaSuccess);
  cudaEventDestroy(fork);
  cudaEventDestroy(join);
  cudaStreamDestroy(side);
  cudaStreamDestroy(stream);
}

// Records what `record` issues on `stream` into a graph and returns it instantiated.
cudaGraphExec_t capture(cudaStream_t stream, const std::function<void()>& record) {
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
  record();
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  CHECK(cudaGraphDestroy(graph) == cudaSuccess);
  return exec;
}

TEST_CASE("simt runtime: a captured cooperative launch replays with its grid barriers") {
  const int blocks = 4, rounds = 3;
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  DeviceArray<int> slots(size_t(blocks * rounds)), out(size_t(blocks * rounds));
  cudaGraphExec_t exec = capture(stream, [&] {
    UNETCU_CUDA_CHECK(cudaMemsetAsync(slots.get(), 0xFF, blocks * rounds * sizeof(int), stream));
    UNETCU_CUDA_CHECK(cudaMemsetAsync(out.get(), 0xFF, blocks * rounds * sizeof(int), stream));
    simt_test::grid_rounds(slots.get(), out.get(), blocks, 64, rounds, stream);
  });
  for (int replay = 0; replay < 2; ++replay) {
    REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
    const std::vector<int> got = out.read();
    for (int r = 0; r < rounds; ++r)
      for (int b = 0; b < blocks; ++b)
        CHECK(got[size_t(r * blocks + b)] == blocks * (r + 1) * 1000 + blocks * (blocks - 1) / 2);
  }
  CHECK(cudaGraphExecDestroy(exec) == cudaSuccess);
  cudaStreamDestroy(stream);
}

TEST_CASE("simt runtime: a captured cluster launch replays as a cluster launch") {
  const dim3 grid(8, 2);
  const unsigned cluster = 4;
  const int threads = 32, n = 16 * threads;
  DeviceArray<int> direct(static_cast<size_t>(n)), replayed(static_cast<size_t>(n));
  simt_test::cluster_exchange(direct.get(), grid, threads, cluster, nullptr);
  const std::vector<int> want = direct.read();
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  cudaGraphExec_t exec = capture(stream, [&] {
    UNETCU_CUDA_CHECK(cudaMemsetAsync(replayed.get(), 0xFF, n * sizeof(int), stream));
    simt_test::cluster_exchange(replayed.get(), grid, threads, cluster, stream);
  });
  for (int replay = 0; replay < 2; ++replay) {
    unetcu::simt::reset_counters();
    REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
    CHECK(replayed.read() == want);
    CHECK(unetcu::simt::counters().barriers == 2u * 16u);  // the two cluster barriers ran
  }
  // Block 0 reads word 1 of block 1, its cluster's next rank: the launch did exchange.
  CHECK(want[0] == 1000 + 1);
  CHECK(cudaGraphExecDestroy(exec) == cudaSuccess);
  cudaStreamDestroy(stream);
}

TEST_CASE("simt runtime: a launch both cooperative and in clusters fails without running") {
  static std::atomic<int> runs{0};  // the blocks run on threads of their own
  unetcu::simt::KernelCall call;
  call.invoke = [](const void*) { runs.fetch_add(1); };
  call.grid = dim3(2);
  call.block = dim3(32);
  call.name = "both_kernel";
  call.cooperative = true;
  call.cluster = 2;
  CHECK(unetcu::simt::launch(call, nullptr) == cudaErrorInvalidClusterSize);
  CHECK(cudaGetLastError() == cudaErrorInvalidClusterSize);
  CHECK(std::string(cudaGetErrorName(cudaErrorInvalidClusterSize)) ==
        "cudaErrorInvalidClusterSize");
  CHECK(runs == 0);
  call.cooperative = false;  // the same as a cluster launch runs
  CHECK(unetcu::simt::launch(call, nullptr) == cudaSuccess);
  CHECK(runs == 64);
}

TEST_CASE("simt runtime: captured chained launches replay in order") {
  const int n = 100;
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  std::vector<int> first(n);
  for (int i = 0; i < n; ++i) first[size_t(i)] = 3 * i;
  DeviceArray<int> a(first), b(static_cast<size_t>(n)), c(static_cast<size_t>(n));
  cudaGraphExec_t exec = capture(stream, [&] {
    UNETCU_CUDA_CHECK(cudaMemsetAsync(c.get(), 0xFF, n * sizeof(int), stream));
    simt_test::chained_scale(b.get(), a.get(), n, stream);
    simt_test::chained_scale(c.get(), b.get(), n, stream);
  });
  for (int replay = 0; replay < 2; ++replay) {
    REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
    const std::vector<int> got = c.read();
    for (int i = 0; i < n; ++i) CHECK(got[size_t(i)] == 12 * i + 3);
  }
  CHECK(cudaGraphExecDestroy(exec) == cudaSuccess);
  cudaStreamDestroy(stream);
}

TEST_CASE("simt runtime: calls a GPU forbids during capture invalidate it") {
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  DeviceArray<float> y(std::vector<float>(64, 0.0f));
  DeviceArray<float> x(std::vector<float>(64, 1.0f));
  cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(1);

  SUBCASE("cudaMalloc in global mode") {
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
    void* p = nullptr;
    CHECK(cudaMalloc(&p, 16) == cudaErrorStreamCaptureUnsupported);
    CHECK(cudaStreamEndCapture(stream, &graph) == cudaErrorStreamCaptureInvalidated);
    CHECK(graph == nullptr);
  }
  SUBCASE("a launch on the legacy stream") {
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
    cudaError_t code = cudaSuccess;
    const std::string message =
        cuda_error_of([&] { simt_test::axpy(y.get(), x.get(), 1.0f, 64, nullptr); }, &code);
    CHECK(code == cudaErrorStreamCaptureImplicit);
    CHECK(message.find("legacy default stream") != std::string::npos);
    CHECK(cudaStreamEndCapture(stream, &graph) == cudaErrorStreamCaptureInvalidated);
    CHECK(y.read()[0] == 0.0f);
  }
  SUBCASE("synchronising the capturing stream") {
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
    CHECK(cudaStreamSynchronize(stream) == cudaErrorStreamCaptureUnsupported);
    CHECK(cudaStreamEndCapture(stream, &graph) == cudaErrorStreamCaptureInvalidated);
  }
  SUBCASE("relaxed mode allows allocation") {
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed) == cudaSuccess);
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    REQUIRE(cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess);
    void* p = nullptr;
    CHECK(cudaMalloc(&p, 16) == cudaSuccess);
    CHECK(cudaFree(p) == cudaSuccess);
    REQUIRE(cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess);
    CHECK(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
    CHECK(cudaGraphDestroy(graph) == cudaSuccess);
  }
  (void)cudaGetLastError();
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 16) == cudaSuccess);  // no capture left behind
  cudaFree(p);
  cudaStreamDestroy(stream);
}

// A stream forked into a capture must be joined back into the origin before the capture ends,
// as a GPU requires; the emulator refuses the capture otherwise (cudaErrorStreamCaptureUnjoined).
TEST_CASE("simt runtime: a capture with an unjoined fork fails") {
  const int n = 64;
  cudaStream_t origin = nullptr, side = nullptr, third = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&origin, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&third, cudaStreamNonBlocking) == cudaSuccess);
  cudaEvent_t fork = nullptr, join = nullptr, inner = nullptr;
  REQUIRE(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming) == cudaSuccess);
  REQUIRE(cudaEventCreateWithFlags(&join, cudaEventDisableTiming) == cudaSuccess);
  REQUIRE(cudaEventCreateWithFlags(&inner, cudaEventDisableTiming) == cudaSuccess);
  DeviceArray<float> y(std::vector<float>(n, 1.0f)), x(std::vector<float>(n, 1.0f));
  enum class Join { none, before_last_work, at_end, through_third };
  for (const Join how : {Join::none, Join::before_last_work, Join::at_end, Join::through_third}) {
    CAPTURE(static_cast<int>(how));
    REQUIRE(cudaStreamBeginCapture(origin, cudaStreamCaptureModeGlobal) == cudaSuccess);
    UNETCU_CUDA_CHECK(cudaEventRecord(fork, origin));
    UNETCU_CUDA_CHECK(cudaStreamWaitEvent(side, fork, 0));
    simt_test::axpy(y.get(), x.get(), 1.0f, n, side);
    if (how == Join::before_last_work) {
      UNETCU_CUDA_CHECK(cudaEventRecord(join, side));
      UNETCU_CUDA_CHECK(cudaStreamWaitEvent(origin, join, 0));
      simt_test::axpy(y.get(), x.get(), 1.0f, n, side);  // after the join: not covered
    } else if (how == Join::at_end) {
      UNETCU_CUDA_CHECK(cudaEventRecord(join, side));
      UNETCU_CUDA_CHECK(cudaStreamWaitEvent(origin, join, 0));
    } else if (how == Join::through_third) {
      UNETCU_CUDA_CHECK(cudaEventRecord(inner, side));
      UNETCU_CUDA_CHECK(cudaStreamWaitEvent(third, inner, 0));
      UNETCU_CUDA_CHECK(cudaEventRecord(join, third));
      UNETCU_CUDA_CHECK(cudaStreamWaitEvent(origin, join, 0));
    }
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(origin, &graph);
    const bool joined = how == Join::at_end || how == Join::through_third;
    CHECK((ended == cudaSuccess) == joined);
    if (!joined) {
      CHECK(ended == cudaErrorStreamCaptureUnjoined);
      CHECK(graph == nullptr);
      (void)cudaGetLastError();
    }
    if (graph) CHECK(cudaGraphDestroy(graph) == cudaSuccess);
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusActive;
    REQUIRE(cudaStreamIsCapturing(side, &status) == cudaSuccess);
    CHECK(status == cudaStreamCaptureStatusNone);  // released either way
  }
  cudaEventDestroy(fork);
  cudaEventDestroy(join);
  cudaEventDestroy(inner);
  cudaStreamDestroy(third);
  cudaStreamDestroy(side);
  cudaStreamDestroy(origin);
}
