// kernels/cuda/conv_mma.cu: the decoder's full-resolution convolutions (3x3 "same", stride 1,
// 16 or 32 output channels of the direction) on the tensor cores in TF32: forward and
// backward-data as an implicit GEMM with one warp-level product (kernels/cuda/mma.cuh) per 16
// pixels x 8 output channels x 8 of the reduction's (tap, input channel) pairs; the weight
// gradient (below) with one per 16 output channels x 8 input channels x 8 pixels; and the
// encoder's 7x7 stride-2 stem forward (below).
//
// Why: on the H100 cuDNN's TF32 kernels take 46-62 us each way for 3x3 32 -> 16 and 16 -> 16
// at 128x128 (batch 16), and 17-21 us for 32 -> 32 at 64x64 (bench/RESULTS.md), all on the
// step's critical path, where moving the input and the output once takes 11-17 us and the
// tensor cores need a few: their GEMMs have only 16 or 32 columns, which cuDNN's tiles leave
// mostly idle. The fp32 direct kernels (conv_narrow.cu) do the same work on the CUDA cores and
// lost to cuDNN at all but 16 -> 16 (15-35% of the FP32 rate).
//
// A tile is 4 output rows x 32 columns of one image and every output channel: warp w takes
// the 16 pixels of row w / 2 starting at column 16 (w % 2). The input channels (a multiple of
// 16) are taken 16 at a time: the block stages the tile's input (6 x 34 pixels with the halo,
// zeros outside the image) and the chunk's filters in shared memory, rounded to TF32 once
// there, then each warp runs 9 taps x 2 channel groups x (outputs / 8) products. Where the
// filters fit (16 outputs and at most 32 inputs, or 32 and 16) they are staged once for all
// the block's tiles, and a block takes two tiles or more where the grid has over 1,056.
// Shared-memory strides keep a warp's fragment reads on 32 distinct banks: a lane
// (g = lane / 4, t = lane % 4) reads pixel g or g + 8 and channel t or t + 4, and output
// channel g (the filter), at stride 20 floats a pixel and 148 a filter (both 4, 12, 20 or 28
// mod 32 after multiplying by g, plus t). Backward-data is the forward convolution of dy with
// the filters transposed and turned around, as in conv_narrow.cu's direct kernels.
//
// Each output is its products added in the tensor cores' order (fixed by the shape: chunks,
// then taps, then channel groups), so the result does not depend on scheduling. The engine
// times it against cuDNN's choice per shape and direction, as the direct kernels, when the
// convolutions run in TF32.
#include "kernels/conv.h"

#include <atomic>
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/env.h"
#include "kernels/cuda/filter_gradient.cuh"
#include "kernels/cuda/mma.cuh"

namespace unetcu::cuda {
namespace {

constexpr int kTileRows = 4, kTileCols = 32;             // a block's output pixels
constexpr int kInRows = kTileRows + 2, kInCols = kTileCols + 2;
constexpr int kChunk = 16;                               // input channels staged at a time
constexpr int kPixelStride = kChunk + 4;                 // floats a staged input pixel
constexpr int kTaps = 9;
constexpr int kFilterStride = kTaps * kChunk + 4;        // floats a staged output channel
constexpr int kMmaThreads = 256;                         // 8 warps x 16 pixels = the tile

// The staging loops load and store one value at a time: at 48-64 registers (ptxas, sm_90) four
// blocks fit an SM and keep about 16 KB of loads in flight an SM while their neighbours
// compute. Loading a thread's whole share before storing it took 124-252 registers (one block
// an SM), or spilled when held to four blocks' 64.

// Stages input channels [c0, c0 + kChunk) of output channels [o0, o0 + Cout) of the filters,
// rounded to TF32: staged_wt[o][tap][i] = w'[o0 + o][tap][c0 + i].
template <int Cout, bool Flip>
__device__ inline void stage_filters(float* staged_wt, const float* __restrict__ wt, int o0,
                                     int c0, int wt_c) {
  for (int e = int(threadIdx.x); e < Cout * kTaps * kChunk; e += kMmaThreads) {
    const int i = e % kChunk, tap = (e / kChunk) % kTaps, o = o0 + e / (kChunk * kTaps);
    const float v = Flip ? wt[(int64_t(c0 + i) * kTaps + (kTaps - 1 - tap)) * wt_c + o]
                         : wt[(int64_t(o) * kTaps + tap) * wt_c + c0 + i];
    staged_wt[(o - o0) * kFilterStride + tap * kChunk + i] = detail::tf32_round(v);
  }
}

// out (+)= the "same" 3x3 stride-1 convolution of `in` ([n][h][w][cin]) into `out`
// ([n][h][w][out_c]). Forward: the filters as given, wt[o][tap][i] (KRSC). Flip (backward-data,
// in = dy, out = dx): w'[o][tap][i] = wt[i][8 - tap][o], the forward's filters transposed
// and turned around. Block (b, y) takes output channels [y Cout, (y + 1) Cout) of tiles
// [b * per_block, (b + 1) * per_block) of the (image, tile row, tile column) order; where its
// filters fit (kResident chunks of input channels) they are staged once for all of them.
template <int Cout, bool Flip>
__global__ void __launch_bounds__(kMmaThreads)
    mma_conv_kernel(float* out, const float* __restrict__ in, const float* __restrict__ wt,
                    int n, int h, int w, int cin, int out_c, int wt_c, int per_block,
                    bool accumulate) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  const int o0 = int(blockIdx.y) * Cout;
  constexpr int kTiles = Cout / 8;  // output-channel tiles of the product
  // Chunks of filters that stay staged for all of a block's tiles: two at 16 outputs (the
  // decoder's 32 -> 16 forward), one at 32 (35 KB of static shared memory either way).
  constexpr int kResident = Cout == 16 ? 2 : 1;
  UNETCU_STATIC_SHARED(float, staged_in, [kInRows * kInCols * kPixelStride]);
  UNETCU_STATIC_SHARED(float, staged_wt, [kResident * Cout * kFilterStride]);

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const int row = warp / 2, col0 = (warp % 2) * 16;  // the warp's 16 pixels in the tile
  const int tile_cols = (w + kTileCols - 1) / kTileCols;
  const int tile_rows = (h + kTileRows - 1) / kTileRows;
  const int64_t tiles = int64_t(n) * tile_rows * tile_cols;
  const bool resident = cin <= kResident * kChunk;
  if (resident)
    for (int c0 = 0; c0 < cin; c0 += kChunk)
      stage_filters<Cout, Flip>(staged_wt + c0 / kChunk * Cout * kFilterStride, wt, o0, c0,
                                wt_c);

  for (int64_t tile = int64_t(blockIdx.x) * per_block;
       tile < tiles && tile < int64_t(blockIdx.x + 1) * per_block; ++tile) {
    const int img = int(tile / (int64_t(tile_rows) * tile_cols));
    const int y0 = int(tile / tile_cols % tile_rows) * kTileRows;
    const int x0 = int(tile % tile_cols) * kTileCols;
    const int64_t image_base = int64_t(img) * h * w;

    float acc[kTiles][4];
    for (int j = 0; j < kTiles; ++j)
      for (int i = 0; i < 4; ++i) acc[j][i] = 0.0f;

    for (int c0 = 0; c0 < cin; c0 += kChunk) {
      constexpr int vecs = kChunk / 4;  // cin is a multiple of kChunk
      __syncthreads();  // the previous chunk's (or tile's) reads are done
      for (int e = int(threadIdx.x); e < kInRows * kInCols * vecs; e += kMmaThreads) {
        const int v = e % vecs, p = e / vecs;
        const int iy = y0 - 1 + p / kInCols, ix = x0 - 1 + p % kInCols;
        detail::Vec<float, 4> val{};
        if (iy >= 0 && iy < h && ix >= 0 && ix < w)
          val = detail::load_vec<4>(in, ((image_base + int64_t(iy) * w + ix) * cin + c0) / 4 + v);
        float* dst = staged_in + p * kPixelStride + v * 4;
        for (int m = 0; m < 4; ++m) dst[m] = detail::tf32_round(val.v[m]);
      }
      if (!resident) stage_filters<Cout, Flip>(staged_wt, wt, o0, c0, wt_c);
      const float* chunk_wt =
          resident ? staged_wt + c0 / kChunk * Cout * kFilterStride : staged_wt;
      __syncthreads();

      UNETCU_UNROLL_ALL
      for (int tap = 0; tap < kTaps; ++tap) {
        // The warp's pixel 0 shifted by the tap, in the staged tile (its halo included).
        const float* a_px = staged_in + ((row + tap / 3) * kInCols + col0 + tap % 3) * kPixelStride;
        UNETCU_UNROLL_ALL
        for (int k0 = 0; k0 < kChunk; k0 += 8) {
          const float* a_lo = a_px + g * kPixelStride + k0 + t;  // pixel g, channel k0 + t
          const float* a_hi = a_lo + 8 * kPixelStride;           // pixel g + 8
          const float a[4] = {a_lo[0], a_hi[0], a_lo[4], a_hi[4]};
          for (int j = 0; j < kTiles; ++j) {
            const float* b_col = chunk_wt + (j * 8 + g) * kFilterStride + tap * kChunk + k0 + t;
            const float b[2] = {b_col[0], b_col[4]};
            detail::mma_tf32(acc[j], a, b);
          }
        }
      }
    }

    // Lane (g, t) holds output channels o0 + j * 8 + 2t and + 1 of the warp's pixels g, g + 8.
    const int oy = y0 + row;
    for (int half = 0; half < 2; ++half) {
      const int ox = x0 + col0 + g + 8 * half;
      if (oy >= h || ox >= w) continue;
      float* dst = out + (image_base + int64_t(oy) * w + ox) * out_c + o0;
      for (int j = 0; j < kTiles; ++j) {
        detail::Vec<float, 2> r{{acc[j][2 * half], acc[j][2 * half + 1]}};
        const int64_t at = (j * 8 + 2 * t) / 2;
        if (accumulate) {
          const detail::Vec<float, 2> old = detail::load_vec<2>(dst, at);
          r.v[0] += old.v[0];
          r.v[1] += old.v[1];
        }
        detail::store_vec<2>(dst, at, r);
      }
    }
  }
}

// Blocks of a launch: about eight resident blocks' worth on an H100 (132 SMs), more tiles a
// block beyond that, so that a block's staged filters serve several tiles.
constexpr int64_t kMmaBlocks = 1056;

template <int Cout, bool Flip>
void launch_mma_conv(float* out, const float* in, const float* wt, const ConvShape& sh, int cin,
                     int cout, bool accumulate, cudaStream_t stream) {
  const int64_t tiles = int64_t(sh.n) * ((sh.h + kTileRows - 1) / kTileRows) *
                        ((sh.w + kTileCols - 1) / kTileCols);
  const int64_t per_block = (tiles + kMmaBlocks - 1) / kMmaBlocks;
  const int64_t blocks = (tiles + per_block - 1) / per_block;
  UNETCU_LAUNCH_CHAINED((mma_conv_kernel<Cout, Flip>),
                        dim3(unsigned(blocks), unsigned(cout / Cout)), kMmaThreads, 0, stream)(
      out, in, wt, sh.n, sh.h, sh.w, cin, cout, sh.c, int(per_block), accumulate);
}

template <bool Flip>
void launch_mma(float* out, const float* in, const float* wt, const ConvShape& sh, int cin,
                int cout, bool accumulate, cudaStream_t stream) {
  if (cout == 16)
    launch_mma_conv<16, Flip>(out, in, wt, sh, cin, cout, accumulate, stream);
  else
    launch_mma_conv<32, Flip>(out, in, wt, sh, cin, cout, accumulate, stream);
}

// Output channels the forward and backward-data take at most, in blocks of 32 (each block
// stages the tile's input again): decoder block 3's first data gradient writes 128.
constexpr int kMaxOut = 128;

// The shapes the kernels take, by the direction's input and output channels; the device must
// run the product (compute capability 8.0 or later, the kernels built for it).
bool mma_conv_shape(const ConvShape& sh, int cin, int cout, int max_out) {
  if (!(sh.stride == 1 && sh.r == 3 && sh.s == 3 && sh.pad == 1 &&
        (cout == 16 || (cout % 32 == 0 && cout > 0 && cout <= max_out)) && cin % kChunk == 0 &&
        cin > 0 && sh.n > 0 && sh.h > 0 && sh.w > 0))
    return false;
  return cout == 16 ? detail::mma_kernel_usable(
                          reinterpret_cast<const void*>(mma_conv_kernel<16, false>))
                    : detail::mma_kernel_usable(
                          reinterpret_cast<const void*>(mma_conv_kernel<32, false>));
}

// ---- the stem: 7x7, stride 2, 3 input channels ----
//
// The encoder's first convolution (3 -> 64, 7x7, stride 2, padding 3; 0.6 G multiply-adds at
// 16 x 128 x 128) ran on cuDNN's generic fp32 NHWC kernel in 53-57 us on the H100, on the
// compute stream, where reading the images (3 MB) and writing the output (16.8 MB) takes about
// 7 us at the copy rate (bench/RESULTS.md). As an implicit GEMM its reduction is 7 x 7 x 3 =
// 147 (r, s, c) terms, padded to 152 (19 products of 8). A block of 8 warps takes 4 output
// rows x 32 columns of one image and 32 output channels (grid y: two blocks for 64): it stages
// the 13 x 69 input pixels those outputs read (3 channels and a zero, zeros outside the image)
// and the 32 filters in shared memory, rounded to TF32, with a table of each term's offset in
// the staged input (the padding terms point at a zero). Each warp takes 16 pixels of a row.
constexpr int kStemTaps = 7, kStemStride = 2, kStemPad = 3, kStemIn = 3;
constexpr int kStemTerms = kStemTaps * kStemTaps * kStemIn;           // 147
constexpr int kStemK = (kStemTerms + 7) / 8 * 8;                       // 152
constexpr int kStemRows = (kTileRows - 1) * kStemStride + kStemTaps;  // 13 input rows
constexpr int kStemCols = (kTileCols - 1) * kStemStride + kStemTaps;  // 69 input columns
constexpr int kStemOut = 32;                                          // output channels a block
constexpr int kStemFilterStride = kStemK + 4;  // 156: g * 156 + t on 32 distinct banks

__global__ void __launch_bounds__(kMmaThreads)
    mma_stem_kernel(float* out, const float* __restrict__ in, const float* __restrict__ wt,
                    ConvShape sh) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  // [row][col][channel, then a zero]
  UNETCU_STATIC_SHARED(float, staged_in, [kStemRows * kStemCols * 4]);
  UNETCU_STATIC_SHARED(float, staged_wt, [kStemOut * kStemFilterStride]);
  UNETCU_STATIC_SHARED(int, term_offset, [kStemK]);
  const int o0 = int(blockIdx.y) * kStemOut;
  const int tile_cols = (sh.q + kTileCols - 1) / kTileCols;
  const int tile_rows = (sh.p + kTileRows - 1) / kTileRows;
  const int img = int(blockIdx.x) / (tile_rows * tile_cols);
  const int oy0 = int(blockIdx.x) / tile_cols % tile_rows * kTileRows;
  const int ox0 = int(blockIdx.x) % tile_cols * kTileCols;
  const int iy0 = oy0 * kStemStride - kStemPad, ix0 = ox0 * kStemStride - kStemPad;

  for (int e = int(threadIdx.x); e < kStemRows * kStemCols * 4; e += kMmaThreads) {
    const int c = e % 4, col = e / 4 % kStemCols, row = e / (4 * kStemCols);
    const int iy = iy0 + row, ix = ix0 + col;
    float v = 0.0f;
    if (c < kStemIn && iy >= 0 && iy < sh.h && ix >= 0 && ix < sh.w)
      v = in[((int64_t(img) * sh.h + iy) * sh.w + ix) * kStemIn + c];
    staged_in[e] = detail::tf32_round(v);
  }
  // KRSC with 3 channels: filter o's term k = (r * 7 + s) * 3 + c is wt[o * 147 + k].
  for (int e = int(threadIdx.x); e < kStemOut * kStemK; e += kMmaThreads) {
    const int k = e % kStemK, o = e / kStemK;
    const float v = k < kStemTerms ? wt[int64_t(o0 + o) * kStemTerms + k] : 0.0f;
    staged_wt[o * kStemFilterStride + k] = detail::tf32_round(v);
  }
  for (int k = int(threadIdx.x); k < kStemK; k += kMmaThreads) {
    const int r = k / (kStemTaps * kStemIn), s = k / kStemIn % kStemTaps, c = k % kStemIn;
    term_offset[k] = k < kStemTerms ? (r * kStemCols + s) * 4 + c : 3;  // 3: a staged zero
  }
  __syncthreads();

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const int row = warp / 2, col0 = (warp % 2) * 16;  // the warp's 16 pixels in the tile
  // Output pixel (row, col) reads from staged row row * 2 + r, column col * 2 + s.
  const float* px_lo = staged_in + (row * kStemStride * kStemCols + (col0 + g) * kStemStride) * 4;
  const float* px_hi = px_lo + 8 * kStemStride * 4;  // pixel g + 8
  float acc[kStemOut / 8][4];
  for (int j = 0; j < kStemOut / 8; ++j)
    for (int i = 0; i < 4; ++i) acc[j][i] = 0.0f;
  UNETCU_UNROLL_ALL
  for (int k0 = 0; k0 < kStemK; k0 += 8) {
    const int off_lo = term_offset[k0 + t], off_hi = term_offset[k0 + t + 4];
    const float a[4] = {px_lo[off_lo], px_hi[off_lo], px_lo[off_hi], px_hi[off_hi]};
    UNETCU_UNROLL_ALL
    for (int j = 0; j < kStemOut / 8; ++j) {
      const float* b_col = staged_wt + (j * 8 + g) * kStemFilterStride + k0 + t;
      const float b[2] = {b_col[0], b_col[4]};
      detail::mma_tf32(acc[j], a, b);
    }
  }

  const int oy = oy0 + row;
  for (int half = 0; half < 2; ++half) {
    const int ox = ox0 + col0 + g + 8 * half;
    if (oy >= sh.p || ox >= sh.q) continue;
    float* dst = out + ((int64_t(img) * sh.p + oy) * sh.q + ox) * sh.k + o0;
    for (int j = 0; j < kStemOut / 8; ++j) {
      const detail::Vec<float, 2> r{{acc[j][2 * half], acc[j][2 * half + 1]}};
      detail::store_vec<2>(dst, (j * 8 + 2 * t) / 2, r);
    }
  }
}

// The stem's shape: 3 input channels, 7x7, stride 2, padding 3, a multiple of 32 outputs.
bool mma_stem_shape(const ConvShape& sh) {
  return sh.c == kStemIn && sh.r == kStemTaps && sh.s == kStemTaps && sh.stride == kStemStride &&
         sh.pad == kStemPad && sh.k % kStemOut == 0 && sh.k > 0 && sh.n > 0 && sh.p > 0 &&
         sh.q > 0 && int64_t(sh.n) * ((sh.p + kTileRows - 1) / kTileRows) *
                             ((sh.q + kTileCols - 1) / kTileCols) < (int64_t(1) << 31) &&
         detail::mma_kernel_usable(reinterpret_cast<const void*>(mma_stem_kernel));
}

// ---- the weight gradient ----
//
// dwt[o][tap][i] = sum over output pixels of dy[pixel][o] * x[pixel shifted by the tap][i]: a
// GEMM of Cout rows, 9 x cin columns and a reduction over every pixel of the batch (262,144 at
// 16 x 128 x 128), where cuDNN's TF32 kernels took 0.21 ms for 32 -> 16 and 0.10 for 16 -> 16
// on the H100 (12 TFLOP/s), held every SM the whole time on a side stream, and the compute
// stream waited 116 us a step under the first (bench/RESULTS.md). A product here is
// D (16 outputs x 8 input channels) += dy^T (16 x 8 pixels) * x (8 pixels x 8 channels).
//
// A block has one warp per tap (9 x 32 threads) and takes a run of segments (at most 64
// consecutive output pixels of one image row) and one chunk of input channels (grid y): it
// stages a segment's dy and the three input rows its taps read (zeros in the padding; the
// next segment's loads in flight meanwhile, FilterStaging), then each warp walks the segment
// 8 pixels at a time, (Cout / 16) x (chunk / 8) products a step.
// Fragment reads fall on 32 distinct banks: a lane reads pixel t or t + 4 and channel g of
// either array, at a pixel stride of 8 mod 32 floats. Each warp adds its products in
// pixel order in float; the blocks' partials (double) are added in a fixed order by stage 2
// (filter_gradient.cuh): the result does not depend on scheduling.
//
// In waves (UNETCU_MMA_WGRAD_WAVES=N, default 1, or set_conv2d_mma_filter_waves): stage 1 as
// N launches, wave w taking the w-th Nth of each block's segments and adding its float sum to
// the block's partial (double, in wave order). Why: the step runs this kernel on a
// weight-gradient stream, and its one wave of blocks (two an SM, ~100 us each at 128x128)
// holds every SM until it ends, so the compute stream's next kernel, whose blocks need an SM
// of their own (cuDNN's), waits for it: its two longest gaps, 118 and 78 us a step, fell
// under these kernels (bench/RESULTS.md, ninth H100 run). Between plain (unchained) launches
// the SMs drain, and the compute stream's waiting blocks, at a higher priority, go first.
constexpr int kSegment = 64;         // output pixels a segment has at most
constexpr int kFilterThreads = 9 * 32;
constexpr int kFilterBlocks = 264;   // stage-1 blocks at most (two an H100 SM)
constexpr int64_t kMinSegmentsPerBlock = 4;
constexpr int64_t kMaxPartials = int64_t(2) << 20;  // doubles of partials at most (16 MB)

struct MmaFilterTiling {
  int chunk = 16, chunks = 1;         // input channels a block takes, and how many such blocks
  int seg_len = 1, segs_per_row = 1;  // a row of q pixels: segs_per_row segments of seg_len
  int64_t segments = 1, segs_per_block = 1;
  int blocks = 1;                     // along x
  int64_t segs_per_wave = 1;          // of a block's segments, a launch's (the last: the rest)
  int waves = 1;                      // launches of stage 1
};

// UNETCU_MMA_WGRAD_WAVES, read once (1 to kMaxWaves; anything else refused); 0: not read yet.
constexpr int kMaxWaves = 16;
std::atomic<int> g_filter_waves{0};
int filter_waves() {
  int waves = g_filter_waves.load(std::memory_order_relaxed);
  if (waves == 0) {
    waves = env_int_or_throw<std::invalid_argument>("UNETCU_MMA_WGRAD_WAVES", 1, 1, kMaxWaves,
                                                    "a count of launches from 1 to 16");
    g_filter_waves.store(waves, std::memory_order_relaxed);
  }
  return waves;
}

// From the shape alone, so that the summation order is fixed.
MmaFilterTiling mma_filter_tiling(const ConvShape& sh) {
  MmaFilterTiling ft;
  ft.chunk = sh.c % 32 == 0 ? 32 : 16;
  ft.chunks = sh.c / ft.chunk;
  ft.seg_len = sh.q < kSegment ? sh.q : kSegment;
  ft.segs_per_row = (sh.q + ft.seg_len - 1) / ft.seg_len;
  ft.segments = int64_t(sh.n) * sh.p * ft.segs_per_row;
  int64_t cap = kFilterBlocks / ft.chunks;
  if (kMaxPartials / sh.w_size() < cap) cap = kMaxPartials / sh.w_size();
  const detail::SegmentSplit split = detail::split_segments(ft.segments, cap, kMinSegmentsPerBlock);
  ft.segs_per_block = split.per_block;
  ft.blocks = split.blocks;
  const int64_t waves = filter_waves();
  ft.segs_per_wave = (ft.segs_per_block + waves - 1) / waves;
  ft.waves = int((ft.segs_per_block + ft.segs_per_wave - 1) / ft.segs_per_wave);
  return ft;
}

// Segment `seg` of the tiling: output row `row` (image img, row oy), pixels ox0 .. ox0 + len - 1.
struct FilterSegment {
  int64_t row;
  int img, oy, ox0, len;
};
__device__ inline FilterSegment filter_segment(int64_t seg, const ConvShape& sh,
                                               const MmaFilterTiling& ft) {
  FilterSegment sg;
  sg.row = seg / ft.segs_per_row;
  sg.img = int(sg.row / sh.p);
  sg.oy = int(sg.row % sh.p);
  sg.ox0 = int(seg % ft.segs_per_row) * ft.seg_len;
  sg.len = sh.q - sg.ox0 < ft.seg_len ? sh.q - sg.ox0 : ft.seg_len;
  return sg;
}

// A thread's share of one segment's staging, held in registers from its loads to its stores:
// the segment's dy (zeros past its end) and the three input rows its taps read, columns
// ox0 - 1 .. ox0 + 64 (zeros outside the image), float4 e of each at thread e % threads.
// Loaded for the next segment while the block's warps multiply this one, so a segment costs
// about one round trip of loads or its products, whichever is longer. (Loaded and stored one
// float4 at a time, as before, a thread's loads (up to 8 a segment) could each wait for the
// one before: the ninth H100 run timed 107 us for 32 -> 16 at 128x128, two blocks an SM of
// 16 segments each, 6.7 us a segment of 29 KB.)
template <int Cout, int Chunk>
struct FilterStaging {
  static constexpr int kDyStride = Cout + 8, kXStride = Chunk + 8;  // floats a staged pixel
  static constexpr int kXCols = kSegment + 2;
  static constexpr int kDyVecs = kSegment * (Cout / 4), kXVecs = 3 * kXCols * (Chunk / 4);
  static constexpr int kDyEach = (kDyVecs + kFilterThreads - 1) / kFilterThreads;
  static constexpr int kXEach = (kXVecs + kFilterThreads - 1) / kFilterThreads;
  detail::Vec<float, 4> dy_v[kDyEach], x_v[kXEach];

  __device__ void load(const float* __restrict__ dy, const float* __restrict__ x,
                       const ConvShape& sh, const FilterSegment& sg, int c0) {
    UNETCU_UNROLL_ALL
    for (int k = 0; k < kDyEach; ++k) {
      const int e = int(threadIdx.x) + k * kFilterThreads;
      const int px = e / (Cout / 4), v = e % (Cout / 4);
      dy_v[k] = detail::Vec<float, 4>{};
      if (e < kDyVecs && px < sg.len)
        dy_v[k] = detail::load_vec<4>(dy, ((sg.row * sh.q + sg.ox0 + px) * Cout) / 4 + v);
    }
    UNETCU_UNROLL_ALL
    for (int k = 0; k < kXEach; ++k) {
      const int e = int(threadIdx.x) + k * kFilterThreads;
      const int v = e % (Chunk / 4), col = e / (Chunk / 4) % kXCols, rr = e / (Chunk / 4 * kXCols);
      const int iy = sg.oy - 1 + rr, ix = sg.ox0 - 1 + col;
      x_v[k] = detail::Vec<float, 4>{};
      if (e < kXVecs && iy >= 0 && iy < sh.h && ix >= 0 && ix < sh.w && col < sg.len + 2)
        x_v[k] = detail::load_vec<4>(
            x, (((int64_t(sg.img) * sh.h + iy) * sh.w + ix) * sh.c + c0) / 4 + v);
    }
  }
  // Rounded to TF32 into the block's staging arrays.
  __device__ void store(float* dys, float* xs) const {
    UNETCU_UNROLL_ALL
    for (int k = 0; k < kDyEach; ++k) {
      const int e = int(threadIdx.x) + k * kFilterThreads;
      const int px = e / (Cout / 4), v = e % (Cout / 4);
      if (e < kDyVecs)
        for (int m = 0; m < 4; ++m)
          dys[px * kDyStride + v * 4 + m] = detail::tf32_round(dy_v[k].v[m]);
    }
    UNETCU_UNROLL_ALL
    for (int k = 0; k < kXEach; ++k) {
      const int e = int(threadIdx.x) + k * kFilterThreads;
      const int v = e % (Chunk / 4), col = e / (Chunk / 4) % kXCols, rr = e / (Chunk / 4 * kXCols);
      if (e < kXVecs)
        for (int m = 0; m < 4; ++m)
          xs[(rr * kXCols + col) * kXStride + v * 4 + m] = detail::tf32_round(x_v[k].v[m]);
    }
  }
};

// Two blocks an SM (kFilterBlocks), so registers to spare for the staging: ptxas (sm_90) 96,
// 95, 92 and 70 for <32, 32>, <32, 16>, <16, 32> and <16, 16>, no spills (65,536 an SM).
template <int Cout, int Chunk>
__global__ void __launch_bounds__(kFilterThreads, 2)
    mma_filter_partial_kernel(double* partials, const float* __restrict__ dy,
                              const float* __restrict__ x, ConvShape sh, MmaFilterTiling ft,
                              int wave) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  using Staging = FilterStaging<Cout, Chunk>;
  constexpr int kDyStride = Staging::kDyStride, kXStride = Staging::kXStride;
  constexpr int kXCols = Staging::kXCols;
  constexpr int kMTiles = Cout / 16, kNTiles = Chunk / 8;
  UNETCU_STATIC_SHARED(float, dys, [kSegment * kDyStride]);
  UNETCU_STATIC_SHARED(float, xs, [3 * kXCols * kXStride]);

  const int tap = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const int r = tap / 3, s = tap % 3;
  const int c0 = int(blockIdx.y) * Chunk;

  float acc[kMTiles][kNTiles][4];
  for (int m = 0; m < kMTiles; ++m)
    for (int j = 0; j < kNTiles; ++j)
      for (int i = 0; i < 4; ++i) acc[m][j][i] = 0.0f;

  const int64_t block_first = int64_t(blockIdx.x) * ft.segs_per_block;
  const int64_t first = block_first + int64_t(wave) * ft.segs_per_wave;
  int64_t last = wave + 1 < ft.waves ? first + ft.segs_per_wave : block_first + ft.segs_per_block;
  if (last > ft.segments) last = ft.segments;
  Staging staging;
  FilterSegment next{};  // the segment whose loads are in flight (its place worked out once)
  if (first < last) {
    next = filter_segment(first, sh, ft);
    staging.load(dy, x, sh, next, c0);
  }
  for (int64_t seg = first; seg < last; ++seg) {
    const int len = next.len;
    __syncthreads();  // the previous segment's reads are done
    staging.store(dys, xs);
    __syncthreads();
    // The next segment's loads, in flight while this one's products run.
    if (seg + 1 < last) {
      next = filter_segment(seg + 1, sh, ft);
      staging.load(dy, x, sh, next, c0);
    }

    // Pixel j of the segment reads input column ox0 + j + s - 1: staged column j + s.
    const float* x_row = xs + (r * kXCols + s) * kXStride;
    for (int k0 = 0; k0 < len; k0 += 8) {
      float a[kMTiles][4];
      UNETCU_UNROLL_ALL
      for (int m = 0; m < kMTiles; ++m) {
        const float* d_lo = dys + (k0 + t) * kDyStride + m * 16 + g;  // pixel k0 + t, out g
        const float* d_hi = d_lo + 4 * kDyStride;                       // pixel k0 + t + 4
        a[m][0] = d_lo[0];
        a[m][1] = d_lo[8];
        a[m][2] = d_hi[0];
        a[m][3] = d_hi[8];
      }
      UNETCU_UNROLL_ALL
      for (int j = 0; j < kNTiles; ++j) {
        const float* x_lo = x_row + (k0 + t) * kXStride + j * 8 + g;  // pixel k0 + t, chan g
        const float b[2] = {x_lo[0], x_lo[4 * kXStride]};
        UNETCU_UNROLL_ALL
        for (int m = 0; m < kMTiles; ++m) detail::mma_tf32(acc[m][j], a[m], b);
      }
    }
  }

  // Lane (g, t) holds outputs o = m * 16 + g (and + 8) of input channels c0 + j * 8 + 2t (and
  // + 1), for its warp's tap.
  UNETCU_UNROLL_ALL
  for (int m = 0; m < kMTiles; ++m)
    UNETCU_UNROLL_ALL
    for (int j = 0; j < kNTiles; ++j)
      UNETCU_UNROLL_ALL
      for (int i = 0; i < 4; ++i) {
        const int o = m * 16 + g + (i >> 1) * 8, ch = c0 + j * 8 + 2 * t + (i & 1);
        double& partial = partials[((int64_t(o) * 9 + tap) * sh.c + ch) * gridDim.x + blockIdx.x];
        partial = wave == 0 ? double(acc[m][j][i]) : partial + double(acc[m][j][i]);
      }
}

template <int Cout, int Chunk>
void launch_mma_filter(double* partials, const float* dy, const float* x, const ConvShape& sh,
                       const MmaFilterTiling& ft, cudaStream_t stream) {
  const dim3 grid(unsigned(ft.blocks), unsigned(ft.chunks));
  UNETCU_LAUNCH_CHAINED((mma_filter_partial_kernel<Cout, Chunk>), grid, kFilterThreads, 0,
                        stream)(partials, dy, x, sh, ft, 0);
  // Later waves unchained: a chained launch's blocks may be placed while the wave before still
  // runs, and would hold the SMs that the wave's end is to free.
  for (int wave = 1; wave < ft.waves; ++wave)
    UNETCU_LAUNCH_UNCHAINED((mma_filter_partial_kernel<Cout, Chunk>), grid, kFilterThreads, 0,
                            stream)(partials, dy, x, sh, ft, wave);
}

}  // namespace

bool conv2d_mma_forward_applies(const ConvShape& sh, const float* x, const float* y) {
  if (mma_stem_shape(sh)) return detail::all_vec4(y);  // the images are read a float at a time
  return mma_conv_shape(sh, sh.c, sh.k, kMaxOut) && detail::all_vec4(x, y);
}

void conv2d_mma_forward(float* y, const float* x, const float* wt, const ConvShape& sh,
                        cudaStream_t stream) {
  if (mma_stem_shape(sh)) {
    const int tiles = sh.n * ((sh.p + kTileRows - 1) / kTileRows) *
                      ((sh.q + kTileCols - 1) / kTileCols);
    UNETCU_LAUNCH_CHAINED(mma_stem_kernel, dim3(unsigned(tiles), unsigned(sh.k / kStemOut)),
                          kMmaThreads, 0, stream)(y, x, wt, sh);
    return;
  }
  launch_mma<false>(y, x, wt, sh, sh.c, sh.k, false, stream);
}

bool conv2d_mma_backward_data_applies(const ConvShape& sh, const float* dy, const float* dx) {
  return mma_conv_shape(sh, sh.k, sh.c, kMaxOut) && detail::all_vec4(dy, dx);
}

void conv2d_mma_backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                              GradMode mode, cudaStream_t stream) {
  launch_mma<true>(dx, dy, wt, sh, sh.k, sh.c, mode == GradMode::accumulate, stream);
}

bool conv2d_mma_backward_filter_applies(const ConvShape& sh, const float* dy, const float* x) {
  return mma_conv_shape(sh, sh.c, sh.k, 32) && detail::all_vec4(dy, x);
}

size_t conv2d_mma_backward_filter_workspace_bytes(const ConvShape& sh) {
  return size_t(sh.w_size()) * size_t(mma_filter_tiling(sh).blocks) * sizeof(double);
}

int64_t conv2d_mma_backward_filter_pixels(const ConvShape& sh) {
  const MmaFilterTiling ft = mma_filter_tiling(sh);
  return ft.segs_per_wave * ft.seg_len;
}

int conv2d_mma_backward_filter_waves(const ConvShape& sh) { return mma_filter_tiling(sh).waves; }

int conv2d_mma_filter_waves_setting() { return filter_waves(); }

void set_conv2d_mma_filter_waves(int waves) {
  if (waves < 1 || waves > kMaxWaves)
    throw std::invalid_argument("tensor-core weight gradient: " + std::to_string(waves) +
                                " waves (1 to " + std::to_string(kMaxWaves) + ")");
  g_filter_waves.store(waves, std::memory_order_relaxed);
}

void conv2d_mma_backward_filter(float* dwt, const float* dy, const float* x, const ConvShape& sh,
                                GradMode mode, void* workspace, cudaStream_t stream) {
  double* partials = static_cast<double*>(workspace);
  const MmaFilterTiling ft = mma_filter_tiling(sh);
  if (sh.k == 16 && ft.chunk == 16) launch_mma_filter<16, 16>(partials, dy, x, sh, ft, stream);
  if (sh.k == 16 && ft.chunk == 32) launch_mma_filter<16, 32>(partials, dy, x, sh, ft, stream);
  if (sh.k == 32 && ft.chunk == 16) launch_mma_filter<32, 16>(partials, dy, x, sh, ft, stream);
  if (sh.k == 32 && ft.chunk == 32) launch_mma_filter<32, 32>(partials, dy, x, sh, ft, stream);
  detail::finish_filter_gradient(dwt, partials, sh, ft.blocks, mode, stream);
}

}  // namespace unetcu::cuda
