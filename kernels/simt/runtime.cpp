// kernels/simt/runtime.cpp: the CUDA runtime functions the engine uses, for the SIMT emulator,
// with their real declarations from <cuda_runtime_api.h>; linked instead of libcudart.
//
// Model: one device ("SIMT emulator", reported so the CUDA backend runs in tests) whose memory is
// host memory. Streams execute synchronously in issue order by default, so events, stream waits
// and synchronisation only check their arguments. In the late and early orders (control.h) a
// stream's work waits in its queue until something needs it (see "stream queues" below), so a
// missing event between streams shows as a wrong result. Stream capture records kernel launches,
// memcpy/memset-async and host functions (arguments copied by value) into a graph that
// cudaGraphLaunch replays in order. Calls that a GPU forbids during capture (allocating,
// synchronising, using the legacy stream) fail and invalidate the capture here too, and so does
// ending a capture with a forked stream not joined back, so such bugs show in CI. Every error
// is kept as the thread's last error, with a sentence saying what was wrong that
// kernels/cuda/check.h adds to its message.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kernels/simt/control.h"
#include "kernels/simt/internal.h"

namespace {

using unetcu::simt::KernelCall;
using unetcu::simt::detail::fail;

// ---- errors -------------------------------------------------------------------------------------

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local cudaError_t t_problem_error = cudaSuccess;
thread_local std::string t_problem;
thread_local std::string t_problem_taken;

struct ErrorText {
  cudaError_t error;
  const char* name;
  const char* text;
};

// The errors the emulator returns, and those a caller is likely to ask about.
const ErrorText kErrors[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInitializationError, "cudaErrorInitializationError", "initialization error"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration",
     "invalid configuration argument"},
    {cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection",
     "invalid copy direction for memcpy"},
    {cudaErrorInsufficientDriver, "cudaErrorInsufficientDriver",
     "CUDA driver version is insufficient for CUDA runtime version"},
    {cudaErrorInvalidDeviceFunction, "cudaErrorInvalidDeviceFunction", "invalid device function"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorNoKernelImageForDevice, "cudaErrorNoKernelImageForDevice",
     "no kernel image is available for execution on the device"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle",
     "invalid resource handle"},
    {cudaErrorIllegalState, "cudaErrorIllegalState",
     "the operation cannot be performed in the present state"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress",
     "an illegal memory access was encountered"},
    {cudaErrorLaunchOutOfResources, "cudaErrorLaunchOutOfResources",
     "too many resources requested for launch"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure"},
    {cudaErrorNotSupported, "cudaErrorNotSupported", "operation not supported"},
    {cudaErrorCooperativeLaunchTooLarge, "cudaErrorCooperativeLaunchTooLarge",
     "too many blocks in cooperative launch"},
    {cudaErrorInvalidClusterSize, "cudaErrorInvalidClusterSize",
     "a kernel launch error has occurred due to cluster misconfiguration"},
    {cudaErrorStreamCaptureUnsupported, "cudaErrorStreamCaptureUnsupported",
     "operation not permitted when stream is capturing"},
    {cudaErrorStreamCaptureInvalidated, "cudaErrorStreamCaptureInvalidated",
     "operation failed due to a previous error during capture"},
    {cudaErrorStreamCaptureMerge, "cudaErrorStreamCaptureMerge",
     "operation would result in a merge of separate capture sequences"},
    {cudaErrorStreamCaptureUnjoined, "cudaErrorStreamCaptureUnjoined",
     "capture sequence contains a fork that was not joined to the primary stream"},
    {cudaErrorStreamCaptureUnmatched, "cudaErrorStreamCaptureUnmatched",
     "capture was not ended in the same stream as it began"},
    {cudaErrorStreamCaptureImplicit, "cudaErrorStreamCaptureImplicit",
     "operation would make the legacy stream depend on a capturing blocking stream"},
    {cudaErrorCapturedEvent, "cudaErrorCapturedEvent",
     "operation not permitted on an event last recorded in a capturing stream"},
    {cudaErrorUnknown, "cudaErrorUnknown", "unknown error"},
};

const ErrorText* find_error(cudaError_t error) {
  for (const ErrorText& e : kErrors) {
    if (e.error == error) return &e;
  }
  return nullptr;
}

// ---- memory -------------------------------------------------------------------------------------

struct Allocation {
  size_t bytes;
  bool device;  // cudaMalloc (else cudaMallocHost / cudaHostAlloc)
};

std::mutex g_memory_mutex;
std::map<uintptr_t, Allocation> g_allocations;
size_t g_device_bytes = 0;
size_t g_memory_limit = 0;  // 0: not read from the environment yet

size_t memory_limit_locked() {
  if (g_memory_limit == 0) {
    const char* mb = std::getenv("UNETCU_SIMT_MEMORY_MB");
    g_memory_limit = mb != nullptr && std::atoll(mb) > 0 ? size_t(std::atoll(mb)) << 20
                                                         : size_t{16} << 30;
  }
  return g_memory_limit;
}

// Past the end of every cudaMalloc'd block (its size rounded up to 4 bytes), a tail of quiet
// NaNs whose payload is the block's address and the word's place: a kernel that writes past its
// buffer changes it, which cudaFree and the end of the process check (a read past the end gets
// NaN). Under AddressSanitizer the block keeps its exact size instead: ASan's own redzone then
// reports the first byte past it, at the access.
#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kTailBytes = 0;
#else
constexpr size_t kTailBytes = 256;
#endif

size_t tail_start(size_t bytes) { return (bytes + 3) / 4 * 4; }

uint32_t tail_word(uintptr_t base, size_t k) {
  return 0x7fc00000u | uint32_t(((base >> 8) * (kTailBytes / 4) + k) & 0x3fffffu);
}

void fill_tail(unsigned char* p, size_t bytes) {
  for (size_t k = 0; k < kTailBytes / 4; ++k) {
    const uint32_t w = tail_word(reinterpret_cast<uintptr_t>(p), k);
    std::memcpy(p + tail_start(bytes) + 4 * k, &w, 4);
  }
}

// Aborts with a report when the tail after the block at `p` of `bytes` was written.
void check_tail(uintptr_t p, size_t bytes, const char* when) {
  const unsigned char* at = reinterpret_cast<const unsigned char*>(p) + tail_start(bytes);
  for (size_t k = 0; k < kTailBytes / 4; ++k) {
    uint32_t w;
    std::memcpy(&w, at + 4 * k, 4);
    if (w == tail_word(p, k)) continue;
    std::fprintf(stderr,
                 "unetcu simt: the %zu bytes past the end of a %zu-byte cudaMalloc allocation "
                 "at %p were written (byte %zu of them first), found %s: a kernel wrote past "
                 "the end of its buffer\n",
                 kTailBytes, bytes, reinterpret_cast<const void*>(p), 4 * k, when);
    std::fflush(stderr);
    std::abort();
  }
}

// At the end of the process, the tails of the blocks never freed (a test's backend that lives
// until then, say).
void check_tails_at_exit() {
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  for (const auto& [p, a] : g_allocations)
    if (a.device) check_tail(p, a.bytes, "at the end of the process");
}

// The tracked allocation holding `p`, if any (memory_mutex held).
const std::pair<const uintptr_t, Allocation>* find_allocation(const void* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  auto it = g_allocations.upper_bound(address);
  if (it == g_allocations.begin()) return nullptr;
  --it;
  if (address >= it->first + it->second.bytes) return nullptr;
  return &*it;
}

// Checks that [p, p + bytes) lies inside one allocation when p is in one, and that p is device
// memory when `device` is asked; describes the problem otherwise.
bool check_range(const void* p, size_t bytes, bool device, const char* role, std::string* why) {
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  const auto* found = find_allocation(p);
  std::ostringstream os;
  if (found == nullptr) {
    if (!device) return true;
    os << role << " " << p << " is not device memory from cudaMalloc";
  } else if (reinterpret_cast<uintptr_t>(p) + bytes > found->first + found->second.bytes) {
    os << role << " range of " << bytes << " bytes at offset "
       << reinterpret_cast<uintptr_t>(p) - found->first << " overruns its "
       << found->second.bytes << "-byte allocation";
  } else if (device && !found->second.device) {
    os << role << " " << p << " is pinned host memory, not device memory";
  } else {
    return true;
  }
  *why = os.str();
  return false;
}

cudaError_t check_copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) {
    return fail(cudaErrorInvalidMemcpyDirection, "unknown cudaMemcpyKind");
  }
  std::string why;
  if (!check_range(dst, bytes, dst_device, "destination", &why) ||
      !check_range(src, bytes, src_device, "source", &why)) {
    return fail(cudaErrorInvalidValue, "memcpy: " + why);
  }
  return cudaSuccess;
}

cudaError_t check_set(void* dst, size_t bytes) {
  std::string why;
  if (!check_range(dst, bytes, true, "destination", &why)) {
    return fail(cudaErrorInvalidValue, "memset: " + why);
  }
  return cudaSuccess;
}

// ---- graphs, streams, events --------------------------------------------------------------------

struct Node {
  enum class Kind { kernel, copy, set, host, graph } kind;
  KernelCall call;
  void* dst = nullptr;
  const void* src = nullptr;
  size_t bytes = 0;
  int value = 0;
  cudaHostFn_t fn = nullptr;
  void* user = nullptr;
  std::shared_ptr<const std::vector<Node>> graph;  // a replay queued on a late stream
};

void run(const Node& node) {
  switch (node.kind) {
    case Node::Kind::kernel: unetcu::simt::detail::run_grid(node.call); break;
    case Node::Kind::copy: std::memcpy(node.dst, node.src, node.bytes); break;
    case Node::Kind::set: std::memset(node.dst, node.value, node.bytes); break;
    case Node::Kind::host: node.fn(node.user); break;
    case Node::Kind::graph:
      for (const Node& inner : *node.graph) run(inner);
      break;
  }
}

// ---- stream queues ------------------------------------------------------------------------------
//
// Every stream has a queue. In the in-order mode its work runs when issued, so the queue is always
// empty. A late or early stream appends its work, and cudaStreamWaitEvent appends a wait for the
// position the event recorded in the other stream's queue. Work runs only when something needs
// it: a stream draining up to a wait drains the awaited queue up to the recorded position first;
// the host drains a queue at cudaStreamSynchronize/Query, an event's queue up to the event at
// cudaEventSynchronize/Query, every queue at cudaDeviceSynchronize, cudaFree and cudaFreeHost
// (which synchronise the device on a GPU), and the blocking streams' queues before work on the
// legacy stream (synchronous copies and memsets included), as a GPU orders them. Before any of
// these host drains, the early streams other than the one drained run all they hold, newest
// stream first. So in the late order work that no event orders before another stream's later
// work runs after it (a stream that writes what another still reads gets caught), and in the
// early order an early stream's work runs before the other streams' earlier work that it does
// not wait for (a stream that reads another's result without waiting gets caught). Waits only
// point at positions issued earlier in host order, so draining never cycles.
struct Queue {
  struct Item {
    Node node;
    std::shared_ptr<Queue> wait_on;  // set: a wait for wait_on's first wait_seq items
    uint64_t wait_seq = 0;
  };
  unetcu::simt::StreamOrder order = unetcu::simt::StreamOrder::in_order;
  bool blocking = true;  // ordered with the legacy stream (not cudaStreamNonBlocking)
  std::deque<Item> items;
  uint64_t issued = 0;   // items ever queued (or run at once)
  uint64_t done = 0;     // items finished
  bool queued() const { return order != unetcu::simt::StreamOrder::in_order; }
};

struct Capture {
  cudaGraph_t graph;
  cudaStreamCaptureMode mode;
  std::thread::id owner;
  cudaStream_t origin;
  unsigned long long id;
  bool active = true;
  bool invalidated = false;
  std::vector<cudaStream_t> streams;  // origin plus the streams joined through events
};

}  // namespace

struct CUgraph_st {
  std::vector<Node> nodes;
};
struct CUgraphExec_st {
  // Shared with the replays still queued on late streams, so a replay copies nothing.
  std::shared_ptr<const std::vector<Node>> nodes;
};
struct CUstream_st {
  unsigned flags = 0;
  std::shared_ptr<Capture> capture;
  std::shared_ptr<Queue> queue = std::make_shared<Queue>();
  // In a capture it joined through an event (not its origin): work recorded on it so far, and
  // whether another stream of the capture has waited on an event recorded after that work.
  uint64_t captured_work = 0;
  bool joined = true;
};
struct CUevent_st {
  unsigned flags = 0;
  bool recorded = false;
  std::chrono::steady_clock::time_point when;
  std::shared_ptr<Capture> capture;  // set when last recorded into a capture
  cudaStream_t captured_on = nullptr;  // there, on this stream, after this much of its work
  uint64_t captured_work = 0;
  std::shared_ptr<Queue> queue;      // set when last recorded outside one: where, and
  uint64_t seq = 0;                  // how many of that queue's items came before
};

namespace {

// One lock for streams, events and captures: the emulator runs work synchronously, so calls
// from several host threads only need their bookkeeping serialised.
std::recursive_mutex g_stream_mutex;
CUstream_st g_default_stream;                // the legacy stream
thread_local CUstream_st t_per_thread_stream;  // cudaStreamPerThread
std::vector<std::shared_ptr<Capture>> g_captures;  // active ones
unsigned long long g_next_capture_id = 1;
thread_local cudaStreamCaptureMode t_capture_mode = cudaStreamCaptureModeGlobal;

bool is_legacy(cudaStream_t s) { return s == nullptr || s == cudaStreamLegacy; }

// Late-order bookkeeping: the order given to new streams, and every stream queue (to drain them
// all at a device-wide synchronisation). One drain at a time: a drain runs work unlocked.
using unetcu::simt::StreamOrder;
int g_stream_order = -1;  // -1: not read from UNETCU_SIMT_STREAMS yet
std::vector<std::weak_ptr<Queue>> g_queues;
std::recursive_mutex g_drain_mutex;

StreamOrder default_stream_order_locked() {
  if (g_stream_order < 0) {
    const char* value = std::getenv("UNETCU_SIMT_STREAMS");
    const std::string order = value != nullptr ? value : "";
    g_stream_order = static_cast<int>(order == "late"    ? StreamOrder::late
                                      : order == "early" ? StreamOrder::early
                                                         : StreamOrder::in_order);
  }
  return static_cast<StreamOrder>(g_stream_order);
}

// Runs `q`'s items until `upto` of them are done (see "stream queues").
void drain(const std::shared_ptr<Queue>& q, uint64_t upto) {
  std::lock_guard<std::recursive_mutex> drain_lock(g_drain_mutex);
  for (;;) {
    Queue::Item item;
    {
      std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
      if (q->done >= upto || q->items.empty()) return;
      item = std::move(q->items.front());
      q->items.pop_front();
    }
    if (item.wait_on) drain(item.wait_on, item.wait_seq);
    else run(item.node);
    std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
    ++q->done;
  }
}

// The queues holding work, early ones first and newest first among them, then the late ones in
// creation order; only those of blocking streams when asked (what legacy-stream work waits for).
std::vector<std::shared_ptr<Queue>> pending_queues(bool blocking_only, bool early_only) {
  std::vector<std::shared_ptr<Queue>> early, late;
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  for (auto it = g_queues.begin(); it != g_queues.end();) {
    std::shared_ptr<Queue> q = it->lock();
    if (!q) {
      it = g_queues.erase(it);
      continue;
    }
    ++it;
    if (q->items.empty() || (blocking_only && !q->blocking)) continue;
    if (q->order == StreamOrder::early) early.insert(early.begin(), std::move(q));
    else if (!early_only) late.push_back(std::move(q));
  }
  early.insert(early.end(), late.begin(), late.end());
  return early;
}

// Drains every queue with work, or those of blocking streams.
void drain_all(bool blocking_only) {
  for (const auto& q : pending_queues(blocking_only, /*early_only=*/false)) drain(q, q->issued);
}

// A host synchronisation with `q` up to `upto`: the early streams first (see "stream queues").
void host_drain(const std::shared_ptr<Queue>& q, uint64_t upto) {
  for (const auto& other : pending_queues(/*blocking_only=*/false, /*early_only=*/true))
    if (other != q) drain(other, other->issued);
  drain(q, upto);
}

CUstream_st* resolve(cudaStream_t s) {
  if (is_legacy(s)) return &g_default_stream;
  return s == cudaStreamPerThread ? &t_per_thread_stream : s;
}

void end_capture(Capture& capture) {
  capture.active = false;
  for (cudaStream_t s : capture.streams) {
    CUstream_st* st = resolve(s);
    st->capture.reset();
    st->captured_work = 0;
    st->joined = true;
  }
  for (auto it = g_captures.begin(); it != g_captures.end(); ++it) {
    if (it->get() == &capture) {
      g_captures.erase(it);
      break;
    }
  }
}

// A call a GPU forbids while a capture is under way (allocation, device-wide synchronisation):
// fails, and invalidates the captures it would have broken.
cudaError_t forbidden_during_capture(const char* what) {
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  if (t_capture_mode == cudaStreamCaptureModeRelaxed) return cudaSuccess;
  bool hit = false;
  for (const auto& capture : g_captures) {
    if (capture->mode == cudaStreamCaptureModeGlobal ||
        (capture->mode == cudaStreamCaptureModeThreadLocal &&
         capture->owner == std::this_thread::get_id())) {
      capture->invalidated = true;
      hit = true;
    }
  }
  if (!hit) return cudaSuccess;
  return fail(cudaErrorStreamCaptureUnsupported,
              std::string(what) + " called while a stream is being captured (the capture is now "
                                  "invalid)");
}

// Work issued to `stream`: null when it should run now, else the capture recording it. Using the
// legacy stream while a blocking stream is captured is an error that invalidates that capture.
cudaError_t issue(cudaStream_t stream, const char* what, std::shared_ptr<Capture>* capture) {
  capture->reset();
  CUstream_st* s = resolve(stream);
  if (s->capture) {
    if (s->capture->invalidated) {
      return fail(cudaErrorStreamCaptureInvalidated,
                  std::string(what) + " on a stream whose capture was invalidated");
    }
    *capture = s->capture;
    return cudaSuccess;
  }
  if (is_legacy(stream)) {
    bool hit = false;
    for (const auto& c : g_captures) {
      if ((resolve(c->origin)->flags & cudaStreamNonBlocking) == 0) {
        c->invalidated = true;
        hit = true;
      }
    }
    if (hit) {
      return fail(cudaErrorStreamCaptureImplicit,
                  std::string(what) + " on the legacy default stream while a blocking stream is "
                                      "being captured (the capture is now invalid)");
    }
  }
  return cudaSuccess;
}

// Work recorded on `stream` in `capture`: a stream forked into the capture now has work that
// must be joined back before the capture ends.
void note_captured_work(const Capture& capture, cudaStream_t stream) {
  CUstream_st* s = resolve(stream);
  ++s->captured_work;
  if (stream != capture.origin) s->joined = false;
}

// Runs `node` now, queues it (late and early streams), or appends it to the capture of `stream`.
cudaError_t submit(cudaStream_t stream, const char* what, Node node) {
  std::unique_lock<std::recursive_mutex> lock(g_stream_mutex);
  std::shared_ptr<Capture> capture;
  const cudaError_t error = issue(stream, what, &capture);
  if (error != cudaSuccess) return error;
  if (capture) {
    capture->graph->nodes.push_back(std::move(node));
    note_captured_work(*capture, stream);
    return cudaSuccess;
  }
  const std::shared_ptr<Queue> q = resolve(stream)->queue;
  ++q->issued;
  if (q->queued()) {
    q->items.push_back(Queue::Item{std::move(node), nullptr, 0});
    return cudaSuccess;
  }
  lock.unlock();  // a host function may call back into the runtime from another thread
  if (is_legacy(stream)) drain_all(/*blocking_only=*/true);
  run(node);
  lock.lock();
  ++q->done;
  return cudaSuccess;
}

// Synchronising with a stream or event that is part of a capture is forbidden on a GPU.
cudaError_t check_sync(cudaStream_t stream, const char* what) {
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  CUstream_st* s = resolve(stream);
  if (s->capture) {
    s->capture->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported,
                std::string(what) + " on a stream that is being captured");
  }
  std::shared_ptr<Capture> none;
  if (cudaError_t e = issue(stream, what, &none); e != cudaSuccess) return e;
  host_drain(s->queue, s->queue->issued);
  if (is_legacy(stream)) drain_all(/*blocking_only=*/true);
  return cudaSuccess;
}

// ---- kernel attributes --------------------------------------------------------------------------

std::mutex g_function_mutex;
std::map<const void*, size_t> g_max_dynamic_shared;
std::set<const void*> g_non_portable_clusters;  // kernels opted in to clusters above 8

cudaError_t validate(const KernelCall& call) {
  using unetcu::simt::detail::kDefaultSharedBytes;
  using unetcu::simt::detail::kMaxSharedBytes;
  using unetcu::simt::detail::kMaxThreadsPerBlock;
  const dim3 b = call.block, g = call.grid;
  const uint64_t threads = uint64_t{b.x} * b.y * b.z;
  std::ostringstream why;  // the launch check names the kernel and call site itself
  if (b.x == 0 || b.y == 0 || b.z == 0 || g.x == 0 || g.y == 0 || g.z == 0) {
    why << "a grid or block dimension is 0";
    return fail(cudaErrorInvalidConfiguration, why.str());
  }
  if (threads > kMaxThreadsPerBlock || b.x > 1024 || b.y > 1024 || b.z > 64) {
    why << "block (" << b.x << "," << b.y << "," << b.z << ") has " << threads
        << " threads; the limits are 1024 threads, x and y <= 1024, z <= 64";
    return fail(cudaErrorInvalidConfiguration, why.str());
  }
  if (g.x > 2147483647u || g.y > 65535 || g.z > 65535) {
    why << "grid (" << g.x << "," << g.y << "," << g.z << ") exceeds (2^31-1, 65535, 65535)";
    return fail(cudaErrorInvalidConfiguration, why.str());
  }
  const uint64_t blocks = uint64_t{g.x} * g.y * g.z;
  if (call.cooperative && blocks > uint64_t(unetcu::simt::kMaxCooperativeBlocks)) {
    why << "a cooperative launch of " << blocks << " blocks; the emulator runs at most "
        << unetcu::simt::kMaxCooperativeBlocks << " at once (a GPU: its co-resident blocks, see "
           "unetcu::max_cooperative_blocks in kernels/cuda/launch.h)";
    return fail(cudaErrorCooperativeLaunchTooLarge, why.str());
  }
  if (call.cluster != 0) {
    bool opted_in = false;
    {
      std::lock_guard<std::mutex> lock(g_function_mutex);
      opted_in = g_non_portable_clusters.count(call.kernel) != 0;
    }
    const unsigned most = opted_in ? unetcu::simt::kMaxNonPortableClusterBlocks
                                   : unetcu::simt::kMaxClusterBlocks;
    if (call.cluster > most) {
      why << "a cluster of " << call.cluster << " blocks; a cluster has 1 to " << most;
      if (opted_in)
        why << " (an H100's non-portable limit)";
      else
        why << " (CUDA's portable limit; up to " << unetcu::simt::kMaxNonPortableClusterBlocks
            << " after cudaFuncSetAttribute(kernel, "
               "cudaFuncAttributeNonPortableClusterSizeAllowed, 1))";
      return fail(cudaErrorInvalidClusterSize, why.str());
    }
    if (g.x % call.cluster != 0) {
      why << "grid.x " << g.x << " is not a multiple of the cluster size " << call.cluster
          << ": a cluster is that many consecutive blocks along x";
      return fail(cudaErrorInvalidClusterSize, why.str());
    }
    if (call.cooperative) {
      why << "a cluster launch that is also cooperative; the emulator runs either all blocks "
             "at once or one cluster at a time, not both";
      return fail(cudaErrorInvalidClusterSize, why.str());
    }
  }
  if (call.shared_bytes > kMaxSharedBytes) {
    why << call.shared_bytes << " bytes of dynamic shared memory; a block can have at most "
        << kMaxSharedBytes << " (227 KB)";
    return fail(cudaErrorInvalidValue, why.str());
  }
  if (call.shared_bytes > kDefaultSharedBytes) {
    size_t allowed = kDefaultSharedBytes;
    {
      std::lock_guard<std::mutex> lock(g_function_mutex);
      auto it = g_max_dynamic_shared.find(call.kernel);
      if (it != g_max_dynamic_shared.end()) allowed = it->second;
    }
    if (call.shared_bytes > allowed) {
      why << call.shared_bytes << " bytes of dynamic shared memory; above " << allowed
          << " a kernel needs cudaFuncSetAttribute(kernel, "
             "cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) first";
      return fail(cudaErrorInvalidValue, why.str());
    }
  }
  return cudaSuccess;
}

}  // namespace

namespace unetcu {
namespace simt {

namespace detail {
cudaError_t fail(cudaError_t error, std::string problem) {
  t_last_error = error;
  t_problem_error = error;
  t_problem = std::move(problem);
  return error;
}
}  // namespace detail

void set_memory_limit(size_t bytes) {
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  g_memory_limit = bytes;
}

void set_stream_order(StreamOrder order) {
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  g_stream_order = static_cast<int>(order);
}

StreamOrder stream_order() {
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  return default_stream_order_locked();
}

cudaError_t set_stream_order(cudaStream_t stream, StreamOrder order) {
  if (is_legacy(stream) || stream == cudaStreamPerThread) {
    return fail(cudaErrorInvalidResourceHandle,
                "set_stream_order: the default streams always run work when it is issued");
  }
  drain(stream->queue, stream->queue->issued);  // leaving the late order runs what waits
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  stream->queue->order = order;
  return cudaSuccess;
}

cudaError_t launch(KernelCall call, cudaStream_t stream) {
  const cudaError_t error = validate(call);
  if (error != cudaSuccess) return error;
  Node node;
  node.kind = Node::Kind::kernel;
  node.call = std::move(call);
  return submit(stream, "kernel launch", std::move(node));
}

}  // namespace simt
}  // namespace unetcu

// The explanation of the last error if it was `error`; empty otherwise. Used by check.h.
extern "C" const char* unetcu_simt_take_problem(cudaError_t error) {
  t_problem_taken.clear();
  if (t_problem_error == error) t_problem_taken.swap(t_problem);
  t_problem_error = cudaSuccess;
  t_problem.clear();
  return t_problem_taken.c_str();
}

// ---- the CUDA runtime API -----------------------------------------------------------------------

cudaError_t cudaGetLastError(void) {
  const cudaError_t error = t_last_error;
  t_last_error = cudaSuccess;
  return error;
}

cudaError_t cudaPeekAtLastError(void) { return t_last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  const ErrorText* e = find_error(error);
  return e != nullptr ? e->name : "cudaErrorUnrecognized";
}

const char* cudaGetErrorString(cudaError_t error) {
  const ErrorText* e = find_error(error);
  return e != nullptr ? e->text : "unrecognized error code";
}

cudaError_t cudaMalloc(void** ptr, size_t size) {
  if (ptr == nullptr) return fail(cudaErrorInvalidValue, "cudaMalloc: null result pointer");
  *ptr = nullptr;
  if (cudaError_t e = forbidden_during_capture("cudaMalloc"); e != cudaSuccess) return e;
  if (size == 0) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(g_memory_mutex);
    const size_t limit = memory_limit_locked();
    if (size > limit || g_device_bytes > limit - size) {
      std::ostringstream os;
      os << "cudaMalloc of " << size << " bytes with " << g_device_bytes << " of " << limit
         << " bytes of emulated device memory in use";
      return fail(cudaErrorMemoryAllocation, os.str());
    }
  }
  void* p = nullptr;
  // 0xFF bytes read as NaN (floats) or -1 (integers), so a kernel that reads memory nobody
  // wrote shows it; the tail (kTailBytes) shows one that writes past the end.
  if (posix_memalign(&p, 256, kTailBytes > 0 ? tail_start(size) + kTailBytes : size) != 0) {
    return fail(cudaErrorMemoryAllocation, "cudaMalloc: host allocation failed");
  }
  std::memset(p, 0xFF, size);
  if (kTailBytes > 0) {
    fill_tail(static_cast<unsigned char*>(p), size);
    static std::once_flag registered;
    std::call_once(registered, [] { std::atexit(check_tails_at_exit); });
  }
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  g_allocations[reinterpret_cast<uintptr_t>(p)] = Allocation{size, true};
  g_device_bytes += size;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  if (cudaError_t e = forbidden_during_capture("cudaFree"); e != cudaSuccess) return e;
  drain_all(/*blocking_only=*/false);  // cudaFree synchronises the device
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  auto it = g_allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == g_allocations.end() || !it->second.device) {
    return fail(cudaErrorInvalidValue,
                "cudaFree of a pointer that cudaMalloc did not return (or already freed)");
  }
  if (kTailBytes > 0) check_tail(it->first, it->second.bytes, "at its cudaFree");
  g_device_bytes -= it->second.bytes;
  g_allocations.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int flags) {
  if (ptr == nullptr) return fail(cudaErrorInvalidValue, "cudaHostAlloc: null result pointer");
  *ptr = nullptr;
  if (cudaError_t e = forbidden_during_capture("cudaHostAlloc"); e != cudaSuccess) return e;
  if (size == 0) return cudaSuccess;
  void* p = nullptr;
  if (posix_memalign(&p, 4096, size) != 0) {
    return fail(cudaErrorMemoryAllocation, "cudaHostAlloc: host allocation failed");
  }
  std::memset(p, 0xFF, size);
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  g_allocations[reinterpret_cast<uintptr_t>(p)] = Allocation{size, false};
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t size) {
  return cudaHostAlloc(ptr, size, cudaHostAllocDefault);
}

cudaError_t cudaFreeHost(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  if (cudaError_t e = forbidden_during_capture("cudaFreeHost"); e != cudaSuccess) return e;
  drain_all(/*blocking_only=*/false);  // as cudaFree
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  auto it = g_allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == g_allocations.end() || it->second.device) {
    return fail(cudaErrorInvalidValue,
                "cudaFreeHost of a pointer that cudaMallocHost/cudaHostAlloc did not return");
  }
  g_allocations.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMallocAsync(void** ptr, size_t size, cudaStream_t stream) {
  {
    std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
    if (resolve(stream)->capture) {
      return fail(cudaErrorNotSupported,
                  "cudaMallocAsync during stream capture: the emulator records no allocation "
                  "nodes");
    }
  }
  return cudaMalloc(ptr, size);
}

cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  {
    std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
    if (resolve(stream)->capture) {
      return fail(cudaErrorNotSupported,
                  "cudaFreeAsync during stream capture: the emulator records no free nodes");
    }
  }
  return cudaFree(ptr);
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  const size_t limit = memory_limit_locked();
  if (free_bytes != nullptr) *free_bytes = g_device_bytes < limit ? limit - g_device_bytes : 0;
  if (total_bytes != nullptr) *total_bytes = limit;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  if (count == 0) return cudaSuccess;
  if (cudaError_t e = forbidden_during_capture("cudaMemcpy"); e != cudaSuccess) return e;
  if (cudaError_t e = check_copy(dst, src, count, kind); e != cudaSuccess) return e;
  drain_all(/*blocking_only=*/true);  // legacy-stream work
  std::memcpy(dst, src, count);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (cudaError_t e = check_copy(dst, src, count, kind); e != cudaSuccess) return e;
  Node node;
  node.kind = Node::Kind::copy;
  node.dst = dst;
  node.src = src;
  node.bytes = count;
  return submit(stream, "cudaMemcpyAsync", std::move(node));
}

cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                         size_t height, enum cudaMemcpyKind kind) {
  if (cudaError_t e = forbidden_during_capture("cudaMemcpy2D"); e != cudaSuccess) return e;
  return cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, kind, nullptr);
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, enum cudaMemcpyKind kind,
                              cudaStream_t stream) {
  if (width > dpitch || width > spitch) {
    return fail(cudaErrorInvalidValue, "cudaMemcpy2D: width exceeds a pitch");
  }
  for (size_t row = 0; row < height; ++row) {
    const cudaError_t e =
        cudaMemcpyAsync(static_cast<char*>(dst) + row * dpitch,
                        static_cast<const char*>(src) + row * spitch, width, kind, stream);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  if (count == 0) return cudaSuccess;
  if (cudaError_t e = forbidden_during_capture("cudaMemset"); e != cudaSuccess) return e;
  if (cudaError_t e = check_set(ptr, count); e != cudaSuccess) return e;
  drain_all(/*blocking_only=*/true);  // legacy-stream work
  std::memset(ptr, value, count);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (cudaError_t e = check_set(ptr, count); e != cudaSuccess) return e;
  Node node;
  node.kind = Node::Kind::set;
  node.dst = ptr;
  node.value = value;
  node.bytes = count;
  return submit(stream, "cudaMemsetAsync", std::move(node));
}

cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* user_data) {
  if (fn == nullptr) return fail(cudaErrorInvalidValue, "cudaLaunchHostFunc: null function");
  Node node;
  node.kind = Node::Kind::host;
  node.fn = fn;
  node.user = user_data;
  return submit(stream, "cudaLaunchHostFunc", std::move(node));
}

cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (func == nullptr) return fail(cudaErrorInvalidDeviceFunction, "cudaFuncSetAttribute: null");
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || size_t(value) > unetcu::simt::detail::kMaxSharedBytes) {
      return fail(cudaErrorInvalidValue,
                  "cudaFuncAttributeMaxDynamicSharedMemorySize above 227 KB");
    }
    std::lock_guard<std::mutex> lock(g_function_mutex);
    g_max_dynamic_shared[func] = size_t(value);
  } else if (attr == cudaFuncAttributeNonPortableClusterSizeAllowed) {
    if (value != 0 && value != 1)
      return fail(cudaErrorInvalidValue,
                  "cudaFuncAttributeNonPortableClusterSizeAllowed takes 0 or 1");
    std::lock_guard<std::mutex> lock(g_function_mutex);
    if (value == 1)
      g_non_portable_clusters.insert(func);
    else
      g_non_portable_clusters.erase(func);
  }
  return cudaSuccess;
}

// ---- device -------------------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return fail(cudaErrorInvalidValue, "cudaGetDeviceCount: null");
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice, "the emulator has one device, 0");
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return fail(cudaErrorInvalidValue, "cudaGetDevice: null");
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  if (prop == nullptr) return fail(cudaErrorInvalidValue, "cudaGetDeviceProperties: null");
  if (device != 0) return fail(cudaErrorInvalidDevice, "the emulator has one device, 0");
  using unetcu::simt::detail::kDefaultSharedBytes;
  using unetcu::simt::detail::kMaxSharedBytes;
  std::memset(prop, 0, sizeof(*prop));
  std::strncpy(prop->name, "SIMT emulator", sizeof(prop->name) - 1);
  size_t free_bytes = 0;
  cudaMemGetInfo(&free_bytes, &prop->totalGlobalMem);
  // An H100's limits, so launch configurations valid here are valid there.
  prop->sharedMemPerBlock = kDefaultSharedBytes;
  prop->sharedMemPerBlockOptin = kMaxSharedBytes;
  prop->sharedMemPerMultiprocessor = 228 * 1024;
  prop->reservedSharedMemPerBlock = 1024;
  prop->regsPerBlock = 65536;
  prop->regsPerMultiprocessor = 65536;
  prop->warpSize = 32;
  prop->memPitch = 2147483647;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->totalConstMem = 65536;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = unetcu::simt::workers();
  prop->maxThreadsPerMultiProcessor = 2048;
  prop->maxBlocksPerMultiProcessor = 32;
  prop->l2CacheSize = 50 * 1024 * 1024;
  prop->memoryBusWidth = 5120;
  prop->concurrentKernels = 1;
  prop->unifiedAddressing = 1;
  prop->canMapHostMemory = 1;
  prop->asyncEngineCount = 1;
  prop->textureAlignment = 512;
  prop->memoryPoolsSupported = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (value == nullptr) return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: null");
  cudaDeviceProp prop;
  if (cudaError_t e = cudaGetDeviceProperties(&prop, device); e != cudaSuccess) return e;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = prop.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = prop.maxThreadsDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *value = prop.maxThreadsDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *value = prop.maxThreadsDim[2]; break;
    case cudaDevAttrMaxGridDimX: *value = prop.maxGridSize[0]; break;
    case cudaDevAttrMaxGridDimY: *value = prop.maxGridSize[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = prop.maxGridSize[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(prop.sharedMemPerBlock); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(prop.sharedMemPerBlockOptin); break;
    case cudaDevAttrWarpSize: *value = prop.warpSize; break;
    case cudaDevAttrMultiProcessorCount: *value = prop.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = prop.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = prop.minor; break;
    case cudaDevAttrL2CacheSize: *value = prop.l2CacheSize; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = prop.maxThreadsPerMultiProcessor; break;
    default:
      return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute not emulated");
  }
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  if (version == nullptr) return fail(cudaErrorInvalidValue, "cudaRuntimeGetVersion: null");
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  if (version == nullptr) return fail(cudaErrorInvalidValue, "cudaDriverGetVersion: null");
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  if (cudaError_t e = forbidden_during_capture("cudaDeviceSynchronize"); e != cudaSuccess) return e;
  drain_all(/*blocking_only=*/false);
  return cudaSuccess;
}

// ---- streams ------------------------------------------------------------------------------------

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  if (stream == nullptr) return fail(cudaErrorInvalidValue, "cudaStreamCreate: null");
  *stream = new CUstream_st;
  (*stream)->flags = flags;
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  Queue& q = *(*stream)->queue;
  q.order = default_stream_order_locked();
  q.blocking = (flags & cudaStreamNonBlocking) == 0;
  g_queues.push_back((*stream)->queue);
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

// Stream priorities: the range an H100 reports (0 the least, the default; -5 the greatest).
// The emulator's stream orders (control.h) decide what runs when, so a priority is only
// checked, never acted on.
constexpr int kLeastStreamPriority = 0;
constexpr int kGreatestStreamPriority = -5;

cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  if (least) *least = kLeastStreamPriority;
  if (greatest) *greatest = kGreatestStreamPriority;
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithPriority(cudaStream_t* stream, unsigned int flags, int priority) {
  // The CUDA runtime clamps a priority outside the range; the emulator refuses it, so a caller
  // that did not ask for the range shows.
  if (priority > kLeastStreamPriority || priority < kGreatestStreamPriority)
    return fail(cudaErrorInvalidValue, "cudaStreamCreateWithPriority: priority outside the "
                                       "device's range (cudaDeviceGetStreamPriorityRange)");
  return cudaStreamCreateWithFlags(stream, flags);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (is_legacy(stream) || stream == cudaStreamPerThread) {
    return fail(cudaErrorInvalidResourceHandle, "cudaStreamDestroy of a default stream");
  }
  drain(stream->queue, stream->queue->issued);  // a GPU finishes a destroyed stream's work
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  if (stream->capture) {
    stream->capture->invalidated = true;
    auto& streams = stream->capture->streams;
    for (auto it = streams.begin(); it != streams.end(); ++it) {
      if (*it == stream) {
        streams.erase(it);
        break;
      }
    }
  }
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  return check_sync(stream, "cudaStreamSynchronize");
}

cudaError_t cudaStreamQuery(cudaStream_t stream) { return check_sync(stream, "cudaStreamQuery"); }

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
  if (event == nullptr) return fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: null");
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  CUstream_st* s = resolve(stream);
  const std::shared_ptr<Capture>& captured = event->capture;
  if (captured && captured->active) {
    if (s->capture != captured) {
      // Waiting on an event recorded inside a capture pulls this stream into the capture (the
      // fork half of fork/join); its later work is recorded in the same graph, in issue order.
      if (s->capture) {
        return fail(cudaErrorStreamCaptureMerge,
                    "cudaStreamWaitEvent would merge two separate captures");
      }
      s->capture = captured;
      s->captured_work = 0;
      captured->streams.push_back(stream);
    }
    // The join half: the event's stream has nothing after it that this wait does not cover;
    // the waiting stream, unless it is the origin, now carries that work and must join too.
    CUstream_st* from = resolve(event->captured_on);
    if (from->capture == captured && from->captured_work == event->captured_work &&
        from != s)
      from->joined = true;
    if (stream != captured->origin) s->joined = false;
    return cudaSuccess;
  }
  std::shared_ptr<Capture> capture;
  if (cudaError_t e = issue(stream, "cudaStreamWaitEvent", &capture); e != cudaSuccess) return e;
  if (capture || !event->queue || event->queue == s->queue) return cudaSuccess;
  if (s->queue->queued()) {
    ++s->queue->issued;
    s->queue->items.push_back(Queue::Item{Node{}, event->queue, event->seq});
  } else {
    drain(event->queue, event->seq);  // this stream's next work runs at once
  }
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
  if (is_legacy(stream)) {
    return fail(cudaErrorStreamCaptureUnsupported, "the legacy default stream cannot be captured");
  }
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  CUstream_st* s = resolve(stream);
  if (s->capture) return fail(cudaErrorIllegalState, "the stream is already being captured");
  auto capture = std::make_shared<Capture>();
  capture->graph = new CUgraph_st;
  capture->mode = mode;
  capture->owner = std::this_thread::get_id();
  capture->origin = stream;
  capture->id = g_next_capture_id++;
  capture->streams.push_back(stream);
  s->capture = capture;
  g_captures.push_back(capture);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (graph == nullptr) return fail(cudaErrorInvalidValue, "cudaStreamEndCapture: null");
  *graph = nullptr;
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  CUstream_st* s = resolve(stream);
  if (!s->capture) return fail(cudaErrorIllegalState, "the stream is not being captured");
  std::shared_ptr<Capture> capture = s->capture;
  if (capture->origin != stream) {
    capture->invalidated = true;
    return fail(cudaErrorStreamCaptureUnmatched,
                "cudaStreamEndCapture on a stream other than the one that began the capture");
  }
  std::string unjoined;
  for (cudaStream_t other : capture->streams) {
    if (other != stream && !resolve(other)->joined) {
      capture->invalidated = true;
      unjoined = "a stream forked into the capture has work that no event joined back into "
                 "the stream that began it (record an event on it and wait for that event on "
                 "the origin stream before cudaStreamEndCapture)";
    }
  }
  end_capture(*capture);
  if (!unjoined.empty()) {
    delete capture->graph;
    return fail(cudaErrorStreamCaptureUnjoined, unjoined);
  }
  if (capture->invalidated) {
    delete capture->graph;
    return fail(cudaErrorStreamCaptureInvalidated,
                "the capture was invalidated by an earlier forbidden call");
  }
  *graph = capture->graph;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* status) {
  if (status == nullptr) return fail(cudaErrorInvalidValue, "cudaStreamIsCapturing: null");
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  CUstream_st* s = resolve(stream);
  if (is_legacy(stream)) {
    for (const auto& c : g_captures) {
      if ((resolve(c->origin)->flags & cudaStreamNonBlocking) == 0) {
        return fail(cudaErrorStreamCaptureImplicit,
                    "cudaStreamIsCapturing on the legacy stream while a blocking stream is "
                    "being captured");
      }
    }
  }
  *status = !s->capture                ? cudaStreamCaptureStatusNone
            : s->capture->invalidated ? cudaStreamCaptureStatusInvalidated
                                      : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaStreamGetCaptureInfo(cudaStream_t stream,
                                     enum cudaStreamCaptureStatus* status,
                                     unsigned long long* id, cudaGraph_t* graph,
                                     const cudaGraphNode_t** dependencies,
                                     const cudaGraphEdgeData** edge_data,
                                     size_t* dependency_count) {
  if (cudaError_t e = cudaStreamIsCapturing(stream, status); e != cudaSuccess) return e;
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  const std::shared_ptr<Capture>& capture = resolve(stream)->capture;
  if (id != nullptr) *id = capture ? capture->id : 0;
  if (graph != nullptr) *graph = capture ? capture->graph : nullptr;
  if (dependencies != nullptr) *dependencies = nullptr;
  if (edge_data != nullptr) *edge_data = nullptr;
  if (dependency_count != nullptr) *dependency_count = 0;
  return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode* mode) {
  if (mode == nullptr) return fail(cudaErrorInvalidValue, "cudaThreadExchangeStreamCaptureMode");
  const cudaStreamCaptureMode previous = t_capture_mode;
  t_capture_mode = *mode;
  *mode = previous;
  return cudaSuccess;
}

// ---- events -------------------------------------------------------------------------------------

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  if (event == nullptr) return fail(cudaErrorInvalidValue, "cudaEventCreate: null");
  *event = new CUevent_st;
  (*event)->flags = flags;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (event == nullptr) return fail(cudaErrorInvalidResourceHandle, "cudaEventDestroy: null");
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (event == nullptr) return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: null");
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  std::shared_ptr<Capture> capture;
  if (cudaError_t e = issue(stream, "cudaEventRecord", &capture); e != cudaSuccess) return e;
  event->capture = capture;
  event->queue.reset();
  if (capture) {
    event->captured_on = stream;
    event->captured_work = resolve(stream)->captured_work;
  } else {
    event->recorded = true;
    event->when = std::chrono::steady_clock::now();
    event->queue = resolve(stream)->queue;
    event->seq = event->queue->issued;
  }
  return cudaSuccess;
}

namespace {
// An event last recorded in a capture that is still going cannot be waited for on the host.
cudaError_t check_event(cudaEvent_t event, const char* what) {
  if (event == nullptr) return fail(cudaErrorInvalidResourceHandle, what);
  std::lock_guard<std::recursive_mutex> lock(g_stream_mutex);
  if (event->capture && event->capture->active) {
    event->capture->invalidated = true;
    return fail(cudaErrorCapturedEvent,
                std::string(what) + " on an event recorded in a capture that is still going");
  }
  if (event->queue) host_drain(event->queue, event->seq);
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  return check_event(event, "cudaEventSynchronize");
}

cudaError_t cudaEventQuery(cudaEvent_t event) { return check_event(event, "cudaEventQuery"); }

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr || start == nullptr || end == nullptr) {
    return fail(cudaErrorInvalidValue, "cudaEventElapsedTime: null argument");
  }
  if (((start->flags | end->flags) & cudaEventDisableTiming) != 0) {
    return fail(cudaErrorInvalidResourceHandle,
                "cudaEventElapsedTime on an event created with cudaEventDisableTiming");
  }
  if (!start->recorded || !end->recorded) {
    return fail(cudaErrorInvalidResourceHandle,
                "cudaEventElapsedTime on an event that was never recorded outside a capture");
  }
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

// ---- graphs -------------------------------------------------------------------------------------

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long flags) {
  if (exec == nullptr || graph == nullptr) {
    return fail(cudaErrorInvalidValue, "cudaGraphInstantiate: null argument");
  }
  *exec = new CUgraphExec_st{std::make_shared<const std::vector<Node>>(graph->nodes)};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (exec == nullptr) return fail(cudaErrorInvalidValue, "cudaGraphLaunch: null graph");
  std::unique_lock<std::recursive_mutex> lock(g_stream_mutex);
  std::shared_ptr<Capture> capture;
  if (cudaError_t e = issue(stream, "cudaGraphLaunch", &capture); e != cudaSuccess) return e;
  if (capture) {
    // A graph launched inside a capture becomes part of the captured graph.
    auto& nodes = capture->graph->nodes;
    nodes.insert(nodes.end(), exec->nodes->begin(), exec->nodes->end());
    note_captured_work(*capture, stream);
    return cudaSuccess;
  }
  lock.unlock();
  Node replay;
  replay.kind = Node::Kind::graph;
  replay.graph = exec->nodes;
  return submit(stream, "cudaGraphLaunch", std::move(replay));
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* count) {
  if (graph == nullptr || count == nullptr) {
    return fail(cudaErrorInvalidValue, "cudaGraphGetNodes: null argument");
  }
  if (nodes != nullptr) {
    return fail(cudaErrorNotSupported, "cudaGraphGetNodes: the emulator only counts nodes");
  }
  *count = graph->nodes.size();
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
