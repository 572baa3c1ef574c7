// kernels/conv.h: 2-D convolution, NHWC activations, KRSC filters, no groups, no dilation.
//
//   x  : [n][h][w][c]          input
//   wt : [k][r][s][c]          filters
//   y  : [n][p][q][k]          output, p = (h + 2*pad - r)/stride + 1, q likewise
//   bias (optional, may be null): [k]
//
// The cpu:: functions are the reference (im2col + BLAS sgemm, one image at a time so the
// column buffer stays small). On a GPU the convolutions go through cuDNN (kernels/cudnn/),
// except the one-output-channel ones (the segmentation head), which have hand-written kernels
// like the bias and its gradient.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace unetcu {

struct ConvShape {
  int n = 0, h = 0, w = 0, c = 0;  // input
  int k = 0, r = 0, s = 0;         // filters
  int stride = 1, pad = 0;
  int p = 0, q = 0;                // output height, width

  static ConvShape make(int n, int h, int w, int c, int k, int r, int s, int stride, int pad) {
    ConvShape sh;
    sh.n = n; sh.h = h; sh.w = w; sh.c = c; sh.k = k; sh.r = r; sh.s = s;
    sh.stride = stride; sh.pad = pad;
    sh.p = (h + 2 * pad - r) / stride + 1;
    sh.q = (w + 2 * pad - s) / stride + 1;
    return sh;
  }
  int64_t x_size() const { return int64_t(n) * h * w * c; }
  int64_t y_size() const { return int64_t(n) * p * q * k; }
  int64_t w_size() const { return int64_t(k) * r * s * c; }
};

// C (m x n) = op(A) (m x k) * B (k x n), every matrix column-major with leading dimensions
// lda, ldb, ldc, op(A) = A or, with trans_a, A's transpose (A then stored k x m): BLAS's (and
// cuBLAS's) order, in which a row-major [rows][cols] array is its cols x rows transpose, so
// NHWC activations and KRSC filters need no copies.
struct GemmDims {
  int m = 0, n = 0, k = 0;
  int lda = 0, ldb = 0, ldc = 0;
  bool trans_a = false;
};

// The convolutions as a GEMM and a gather, through the column matrix of the reference
// (kernels/cpu/conv.cpp): col[pix][(r*s_ + s)*c + ch], one row of r*s*c values per output
// pixel (pix over n*p*q), where the deep layers' few output pixels leave cuDNN's tiles too
// few to fill the GPU (bench/RESULTS.md):
//   forward        col = im2col(x) (cuda::conv2d_im2col), then
//                  y^T (k x pixels) = wt (k x r*s*c, stored as its transpose) * col^T:
//                  A = wt (trans_a), B = col, C = y;
//   backward-data  col^T (r*s*c x pixels) = wt^T (r*s*c x k) * dy^T (k x pixels):
//                  A = wt, B = dy, C = col; then dx (+)= col2im(col)
//                  (cuda::conv2d_col2im: each input element adds the col entries of the
//                  (output pixel, tap) pairs that read it).
inline GemmDims conv2d_forward_gemm_dims(const ConvShape& sh) {
  GemmDims d;
  d.m = sh.k;
  d.n = sh.n * sh.p * sh.q;
  d.k = sh.r * sh.s * sh.c;
  d.lda = d.k;
  d.ldb = d.k;
  d.ldc = d.m;
  d.trans_a = true;
  return d;
}
inline GemmDims conv2d_backward_data_gemm_dims(const ConvShape& sh) {
  GemmDims d;
  d.m = sh.r * sh.s * sh.c;
  d.n = sh.n * sh.p * sh.q;
  d.k = sh.k;
  d.lda = d.m;
  d.ldb = d.k;
  d.ldc = d.m;
  return d;
}
// Bytes of the column matrix: n*p*q x r*s*c floats.
inline size_t conv2d_col_bytes(const ConvShape& sh) {
  return size_t(sh.n) * size_t(sh.p) * size_t(sh.q) * size_t(sh.r) * size_t(sh.s) *
         size_t(sh.c) * sizeof(float);
}

namespace cpu {

// C = op(A) * B through BLAS (cblas_sgemm, column-major): the GEMM of the decompositions
// above where cuBLAS is not at hand (the emulated CUDA backend, the kernels' tests).
void gemm_colmajor(const GemmDims& d, const float* a, const float* b, float* c);

// y = conv(x, wt) (+ bias). `bias` may be null.
void conv2d_forward(float* y, const float* x, const float* wt, const float* bias,
                    const ConvShape& sh);
// dx (+)= conv_transpose(dy, wt)
void conv2d_backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                          GradMode mode);
// dwt (+)= correlation of x with dy, summed over the batch
void conv2d_backward_filter(float* dwt, const float* dy, const float* x, const ConvShape& sh,
                            GradMode mode);
// dbias[k] (+)= sum over n, p, q of dy
void conv2d_backward_bias(float* dbias, const float* dy, const ConvShape& sh, GradMode mode);

// Double-precision twins of the above, for the finite-difference gradient checks.
void conv2d_forward(double* y, const double* x, const double* wt, const double* bias,
                    const ConvShape& sh);
void conv2d_backward_data(double* dx, const double* dy, const double* wt, const ConvShape& sh,
                          GradMode mode);
void conv2d_backward_filter(double* dwt, const double* dy, const double* x, const ConvShape& sh,
                            GradMode mode);
void conv2d_backward_bias(double* dbias, const double* dy, const ConvShape& sh, GradMode mode);

}  // namespace cpu

// CUDA kernels for the bias (kernels/cuda/conv_bias.cu) and for the convolutions with few output
// channels (kernels/cuda/conv_narrow.cu), asynchronous on `stream`; the other convolutions are
// cuDNN calls (kernels/cudnn/).
namespace cuda {

// True for the shapes the narrow kernels take: one output channel, stride 1, at most 9 filter
// taps (r * s), any padding and channel count. The engine sends these to the kernels below
// instead of cuDNN, whose NHWC kernels leave most of each tile idle at k = 1.
bool conv2d_narrow_applies(const ConvShape& sh);
// y = conv(x, wt) (+ bias), for a shape conv2d_narrow_applies to. Full fp32 (no TF32).
void conv2d_narrow_forward(float* y, const float* x, const float* wt, const float* bias,
                           const ConvShape& sh, cudaStream_t stream);
// dx (+)= conv_transpose(dy, wt)
// Both have a second form for the head's 3x3 "same" shape, row sweeps (a warp walks down 32
// columns, each lane loading its pixel once a row), which runs where path timing
// (kernels/path_timing.h, opt-in) finds it faster; untimed, a thread per pixel.
void conv2d_narrow_backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                                 GradMode mode, cudaStream_t stream);
// dwt (+)= correlation of x with dy over the batch: a deterministic two-stage reduction in
// double through `workspace` (conv2d_narrow_backward_filter_workspace_bytes(sh), scratch).
size_t conv2d_narrow_backward_filter_workspace_bytes(const ConvShape& sh);
void conv2d_narrow_backward_filter(float* dwt, const float* dy, const float* x,
                                   const ConvShape& sh, GradMode mode, void* workspace,
                                   cudaStream_t stream);

// The direct weight gradient, for convolutions with few output channels (kernels/cuda/
// conv_narrow.cu): stride 1, a "same" square filter of at most 3x3 (r = s = 2 pad + 1),
// k <= 32 and k, c multiples of 4, dy and x 16-byte aligned. Full fp32 (no TF32): each thread
// sums at most conv2d_direct_backward_filter_float_run(sh) products per element in float, the
// rest of the sum is in double, in a fixed order, through `workspace`
// (conv2d_direct_backward_filter_workspace_bytes(sh), scratch), rounded to float once, so the
// result does not depend on scheduling. dwt (+)= correlation of x with dy over the batch.
// Both sizes are 0 for a shape the kernel does not take.
bool conv2d_direct_backward_filter_applies(const ConvShape& sh, const float* dy, const float* x);
size_t conv2d_direct_backward_filter_workspace_bytes(const ConvShape& sh);
int64_t conv2d_direct_backward_filter_float_run(const ConvShape& sh);
void conv2d_direct_backward_filter(float* dwt, const float* dy, const float* x,
                                   const ConvShape& sh, GradMode mode, void* workspace,
                                   cudaStream_t stream);

// The direct forward and backward-data, for the same shapes with 16 or 32 output channels of
// the direction (k forward, c backward-data) and at most 64 input channels (c forward, k
// backward-data); the activations 16-byte aligned. Full fp32 (no TF32): each output sums
// r * s * (input channels) products in float, taps then channels, as conv2d_narrow_forward.
// No bias: the engine adds it with conv2d_add_bias.
bool conv2d_direct_forward_applies(const ConvShape& sh, const float* x, const float* y);
void conv2d_direct_forward(float* y, const float* x, const float* wt, const ConvShape& sh,
                           cudaStream_t stream);
bool conv2d_direct_backward_data_applies(const ConvShape& sh, const float* dy, const float* dx);
void conv2d_direct_backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                                 GradMode mode, cudaStream_t stream);

// The same shapes on the tensor cores in TF32 (kernels/cuda/conv_mma.cu): a "same" 3x3 filter at
// stride 1, 16 or 32 output channels of the direction (forward and backward-data also 64, 96
// or 128), input channels a multiple of 16, the activations 16-byte aligned, and a device that
// runs TF32 products (compute capability 8.0).
// Operands rounded to TF32 to nearest (not truncated); each output adds its products in a fixed
// order. For the engine's TF32 convolutions (cuDNN's rival there, as the kernels above
// are with TF32 off).
// The forward also takes the encoder's stem: 3 input channels, 7x7, stride 2, padding 3, a
// multiple of 32 outputs (x at any alignment).
bool conv2d_mma_forward_applies(const ConvShape& sh, const float* x, const float* y);
void conv2d_mma_forward(float* y, const float* x, const float* wt, const ConvShape& sh,
                        cudaStream_t stream);
bool conv2d_mma_backward_data_applies(const ConvShape& sh, const float* dy, const float* dx);
void conv2d_mma_backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                              GradMode mode, cudaStream_t stream);
// dwt (+)= correlation of x with dy over the batch, for the forward's shapes above: the
// products of each block's pixels (at most conv2d_mma_backward_filter_pixels(sh) of them a
// launch) added on the tensor cores in float, the blocks' sums in double through `workspace`
// (conv2d_mma_backward_filter_workspace_bytes(sh), scratch) in a fixed order, rounded to float
// once. In conv2d_mma_backward_filter_waves(sh) launches (UNETCU_MMA_WGRAD_WAVES, default 1,
// or set_conv2d_mma_filter_waves; 1 to 16, anything else refused), each a share of every
// block's pixels, so that a stream of higher priority gets SMs between them
// (kernels/cuda/conv_mma.cu).
bool conv2d_mma_backward_filter_applies(const ConvShape& sh, const float* dy, const float* x);
size_t conv2d_mma_backward_filter_workspace_bytes(const ConvShape& sh);
int64_t conv2d_mma_backward_filter_pixels(const ConvShape& sh);
int conv2d_mma_backward_filter_waves(const ConvShape& sh);
void set_conv2d_mma_filter_waves(int waves);
int conv2d_mma_filter_waves_setting();  // the process's setting (shapes may take fewer)
void conv2d_mma_backward_filter(float* dwt, const float* dy, const float* x, const ConvShape& sh,
                                GradMode mode, void* workspace, cudaStream_t stream);

// Which of the two kinds above serves a convolution (kernels/cuda/conv_direct.cu): with TF32
// convolutions (`tf32`) the tensor-core kernel where it applies, else the fp32 one where it
// applies, else none. Whether it runs, forced or timed against cuDNN, is the caller's policy;
// the functions below run the chosen one (not none).
enum class DirectKernel { none, fp32, tensor_cores };
const char* direct_kernel_name(DirectKernel kernel);  // "tensor-core kernel", "direct kernel"
DirectKernel direct_forward_kernel(const ConvShape& sh, const float* x, const float* y,
                                   bool tf32);
DirectKernel direct_backward_data_kernel(const ConvShape& sh, const float* dy, const float* dx,
                                         bool tf32);
DirectKernel direct_backward_filter_kernel(const ConvShape& sh, const float* dy, const float* x,
                                           bool tf32);
void direct_forward(DirectKernel kernel, float* y, const float* x, const float* wt,
                    const ConvShape& sh, cudaStream_t stream);
void direct_backward_data(DirectKernel kernel, float* dx, const float* dy, const float* wt,
                          const ConvShape& sh, GradMode mode, cudaStream_t stream);
size_t direct_backward_filter_workspace_bytes(DirectKernel kernel, const ConvShape& sh);
void direct_backward_filter(DirectKernel kernel, float* dwt, const float* dy, const float* x,
                            const ConvShape& sh, GradMode mode, void* workspace,
                            cudaStream_t stream);

// The gathers of the GEMM convolutions (conv2d_forward_gemm_dims and
// conv2d_backward_data_gemm_dims above), which apply where the column matrix is at most
// kConvGemmMaxColBytes (at batch 16, 128x128: encoder layers 1-4, the stem's forward, the
// first decoder blocks in part). 40 MiB takes in the stem's 7x7 forward (38.5 MB of columns),
// where cuDNN runs a generic float32 kernel (53-57 us on an H100 for 0.6 G multiply-adds,
// bench/RESULTS.md), and layer1's 3x3 (37.7 MB); the timing against cuDNN decides, and the
// columns still fit the H100's 50 MB L2.
//   conv2d_im2col  col = im2col(x): every col entry written, 0 in the padding;
//   conv2d_col2im  dx (+)= col2im(col): each dx element adds its at most r*s taps in float,
//                  taps in (r, s) order, then the old value when accumulating; no atomics.
constexpr size_t kConvGemmMaxColBytes = size_t(40) << 20;
bool conv2d_gemm_applies(const ConvShape& sh);
void conv2d_im2col(float* col, const float* x, const ConvShape& sh, cudaStream_t stream);
void conv2d_col2im(float* dx, const float* col, const ConvShape& sh, GradMode mode,
                   cudaStream_t stream);

// y[n][p][q][k] += bias[k]: the bias of conv2d_forward, applied after a bias-free convolution.
void conv2d_add_bias(float* y, const float* bias, const ConvShape& sh, cudaStream_t stream);
// dbias[k] (+)= sum over n, p, q of dy: a deterministic two-stage reduction through
// `workspace` (at least conv2d_backward_bias_workspace_bytes(sh), 8-byte aligned, scratch).
size_t conv2d_backward_bias_workspace_bytes(const ConvShape& sh);
void conv2d_backward_bias(float* dbias, const float* dy, const ConvShape& sh, GradMode mode,
                          void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace unetcu
