// kernels/cuda/concat.cu: channel concatenation of two NHWC tensors and its split.
//
// Both directions are the same strided copy: `width` channels per row from a tensor with
// `src_c` channels (starting at src_offset) into one with `dst_c` channels (at dst_offset),
// overwriting or adding. map_rows (common.cuh) gives each thread a fixed channel group and
// walks rows, so a warp moves contiguous row segments; float4 when every width and offset is a
// multiple of 4 (the decoder's are). Forward and backward each run one copy per input, so the
// total traffic is one read and one write of every element.
#include "kernels/concat.h"

#include "kernels/cuda/common.cuh"

namespace unetcu::cuda {
namespace {

using detail::load_vec;
using detail::store_vec;

template <int V>
struct SliceCopy {
  float* dst;
  const float* src;
  int64_t dst_row, src_row;  // row lengths in V-groups
  int dst_offset, src_offset;
  bool accumulate;
  struct Column {
    float* dst;
    const float* src;
    int64_t dst_row, src_row;
    int dst_col, src_col;
    bool accumulate;
    __device__ void operator()(int64_t row) const {
      auto v = load_vec<V>(src, row * src_row + src_col);
      const int64_t at = row * dst_row + dst_col;
      if (accumulate) {
        const auto old = load_vec<V>(dst, at);
        for (int k = 0; k < V; ++k) v.v[k] = old.v[k] + v.v[k];
      }
      store_vec<V>(dst, at, v);
    }
  };
  __device__ Column column(int col) const {
    return Column{dst, src, dst_row, src_row, dst_offset + col, src_offset + col, accumulate};
  }
};

void slice_copy(float* dst, int dst_c, int dst_offset, const float* src, int src_c,
                int src_offset, int width, int64_t rows, GradMode mode, cudaStream_t stream) {
  const bool acc = mode == GradMode::accumulate;
  if (dst_c % 4 == 0 && src_c % 4 == 0 && dst_offset % 4 == 0 && src_offset % 4 == 0 &&
      width % 4 == 0 && detail::all_vec4(dst, src)) {
    detail::map_rows(SliceCopy<4>{dst, src, dst_c / 4, src_c / 4, dst_offset / 4, src_offset / 4,
                                  acc},
                     rows, width / 4, stream);
  } else {
    detail::map_rows(SliceCopy<1>{dst, src, dst_c, src_c, dst_offset, src_offset, acc}, rows,
                     width, stream);
  }
}

}  // namespace

void concat_forward(float* y, const float* a, const float* b, const ConcatShape& sh,
                    cudaStream_t stream) {
  const int cy = sh.ca + sh.cb;
  if (a) slice_copy(y, cy, 0, a, sh.ca, 0, sh.ca, sh.rows, GradMode::overwrite, stream);
  slice_copy(y, cy, sh.ca, b, sh.cb, 0, sh.cb, sh.rows, GradMode::overwrite, stream);
}

void concat_backward(float* da, float* db, const float* dy, const ConcatShape& sh,
                     GradMode mode_a, GradMode mode_b, cudaStream_t stream) {
  const int cy = sh.ca + sh.cb;
  if (da) slice_copy(da, sh.ca, 0, dy, cy, 0, sh.ca, sh.rows, mode_a, stream);
  if (db) slice_copy(db, sh.cb, 0, dy, cy, sh.ca, sh.cb, sh.rows, mode_b, stream);
}

}  // namespace unetcu::cuda
