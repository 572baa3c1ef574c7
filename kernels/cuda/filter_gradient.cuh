// kernels/cuda/filter_gradient.cuh: what the hand-written weight gradients share
// (conv_narrow.cu's head and direct kernels, conv_mma.cu's tensor-core one): how the segmented
// ones spread their pixels over stage-1 blocks, and stage 2, which adds the blocks' double
// partials (one per filter element each) in a fixed order.
#pragma once

#include "kernels/conv.h"
#include "kernels/cuda/common.cuh"

namespace unetcu::cuda::detail {

struct FilterEpilogue {
  float* dwt;
  bool accumulate;
  __device__ void operator()(int, int col, const double (&sum)[1]) const {
    dwt[col] = float(accumulate ? double(dwt[col]) + sum[0] : sum[0]);
  }
};

// The partials seen as one column per filter element (KRSC order), `blocks` partials each
// (element e's partial of block b at partials[e * blocks + b]), added in common.cuh's fixed
// order into dwt, rounded to float once.
inline void finish_filter_gradient(float* dwt, const double* partials, const ConvShape& sh,
                                   int blocks, GradMode mode, cudaStream_t stream) {
  RowTiling t;
  t.rows = int64_t(sh.n) * sh.p * sh.q;
  t.cols = int(sh.w_size());
  t.row_blocks = blocks;
  UNETCU_LAUNCH_CHAINED((reduce_rows_final_kernel<1, FilterEpilogue>), dim3(t.cols, 1),
                        t.finalize_threads(), 0, stream)(
      FilterEpilogue{dwt, mode == GradMode::accumulate}, partials, t);
}

// Stage 1's `segments` (runs of output pixels) spread over blocks in order: at most `cap` blocks
// (at least one), each of at least `min_per_block` segments where there are enough, none empty.
struct SegmentSplit {
  int64_t per_block = 1;
  int blocks = 1;
};
inline SegmentSplit split_segments(int64_t segments, int64_t cap, int64_t min_per_block) {
  if (cap < 1) cap = 1;
  int64_t blocks = (segments + min_per_block - 1) / min_per_block;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  SegmentSplit split;
  split.per_block = (segments + blocks - 1) / blocks;
  split.blocks = int((segments + split.per_block - 1) / split.per_block);
  return split;
}

}  // namespace unetcu::cuda::detail
