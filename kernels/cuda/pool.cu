// kernels/cuda/pool.cu: MaxPool 3x3 / stride 2 / pad 1 over NHWC, forward with argmax and
// backward as a gather.
//
// Both run as map_rows (common.cuh): a thread owns one (pixel column, channel group) pair and
// walks image rows, so its window columns are computed once; channel groups of 4 move as
// float4 when C % 4 == 0, and a warp's loads cover contiguous channel runs of neighbouring
// pixels. The forward reads each input about 2.25 times (overlapping windows), which the L1/L2
// absorb; DRAM sees one read of x and one write of y and argmax.
//
// The backward is a gather, not a scatter: each input element sums, in row-major window order,
// dy of the (at most 2x2) windows that cover it and chose it. Every dx element is written by
// exactly one thread, so no atomics and the same order as the CPU reference.
#include "kernels/pool.h"

#include <cmath>

#include "kernels/cuda/common.cuh"

namespace unetcu::cuda {
namespace {

using detail::load_vec;
using detail::store_vec;
using detail::Vec;

template <int V>
struct PoolForward {
  float* y;
  int32_t* argmax;
  const float* x;
  int h, w, p, q, groups;  // groups = c / V
  struct Column {
    float* y;
    int32_t* argmax;
    const float* x;
    int h, w, p, groups, col, group, iw0, iw1;
    int64_t row_len;  // q * groups
    __device__ void operator()(int64_t row) const {
      const int img = int(row / p), op = int(row % p);
      const int ih0 = op * 2 - 1 < 0 ? 0 : op * 2 - 1;
      const int ih1 = op * 2 + 2 < h ? op * 2 + 2 : h;
      Vec<float, V> best;
      Vec<int32_t, V> where;
      // -inf at the first in-image position, as PyTorch does: an all -inf window still
      // reports a valid index.
      for (int k = 0; k < V; ++k) {
        best.v[k] = -INFINITY;
        where.v[k] = ih0 * w + iw0;
      }
      for (int ih = ih0; ih < ih1; ++ih) {
        for (int iw = iw0; iw < iw1; ++iw) {
          const int32_t pos = ih * w + iw;
          const auto v = load_vec<V>(x, (int64_t(img) * h * w + pos) * groups + group);
          for (int k = 0; k < V; ++k) {
            // Strictly greater keeps the first maximum; a NaN wins, as in PyTorch.
            const bool take = v.v[k] > best.v[k] || v.v[k] != v.v[k];
            best.v[k] = take ? v.v[k] : best.v[k];
            where.v[k] = take ? pos : where.v[k];
          }
        }
      }
      store_vec<V>(y, row * row_len + col, best);
      store_vec<V>(argmax, row * row_len + col, where);
    }
  };
  __device__ Column column(int col) const {
    const int oq = col / groups;
    const int iw0 = oq * 2 - 1 < 0 ? 0 : oq * 2 - 1;
    const int iw1 = oq * 2 + 2 < w ? oq * 2 + 2 : w;
    return Column{y, argmax, x, h, w, p, groups, col, col % groups, iw0, iw1,
                  int64_t(q) * groups};
  }
};

template <int V>
struct PoolBackward {
  float* dx;
  const float* dy;
  const int32_t* argmax;
  int h, w, p, q, groups;
  bool accumulate;
  struct Column {
    float* dx;
    const float* dy;
    const int32_t* argmax;
    int h, w, p, q, groups, col, group, iw, oq0, oq1;
    bool accumulate;
    __device__ void operator()(int64_t row) const {
      const int img = int(row / h), ih = int(row % h);
      // Windows op cover input rows 2op-1 .. 2op+1.
      const int op0 = ih / 2;
      const int op1 = (ih + 1) / 2 < p - 1 ? (ih + 1) / 2 : p - 1;
      const int32_t pos = ih * w + iw;
      const int64_t at = row * int64_t(w) * groups + col;
      Vec<float, V> acc;
      if (accumulate) {
        acc = load_vec<V>(dx, at);
      } else {
        for (int k = 0; k < V; ++k) acc.v[k] = 0.0f;
      }
      for (int op = op0; op <= op1; ++op) {
        for (int oq = oq0; oq <= oq1; ++oq) {
          const int64_t o = ((int64_t(img) * p + op) * q + oq) * groups + group;
          const auto g = load_vec<V>(dy, o);
          const auto a = load_vec<V>(argmax, o);
          for (int k = 0; k < V; ++k) acc.v[k] += a.v[k] == pos ? g.v[k] : 0.0f;
        }
      }
      store_vec<V>(dx, at, acc);
    }
  };
  __device__ Column column(int col) const {
    const int iw = col / groups;
    const int oq1 = (iw + 1) / 2 < q - 1 ? (iw + 1) / 2 : q - 1;
    return Column{dx, dy, argmax, h, w, p, q, groups, col, col % groups, iw, iw / 2, oq1,
                  accumulate};
  }
};

}  // namespace

void maxpool_forward(float* y, int32_t* argmax, const float* x, const MaxPoolShape& sh,
                     cudaStream_t stream) {
  const int64_t rows = int64_t(sh.n) * sh.p;
  if (sh.c % 4 == 0 && detail::all_vec4(y, x, argmax)) {
    const int groups = sh.c / 4;
    detail::map_rows(PoolForward<4>{y, argmax, x, sh.h, sh.w, sh.p, sh.q, groups}, rows,
                     sh.q * groups, stream);
  } else {
    detail::map_rows(PoolForward<1>{y, argmax, x, sh.h, sh.w, sh.p, sh.q, sh.c}, rows,
                     sh.q * sh.c, stream);
  }
}

void maxpool_backward(float* dx, const float* dy, const int32_t* argmax, const MaxPoolShape& sh,
                      GradMode mode, cudaStream_t stream) {
  const int64_t rows = int64_t(sh.n) * sh.h;
  const bool acc = mode == GradMode::accumulate;
  if (sh.c % 4 == 0 && detail::all_vec4(dx, dy, argmax)) {
    const int groups = sh.c / 4;
    detail::map_rows(PoolBackward<4>{dx, dy, argmax, sh.h, sh.w, sh.p, sh.q, groups, acc}, rows,
                     sh.w * groups, stream);
  } else {
    detail::map_rows(PoolBackward<1>{dx, dy, argmax, sh.h, sh.w, sh.p, sh.q, sh.c, acc}, rows,
                     sh.w * sh.c, stream);
  }
}

}  // namespace unetcu::cuda
