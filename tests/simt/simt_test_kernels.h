// tests/simt/simt_test_kernels.h: host entry points of the kernels that exercise the SIMT
// emulator (simt_test_kernels.cu). Pointers are device memory; each function launches on
// `stream` through UNETCU_LAUNCH, so a bad configuration throws unetcu::CudaError.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace simt_test {

// out[b] = sum of in[b*block .. b*block+block) by a shared-memory tree (block: a power of two
// <= 1024), grid = ceil(n / block). Elements past n count as 0.
void block_sum_tree(float* out, const float* in, int n, int block, cudaStream_t stream);
// The same sums with warp shuffles (__shfl_down_sync) and one shared array of warp partials.
void block_sum_shuffle(float* out, const float* in, int n, int block, cudaStream_t stream);

// One warp of 32 lanes; lane i contributes value[i] = 100 + i. For every lane:
//   out[0*32+i] = __shfl_sync(full, v, src[i], width)
//   out[1*32+i] = __shfl_up_sync(full, v, delta, width)
//   out[2*32+i] = __shfl_down_sync(full, v, delta, width)
//   out[3*32+i] = __shfl_xor_sync(full, v, lane_mask, width)
void shuffles(int* out, const int* src, int delta, int lane_mask, int width, cudaStream_t stream);

// One warp's tensor-core product (kernels/cuda/mma.cuh's mma_tf32, PTX's m16n8k8 TF32 layout):
// d (16 x 8, row-major) = a (16 x 8, row-major) * b (8 x 8, row-major) + c (16 x 8), the
// operands passed as given (their low 13 bits are then ignored, as on a GPU).
void mma_tf32_product(float* d, const float* a, const float* b, const float* c,
                      cudaStream_t stream);
// The same with lane `lane` returning before the product: the warp is short.
void mma_short_warp(int lane, cudaStream_t stream);

// `threads` threads (one or more warps); predicate for thread t = pred[t]. Per thread:
// out[3*t] = __ballot_sync(full, p), out[3*t+1] = __any_sync, out[3*t+2] = __all_sync.
void votes(unsigned* out, const int* pred, int threads, cudaStream_t stream);

// `threads` threads; per thread t (values[t] signed): out[4*t] = __reduce_add_sync,
// out[4*t+1] = __reduce_min_sync, out[4*t+2] = __reduce_max_sync over its warp's live lanes, and
// out[4*t+3] = __activemask() after a __syncwarp.
void warp_reductions(int* out, const int* values, int threads, cudaStream_t stream);

// counts[0] = __syncthreads_count(pred), counts[1] = __syncthreads_and, counts[2] = _or, for
// one block of `threads` threads with predicate pred[t].
void barrier_votes(int* counts, const int* pred, int threads, cudaStream_t stream);

// `blocks` x 256 threads: *fsum += 1.0f, *isum += 1, *imax = max(tid+1), and a CAS-loop add of 2
// into *casum, by every thread.
void atomics(float* fsum, int* isum, int* imax, unsigned long long* casum, int blocks,
             cudaStream_t stream);

// Reverses each block's slice of `in` (block threads) through dynamic shared memory.
void reverse_blocks(float* out, const float* in, int n, int block, cudaStream_t stream);
// out[t] = the dynamic shared word at t as the block starts (0xFFFFFFFF when poisoned).
void read_dynamic_shared(unsigned* out, int words, cudaStream_t stream);
// `blocks` blocks of 64 threads; out[b*64+t] = word t of a static shared array
// (UNETCU_STATIC_SHARED) as block b first sees it, before the block writes b there.
void static_shared_fresh(unsigned* out, int blocks, cudaStream_t stream);
// One block of `threads`; per thread t, out[5*t .. 5*t+4] = the addresses of a 64-word array
// declared in a device function (first call, second call), of a double[3] and a char[5]
// declared in the kernel, and sizeof the double[3].
void static_shared_places(unsigned long long* out, int threads, cudaStream_t stream);
// A kernel whose static shared arrays take 32 KB and 16 KB + 4 bytes (more than 48 KB).
void static_shared_too_large(cudaStream_t stream);
// A kernel with 16 KB of static shared memory, launched with `smem_bytes` dynamic.
void static_with_dynamic(size_t smem_bytes, cudaStream_t stream);
// Thread 0 writes element i of a static int[32], by index or through a pointer to it.
void static_shared_index(int i, bool through_pointer, cudaStream_t stream);
// A kernel with `smem_bytes` of dynamic shared memory; nothing else.
void use_dynamic_shared(size_t smem_bytes, cudaStream_t stream);
// Sets the kernel attribute that allows `bytes` of dynamic shared memory for use_dynamic_shared.
void allow_dynamic_shared(int bytes);

// A racy kernel: thread t writes tile[t] then reads tile[t+1] without a barrier.
void missing_barrier(float* out, int block, cudaStream_t stream);

// out[t] = linear id recomputed from threadIdx/blockIdx of a 3-D launch (grid x block).
void index_3d(int* out, dim3 grid, dim3 block, cudaStream_t stream);

// y[i] = a * x[i] + y[i] for n elements (the kernel captured into a graph in the tests).
void axpy(float* y, const float* x, float a, int n, cudaStream_t stream);

// A cooperative launch of `blocks` x `threads` (UNETCU_LAUNCH_COOPERATIVE) with `rounds` grid
// barriers: slots and out hold rounds x blocks ints; after the call out[r][b] = sum over k of
// (r + 1) * 1000 + k for every block b.
void grid_rounds(int* slots, int* out, int blocks, int threads, int rounds, cudaStream_t stream);

// out[i] = in[i] * 2 + 1 (UNETCU_LAUNCH_CHAINED; the kernel waits in every thread).
void chained_scale(int* out, const int* in, int n, cudaStream_t stream);

// A cluster launch (UNETCU_LAUNCH_CLUSTER) of `grid` x `threads` in clusters of `cluster`, with
// `threads` ints of dynamic shared memory: block (x, y) (linear b = y * grid.x + x) fills word t
// with b * 1000 + t; after a cluster barrier out[b * threads + t] = word (t + 1) % threads of the
// block of rank (rank + 1) % cluster of its cluster.
void cluster_exchange(int* out, dim3 grid, int threads, unsigned cluster, cudaStream_t stream);
// cudaFuncSetAttribute(cluster_exchange's kernel, cudaFuncAttributeNonPortableClusterSizeAllowed,
// value), and unetcu::cluster_fits for it in clusters of `cluster` (which opts it in above 8).
cudaError_t set_cluster_exchange_non_portable(int value);
bool cluster_exchange_fits(unsigned cluster);
// A cluster launch of `blocks` x `threads` in clusters of `cluster`, two rounds: block b puts
// (b + 1) * (t + 1) * (round + 1) in its shared word t, and
// sums[(round * blocks + b) * threads + t] = the sum of word t over the ranks of b's cluster.
// info[2 * b] = b's UNETCU_CLUSTER_RANK(); info[2 * b + 1] = `threads` (the distance between
// the next rank's mapped one-past-the-end and start of its shared memory).
void cluster_rounds(int* sums, int* info, int blocks, int threads, unsigned cluster,
                    cudaStream_t stream);

// Faulty kernels, each aborting the process with a report; run them in a child process.
// Rank 1 of each cluster of 4 (grid 8) returns while the others wait at the cluster barrier.
void cluster_sync_after_block_exit(cudaStream_t stream);
void divergent_cluster_barriers(cudaStream_t stream);  // rank 0 at another cluster barrier
// A cluster call in UNETCU_LAUNCH_CHAINED: 0 UNETCU_CLUSTER_SYNC, 1 _RANK, 2 _SHARED.
void cluster_call_in_chained_launch(int what, cudaStream_t stream);
void grid_sync_in_cluster_launch(cudaStream_t stream);  // a cluster launch is not cooperative
// Clusters of 2 mapping (0) a static __shared__ array, (1) a pointer past the dynamic shared
// memory, (2) rank 2.
void cluster_bad_map(int what, cudaStream_t stream);
void map_finished_block(int* out, cudaStream_t stream);  // rank 1 maps rank 0 once it finished
// Rank 1 reads rank 0's shared memory, mapped before a cluster barrier, after rank 0 finished
// (an AddressSanitizer report; without ASan it runs to the end).
void read_finished_block(int* out, cudaStream_t stream);
void grid_sync_in_ordinary_launch(cudaStream_t stream);  // a grid barrier without cooperation
void grid_sync_after_block_exit(cudaStream_t stream);    // block 1 returns before the barrier
// chained_scale, but thread 3 of each block returns before UNETCU_GRID_DEPENDENCY_SYNC.
void chained_missing_sync(int* out, const int* in, int n, cudaStream_t stream);
void deadlock(cudaStream_t stream);               // a warp shuffle against a __syncthreads
void early_exit_before_barrier(cudaStream_t stream);
void divergent_barrier(cudaStream_t stream);
void out_of_bounds_write(float* data, int n, cudaStream_t stream);  // writes data[n]
void shuffle_outside_own_mask(cudaStream_t stream);  // lane 5 passes a mask without lane 5

// One warp: lanes 0..15 shuffle with mask 0x0000ffff from lane+16, which is not in the mask;
// out[lane] receives the (poisoned) value for lanes < 16.
void poisoned_shuffle(float* out, cudaStream_t stream);

// Launches with an arbitrary configuration (for the launch checks).
void launch_config(dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream);

// common.cuh's map_rows (or, with last_first, map_rows_last_first) over a [rows][cols] grid of
// elements: thread_of[row * cols + col] = the global index of the thread that visited the
// element, visit_of[...] = how many elements that thread had visited before it.
void map_rows_visits(int* thread_of, int* visit_of, int64_t rows, int cols, bool last_first,
                     cudaStream_t stream);

// One launch of blocks x threads doing nothing but writing out[i] = i; the speed baseline.
void touch(int* out, int blocks, int threads, cudaStream_t stream);
// The same launch with `barriers` __syncthreads per thread.
void touch_with_barriers(int* out, int blocks, int threads, int barriers, cudaStream_t stream);

}  // namespace simt_test
