// bench/kernel_trace.h: a timeline of what ran on the GPU, through CUPTI's activity API: each
// kernel, copy and memset with its start and end on the GPU's clock, stream, grid and name, for
// `bench_cuda_ops --trace-steps` (tools/step_timeline.py reads the CSV). Nsight Compute runs
// kernels one at a time, so it says how long each takes but not how they overlap; this says
// how the step's streams overlap and where the GPU or the compute stream's work waits.
//
// Records of kernels in a replayed CUDA graph carry the stream the graph was launched into, not
// the one each was captured from, so the timeline tells the streams apart by kernel family
// (tools/step_timeline.py), not by stream.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace unetcu::bench {

// One GPU activity: a kernel ("kernel"), a copy ("memcpy") or a memset ("memset").
struct TraceRecord {
  std::string kind;
  uint64_t start_ns = 0, end_ns = 0;  // the GPU's timestamps (cuptiGetTimestamp's clock)
  uint32_t stream = 0;
  uint64_t graph_node = 0;            // 0 outside a graph
  std::string grid, block;            // "(x,y,z)"; empty for copies and memsets
  std::string name;                   // demangled kernel name; "HtoD 1048576 B" for a copy
};

// Collects from start() to stop(); one at a time per process (CUPTI's callbacks are global).
// Throws std::runtime_error naming the CUPTI call that failed and CUPTI's text.
class KernelTrace {
 public:
  KernelTrace();
  ~KernelTrace();
  KernelTrace(const KernelTrace&) = delete;
  KernelTrace& operator=(const KernelTrace&) = delete;

  void start();
  // Flushes CUPTI's buffers (call after the device is synchronised) and stops collecting.
  void stop();
  // The GPU clock now, for marking where each step begins.
  static uint64_t now();
  // What was collected, in completion order.
  const std::vector<TraceRecord>& records() const;
  // Records dropped because CUPTI's buffers were full (should be 0).
  size_t dropped() const;

 private:
  bool running_ = false;
};

// The records as CSV (header: step,kind,start_ns,end_ns,stream,graph_node,grid,block,name),
// each with the index of the last step start at or before it (-1 before the first).
void write_trace_csv(std::FILE* out, const std::vector<TraceRecord>& records,
                     const std::vector<uint64_t>& step_starts);

}  // namespace unetcu::bench
