// kernels/cuda/launch.h: the one way kernels/cuda launches a kernel and declares dynamic shared
// memory, identical under nvcc and under the SIMT emulator (kernels/simt/simt.h).
//
//   UNETCU_LAUNCH(relu_kernel, blocks, 256, 0, stream)(y, x, count);
//   UNETCU_LAUNCH((reduce_kernel<float, 256>), blocks, 256, smem_bytes, stream)(out, in, n);
//     nvcc: kernel<<<grid, block, smem_bytes, stream>>>(args...), then a launch check;
//     emulator: every block runs on the CPU before the statement ends (or is recorded while
//     `stream` is being captured). A template kernel goes in parentheses (macro commas).
//     The macro is a statement (a one-pass for loop), not an expression.
//     The check throws unetcu::CudaError naming the kernel, the configuration and file:line;
//     with UNETCU_SYNC=1 in the environment it also synchronises the stream (outside stream
//     capture), so an asynchronous fault is reported at the launch that caused it.
//
//   UNETCU_LAUNCH_COOPERATIVE(kernel, blocks, 256, smem_bytes, stream)(args...);
//   UNETCU_GRID_SYNC();                   // inside that kernel's body, reached by every thread
//     A cooperative launch: every block is resident at once, so the kernel may wait for all
//     blocks at a grid-wide barrier (a one-pass reduction: sum, wait, then use the totals).
//     nvcc: cudaLaunchKernelEx with the cooperative attribute (allowed in stream capture) and
//     cooperative_groups::this_grid().sync(); emulator: each block on its own OS thread, and
//     a barrier that reports blocks that finish or wait at different places. The grid must
//     not exceed unetcu::max_cooperative_blocks(kernel, threads, smem_bytes), else the launch
//     fails with cudaErrorCooperativeLaunchTooLarge.
//
//   UNETCU_LAUNCH_CHAINED(kernel, blocks, 256, smem_bytes, stream)(args...);
//   UNETCU_GRID_DEPENDENCY_SYNC();        // that kernel's first statement, in every thread
//     A launch that may overlap the end of the previous kernel of its stream (programmatic
//     dependent launch, compute capability 9.0): the GPU may schedule its blocks while the
//     previous kernel's last blocks still run, which hides the gap between two small kernels.
//     UNETCU_GRID_DEPENDENCY_SYNC waits until the previous kernel has finished and its writes
//     are visible, then lets the next chained kernel start launching: nothing before it may
//     touch global memory. nvcc: cudaLaunchKernelEx with programmatic stream serialisation when
//     unetcu::launch_chains_on(stream) (the default, except on a side stream:
//     kernels/cuda/chaining.h; UNETCU_PDL=0 turns it off) and the kernel was built for
//     compute capability 9.0 or later, else an ordinary launch; the sync is
//     cudaGridDependencySynchronize then cudaTriggerProgrammaticLaunchCompletion (nothing when
//     built for an older architecture).
//     Emulator: launches run one after another, so the sync waits for nothing, but a thread of a
//     chained launch that finishes without it aborts with a report, and simt::counters() counts
//     the launches a GPU would issue chained (overlapping_launches). That the
//     sync is each kernel's first statement, and every launch in kernels/cuda chained (or
//     cooperative, or UNETCU_LAUNCH_UNCHAINED on purpose, below), tests/emu/test_launch_rules.cpp
//     checks in the sources.
//
//   UNETCU_LAUNCH_CLUSTER(kernel, blocks, 256, smem_bytes, stream, cluster)(args...);
//   UNETCU_CLUSTER_SYNC();                // inside that kernel, reached by every thread
//   UNETCU_CLUSTER_RANK()                 // this block's rank in its cluster, 0 .. cluster-1
//   UNETCU_CLUSTER_SHARED(ptr, rank)      // ptr (into this block's dynamic shared memory)
//                                         // mapped to the same place in block `rank`'s
//     A chained launch (as UNETCU_LAUNCH_CHAINED below: the kernel starts with
//     UNETCU_GRID_DEPENDENCY_SYNC) whose blocks come in clusters (compute capability 9.0): each
//     `cluster` consecutive blocks along x (1 to kMaxClusterBlocks, or to
//     kMaxNonPortableClusterBlocks once cluster_fits has opted the kernel in; dividing grid.x) are
//     resident at once, may wait for each other at UNETCU_CLUSTER_SYNC (which also orders
//     their memory: writes before it, global ones included, are visible to the cluster's
//     blocks after it) and read each other's shared memory. A block must not finish while
//     another may still read its shared memory: end with a cluster barrier after the last
//     such read. nvcc: cudaLaunchKernelEx with the cluster-dimension attribute (and the
//     chaining one, as chained launches) and cooperative_groups::this_cluster(); the host
//     checks cluster_fits(kernel, ...) first. Emulator: a cluster's blocks run at once, each
//     on its own OS thread, clusters one after another; the barrier reports blocks that finish
//     or wait at different places, and a mapped pointer outside the dynamic shared memory or a
//     rank outside the cluster aborts.
//
//   UNETCU_DYNAMIC_SHARED(float, tile);   // inside the kernel body
//     float* tile: the block's dynamic shared memory (the launch's smem_bytes). Under the
//     emulator the bytes start as 0xFF so a read before a write shows.
//
//   UNETCU_STATIC_SHARED(float, tile, [4][32]);  // inside a kernel or device function
//     `__shared__ float tile[4][32];` under nvcc, and the only way kernels/cuda declares
//     static shared memory (tests/emu/test_launch_rules.cpp checks). The type may not contain
//     a comma (use an alias). Emulator: `tile` is a reference to an array of that type in the
//     running block's static shared memory, placed when a thread of the block first declares
//     it (the block's other threads, and later calls, get the same array). Its bytes start as
//     0xFF in every block, where a plain `__shared__` (thread_local) keeps the previous
//     block's values and hides a read before a write; under AddressSanitizer a redzone after
//     it reports a read or write past its end (ASan does not watch thread_local arrays); and
//     the emulated builds' -fsanitize=bounds checks every index of `tile[i][j]`. A block whose
//     static arrays pass 48 KB (what a kernel may declare) aborts with a report.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>

#if defined(__CUDACC__)
#include <cooperative_groups.h>
#endif

#include "kernels/cuda/chaining.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/env.h"

namespace unetcu {

// UNETCU_SYNC=1: every launch synchronises and checks (slow; for finding a faulting kernel).
inline bool sync_every_launch() {
  static EnvSwitch on{"UNETCU_SYNC", false};
  return on.get();
}

// One launch statement: the configuration (evaluated once), and the check run after the launch.
// UNETCU_LAUNCH is a one-pass for statement around the launch expression so that the check can
// follow the (args...) the caller writes after the macro.
struct LaunchSite {
  const char* kernel;
  const char* file;
  int line;
  dim3 grid;
  dim3 block;
  size_t shared_bytes;
  cudaStream_t stream;
  bool done = false;

  bool pending() const { return !done; }

  void check() {
    done = true;
    cudaError_t error = cudaGetLastError();
    if (error == cudaSuccess && sync_every_launch()) {
      cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
      // Synchronising a stream under capture would invalidate the capture: skip it there.
      if (cudaStreamIsCapturing(stream, &capture) == cudaSuccess &&
          capture == cudaStreamCaptureStatusNone) {
        error = cudaStreamSynchronize(stream);
      } else {
        (void)cudaGetLastError();
      }
    }
    if (error != cudaSuccess) {
      std::ostringstream what;
      what << "launch " << kernel << "<<<(" << grid.x << "," << grid.y << "," << grid.z << "), ("
           << block.x << "," << block.y << "," << block.z << "), " << shared_bytes << " B>>>";
      cuda_fail(error, what.str().c_str(), file, line);
    }
  }
};

}  // namespace unetcu

namespace unetcu {
// The most blocks a cluster may have without opting in to non-portable sizes (CUDA's
// portable limit), here and under the emulator.
constexpr unsigned kMaxClusterBlocks = 8;
// The most with the opt-in (cudaFuncAttributeNonPortableClusterSizeAllowed), on an H100: the
// CUDA C++ Programming Guide's Hopper figure. A card or partition without room for that many
// resident blocks in one GPC refuses it (cluster_fits then says no).
constexpr unsigned kMaxNonPortableClusterBlocks = 16;

// Clusters above the portable size need the kernel's opt-in before they are launched or sized
// by the occupancy calculator: set here (it stays set for the kernel); false when the size is
// above kMaxNonPortableClusterBlocks or the opt-in is refused.
template <typename Kernel>
inline bool allow_cluster_size(Kernel kernel, unsigned cluster) {
  if (cluster <= kMaxClusterBlocks) return true;
  if (cluster > kMaxNonPortableClusterBlocks) return false;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) ==
      cudaSuccess)
    return true;
  (void)cudaGetLastError();
  return false;
}
}  // namespace unetcu

// The statement head every launch macro shares: a one-pass for loop whose LaunchSite holds the
// configuration (evaluated once) and runs the check after the launch expression that follows.
// The parameters carry a prefix: a parameter named `block` would also replace the member
// unetcu_launch_.block.
#define UNETCU_LAUNCH_SITE_(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream) \
  for (::unetcu::LaunchSite unetcu_launch_{#unetcu_kernel,        __FILE__,                       \
                                           __LINE__,              dim3(unetcu_grid),              \
                                           dim3(unetcu_block),    size_t(unetcu_smem),            \
                                           (unetcu_stream)};                                      \
       unetcu_launch_.pending(); unetcu_launch_.check())

#if defined(__CUDACC__)

#define UNETCU_LAUNCH(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)      \
  UNETCU_LAUNCH_SITE_(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)    \
  unetcu_kernel<<<unetcu_launch_.grid, unetcu_launch_.block, unetcu_launch_.shared_bytes,        \
                  unetcu_launch_.stream>>>

namespace unetcu {

// Launches `kernel` with `site`'s configuration and the launch attributes whose id is not
// cudaLaunchAttributeIgnore (0); the site's check follows.
template <typename... Params>
struct AttributedLaunch {
  void (*kernel)(Params...);
  const LaunchSite& site;
  cudaLaunchAttribute attribute;
  cudaLaunchAttribute second = {};
  template <typename... Args>
  void operator()(Args&&... args) const {
    cudaLaunchAttribute attrs[2];
    unsigned count = 0;
    for (const cudaLaunchAttribute& a : {attribute, second})
      if (a.id != cudaLaunchAttributeIgnore) attrs[count++] = a;
    cudaLaunchConfig_t config = {};
    config.gridDim = site.grid;
    config.blockDim = site.block;
    config.dynamicSmemBytes = site.shared_bytes;
    config.stream = site.stream;
    config.attrs = attrs;
    config.numAttrs = count;
    // The error is also the runtime's last error, which the site's check reads.
    (void)cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  }
};

template <typename... Params>
AttributedLaunch<Params...> cooperative_launch(void (*kernel)(Params...), const LaunchSite& site) {
  cudaLaunchAttribute attribute = {};
  attribute.id = cudaLaunchAttributeCooperative;
  attribute.val.cooperative = 1;
  return AttributedLaunch<Params...>{kernel, site, attribute};
}

// `ask(kernel)`'s answer about a kernel, asked once per kernel and kept for the process (each
// question, a lambda of its own type, has its own answers); false answers clear the runtime's
// last error, which the question may have set.
template <class Ask>
inline bool asked_once(const void* kernel, const Ask& ask) {
  static std::mutex mutex;
  static std::unordered_map<const void*, bool> known;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find(kernel);
  if (it != known.end()) return it->second;
  const bool yes = ask(kernel);
  if (!yes) (void)cudaGetLastError();
  known.emplace(kernel, yes);
  return yes;
}

// Whether `kernel` was compiled for compute capability 9.0 or later, so that its
// UNETCU_GRID_DEPENDENCY_SYNC really waits (built for an older architecture it is empty, and
// a chained launch of it would race the previous kernel). Asked once per kernel.
inline bool kernel_waits_for_dependencies(const void* kernel) {
  return asked_once(kernel, [](const void* k) {
    cudaFuncAttributes attributes = {};
    return cudaFuncGetAttributes(&attributes, k) == cudaSuccess && attributes.ptxVersion >= 90;
  });
}

template <typename... Params>
AttributedLaunch<Params...> chained_launch(void (*kernel)(Params...), const LaunchSite& site) {
  cudaLaunchAttribute attribute = {};
  if (launch_chains_on(site.stream) &&
      kernel_waits_for_dependencies(reinterpret_cast<const void*>(kernel))) {
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
  }
  return AttributedLaunch<Params...>{kernel, site, attribute};
}

// The launch attribute that groups each `cluster` consecutive blocks along x.
inline cudaLaunchAttribute cluster_attribute(unsigned cluster) {
  cudaLaunchAttribute attribute = {};
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = cluster;
  attribute.val.clusterDim.y = 1;
  attribute.val.clusterDim.z = 1;
  return attribute;
}

// A chained launch whose blocks come in clusters of `cluster` along x.
template <typename... Params>
AttributedLaunch<Params...> cluster_launch(void (*kernel)(Params...), const LaunchSite& site,
                                           unsigned cluster) {
  AttributedLaunch<Params...> out = chained_launch(kernel, site);
  out.second = cluster_attribute(cluster);
  return out;
}

// Whether `kernel` can run in clusters of `cluster` blocks of `threads` threads and
// `smem_bytes` of dynamic shared memory each: the device has compute capability 9.0 or later,
// the kernel was built for it (its cluster calls are traps otherwise), a non-portable size is
// allowed for it (allow_cluster_size), and the occupancy calculator finds room for a whole
// cluster at once (a card shared through MPS, or a kernel that needs more registers, may leave
// none). Asked once per kernel and shape.
template <typename... Params>
inline bool cluster_fits(void (*kernel)(Params...), unsigned threads, size_t smem_bytes,
                         unsigned cluster) {
  static const bool device_can = [] {
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  const void* entry = reinterpret_cast<const void*>(kernel);
  if (!device_can || !kernel_waits_for_dependencies(entry)) return false;
  static std::mutex mutex;
  static std::map<std::tuple<const void*, unsigned, size_t, unsigned>, bool> known;
  const auto key = std::make_tuple(entry, threads, smem_bytes, cluster);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find(key);
  if (it != known.end()) return it->second;
  cudaLaunchAttribute attribute = cluster_attribute(cluster);
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(cluster);
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = smem_bytes;
  config.attrs = &attribute;
  config.numAttrs = 1;
  int clusters = 0;
  const bool fits = allow_cluster_size(kernel, cluster) &&
                    cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) == cudaSuccess &&
                    clusters > 0;
  if (!fits) (void)cudaGetLastError();
  known.emplace(key, fits);
  return fits;
}

// The largest grid a cooperative launch of `kernel` may have: the blocks of `threads` threads
// and `smem_bytes` of dynamic shared memory that fit on the device at once.
template <typename Kernel>
inline int max_cooperative_blocks(Kernel kernel, int threads, size_t smem_bytes) {
  int per_sm = 0, device = 0, sms = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem_bytes) !=
          cudaSuccess ||
      cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return per_sm * sms;
}

}  // namespace unetcu

#define UNETCU_LAUNCH_COOPERATIVE(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem,         \
                                  unetcu_stream)                                                 \
  UNETCU_LAUNCH_SITE_(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)    \
  ::unetcu::cooperative_launch(unetcu_kernel, unetcu_launch_)

#define UNETCU_GRID_SYNC() ::cooperative_groups::this_grid().sync()

#define UNETCU_LAUNCH_CHAINED(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem,             \
                              unetcu_stream)                                                     \
  UNETCU_LAUNCH_SITE_(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)    \
  ::unetcu::chained_launch(unetcu_kernel, unetcu_launch_)

#define UNETCU_LAUNCH_CLUSTER(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem,             \
                              unetcu_stream, unetcu_cluster)                                     \
  UNETCU_LAUNCH_SITE_(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)    \
  ::unetcu::cluster_launch(unetcu_kernel, unetcu_launch_, unsigned(unetcu_cluster))

// Clusters exist from compute capability 9.0; built for an older architecture the calls trap
// (the host never launches clusters there: cluster_fits).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define UNETCU_CLUSTER_SYNC() __trap()
#define UNETCU_CLUSTER_RANK() (__trap(), 0u)
#define UNETCU_CLUSTER_SHARED(unetcu_ptr, unetcu_rank) (__trap(), (unetcu_ptr))
#else
#define UNETCU_CLUSTER_SYNC() ::cooperative_groups::this_cluster().sync()
#define UNETCU_CLUSTER_RANK() ::cooperative_groups::this_cluster().block_rank()
#define UNETCU_CLUSTER_SHARED(unetcu_ptr, unetcu_rank) \
  ::cooperative_groups::this_cluster().map_shared_rank((unetcu_ptr), (unetcu_rank))
#endif

// Wait for the previous kernel (a no-op unless this launch was chained), then allow the next
// chained kernel to launch: its blocks take the slots this grid frees and wait in their own
// sync, so they must not be let in before this grid itself may run.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define UNETCU_GRID_DEPENDENCY_SYNC()          \
  do {                                         \
    cudaGridDependencySynchronize();           \
    cudaTriggerProgrammaticLaunchCompletion(); \
  } while (0)
#else
#define UNETCU_GRID_DEPENDENCY_SYNC() \
  do {                                \
  } while (0)
#endif

// One name for every kernel, as raw bytes: extern __shared__ arrays of different element types
// in one translation unit would otherwise be conflicting declarations.
#define UNETCU_DYNAMIC_SHARED(type, name)                                        \
  extern __shared__ __align__(16) unsigned char unetcu_dynamic_shared_[];        \
  type* const name = reinterpret_cast<type*>(unetcu_dynamic_shared_)

#define UNETCU_STATIC_SHARED(type, name, extents) __shared__ type name extents

#elif defined(UNETCU_SIMT)

#define UNETCU_LAUNCH(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)      \
  UNETCU_LAUNCH_SITE_(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)    \
  ::unetcu::simt::launcher(unetcu_kernel, unetcu_launch_.grid, unetcu_launch_.block,             \
                           unetcu_launch_.shared_bytes, unetcu_launch_.stream, #unetcu_kernel,   \
                           __FILE__, __LINE__)

#define UNETCU_LAUNCH_COOPERATIVE(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem,         \
                                  unetcu_stream)                                                 \
  UNETCU_LAUNCH_SITE_(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)    \
  ::unetcu::simt::launcher(unetcu_kernel, unetcu_launch_.grid, unetcu_launch_.block,             \
                           unetcu_launch_.shared_bytes, unetcu_launch_.stream, #unetcu_kernel,   \
                           __FILE__, __LINE__, true)

#define UNETCU_GRID_SYNC() ::unetcu::simt::detail::sync_grid(__FILE__, __LINE__)

#define UNETCU_LAUNCH_CHAINED(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem,             \
                              unetcu_stream)                                                     \
  UNETCU_LAUNCH_SITE_(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)    \
  ::unetcu::simt::launcher(unetcu_kernel, unetcu_launch_.grid, unetcu_launch_.block,             \
                           unetcu_launch_.shared_bytes, unetcu_launch_.stream, #unetcu_kernel,   \
                           __FILE__, __LINE__, false, true, 0,                                   \
                           ::unetcu::launch_chains_on(unetcu_launch_.stream))

#define UNETCU_GRID_DEPENDENCY_SYNC() ::unetcu::simt::detail::dependency_sync()

#define UNETCU_LAUNCH_CLUSTER(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem,             \
                              unetcu_stream, unetcu_cluster)                                     \
  UNETCU_LAUNCH_SITE_(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)    \
  ::unetcu::simt::launcher(unetcu_kernel, unetcu_launch_.grid, unetcu_launch_.block,             \
                           unetcu_launch_.shared_bytes, unetcu_launch_.stream, #unetcu_kernel,   \
                           __FILE__, __LINE__, false, true, unsigned(unetcu_cluster),            \
                           ::unetcu::launch_chains_on(unetcu_launch_.stream))

#define UNETCU_CLUSTER_SYNC() ::unetcu::simt::detail::sync_cluster(__FILE__, __LINE__)
#define UNETCU_CLUSTER_RANK() ::unetcu::simt::detail::cluster_rank(__FILE__, __LINE__)
#define UNETCU_CLUSTER_SHARED(unetcu_ptr, unetcu_rank)                                    \
  static_cast<std::remove_cv_t<decltype(unetcu_ptr)>>(::unetcu::simt::detail::map_shared_rank( \
      (unetcu_ptr), unsigned(unetcu_rank), __FILE__, __LINE__))

namespace unetcu {
// The emulator runs at most kMaxCooperativeBlocks blocks at once, whatever the kernel.
template <typename Kernel>
inline int max_cooperative_blocks(Kernel, int, size_t) {
  return ::unetcu::simt::kMaxCooperativeBlocks;
}
// The emulator runs every cluster launch of an allowed size (above the portable one, after
// the same opt-in as on a GPU).
template <typename Kernel>
inline bool cluster_fits(Kernel kernel, unsigned, size_t, unsigned cluster) {
  return allow_cluster_size(kernel, cluster);
}
}  // namespace unetcu

#define UNETCU_DYNAMIC_SHARED(type, name) \
  type* const name = reinterpret_cast<type*>(::unetcu::simt::detail::dynamic_shared_base)

// A site per declaration and OS thread (the blocks of one worker run on one OS thread).
#define UNETCU_STATIC_SHARED(type, name, extents)                                              \
  using unetcu_static_shared_##name##_t_ = type extents;                                        \
  static thread_local ::unetcu::simt::detail::StaticSharedSite unetcu_static_site_##name##_;   \
  unetcu_static_shared_##name##_t_& name =                                                      \
      *static_cast<unetcu_static_shared_##name##_t_*>(::unetcu::simt::detail::static_shared(   \
          unetcu_static_site_##name##_, sizeof(unetcu_static_shared_##name##_t_),             \
          alignof(unetcu_static_shared_##name##_t_), #name, __FILE__, __LINE__))

#else
#error "kernels/cuda/launch.h launches kernels: compile with nvcc, or as an emulated library"
#endif

// A launch deliberately not chained (see the top of this file): its blocks are placed only
// once the previous kernel of its stream has ended, so the SMs that kernel held drain first,
// and waiting blocks of a stream of higher priority take them.
#define UNETCU_LAUNCH_UNCHAINED(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem,          \
                                unetcu_stream)                                                 \
  UNETCU_LAUNCH(unetcu_kernel, unetcu_grid, unetcu_block, unetcu_smem, unetcu_stream)
