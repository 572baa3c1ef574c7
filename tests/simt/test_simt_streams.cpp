// tests/simt/test_simt_streams.cpp: the emulator's late and early stream orders
// (kernels/simt/control.h): work waits in its stream until something needs it, so a missing
// event between two streams gives a wrong result where the in-order mode hides it.
#include <doctest/doctest.h>

#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/simt/control.h"
#include "tests/simt/simt_test_kernels.h"
#include "tests/simt/simt_test_util.h"

using simt_test::DeviceArray;
using unetcu::simt::StreamOrder;

namespace {

// Two non-blocking streams in the order asked; destroyed (their work finished) at scope exit.
struct StreamPair {
  cudaStream_t a = nullptr, b = nullptr;
  cudaEvent_t event = nullptr;
  StreamPair(StreamOrder order_a, StreamOrder order_b) {
    REQUIRE(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking) == cudaSuccess);
    REQUIRE(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking) == cudaSuccess);
    REQUIRE(unetcu::simt::set_stream_order(a, order_a) == cudaSuccess);
    REQUIRE(unetcu::simt::set_stream_order(b, order_b) == cudaSuccess);
    REQUIRE(cudaEventCreateWithFlags(&event, cudaEventDisableTiming) == cudaSuccess);
  }
  ~StreamPair() {
    cudaEventDestroy(event);
    cudaStreamDestroy(a);
    cudaStreamDestroy(b);
  }
};

std::vector<int> iota_times(int n, int k) {
  std::vector<int> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[size_t(i)] = k * i;
  return v;
}

}  // namespace

TEST_CASE("simt streams: late work waits until the host synchronises") {
  const int n = 64;
  StreamPair s(StreamOrder::late, StreamOrder::late);
  DeviceArray<int> in(iota_times(n, 1)), out(iota_times(n, 0));
  simt_test::chained_scale(out.get(), in.get(), n, s.a);  // out = 2*in + 1
  // A synchronous copy is legacy-stream work: it does not wait for a non-blocking stream.
  CHECK(out.read()[5] == 0);
  SUBCASE("cudaStreamSynchronize") { REQUIRE(cudaStreamSynchronize(s.a) == cudaSuccess); }
  SUBCASE("cudaEventSynchronize") {
    REQUIRE(cudaEventRecord(s.event, s.a) == cudaSuccess);
    REQUIRE(cudaEventSynchronize(s.event) == cudaSuccess);
  }
  SUBCASE("cudaDeviceSynchronize") { REQUIRE(cudaDeviceSynchronize() == cudaSuccess); }
  CHECK(out.read()[5] == 11);
}

TEST_CASE("simt streams: a blocking late stream finishes before legacy-stream work") {
  const int n = 64;
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  REQUIRE(unetcu::simt::set_stream_order(stream, StreamOrder::late) == cudaSuccess);
  DeviceArray<int> in(iota_times(n, 1)), out(iota_times(n, 0));
  simt_test::chained_scale(out.get(), in.get(), n, stream);
  CHECK(out.read()[7] == 15);  // cudaMemcpy on the legacy stream orders after it
  cudaStreamDestroy(stream);
}

TEST_CASE("simt streams: a wait runs the awaited work first, in stream order") {
  const int n = 64;
  StreamPair s(StreamOrder::late, StreamOrder::late);
  DeviceArray<int> in(iota_times(n, 1)), mid(iota_times(n, 0)), out(iota_times(n, 0));
  simt_test::chained_scale(mid.get(), in.get(), n, s.a);  // mid = 2i + 1
  UNETCU_CUDA_CHECK(cudaEventRecord(s.event, s.a));
  // Work on a after the event must not run before b's wait is satisfied, nor be needed by it.
  simt_test::chained_scale(in.get(), mid.get(), n, s.a);  // in = 4i + 3
  UNETCU_CUDA_CHECK(cudaStreamWaitEvent(s.b, s.event, 0));
  simt_test::chained_scale(out.get(), mid.get(), n, s.b);  // out = 4i + 3
  REQUIRE(cudaStreamSynchronize(s.b) == cudaSuccess);
  CHECK(out.read()[10] == 43);
  CHECK(in.read()[10] == 10);  // a's second launch is still waiting
  REQUIRE(cudaStreamSynchronize(s.a) == cudaSuccess);
  CHECK(in.read()[10] == 43);
}

// A stream reading a buffer that another stream overwrites later, with and without the event
// that orders the overwrite after the read (the fork/join of a side stream).
TEST_CASE("simt streams: an overwrite not ordered after a late read changes what it reads") {
  const int n = 64;
  for (const StreamOrder order : {StreamOrder::in_order, StreamOrder::late}) {
    for (const bool ordered : {false, true}) {
      CAPTURE(static_cast<int>(order));
      CAPTURE(ordered);
      StreamPair s(order, StreamOrder::in_order);
      DeviceArray<int> buf(iota_times(n, 1)), seen(iota_times(n, 0)), other(iota_times(n, 7));
      simt_test::chained_scale(seen.get(), buf.get(), n, s.a);  // reads buf
      if (ordered) {
        UNETCU_CUDA_CHECK(cudaEventRecord(s.event, s.a));
        UNETCU_CUDA_CHECK(cudaStreamWaitEvent(s.b, s.event, 0));
      }
      UNETCU_CUDA_CHECK(cudaMemcpyAsync(buf.get(), other.get(), n * sizeof(int),
                                        cudaMemcpyDeviceToDevice, s.b));  // overwrites buf
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      const int expected = 2 * 9 + 1;  // from buf[9] = 9, before the overwrite
      if (ordered || order == StreamOrder::in_order) CHECK(seen.read()[9] == expected);
      else CHECK(seen.read()[9] == 2 * 63 + 1);  // the race shows: it read other[9] = 63
    }
  }
}

// The other kind of missing event: a side stream reads the main stream's result without
// waiting for it (a fork left out), and is joined back later. In issue order and in the late
// order the join runs the main stream's earlier work first, so the race hides; in the early
// order the side stream's work runs first at the host's synchronisation and reads stale data.
TEST_CASE("simt streams: a left-out fork shows in the early order") {
  const int n = 64;
  for (const StreamOrder order : {StreamOrder::in_order, StreamOrder::late, StreamOrder::early}) {
    for (const bool forked : {false, true}) {
      CAPTURE(static_cast<int>(order));
      CAPTURE(forked);
      StreamPair s(order, order);  // a: main, b: side
      DeviceArray<int> in(iota_times(n, 1)), mid(iota_times(n, 0)), out(iota_times(n, 0));
      simt_test::chained_scale(mid.get(), in.get(), n, s.a);  // main: mid = 2i + 1
      if (forked) {
        UNETCU_CUDA_CHECK(cudaEventRecord(s.event, s.a));
        UNETCU_CUDA_CHECK(cudaStreamWaitEvent(s.b, s.event, 0));
      }
      simt_test::chained_scale(out.get(), mid.get(), n, s.b);  // side: out = 4i + 3
      cudaEvent_t join = nullptr;
      REQUIRE(cudaEventCreateWithFlags(&join, cudaEventDisableTiming) == cudaSuccess);
      UNETCU_CUDA_CHECK(cudaEventRecord(join, s.b));
      UNETCU_CUDA_CHECK(cudaStreamWaitEvent(s.a, join, 0));
      cudaEventDestroy(join);
      REQUIRE(cudaStreamSynchronize(s.a) == cudaSuccess);
      const bool race_shows = order == StreamOrder::early && !forked;
      CHECK(out.read()[6] == (race_shows ? 1 : 27));  // stale: 2 * mid[6] + 1 with mid[6] = 0
    }
  }
}

TEST_CASE("simt streams: a left-out join shows as stale data") {
  const int n = 64;
  for (const bool joined : {false, true}) {
    CAPTURE(joined);
    StreamPair s(StreamOrder::late, StreamOrder::late);  // a: main, b: side
    DeviceArray<int> in(iota_times(n, 1)), grad(iota_times(n, 0)), out(iota_times(n, 0));
    UNETCU_CUDA_CHECK(cudaEventRecord(s.event, s.a));  // fork
    UNETCU_CUDA_CHECK(cudaStreamWaitEvent(s.b, s.event, 0));
    simt_test::chained_scale(grad.get(), in.get(), n, s.b);  // side: grad = 2i + 1
    if (joined) {
      cudaEvent_t join = nullptr;
      REQUIRE(cudaEventCreateWithFlags(&join, cudaEventDisableTiming) == cudaSuccess);
      UNETCU_CUDA_CHECK(cudaEventRecord(join, s.b));
      UNETCU_CUDA_CHECK(cudaStreamWaitEvent(s.a, join, 0));
      cudaEventDestroy(join);  // a recorded position outlives its event
    }
    simt_test::chained_scale(out.get(), grad.get(), n, s.a);  // main reads grad
    REQUIRE(cudaStreamSynchronize(s.a) == cudaSuccess);
    CHECK((out.read()[4] == 2 * 9 + 1) == joined);  // unjoined: it read grad[4] = 0
    REQUIRE(cudaStreamSynchronize(s.b) == cudaSuccess);
  }
}

TEST_CASE("simt streams: late graph replays, frees and destroyed streams finish queued work") {
  const int n = 64;
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  DeviceArray<int> in(iota_times(n, 1)), out(iota_times(n, 0));
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
  simt_test::chained_scale(out.get(), in.get(), n, stream);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  cudaGraphDestroy(graph);
  REQUIRE(unetcu::simt::set_stream_order(stream, StreamOrder::late) == cudaSuccess);

  REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
  cudaGraphExecDestroy(exec);  // the queued replay keeps its own nodes
  CHECK(out.read()[3] == 0);
  SUBCASE("cudaFree synchronises the device") {
    DeviceArray<int> unused(size_t(1));
  }
  SUBCASE("destroying the stream finishes its work") {
    cudaStreamDestroy(stream);
    stream = nullptr;
  }
  CHECK(out.read()[3] == 7);
  if (stream) cudaStreamDestroy(stream);
}

TEST_CASE("simt streams: the order of new streams, and the default streams stay in order") {
  const StreamOrder before = unetcu::simt::stream_order();
  unetcu::simt::set_stream_order(StreamOrder::late);
  CHECK(unetcu::simt::stream_order() == StreamOrder::late);
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  unetcu::simt::set_stream_order(before);
  const int n = 64;
  DeviceArray<int> in(iota_times(n, 1)), out(iota_times(n, 0));
  simt_test::chained_scale(out.get(), in.get(), n, stream);
  CHECK(out.read()[2] == 0);  // created late
  REQUIRE(cudaStreamQuery(stream) == cudaSuccess);  // a query finishes the work here
  CHECK(out.read()[2] == 5);
  CHECK(unetcu::simt::set_stream_order(nullptr, StreamOrder::late) ==
        cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
  cudaStreamDestroy(stream);
}
