// bench/kernel_trace.cpp: KernelTrace (see kernel_trace.h) on CUPTI's activity API: CUPTI asks
// for buffers, fills them with activity records as the GPU works, and hands them back (at the
// latest at cuptiActivityFlushAll), where they are copied into TraceRecords.
#include "bench/kernel_trace.h"

#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>

namespace unetcu::bench {
namespace {

// CUPTI's callbacks are plain functions: the records go to one sink per process.
std::mutex g_mutex;
std::vector<TraceRecord> g_records;
size_t g_dropped = 0;

constexpr size_t kBufferBytes = size_t(8) << 20;
constexpr size_t kBufferAlign = 8;  // CUPTI's requirement for activity buffers

void check(CUptiResult result, const char* call) {
  if (result == CUPTI_SUCCESS) return;
  const char* text = nullptr;
  cuptiGetResultString(result, &text);
  throw std::runtime_error(std::string("CUPTI error in ") + call + ": " +
                           (text ? text : "unknown") +
                           ". Hint: another profiler (Nsight Compute or Systems) may hold CUPTI; "
                           "run the trace on its own");
}
#define UNETCU_CUPTI_CHECK(expr) check((expr), #expr)

std::string demangle(const char* name) {
  if (name == nullptr) return "?";
  int status = 0;
  char* plain = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = status == 0 && plain ? plain : name;
  std::free(plain);
  return out;
}

std::string dims(int x, int y, int z) {
  return "(" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + ")";
}

const char* copy_kind(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "DtoD";
    default: return "copy";
  }
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(kBufferAlign, kBufferBytes));
  *size = *buffer ? kBufferBytes : 0;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext context, uint32_t stream_id, uint8_t* buffer,
                               size_t size, size_t valid) {
  std::lock_guard<std::mutex> lock(g_mutex);
  CUpti_Activity* record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    TraceRecord r;
    if (record->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL ||
        record->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
      r = TraceRecord{"kernel",
                      k->start,
                      k->end,
                      k->streamId,
                      k->graphNodeId,
                      dims(k->gridX, k->gridY, k->gridZ),
                      dims(k->blockX, k->blockY, k->blockZ),
                      demangle(k->name)};
    } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
      r = TraceRecord{"memcpy", m->start, m->end, m->streamId, m->graphNodeId, "", "",
                      std::string(copy_kind(m->copyKind)) + " " + std::to_string(m->bytes) +
                          " B"};
    } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
      r = TraceRecord{"memset", m->start, m->end, m->streamId, m->graphNodeId, "", "",
                      "memset " + std::to_string(m->bytes) + " B"};
    } else {
      continue;
    }
    g_records.push_back(std::move(r));
  }
  size_t dropped = 0;
  if (cuptiActivityGetNumDroppedRecords(context, stream_id, &dropped) == CUPTI_SUCCESS)
    g_dropped += dropped;
  std::free(buffer);
}

const CUpti_ActivityKind kKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL,
                                     CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET};

}  // namespace

KernelTrace::KernelTrace() {
  UNETCU_CUPTI_CHECK(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed));
}

KernelTrace::~KernelTrace() {
  if (!running_) return;
  try {
    stop();
  } catch (const std::exception&) {
    // nowhere to report it from a destructor
  }
}

void KernelTrace::start() {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_records.clear();
    g_dropped = 0;
  }
  for (CUpti_ActivityKind kind : kKinds) UNETCU_CUPTI_CHECK(cuptiActivityEnable(kind));
  running_ = true;
}

void KernelTrace::stop() {
  if (!running_) return;
  running_ = false;
  UNETCU_CUPTI_CHECK(cuptiActivityFlushAll(1));
  for (CUpti_ActivityKind kind : kKinds) UNETCU_CUPTI_CHECK(cuptiActivityDisable(kind));
}

uint64_t KernelTrace::now() {
  uint64_t t = 0;
  UNETCU_CUPTI_CHECK(cuptiGetTimestamp(&t));
  return t;
}

const std::vector<TraceRecord>& KernelTrace::records() const { return g_records; }

size_t KernelTrace::dropped() const { return g_dropped; }

void write_trace_csv(std::FILE* out, const std::vector<TraceRecord>& records,
                     const std::vector<uint64_t>& step_starts) {
  std::fprintf(out, "step,kind,start_ns,end_ns,stream,graph_node,grid,block,name\n");
  for (const TraceRecord& r : records) {
    const long step =
        long(std::upper_bound(step_starts.begin(), step_starts.end(), r.start_ns) -
             step_starts.begin()) -
        1;
    std::string name;  // CSV quoting: the name in quotes, its quotes doubled
    for (char ch : r.name) name += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    std::fprintf(out, "%ld,%s,%llu,%llu,%u,%llu,\"%s\",\"%s\",\"%s\"\n", step, r.kind.c_str(),
                 (unsigned long long)r.start_ns, (unsigned long long)r.end_ns, r.stream,
                 (unsigned long long)r.graph_node, r.grid.c_str(), r.block.c_str(),
                 name.c_str());
  }
}

}  // namespace unetcu::bench
