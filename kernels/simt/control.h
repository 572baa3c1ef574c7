// kernels/simt/control.h: the host-side knobs of the SIMT emulator (schedule, workers, device
// memory, stream order, counters) and the launch entry point that simt.h's launcher calls.
//
// Plain C++ (no CUDA keyword macros), so a test or tool compiled normally can include it next to
// <cuda_runtime.h> and steer emulated launches. Everything here is about the emulator; the CUDA
// runtime functions themselves keep their real declarations from the CUDA headers.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace unetcu {
namespace simt {

// The order in which the fibers (CUDA threads) of a block run between barriers. Tests run every
// kernel under both and require bit-identical outputs: a missing __syncthreads or a read of
// another thread's unwritten value then shows as a difference.
enum class Schedule { forward, reverse };

// Process-wide settings read at the start of each launch. The environment gives the defaults:
// UNETCU_SIMT_SCHEDULE=forward|reverse, UNETCU_SIMT_WORKERS=n, UNETCU_SIMT_MEMORY_MB=n.
void set_schedule(Schedule schedule);
Schedule schedule();
// Blocks are handed to `n` OS threads (the caller plus n-1 pool threads); 1 is deterministic
// even with float atomics. n <= 0 restores the default.
void set_workers(int n);
int workers();
// The device memory the emulator pretends to have: cudaMalloc beyond it fails with
// cudaErrorMemoryAllocation and cudaMemGetInfo reports it (default 16 GiB; 0 restores it).
void set_memory_limit(size_t bytes);

// When a stream's work runs. in_order (the default): when it is issued, so a missing event
// between streams cannot show (the host issues work in an order that already satisfies it).
// late: it waits in its stream's queue until something needs it: a stream reaching a wait for
// an event recorded after it, or the host synchronising (the stream, such an event, the device,
// cudaFree, legacy-stream work for blocking streams). Work no event orders before another
// stream's later work then runs after it, so a stream that overwrites what another stream's
// unfinished work reads, or a join that was left out, gives a wrong result. (A stream reading
// another's result without waiting for it shows only when nothing runs that result first: a
// forgotten wait for an upload does, a side stream forked without an event but joined later
// does not, since the join runs the main stream's earlier work first.)
// early: queued as in late, but every host synchronisation first runs all that the early
// streams other than the one it waits for hold, newest stream first: their work then runs
// before the other streams' earlier work that they do not wait for, so a stream reading
// another's result without an event gets the stale data (the fork left out). The two orders
// catch the two kinds of missing event; tests run both. The legacy and per-thread default
// streams always run work when it is issued.
enum class StreamOrder { in_order, late, early };
// The order of streams created from now on; the environment gives the default:
// UNETCU_SIMT_STREAMS=in_order|late|early.
void set_stream_order(StreamOrder order);
StreamOrder stream_order();
// One stream's order (leaving the late order first runs what it holds).
cudaError_t set_stream_order(cudaStream_t stream, StreamOrder order);

// Totals since the last reset_counters(), summed over all workers.
struct Counters {
  uint64_t launches = 0;          // kernel launches executed (a graph replay counts its kernels)
  uint64_t overlapping_launches = 0;  // of them, those a GPU would let overlap the kernel before
  uint64_t blocks = 0;
  uint64_t threads = 0;
  uint64_t barriers = 0;          // completed __syncthreads, one per block per barrier
  uint64_t warp_collectives = 0;  // completed shuffles/votes/__syncwarp, one per lane group
  uint64_t poisoned_reads = 0;    // shuffle reads of a lane that did not take part
};
Counters counters();
void reset_counters();

// One kernel launch, type-erased by simt.h's launcher: `invoke(closure)` runs the kernel body for
// the current CUDA thread. The closure owns a copy of the arguments, so a launch recorded during
// stream capture can be replayed after the caller's variables are gone.
struct KernelCall {
  void (*invoke)(const void* closure) = nullptr;
  std::shared_ptr<const void> closure;
  const void* kernel = nullptr;  // the kernel's address, the key of cudaFuncSetAttribute
  dim3 grid, block;
  size_t shared_bytes = 0;
  const char* name = "";         // kernel expression and launch site, for error messages
  const char* file = "";
  int line = 0;
  // A cooperative launch (UNETCU_LAUNCH_COOPERATIVE): every block runs at once, each on its own
  // OS thread, so the kernel may wait at grid-wide barriers (UNETCU_GRID_SYNC).
  bool cooperative = false;
  // A chained launch (UNETCU_LAUNCH_CHAINED): on a GPU it may start while the previous kernel
  // of its stream still runs, so every thread must pass UNETCU_GRID_DEPENDENCY_SYNC before it
  // touches memory; the emulator reports a thread that finishes without it.
  bool chained = false;
  // A cluster launch (UNETCU_LAUNCH_CLUSTER; always chained too): each `cluster` consecutive
  // blocks along x form a cluster whose blocks run at once, each on its own OS thread, wait for
  // each other at UNETCU_CLUSTER_SYNC and read each other's dynamic shared memory. 0: not one.
  unsigned cluster = 0;
  // A chained launch that a GPU would issue with programmatic stream serialisation (its blocks
  // placed while the kernel before it in its stream still runs): not under UNETCU_PDL=0, nor on
  // a side stream (kernels/cuda/launch.h). The emulator runs it as any other and only counts it
  // (Counters::overlapping_launches), for the tests of which launches overlap.
  bool overlapping = false;
};

// The most blocks a cooperative launch may have under the emulator (one OS thread each); a
// GPU's limit is its co-resident blocks (occupancy x SMs). A larger cooperative launch fails
// with cudaErrorCooperativeLaunchTooLarge, as on a GPU.
constexpr int kMaxCooperativeBlocks = 64;

// The most blocks a cluster may have: CUDA's portable limit (unetcu::kMaxClusterBlocks in
// kernels/cuda/launch.h), or an H100's non-portable one for a kernel opted in with
// cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1). A launch
// with a larger cluster, or one that does not divide grid.x, fails with
// cudaErrorInvalidClusterSize, as on a GPU.
constexpr unsigned kMaxClusterBlocks = 8;
constexpr unsigned kMaxNonPortableClusterBlocks = 16;

// Runs the launch now, or records it when `stream` is being captured. A bad configuration
// returns an error (also kept for cudaGetLastError) without running anything, as on a GPU.
cudaError_t launch(KernelCall call, cudaStream_t stream);

}  // namespace simt
}  // namespace unetcu
