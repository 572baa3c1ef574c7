// kernels/cuda/conv_narrow.cu: convolutions with few output channels at stride 1: the
// segmentation head (3x3, 16 -> 1 at full resolution), and the "direct" kernels for the
// decoder's full-resolution convolutions (3x3, 32 -> 16 and 16 -> 16 at 128x128; 32 -> 32 at
// 64x64), each in every direction.
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
//                    each block a contiguous run of output pixels and each thread V channels
//                    of every tap (r*s*V double sums in registers: one dy and r*s x vectors
//                    per pixel), then a fixed lane tree per tap; stage 2 is common.cuh's
//                    fixed-order reduce over the blocks' partials. No atomics, so the result
//                    does not depend on scheduling.
//
// The direct weight gradient (k <= 32 output channels, "same" 3x3 or 1x1 filters) is the
// same two stages with a register tile and shared memory: a block stages a segment of output
// pixels (dy) and the input rows their taps read (x), and each thread, owning one filter row
// (s taps), 4 output channels and 4 input channels for one lane of the segment's pixels
// (16 s float sums), adds per pixel one dy vector times the s x vectors of a sliding window:
// two shared-memory loads for 16 s multiply-adds. The lanes' sums are added in a fixed order
// in double. Wide inputs are cut into 32-channel chunks, one per grid row.
// cuDNN's weight gradients at these shapes are GEMMs with only k = 16 or 32 rows and a
// 262,144-pixel reduction: on the H100 0.209 ms for 32 -> 16 at 128x128 (1.2 G multiply-adds,
// 12 TFLOP/s) and 0.098 for 16 -> 16, two to four times their data gradients. This kernel
// took 0.145 and 0.090 there, yet the step ran 1.3% slower with it serving (it runs beside
// the critical path and fills the SMs' registers), so the engine uses it only when forced
// (bench/RESULTS.md).
//
// The direct forward and backward-data (16 or 32 output channels of the direction, at most 64
// input channels) stage a block's filters in shared memory and give each thread 4 pixels x
// 16 output channels; backward-data is the forward convolution of dy with the filters
// transposed and turned around. All three run in fp32 on the CUDA cores, so they can lose to
// cuDNN's TF32 tensor cores where those have enough work: the engine times the forward and
// backward-data against cuDNN's choice per shape and direction (kernels/cudnn's Rival) and
// keeps the faster.
#include "kernels/conv.h"

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/fastest_path.h"
#include "kernels/cuda/filter_gradient.cuh"

namespace unetcu::cuda {
namespace {

using detail::finish_filter_gradient;
using detail::load_vec;
using detail::store_vec;
using detail::Vec;
using Float4 = Vec<float, 4>;  // a type without a comma, for UNETCU_STATIC_SHARED

// Filter taps a backward-data thread holds in registers: 3x3 is what the network needs.
constexpr int kMaxTaps = 9;
// How backward-filter stage 1 is cut (filter_tiling).
struct FilterTiling {
  int tile = 1, lanes = 1, blocks = 1;
  int64_t chunk = 1;
};

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

// Stage 1 of backward-filter. A thread owns V channels (one float4 when c % 4 == 0) of
// kFilterTaps taps (grid y: taps y * kFilterTaps onwards) and walks output pixels: per pixel one
// dy and one x vector per tap, kFilterTaps * V double multiply-adds, all into registers. Block
// (b, y) sums output pixels [b * chunk, (b + 1) * chunk), its `lanes` threads of a channel group
// taking every lanes-th pixel; the lanes' sums then go through reduce_lanes tap by tap, and
// partials[tap * c + channel][b] gets the block's total. (The first version gave each thread one
// filter element and one x load per pixel, index arithmetic and all: 101-107 us on the H200
// for this 17.8 MB, bound by instructions. The next took all nine taps a thread: 124 registers
// and its sums in a 288-byte stack frame, since the tap-by-tap reduction indexed them at run
// time: 56 us on the H100, two blocks an SM, on a weight-gradient stream.) Each element's sum
// is the same as with all taps a thread (the same pixels in the same order, the same tree).
constexpr int kFilterTaps = 3;

template <int V>
__global__ void __launch_bounds__(detail::kThreads)
    narrow_filter_partial_kernel(double* partials, const float* dy, const float* x, ConvShape sh,
                                 FilterTiling ft) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  const int64_t pixels = int64_t(sh.n) * sh.p * sh.q;
  const int64_t first = int64_t(blockIdx.x) * ft.chunk;
  const int64_t last = first + ft.chunk < pixels ? first + ft.chunk : pixels;
  const int groups = sh.c / V, taps = sh.r * sh.s;
  const int t0 = int(blockIdx.y) * kFilterTaps;  // the block's first tap
  const int lane = int(threadIdx.x) / ft.tile;
  int tap_dr[kFilterTaps], tap_ds[kFilterTaps];
  for (int i = 0; i < kFilterTaps; ++i) {
    const int t = t0 + i;
    tap_dr[i] = t < taps ? t / sh.s - sh.pad : 0;
    tap_ds[i] = t < taps ? t % sh.s - sh.pad : 0;
  }
  for (int g0 = 0; g0 < groups; g0 += ft.tile) {
    const int g = g0 + int(threadIdx.x) % ft.tile;
    double acc[kFilterTaps][V] = {};
    if (g < groups) {
      for (int64_t row = first + lane; row < last; row += ft.lanes) {
        const PixelIndex o = split_pixel(row, sh.p, sh.q);
        const double d = double(dy[row]);
        const int64_t image = int64_t(o.n) * sh.h;
#if defined(__CUDACC__)
#pragma unroll
#endif
        for (int i = 0; i < kFilterTaps; ++i) {
          const int iy = o.y + tap_dr[i], ix = o.x + tap_ds[i];
          if (t0 + i < taps && iy >= 0 && iy < sh.h && ix >= 0 && ix < sh.w) {
            const auto v = load_vec<V>(x, ((image + iy) * sh.w + ix) * groups + g);
            for (int k = 0; k < V; ++k) acc[i][k] += d * double(v.v[k]);
          }
        }
      }
    }
    // Unrolled, so acc stays in registers; t0 + i < taps is the same for the whole block, so
    // every thread meets every barrier.
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int i = 0; i < kFilterTaps; ++i) {
      if (t0 + i >= taps) break;
      double sums[V];
      for (int k = 0; k < V; ++k) sums[k] = acc[i][k];
      detail::reduce_lanes<double, V>(sums, ft.tile, ft.lanes);
      if (lane == 0 && g < groups)
        for (int k = 0; k < V; ++k)
          partials[(int64_t(t0 + i) * sh.c + g * V + k) * gridDim.x + blockIdx.x] = sums[k];
    }
  }
}

// The stage-1 geometry at vector width V: a function of the shape alone, so the summation
// order is fixed. A block is `tile` channel groups (all of them when they fit) by `lanes`
// pixel lanes; each lane takes at least kFilterRowsPerThread pixels, so the per-tap trees run
// once for many multiply-adds.
constexpr int64_t kFilterRowsPerThread = 16;

FilterTiling filter_tiling(const ConvShape& sh, int v) {
  FilterTiling ft;
  const int groups = sh.c / v;
  ft.tile = groups < detail::kThreads ? groups : detail::kThreads;
  ft.lanes = detail::kThreads / ft.tile;
  const int64_t pixels = int64_t(sh.n) * sh.p * sh.q;
  int64_t blocks = pixels / (int64_t(ft.lanes) * kFilterRowsPerThread);
  if (blocks > detail::kReduceBlocks) blocks = detail::kReduceBlocks;
  if (blocks < 1) blocks = 1;
  ft.blocks = int(blocks);
  ft.chunk = (pixels + blocks - 1) / blocks;
  return ft;
}


bool filter_vec4(const ConvShape& sh, const float* x) {
  return sh.c % 4 == 0 && (x == nullptr || detail::all_vec4(x));
}

// ---- the direct weight gradient ----

// The most output channels the direct weight gradient takes: beyond it cuDNN's GEMM tiles fill.
constexpr int kDirectMaxK = 32;
// A segment is at most this many consecutive output pixels of one image row: the unit a block
// stages in shared memory (their dy, and the r rows of x their taps read, halo included).
constexpr int kSegmentPixels = 64;
// Input channel groups (of 4) a block takes; wider inputs are cut into chunks (grid y), so the
// x tile is at most 3 x 66 x 32 floats (25 KB) next to the dy tile's 64 x 32 (8 KB).
constexpr int kBlockCGroups = 8;
// Threads a block has at most: pixel lanes x filter rows x output-channel groups x input-
// channel groups, the lanes as many as keep it within this (3 x 8 x 8 = 192 before lanes).
constexpr int kDirectThreads = 384;
constexpr int kDirectMaxLanes = 8;
// Stage-1 blocks at most (two per SM on an H100: 384 threads of at most 85 registers), each
// taking at least kMinSegments segments, and double partials at most (16 MB), so that the
// partials stay small next to the 17-50 MB the kernel reads.
constexpr int kDirectBlocks = 264;
constexpr int64_t kMinSegments = 4;
constexpr int64_t kDirectPartials = int64_t(2) << 20;

// How the direct weight gradient's stage 1 is cut, from the shape alone (so the summation
// order is fixed). Thread t of a block owns one filter row (its s taps), 4 output channels and
// 4 input channels, for one pixel lane: input-channel group fastest (t % cgroups), then
// output-channel group, filter row, lane. Block (x, y) takes input-channel groups
// [y cgroups, (y + 1) cgroups) and segments [x segs_per_block, (x + 1) segs_per_block) in
// order; a row of q pixels is segs_per_row segments of seg_len pixels (the last may be
// shorter), and lane l takes pixels [l sub, (l + 1) sub) of each segment.
struct DirectTiling {
  int kgroups = 1, cgroups = 1, cchunks = 1, owners = 1, lanes = 1;  // threads: lanes x owners
  int seg_len = 1, sub = 1, segs_per_row = 1, blocks = 1;
  int64_t segments = 1, segs_per_block = 1;
};

DirectTiling direct_tiling(const ConvShape& sh) {
  DirectTiling dt;
  dt.kgroups = sh.k / 4;
  const int cvecs = sh.c / 4;
  dt.cgroups = cvecs < kBlockCGroups ? cvecs : kBlockCGroups;
  dt.cchunks = (cvecs + dt.cgroups - 1) / dt.cgroups;
  dt.owners = sh.r * dt.kgroups * dt.cgroups;
  dt.lanes = kDirectThreads / dt.owners;
  if (dt.lanes > kDirectMaxLanes) dt.lanes = kDirectMaxLanes;
  dt.seg_len = sh.q < kSegmentPixels ? sh.q : kSegmentPixels;
  if (dt.lanes > dt.seg_len) dt.lanes = dt.seg_len;
  if (dt.lanes < 1) dt.lanes = 1;
  dt.sub = (dt.seg_len + dt.lanes - 1) / dt.lanes;
  dt.segs_per_row = (sh.q + dt.seg_len - 1) / dt.seg_len;
  dt.segments = int64_t(sh.n) * sh.p * dt.segs_per_row;
  int64_t cap = kDirectBlocks / dt.cchunks;
  const int64_t by_partials = kDirectPartials / sh.w_size();
  if (by_partials < cap) cap = by_partials;
  const detail::SegmentSplit split = detail::split_segments(dt.segments, cap, kMinSegments);
  dt.segs_per_block = split.per_block;
  dt.blocks = split.blocks;
  return dt;
}

// Stage 1 (see the file comment). Each segment is staged once for the whole block, zeros in
// the padding, so the product loop has no bounds checks and reads shared memory only. A
// thread walks its pixels keeping the last S x vectors of its filter row in registers (a
// sliding window: the x vector of tap s at pixel j is that of tap s + 1 at pixel j - 1), so
// per pixel it loads one x vector and one dy vector for 16 S multiply-adds. Loading from
// global memory in bulk keeps many loads in flight, where a thread that loaded its own
// operands pixel by pixel waited on each (0.33 ms against cuDNN's 0.209 for 32 -> 16 at
// 128x128 on the H100; staged, with a thread per tap and no window, 0.176; as here, 0.145).
template <int S>
__global__ void __launch_bounds__(kDirectThreads, 2)
    direct_filter_partial_kernel(double* partials, const float* __restrict__ dy,
                                 const float* __restrict__ x, ConvShape sh, DirectTiling dt) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  // [filter row][col][group]
  UNETCU_STATIC_SHARED(Float4, xs, [3][kSegmentPixels + 2][kBlockCGroups]);
  UNETCU_STATIC_SHARED(Float4, ds, [kSegmentPixels][kDirectMaxK / 4]);  // [pixel][k group]
  const int tid = int(threadIdx.x);
  const int owners = dt.owners;
  const int cgl = tid % dt.cgroups, kg = (tid / dt.cgroups) % dt.kgroups;
  const int tr = (tid / (dt.cgroups * dt.kgroups)) % sh.r, lane = tid / owners;
  const int cvecs = sh.c / 4, kvecs = sh.k / 4;
  const int cg0 = int(blockIdx.y) * dt.cgroups;
  const int cgb = cvecs - cg0 < dt.cgroups ? cvecs - cg0 : dt.cgroups;  // this chunk's groups
  const bool active = cgl < cgb;
  float acc[S][4][4];  // [tap in the row][output channel][input channel]
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int t = 0; t < S; ++t)
    for (int i = 0; i < 4; ++i)
      for (int m = 0; m < 4; ++m) acc[t][i][m] = 0.0f;

  const int64_t first = int64_t(blockIdx.x) * dt.segs_per_block;
  const int64_t last =
      first + dt.segs_per_block < dt.segments ? first + dt.segs_per_block : dt.segments;
  for (int64_t seg = first; seg < last; ++seg) {
    const int64_t row = seg / dt.segs_per_row;  // n * p + output row
    const int q0 = int(seg % dt.segs_per_row) * dt.seg_len;
    const int len = sh.q - q0 < dt.seg_len ? sh.q - q0 : dt.seg_len;
    const int64_t n = row / sh.p;
    const int y0 = int(row % sh.p) - sh.pad, x0 = q0 - sh.pad;  // the tile's first input pixel
    const int width = len + S - 1;
    for (int e = tid; e < sh.r * width * cgb; e += int(blockDim.x)) {
      const int g = e % cgb, j = (e / cgb) % width, rr = e / (cgb * width);
      const int h = y0 + rr, w = x0 + j;
      xs[rr][j][g] = h >= 0 && h < sh.h && w >= 0 && w < sh.w
                         ? load_vec<4>(x, ((n * sh.h + h) * sh.w + w) * cvecs + cg0 + g)
                         : Vec<float, 4>{};
    }
    for (int e = tid; e < len * kvecs; e += int(blockDim.x))
      ds[e / kvecs][e % kvecs] = load_vec<4>(dy, (row * sh.q + q0) * kvecs + e);
    __syncthreads();
    const int j0 = lane * dt.sub, j1 = j0 + dt.sub < len ? j0 + dt.sub : len;
    if (active && j0 < j1) {
      Vec<float, 4> win[S];  // win[t]: x at pixel j, tap t of the row
      for (int t = 0; t + 1 < S; ++t) win[t + 1] = xs[tr][j0 + t][cgl];
      for (int j = j0; j < j1; ++j) {
        for (int t = 0; t + 1 < S; ++t) win[t] = win[t + 1];
        win[S - 1] = xs[tr][j + S - 1][cgl];
        const Vec<float, 4> d = ds[j][kg];
#if defined(__CUDACC__)
#pragma unroll
#endif
        for (int t = 0; t < S; ++t)
          for (int i = 0; i < 4; ++i)
            for (int m = 0; m < 4; ++m) acc[t][i][m] = fmaf(d.v[i], win[t].v[m], acc[t][i][m]);
      }
    }
    __syncthreads();  // the next segment overwrites the tiles
  }

  // The lanes' float sums, one tap at a time through the x tile's memory (kDirectThreads x 16
  // floats fit in it): lane 0 of each owner adds the lanes in order, in double, and writes the
  // block's partials. `S` and the thread count are the same for the whole block, so every
  // thread meets every barrier.
  float* red = reinterpret_cast<float*>(xs);
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int t = 0; t < S; ++t) {
    for (int i = 0; i < 4; ++i)
      for (int m = 0; m < 4; ++m) red[tid * 16 + i * 4 + m] = acc[t][i][m];
    __syncthreads();
    if (lane == 0 && active) {
      const int tap = tr * S + t;
      for (int v = 0; v < 16; ++v) {
        double sum = 0.0;
        for (int l = 0; l < dt.lanes; ++l) sum += double(red[(l * owners + tid) * 16 + v]);
        const int k = kg * 4 + v / 4, c = (cg0 + cgl) * 4 + v % 4;
        const int64_t out = (int64_t(k) * sh.r * S + tap) * sh.c + c;
        partials[out * gridDim.x + blockIdx.x] = sum;
      }
    }
    __syncthreads();
  }
}

// ---- the direct forward and backward-data ----

// Output channels a direct convolution block computes (its register tile: kDirectOut sums
// for each of kDirectPixels pixels per thread), and the most input channels it takes (its
// filters sit in static shared memory: kDirectOut x 9 taps x 64 floats = 36 KB).
constexpr int kDirectOut = 16;
constexpr int kDirectPixels = 4;
constexpr int kDirectMaxIn = 64;

// out (+)= a "same" stride-1 convolution of `in` ([pixels][cin]) with few output channels
// ([pixels][cout]). Forward: in = x, out = y, the filters as given (wt[k][tap][c]).
// Backward-data (Flip): in = dy, out = dx, whose filters are the forward's transposed and
// turned around: w'[c][tap][k] = wt[k][taps - 1 - tap][c] (a "same" filter is centred, so
// the turned tap's shift is the original's negated).
//
// Block (x, y) takes output channels [16 y, 16 y + 16) of kThreads * kDirectPixels pixels:
// thread t the pixels x * kThreads * 4 + i * kThreads + t, so that a warp's loads of one
// channel vector are 32 consecutive pixels. Its filters are staged in shared memory once;
// every thread reads the same filter vector at the same time (a broadcast). Each output sums
// taps then input channels in order, in float: taps * cin fused multiply-adds.
template <bool Flip>
__global__ void __launch_bounds__(detail::kThreads)
    direct_conv_kernel(float* out, const float* __restrict__ in, const float* __restrict__ wt,
                       ConvShape sh, int cin, int cout, bool accumulate) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  // [o][tap][i/4]
  UNETCU_STATIC_SHARED(Float4, filters, [kDirectOut * kMaxTaps * (kDirectMaxIn / 4)]);
  const int taps = sh.r * sh.s, cvec = cin / 4;
  const int first_out = int(blockIdx.y) * kDirectOut;
  float* staged = reinterpret_cast<float*>(filters);
  for (int e = int(threadIdx.x); e < kDirectOut * taps * cin; e += int(blockDim.x)) {
    const int o = e / (taps * cin), t = (e / cin) % taps, i = e % cin;
    staged[e] = Flip ? wt[(int64_t(i) * taps + (taps - 1 - t)) * sh.c + first_out + o]
                     : wt[(int64_t(first_out + o) * taps + t) * sh.c + i];
  }
  __syncthreads();

  const int64_t pixels = int64_t(sh.n) * sh.p * sh.q;
  int64_t row[kDirectPixels];
  int py[kDirectPixels], px[kDirectPixels];
  for (int j = 0; j < kDirectPixels; ++j) {
    row[j] = (int64_t(blockIdx.x) * kDirectPixels + j) * blockDim.x + threadIdx.x;
    px[j] = int(row[j] % sh.q);
    py[j] = int((row[j] / sh.q) % sh.p);
  }
  float acc[kDirectPixels][kDirectOut];
  for (int j = 0; j < kDirectPixels; ++j)
    for (int o = 0; o < kDirectOut; ++o) acc[j][o] = 0.0f;
  for (int t = 0; t < taps; ++t) {
    const int dr = t / sh.s - sh.pad, ds = t % sh.s - sh.pad;
    bool ok[kDirectPixels];
    int64_t src[kDirectPixels];
    for (int j = 0; j < kDirectPixels; ++j) {
      ok[j] = row[j] < pixels && py[j] + dr >= 0 && py[j] + dr < sh.h && px[j] + ds >= 0 &&
              px[j] + ds < sh.w;
      src[j] = (row[j] + int64_t(dr) * sh.w + ds) * cvec;
    }
    for (int g = 0; g < cvec; ++g) {
      Vec<float, 4> v[kDirectPixels];
      for (int j = 0; j < kDirectPixels; ++j)
        v[j] = ok[j] ? load_vec<4>(in, src[j] + g) : Vec<float, 4>{};
#if defined(__CUDACC__)
#pragma unroll
#endif
      for (int o = 0; o < kDirectOut; ++o) {
        const Vec<float, 4> w = filters[(o * taps + t) * cvec + g];
        for (int j = 0; j < kDirectPixels; ++j)
          for (int m = 0; m < 4; ++m) acc[j][o] = fmaf(v[j].v[m], w.v[m], acc[j][o]);
      }
    }
  }
  const int ovec = cout / 4;
  for (int j = 0; j < kDirectPixels; ++j) {
    if (row[j] >= pixels) continue;
    for (int o4 = 0; o4 < kDirectOut / 4; ++o4) {
      const int64_t at = row[j] * ovec + first_out / 4 + o4;
      Vec<float, 4> r;
      for (int m = 0; m < 4; ++m) r.v[m] = acc[j][o4 * 4 + m];
      if (accumulate) {
        const Vec<float, 4> old = load_vec<4>(out, at);
        for (int m = 0; m < 4; ++m) r.v[m] += old.v[m];
      }
      store_vec<4>(out, at, r);
    }
  }
}

// The shapes the direct forward and backward-data take, by their input and output channels.
bool direct_conv_shape(const ConvShape& sh, int cin, int cout) {
  return sh.stride == 1 && sh.r == 2 * sh.pad + 1 && sh.s == sh.r && sh.r * sh.s <= kMaxTaps &&
         cout % kDirectOut == 0 && cout > 0 && cout <= kDirectMaxK && cin % 4 == 0 && cin > 0 &&
         cin <= kDirectMaxIn && sh.n > 0 && sh.h > 0 && sh.w > 0;
}

template <bool Flip>
void launch_direct_conv(float* out, const float* in, const float* wt, const ConvShape& sh,
                        int cin, int cout, bool accumulate, cudaStream_t stream) {
  const int64_t pixels = int64_t(sh.n) * sh.p * sh.q;
  const int64_t per_block = int64_t(detail::kThreads) * kDirectPixels;
  const dim3 grid(unsigned((pixels + per_block - 1) / per_block), unsigned(cout / kDirectOut));
  UNETCU_LAUNCH_CHAINED(direct_conv_kernel<Flip>, grid, detail::kThreads, 0, stream)(
      out, in, wt, sh, cin, cout, accumulate);
}

// ---- the head as row sweeps (path timing's alternative) ----------------------------------
//
// The forward above gives each thread one output pixel and its 3x3 window: every x vector is
// loaded by the nine pixels it feeds, at 64 bytes between a warp's neighbouring loads, and each
// thread splits its pixel index with 64-bit divisions. On the H200 the head took 28 us forward
// and as long backward-data under Nsight Compute, where moving x (or dx) once, 16.8 MB, takes
// about 6. The sweeps give a warp 32 neighbouring columns of a row chunk and walk down its
// rows: each lane loads its own pixel once a row (the warp's 32 pixels contiguous), the
// horizontal taps come from the neighbouring lanes by shuffles, the vertical ones from the
// rows the lane keeps (three accumulators forward, three rows of dy backward). The filter sits
// in shared memory, read as broadcasts. Lanes 0 and 31 only load (the strip's halo): a warp
// writes 30 columns. For the head's own shape: 3x3, padding 1, stride 1, one output channel,
// c % 4 == 0 and at most kSweepMaxC channels, 16-byte aligned buffers.
constexpr int kSweepMaxC = 64;
constexpr int kSweepWarps = 8;   // a block's warps, each on its own strip and row chunk
constexpr int kSweepCols = 30;   // columns a warp writes
constexpr int kSweepRows = 8;    // rows a warp walks
constexpr int kSweepLoads = 4;   // a lane's channel-group loads in flight at once (forward)

bool sweep_applies(const ConvShape& sh, const float* big, const float* wt) {
  return sh.k == 1 && sh.r == 3 && sh.s == 3 && sh.pad == 1 && sh.stride == 1 && sh.c % 4 == 0 &&
         sh.c <= kSweepMaxC && sh.n > 0 && sh.h > 0 && sh.w > 0 && detail::all_vec4(big, wt);
}

// This lane's place in a sweep: its warp's strip (across a row) and row chunk (down an image).
struct SweepLane {
  int n, col, row0, rows;  // image, this lane's column (-1 .. w), first row, rows to write
  int groups;              // float4s of channels a pixel
  bool active;             // false for the grid's surplus warps (the whole warp)
  bool inside;             // the column is in the image (else its values are the padding's 0)
  bool writes;             // inside and not a halo lane (0 or 31)
};
__device__ inline SweepLane sweep_lane(const ConvShape& sh) {
  const int strips = (sh.w + kSweepCols - 1) / kSweepCols;
  const int chunks = (sh.h + kSweepRows - 1) / kSweepRows;
  const int warp = int(blockIdx.x) * kSweepWarps + int(threadIdx.x) / 32;
  const int lane = int(threadIdx.x) % 32;
  const int strip = warp % strips, chunk = warp / strips % chunks, n = warp / strips / chunks;
  SweepLane out;
  out.n = n;
  out.col = strip * kSweepCols - 1 + lane;
  out.row0 = chunk * kSweepRows;
  out.rows = sh.h - out.row0 < kSweepRows ? sh.h - out.row0 : kSweepRows;
  out.groups = sh.c / 4;
  out.active = n < sh.n;
  out.inside = out.col >= 0 && out.col < sh.w;
  out.writes = out.inside && lane > 0 && lane < 31;
  return out;
}

// A sweep kernel's start: the filter, [tap][c / 4] float4s, into the block's shared memory
// (every thread, before any leaves), then this lane's place.
__device__ inline SweepLane start_sweep(Vec<float, 4>* filter, const float* wt,
                                        const ConvShape& sh) {
  const int vectors = 9 * sh.c / 4;
  for (int i = int(threadIdx.x); i < vectors; i += int(blockDim.x))
    filter[i] = load_vec<4>(wt, i);
  __syncthreads();
  return sweep_lane(sh);
}

// y = conv(x, wt) (+ bias). Input row iy adds to output rows iy + 1, iy and iy - 1 (filter rows
// 0, 1, 2): acc[0..2] hold output rows iy - 1, iy and iy + 1 while row iy is added, and the
// first is complete after it. Each output adds its filter rows in order 0, 1, 2 and, in each,
// the left, centre and right taps; each tap is a float sum over the channels in order.
__global__ void __launch_bounds__(kSweepWarps * 32)
    narrow_sweep_forward_kernel(float* y, const float* x, const float* wt, const float* bias,
                                ConvShape sh) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  UNETCU_STATIC_SHARED(Float4, filter, [9 * kSweepMaxC / 4]);
  const SweepLane wp = start_sweep(filter, wt, sh);
  if (!wp.active) return;
  const float b = bias ? bias[0] : 0.0f;
  float acc[3] = {0.0f, 0.0f, 0.0f};
  for (int iy = wp.row0 - 1; iy <= wp.row0 + wp.rows; ++iy) {
    float z[9] = {};
    if (wp.inside && iy >= 0 && iy < sh.h) {
      const int64_t at = ((int64_t(wp.n) * sh.h + iy) * sh.w + wp.col) * wp.groups;
      // kSweepLoads channel groups' loads issued together, then their products in group
      // order: one group's load at a time, each waited for, left a row's loads a chain of
      // round trips (the head, 16 channels: four).
      for (int g0 = 0; g0 < wp.groups; g0 += kSweepLoads) {
        Vec<float, 4> xv[kSweepLoads];
        UNETCU_UNROLL_ALL
        for (int j = 0; j < kSweepLoads; ++j)
          xv[j] = g0 + j < wp.groups ? load_vec<4>(x, at + g0 + j) : Vec<float, 4>{};
        UNETCU_UNROLL_ALL
        for (int j = 0; j < kSweepLoads; ++j) {
          if (g0 + j >= wp.groups) break;
          for (int t = 0; t < 9; ++t) {
            const Vec<float, 4> wv = filter[t * wp.groups + g0 + j];
            for (int k = 0; k < 4; ++k) z[t] = fmaf(xv[j].v[k], wv.v[k], z[t]);
          }
        }
      }
    }
    // Filter row r of this input row, summed over its taps: tap 0 reads the column to the
    // left of the output (the lane below's z), tap 2 the column to its right.
    float h[3];
    for (int r = 0; r < 3; ++r) {
      const float left = __shfl_up_sync(0xffffffffu, z[3 * r], 1);
      const float right = __shfl_down_sync(0xffffffffu, z[3 * r + 2], 1);
      h[r] = left + z[3 * r + 1] + right;
    }
    acc[0] += h[2];  // output row iy - 1: its last filter row
    acc[1] += h[1];
    acc[2] = h[0];   // output row iy + 1 starts here
    const int done = iy - 1;
    if (wp.writes && done >= wp.row0 && done < wp.row0 + wp.rows)
      y[(int64_t(wp.n) * sh.h + done) * sh.w + wp.col] = bias ? acc[0] + b : acc[0];
    acc[0] = acc[1];
    acc[1] = acc[2];
  }
}

// dx (+)= conv_transpose(dy, wt): dx row iy takes dy rows iy + 1, iy and iy - 1 (filter rows
// 0, 1, 2) and, in each, the columns to the right, here and to the left (taps 0, 1, 2). The
// lane keeps three rows of dy with both neighbours' values (window[row][tap]); per channel
// group one float4 sum over the nine taps in order, and one store.
__global__ void __launch_bounds__(kSweepWarps * 32)
    narrow_sweep_backward_data_kernel(float* dx, const float* dy, const float* wt, ConvShape sh,
                                      bool accumulate) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  UNETCU_STATIC_SHARED(Float4, filter, [9 * kSweepMaxC / 4]);
  const SweepLane wp = start_sweep(filter, wt, sh);
  if (!wp.active) return;
  // window[0..2]: dy rows iy + 1, iy, iy - 1 (filter rows 0, 1, 2 of dx row iy), each as the
  // values right of, at and left of this column (taps 0, 1, 2).
  float window[3][3] = {};
  auto dy_at = [&](int oy) {
    return wp.inside && oy >= 0 && oy < sh.h ? dy[(int64_t(wp.n) * sh.h + oy) * sh.w + wp.col]
                                             : 0.0f;
  };
  auto spread = [&](float d, float (&taps)[3]) {
    taps[0] = __shfl_down_sync(0xffffffffu, d, 1);  // column + 1
    taps[1] = d;
    taps[2] = __shfl_up_sync(0xffffffffu, d, 1);    // column - 1
  };
  spread(dy_at(wp.row0), window[0]);      // dy row iy for the first iy = row0: filter row 1
  spread(dy_at(wp.row0 - 1), window[1]);  // filter row 2
  float next = dy_at(wp.row0 + 1);
  for (int iy = wp.row0; iy < wp.row0 + wp.rows; ++iy) {
    // Shift the rows down a filter row; dy row iy + 1 (loaded a row ago) is filter row 0.
    for (int t = 0; t < 3; ++t) {
      window[2][t] = window[1][t];
      window[1][t] = window[0][t];
    }
    spread(next, window[0]);
    // The next row's load, in flight during this row's products and stores (loaded where it
    // is used, each row's load was a round trip the warp waited for).
    next = dy_at(iy + 2);
    if (!wp.writes) continue;
    const int64_t at = ((int64_t(wp.n) * sh.h + iy) * sh.w + wp.col) * wp.groups;
    for (int g = 0; g < wp.groups; ++g) {
      Vec<float, 4> sum{};
      for (int t = 0; t < 9; ++t) {
        const Vec<float, 4> wv = filter[t * wp.groups + g];
        const float d = window[t / 3][t % 3];
        for (int k = 0; k < 4; ++k) sum.v[k] = fmaf(d, wv.v[k], sum.v[k]);
      }
      if (accumulate) {
        const Vec<float, 4> old = load_vec<4>(dx, at + g);
        for (int k = 0; k < 4; ++k) sum.v[k] += old.v[k];
      }
      store_vec<4>(dx, at + g, sum);
    }
  }
}

// Blocks for a sweep over `sh`: one warp per (image, row chunk, strip).
unsigned sweep_blocks(const ConvShape& sh) {
  const int64_t warps = int64_t(sh.n) * ((sh.h + kSweepRows - 1) / kSweepRows) *
                        ((sh.w + kSweepCols - 1) / kSweepCols);
  return unsigned((warps + kSweepWarps - 1) / kSweepWarps);
}

// The head's paths (kernels/path_timing.h): a thread per pixel (any narrow shape), or the
// row sweeps (sweep_applies). Untimed, the row sweeps where they apply: on an H100 the head's
// forward (16 x 128 x 128 x 16) took 15.6 us as sweeps against 27.4 a thread per pixel, its data
// gradient 13.9 against 26.5 (path timing's report, bench/RESULTS.md); else a thread per pixel.
enum NarrowPath : int { kPerPixel, kRowSweep, kNarrowPaths };
constexpr const char* kNarrowPathNames[kNarrowPaths] = {"per_pixel", "row_sweep"};

// `op` at `sh` (n x h x w x c), its paths in the untimed order.
detail::PathOp narrow_path_op(const char* op, const ConvShape& sh) {
  return detail::PathOp(op, kNarrowPathNames, kNarrowPaths, {sh.n, sh.h, sh.w, sh.c})
      .then(kRowSweep)
      .then(kPerPixel);
}

}  // namespace

bool conv2d_narrow_applies(const ConvShape& sh) {
  return sh.k == 1 && sh.stride == 1 && sh.r * sh.s <= kMaxTaps && sh.c > 0 && sh.p > 0 &&
         sh.q > 0 && sh.n > 0;
}

void conv2d_narrow_forward(float* y, const float* x, const float* wt, const float* bias,
                           const ConvShape& sh, cudaStream_t stream) {
  const int64_t rows = int64_t(sh.n) * sh.p * sh.q;
  const bool sweep = sweep_applies(sh, x, wt);
  const detail::PathOp op = narrow_path_op("conv.narrow_fwd", sh);
  detail::run_fastest(op, y != x, stream, [&](int path) {
    if (path == kRowSweep) {
      if (!sweep) return false;
      UNETCU_LAUNCH_CHAINED(narrow_sweep_forward_kernel, sweep_blocks(sh), kSweepWarps * 32, 0,
                            stream)(y, x, wt, bias, sh);
    } else if (sh.c % 4 == 0 && detail::all_vec4(x, wt)) {
      detail::map_rows(NarrowForward<4>{y, x, wt, bias, sh}, rows, 1, stream);
    } else {
      detail::map_rows(NarrowForward<1>{y, x, wt, bias, sh}, rows, 1, stream);
    }
    return true;
  });
}

void conv2d_narrow_backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                                 GradMode mode, cudaStream_t stream) {
  const int64_t rows = int64_t(sh.n) * sh.h * sh.w;
  const bool acc = mode == GradMode::accumulate;
  const bool sweep = sweep_applies(sh, dx, wt);
  // Accumulating, a timing run would add twice: such calls are not timed.
  const detail::PathOp op = narrow_path_op("conv.narrow_bwd_data", sh);
  detail::run_fastest(op, !acc && dx != dy, stream, [&](int path) {
    if (path == kRowSweep) {
      if (!sweep) return false;
      UNETCU_LAUNCH_CHAINED(narrow_sweep_backward_data_kernel, sweep_blocks(sh),
                            kSweepWarps * 32, 0, stream)(dx, dy, wt, sh, acc);
    } else if (sh.c % 4 == 0 && detail::all_vec4(dx, wt)) {
      detail::map_rows(NarrowBackwardData<4>{dx, dy, wt, sh, acc}, rows, sh.c / 4, stream);
    } else {
      detail::map_rows(NarrowBackwardData<1>{dx, dy, wt, sh, acc}, rows, sh.c, stream);
    }
    return true;
  });
}

size_t conv2d_narrow_backward_filter_workspace_bytes(const ConvShape& sh) {
  // Either width may run (the pointer's alignment decides): room for the larger.
  int blocks = filter_tiling(sh, 1).blocks;
  if (filter_vec4(sh, nullptr)) {
    const int vec = filter_tiling(sh, 4).blocks;
    blocks = vec > blocks ? vec : blocks;
  }
  return size_t(sh.r) * sh.s * sh.c * size_t(blocks) * sizeof(double);
}

void conv2d_narrow_backward_filter(float* dwt, const float* dy, const float* x,
                                   const ConvShape& sh, GradMode mode, void* workspace,
                                   cudaStream_t stream) {
  double* partials = static_cast<double*>(workspace);
  const bool vec = filter_vec4(sh, x);
  const FilterTiling ft = filter_tiling(sh, vec ? 4 : 1);
  const dim3 grid(unsigned(ft.blocks), unsigned((sh.r * sh.s + kFilterTaps - 1) / kFilterTaps));
  if (vec) {
    UNETCU_LAUNCH_CHAINED(narrow_filter_partial_kernel<4>, grid, ft.tile * ft.lanes, 0,
                          stream)(partials, dy, x, sh, ft);
  } else {
    UNETCU_LAUNCH_CHAINED(narrow_filter_partial_kernel<1>, grid, ft.tile * ft.lanes, 0,
                          stream)(partials, dy, x, sh, ft);
  }
  finish_filter_gradient(dwt, partials, sh, ft.blocks, mode, stream);
}

bool conv2d_direct_backward_filter_applies(const ConvShape& sh, const float* dy, const float* x) {
  return sh.stride == 1 && sh.r == 2 * sh.pad + 1 && sh.s == sh.r && sh.r * sh.s <= kMaxTaps &&
         sh.k % 4 == 0 && sh.k > 0 && sh.k <= kDirectMaxK && sh.c % 4 == 0 && sh.c > 0 &&
         sh.n > 0 && sh.h > 0 && sh.w > 0 && detail::all_vec4(dy, x);
}

size_t conv2d_direct_backward_filter_workspace_bytes(const ConvShape& sh) {
  if (!conv2d_direct_backward_filter_applies(sh, nullptr, nullptr)) return 0;
  return size_t(sh.w_size()) * size_t(direct_tiling(sh).blocks) * sizeof(double);
}

int64_t conv2d_direct_backward_filter_float_run(const ConvShape& sh) {
  if (!conv2d_direct_backward_filter_applies(sh, nullptr, nullptr)) return 0;
  const DirectTiling dt = direct_tiling(sh);
  return dt.segs_per_block * dt.sub;
}

void conv2d_direct_backward_filter(float* dwt, const float* dy, const float* x,
                                   const ConvShape& sh, GradMode mode, void* workspace,
                                   cudaStream_t stream) {
  double* partials = static_cast<double*>(workspace);
  const DirectTiling dt = direct_tiling(sh);
  const dim3 grid(unsigned(dt.blocks), unsigned(dt.cchunks));
  const int threads = dt.lanes * dt.owners;
  if (sh.s == 3) {
    UNETCU_LAUNCH_CHAINED(direct_filter_partial_kernel<3>, grid, threads, 0, stream)(
        partials, dy, x, sh, dt);
  } else {
    UNETCU_LAUNCH_CHAINED(direct_filter_partial_kernel<1>, grid, threads, 0, stream)(
        partials, dy, x, sh, dt);
  }
  finish_filter_gradient(dwt, partials, sh, dt.blocks, mode, stream);
}

bool conv2d_direct_forward_applies(const ConvShape& sh, const float* x, const float* y) {
  return direct_conv_shape(sh, sh.c, sh.k) && detail::all_vec4(x, y);
}

void conv2d_direct_forward(float* y, const float* x, const float* wt, const ConvShape& sh,
                           cudaStream_t stream) {
  launch_direct_conv<false>(y, x, wt, sh, sh.c, sh.k, false, stream);
}

bool conv2d_direct_backward_data_applies(const ConvShape& sh, const float* dy, const float* dx) {
  return direct_conv_shape(sh, sh.k, sh.c) && detail::all_vec4(dy, dx);
}

void conv2d_direct_backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                                 GradMode mode, cudaStream_t stream) {
  launch_direct_conv<true>(dx, dy, wt, sh, sh.k, sh.c, mode == GradMode::accumulate, stream);
}

}  // namespace unetcu::cuda
