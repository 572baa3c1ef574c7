// kernels/cuda/conv_bias.cu: the bias part of a convolution (only the segmentation head has
// one): adding it after the cuDNN convolution, and its gradient.
//
// The add is map_rows (common.cuh): each thread owns one output channel group, loads its bias
// once and walks rows, float4 when k % 4 == 0; for the 1-channel head a warp covers 32
// consecutive pixels. The gradient dbias[k] = sum over n, p, q of dy is reduce_rows: fixed-order
// double partials in the workspace, then one block per channel adds them, so it is
// deterministic.
#include "kernels/conv.h"

#include "kernels/cuda/common.cuh"

namespace unetcu::cuda {
namespace {

using detail::load_vec;
using detail::store_vec;
using detail::Vec;

template <int V>
struct BiasAdd {
  float* y;
  const float* bias;
  int64_t groups;  // k / V
  struct Column {
    float* y;
    int64_t groups;
    int col;
    Vec<float, V> b;
    __device__ void operator()(int64_t row) const {
      const int64_t i = row * groups + col;
      auto v = load_vec<V>(y, i);
      for (int k = 0; k < V; ++k) v.v[k] += b.v[k];
      store_vec<V>(y, i, v);
    }
  };
  __device__ Column column(int col) const {
    Column c{y, groups, col, {}};
    for (int k = 0; k < V; ++k) c.b.v[k] = bias[col * V + k];
    return c;
  }
};

struct BiasGradSrc {
  const float* dy;
  int k;
  struct Column {
    const float* dy;
    int64_t k;
    int col;
    __device__ void add(double (&acc)[1], int64_t row) const { acc[0] += double(dy[row * k + col]); }
  };
  __device__ Column column(int, int col) const { return Column{dy, k, col}; }
};

struct BiasGradEpilogue {
  float* dbias;
  bool accumulate;
  __device__ void operator()(int, int ch, const double (&sum)[1]) const {
    dbias[ch] = float(accumulate ? double(dbias[ch]) + sum[0] : sum[0]);
  }
};

detail::RowTiling bias_tiling(const ConvShape& sh) {
  return detail::reduce_tiling(int64_t(sh.n) * sh.p * sh.q, sh.k);
}

}  // namespace

void conv2d_add_bias(float* y, const float* bias, const ConvShape& sh, cudaStream_t stream) {
  const int64_t rows = int64_t(sh.n) * sh.p * sh.q;
  if (sh.k % 4 == 0 && detail::all_vec4(y)) {
    detail::map_rows(BiasAdd<4>{y, bias, sh.k / 4}, rows, sh.k / 4, stream);
  } else {
    detail::map_rows(BiasAdd<1>{y, bias, sh.k}, rows, sh.k, stream);
  }
}

size_t conv2d_backward_bias_workspace_bytes(const ConvShape& sh) {
  return bias_tiling(sh).partial_count(1) * sizeof(double);
}

void conv2d_backward_bias(float* dbias, const float* dy, const ConvShape& sh, GradMode mode,
                          void* workspace, cudaStream_t stream) {
  if (sh.k <= 0) return;
  detail::reduce_rows<1>(BiasGradSrc{dy, sh.k},
                         BiasGradEpilogue{dbias, mode == GradMode::accumulate}, bias_tiling(sh),
                         static_cast<double*>(workspace), stream);
}

}  // namespace unetcu::cuda
