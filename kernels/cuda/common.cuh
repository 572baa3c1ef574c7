// kernels/cuda/common.cuh: what the hand-written CUDA kernels share: launch geometry, vector
// loads and stores, and three kernel skeletons that every op family plugs a small functor into:
//
//   map_flat    a grid-stride loop over a flat array, float4-wide when the pointers allow;
//   map_rows    a [rows][cols] walk where each thread owns one column (an NHWC channel, or a
//               channel of one pixel column) and strides down the rows, so per-column constants
//               (BatchNorm statistics, a bias, a window offset) load once per thread;
//   reduce_rows the deterministic per-column sum over rows: stage 1 writes one partial per
//               (column, row block) into a caller workspace, stage 2 adds them in a fixed order
//               and hands the totals to an epilogue. No atomics: the addition tree depends only
//               on the shape, so results are bit-identical run to run and under any schedule.
//   reduce_then_map  for tensors with few rows: one block owns all rows of a few columns, sums
//               them, runs the epilogue and then a map_rows-style pass over the same rows, all
//               in one kernel (reduce_rows + map_rows take three).
// (One-kernel forms for more rows than a block takes, BatchNorm in thread-block clusters or
// in two kernels, were built and measured 1.3-3x slower on an H100 at every shape of this
// network, then removed: bench/RESULTS.md, "Eighth H100 run".)
//
// Every .cu file is compiled twice: by nvcc for the GPU and by g++ under the SIMT emulator
// (kernels/simt/). Only what the emulator runs is used here: no inline PTX, no CUB, no
// cooperative groups beyond what launch.h wraps. Header-level device functions are `inline`
// (the emulator drops __forceinline__), and kernels are templates, so the header can be
// included by several files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/common.h"
#include "kernels/cuda/launch.h"

#if defined(__CUDACC__)
#define UNETCU_UNROLL_4 _Pragma("unroll 4")
#define UNETCU_UNROLL_ALL _Pragma("unroll")
#else
#define UNETCU_UNROLL_4
#define UNETCU_UNROLL_ALL
#endif

namespace unetcu::cuda::detail {

// 256 threads per block everywhere: 8 blocks fill an H100 SM (2048 threads), and 256 is the
// size of the shared reduction buffers below.
constexpr int kThreads = 256;
// Grid cap for the map kernels: 2048 blocks x 256 threads is about two waves of resident
// threads on an H100 (132 SMs), enough outstanding loads to cover DRAM latency; beyond it each
// thread loops, amortising its index set-up over several elements.
constexpr int kMaxBlocks = 2048;
// Stage-1 blocks of a reduction: about one full wave (132 SMs x 8). Few enough that the
// partials (at most kReduceBlocks per column) stay small next to the data they summarise.
constexpr int kReduceBlocks = 1024;
// A reduction thread sums at least this many rows before the block tree, so small inputs
// use few blocks and few partials.
constexpr int kMinRowsPerThread = 8;

template <typename T>
inline bool aligned_for_vec4(const T* p) {
  return (reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T))) == 0;
}

// True when every pointer allows 4-element vector access (16 bytes for floats, 4 for bytes);
// null pointers do not count.
template <typename... T>
inline bool all_vec4(const T*... p) {
  return ((p == nullptr || aligned_for_vec4(p)) && ...);
}

// ---- vectors ---------------------------------------------------------------------------------

// V consecutive elements moved as one access: Vec<float, 4> compiles to a 128-bit load/store.
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

template <int V, typename T>
__device__ inline Vec<T, V> load_vec(const T* p, int64_t i) {
  return reinterpret_cast<const Vec<T, V>*>(p)[i];
}
template <int V, typename T>
__device__ inline void store_vec(T* p, int64_t i, const Vec<T, V>& x) {
  reinterpret_cast<Vec<T, V>*>(p)[i] = x;
}

// The vector width a functor is called with: map_flat calls op(Width<4>{}, i) on the aligned
// body and op(Width<1>{}, i) on the tail.
template <int V>
using Width = std::integral_constant<int, V>;

// PyTorch's relu: `v < 0 ? 0 : v` lets a NaN through instead of hiding it behind a zero.
__device__ inline float relu(float v) { return v < 0.0f ? 0.0f : v; }

// ---- map_flat --------------------------------------------------------------------------------

// Grid-stride over `count` elements: element groups of 4 (vector index i covers 4i..4i+3) when
// `vec4`, then the scalar tail. Consecutive threads take consecutive groups, so each warp moves
// 512 contiguous bytes per access: fully coalesced.
template <class F>
__device__ inline void grid_stride(int64_t count, bool vec4, const F& f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t tail = 0;
  if (vec4) {
    const int64_t groups = count / 4;
    for (int64_t i = first; i < groups; i += stride) f(Width<4>{}, i);
    tail = groups * 4;
  }
  for (int64_t i = tail + first; i < count; i += stride) f(Width<1>{}, i);
}

template <class Op>
__global__ void __launch_bounds__(kThreads) map_flat_kernel(Op op, int64_t count, bool vec4) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  grid_stride(count, vec4, op);
}

// Blocks of kThreads for a grid_stride loop over `count` elements.
inline int flat_blocks(int64_t count, bool vec4) {
  const int64_t items = vec4 ? (count + 3) / 4 : count;
  const int64_t wanted = (items + kThreads - 1) / kThreads;
  return int(wanted < 1 ? 1 : (wanted < kMaxBlocks ? wanted : kMaxBlocks));
}

template <class Op>
inline void map_flat(const Op& op, int64_t count, bool vec4, cudaStream_t stream) {
  if (count <= 0) return;
  UNETCU_LAUNCH_CHAINED((map_flat_kernel<Op>), flat_blocks(count, vec4), kThreads, 0, stream)(
      op, count, vec4);
}

// ---- row tiling ------------------------------------------------------------------------------

// How a [batches][rows][cols] array (cols contiguous) is cut into blocks: a block covers `tile`
// consecutive columns of `lanes` rows (tile * lanes <= kThreads), grid = (tiles, row_blocks,
// batches). A warp therefore reads whole row segments, or several short rows back to back,
// which is contiguous memory whatever the column count.
struct RowTiling {
  int64_t rows = 0;
  int cols = 0, batches = 1;
  int tile = 1, lanes = 1, tiles = 1, row_blocks = 1;

  // Threads of the stage-2 reduction block: enough to cover the row blocks, a power of two.
  int finalize_threads() const {
    int t = 32;
    while (t < row_blocks && t < kThreads) t *= 2;
    return t;
  }
  // Doubles of reduction partials for `nv` sums per column.
  size_t partial_count(int nv) const {
    return size_t(nv) * size_t(batches) * size_t(cols) * size_t(row_blocks);
  }
};

inline RowTiling row_tiling(int64_t rows, int cols, int batches, int64_t min_rows_per_thread,
                            int block_budget) {
  RowTiling t;
  t.rows = rows;
  t.cols = cols;
  t.batches = batches;
  t.tile = cols < kThreads ? (cols > 0 ? cols : 1) : kThreads;
  t.lanes = kThreads / t.tile;
  t.tiles = ((cols > 0 ? cols : 1) + t.tile - 1) / t.tile;
  const int64_t wanted = (rows + t.lanes * min_rows_per_thread - 1) / (t.lanes * min_rows_per_thread);
  int64_t cap = block_budget / (int64_t(t.tiles) * batches);
  if (cap < 1) cap = 1;
  t.row_blocks = int(wanted < 1 ? 1 : (wanted > cap ? cap : wanted));
  return t;
}
inline RowTiling map_tiling(int64_t rows, int cols) {
  return row_tiling(rows, cols, 1, 1, kMaxBlocks);
}
inline RowTiling reduce_tiling(int64_t rows, int cols, int batches = 1) {
  return row_tiling(rows, cols, batches, kMinRowsPerThread, kReduceBlocks);
}

// ---- map_rows --------------------------------------------------------------------------------

// Op::column(col) builds the per-thread state for one column; calling it with a row index
// processes that (row, col) element. A thread takes the rows first, first + step, ...; with
// LastFirst the same rows from its last one down.
template <class Op, bool LastFirst = false>
__global__ void __launch_bounds__(kThreads) map_rows_kernel(Op op, RowTiling t) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  const int col = int(blockIdx.x) * t.tile + int(threadIdx.x) % t.tile;
  const int lane = int(threadIdx.x) / t.tile;
  const int64_t first = int64_t(blockIdx.y) * t.lanes + lane;
  // No barrier in this kernel, so leaving early is safe.
  if (col >= t.cols || first >= t.rows) return;
  const auto column = op.column(col);
  const int64_t step = int64_t(t.lanes) * gridDim.y;
  if constexpr (LastFirst) {
    for (int64_t r = first + (t.rows - 1 - first) / step * step; r >= first; r -= step) column(r);
  } else {
    for (int64_t r = first; r < t.rows; r += step) column(r);
  }
}

template <class Op>
inline void map_rows(const Op& op, int64_t rows, int cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const RowTiling t = map_tiling(rows, cols);
  UNETCU_LAUNCH_CHAINED((map_rows_kernel<Op>), dim3(t.tiles, t.row_blocks), t.tile * t.lanes, 0,
                        stream)(op, t);
}

// map_rows with the rows taken from the last to the first, by one wave of blocks (as many as
// the device holds at once; map_rows' up to 2,048 blocks take two or three on an H100): every
// block then walks the same windows of rows at about the same time, from the top window down.
// A pass over rows that a reduce_rows (which walks its windows upwards, in one wave or a
// little more) has just read so meets first the rows read last, the likeliest to be still in
// L2, where map_rows would start with those read first, the likeliest to be gone
// (bench/RESULTS.md has whether it pays).
template <class Op>
inline void map_rows_last_first(const Op& op, int64_t rows, int cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  static const int wave = max_cooperative_blocks(map_rows_kernel<Op, true>, kThreads, 0);
  const RowTiling t = row_tiling(rows, cols, 1, 1, wave > 0 ? wave : kMaxBlocks);
  UNETCU_LAUNCH_CHAINED((map_rows_kernel<Op, true>), dim3(t.tiles, t.row_blocks),
                        t.tile * t.lanes, 0, stream)(op, t);
}

// ---- reduce_rows -----------------------------------------------------------------------------

// Sums vals[] over the `lanes` threads of a block that share a column (thread indices col,
// col + tile, col + 2*tile, ...); every thread gets its column's totals. A fixed binary tree
// over the lane index: the result depends only on (tile, lanes), never on timing. A kernel may
// call it repeatedly (the last barrier keeps one call's reads before the next call's writes),
// but every thread of the block must make each call.
template <typename T, int NV>
__device__ inline void reduce_lanes(T (&vals)[NV], int tile, int lanes) {
  UNETCU_STATIC_SHARED(T, buf, [NV][kThreads]);
  const int tid = int(threadIdx.x);
  const int lane = tid / tile;
  for (int v = 0; v < NV; ++v) buf[v][tid] = vals[v];
  __syncthreads();
  int half = 1;
  while (half < lanes) half *= 2;
  for (half /= 2; half > 0; half /= 2) {
    // Only the first step can have lane + half >= lanes (lanes not a power of two); later
    // steps read lanes already folded.
    if (lane < half && lane + half < lanes)
      for (int v = 0; v < NV; ++v) buf[v][tid] += buf[v][tid + half * tile];
    __syncthreads();
  }
  // Lane 0 of this thread's column is thread tid % tile; the loop's last barrier (or the one
  // above, when lanes == 1) makes its total visible.
  for (int v = 0; v < NV; ++v) vals[v] = buf[v][tid % tile];
  __syncthreads();
}

// Fixed-order sum of v over the warp into lane 0 (a halving tree: lane i adds lane i + d).
template <typename T>
__device__ inline T warp_tree_sum(T v) {
  for (int d = 16; d > 0; d /= 2) v += __shfl_down_sync(0xffffffffu, v, d);
  return v;
}

// Sums vals[] over all threads of a block (blockDim.x a multiple of 32, at most kThreads);
// every thread gets the totals. Each warp's tree by shuffles, one barrier, then every warp adds
// the warp totals by the same tree (so all get the same bits without a second barrier). The
// order depends only on the block size. For the one-column reductions at the end of a
// reduction (reduce_rows_final_kernel), which sit on the critical path between the partial
// sums and the epilogue: reduce_lanes there takes a barrier per halving, eight at 256 threads.
// (Not in reduce_then_map, whose blocks sum 8 values: under the SIMT emulator every shuffle is
// a warp-wide switch of fibers, and there the shuffle trees doubled the emulated training
// step's time.) A kernel calls it once: a second call could overwrite warp totals still being
// read.
template <typename T, int NV>
__device__ inline void reduce_block(T (&vals)[NV]) {
  UNETCU_STATIC_SHARED(T, warp_totals, [NV][kThreads / 32]);
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  const int warps = int(blockDim.x) / 32;
  for (int v = 0; v < NV; ++v) {
    const T w = warp_tree_sum(vals[v]);
    if (lane == 0) warp_totals[v][warp] = w;
  }
  __syncthreads();
  for (int v = 0; v < NV; ++v) {
    const T w = warp_tree_sum(lane < warps ? warp_totals[v][lane] : T(0));
    vals[v] = __shfl_sync(0xffffffffu, w, 0);
  }
}

// An epilogue may split a column's work into E::kParts independent parts (BatchNorm: the
// channels of a vector column), which the skeletons call from as many threads at once,
// operator()(batch, col, part, totals); an epilogue without kParts is one call,
// operator()(batch, col, totals). Splitting matters when each part waits on its own loads and
// stores: run one after another in one thread, four channels' worth cost ~3 us a call.
template <class E, class = void>
struct EpilogueParts {
  static constexpr bool split = false;
  static constexpr int value = 1;
};
template <class E>
struct EpilogueParts<E, std::void_t<decltype(E::kParts)>> {
  static constexpr bool split = true;
  static constexpr int value = E::kParts;
};

// An epilogue may also name what it reads besides the totals (E::Inputs: per-channel
// parameters, running statistics, the statistics a backward reuses) and load it apart,
// load(batch, col[, part]); it is then called as operator()(batch, col[, part], totals,
// inputs). The skeletons load a thread's first part's inputs before the reduction, so that
// their round trip overlaps the partials' loads and the block's trees: left in the epilogue,
// those loads follow the block's last barrier (no load moves across one), a global-memory
// round trip on the critical path of every BatchNorm (78 a training step).
template <class E, class = void>
struct EpilogueInputs {
  static constexpr bool value = false;
};
template <class E>
struct EpilogueInputs<E, std::void_t<typename E::Inputs>> {
  static constexpr bool value = true;
};
struct NoInputs {};

// The inputs of part `first` of the epilogue of one column (the first a thread runs), loaded
// now; nothing where the epilogue names none or the thread runs no part.
template <class E>
__device__ inline auto preload_epilogue(const E& e, int batch, int col, int first) {
  if constexpr (EpilogueInputs<E>::value) {
    typename E::Inputs in{};
    if constexpr (EpilogueParts<E>::split) {
      if (first < EpilogueParts<E>::value) in = e.load(batch, col, first);
    } else {
      if (first == 0) in = e.load(batch, col);
    }
    return in;
  } else {
    return NoInputs{};
  }
}

// The parts first, first + stride, ... of the epilogue of one column; `first_inputs` from
// preload_epilogue(e, batch, col, first), the later parts' inputs loaded here.
template <class E, int NV, class In>
__device__ inline void run_epilogue(const E& e, int batch, int col, int first, int stride,
                                    const double (&totals)[NV], const In& first_inputs) {
  if constexpr (EpilogueParts<E>::split) {
    for (int part = first; part < EpilogueParts<E>::value; part += stride) {
      if constexpr (EpilogueInputs<E>::value)
        e(batch, col, part, totals, part == first ? first_inputs : e.load(batch, col, part));
      else
        e(batch, col, part, totals);
    }
  } else {
    if (first != 0) return;
    if constexpr (EpilogueInputs<E>::value)
      e(batch, col, totals, first_inputs);
    else
      e(batch, col, totals);
  }
}

// Stage 1: block (x, y, z) sums rows y*lanes + lane, stepping by lanes*row_blocks, of its
// column tile in batch z, and writes partials[v][z][col][y].
template <int NV, class Src>
__global__ void __launch_bounds__(kThreads) reduce_rows_partial_kernel(double* partials, Src src,
                                                                       RowTiling t) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  const int col = int(blockIdx.x) * t.tile + int(threadIdx.x) % t.tile;
  const int lane = int(threadIdx.x) / t.tile;
  const int batch = int(blockIdx.z);
  double acc[NV] = {};
  if (col < t.cols) {
    const auto column = src.column(batch, col);
    const int64_t step = int64_t(t.lanes) * gridDim.y;
    // Unrolled by four so that four rows' loads can be issued before their additions (which
    // stay in row order): with 1024 blocks that keeps enough bytes in flight per SM to cover
    // DRAM latency.
    UNETCU_UNROLL_4
    for (int64_t r = int64_t(blockIdx.y) * t.lanes + lane; r < t.rows; r += step)
      column.add(acc, r);
  }
  reduce_lanes<double, NV>(acc, t.tile, t.lanes);
  if (lane == 0 && col < t.cols) {
    for (int v = 0; v < NV; ++v) {
      const size_t at = ((size_t(v) * t.batches + batch) * t.cols + col) * t.row_blocks + blockIdx.y;
      partials[at] = acc[v];
    }
  }
}

// Stage 2: block (col, batch) adds its row_blocks partials (contiguous, so the loads coalesce)
// over a fixed tree (reduce_block) and calls epilogue(batch, col, totals) once.
template <int NV, class Epilogue>
__global__ void __launch_bounds__(kThreads) reduce_rows_final_kernel(Epilogue epilogue,
                                                                     const double* partials,
                                                                     RowTiling t) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  const int col = int(blockIdx.x);
  const int batch = int(blockIdx.y);
  const auto inputs = preload_epilogue(epilogue, batch, col, int(threadIdx.x));
  double acc[NV] = {};
  for (int rb = int(threadIdx.x); rb < t.row_blocks; rb += int(blockDim.x))
    for (int v = 0; v < NV; ++v)
      acc[v] += partials[((size_t(v) * t.batches + batch) * t.cols + col) * t.row_blocks + rb];
  reduce_block<double, NV>(acc);
  run_epilogue(epilogue, batch, col, int(threadIdx.x), int(blockDim.x), acc, inputs);
}

// Src::column(batch, col) builds per-thread state whose add(double (&acc)[NV], row) adds the
// NV quantities of one element. `partials` holds t.partial_count(NV) doubles.
// Two launches, on purpose: a one-launch form (each block takes a ticket from a counter and
// the last one adds the partials, in the same fixed order) ran 2-4x slower per call on the
// H100 and cost the step 12%, with one fence per block or one per warp (bench/RESULTS.md,
// "Second and third H100 runs"); the cause was not found.
template <int NV, class Src, class Epilogue>
inline void reduce_rows(const Src& src, const Epilogue& epilogue, const RowTiling& t,
                        double* partials, cudaStream_t stream) {
  UNETCU_LAUNCH_CHAINED((reduce_rows_partial_kernel<NV, Src>),
                        dim3(t.tiles, t.row_blocks, t.batches), t.tile * t.lanes, 0,
                        stream)(partials, src, t);
  UNETCU_LAUNCH_CHAINED((reduce_rows_final_kernel<NV, Epilogue>), dim3(t.cols, t.batches),
                        t.finalize_threads(), 0, stream)(epilogue, partials, t);
}

// ---- reduce_then_map -------------------------------------------------------------------------

// A reduction needs every row before its epilogue, so reduce_rows + map_rows is three kernels
// and two grid-wide waits. When a block can own all the rows of its columns, the wait is a
// __syncthreads and the whole op is one kernel: at this network's deepest layer (256 rows of
// 512 channels at batch 16) the three launches, not the bytes, were the cost (13-15 us a
// BatchNorm on the H200 for 0.5 MB; 9-10 us as one kernel). Each thread takes at most
// kSmallRowsPerThread rows, so a block's work stays a short chain of loads; larger tensors
// keep the multi-block path. At 1,024 rows (layer3, four rows a thread) the one kernel gained
// nothing on the H200 (14-17 us against 14-15, bench/RESULTS.md): hence two rows a thread,
// 512 rows of 256 threads, at most.
constexpr int kSmallRowsPerThread = 2;

struct SmallTiling {
  int64_t rows = 0;
  int cols = 0, tile = 1, lanes = 1, blocks = 1;
};

// The tiling for `rows` x `cols` elements of `elem_bytes` each (a column is one element of a
// row: a channel, or V channels moved as one vector), or false when the rows do not fit one
// block. A row segment of `tile` columns covers 16 bytes (a float4) where the row is that
// wide: the most blocks, hence SMs, for the tensor, each thread's rows as short a chain of
// loads as the cap allows. (On the H200 two float4 columns a block, 32 blocks for 256
// channels, ran slower than the three-kernel path.)
inline bool small_tiling(int64_t rows, int cols, int elem_bytes, SmallTiling* t) {
  if (rows <= 0 || cols <= 0) return false;
  int tile = (16 + elem_bytes - 1) / elem_bytes;
  if (tile > cols) tile = cols;
  const int lanes = kThreads / tile;
  if (rows > int64_t(lanes) * kSmallRowsPerThread) return false;
  t->rows = rows;
  t->cols = cols;
  t->tile = tile;
  t->lanes = lanes;
  t->blocks = (cols + tile - 1) / tile;
  return true;
}

// Block b owns columns [b*tile, (b+1)*tile) over all rows: Src::column(0, col).add(acc, row)
// sums them (NV sums per column), the fixed lane tree of reduce_lanes totals them, the
// epilogue runs for each column (its parts spread over the column's lanes), and after the
// barrier every thread runs Map::column(col)(row) over its rows. The epilogue may write device memory that Map::column
// reads: __syncthreads makes a block's global writes visible to the whole block.
template <int NV, class Src, class Epilogue, class Map>
__global__ void __launch_bounds__(kThreads) reduce_then_map_kernel(Src src, Epilogue epilogue,
                                                                   Map map, SmallTiling t) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  const int col = int(blockIdx.x) * t.tile + int(threadIdx.x) % t.tile;
  const int lane = int(threadIdx.x) / t.tile;
  // A thread past the last column runs no part (the part index is past every epilogue's).
  const auto inputs = preload_epilogue(epilogue, 0, col, col < t.cols ? lane : kThreads);
  double acc[NV] = {};
  if (col < t.cols) {
    const auto column = src.column(0, col);
    // A fixed trip count with a guard lets the compiler issue all of a thread's loads first.
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int k = 0; k < kSmallRowsPerThread; ++k) {
      const int64_t r = lane + int64_t(k) * t.lanes;
      if (r < t.rows) column.add(acc, r);
    }
  }
  reduce_lanes<double, NV>(acc, t.tile, t.lanes);
  if (col < t.cols) run_epilogue(epilogue, 0, col, lane, t.lanes, acc, inputs);
  __syncthreads();
  if (col >= t.cols) return;  // the last barrier is behind us
  const auto out = map.column(col);
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int k = 0; k < kSmallRowsPerThread; ++k) {
    const int64_t r = lane + int64_t(k) * t.lanes;
    if (r < t.rows) out(r);
  }
}

template <int NV, class Src, class Epilogue, class Map>
inline void reduce_then_map(const Src& src, const Epilogue& epilogue, const Map& map,
                            const SmallTiling& t, cudaStream_t stream) {
  UNETCU_LAUNCH_CHAINED((reduce_then_map_kernel<NV, Src, Epilogue, Map>), t.blocks,
                        t.tile * t.lanes, 0, stream)(src, epilogue, map, t);
}

// Workspace layout helper: `bytes` rounded up so that a following region stays 256-aligned.
inline size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace unetcu::cuda::detail
