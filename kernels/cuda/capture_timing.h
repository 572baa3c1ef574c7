// kernels/cuda/capture_timing.h: how a candidate way of running a call (a cuDNN plan, a
// cuBLAS algorithm, one of our kernels' paths) is timed before it is chosen: as the captured
// training step runs it. CUDA runtime only (the SIMT emulator runs it too), so every runner can
// share it.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <vector>

namespace unetcu {

// The time of one call of `run` in ms: `calls` calls captured as one CUDA graph on `stream`
// (as a captured training step runs them, without the host's time to issue each), the graph
// launched once untimed and then `runs` times between the two events, the median per call.
// `run` returns whether its call was accepted. Negative when a call fails or cannot be
// captured (its error is cleared so that it does not surface at a later launch).
inline float time_captured(cudaStream_t stream, cudaEvent_t start, cudaEvent_t stop, int calls,
                           int runs, const std::function<bool()>& run) {
  auto failed = [] {
    (void)cudaGetLastError();
    return -1.0f;
  };
  if (!run()) return failed();  // warm-up, eager
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
    return failed();
  bool ok = true;
  cudaGraph_t graph = nullptr;
  try {
    for (int c = 0; c < calls && ok; ++c) ok = run();
  } catch (...) {
    // End the capture before the exception leaves: a stream left capturing would take the
    // caller's later work into a dead graph.
    if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph != nullptr)
      (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    throw;
  }
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  cudaGraphExec_t exec = nullptr;
  ok = ok && ended == cudaSuccess && graph != nullptr &&
       cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  std::vector<float> ms;
  for (int r = -1; ok && r < runs; ++r) {  // r = -1: an untimed first launch
    ok = cudaEventRecord(start, stream) == cudaSuccess &&
         cudaGraphLaunch(exec, stream) == cudaSuccess &&
         cudaEventRecord(stop, stream) == cudaSuccess && cudaEventSynchronize(stop) == cudaSuccess;
    float t = 0;
    if (ok && r >= 0) {
      ok = cudaEventElapsedTime(&t, start, stop) == cudaSuccess;
      ms.push_back(t / float(calls));
    }
  }
  if (exec) (void)cudaGraphExecDestroy(exec);
  if (graph) (void)cudaGraphDestroy(graph);
  if (!ok || ms.empty()) return failed();
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

}  // namespace unetcu
