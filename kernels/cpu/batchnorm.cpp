// kernels/cpu/batchnorm.cpp: reference BatchNorm2d over NHWC rows (PyTorch semantics), in
// float and in double (the double build serves the gradient checks).
//
// Per-channel statistics are sums over `rows` = n*h*w values, accumulated in double. The rows
// are cut into fixed chunks whose partial sums are added in chunk order, so the result is the
// same for any number of OpenMP threads: training runs stay reproducible bit for bit.
#include "kernels/batchnorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/target_clones.h"

namespace unetcu::cpu {
namespace {

// Rows per chunk of a reduction. Fixed (never derived from the thread count) so the order of
// the double additions, and therefore the result, never changes.
constexpr int64_t kRowsPerChunk = 2048;

// Below this many elements a pass runs on one thread: a parallel region's start and end cost
// more than such a pass, and the 4x4 and 8x8 maps are that small.
constexpr int64_t kMinParallelWork = int64_t(1) << 16;

// Channels per work item of a reduction: with few rows (the 8x8 and 4x4 maps are one chunk)
// the channels are what can be shared between threads. Each channel's additions run in the
// same order whichever item holds it.
constexpr int kChannelsPerItem = 64;

// Rows of x and dy are shared out in blocks of about this many elements.
constexpr int64_t kElementsPerBlock = int64_t(1) << 14;

// sums[j][c] = sum over rows of the j-th quantity that add_rows(acc, row_begin, row_end,
// c_begin, c_end) adds into acc[j][c] for the rows and channels it is given.
template <int kSums, typename AddRows>
void channel_sums(double* sums, int64_t rows, int c, AddRows add_rows) {
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  const int64_t groups = (c + kChannelsPerItem - 1) / kChannelsPerItem;
  const int64_t width = int64_t(kSums) * c;
  std::vector<double> partial(size_t(chunks * width), 0.0);
#pragma omp parallel for schedule(static) if (chunks * groups > 1 && rows * c >= kMinParallelWork)
  for (int64_t item = 0; item < chunks * groups; ++item) {
    const int64_t chunk = item / groups;
    const int c_begin = int(item % groups) * kChannelsPerItem;
    add_rows(partial.data() + chunk * width, chunk * kRowsPerChunk,
             std::min(rows, (chunk + 1) * kRowsPerChunk), c_begin,
             std::min(c, c_begin + kChannelsPerItem));
  }
  std::fill(sums, sums + width, 0.0);
  for (int64_t chunk = 0; chunk < chunks; ++chunk)
    for (int64_t j = 0; j < width; ++j) sums[j] += partial[size_t(chunk * width + j)];
}

// y = x * scale[c] + shift[c]: both forward modes end in this per-channel affine map.
template <typename T>
void affine(T* y, const T* x, const std::vector<T>& scale, const std::vector<T>& shift,
            const BatchNormShape& sh) {
  const int c_count = sh.c;
  const T* sc = scale.data();
  const T* sf = shift.data();
#pragma omp parallel for schedule(static) if (sh.rows * c_count >= kMinParallelWork)
  for (int64_t row = 0; row < sh.rows; ++row) {
    const T* xr = x + row * c_count;
    T* yr = y + row * c_count;
    for (int c = 0; c < c_count; ++c) yr[c] = xr[c] * sc[c] + sf[c];
  }
}

template <typename T>
void train_forward_impl(T* y, T* save_mean, T* save_invstd, T* running_mean, T* running_var,
                        const T* x, const T* gamma, const T* beta, const BatchNormShape& sh,
                        double momentum, double eps) {
  const int c_count = sh.c;
  // One pass: sums of (x - x[0]) and its square. Shifting by the first row keeps the
  // E[d^2] - E[d]^2 form free of cancellation (the shift sits within a few standard
  // deviations of the mean) while reading x only once.
  std::vector<double> sums(2 * size_t(c_count));
  channel_sums<2>(sums.data(), sh.rows, c_count,
                  [&](double* acc, int64_t row_begin, int64_t row_end, int c_begin, int c_end) {
                    for (int64_t row = row_begin; row < row_end; ++row) {
                      const T* xr = x + row * c_count;
                      for (int c = c_begin; c < c_end; ++c) {
                        const double d = double(xr[c]) - double(x[c]);
                        acc[c] += d;
                        acc[c_count + c] += d * d;
                      }
                    }
                  });
  const double n = double(sh.rows);
  // PyTorch needs n > 1 in training; the callers guarantee it, the guard only avoids inf.
  const double unbias = sh.rows > 1 ? n / (n - 1) : 1.0;
  const size_t channels = size_t(c_count);
  std::vector<T> scale(channels), shift(channels);
  for (int c = 0; c < c_count; ++c) {
    const double mean_shifted = sums[size_t(c)] / n;
    const double var = std::max(sums[size_t(c_count + c)] / n - mean_shifted * mean_shifted, 0.0);
    const double mean = double(x[c]) + mean_shifted;
    const double invstd = 1.0 / std::sqrt(var + eps);
    save_mean[c] = T(mean);
    save_invstd[c] = T(invstd);
    running_mean[c] = T((1 - momentum) * double(running_mean[c]) + momentum * mean);
    running_var[c] = T((1 - momentum) * double(running_var[c]) + momentum * var * unbias);
    scale[size_t(c)] = T(double(gamma[c]) * invstd);
    shift[size_t(c)] = T(double(beta[c]) - mean * double(gamma[c]) * invstd);
  }
  affine(y, x, scale, shift, sh);
}

template <typename T>
void eval_forward_impl(T* y, const T* x, const T* gamma, const T* beta, const T* running_mean,
                       const T* running_var, const BatchNormShape& sh, double eps) {
  const size_t channels = size_t(sh.c);
  std::vector<T> scale(channels), shift(channels);
  for (int c = 0; c < sh.c; ++c) {
    const double s = double(gamma[c]) / std::sqrt(double(running_var[c]) + eps);
    scale[size_t(c)] = T(s);
    shift[size_t(c)] = T(double(beta[c]) - double(running_mean[c]) * s);
  }
  affine(y, x, scale, shift, sh);
}

// The two passes of the backward over rows [row_begin, row_end). They are the hot loops, so
// they are also compiled for AVX2 (twice the vector width of the x86-64-v2 baseline; no FMA,
// so the roundings are the baseline's and both clones give the same bits).
//
// acc[c] += dy and acc[c_count + c] += dy * (x - mean), channels [c_begin, c_end).
template <typename T>
UNETCU_TARGET_CLONES("avx2")
void backward_sums_rows(double* acc, const T* dy, const T* x, const T* mean, int c_count,
                        int64_t row_begin, int64_t row_end, int c_begin, int c_end) {
  // Two rows per sweep, added one after the other as a sweep per row would: the same sums,
  // with half the loads and stores of acc.
  int64_t row = row_begin;
  for (; row + 1 < row_end; row += 2) {
    const T* xr = x + row * c_count;
    const T* dyr = dy + row * c_count;
    for (int c = c_begin; c < c_end; ++c) {
      const double m = double(mean[c]);
      const double dy0 = double(dyr[c]), dy1 = double(dyr[c_count + c]);
      acc[c] = (acc[c] + dy0) + dy1;
      acc[c_count + c] = (acc[c_count + c] + dy0 * (double(xr[c]) - m)) +
                         dy1 * (double(xr[c_count + c]) - m);
    }
  }
  if (row < row_end) {
    const T* xr = x + row * c_count;
    const T* dyr = dy + row * c_count;
    for (int c = c_begin; c < c_end; ++c) {
      acc[c] += double(dyr[c]);
      acc[c_count + c] += double(dyr[c]) * (double(xr[c]) - double(mean[c]));
    }
  }
}

// dx (+)= a*dy + b*(x - mean) + d per channel. The mode is chosen outside the loops.
template <typename T>
UNETCU_TARGET_CLONES("avx2")
void backward_dx_rows(T* dx, const T* dy, const T* x, const T* mean, const T* a, const T* b,
                      const T* d, int c_count, int64_t row_begin, int64_t row_end,
                      bool accumulate) {
  for (int64_t row = row_begin; row < row_end; ++row) {
    const T* xr = x + row * c_count;
    const T* dyr = dy + row * c_count;
    T* dxr = dx + row * c_count;
    if (accumulate) {
      for (int c = 0; c < c_count; ++c)
        dxr[c] += a[c] * dyr[c] + b[c] * (xr[c] - mean[c]) + d[c];
    } else {
      for (int c = 0; c < c_count; ++c)
        dxr[c] = a[c] * dyr[c] + b[c] * (xr[c] - mean[c]) + d[c];
    }
  }
}

// With xhat = (x - mean) * invstd:
//   dbeta = sum dy,  dgamma = sum dy * xhat,
//   dx = gamma * invstd * (dy - dbeta/n - xhat * dgamma/n)
template <typename T>
void backward_impl(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                   const T* save_mean, const T* save_invstd, const BatchNormShape& sh,
                   GradMode dx_mode, GradMode param_mode) {
  const int c_count = sh.c;
  std::vector<double> sums(2 * size_t(c_count));
  channel_sums<2>(sums.data(), sh.rows, c_count,
                  [&](double* acc, int64_t row_begin, int64_t row_end, int c_begin, int c_end) {
                    backward_sums_rows(acc, dy, x, save_mean, c_count, row_begin, row_end,
                                       c_begin, c_end);
                  });
  const double n = double(sh.rows);
  // dx = a*dy + b*(x - mean) + d per channel.
  const size_t channels = size_t(c_count);
  std::vector<T> a(channels), b(channels), d(channels);
  const bool accumulate_params = param_mode == GradMode::accumulate;
  for (int c = 0; c < c_count; ++c) {
    const double invstd = double(save_invstd[c]);
    const double sum_dy = sums[size_t(c)];
    const double sum_dy_xhat = sums[size_t(c_count + c)] * invstd;
    const double g = double(gamma[c]) * invstd;
    a[size_t(c)] = T(g);
    b[size_t(c)] = T(-g * invstd * sum_dy_xhat / n);
    d[size_t(c)] = T(-g * sum_dy / n);
    dgamma[c] = T(accumulate_params ? double(dgamma[c]) + sum_dy_xhat : sum_dy_xhat);
    dbeta[c] = T(accumulate_params ? double(dbeta[c]) + sum_dy : sum_dy);
  }
  const bool accumulate_dx = dx_mode == GradMode::accumulate;
  const int64_t rows_per_block = std::max<int64_t>(1, kElementsPerBlock / c_count);
  const int64_t blocks = (sh.rows + rows_per_block - 1) / rows_per_block;
#pragma omp parallel for schedule(static) if (sh.rows * c_count >= kMinParallelWork)
  for (int64_t block = 0; block < blocks; ++block)
    backward_dx_rows(dx, dy, x, save_mean, a.data(), b.data(), d.data(), c_count,
                     block * rows_per_block, std::min(sh.rows, (block + 1) * rows_per_block),
                     accumulate_dx);
}

}  // namespace

void batchnorm_train_forward(float* y, float* save_mean, float* save_invstd,
                             float* running_mean, float* running_var, const float* x,
                             const float* gamma, const float* beta, const BatchNormShape& sh,
                             float momentum, float eps) {
  train_forward_impl(y, save_mean, save_invstd, running_mean, running_var, x, gamma, beta, sh,
                     momentum, eps);
}
void batchnorm_train_forward(double* y, double* save_mean, double* save_invstd,
                             double* running_mean, double* running_var, const double* x,
                             const double* gamma, const double* beta, const BatchNormShape& sh,
                             double momentum, double eps) {
  train_forward_impl(y, save_mean, save_invstd, running_mean, running_var, x, gamma, beta, sh,
                     momentum, eps);
}

void batchnorm_eval_forward(float* y, const float* x, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var,
                            const BatchNormShape& sh, float eps) {
  eval_forward_impl(y, x, gamma, beta, running_mean, running_var, sh, eps);
}
void batchnorm_eval_forward(double* y, const double* x, const double* gamma, const double* beta,
                            const double* running_mean, const double* running_var,
                            const BatchNormShape& sh, double eps) {
  eval_forward_impl(y, x, gamma, beta, running_mean, running_var, sh, eps);
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                        const float* gamma, const float* save_mean, const float* save_invstd,
                        const BatchNormShape& sh, GradMode dx_mode, GradMode param_mode) {
  backward_impl(dx, dgamma, dbeta, dy, x, gamma, save_mean, save_invstd, sh, dx_mode,
                param_mode);
}
void batchnorm_backward(double* dx, double* dgamma, double* dbeta, const double* dy,
                        const double* x, const double* gamma, const double* save_mean,
                        const double* save_invstd, const BatchNormShape& sh, GradMode dx_mode,
                        GradMode param_mode) {
  backward_impl(dx, dgamma, dbeta, dy, x, gamma, save_mean, save_invstd, sh, dx_mode,
                param_mode);
}

}  // namespace unetcu::cpu
