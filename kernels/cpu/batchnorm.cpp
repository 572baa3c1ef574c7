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

namespace unetcu::cpu {
namespace {

// Rows per chunk of a reduction. Fixed (never derived from the thread count) so the order of
// the double additions, and therefore the result, never changes.
constexpr int64_t kRowsPerChunk = 2048;

// Below this many elements a pass runs on one thread: a parallel region's start and end cost
// more than such a pass, and the 4x4 and 8x8 maps are that small.
constexpr int64_t kMinParallelWork = int64_t(1) << 16;

// sums[j][c] = sum over rows of the j-th quantity that add_row(row, acc) adds into acc[j][c].
template <int kSums, typename AddRow>
void channel_sums(double* sums, int64_t rows, int c, AddRow add_row) {
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  const int64_t width = int64_t(kSums) * c;
  std::vector<double> partial(size_t(chunks * width), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    double* acc = partial.data() + chunk * width;
    const int64_t end = std::min(rows, (chunk + 1) * kRowsPerChunk);
    for (int64_t row = chunk * kRowsPerChunk; row < end; ++row) add_row(row, acc);
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
  channel_sums<2>(sums.data(), sh.rows, c_count, [&](int64_t row, double* acc) {
    const T* xr = x + row * c_count;
    for (int c = 0; c < c_count; ++c) {
      const double d = double(xr[c]) - double(x[c]);
      acc[c] += d;
      acc[c_count + c] += d * d;
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

// With xhat = (x - mean) * invstd:
//   dbeta = sum dy,  dgamma = sum dy * xhat,
//   dx = gamma * invstd * (dy - dbeta/n - xhat * dgamma/n)
template <typename T>
void backward_impl(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                   const T* save_mean, const T* save_invstd, const BatchNormShape& sh,
                   GradMode dx_mode, GradMode param_mode) {
  const int c_count = sh.c;
  std::vector<double> sums(2 * size_t(c_count));
  channel_sums<2>(sums.data(), sh.rows, c_count, [&](int64_t row, double* acc) {
    const T* xr = x + row * c_count;
    const T* dyr = dy + row * c_count;
    for (int c = 0; c < c_count; ++c) {
      acc[c] += double(dyr[c]);
      acc[c_count + c] += double(dyr[c]) * (double(xr[c]) - double(save_mean[c]));
    }
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
  const T* pa = a.data();
  const T* pb = b.data();
  const T* pd = d.data();
  const bool accumulate_dx = dx_mode == GradMode::accumulate;
#pragma omp parallel for schedule(static) if (sh.rows * c_count >= kMinParallelWork)
  for (int64_t row = 0; row < sh.rows; ++row) {
    const T* xr = x + row * c_count;
    const T* dyr = dy + row * c_count;
    T* dxr = dx + row * c_count;
    if (accumulate_dx) {
      for (int c = 0; c < c_count; ++c)
        dxr[c] += pa[c] * dyr[c] + pb[c] * (xr[c] - save_mean[c]) + pd[c];
    } else {
      for (int c = 0; c < c_count; ++c)
        dxr[c] = pa[c] * dyr[c] + pb[c] * (xr[c] - save_mean[c]) + pd[c];
    }
  }
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
