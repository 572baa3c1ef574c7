// kernels/cuda/conv_narrow.cu: convolutions with one output channel at stride 1, which is the
// segmentation head (3x3, 16 -> 1 at full resolution).
//
// Why hand-written: cuDNN's NHWC kernels tile the implicit GEMM over output channels, so at
// k = 1 almost all of each tile is idle. On an H200 at batch 16, 128x128 (bench/RESULTS.md) the
// head took 0.164 ms forward, 0.061 backward-data and 0.156 backward-filter through cuDNN, for
// 37.7 M multiply-adds each; every direction is bound by moving x or dx (16.8 MB) once, which
// the card does in about 10 us.
//
//   forward          one thread per output pixel: the taps' channel vectors (float4 when
//                    c % 4 == 0), a float sum in tap-then-channel order, the bias added last
//                    (as the cuDNN path adds it after the convolution);
//   backward-data    map_rows over input pixels x channel groups: a thread keeps its channel
//                    group's filter taps in registers (at most kMaxTaps of them) and gathers
//                    the dy values its pixel fed;
//   backward-filter  dwt[r][s][c] = sum over output pixels of dy * x at the tap: stage 1 gives
//                    each block a contiguous run of output pixels and each thread one filter
//                    element (threads of a warp read adjacent taps' channels: contiguous x),
//                    summing in double (four interleaved sums), the pixel index stepped
//                    without divisions; stage 2 is
//                    common.cuh's fixed-order reduce over the blocks' partials. No atomics, so
//                    the result does not depend on scheduling.
#include "kernels/conv.h"

#include "kernels/cuda/common.cuh"

namespace unetcu::cuda {
namespace {

using detail::load_vec;
using detail::store_vec;
using detail::Vec;

// Filter taps a backward-data thread holds in registers: 3x3 is what the network needs.
constexpr int kMaxTaps = 9;
// Output pixels a backward-filter block sums at least: fewer blocks, fewer partials, for small
// images; large ones get detail::kReduceBlocks blocks.
constexpr int64_t kMinPixelsPerBlock = 64;

struct PixelIndex {
  int n, y, x;
};
__device__ inline PixelIndex split_pixel(int64_t row, int height, int width) {
  const int64_t t = row / width;
  return PixelIndex{int(t / height), int(t % height), int(row % width)};
}

template <int V>
struct NarrowForward {
  float* y;
  const float* x;
  const float* wt;
  const float* bias;
  ConvShape sh;
  __device__ const NarrowForward& column(int) const { return *this; }
  __device__ void operator()(int64_t row) const {
    const PixelIndex o = split_pixel(row, sh.p, sh.q);
    const int groups = sh.c / V;
    float acc = 0.0f;
    for (int r = 0; r < sh.r; ++r) {
      const int iy = o.y + r - sh.pad;
      if (iy < 0 || iy >= sh.h) continue;
      for (int s = 0; s < sh.s; ++s) {
        const int ix = o.x + s - sh.pad;
        if (ix < 0 || ix >= sh.w) continue;
        const int64_t xg = ((int64_t(o.n) * sh.h + iy) * sh.w + ix) * groups;
        const int64_t wg = (int64_t(r) * sh.s + s) * groups;
        for (int g = 0; g < groups; ++g) {
          const Vec<float, V> xv = load_vec<V>(x, xg + g);
          const Vec<float, V> wv = load_vec<V>(wt, wg + g);
          for (int k = 0; k < V; ++k) acc = fmaf(xv.v[k], wv.v[k], acc);
        }
      }
    }
    y[row] = bias ? acc + bias[0] : acc;
  }
};

template <int V>
struct NarrowBackwardData {
  float* dx;
  const float* dy;
  const float* wt;
  ConvShape sh;
  bool accumulate;
  struct Column {
    float* dx;
    const float* dy;
    ConvShape sh;
    bool accumulate;
    int col, groups;
    Vec<float, V> w[kMaxTaps];
    __device__ void operator()(int64_t row) const {
      const PixelIndex i = split_pixel(row, sh.h, sh.w);
      Vec<float, V> acc{};
      // A fixed trip count keeps w[] in registers; taps beyond r*s are skipped.
      for (int t = 0; t < kMaxTaps; ++t) {
        if (t >= sh.r * sh.s) break;
        const int oy = i.y + sh.pad - t / sh.s;
        const int ox = i.x + sh.pad - t % sh.s;
        if (oy < 0 || oy >= sh.p || ox < 0 || ox >= sh.q) continue;
        const float g = dy[(int64_t(i.n) * sh.p + oy) * sh.q + ox];
        for (int k = 0; k < V; ++k) acc.v[k] = fmaf(g, w[t].v[k], acc.v[k]);
      }
      const int64_t at = row * groups + col;
      if (accumulate) {
        const Vec<float, V> old = load_vec<V>(dx, at);
        for (int k = 0; k < V; ++k) acc.v[k] += old.v[k];
      }
      store_vec<V>(dx, at, acc);
    }
  };
  __device__ Column column(int col) const {
    Column c{dx, dy, sh, accumulate, col, sh.c / V, {}};
    for (int t = 0; t < kMaxTaps; ++t)
      if (t < sh.r * sh.s) c.w[t] = load_vec<V>(wt, int64_t(t) * c.groups + col);
    return c;
  }
};

// Stage 1 of backward-filter: block b sums output pixels [b * chunk, (b + 1) * chunk) for every
// filter element (thread col, then col + blockDim.x, ...) and writes partials[col][b].
// Four pixels a trip go into four sums, added in a fixed order at the end: one sum made every
// load wait for the previous pixel's, and the kernel took 101 us on the H200 (Nsight Compute)
// for 17.8 MB. The pixel index steps and the bounds checks are selects, not branches, so the
// unrolled trip's four loads can all be in flight at once.
constexpr int kFilterSums = 4;

__global__ void __launch_bounds__(detail::kThreads)
    narrow_filter_partial_kernel(double* partials, const float* dy, const float* x, ConvShape sh,
                                 int64_t chunk) {
  const int64_t pixels = int64_t(sh.n) * sh.p * sh.q;
  const int64_t first = int64_t(blockIdx.x) * chunk;
  const int64_t last = first + chunk < pixels ? first + chunk : pixels;
  const int cols = sh.r * sh.s * sh.c;
  for (int col = int(threadIdx.x); col < cols; col += int(blockDim.x)) {
    const int ch = col % sh.c, tap = col / sh.c;
    const int dr = tap / sh.s - sh.pad, ds = tap % sh.s - sh.pad;
    double acc[kFilterSums] = {};
    if (first < last) {
      PixelIndex o = split_pixel(first, sh.p, sh.q);
      for (int64_t row = first; row < last; row += kFilterSums) {
#if defined(__CUDACC__)
#pragma unroll
#endif
        for (int u = 0; u < kFilterSums; ++u) {
          const int iy = o.y + dr, ix = o.x + ds;
          const bool in = row + u < last && iy >= 0 && iy < sh.h && ix >= 0 && ix < sh.w;
          const float g = in ? dy[row + u] : 0.0f;
          const float v = in ? x[((int64_t(o.n) * sh.h + iy) * sh.w + ix) * sh.c + ch] : 0.0f;
          acc[u] += double(g) * double(v);
          // Next output pixel in row-major order.
          const bool next_row = ++o.x == sh.q;
          o.x = next_row ? 0 : o.x;
          o.y += next_row ? 1 : 0;
          const bool next_image = o.y == sh.p;
          o.y = next_image ? 0 : o.y;
          o.n += next_image ? 1 : 0;
        }
      }
    }
    double total = acc[0];
    for (int u = 1; u < kFilterSums; ++u) total += acc[u];
    partials[int64_t(col) * gridDim.x + blockIdx.x] = total;
  }
}

struct FilterEpilogue {
  float* dwt;
  bool accumulate;
  __device__ void operator()(int, int col, const double (&sum)[1]) const {
    dwt[col] = float(accumulate ? double(dwt[col]) + sum[0] : sum[0]);
  }
};

// The stage-1 geometry: a function of the shape alone, so the summation order is fixed.
detail::RowTiling filter_tiling(const ConvShape& sh, int64_t* chunk) {
  const int64_t pixels = int64_t(sh.n) * sh.p * sh.q;
  int64_t blocks = (pixels + kMinPixelsPerBlock - 1) / kMinPixelsPerBlock;
  if (blocks > detail::kReduceBlocks) blocks = detail::kReduceBlocks;
  if (blocks < 1) blocks = 1;
  *chunk = (pixels + blocks - 1) / blocks;
  detail::RowTiling t;
  t.rows = pixels;
  t.cols = sh.r * sh.s * sh.c;
  t.row_blocks = int(blocks);
  return t;
}

int filter_threads(int cols) {
  const int warps = (cols + 31) / 32;
  return warps * 32 < detail::kThreads ? warps * 32 : detail::kThreads;
}

}  // namespace

bool conv2d_narrow_applies(const ConvShape& sh) {
  return sh.k == 1 && sh.stride == 1 && sh.r * sh.s <= kMaxTaps && sh.c > 0 && sh.p > 0 &&
         sh.q > 0 && sh.n > 0;
}

void conv2d_narrow_forward(float* y, const float* x, const float* wt, const float* bias,
                           const ConvShape& sh, cudaStream_t stream) {
  const int64_t rows = int64_t(sh.n) * sh.p * sh.q;
  if (sh.c % 4 == 0 && detail::all_vec4(x, wt)) {
    detail::map_rows(NarrowForward<4>{y, x, wt, bias, sh}, rows, 1, stream);
  } else {
    detail::map_rows(NarrowForward<1>{y, x, wt, bias, sh}, rows, 1, stream);
  }
}

void conv2d_narrow_backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                                 GradMode mode, cudaStream_t stream) {
  const int64_t rows = int64_t(sh.n) * sh.h * sh.w;
  const bool acc = mode == GradMode::accumulate;
  if (sh.c % 4 == 0 && detail::all_vec4(dx, wt)) {
    detail::map_rows(NarrowBackwardData<4>{dx, dy, wt, sh, acc}, rows, sh.c / 4, stream);
  } else {
    detail::map_rows(NarrowBackwardData<1>{dx, dy, wt, sh, acc}, rows, sh.c, stream);
  }
}

size_t conv2d_narrow_backward_filter_workspace_bytes(const ConvShape& sh) {
  int64_t chunk = 0;
  return filter_tiling(sh, &chunk).partial_count(1) * sizeof(double);
}

void conv2d_narrow_backward_filter(float* dwt, const float* dy, const float* x,
                                   const ConvShape& sh, GradMode mode, void* workspace,
                                   cudaStream_t stream) {
  int64_t chunk = 0;
  const detail::RowTiling t = filter_tiling(sh, &chunk);
  double* partials = static_cast<double*>(workspace);
  UNETCU_LAUNCH(narrow_filter_partial_kernel, t.row_blocks, filter_threads(t.cols), 0,
                stream)(partials, dy, x, sh, chunk);
  UNETCU_LAUNCH((detail::reduce_rows_final_kernel<1, FilterEpilogue>), dim3(t.cols, 1),
                t.finalize_threads(), 0, stream)(
      FilterEpilogue{dwt, mode == GradMode::accumulate}, partials, t);
}

}  // namespace unetcu::cuda
