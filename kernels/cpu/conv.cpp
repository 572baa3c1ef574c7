// kernels/cpu/conv.cpp: reference 2-D convolution (NHWC activations, KRSC filters) as
// im2col + BLAS GEMM, in float and in double (the double build serves the gradient checks).
//
// The column matrix has one row per output pixel m = (img*P + p)*Q + q and one column per
// filter tap (r, s, c), in the filters' own KRSC order:
//   col[m][(r*S + s)*C + c] = x[img][p*stride - pad + r][q*stride - pad + s][c]
// (zero in the padding). The filters are then a row-major [K][RSC] matrix W and, because NHWC
// keeps an image's outputs as consecutive rows of K values,
//   forward          y[M][K]     = col * W^T          (bias, if any, preloaded into y)
//   backward filter  dW[K][RSC] (+)= dy^T * col
//   backward data    stride 1: the convolution of dy with the flipped filters,
//                              dx[M][C] (+)= col(dy) * Wflip, Wflip[(r,s,k)][c] = W[k][R-1-r][S-1-s][c]
//                    otherwise: dcol = dy * W, then col2im (each input pixel gathers its taps)
// A 1x1, stride-1, unpadded convolution needs no column matrix: x is already col.
//
// The column matrix is never built whole: rows are processed in tiles of at most
// kTileBytes, small enough to stay in cache between im2col writing a tile and the GEMM
// reading it. Tile boundaries depend only on the shape.
//
// Threads: OpenMP drives them all, as in every other cpu:: kernel, and OpenBLAS is switched
// to one thread. Two thread pools taking turns on the same cores (each spinning while the
// other works) cost more than they gain: on two cores the convolutions ran up to several
// times slower that way. Layers with many column tiles give each thread whole tiles (its own
// im2col and GEMM, cache-local, one parallel region per call); the others share each tile,
// with the GEMM cut into blocks of output rows or columns. Every cut (tiles, GEMM blocks,
// filter-gradient lanes) and every order of summation depends on the shape only, never on
// the number of threads, so a run is reproducible bit for bit with any thread count.
#include "kernels/conv.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace unetcu::cpu {
namespace {

// Column-tile budget: a few MB keeps a tile in the last-level cache between im2col and GEMM,
// while still giving the GEMM thousands of rows per call (1, 2 and 4 MB timed alike).
constexpr size_t kTileBytes = size_t(4) << 20;

// Below this much work (values copied, or multiply-adds / 16) a loop or GEMM runs on one
// thread: a parallel region's start and end cost more than such a piece.
constexpr int64_t kMinParallelWork = int64_t(1) << 16;

void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), 1.0f, a, int(lda), b, int(ldb),
              beta, c, int(ldc));
}
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
          const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
          int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), 1.0, a, int(lda), b, int(ldb),
              beta, c, int(ldc));
}

// Called on entry to every public function: from then on OpenBLAS runs in its caller's
// thread only (see the file comment).
void single_threaded_blas() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

// Row-major C[m][n] = op(A) op(B) + beta C, with C's rows (or its columns, when it is wider
// than tall) cut into up to kGemmBlocks blocks that the threads share out. The cut depends on
// the shape only: OpenBLAS rounds a row differently depending on where the rows around it
// are cut, so a cut per thread would make the result depend on the thread count. Blocks
// start at multiples of 16, the width of the BLAS micro-kernels.
constexpr int64_t kGemmBlocks = 4;

template <typename T>
void parallel_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                   const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c,
                   int64_t ldc) {
  const bool split_rows = m >= n;
  const int64_t extent = split_rows ? m : n;
  constexpr int64_t kAlign = 16;
  const int64_t parts = m * n * k < 16 * kMinParallelWork
                            ? 1
                            : std::clamp<int64_t>(extent / (2 * kAlign), 1, kGemmBlocks);
#pragma omp parallel for schedule(dynamic, 1) if (parts > 1)
  for (int64_t part = 0; part < parts; ++part) {
    const int64_t i0 = part == 0 ? 0 : (extent * part / parts) / kAlign * kAlign;
    const int64_t i1 = part + 1 == parts ? extent : (extent * (part + 1) / parts) / kAlign * kAlign;
    if (i1 <= i0) continue;
    if (split_rows) {
      gemm(ta, tb, i1 - i0, n, k, ta == CblasTrans ? a + i0 : a + i0 * lda, lda, b, ldb, beta,
           c + i0 * ldc, ldc);
    } else {
      gemm(ta, tb, m, i1 - i0, k, a, lda, tb == CblasTrans ? b + i0 * ldb : b + i0, ldb, beta,
           c + i0, ldc);
    }
  }
}

// Per-thread buffers reused across calls (slot 0: column tile; slot 1: flipped filters or
// partial filter gradients): they grow to the largest layer once and are then never
// reallocated, so a training step does not allocate.
template <typename T>
T* scratch(int slot, size_t count) {
  thread_local std::vector<T> buffers[2];
  std::vector<T>& buffer = buffers[slot];
  if (buffer.size() < count) buffer.resize(count);
  return buffer.data();
}

// What im2col reads: a source of n images [h][w][c] seen through r x s windows. Separate
// paddings per axis because backward data's flipped convolution pads by R-1-pad and S-1-pad
// (negative when pad > R-1: the window then starts inside the image).
struct Patches {
  int n, h, w, c;
  int r, s, stride, pad_h, pad_w;
  int p, q;
  int64_t rows() const { return int64_t(n) * p * q; }
  int64_t width() const { return int64_t(r) * s * c; }
};

Patches patches_of(const ConvShape& sh) {
  return {sh.n, sh.h, sh.w, sh.c, sh.r, sh.s, sh.stride, sh.pad, sh.pad, sh.p, sh.q};
}

// Rows [m0, m1) of the column matrix of `g` over `src`, written from the top of col.
template <typename T>
void im2col(T* col, const T* src, const Patches& g, int64_t m0, int64_t m1) {
  const int64_t sc = int64_t(g.s) * g.c, width = g.r * sc, pq = int64_t(g.p) * g.q;
#pragma omp parallel for schedule(static) if ((m1 - m0) * width >= kMinParallelWork)
  for (int64_t m = m0; m < m1; ++m) {
    const int64_t img = m / pq, pix = m % pq;
    const int op = int(pix / g.q), oq = int(pix % g.q);
    const T* src_img = src + img * g.h * g.w * g.c;
    T* out = col + (m - m0) * width;
    const int iw0 = oq * g.stride - g.pad_w;
    for (int r = 0; r < g.r; ++r) {
      T* dst = out + r * sc;
      const int ih = op * g.stride - g.pad_h + r;
      if (ih < 0 || ih >= g.h) {
        std::fill(dst, dst + sc, T(0));
        continue;
      }
      const T* src_row = src_img + int64_t(ih) * g.w * g.c;
      if (iw0 >= 0 && iw0 + g.s <= g.w) {
        // The whole filter row lies inside the image: one contiguous run of S*C values.
        std::memcpy(dst, src_row + int64_t(iw0) * g.c, sizeof(T) * sc);
        continue;
      }
      for (int s = 0; s < g.s; ++s) {
        const int iw = iw0 + s;
        if (iw < 0 || iw >= g.w) std::fill(dst + s * g.c, dst + (s + 1) * g.c, T(0));
        else std::memcpy(dst + s * g.c, src_row + int64_t(iw) * g.c, sizeof(T) * g.c);
      }
    }
  }
}

// The adjoint of im2col for images [0, n_images), written as a gather: every input pixel sums
// the column entries that were read from it, in (r, s) order. Each dx element is written by
// exactly one thread, so the result is race-free and independent of the thread count.
template <typename T>
void col2im(T* dx, const T* dcol, int n_images, const ConvShape& sh, GradMode mode) {
  const int64_t rsc = int64_t(sh.r) * sh.s * sh.c;
  const int64_t rows = int64_t(n_images) * sh.h;
  const int c_count = sh.c;
#pragma omp parallel for schedule(static) if (rows * sh.w * rsc >= kMinParallelWork)
  for (int64_t row = 0; row < rows; ++row) {
    const int img = int(row / sh.h), ih = int(row % sh.h);
    T* dx_row = dx + row * sh.w * sh.c;
    for (int iw = 0; iw < sh.w; ++iw) {
      T* out = dx_row + int64_t(iw) * sh.c;
      if (mode == GradMode::overwrite) std::fill(out, out + c_count, T(0));
      // Filter rows r that read input row ih: ih = op*stride - pad + r for some 0 <= op < P.
      for (int r = 0; r < sh.r; ++r) {
        const int tp = ih + sh.pad - r;
        if (tp < 0) break;
        if (tp % sh.stride != 0 || tp / sh.stride >= sh.p) continue;
        const int op = tp / sh.stride;
        for (int s = 0; s < sh.s; ++s) {
          const int tq = iw + sh.pad - s;
          if (tq < 0) break;
          if (tq % sh.stride != 0 || tq / sh.stride >= sh.q) continue;
          const int oq = tq / sh.stride;
          const T* src = dcol + ((int64_t(img) * sh.p + op) * sh.q + oq) * rsc +
                         (int64_t(r) * sh.s + s) * sh.c;
          for (int c = 0; c < c_count; ++c) out[c] += src[c];
        }
      }
    }
  }
}

// Rows per column tile for rows `width` values wide.
template <typename T>
int64_t tile_rows(int64_t width, int64_t rows) {
  const int64_t fit = int64_t(kTileBytes / (sizeof(T) * size_t(std::max<int64_t>(width, 1))));
  return std::clamp<int64_t>(fit, 1, std::max<int64_t>(rows, 1));
}

// A layer with at least this many column tiles gives every thread whole tiles of its own
// (im2col and GEMM in one thread, one parallel region per call) and sums its filter gradient
// in this many lanes; a smaller one shares each tile between the threads (parallel im2col,
// then a GEMM split by output blocks).
constexpr int64_t kLanes = 4;

// out[M][n_out] = col(g, src) * B + beta out, B given as [n_out][width] (b_trans) or
// [width][n_out]. Tiles and GEMM blocks depend on the shape only, so the result does not
// depend on which thread computes what.
template <typename T>
void patches_times(T* out, int64_t n_out, const T* src, const Patches& g, const T* b,
                   bool b_trans, T beta) {
  const int64_t rows = g.rows(), width = g.width(), tile = tile_rows<T>(width, rows);
  const int64_t tiles = (rows + tile - 1) / tile;
  const CBLAS_TRANSPOSE tb = b_trans ? CblasTrans : CblasNoTrans;
  const int64_t ldb = b_trans ? width : n_out;
  if (tiles >= kLanes) {
    // Dynamic: a thread slowed down by other work on the machine simply takes fewer tiles.
    // im2col's own parallel loop runs single-threaded here (nested regions are inactive).
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t m0 = t * tile, m1 = std::min(rows, m0 + tile);
      T* col = scratch<T>(0, size_t(tile * width));
      im2col(col, src, g, m0, m1);
      gemm(CblasNoTrans, tb, m1 - m0, n_out, width, col, width, b, ldb, beta, out + m0 * n_out,
           n_out);
    }
    return;
  }
  T* col = scratch<T>(0, size_t(tile * width));
  for (int64_t m0 = 0; m0 < rows; m0 += tile) {
    const int64_t m1 = std::min(rows, m0 + tile);
    im2col(col, src, g, m0, m1);
    parallel_gemm(CblasNoTrans, tb, m1 - m0, n_out, width, col, width, b, ldb, beta,
                  out + m0 * n_out, n_out);
  }
}

bool is_direct(const ConvShape& sh) {
  return sh.r == 1 && sh.s == 1 && sh.stride == 1 && sh.pad == 0;
}

template <typename T>
void forward_impl(T* y, const T* x, const T* wt, const T* bias, const ConvShape& sh) {
  single_threaded_blas();
  const int64_t rows = int64_t(sh.n) * sh.p * sh.q;
  T beta = 0;
  if (bias) {
    // Preloading the bias lets the GEMM add it for free (beta = 1) instead of another pass.
#pragma omp parallel for schedule(static) if (rows * sh.k >= kMinParallelWork)
    for (int64_t i = 0; i < rows; ++i)
      for (int k = 0; k < sh.k; ++k) y[i * sh.k + k] = bias[k];
    beta = 1;
  }
  if (is_direct(sh)) {
    parallel_gemm(CblasNoTrans, CblasTrans, rows, sh.k, sh.c, x, sh.c, wt, sh.c, beta, y, sh.k);
    return;
  }
  patches_times(y, sh.k, x, patches_of(sh), wt, true, beta);
}

// Backward data of a stride-1 convolution as a forward convolution of dy: it reads R*S*K
// values per input pixel instead of writing and re-reading R*S*C through dcol and col2im,
// at the price of one reordered copy of the filters. Worth it unless the map is tiny and
// the filters large (the 4x4 layers), where dcol is cheaper than the copy.
bool flipped_is_cheaper(const ConvShape& sh) {
  if (sh.stride != 1) return false;
  const int64_t m = int64_t(sh.n) * sh.h * sh.w;
  return m * sh.k + int64_t(sh.k) * sh.c < 2 * m * sh.c;
}

template <typename T>
void backward_data_impl(T* dx, const T* dy, const T* wt, const ConvShape& sh, GradMode mode) {
  single_threaded_blas();
  const T beta = mode == GradMode::accumulate ? T(1) : T(0);
  const int64_t pq = int64_t(sh.p) * sh.q, hw = int64_t(sh.h) * sh.w;
  if (is_direct(sh)) {
    // dx is the column matrix itself: one GEMM.
    parallel_gemm(CblasNoTrans, CblasNoTrans, sh.n * pq, sh.c, sh.k, dy, sh.k, wt, sh.c, beta, dx,
                  sh.c);
    return;
  }
  const int64_t rs = int64_t(sh.r) * sh.s, rsc = rs * sh.c;
  if (flipped_is_cheaper(sh)) {
    T* flipped = scratch<T>(1, size_t(rs * sh.k * sh.c));
#pragma omp parallel for schedule(static) if (rs * sh.k * sh.c >= kMinParallelWork)
    for (int64_t tap = 0; tap < rs; ++tap)
      for (int k = 0; k < sh.k; ++k)
        std::memcpy(flipped + (tap * sh.k + k) * sh.c, wt + k * rsc + (rs - 1 - tap) * sh.c,
                    sizeof(T) * sh.c);
    const Patches g{sh.n, sh.p, sh.q, sh.k, sh.r, sh.s, 1, sh.r - 1 - sh.pad,
                    sh.s - 1 - sh.pad, sh.h, sh.w};
    patches_times(dx, sh.c, dy, g, flipped, false, beta);
    return;
  }
  // Whole images per GEMM, since col2im gathers across neighbouring output rows.
  const int group = int(std::max<int64_t>(tile_rows<T>(rsc, sh.n * pq) / pq, 1));
  T* dcol = scratch<T>(0, size_t(group * pq * rsc));
  for (int img0 = 0; img0 < sh.n; img0 += group) {
    const int count = std::min(group, sh.n - img0);
    parallel_gemm(CblasNoTrans, CblasNoTrans, count * pq, rsc, sh.k, dy + img0 * pq * sh.k, sh.k,
                  wt, rsc, T(0), dcol, rsc);
    col2im(dx + img0 * hw * sh.c, dcol, count, sh, mode);
  }
}

template <typename T>
void backward_filter_impl(T* dwt, const T* dy, const T* x, const ConvShape& sh,
                          GradMode mode) {
  single_threaded_blas();
  const int64_t rows = int64_t(sh.n) * sh.p * sh.q;
  T beta = mode == GradMode::accumulate ? T(1) : T(0);
  if (is_direct(sh)) {
    parallel_gemm(CblasTrans, CblasNoTrans, sh.k, sh.c, rows, dy, sh.k, x, sh.c, beta, dwt, sh.c);
    return;
  }
  const Patches g = patches_of(sh);
  const int64_t width = g.width(), tile = tile_rows<T>(width, rows);
  const int64_t tiles = (rows + tile - 1) / tile, out_size = int64_t(sh.k) * width;
  if (tiles >= kLanes) {
    // Tile t adds into lane t % kLanes's partial gradient, each lane in tile order, and the
    // lanes are summed in lane order: the same additions in the same order for any number of
    // threads. Only layers with many rows take this path, and their filters are small.
    T* partial = scratch<T>(1, size_t(kLanes * out_size));
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t lane = 0; lane < kLanes; ++lane) {
      T* col = scratch<T>(0, size_t(tile * width));
      for (int64_t t = lane; t < tiles; t += kLanes) {
        const int64_t m0 = t * tile, m1 = std::min(rows, m0 + tile);
        im2col(col, x, g, m0, m1);
        gemm(CblasTrans, CblasNoTrans, sh.k, width, m1 - m0, dy + m0 * sh.k, sh.k, col, width,
             T(t == lane ? 0 : 1), partial + lane * out_size, width);
      }
    }
    const bool accumulate = mode == GradMode::accumulate;
#pragma omp parallel for schedule(static) if (kLanes * out_size >= kMinParallelWork)
    for (int64_t i = 0; i < out_size; ++i) {
      T sum = accumulate ? dwt[i] : T(0);
      for (int64_t lane = 0; lane < kLanes; ++lane) sum += partial[lane * out_size + i];
      dwt[i] = sum;
    }
    return;
  }
  T* col = scratch<T>(0, size_t(tile * width));
  for (int64_t m0 = 0; m0 < rows; m0 += tile) {
    const int64_t m1 = std::min(rows, m0 + tile);
    im2col(col, x, g, m0, m1);
    parallel_gemm(CblasTrans, CblasNoTrans, sh.k, width, m1 - m0, dy + m0 * sh.k, sh.k, col, width,
                  beta, dwt, width);
    beta = 1;
  }
}

template <typename T>
void backward_bias_impl(T* dbias, const T* dy, const ConvShape& sh, GradMode mode) {
  // Only the 1-channel head has a bias, so a plain serial sum in double is both exact enough
  // and cheap; its fixed order keeps it reproducible.
  std::vector<double> sum(size_t(sh.k), 0.0);
  const int64_t rows = int64_t(sh.n) * sh.p * sh.q;
  for (int64_t i = 0; i < rows; ++i)
    for (int k = 0; k < sh.k; ++k) sum[size_t(k)] += double(dy[i * sh.k + k]);
  for (int k = 0; k < sh.k; ++k)
    dbias[k] = T(mode == GradMode::accumulate ? double(dbias[k]) + sum[size_t(k)] : sum[size_t(k)]);
}

}  // namespace

void conv2d_forward(float* y, const float* x, const float* wt, const float* bias,
                    const ConvShape& sh) { forward_impl(y, x, wt, bias, sh); }
void conv2d_forward(double* y, const double* x, const double* wt, const double* bias,
                    const ConvShape& sh) { forward_impl(y, x, wt, bias, sh); }

void conv2d_backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                          GradMode mode) { backward_data_impl(dx, dy, wt, sh, mode); }
void conv2d_backward_data(double* dx, const double* dy, const double* wt, const ConvShape& sh,
                          GradMode mode) { backward_data_impl(dx, dy, wt, sh, mode); }

void conv2d_backward_filter(float* dwt, const float* dy, const float* x, const ConvShape& sh,
                            GradMode mode) { backward_filter_impl(dwt, dy, x, sh, mode); }
void conv2d_backward_filter(double* dwt, const double* dy, const double* x, const ConvShape& sh,
                            GradMode mode) { backward_filter_impl(dwt, dy, x, sh, mode); }

void gemm_colmajor(const GemmDims& d, const float* a, const float* b, float* c) {
  single_threaded_blas();
  cblas_sgemm(CblasColMajor, d.trans_a ? CblasTrans : CblasNoTrans, CblasNoTrans, d.m, d.n, d.k,
              1.0f, a, d.lda, b, d.ldb, 0.0f, c, d.ldc);
}

void conv2d_backward_bias(float* dbias, const float* dy, const ConvShape& sh, GradMode mode) {
  backward_bias_impl(dbias, dy, sh, mode);
}
void conv2d_backward_bias(double* dbias, const double* dy, const ConvShape& sh, GradMode mode) {
  backward_bias_impl(dbias, dy, sh, mode);
}

}  // namespace unetcu::cpu
