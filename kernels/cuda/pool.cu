// kernels/cuda/pool.cu: MaxPool 3x3 / stride 2 / pad 1 over NHWC, forward with argmax and
// backward as a gather.
//
// Both run as map_rows (common.cuh): a thread owns one (pixel column, channel group) pair and
// walks image rows (two at a time), so its window columns are computed once; channel groups of
// 4 move as float4 when C % 4 == 0, and a warp's loads cover contiguous channel runs of
// neighbouring pixels. The forward reads each input about 1.9 times (overlapping windows),
// which the L1/L2 absorb; DRAM sees one read of x and one write of y and argmax.
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

// Forward: a thread owns one (output column, channel group) and takes output rows in pairs.
// The two windows of a pair share an input row, so the pair loads 5 input rows of 3 pixels, not
// 6 (a sixth fewer loads through L1/L2, which bound this kernel at 69% of the copy rate on the
// H200). Each output still compares its window's pixels in row-major order.
template <int V>
struct PoolForward {
  float* y;
  int32_t* argmax;
  const float* x;
  int h, w, p, q, groups;  // groups = c / V
  int pairs;               // output row pairs per image: (p + 1) / 2
  struct Column {
    float* y;
    int32_t* argmax;
    const float* x;
    int h, w, p, groups, pairs, col, group, iw0, iw1;
    int64_t row_len;  // q * groups
    __device__ void operator()(int64_t row) const {
      const int img = int(row / pairs), op_a = int(row % pairs) * 2, op_b = op_a + 1;
      const bool has_b = op_b < p;
      const int a0 = op_a * 2 - 1 < 0 ? 0 : op_a * 2 - 1;
      const int a1 = op_a * 2 + 2 < h ? op_a * 2 + 2 : h;
      const int b0 = op_b * 2 - 1;  // >= 1
      const int b1 = op_b * 2 + 2 < h ? op_b * 2 + 2 : h;
      Vec<float, V> best_a, best_b;
      Vec<int32_t, V> where_a, where_b;
      // -inf at the first in-image position, as PyTorch does: an all -inf window still
      // reports a valid index.
      for (int k = 0; k < V; ++k) {
        best_a.v[k] = best_b.v[k] = -INFINITY;
        where_a.v[k] = a0 * w + iw0;
        where_b.v[k] = b0 * w + iw0;
      }
      const int last = has_b ? b1 : a1;
      for (int ih = a0; ih < last; ++ih) {
        for (int iw = iw0; iw < iw1; ++iw) {
          const int32_t pos = ih * w + iw;
          const auto v = load_vec<V>(x, (int64_t(img) * h * w + pos) * groups + group);
          for (int k = 0; k < V; ++k) {
            // Strictly greater keeps the first maximum; a NaN wins, as in PyTorch.
            const bool nan = v.v[k] != v.v[k];
            if (ih < a1 && (v.v[k] > best_a.v[k] || nan)) {
              best_a.v[k] = v.v[k];
              where_a.v[k] = pos;
            }
            if (has_b && ih >= b0 && (v.v[k] > best_b.v[k] || nan)) {
              best_b.v[k] = v.v[k];
              where_b.v[k] = pos;
            }
          }
        }
      }
      const int64_t at = (int64_t(img) * p + op_a) * row_len + col;
      store_vec<V>(y, at, best_a);
      store_vec<V>(argmax, at, where_a);
      if (has_b) {
        store_vec<V>(y, at + row_len, best_b);
        store_vec<V>(argmax, at + row_len, where_b);
      }
    }
  };
  __device__ Column column(int col) const {
    const int oq = col / groups;
    const int iw0 = oq * 2 - 1 < 0 ? 0 : oq * 2 - 1;
    const int iw1 = oq * 2 + 2 < w ? oq * 2 + 2 : w;
    return Column{y, argmax, x, h, w, p, groups, pairs, col, col % groups, iw0, iw1,
                  int64_t(q) * groups};
  }
};

// Backward: a thread owns a 2x2 block of input pixels (rows 2k, 2k+1, columns 2j, 2j+1) of one
// channel group. Every window that covers the block is one of the four (k or k+1, j or j+1),
// so their dy and argmax are loaded once for four outputs, where one thread per pixel loaded
// 2.25 windows' on average for one (58% of the copy rate on the H200). Each pixel still adds
// its windows' terms in row-major window order, zeros included, as the reference does.
template <int V>
struct PoolBackward {
  float* dx;
  const float* dy;
  const int32_t* argmax;
  int h, w, p, q, groups;
  int row_pairs;  // (h + 1) / 2
  bool accumulate;
  struct Column {
    float* dx;
    const float* dy;
    const int32_t* argmax;
    int h, w, p, q, groups, row_pairs, group, j;
    bool accumulate;
    __device__ void operator()(int64_t row) const {
      const int img = int(row / row_pairs), k = int(row % row_pairs);
      // Window (k + a, j + b) exists when inside the output.
      Vec<float, V> g[2][2];
      Vec<int32_t, V> a_at[2][2];
      bool has[2][2];
      for (int a = 0; a < 2; ++a) {
        for (int b = 0; b < 2; ++b) {
          has[a][b] = k + a < p && j + b < q;
          if (has[a][b]) {
            const int64_t o = ((int64_t(img) * p + k + a) * q + j + b) * groups + group;
            g[a][b] = load_vec<V>(dy, o);
            a_at[a][b] = load_vec<V>(argmax, o);
          }
        }
      }
      for (int di = 0; di < 2; ++di) {
        const int ih = 2 * k + di;
        if (ih >= h) break;
        for (int dj = 0; dj < 2; ++dj) {
          const int iw = 2 * j + dj;
          if (iw >= w) break;
          const int32_t pos = ih * w + iw;
          const int64_t at = ((int64_t(img) * h + ih) * w + iw) * groups + group;
          Vec<float, V> acc;
          if (accumulate) {
            acc = load_vec<V>(dx, at);
          } else {
            for (int v = 0; v < V; ++v) acc.v[v] = 0.0f;
          }
          // An even row (column) lies in window k (j) alone, an odd one in k and k + 1.
          for (int a = 0; a <= di; ++a) {
            for (int b = 0; b <= dj; ++b) {
              if (!has[a][b]) continue;
              for (int v = 0; v < V; ++v)
                acc.v[v] += a_at[a][b].v[v] == pos ? g[a][b].v[v] : 0.0f;
            }
          }
          store_vec<V>(dx, at, acc);
        }
      }
    }
  };
  __device__ Column column(int col) const {
    return Column{dx, dy, argmax, h, w, p, q, groups, row_pairs, col % groups, col / groups,
                  accumulate};
  }
};

}  // namespace

void maxpool_forward(float* y, int32_t* argmax, const float* x, const MaxPoolShape& sh,
                     cudaStream_t stream) {
  const int pairs = (sh.p + 1) / 2;
  const int64_t rows = int64_t(sh.n) * pairs;
  if (sh.c % 4 == 0 && detail::all_vec4(y, x, argmax)) {
    const int groups = sh.c / 4;
    detail::map_rows(PoolForward<4>{y, argmax, x, sh.h, sh.w, sh.p, sh.q, groups, pairs}, rows,
                     sh.q * groups, stream);
  } else {
    detail::map_rows(PoolForward<1>{y, argmax, x, sh.h, sh.w, sh.p, sh.q, sh.c, pairs}, rows,
                     sh.q * sh.c, stream);
  }
}

void maxpool_backward(float* dx, const float* dy, const int32_t* argmax, const MaxPoolShape& sh,
                      GradMode mode, cudaStream_t stream) {
  const int row_pairs = (sh.h + 1) / 2, col_pairs = (sh.w + 1) / 2;
  const int64_t rows = int64_t(sh.n) * row_pairs;
  const bool acc = mode == GradMode::accumulate;
  if (sh.c % 4 == 0 && detail::all_vec4(dx, dy, argmax)) {
    const int groups = sh.c / 4;
    detail::map_rows(PoolBackward<4>{dx, dy, argmax, sh.h, sh.w, sh.p, sh.q, groups, row_pairs,
                                     acc},
                     rows, col_pairs * groups, stream);
  } else {
    detail::map_rows(PoolBackward<1>{dx, dy, argmax, sh.h, sh.w, sh.p, sh.q, sh.c, row_pairs,
                                     acc},
                     rows, col_pairs * sh.c, stream);
  }
}

}  // namespace unetcu::cuda
