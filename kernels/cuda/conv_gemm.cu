// kernels/cuda/conv_gemm.cu: the gathers of the convolutions as a GEMM (kernels/conv.h:
// conv2d_forward_gemm_dims, conv2d_backward_data_gemm_dims), around the GEMM (cuBLAS on a GPU,
// kernels/cudnn/gemm_cublas.h; BLAS under the emulator) on the column matrix col, one row of
// r*s*c values per output pixel:
//   im2col  (forward, before the GEMM) writes col from x: each entry once, 0 in the padding.
//           map_rows (common.cuh) over output rows: a thread owns one (output pixel column,
//           tap, channel group) and walks down the rows, so its input column is fixed.
//   col2im  (backward-data, after it) adds, for each input element, the col entries of the
//           (output pixel, tap) pairs that read it. map_rows over input rows: a thread owns one
//           (pixel column, channel group) and walks down the rows, so its horizontal taps are
//           worked out once and the vertical ones once a row (TapRange: no division inside
//           the tap loops). Each element is written once with its sum (no atomics): the
//           result does not depend on the schedule.
// Channel groups of 4 move as float4 when c % 4 == 0 and the pointers allow. Traffic: col is
// written or read once (r*s*c floats per output pixel: about r*s / stride^2 per element of x);
// at the shapes they apply to (col <= 40 MiB) the GEMM's side of col mostly stays in L2.
#include "kernels/conv.h"

#include "kernels/cuda/common.cuh"

namespace unetcu::cuda {
namespace {

using detail::load_vec;
using detail::store_vec;
using detail::Vec;

// The taps of one input coordinate along one axis: with t = coordinate + pad, filter index f
// reads it from output index (t - f) / stride when that divides and is in range; the valid f
// are `first`, first + stride, ... below `end`, their outputs `out`, out - 1, ... Worked out
// once per row or column, so the tap loops below divide nothing.
struct TapRange {
  int first, end, out;
};
__device__ inline TapRange taps(int coordinate, int pad, int stride, int filter, int outputs) {
  const int t = coordinate + pad;
  int first = t - (outputs - 1) * stride;
  if (first < 0) first = 0;
  first += (t - first) % stride;  // the first f >= it with t - f a multiple of stride
  const int end = filter < t + 1 ? filter : t + 1;
  return TapRange{first, end, (t - first) / stride};
}

template <int V>
struct Im2Col {
  float* col;
  const float* x;
  ConvShape sh;
  int groups;  // channel groups of V per pixel: c / V
  struct Column {
    float* col;
    const float* x;
    ConvShape sh;
    int groups, group, r, ix;  // this thread's channel group, filter row, input column
    int64_t tap;               // its offset in a col row, in groups
    __device__ void operator()(int64_t row) const {
      const int p = int(row % sh.p);
      const int64_t image = row / sh.p;
      const int iy = p * sh.stride - sh.pad + r;
      Vec<float, V> v;
      if (iy >= 0 && iy < sh.h && ix >= 0 && ix < sh.w) {
        v = load_vec<V>(x, ((image * sh.h + iy) * sh.w + ix) * groups + group);
      } else {
        for (int k = 0; k < V; ++k) v.v[k] = 0.0f;
      }
      store_vec<V>(col, row * sh.q * int64_t(sh.r) * sh.s * groups + tap, v);
    }
  };
  // Column c = (q * r*s + tap) * groups + group: consecutive threads read consecutive channel
  // groups of one input pixel and write them next to each other.
  __device__ Column column(int c) const {
    const int group = c % groups;
    const int tap = (c / groups) % (sh.r * sh.s);
    const int q = c / groups / (sh.r * sh.s);
    const int r = tap / sh.s, s = tap % sh.s;
    return Column{col, x, sh, groups, group, r, q * sh.stride - sh.pad + s,
                  (int64_t(q) * sh.r * sh.s + tap) * groups + group};
  }
};

template <int V>
struct Col2Im {
  float* dx;
  const float* col;
  ConvShape sh;
  int groups;  // channel groups of V per pixel: c / V
  bool accumulate;
  struct Column {
    float* dx;
    const float* col;
    ConvShape sh;
    int groups, group, x;  // this thread's channel group and input pixel column
    bool accumulate;
    TapRange across;       // the filter columns that read column x
    __device__ void operator()(int64_t row) const {
      const int64_t image = row / sh.h;
      const TapRange down = taps(int(row % sh.h), sh.pad, sh.stride, sh.r, sh.p);
      const int64_t tap_row = int64_t(sh.r) * sh.s * groups;  // one output pixel's col row
      Vec<float, V> sum;
      for (int k = 0; k < V; ++k) sum.v[k] = 0.0f;
      for (int r = down.first, p = down.out; r < down.end; r += sh.stride, --p) {
        const int64_t out_row = (image * sh.p + p) * sh.q;
        for (int s = across.first, q = across.out; s < across.end; s += sh.stride, --q) {
          const auto v =
              load_vec<V>(col, (out_row + q) * tap_row + (int64_t(r) * sh.s + s) * groups + group);
          for (int k = 0; k < V; ++k) sum.v[k] += v.v[k];
        }
      }
      const int64_t at = (row * sh.w + x) * groups + group;
      if (accumulate) {
        const auto old = load_vec<V>(dx, at);
        for (int k = 0; k < V; ++k) sum.v[k] = old.v[k] + sum.v[k];
      }
      store_vec<V>(dx, at, sum);
    }
  };
  __device__ Column column(int c) const {
    const int x = c / groups;
    return Column{dx, col, sh, groups, c % groups, x, accumulate,
                  taps(x, sh.pad, sh.stride, sh.s, sh.q)};
  }
};

}  // namespace

bool conv2d_gemm_applies(const ConvShape& sh) {
  if (sh.n <= 0 || sh.p <= 0 || sh.q <= 0 || sh.c <= 0 || sh.k <= 0 || sh.stride <= 0)
    return false;
  return conv2d_col_bytes(sh) <= kConvGemmMaxColBytes;
}

void conv2d_im2col(float* col, const float* x, const ConvShape& sh, cudaStream_t stream) {
  const int64_t rows = int64_t(sh.n) * sh.p;
  const int taps = sh.r * sh.s;
  if (sh.c % 4 == 0 && detail::all_vec4(col, x)) {
    detail::map_rows(Im2Col<4>{col, x, sh, sh.c / 4}, rows, sh.q * taps * (sh.c / 4), stream);
  } else {
    detail::map_rows(Im2Col<1>{col, x, sh, sh.c}, rows, sh.q * taps * sh.c, stream);
  }
}

void conv2d_col2im(float* dx, const float* col, const ConvShape& sh, GradMode mode,
                   cudaStream_t stream) {
  const int64_t rows = int64_t(sh.n) * sh.h;
  const bool acc = mode == GradMode::accumulate;
  if (sh.c % 4 == 0 && detail::all_vec4(dx, col)) {
    detail::map_rows(Col2Im<4>{dx, col, sh, sh.c / 4, acc}, rows, sh.w * (sh.c / 4), stream);
  } else {
    detail::map_rows(Col2Im<1>{dx, col, sh, sh.c, acc}, rows, sh.w * sh.c, stream);
  }
}

}  // namespace unetcu::cuda
