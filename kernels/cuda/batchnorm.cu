// kernels/cuda/batchnorm.cu: BatchNorm2d over NHWC rows (PyTorch semantics), plus the fusions
// with the ReLU that follows it (y = relu(bn(x))) and with the residual add + ReLU that ends a
// BasicBlock (y = relu(bn(x) + residual)).
//
// Train forward: reduce_rows (common.cuh) sums d = x - x[row 0] and d^2 per channel in double
// (the shift keeps E[d^2] - E[d]^2 free of cancellation, as the CPU reference does); its
// epilogue forms mean/invstd, updates the running statistics and stores gamma*invstd in the
// workspace; then one streaming pass writes y. Backward: reduce_rows sums dy and dy*(x - mean);
// the epilogue writes dgamma/dbeta and per-channel coefficients a, b, d; then one pass writes
// dx = a*dy + b*(x - mean) + d. With a fused ReLU, dy is masked on the fly: by y > 0 at the
// end of a residual block, and after a plain BatchNorm + ReLU by the pre-activation recomputed
// from x (ReluMask below), which the passes read anyway.
// The passes move four channels per access when c % 4 == 0 and the pointers are 16-byte
// aligned (every layer of this network), one otherwise; the multi-block sums move one.
//
// Memory traffic (float elements of the [rows][c] tensor): forward reads x twice and writes y
// once; backward reads dy and x (and y, with the residual fused) twice and writes dx. The
// second read needs a grid-wide barrier first (the statistics), so it is a second kernel; at
// this network's sizes (<= 16 MB per activation at batch 16, 128x128) it is mostly served by
// the H100's 50 MB L2.
// The partials are row_blocks (<= 1024) doubles per channel and sum, small next to the tensor.
// Tensors with few rows (layer4: 256 rows at batch 16) take reduce_then_map instead: one
// kernel, no partials, the barrier a __syncthreads. (The others in one kernel through
// thread-block clusters, or in two, ran 1.3-3x slower on an H100 and were removed:
// bench/RESULTS.md, "Eighth H100 run".)
#include "kernels/batchnorm.h"

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/env.h"

namespace unetcu::cuda {
namespace {

using detail::load_vec;
using detail::relu;
using detail::RowTiling;
using detail::store_vec;
using detail::Vec;

// ---- reductions ------------------------------------------------------------------------------

// Sums for V channels per thread (one vector column: channels col*V .. col*V + V-1); sum k of
// channel j is acc[2*j + k].
template <int V>
struct StatsSrc {
  const float* x;
  int64_t cols;  // in units of V channels
  struct Column {
    const float* x;
    int64_t cols;
    int col;
    double shift[V];
    __device__ void add(double (&acc)[2 * V], int64_t row) const {
      const Vec<float, V> v = load_vec<V>(x, row * cols + col);
      for (int j = 0; j < V; ++j) {
        const double d = double(v.v[j]) - shift[j];
        acc[2 * j] += d;
        acc[2 * j + 1] += d * d;
      }
    }
  };
  __device__ Column column(int, int col) const {
    Column out{x, cols, col, {}};
    for (int j = 0; j < V; ++j) out.shift[j] = double(x[col * V + j]);
    return out;
  }
};

// Hands each channel of a vector column its two sums: epilogues are written per channel, and
// the V channels are the epilogue's parts (common.cuh), run by V threads at once.
template <int V, class E>
struct PerChannel {
  static constexpr int kParts = V;
  using Inputs = typename E::Inputs;
  E e;
  __device__ Inputs load(int batch, int col, int part) const {
    return e.load(batch, col * V + part);
  }
  __device__ void operator()(int batch, int col, int part, const double (&sum)[2 * V],
                             const Inputs& in) const {
    const double pair[2] = {sum[2 * part], sum[2 * part + 1]};
    e(batch, col * V + part, pair, in);
  }
};

// gamma * invstd, the training forward's per-channel scale, formed from the float invstd it
// saves: the backward can then form the same bits again (ReluMask).
__device__ inline float train_scale(float gamma, float invstd) {
  return float(double(gamma) * double(invstd));
}

// The normalisation (x - mean) * scale + beta from centred = x - mean (a float subtraction),
// as one explicitly fused multiply-add: the forward's pass and the backward's recomputation
// of it round alike whatever the compiler would contract. (x - mean)*scale rather than
// x*scale + shift: no cancellation when |mean| >> std.
__device__ inline float normalized(float centred, float scale, float beta) {
  return fmaf(centred, scale, beta);
}

struct StatsEpilogue {
  float* save_mean;
  float* save_invstd;
  float* running_mean;
  float* running_var;
  float* scale;  // workspace: gamma * invstd, for the normalising pass
  const float* x;
  const float* gamma;
  int64_t rows;
  double momentum, eps;
  // What the epilogue reads besides the sums, loaded before the reduction (common.cuh): the
  // shift the sums were taken about (x's first row, as StatsSrc takes it), gamma and the
  // running statistics.
  struct Inputs {
    float shift, gamma, running_mean, running_var;
  };
  __device__ Inputs load(int, int ch) const {
    return {x[ch], gamma[ch], running_mean[ch], running_var[ch]};
  }
  __device__ void operator()(int, int ch, const double (&sum)[2], const Inputs& in) const {
    const double n = double(rows);
    const double mean_shifted = sum[0] / n;
    double var = sum[1] / n - mean_shifted * mean_shifted;
    var = var > 0.0 ? var : 0.0;
    const double mean = double(in.shift) + mean_shifted;
    const double invstd = 1.0 / sqrt(var + eps);
    // PyTorch needs n > 1 in training; the guard only avoids an infinity.
    const double unbias = rows > 1 ? n / (n - 1.0) : 1.0;
    save_mean[ch] = float(mean);
    save_invstd[ch] = float(invstd);
    scale[ch] = train_scale(in.gamma, float(invstd));
    running_mean[ch] = float((1.0 - momentum) * double(in.running_mean) + momentum * mean);
    running_var[ch] = float((1.0 - momentum) * double(in.running_var) + momentum * var * unbias);
  }
};

// The mask of a ReLU fused after the BatchNorm, applied to dy in the backward's passes. Three
// sources: none (y and beta null: no ReLU); the fused output y, y > 0 (needed at the end of a
// residual block, where the residual is added before the ReLU); or x itself (beta set, y
// null): the training forward's normalisation done again with the same operations on the same
// values (x - save_mean, which the passes form anyway, train_scale of save_invstd, beta), whose
// sign is y > 0 bit for bit, so each pass reads dy and x, which it needs anyway, and not y.
template <int V>
struct ReluMask {
  const float* y;
  const float* beta;
  const float* gamma;
  const float* save_invstd;
  struct Column {
    const float* y;
    bool from_x;
    Vec<float, V> scale, beta;
    // What the mask reads at vector index i: y there, when it is the source.
    __device__ Vec<float, V> load(int64_t i) const {
      return y ? load_vec<V>(y, i) : Vec<float, V>{};
    }
    // dy at that index (g), masked; centred: x - save_mean there, in float; yv: load(i).
    __device__ Vec<float, V> apply(Vec<float, V> g, const Vec<float, V>& centred,
                                   const Vec<float, V>& yv) const {
      if (y) {
        for (int k = 0; k < V; ++k) g.v[k] = yv.v[k] > 0.0f ? g.v[k] : 0.0f;
      } else if (from_x) {
        for (int k = 0; k < V; ++k)
          g.v[k] = normalized(centred.v[k], scale.v[k], beta.v[k]) > 0.0f ? g.v[k] : 0.0f;
      }
      return g;
    }
  };
  __device__ Column column(int col) const {
    Column out{y, beta != nullptr, {}, {}};
    if (out.from_x) {
      for (int k = 0; k < V; ++k) {
        const int ch = col * V + k;
        out.scale.v[k] = train_scale(gamma[ch], save_invstd[ch]);
        out.beta.v[k] = beta[ch];
      }
    }
    return out;
  }
};

template <int V>
struct GradSrc {
  const float* dy;
  const float* x;
  const float* save_mean;
  ReluMask<V> mask;
  int64_t cols;    // in units of V channels
  struct Column {
    const float* dy;
    const float* x;
    typename ReluMask<V>::Column mask;
    int64_t cols;
    int col;
    double mean[V];  // save_mean exactly, so float(mean[j]) is save_mean[j] again
    __device__ void add(double (&acc)[2 * V], int64_t row) const {
      const int64_t i = row * cols + col;
      const Vec<float, V> xv = load_vec<V>(x, i);
      Vec<float, V> centred;
      for (int j = 0; j < V; ++j) centred.v[j] = xv.v[j] - float(mean[j]);
      const auto g = mask.apply(load_vec<V>(dy, i), centred, mask.load(i));
      for (int j = 0; j < V; ++j) {
        acc[2 * j] += double(g.v[j]);
        acc[2 * j + 1] += double(g.v[j]) * (double(xv.v[j]) - mean[j]);
      }
    }
  };
  __device__ Column column(int, int col) const {
    Column out{dy, x, mask.column(col), cols, col, {}};
    for (int j = 0; j < V; ++j) out.mean[j] = double(save_mean[col * V + j]);
    return out;
  }
};

// With xhat = (x - mean) * invstd: dbeta = sum dy, dgamma = sum dy*xhat and
// dx = gamma*invstd * (dy - dbeta/n - xhat*dgamma/n) = a*dy + b*(x - mean) + d.
struct GradEpilogue {
  float* dgamma;
  float* dbeta;
  float* coef;  // workspace: a[c], b[c], d[c]
  const float* gamma;
  const float* save_invstd;
  int64_t rows;
  int c;
  bool accumulate_params;
  // What the epilogue reads besides the sums, loaded before the reduction (common.cuh).
  struct Inputs {
    float gamma, invstd, dgamma, dbeta;  // the last two only when accumulating
  };
  __device__ Inputs load(int, int ch) const {
    return {gamma[ch], save_invstd[ch], accumulate_params ? dgamma[ch] : 0.0f,
            accumulate_params ? dbeta[ch] : 0.0f};
  }
  __device__ void operator()(int, int ch, const double (&sum)[2], const Inputs& in) const {
    const double n = double(rows);
    const double invstd = double(in.invstd);
    const double sum_dy = sum[0];
    const double sum_dy_xhat = sum[1] * invstd;
    const double g = double(in.gamma) * invstd;
    coef[ch] = float(g);
    coef[c + ch] = float(-g * invstd * sum_dy_xhat / n);
    coef[2 * c + ch] = float(-g * sum_dy / n);
    dgamma[ch] = float(accumulate_params ? double(in.dgamma) + sum_dy_xhat : sum_dy_xhat);
    dbeta[ch] = float(accumulate_params ? double(in.dbeta) + sum_dy : sum_dy);
  }
};

// ---- streaming passes ------------------------------------------------------------------------

template <int V>
__device__ inline Vec<float, V> channel_values(const float* p, int col) {
  Vec<float, V> out;
  for (int k = 0; k < V; ++k) out.v[k] = p[col * V + k];
  return out;
}

// y = normalized(x - mean, scale, beta) (+ residual) (then relu). `scale` is train_scale from
// the workspace in training; in eval (scale == nullptr) it is formed from the running variance.
template <int V>
struct Normalize {
  float* y;
  const float* x;
  const float* residual;  // may be null
  const float* mean;
  const float* scale;     // null in eval
  const float* gamma;
  const float* running_var;
  const float* beta;
  int64_t cols;           // in units of V channels
  double eps;
  bool apply_relu;
  struct Column {
    float* y;
    const float* x;
    const float* residual;
    int64_t cols;
    int col;
    bool apply_relu;
    Vec<float, V> mean, scale, beta;
    __device__ void operator()(int64_t row) const {
      const int64_t i = row * cols + col;
      auto v = load_vec<V>(x, i);
      for (int k = 0; k < V; ++k) v.v[k] = normalized(v.v[k] - mean.v[k], scale.v[k], beta.v[k]);
      if (residual) {
        const auto r = load_vec<V>(residual, i);
        for (int k = 0; k < V; ++k) v.v[k] += r.v[k];
      }
      if (apply_relu)
        for (int k = 0; k < V; ++k) v.v[k] = relu(v.v[k]);
      store_vec<V>(y, i, v);
    }
  };
  __device__ Column column(int col) const {
    Column out{y, x, residual, cols, col, apply_relu, channel_values<V>(mean, col), {},
               channel_values<V>(beta, col)};
    if (scale) {
      out.scale = channel_values<V>(scale, col);
    } else {
      for (int k = 0; k < V; ++k) {
        const int ch = col * V + k;
        out.scale.v[k] = float(double(gamma[ch]) / sqrt(double(running_var[ch]) + eps));
      }
    }
    return out;
  }
};

// dx (+)= a*g + b*(x - mean) + d with g = dy masked as ReluMask says; with the residual
// fused, dresidual (+)= g as well.
template <int V>
struct GradApply {
  float* dx;
  float* dresidual;  // may be null
  const float* dy;
  ReluMask<V> mask;
  const float* x;
  const float* save_mean;
  const float* coef;
  int64_t cols;      // in units of V channels
  int c;
  bool accumulate_dx, accumulate_dresidual;
  struct Column {
    float* dx;
    float* dresidual;
    const float* dy;
    typename ReluMask<V>::Column mask;
    const float* x;
    int64_t cols;
    int col;
    bool accumulate_dx, accumulate_dresidual;
    Vec<float, V> mean, a, b, d;
    __device__ void operator()(int64_t row) const {
      const int64_t i = row * cols + col;
      const Vec<float, V> xv = load_vec<V>(x, i);
      Vec<float, V> centred;
      for (int k = 0; k < V; ++k) centred.v[k] = xv.v[k] - mean.v[k];
      auto g = mask.apply(load_vec<V>(this->dy, i), centred, mask.load(i));
      Vec<float, V> r;
      for (int k = 0; k < V; ++k) r.v[k] = a.v[k] * g.v[k] + b.v[k] * centred.v[k] + d.v[k];
      if (accumulate_dx) {
        const Vec<float, V> old = load_vec<V>(this->dx, i);
        for (int k = 0; k < V; ++k) r.v[k] = old.v[k] + r.v[k];
      }
      store_vec<V>(this->dx, i, r);
      if (dresidual) {
        if (accumulate_dresidual) {
          const Vec<float, V> old = load_vec<V>(dresidual, i);
          for (int k = 0; k < V; ++k) g.v[k] = old.v[k] + g.v[k];
        }
        store_vec<V>(dresidual, i, g);
      }
    }
  };
  __device__ Column column(int col) const {
    return Column{dx,
                  dresidual,
                  dy,
                  mask.column(col),
                  x,
                  cols,
                  col,
                  accumulate_dx,
                  accumulate_dresidual,
                  channel_values<V>(save_mean, col),
                  channel_values<V>(coef, col),
                  channel_values<V>(coef + c, col),
                  channel_values<V>(coef + 2 * c, col)};
  }
};

// ---- host side -------------------------------------------------------------------------------

// The multi-block sums run one channel per thread: on the H200, four channels per thread (a
// quarter of the row blocks, and each final block's epilogue four channels in a row) made
// these BatchNorms 3-5 us slower each; measured again with as many row blocks as now, each
// channel's epilogue in its own thread and the final loads unrolled, still 4-5 us slower at
// encoder.bn1 and the step 6% slower (bench/RESULTS.md, "Chained launches measured").
RowTiling stats_tiling(const BatchNormShape& sh) { return detail::reduce_tiling(sh.rows, sh.c); }
bool vectorizable(const BatchNormShape& sh) { return sh.c % 4 == 0; }

// Workspace: [partials: 2 sums x channels x row blocks, double][coefficients: 3 x c float].
double* partials_of(void* workspace) { return static_cast<double*>(workspace); }
size_t partials_bytes(const BatchNormShape& sh) {
  return detail::align256(stats_tiling(sh).partial_count(2) * sizeof(double));
}

EnvSwitch g_relu_mask_from_input{"UNETCU_BN_RELU_MASK_FROM_INPUT", true};
EnvSwitch g_pass_last_rows_first{"UNETCU_BN_PASS_LAST_FIRST", false};

float* coefs_of(void* workspace, const BatchNormShape& sh) {
  return reinterpret_cast<float*>(static_cast<char*>(workspace) + partials_bytes(sh));
}

// The sums `src` (one channel per thread) and `vector_src` (V channels per thread) with their
// epilogue, then the pass `map` over the same rows at vector width V: one kernel,
// reduce_then_map, when V == 4 and the rows fit one block per vector column; else reduce_rows
// then map_rows (three kernels), or map_rows_last_first with UNETCU_BN_PASS_LAST_FIRST=1: the
// pass then reads first the rows the sums read last (kernels/batchnorm.h).
template <int V, class Src, class VectorSrc, class Epilogue, class Map>
void reduce_then_apply(const Src& src, const VectorSrc& vector_src, const Epilogue& epilogue,
                       const Map& map, const BatchNormShape& sh, void* workspace,
                       cudaStream_t stream) {
  if constexpr (V == 4) {
    detail::SmallTiling small;
    if (detail::small_tiling(sh.rows, sh.c / V, int(V * sizeof(float)), &small)) {
      detail::reduce_then_map<2 * V>(vector_src, PerChannel<V, Epilogue>{epilogue}, map, small,
                                     stream);
      return;
    }
  }
  detail::reduce_rows<2>(src, epilogue, stats_tiling(sh), partials_of(workspace), stream);
  if (g_pass_last_rows_first.get())
    detail::map_rows_last_first(map, sh.rows, sh.c / V, stream);
  else
    detail::map_rows(map, sh.rows, sh.c / V, stream);
}

void normalize_pass(float* y, const float* x, const float* residual, const float* mean,
                    const float* scale, const float* gamma, const float* running_var,
                    const float* beta, const BatchNormShape& sh, float eps, bool apply_relu,
                    cudaStream_t stream) {
  if (vectorizable(sh) && detail::all_vec4(y, x, residual)) {
    detail::map_rows(Normalize<4>{y, x, residual, mean, scale, gamma, running_var, beta,
                                  sh.c / 4, double(eps), apply_relu},
                     sh.rows, sh.c / 4, stream);
  } else {
    detail::map_rows(Normalize<1>{y, x, residual, mean, scale, gamma, running_var, beta, sh.c,
                                  double(eps), apply_relu},
                     sh.rows, sh.c, stream);
  }
}

template <int V>
void train_forward_v(float* y, float* save_mean, float* save_invstd, float* running_mean,
                     float* running_var, const float* x, const float* residual,
                     const float* gamma, const float* beta, const BatchNormShape& sh,
                     float momentum, float eps, bool apply_relu, void* workspace,
                     cudaStream_t stream) {
  float* scale = coefs_of(workspace, sh);
  const StatsEpilogue stats{save_mean, save_invstd, running_mean, running_var, scale, x,
                            gamma,     sh.rows,     double(momentum), double(eps)};
  reduce_then_apply<V>(StatsSrc<1>{x, sh.c}, StatsSrc<V>{x, sh.c / V}, stats,
                       Normalize<V>{y, x, residual, save_mean, scale, nullptr, nullptr, beta,
                                    sh.c / V, double(eps), apply_relu},
                       sh, workspace, stream);
}

void train_forward(float* y, float* save_mean, float* save_invstd, float* running_mean,
                   float* running_var, const float* x, const float* residual, const float* gamma,
                   const float* beta, const BatchNormShape& sh, float momentum, float eps,
                   bool apply_relu, void* workspace, cudaStream_t stream) {
  if (sh.c <= 0 || sh.rows <= 0) return;
  if (vectorizable(sh) && detail::all_vec4(y, x, residual))
    train_forward_v<4>(y, save_mean, save_invstd, running_mean, running_var, x, residual, gamma,
                       beta, sh, momentum, eps, apply_relu, workspace, stream);
  else
    train_forward_v<1>(y, save_mean, save_invstd, running_mean, running_var, x, residual, gamma,
                       beta, sh, momentum, eps, apply_relu, workspace, stream);
}

// The ReLU mask's source (ReluMask): y (masked by y > 0) or beta (recomputed from x), at most
// one of them given; neither: no ReLU.
template <int V>
void backward_v(float* dx, float* dresidual, float* dgamma, float* dbeta, const float* dy,
                const float* y, const float* beta, const float* x, const float* gamma,
                const float* save_mean, const float* save_invstd, const BatchNormShape& sh,
                bool acc_dx, bool acc_res, bool acc_params, void* workspace,
                cudaStream_t stream) {
  float* coef = coefs_of(workspace, sh);
  const ReluMask<1> scalar_mask{y, beta, gamma, save_invstd};
  const ReluMask<V> vector_mask{y, beta, gamma, save_invstd};
  reduce_then_apply<V>(
      GradSrc<1>{dy, x, save_mean, scalar_mask, sh.c},
      GradSrc<V>{dy, x, save_mean, vector_mask, sh.c / V},
      GradEpilogue{dgamma, dbeta, coef, gamma, save_invstd, sh.rows, sh.c, acc_params},
      GradApply<V>{dx, dresidual, dy, vector_mask, x, save_mean, coef, sh.c / V, sh.c, acc_dx,
                   acc_res},
      sh, workspace, stream);
}

void backward(float* dx, float* dresidual, float* dgamma, float* dbeta, const float* dy,
              const float* y, const float* beta, const float* x, const float* gamma,
              const float* save_mean, const float* save_invstd, const BatchNormShape& sh,
              GradMode dx_mode, GradMode dresidual_mode, GradMode param_mode, void* workspace,
              cudaStream_t stream) {
  if (sh.c <= 0 || sh.rows <= 0) return;
  const bool acc_dx = dx_mode == GradMode::accumulate;
  const bool acc_res = dresidual_mode == GradMode::accumulate;
  const bool acc_params = param_mode == GradMode::accumulate;
  if (vectorizable(sh) && detail::all_vec4(dx, dresidual, dy, y, x))
    backward_v<4>(dx, dresidual, dgamma, dbeta, dy, y, beta, x, gamma, save_mean, save_invstd, sh,
                  acc_dx, acc_res, acc_params, workspace, stream);
  else
    backward_v<1>(dx, dresidual, dgamma, dbeta, dy, y, beta, x, gamma, save_mean, save_invstd, sh,
                  acc_dx, acc_res, acc_params, workspace, stream);
}

}  // namespace

void set_batchnorm_relu_mask_from_input(bool on) { g_relu_mask_from_input.set(on); }
bool batchnorm_relu_mask_from_input() { return g_relu_mask_from_input.get(); }
void set_batchnorm_pass_last_first(bool on) { g_pass_last_rows_first.set(on); }
bool batchnorm_pass_last_first() { return g_pass_last_rows_first.get(); }

int batchnorm_kernel_count(const BatchNormShape& sh) {
  if (sh.c <= 0 || sh.rows <= 0) return 0;
  detail::SmallTiling small;  // as reduce_then_apply decides
  const bool one = vectorizable(sh) &&
                   detail::small_tiling(sh.rows, sh.c / 4, int(4 * sizeof(float)), &small);
  return one ? 1 : 3;
}

size_t batchnorm_workspace_bytes(const BatchNormShape& sh) {
  return partials_bytes(sh) + detail::align256(3 * size_t(sh.c > 0 ? sh.c : 0) * sizeof(float));
}

void batchnorm_train_forward(float* y, float* save_mean, float* save_invstd,
                             float* running_mean, float* running_var, const float* x,
                             const float* gamma, const float* beta, const BatchNormShape& sh,
                             float momentum, float eps, void* workspace, cudaStream_t stream) {
  train_forward(y, save_mean, save_invstd, running_mean, running_var, x, nullptr, gamma, beta, sh,
                momentum, eps, false, workspace, stream);
}

void batchnorm_relu_train_forward(float* y, float* save_mean, float* save_invstd,
                                  float* running_mean, float* running_var, const float* x,
                                  const float* gamma, const float* beta, const BatchNormShape& sh,
                                  float momentum, float eps, void* workspace,
                                  cudaStream_t stream) {
  train_forward(y, save_mean, save_invstd, running_mean, running_var, x, nullptr, gamma, beta, sh,
                momentum, eps, true, workspace, stream);
}

void batchnorm_add_relu_train_forward(float* y, float* save_mean, float* save_invstd,
                                      float* running_mean, float* running_var, const float* x,
                                      const float* residual, const float* gamma,
                                      const float* beta, const BatchNormShape& sh, float momentum,
                                      float eps, void* workspace, cudaStream_t stream) {
  train_forward(y, save_mean, save_invstd, running_mean, running_var, x, residual, gamma, beta,
                sh, momentum, eps, true, workspace, stream);
}

void batchnorm_eval_forward(float* y, const float* x, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var,
                            const BatchNormShape& sh, float eps, cudaStream_t stream) {
  normalize_pass(y, x, nullptr, running_mean, nullptr, gamma, running_var, beta, sh, eps, false,
                 stream);
}

void batchnorm_relu_eval_forward(float* y, const float* x, const float* gamma, const float* beta,
                                 const float* running_mean, const float* running_var,
                                 const BatchNormShape& sh, float eps, cudaStream_t stream) {
  normalize_pass(y, x, nullptr, running_mean, nullptr, gamma, running_var, beta, sh, eps, true,
                 stream);
}

void batchnorm_add_relu_eval_forward(float* y, const float* x, const float* residual,
                                     const float* gamma, const float* beta,
                                     const float* running_mean, const float* running_var,
                                     const BatchNormShape& sh, float eps, cudaStream_t stream) {
  normalize_pass(y, x, residual, running_mean, nullptr, gamma, running_var, beta, sh, eps, true,
                 stream);
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                        const float* gamma, const float* save_mean, const float* save_invstd,
                        const BatchNormShape& sh, GradMode dx_mode, GradMode param_mode,
                        void* workspace, cudaStream_t stream) {
  backward(dx, nullptr, dgamma, dbeta, dy, nullptr, nullptr, x, gamma, save_mean, save_invstd, sh,
           dx_mode, GradMode::overwrite, param_mode, workspace, stream);
}

void batchnorm_relu_backward(float* dx, float* dgamma, float* dbeta, const float* dy,
                             const float* y, const float* x, const float* gamma,
                             const float* beta, const float* save_mean, const float* save_invstd,
                             const BatchNormShape& sh, GradMode dx_mode, GradMode param_mode,
                             void* workspace, cudaStream_t stream) {
  const bool from_x = batchnorm_relu_mask_from_input();
  backward(dx, nullptr, dgamma, dbeta, dy, from_x ? nullptr : y, from_x ? beta : nullptr, x, gamma,
           save_mean, save_invstd, sh, dx_mode, GradMode::overwrite, param_mode, workspace,
           stream);
}

void batchnorm_add_relu_backward(float* dx, float* dresidual, float* dgamma, float* dbeta,
                                 const float* dy, const float* y, const float* x,
                                 const float* gamma, const float* save_mean,
                                 const float* save_invstd, const BatchNormShape& sh,
                                 GradMode dx_mode, GradMode dresidual_mode, GradMode param_mode,
                                 void* workspace, cudaStream_t stream) {
  backward(dx, dresidual, dgamma, dbeta, dy, y, nullptr, x, gamma, save_mean, save_invstd, sh,
           dx_mode, dresidual_mode, param_mode, workspace, stream);
}

}  // namespace unetcu::cuda
