// tests/simt/simt_test_kernels.cu: small CUDA kernels that exercise the SIMT emulator: barriers,
// warp shuffles and votes, atomics, dynamic shared memory, grid barriers, chained and cluster
// launches, and deliberately faulty kernels; and the row order of common.cuh's map skeletons,
// which no op's output shows.
// Plain CUDA: it builds with nvcc as well as for the emulator.
#include "tests/simt/simt_test_kernels.h"

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/mma.cuh"

namespace simt_test {
namespace {

constexpr unsigned kFull = 0xffffffffu;

__global__ void block_sum_tree_kernel(float* out, const float* in, int n) {
  __shared__ float partial[1024];
  const int t = threadIdx.x;
  const int i = blockIdx.x * blockDim.x + t;
  partial[t] = i < n ? in[i] : 0.0f;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) partial[t] += partial[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = partial[0];
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(kFull, v, offset);
  return v;
}

__global__ void block_sum_shuffle_kernel(float* out, const float* in, int n) {
  __shared__ float warp_partial[32];
  const int t = threadIdx.x;
  const int i = blockIdx.x * blockDim.x + t;
  float v = warp_sum(i < n ? in[i] : 0.0f);
  if (t % 32 == 0) warp_partial[t / 32] = v;
  __syncthreads();
  if (t < 32) {
    v = t < static_cast<int>(blockDim.x / 32) ? warp_partial[t] : 0.0f;
    v = warp_sum(v);
    if (t == 0) out[blockIdx.x] = v;
  }
}

__global__ void shuffles_kernel(int* out, const int* src, int delta, int lane_mask, int width) {
  const int lane = threadIdx.x;
  const int v = 100 + lane;
  out[0 * 32 + lane] = __shfl_sync(kFull, v, src[lane], width);
  out[1 * 32 + lane] = __shfl_up_sync(kFull, v, delta, width);
  out[2 * 32 + lane] = __shfl_down_sync(kFull, v, delta, width);
  out[3 * 32 + lane] = __shfl_xor_sync(kFull, v, lane_mask, width);
}

// Lane (g, t) = (lane / 4, lane % 4) loads its fragments by PTX's layout (mma.cuh).
__global__ void mma_tf32_kernel(float* d, const float* a, const float* b, const float* c) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  const float fa[4] = {a[g * 8 + t], a[(g + 8) * 8 + t], a[g * 8 + t + 4], a[(g + 8) * 8 + t + 4]};
  const float fb[2] = {b[t * 8 + g], b[(t + 4) * 8 + g]};
  float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t],
                  c[(g + 8) * 8 + 2 * t + 1]};
  unetcu::cuda::detail::mma_tf32(acc, fa, fb);
  d[g * 8 + 2 * t] = acc[0];
  d[g * 8 + 2 * t + 1] = acc[1];
  d[(g + 8) * 8 + 2 * t] = acc[2];
  d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

__global__ void mma_short_warp_kernel(int lane) {
  if (int(threadIdx.x) == lane) return;
  float acc[4] = {0, 0, 0, 0};
  const float fa[4] = {1, 1, 1, 1}, fb[2] = {1, 1};
  unetcu::cuda::detail::mma_tf32(acc, fa, fb);
}

__global__ void votes_kernel(unsigned* out, const int* pred) {
  const int t = threadIdx.x;
  const int p = pred[t];
  out[3 * t] = __ballot_sync(kFull, p);
  out[3 * t + 1] = __any_sync(kFull, p);
  out[3 * t + 2] = __all_sync(kFull, p);
}

__global__ void warp_reductions_kernel(int* out, const int* values) {
  const int t = threadIdx.x;
  const int v = values[t];
  const unsigned live = __activemask();
  out[4 * t] = __reduce_add_sync(live, v);
  out[4 * t + 1] = __reduce_min_sync(live, v);
  out[4 * t + 2] = __reduce_max_sync(live, v);
  __syncwarp(live);
  out[4 * t + 3] = static_cast<int>(live);
}

__global__ void barrier_votes_kernel(int* counts, const int* pred) {
  const int t = threadIdx.x;
  const int count = __syncthreads_count(pred[t]);
  const int all = __syncthreads_and(pred[t]);
  const int any = __syncthreads_or(pred[t]);
  if (t == 0) {
    counts[0] = count;
    counts[1] = all;
    counts[2] = any;
  }
}

__device__ void cas_add(unsigned long long* target, unsigned long long amount) {
  unsigned long long seen = *target;
  for (;;) {
    const unsigned long long old = atomicCAS(target, seen, seen + amount);
    if (old == seen) return;
    seen = old;
  }
}

__global__ void atomics_kernel(float* fsum, int* isum, int* imax, unsigned long long* casum) {
  const int tid = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(fsum, 1.0f);
  atomicAdd(isum, 1);
  atomicMax(imax, tid + 1);
  cas_add(casum, 2);
}

__global__ void reverse_blocks_kernel(float* out, const float* in, int n) {
  UNETCU_DYNAMIC_SHARED(float, tile);
  const int t = threadIdx.x;
  const int base = blockIdx.x * blockDim.x;
  if (base + t < n) tile[t] = in[base + t];
  __syncthreads();
  const int from = blockDim.x - 1 - t;
  if (base + t < n && base + from < n) out[base + t] = tile[from];
}

__global__ void read_dynamic_shared_kernel(unsigned* out) {
  UNETCU_DYNAMIC_SHARED(unsigned, words);
  out[threadIdx.x] = words[threadIdx.x];
}

// One static shared array, declared in a device function that a kernel may call more than once.
__device__ unsigned* block_words() {
  UNETCU_STATIC_SHARED(unsigned, words, [64]);
  return words;
}

__global__ void static_shared_fresh_kernel(unsigned* out) {
  unsigned* words = block_words();
  out[blockIdx.x * blockDim.x + threadIdx.x] = words[threadIdx.x];
  __syncthreads();
  words[threadIdx.x] = blockIdx.x;
}

__global__ void static_shared_places_kernel(unsigned long long* out) {
  unsigned* first = block_words();
  UNETCU_STATIC_SHARED(double, values, [3]);
  UNETCU_STATIC_SHARED(char, bytes, [5]);
  unsigned* again = block_words();
  unsigned long long* mine = out + 5 * threadIdx.x;
  mine[0] = reinterpret_cast<uintptr_t>(first);
  mine[1] = reinterpret_cast<uintptr_t>(again);
  mine[2] = reinterpret_cast<uintptr_t>(values);
  mine[3] = reinterpret_cast<uintptr_t>(bytes);
  mine[4] = sizeof(values);
}

__global__ void static_shared_too_large_kernel() {
  UNETCU_STATIC_SHARED(float, first, [8192]);
  UNETCU_STATIC_SHARED(float, second, [4097]);
  first[threadIdx.x] = second[threadIdx.x] = 0.0f;
}

__global__ void static_with_dynamic_kernel() {
  UNETCU_STATIC_SHARED(float, tile, [4096]);
  UNETCU_DYNAMIC_SHARED(float, rest);
  tile[threadIdx.x] = rest[threadIdx.x] = 0.0f;
}

__global__ void static_shared_index_kernel(int i, bool through_pointer) {
  UNETCU_STATIC_SHARED(int, words, [32]);
  int* p = words;
  if (threadIdx.x != 0) return;
  if (through_pointer) {
    p[i] = 1;
  } else {
    words[i] = 1;
  }
}

__global__ void use_dynamic_shared_kernel() {
  UNETCU_DYNAMIC_SHARED(unsigned char, bytes);
  if (threadIdx.x == 0) bytes[0] = 1;
}

__global__ void missing_barrier_kernel(float* out) {
  UNETCU_DYNAMIC_SHARED(float, tile);
  const int t = threadIdx.x;
  tile[t] = static_cast<float>(t);
  out[t] = tile[(t + 1) % blockDim.x];  // a race: no __syncthreads between write and read
}

__global__ void index_3d_kernel(int* out) {
  const int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const int per_block = blockDim.x * blockDim.y * blockDim.z;
  out[block * per_block + thread] = block * per_block + thread;
}

__global__ void axpy_kernel(float* y, const float* x, float a, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

__global__ void deadlock_kernel() {
  // Lane 0 shuffles with lane 1, but lane 1 waits at the block barrier, which lane 0 never reaches.
  if (threadIdx.x == 0) {
    (void)__shfl_sync(0x3u, 1, 1);
  } else {
    __syncthreads();
  }
}

// Round r: thread 0 of block b writes slots[r][b], every block waits at the grid barrier, then
// thread 0 of block b adds the round's slots of all blocks into out[r][b]. A barrier that let
// a block through early would show as a sum with an unwritten (-1) slot in it.
__global__ void grid_rounds_kernel(int* slots, int* out, int rounds) {
  const int blocks = static_cast<int>(gridDim.x);
  const int b = static_cast<int>(blockIdx.x);
  for (int r = 0; r < rounds; ++r) {
    if (threadIdx.x == 0) slots[r * blocks + b] = (r + 1) * 1000 + b;
    UNETCU_GRID_SYNC();
    if (threadIdx.x == 0) {
      int sum = 0;
      for (int k = 0; k < blocks; ++k) sum += slots[r * blocks + k];
      out[r * blocks + b] = sum;
    }
  }
}

__global__ void grid_sync_kernel() { UNETCU_GRID_SYNC(); }

// out[i] = in[i] * 2 + 1, a chained kernel: every thread waits for the previous kernel first.
__global__ void chained_scale_kernel(int* out, const int* in, int n) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = in[i] * 2 + 1;
}

// The same with thread 3 of each block leaving before the wait (it writes nothing, but on a
// GPU a thread that did would race the previous kernel).
__global__ void chained_missing_sync_kernel(int* out, const int* in, int n) {
  if (threadIdx.x == 3) return;
  UNETCU_GRID_DEPENDENCY_SYNC();
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = in[i] * 2 + 1;
}

__global__ void grid_sync_early_exit_kernel() {
  if (blockIdx.x == 1) return;
  UNETCU_GRID_SYNC();
}

// Block (x, y) fills its dynamic shared memory with (y * gridDim.x + x) * 1000 + t; after a
// cluster barrier thread t reads word (t + 1) % blockDim.x of the next rank's and writes it out.
// The second barrier keeps every block until its peers have read it.
__global__ void cluster_exchange_kernel(int* out, unsigned cluster) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  UNETCU_DYNAMIC_SHARED(int, words);
  const unsigned t = threadIdx.x, n = blockDim.x;
  const unsigned block = blockIdx.y * gridDim.x + blockIdx.x;
  words[t] = static_cast<int>(block * 1000 + t);
  UNETCU_CLUSTER_SYNC();
  const int* next = UNETCU_CLUSTER_SHARED(words, (UNETCU_CLUSTER_RANK() + 1) % cluster);
  out[block * n + t] = next[(t + 1) % n];
  UNETCU_CLUSTER_SYNC();
}

// Two rounds that reuse the same shared words: word t of block b holds (b + 1) * (t + 1) *
// (round + 1); after a cluster barrier thread t sums word t of every rank of the cluster, and a
// second barrier keeps the next round from overwriting a word a peer has yet to read.
// info[2b] = the block's rank, info[2b+1] = the distance between the mapped one-past-the-end
// and start of the next rank's shared memory (blockDim.x).
__global__ void cluster_rounds_kernel(int* sums, int* info, unsigned cluster) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  UNETCU_DYNAMIC_SHARED(int, words);
  const unsigned t = threadIdx.x, n = blockDim.x, b = blockIdx.x;
  const unsigned rank = UNETCU_CLUSTER_RANK();
  if (t == 0) {  // before the last barrier: a peer may have finished after it
    const unsigned next = (rank + 1) % cluster;
    info[2 * b] = static_cast<int>(rank);
    info[2 * b + 1] = static_cast<int>(UNETCU_CLUSTER_SHARED(words + n, next) -
                                       UNETCU_CLUSTER_SHARED(words, next));
  }
  for (unsigned round = 0; round < 2; ++round) {
    words[t] = static_cast<int>((b + 1) * (t + 1) * (round + 1));
    UNETCU_CLUSTER_SYNC();
    int sum = 0;
    for (unsigned r = 0; r < cluster; ++r) sum += UNETCU_CLUSTER_SHARED(words, r)[t];
    sums[(round * gridDim.x + b) * n + t] = sum;
    UNETCU_CLUSTER_SYNC();
  }
}

// Rank 1 of each cluster returns before the cluster barrier the others wait at.
__global__ void cluster_early_exit_kernel() {
  UNETCU_GRID_DEPENDENCY_SYNC();
  if (UNETCU_CLUSTER_RANK() == 1) return;
  UNETCU_CLUSTER_SYNC();
}

// Rank 0 waits at a different cluster barrier from the other ranks.
__global__ void cluster_divergent_kernel() {
  UNETCU_GRID_DEPENDENCY_SYNC();
  if (UNETCU_CLUSTER_RANK() == 0) {
    UNETCU_CLUSTER_SYNC();
  } else {
    UNETCU_CLUSTER_SYNC();
  }
}

// A cluster call (0: barrier, 1: rank, 2: shared memory map) in a kernel of a chained launch.
__global__ void cluster_call_kernel(int what) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  UNETCU_DYNAMIC_SHARED(int, words);
  if (what == 0) UNETCU_CLUSTER_SYNC();
  if (what == 1) words[0] = static_cast<int>(UNETCU_CLUSTER_RANK());
  if (what == 2) UNETCU_CLUSTER_SHARED(words, 0)[0] = 1;
}

__global__ void grid_sync_in_cluster_kernel() {
  UNETCU_GRID_DEPENDENCY_SYNC();
  UNETCU_GRID_SYNC();
}

// Maps (0) a static __shared__ array, (1) a pointer past the dynamic shared memory, or (2) the
// dynamic shared memory of rank `cluster`, one past the last.
__global__ void cluster_bad_map_kernel(int what, unsigned cluster) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  UNETCU_STATIC_SHARED(int, table, [32]);
  UNETCU_DYNAMIC_SHARED(int, words);
  int* p = what == 0 ? table : what == 1 ? words + blockDim.x + 1 : words;
  const unsigned rank = what == 2 ? cluster : 0;
  UNETCU_CLUSTER_SHARED(p, rank)[0] = 1;
  UNETCU_CLUSTER_SYNC();
}

// Rank 0 returns at once; thread 0 of rank 1 keeps mapping rank 0's shared memory, which must
// abort once rank 0 has finished (the loop only bounds the time a broken check would take).
__global__ void map_finished_block_kernel(int* out) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  UNETCU_DYNAMIC_SHARED(int, words);
  if (UNETCU_CLUSTER_RANK() == 0 || threadIdx.x != 0) return;
  for (long i = 0; i < 2000000000L; ++i) {
    if (UNETCU_CLUSTER_SHARED(words, 0) == nullptr) out[0] = 1;
  }
}

// Both ranks pass a cluster barrier after rank 1 mapped rank 0's shared memory; then rank 0
// returns and thread 0 of rank 1 keeps reading through the old mapping (ASan reports it).
__global__ void read_finished_block_kernel(int* out) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  UNETCU_DYNAMIC_SHARED(int, words);
  words[threadIdx.x] = 7;
  const volatile int* peer = UNETCU_CLUSTER_SHARED(words, 0);
  UNETCU_CLUSTER_SYNC();
  if (UNETCU_CLUSTER_RANK() == 0 || threadIdx.x != 0) return;
  int sum = 0;
  for (long i = 0; i < 200000000L; ++i) sum += peer[0];
  out[0] = sum;
}

__global__ void early_exit_kernel() {
  if (threadIdx.x == 5) return;
  __syncthreads();
}

__global__ void divergent_barrier_kernel() {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

__global__ void out_of_bounds_kernel(float* data, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) data[i] = 1.0f;  // the bug: <= instead of <
}

__global__ void shuffle_outside_own_mask_kernel() {
  const unsigned mask = threadIdx.x == 5 ? 0x3u : kFull;
  (void)__shfl_sync(mask, 1, 0);
}

__global__ void poisoned_shuffle_kernel(float* out) {
  const int lane = threadIdx.x;
  if (lane < 16) out[lane] = __shfl_sync(0x0000ffffu, static_cast<float>(lane), lane + 16);
}

__global__ void empty_kernel() {}

__global__ void touch_kernel(int* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = i;
}

__global__ void touch_with_barriers_kernel(int* out, int barriers) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  for (int b = 0; b < barriers; ++b) __syncthreads();
  out[i] = i;
}

int ceil_div(int a, int b) { return (a + b - 1) / b; }

// A map_rows op recording, for each (row, col) it visits, the visiting thread and how many
// elements that thread had visited before.
struct RecordVisits {
  int* thread_of;
  int* visit_of;
  int cols;
  struct Column {
    int* thread_of;
    int* visit_of;
    int64_t base;  // col, then + row * cols
    int cols;
    int thread;
    mutable int visits;
    __device__ void operator()(int64_t row) const {
      thread_of[base + row * cols] = thread;
      visit_of[base + row * cols] = visits++;
    }
  };
  __device__ Column column(int col) const {
    const int thread = int((blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x);
    return Column{thread_of, visit_of, col, cols, thread, 0};
  }
};

}  // namespace

void block_sum_tree(float* out, const float* in, int n, int block, cudaStream_t stream) {
  UNETCU_LAUNCH(block_sum_tree_kernel, ceil_div(n, block), block, 0, stream)(out, in, n);
}

void block_sum_shuffle(float* out, const float* in, int n, int block, cudaStream_t stream) {
  UNETCU_LAUNCH(block_sum_shuffle_kernel, ceil_div(n, block), block, 0, stream)(out, in, n);
}

void shuffles(int* out, const int* src, int delta, int lane_mask, int width,
              cudaStream_t stream) {
  UNETCU_LAUNCH(shuffles_kernel, 1, 32, 0, stream)(out, src, delta, lane_mask, width);
}

void mma_tf32_product(float* d, const float* a, const float* b, const float* c,
                      cudaStream_t stream) {
  UNETCU_LAUNCH(mma_tf32_kernel, 1, 32, 0, stream)(d, a, b, c);
}

void mma_short_warp(int lane, cudaStream_t stream) {
  UNETCU_LAUNCH(mma_short_warp_kernel, 1, 32, 0, stream)(lane);
}

void votes(unsigned* out, const int* pred, int threads, cudaStream_t stream) {
  UNETCU_LAUNCH(votes_kernel, 1, threads, 0, stream)(out, pred);
}

void warp_reductions(int* out, const int* values, int threads, cudaStream_t stream) {
  UNETCU_LAUNCH(warp_reductions_kernel, 1, threads, 0, stream)(out, values);
}

void barrier_votes(int* counts, const int* pred, int threads, cudaStream_t stream) {
  UNETCU_LAUNCH(barrier_votes_kernel, 1, threads, 0, stream)(counts, pred);
}

void atomics(float* fsum, int* isum, int* imax, unsigned long long* casum, int blocks,
             cudaStream_t stream) {
  UNETCU_LAUNCH(atomics_kernel, blocks, 256, 0, stream)(fsum, isum, imax, casum);
}

void reverse_blocks(float* out, const float* in, int n, int block, cudaStream_t stream) {
  UNETCU_LAUNCH(reverse_blocks_kernel, ceil_div(n, block), block, block * sizeof(float),
                stream)(out, in, n);
}

void read_dynamic_shared(unsigned* out, int words, cudaStream_t stream) {
  UNETCU_LAUNCH(read_dynamic_shared_kernel, 1, words, words * sizeof(unsigned), stream)(out);
}

void static_shared_fresh(unsigned* out, int blocks, cudaStream_t stream) {
  UNETCU_LAUNCH(static_shared_fresh_kernel, blocks, 64, 0, stream)(out);
}

void static_shared_places(unsigned long long* out, int threads, cudaStream_t stream) {
  UNETCU_LAUNCH(static_shared_places_kernel, 1, threads, 0, stream)(out);
}

void static_shared_too_large(cudaStream_t stream) {
  UNETCU_LAUNCH(static_shared_too_large_kernel, 1, 32, 0, stream)();
}

void static_with_dynamic(size_t smem_bytes, cudaStream_t stream) {
  UNETCU_CUDA_CHECK(cudaFuncSetAttribute(static_with_dynamic_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(smem_bytes)));
  UNETCU_LAUNCH(static_with_dynamic_kernel, 1, 32, smem_bytes, stream)();
}

void static_shared_index(int i, bool through_pointer, cudaStream_t stream) {
  UNETCU_LAUNCH(static_shared_index_kernel, 1, 32, 0, stream)(i, through_pointer);
}

void use_dynamic_shared(size_t smem_bytes, cudaStream_t stream) {
  UNETCU_LAUNCH(use_dynamic_shared_kernel, 1, 32, smem_bytes, stream)();
}

void allow_dynamic_shared(int bytes) {
  UNETCU_CUDA_CHECK(cudaFuncSetAttribute(use_dynamic_shared_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

void missing_barrier(float* out, int block, cudaStream_t stream) {
  UNETCU_LAUNCH(missing_barrier_kernel, 1, block, block * sizeof(float), stream)(out);
}

void index_3d(int* out, dim3 grid, dim3 block, cudaStream_t stream) {
  UNETCU_LAUNCH(index_3d_kernel, grid, block, 0, stream)(out);
}

void axpy(float* y, const float* x, float a, int n, cudaStream_t stream) {
  UNETCU_LAUNCH(axpy_kernel, ceil_div(n, 128), 128, 0, stream)(y, x, a, n);
}

void deadlock(cudaStream_t stream) { UNETCU_LAUNCH(deadlock_kernel, 1, 64, 0, stream)(); }

void grid_rounds(int* slots, int* out, int blocks, int threads, int rounds, cudaStream_t stream) {
  UNETCU_LAUNCH_COOPERATIVE(grid_rounds_kernel, blocks, threads, 0, stream)(slots, out, rounds);
}

void chained_scale(int* out, const int* in, int n, cudaStream_t stream) {
  UNETCU_LAUNCH_CHAINED(chained_scale_kernel, ceil_div(n, 64), 64, 0, stream)(out, in, n);
}

void chained_missing_sync(int* out, const int* in, int n, cudaStream_t stream) {
  UNETCU_LAUNCH_CHAINED(chained_missing_sync_kernel, ceil_div(n, 64), 64, 0, stream)(out, in, n);
}

void grid_sync_in_ordinary_launch(cudaStream_t stream) {
  UNETCU_LAUNCH(grid_sync_kernel, 2, 32, 0, stream)();
}

void grid_sync_after_block_exit(cudaStream_t stream) {
  UNETCU_LAUNCH_COOPERATIVE(grid_sync_early_exit_kernel, 4, 32, 0, stream)();
}

void cluster_exchange(int* out, dim3 grid, int threads, unsigned cluster, cudaStream_t stream) {
  UNETCU_LAUNCH_CLUSTER(cluster_exchange_kernel, grid, threads, threads * sizeof(int), stream,
                        cluster)(out, cluster);
}

cudaError_t set_cluster_exchange_non_portable(int value) {
  return cudaFuncSetAttribute(cluster_exchange_kernel,
                              cudaFuncAttributeNonPortableClusterSizeAllowed, value);
}

bool cluster_exchange_fits(unsigned cluster) {
  return unetcu::cluster_fits(cluster_exchange_kernel, 32, 32 * sizeof(int), cluster);
}

void cluster_rounds(int* sums, int* info, int blocks, int threads, unsigned cluster,
                    cudaStream_t stream) {
  UNETCU_LAUNCH_CLUSTER(cluster_rounds_kernel, blocks, threads, threads * sizeof(int), stream,
                        cluster)(sums, info, cluster);
}

void cluster_sync_after_block_exit(cudaStream_t stream) {
  UNETCU_LAUNCH_CLUSTER(cluster_early_exit_kernel, 8, 32, 0, stream, 4)();
}

void divergent_cluster_barriers(cudaStream_t stream) {
  UNETCU_LAUNCH_CLUSTER(cluster_divergent_kernel, 4, 32, 0, stream, 4)();
}

void cluster_call_in_chained_launch(int what, cudaStream_t stream) {
  UNETCU_LAUNCH_CHAINED(cluster_call_kernel, 2, 32, sizeof(int), stream)(what);
}

void grid_sync_in_cluster_launch(cudaStream_t stream) {
  UNETCU_LAUNCH_CLUSTER(grid_sync_in_cluster_kernel, 4, 32, 0, stream, 2)();
}

void cluster_bad_map(int what, cudaStream_t stream) {
  UNETCU_LAUNCH_CLUSTER(cluster_bad_map_kernel, 4, 32, 32 * sizeof(int), stream, 2)(what, 2u);
}

void map_finished_block(int* out, cudaStream_t stream) {
  UNETCU_LAUNCH_CLUSTER(map_finished_block_kernel, 2, 32, 32 * sizeof(int), stream, 2)(out);
}

void read_finished_block(int* out, cudaStream_t stream) {
  UNETCU_LAUNCH_CLUSTER(read_finished_block_kernel, 2, 32, 32 * sizeof(int), stream, 2)(out);
}

void early_exit_before_barrier(cudaStream_t stream) {
  UNETCU_LAUNCH(early_exit_kernel, 1, 64, 0, stream)();
}

void divergent_barrier(cudaStream_t stream) {
  UNETCU_LAUNCH(divergent_barrier_kernel, 1, 64, 0, stream)();
}

void out_of_bounds_write(float* data, int n, cudaStream_t stream) {
  UNETCU_LAUNCH(out_of_bounds_kernel, ceil_div(n + 1, 64), 64, 0, stream)(data, n);
}

void shuffle_outside_own_mask(cudaStream_t stream) {
  UNETCU_LAUNCH(shuffle_outside_own_mask_kernel, 1, 32, 0, stream)();
}

void poisoned_shuffle(float* out, cudaStream_t stream) {
  UNETCU_LAUNCH(poisoned_shuffle_kernel, 1, 32, 0, stream)(out);
}

void launch_config(dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream) {
  UNETCU_LAUNCH(empty_kernel, grid, block, smem_bytes, stream)();
}

void touch(int* out, int blocks, int threads, cudaStream_t stream) {
  UNETCU_LAUNCH(touch_kernel, blocks, threads, 0, stream)(out);
}

void touch_with_barriers(int* out, int blocks, int threads, int barriers, cudaStream_t stream) {
  UNETCU_LAUNCH(touch_with_barriers_kernel, blocks, threads, 0, stream)(out, barriers);
}

void map_rows_visits(int* thread_of, int* visit_of, int64_t rows, int cols, bool last_first,
                     cudaStream_t stream) {
  const RecordVisits op{thread_of, visit_of, cols};
  if (last_first)
    unetcu::cuda::detail::map_rows_last_first(op, rows, cols, stream);
  else
    unetcu::cuda::detail::map_rows(op, rows, cols, stream);
}

}  // namespace simt_test
