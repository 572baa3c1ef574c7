// kernels/simt/simt.h: the SIMT emulator's kernel-side header. It lets a CUDA source file
// (kernels/cuda/*.cu) compile with g++ and run on the CPU. It is force-included
// (`g++ -include kernels/simt/simt.h`) by unetcu_add_emulated_library(), never included by hand.
// Design notes: design/simt-emulator.md.
//
// ---- Build ---------------------------------------------------------------------------------
//   unetcu_add_emulated_library(<target> SOURCES a.cu b.cu ... [ASAN] [LIBS lib ...])
//     (kernels/simt/CMakeLists.txt) makes a static library of the .cu files built for the
//     emulator: one generated wrapper .cpp per .cu, g++ with this header force-included, linked
//     to `unetcu_simt` (ASAN: `unetcu_simt_asan`, which adds -fsanitize=address for everything
//     linking it). Host code that calls the CUDA runtime links `unetcu_simt` instead of
//     libcudart. Only the CUDA headers are needed: it builds with UNETCU_CUDA=OFF.
//
// ---- How a kernel runs ---------------------------------------------------------------------
//   Every CUDA thread of a block is a fiber with its own stack; all fibers of a block run on one
//   OS thread, so `__shared__` is `thread_local` and each block sees its own copy. A fiber runs
//   until it blocks (barrier, warp collective) or finishes, then hands control straight to the
//   next runnable fiber in schedule order (forward or reverse). The blocks of a grid are handed
//   to N worker threads from an atomic counter (N = 1 by default); a cooperative launch runs
//   all its blocks at once, and a cluster launch a cluster at a time, one OS thread per block.
//   A launch returns when every block has run: streams are synchronous (unless in the late or
//   early order, control.h).
//
// ---- What a kernel may use -----------------------------------------------------------------
//   keywords   __global__ __device__ __host__ __launch_bounds__(...) -> nothing;
//              __forceinline__ -> inline (device helpers in headers stay one definition);
//              __shared__ -> thread_local; __constant__, __grid_constant__ -> nothing.
//   built-ins  threadIdx, blockIdx, blockDim, gridDim: thread-local globals (not macros, so
//              CUDA headers' struct members with those names still compile); warpSize = 32.
//   barriers   __syncthreads(), __syncthreads_count/_and/_or(pred): generation-counted, and
//              remember their file:line. Threads at different __syncthreads (divergent
//              barrier), a thread exiting while others wait at one or reaching one after another
//              exited, and a deadlock (no thread can proceed) abort the process with a report
//              naming the kernel, block, threads and source lines.
//   grid       UNETCU_GRID_SYNC() (kernels/cuda/launch.h) in a kernel launched with
//              UNETCU_LAUNCH_COOPERATIVE: all blocks run at once, each on its own OS thread (at
//              most kMaxCooperativeBlocks, control.h), and wait for each other there. A block
//              that finishes while others wait, blocks at different grid barriers, and a grid
//              barrier in an ordinary launch abort with a report.
//   clusters   UNETCU_CLUSTER_SYNC(), UNETCU_CLUSTER_RANK(), UNETCU_CLUSTER_SHARED(ptr, rank)
//              (kernels/cuda/launch.h) in a kernel launched with UNETCU_LAUNCH_CLUSTER (a
//              chained launch): the blocks of a cluster (`cluster` consecutive blocks along x,
//              1 to kMaxClusterBlocks, or to kMaxNonPortableClusterBlocks for a kernel opted in
//              with cudaFuncAttributeNonPortableClusterSizeAllowed, control.h) run at once, each
//              on its own OS thread, and the clusters one after another. The cluster barrier
//              reports as the grid barrier does
//              (and orders the blocks' memory, as a GPU's does); UNETCU_CLUSTER_SHARED maps a
//              pointer into the block's dynamic shared memory to the same offset in another
//              block's. A mapped pointer outside the dynamic shared memory, a rank outside the
//              cluster, mapping a block that has finished, and the cluster calls outside a
//              cluster launch abort with a report (under ASan, reading a finished block's
//              shared memory is a report too).
//   chaining   UNETCU_GRID_DEPENDENCY_SYNC() (kernels/cuda/launch.h), which a kernel launched
//              with UNETCU_LAUNCH_CHAINED must reach in every thread: launches run one after
//              another here, so it waits for nothing, but a thread that finishes without it
//              aborts with a report (on a GPU that thread could race the previous kernel).
//   warps      __syncwarp, __shfl_sync, __shfl_up_sync, __shfl_down_sync, __shfl_xor_sync (any
//              trivially copyable type of at most 8 bytes; PTX shfl.sync rules, width segments
//              included), __ballot_sync, __any_sync, __all_sync, __activemask,
//              __reduce_add/min/max_sync (int, unsigned). A lane waits for the live lanes of
//              its mask (exited lanes do not count). Reading a lane that did not take part
//              returns poison (all bits set: NaN for floats) and is counted. A lane outside its
//              own mask, a bad width, or lanes of one mask at different collectives abort.
//   tensor     unetcu::simt::mma_tf32_m16n8k8 (kernels/cuda/mma.cuh's emulated mma_tf32): the
//              m16n8k8 TF32 product of PTX's mma.sync in its fragment layout, a collective of
//              all 32 lanes (a lane that exited before it aborts the launch with a report).
//   atomics    atomicAdd, atomicSub, atomicAnd/Or/Xor, atomicExch, atomicCAS, atomicMax/Min on
//              int, unsigned, long long, unsigned long long; atomicAdd on float and double;
//              atomicExch on float; atomicInc/Dec. Real (relaxed) atomics, safe across workers.
//              __threadfence, __threadfence_block, __threadfence_system: full fences.
//   math       __expf __exp10f __logf __log2f __log10f __powf __sinf __cosf __tanf __sincosf
//              __fdividef fdividef rsqrtf rsqrt __saturatef __frcp_rn __fsqrt_rn
//              __fadd/__fsub/__fmul/__fdiv_rn __fmaf_rn __dadd_rn __dmul_rn __fma_rn,
//              __float2int_rn/rz/ru/rd __float2uint_rn/rz __float2ll_rn __double2int_rn
//              __int2float_rn __uint2float_rn __ll2float_rn __double2float_rn,
//              __float_as_int/uint __int/uint_as_float __double_as_longlong __longlong_as_double,
//              __popc(ll) __clz(ll) __ffs(ll) __brev __mulhi __umulhi __mul24 __umul24, and
//              global min/max for the arithmetic types. They map to exact std math, so results
//              differ from a GPU's fast-math versions in the last bits. __half/__nv_bfloat16
//              come from the CUDA headers (host versions work under g++). __trap() aborts.
//   memory     __ldg, __ldcg, __ldcs, __stcg, __stcs: plain loads and stores. Dynamic shared
//              memory only through UNETCU_DYNAMIC_SHARED(type, name) (kernels/cuda/launch.h): a
//              227 KB buffer per worker whose requested bytes are filled with 0xFF before each
//              block (the rest is poisoned under ASan). Static shared arrays through
//              UNETCU_STATIC_SHARED(type, name, [extents]) (kernels/cuda/launch.h): placed in a
//              per-worker arena when the block first declares them, filled with 0xFF for every
//              block, 16-byte aligned, each followed by a redzone that ASan reports; more than
//              48 KB of them (or, with the dynamic bytes, 227 KB) aborts with a report. A plain
//              `__shared__` variable is a thread_local: it keeps what the previous block on the
//              same worker left, and ASan does not watch it.
//   checks     Every emulated build adds -fsanitize=alignment,bounds (kernels/simt/
//              CMakeLists.txt): a float4 access at an address a GPU would fault on
//              ("misaligned address") and an index past an array of known extent (a static
//              shared array's included) stop the run with a report naming the line.
//   launches   UNETCU_LAUNCH(kernel, grid, block, smem_bytes, stream)(args...) from
//              kernels/cuda/launch.h; a template kernel goes in parentheses:
//              UNETCU_LAUNCH((kern<float, 4>), ...). The arguments are converted to the
//              kernel's parameter types and copied, as <<<>>> does. The configuration is checked
//              as an H100 would (block <= 1024 threads, x, y <= 1024, z <= 64; grid.y, grid.z
//              <= 65535; dynamic shared memory <= 48 KB, or <= 227 KB after
//              cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, n)).
//              UNETCU_LAUNCH_COOPERATIVE and UNETCU_LAUNCH_CLUSTER launches also check their
//              sizes as a GPU would (cudaErrorCooperativeLaunchTooLarge; a cluster that is
//              larger than the kernel's limit above or does not divide grid.x:
//              cudaErrorInvalidClusterSize). The workers (control.h) run ordinary launches
//              only: these two run their blocks on threads of their own.
//
// ---- Host side -----------------------------------------------------------------------------
//   CUDA runtime   the unetcu_simt library implements, with the real declarations of
//                  <cuda_runtime_api.h> (CUDA 13): cudaMalloc/Free (host memory filled
//                  with 0xFF, range-checked by the memcpy/memset functions; without ASan a
//                  256-byte tail of NaNs after each block, which cudaFree and the end of the
//                  process check: a kernel that wrote past its block aborts with a report;
//                  under ASan the exact size, for ASan's own redzone),
//                  cudaMallocHost/HostAlloc/FreeHost, cudaMallocAsync/FreeAsync, cudaMemcpy(2D)
//                  (Async), cudaMemset(Async), cudaMemGetInfo, cudaGetLastError,
//                  cudaPeekAtLastError, cudaGetErrorString/Name, cudaDeviceSynchronize,
//                  cudaGetDeviceCount (1: the emulator reports one device, "SIMT emulator",
//                  with H100 limits, so the CUDA backend runs in tests), cudaSetDevice,
//                  cudaGetDevice, cudaGetDeviceProperties, cudaDeviceGetAttribute,
//                  cudaRuntime/DriverGetVersion, cudaFuncSetAttribute, cudaStreamCreate
//                  (WithFlags, WithPriority: priorities checked against the range an H100
//                  reports, cudaDeviceGetStreamPriorityRange, and otherwise ignored),
//                  cudaStreamDestroy/Synchronize/Query/WaitEvent, cudaEventCreate
//                  (WithFlags), cudaEventRecord/Synchronize/Query/ElapsedTime/Destroy,
//                  cudaStreamBeginCapture/EndCapture/IsCapturing/GetCaptureInfo,
//                  cudaThreadExchangeStreamCaptureMode, cudaGraphInstantiate,
//                  cudaGraphLaunch, cudaGraphGetNodes (count only), cudaGraphExecDestroy,
//                  cudaGraphDestroy, cudaLaunchHostFunc. Streams run synchronously in issue
//                  order, or in the late or early order (control.h: work waits until another
//                  stream or the host needs it, or runs before the other streams' earlier
//                  work it does not wait for, so a missing event between streams gives wrong
//                  data).
//                  During stream capture, kernel launches, memcpy/memset-async and host
//                  functions are recorded (arguments by value) and cudaGraphLaunch replays them
//                  in order; a stream waiting on an event recorded in the capture joins it, and
//                  must be joined back (cudaErrorStreamCaptureUnjoined otherwise).
//                  Calls a GPU forbids during capture (cudaMalloc/Free, synchronous copies,
//                  synchronising a capturing stream, the legacy stream) fail and invalidate the
//                  capture. Errors are kept per thread for cudaGetLastError, each with an
//                  explanation that kernels/cuda/check.h appends to its message.
//   control.h      unetcu::simt::set_schedule(Schedule::forward | reverse), set_workers(n),
//                  set_memory_limit(bytes), set_stream_order(StreamOrder::in_order | late |
//                  early),
//                  counters() / reset_counters() (launches, blocks, threads, barriers, warp
//                  collectives, poisoned shuffle reads). Environment defaults:
//                  UNETCU_SIMT_SCHEDULE, UNETCU_SIMT_WORKERS, UNETCU_SIMT_MEMORY_MB,
//                  UNETCU_SIMT_STREAMS.
//
// ---- What it cannot run ----------------------------------------------------------------------
//   Tensor cores, inline PTX, cp.async/TMA, CUB/Thrust device code, cooperative groups (the
//   grid and cluster calls are the UNETCU_ macros above), clusters along y or z or of more than
//   kMaxNonPortableClusterBlocks, distributed shared memory other than the dynamic shared
//   memory (static __shared__ cannot be mapped), textures, dynamic parallelism (aborts),
//   __constant__ set through cudaMemcpyToSymbol, `extern __shared__` written directly (link
//   error: use UNETCU_DYNAMIC_SHARED), spin-waits on another thread of the same block, or on
//   another block outside a cooperative launch or its own cluster (they hang), and anything about
//   speed. The weak memory model is not modelled. Device functions defined in headers must be
//   inline (or __forceinline__/static): without nvcc's device/host split they are ordinary
//   functions.
//   Emulated code is for executables (initial-exec TLS), not for shared libraries.
#pragma once

#define UNETCU_SIMT 1

// Defined before the CUDA headers: their host_defines.h keeps existing definitions when the
// compiler is not nvcc.
#define __global__
#define __device__
#define __host__
#define __shared__ thread_local
#define __launch_bounds__(...)

#include <cuda_runtime.h>

// host_defines.h redefines __forceinline__ for g++ as always_inline; inline is what an emulated
// device function needs (one definition across translation units) and never fails to compile.
#undef __forceinline__
#define __forceinline__ inline

#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/simt/control.h"

// ---- built-in variables ---------------------------------------------------------------------
// __thread rather than thread_local: no dynamic initialisation, so reads need no TLS wrapper call.
extern __thread uint3 threadIdx;
extern __thread uint3 blockIdx;
extern __thread dim3 blockDim;
extern __thread dim3 gridDim;
constexpr int warpSize = 32;

namespace unetcu {
namespace simt {
namespace detail {

// Start of the current block's dynamic shared memory (UNETCU_DYNAMIC_SHARED).
extern __thread unsigned char* dynamic_shared_base;

// One UNETCU_STATIC_SHARED declaration (kernels/cuda/launch.h) on one OS thread: the block it
// last placed the array for (block_serial) and where. Zero-initialised: no block yet.
struct StaticSharedSite {
  uint64_t block;
  void* address;
};
// Counts the blocks this OS thread has started (from 1), so a site knows whether its array
// belongs to the running block.
extern __thread uint64_t block_serial;
// Places a site's array of `bytes` in the running block's static shared memory, filled with
// 0xFF; every later call of the same block returns the same address. Aborts with a report when
// the block's static arrays pass the 48 KB a kernel may declare (or, with its dynamic shared
// memory, the 227 KB a block may have).
void* place_static_shared(StaticSharedSite& site, size_t bytes, size_t align, const char* name,
                          const char* file, int line);
inline void* static_shared(StaticSharedSite& site, size_t bytes, size_t align, const char* name,
                           const char* file, int line) {
  if (site.block == block_serial) return site.address;
  return place_static_shared(site, bytes, align, name, file, line);
}

enum class Collective : uint8_t {
  shfl_idx, shfl_up, shfl_down, shfl_xor, ballot, any, all, sync, reduce_add, reduce_min,
  reduce_max, mma_tf32
};

// One lane's operands and result of mma_tf32_m16n8k8 (PTX mma.sync.aligned.m16n8k8.row.col
// .f32.tf32.tf32.f32): the lane deposits a pointer to it, and the warp's last lane to arrive
// computes every lane's d from all lanes' a, b and c while they wait.
struct MmaTf32Lane {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
  float d[4];
};

// Blocks the calling fiber until every thread of the block arrives; returns the number of threads
// whose `predicate` was non-zero.
int sync_block(int predicate, const char* file, int line);
// The grid-wide barrier of a cooperative launch: every thread of every block arrives before any
// leaves (UNETCU_GRID_SYNC in kernels/cuda/launch.h).
void sync_grid(const char* file, int line);
// The barrier of a cluster launch (UNETCU_CLUSTER_SYNC): every thread of every block of the
// calling block's cluster arrives before any leaves.
void sync_cluster(const char* file, int line);
// This block's rank in its cluster, blockIdx.x % cluster (UNETCU_CLUSTER_RANK).
unsigned cluster_rank(const char* file, int line);
// `p`, a pointer into this block's dynamic shared memory, moved to the same offset in the
// dynamic shared memory of the block of its cluster whose rank is `rank`
// (UNETCU_CLUSTER_SHARED).
void* map_shared_rank(const void* p, unsigned rank, const char* file, int line);
// UNETCU_GRID_DEPENDENCY_SYNC (kernels/cuda/launch.h): the emulator's kernels run one after
// another, so there is nothing to wait for; it marks the thread as having waited, which a
// chained launch requires of every thread.
void dependency_sync();
// Deposits `value` for this lane, waits for the live lanes of `mask`, and returns this lane's
// result (64 bits: the raw bytes of a shuffled value, a ballot mask, or a reduction).
uint64_t warp_collective(Collective op, unsigned mask, uint64_t value, int arg, int width,
                         const char* file, int line);
unsigned active_mask();
[[noreturn]] void trap(const char* file, int line);

template <typename T>
inline uint64_t to_bits(T value) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8,
                "warp shuffles move trivially copyable values of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

template <typename T>
inline T from_bits(uint64_t bits) {
  T value;
  std::memcpy(static_cast<void*>(&value), &bits, sizeof(T));
  return value;
}

template <typename To, typename From>
inline To bit_cast(From value) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
  return from_bits<To>(to_bits(value));
}

// float/double atomics have no fetch-add instruction: compare-and-swap on the value's bytes.
template <typename T, typename Op>
inline T atomic_update(T* address, Op op) {
  T old;
  __atomic_load(address, &old, __ATOMIC_RELAXED);
  T desired = op(old);
  while (!__atomic_compare_exchange(address, &old, &desired, true, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
    desired = op(old);
  }
  return old;
}

}  // namespace detail

// Binds a kernel to its launch configuration; operator() copies the arguments and launches.
// Created by UNETCU_LAUNCH (kernels/cuda/launch.h), not by hand.
template <typename... Params>
class Launcher {
 public:
  using Kernel = void (*)(Params...);

  Launcher(Kernel kernel, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
           const char* name, const char* file, int line, bool cooperative = false,
           bool chained = false, unsigned cluster = 0, bool overlapping = false)
      : kernel_(kernel), stream_(stream) {
    call_.cooperative = cooperative;
    call_.chained = chained;
    call_.cluster = cluster;
    call_.overlapping = overlapping;
    call_.kernel = reinterpret_cast<const void*>(kernel);
    call_.grid = grid;
    call_.block = block;
    call_.shared_bytes = shared_bytes;
    call_.name = name;
    call_.file = file;
    call_.line = line;
  }

  template <typename... Args>
  void operator()(Args&&... args) {
    static_assert(sizeof...(Args) == sizeof...(Params), "wrong number of kernel arguments");
    call_.closure = std::make_shared<const Closure>(
        Closure{kernel_, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)});
    call_.invoke = &invoke;
    launch(std::move(call_), stream_);
  }

 private:
  struct Closure {
    Kernel kernel;
    std::tuple<std::decay_t<Params>...> args;
  };
  // Each CUDA thread gets its own copy of the parameters, as on a GPU.
  static void invoke(const void* closure) {
    const Closure& c = *static_cast<const Closure*>(closure);
    std::apply(c.kernel, c.args);
  }

  Kernel kernel_;
  cudaStream_t stream_;
  KernelCall call_;
};

template <typename... Params>
Launcher<Params...> launcher(void (*kernel)(Params...), dim3 grid, dim3 block,
                             size_t shared_bytes, cudaStream_t stream, const char* name,
                             const char* file, int line, bool cooperative = false,
                             bool chained = false, unsigned cluster = 0,
                             bool overlapping = false) {
  return Launcher<Params...>(kernel, grid, block, shared_bytes, stream, name, file, line,
                             cooperative, chained, cluster, overlapping);
}

}  // namespace simt
}  // namespace unetcu

// cuda_runtime.h declares the typed overload only for nvcc: `cudaFuncSetAttribute(kernel, ...)`.
template <typename T>
inline cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}

// ---- barriers and warp collectives ----------------------------------------------------------
// The trailing file/line parameters are filled at the call site, so reports name the kernel line.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  unetcu::simt::detail::sync_block(0, file, line);
}
inline int __syncthreads_count(int predicate, const char* file = __builtin_FILE(),
                               int line = __builtin_LINE()) {
  return unetcu::simt::detail::sync_block(predicate != 0, file, line);
}
inline int __syncthreads_and(int predicate, const char* file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  return unetcu::simt::detail::sync_block(predicate != 0, file, line) ==
         static_cast<int>(blockDim.x * blockDim.y * blockDim.z);
}
inline int __syncthreads_or(int predicate, const char* file = __builtin_FILE(),
                            int line = __builtin_LINE()) {
  return unetcu::simt::detail::sync_block(predicate != 0, file, line) != 0;
}

inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
  unetcu::simt::detail::warp_collective(unetcu::simt::detail::Collective::sync, mask, 0, 0,
                                        warpSize, file, line);
}

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using namespace unetcu::simt::detail;
  return from_bits<T>(warp_collective(Collective::shfl_idx, mask, to_bits(var), src_lane, width,
                                      file, line));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                        const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using namespace unetcu::simt::detail;
  return from_bits<T>(warp_collective(Collective::shfl_up, mask, to_bits(var),
                                      static_cast<int>(delta), width, file, line));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                          const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using namespace unetcu::simt::detail;
  return from_bits<T>(warp_collective(Collective::shfl_down, mask, to_bits(var),
                                      static_cast<int>(delta), width, file, line));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                         const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using namespace unetcu::simt::detail;
  return from_bits<T>(warp_collective(Collective::shfl_xor, mask, to_bits(var), lane_mask, width,
                                      file, line));
}

inline unsigned __ballot_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  using namespace unetcu::simt::detail;
  return static_cast<unsigned>(
      warp_collective(Collective::ballot, mask, predicate != 0, 0, warpSize, file, line));
}
inline int __any_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  using namespace unetcu::simt::detail;
  return static_cast<int>(
      warp_collective(Collective::any, mask, predicate != 0, 0, warpSize, file, line));
}
inline int __all_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  using namespace unetcu::simt::detail;
  return static_cast<int>(
      warp_collective(Collective::all, mask, predicate != 0, 0, warpSize, file, line));
}
// Lanes of the calling warp that have not exited: the emulator has no divergence to report.
inline unsigned __activemask() { return unetcu::simt::detail::active_mask(); }

#define UNETCU_SIMT_WARP_REDUCE(fn, op, T)                                                   \
  inline T fn(unsigned mask, T value, const char* file = __builtin_FILE(),                   \
              int line = __builtin_LINE()) {                                                 \
    using namespace unetcu::simt::detail;                                                    \
    return from_bits<T>(                                                                     \
        warp_collective(Collective::op, mask, to_bits(value),                                \
                        std::is_signed<T>::value ? 1 : 0, warpSize, file, line));            \
  }
UNETCU_SIMT_WARP_REDUCE(__reduce_add_sync, reduce_add, unsigned)
UNETCU_SIMT_WARP_REDUCE(__reduce_add_sync, reduce_add, int)
UNETCU_SIMT_WARP_REDUCE(__reduce_min_sync, reduce_min, unsigned)
UNETCU_SIMT_WARP_REDUCE(__reduce_min_sync, reduce_min, int)
UNETCU_SIMT_WARP_REDUCE(__reduce_max_sync, reduce_max, unsigned)
UNETCU_SIMT_WARP_REDUCE(__reduce_max_sync, reduce_max, int)
#undef UNETCU_SIMT_WARP_REDUCE

namespace unetcu {
namespace simt {
// The tensor cores' m16n8k8 TF32 product (kernels/cuda/mma.cuh), a collective of all 32 lanes
// of the warp: d = A (16 x 8, row-major) * B (8 x 8, column-major) + C in PTX's fragment
// layout (g = lane / 4, t = lane % 4): a = A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4];
// b = B[t][g], B[t+4][g]; c and d = C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]. As the
// hardware does, only an operand's TF32 bits count (the low 13 bits of a float are ignored).
// Each d is the eight products, exact, and c added in double and rounded once.
inline void mma_tf32_m16n8k8(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                             const float (&c)[4], const char* file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  using namespace unetcu::simt::detail;
  MmaTf32Lane lane{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {c[0], c[1], c[2], c[3]}, {}};
  warp_collective(Collective::mma_tf32, 0xffffffffu, reinterpret_cast<uintptr_t>(&lane), 0,
                  warpSize, file, line);
  for (int i = 0; i < 4; ++i) d[i] = lane.d[i];
}
}  // namespace simt
}  // namespace unetcu

inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __trap(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  unetcu::simt::detail::trap(file, line);
}

// ---- atomics ---------------------------------------------------------------------------------
#define UNETCU_SIMT_ATOMIC_INT(T)                                                             \
  inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }      \
  inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }      \
  inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); }      \
  inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }        \
  inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); }      \
  inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }    \
  inline T atomicCAS(T* a, T compare, T v) {                                                 \
    __atomic_compare_exchange_n(a, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED); \
    return compare;                                                                          \
  }                                                                                          \
  inline T atomicMax(T* a, T v) {                                                            \
    return unetcu::simt::detail::atomic_update(a, [v](T old) { return old < v ? v : old; }); \
  }                                                                                          \
  inline T atomicMin(T* a, T v) {                                                            \
    return unetcu::simt::detail::atomic_update(a, [v](T old) { return v < old ? v : old; }); \
  }
UNETCU_SIMT_ATOMIC_INT(int)
UNETCU_SIMT_ATOMIC_INT(unsigned)
UNETCU_SIMT_ATOMIC_INT(long long)
UNETCU_SIMT_ATOMIC_INT(unsigned long long)
#undef UNETCU_SIMT_ATOMIC_INT

inline float atomicAdd(float* a, float v) {
  return unetcu::simt::detail::atomic_update(a, [v](float old) { return old + v; });
}
inline double atomicAdd(double* a, double v) {
  return unetcu::simt::detail::atomic_update(a, [v](double old) { return old + v; });
}
inline float atomicExch(float* a, float v) {
  float old;
  __atomic_exchange(a, &v, &old, __ATOMIC_RELAXED);
  return old;
}
inline unsigned atomicInc(unsigned* a, unsigned limit) {
  return unetcu::simt::detail::atomic_update(
      a, [limit](unsigned old) { return old >= limit ? 0u : old + 1; });
}
inline unsigned atomicDec(unsigned* a, unsigned limit) {
  return unetcu::simt::detail::atomic_update(
      a, [limit](unsigned old) { return (old == 0 || old > limit) ? limit : old - 1; });
}

// ---- loads and stores ------------------------------------------------------------------------
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline void __stcg(T* p, T v) { *p = v; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }

// ---- math intrinsics -------------------------------------------------------------------------
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) { *s = std::sin(x); *c = std::cos(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float fdividef(float x, float y) { return x / y; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fsub_rn(float x, float y) { return x - y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fdiv_rn(float x, float y) { return x / y; }
inline float __fmaf_rn(float x, float y, float z) { return std::fma(x, y, z); }
inline double __dadd_rn(double x, double y) { return x + y; }
inline double __dmul_rn(double x, double y) { return x * y; }
inline double __fma_rn(double x, double y, double z) { return std::fma(x, y, z); }

inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_ru(float x) { return static_cast<int>(std::ceil(x)); }
inline int __float2int_rd(float x) { return static_cast<int>(std::floor(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(std::nearbyint(x)); }
inline unsigned __float2uint_rz(float x) { return static_cast<unsigned>(x); }
inline long long __float2ll_rn(float x) { return static_cast<long long>(std::nearbyint(x)); }
inline int __double2int_rn(double x) { return static_cast<int>(std::nearbyint(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
inline float __ll2float_rn(long long x) { return static_cast<float>(x); }
inline float __double2float_rn(double x) { return static_cast<float>(x); }

inline int __float_as_int(float x) { return unetcu::simt::detail::bit_cast<int>(x); }
inline unsigned __float_as_uint(float x) { return unetcu::simt::detail::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return unetcu::simt::detail::bit_cast<float>(x); }
inline float __uint_as_float(unsigned x) { return unetcu::simt::detail::bit_cast<float>(x); }
inline long long __double_as_longlong(double x) {
  return unetcu::simt::detail::bit_cast<long long>(x);
}
inline double __longlong_as_double(long long x) {
  return unetcu::simt::detail::bit_cast<double>(x);
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) {
  return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x));
}
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline int __mulhi(int x, int y) {
  return static_cast<int>((static_cast<long long>(x) * y) >> 32);
}
inline unsigned __umulhi(unsigned x, unsigned y) {
  return static_cast<unsigned>((static_cast<unsigned long long>(x) * y) >> 32);
}
inline int __mul24(int x, int y) { return x * y; }
inline unsigned __umul24(unsigned x, unsigned y) { return x * y; }

// CUDA device code has global min/max for the arithmetic types, mixed signedness included.
#define UNETCU_SIMT_MIN_MAX(T)                           \
  inline T min(T a, T b) { return a < b ? a : b; }       \
  inline T max(T a, T b) { return a < b ? b : a; }
UNETCU_SIMT_MIN_MAX(int)
UNETCU_SIMT_MIN_MAX(unsigned)
UNETCU_SIMT_MIN_MAX(long)
UNETCU_SIMT_MIN_MAX(unsigned long)
UNETCU_SIMT_MIN_MAX(long long)
UNETCU_SIMT_MIN_MAX(unsigned long long)
#undef UNETCU_SIMT_MIN_MAX
inline unsigned min(int a, unsigned b) { return min(static_cast<unsigned>(a), b); }
inline unsigned max(int a, unsigned b) { return max(static_cast<unsigned>(a), b); }
inline unsigned min(unsigned a, int b) { return min(a, static_cast<unsigned>(b)); }
inline unsigned max(unsigned a, int b) { return max(a, static_cast<unsigned>(b)); }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double min(float a, double b) { return std::fmin(a, b); }
inline double max(float a, double b) { return std::fmax(a, b); }
inline double min(double a, float b) { return std::fmin(a, b); }
inline double max(double a, float b) { return std::fmax(a, b); }
