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
// kernel, no partials, the barrier a __syncthreads. With clusters on (set_batchnorm_cluster,
// opt-in) most others take cluster_reduce_then_map: one kernel, the barrier a cluster's.
#include "kernels/batchnorm.h"

#include <atomic>
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/fastest_path.h"

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
    // A row's loads apart from its additions, so that the cluster blocks' loops can issue a
    // batch of rows' loads first (common.cuh, ColumnPart).
    using Loaded = Vec<float, V>;
    __device__ Loaded load(int64_t row) const { return load_vec<V>(x, row * cols + col); }
    __device__ void add(double (&acc)[2 * V], int64_t row) const { add(acc, load(row)); }
    __device__ void add(double (&acc)[2 * V], const Loaded& v) const {
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
// the V channels are the epilogue's parts (common.cuh), run by V threads at once. Its
// coefficients (E::Coefs: what the pass after it needs of the channel, E::coefficients) are
// the same values the epilogue writes to memory, formed without writing anything, for the
// cluster kernel's blocks (common.cuh, cluster_reduce_then_map).
template <int V, class E>
struct PerChannel {
  static constexpr int kParts = V;
  using Coefs = typename E::Coefs;
  E e;
  __device__ void operator()(int batch, int col, int part, const double (&sum)[2 * V]) const {
    const double pair[2] = {sum[2 * part], sum[2 * part + 1]};
    e(batch, col * V + part, pair);
  }
  __device__ Coefs coefficients(int col, int part, const double (&sum)[2 * V]) const {
    const double pair[2] = {sum[2 * part], sum[2 * part + 1]};
    return e.coefficients(col * V + part, pair);
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
  struct Stats {
    double mean, var, invstd;
  };
  __device__ Stats stats(int ch, const double (&sum)[2]) const {
    const double n = double(rows);
    const double mean_shifted = sum[0] / n;
    double var = sum[1] / n - mean_shifted * mean_shifted;
    var = var > 0.0 ? var : 0.0;
    return {double(x[ch]) + mean_shifted, var, 1.0 / sqrt(var + eps)};
  }
  // The normalising pass's mean and scale, as saved below.
  struct Coefs {
    float mean, scale;
  };
  __device__ Coefs coefs_of(int ch, const Stats& s) const {
    return {float(s.mean), train_scale(gamma[ch], float(s.invstd))};
  }
  __device__ Coefs coefficients(int ch, const double (&sum)[2]) const {
    return coefs_of(ch, stats(ch, sum));
  }
  __device__ void operator()(int, int ch, const double (&sum)[2]) const {
    const Stats s = stats(ch, sum);
    const Coefs k = coefs_of(ch, s);
    // PyTorch needs n > 1 in training; the guard only avoids an infinity.
    const double n = double(rows);
    const double unbias = rows > 1 ? n / (n - 1.0) : 1.0;
    save_mean[ch] = k.mean;
    save_invstd[ch] = float(s.invstd);
    scale[ch] = k.scale;
    running_mean[ch] = float((1.0 - momentum) * double(running_mean[ch]) + momentum * s.mean);
    running_var[ch] =
        float((1.0 - momentum) * double(running_var[ch]) + momentum * s.var * unbias);
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
    // A row's loads apart from its additions (as StatsSrc's).
    struct Loaded {
      Vec<float, V> x, dy, y;
    };
    __device__ Loaded load(int64_t row) const {
      const int64_t i = row * cols + col;
      return {load_vec<V>(x, i), load_vec<V>(dy, i), mask.load(i)};
    }
    __device__ void add(double (&acc)[2 * V], int64_t row) const { add(acc, load(row)); }
    __device__ void add(double (&acc)[2 * V], const Loaded& in) const {
      Vec<float, V> centred;
      for (int j = 0; j < V; ++j) centred.v[j] = in.x.v[j] - float(mean[j]);
      const auto g = mask.apply(in.dy, centred, in.y);
      for (int j = 0; j < V; ++j) {
        acc[2 * j] += double(g.v[j]);
        acc[2 * j + 1] += double(g.v[j]) * (double(in.x.v[j]) - mean[j]);
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
  // The gradient pass's a, b and d, as written to coef below.
  struct Coefs {
    float a, b, d;
  };
  __device__ Coefs coefficients(int ch, const double (&sum)[2]) const {
    const double n = double(rows);
    const double invstd = double(save_invstd[ch]);
    const double sum_dy_xhat = sum[1] * invstd;
    const double g = double(gamma[ch]) * invstd;
    return {float(g), float(-g * invstd * sum_dy_xhat / n), float(-g * sum[0] / n)};
  }
  __device__ void operator()(int, int ch, const double (&sum)[2]) const {
    const Coefs k = coefficients(ch, sum);
    coef[ch] = k.a;
    coef[c + ch] = k.b;
    coef[2 * c + ch] = k.d;
    const double sum_dy = sum[0];
    const double sum_dy_xhat = sum[1] * double(save_invstd[ch]);
    dgamma[ch] = float(accumulate_params ? double(dgamma[ch]) + sum_dy_xhat : sum_dy_xhat);
    dbeta[ch] = float(accumulate_params ? double(dbeta[ch]) + sum_dy : sum_dy);
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
    // A row's loads apart from its computation and store, so that the cluster blocks' pass can
    // issue a batch of rows' loads before the batch's stores (common.cuh, ColumnPart).
    struct Loaded {
      Vec<float, V> x, residual;
    };
    __device__ Loaded load(int64_t row) const {
      const int64_t i = row * cols + col;
      return {load_vec<V>(x, i), residual ? load_vec<V>(residual, i) : Vec<float, V>{}};
    }
    __device__ void store(int64_t row, const Loaded& in) const {
      auto v = in.x;
      for (int k = 0; k < V; ++k) v.v[k] = normalized(v.v[k] - mean.v[k], scale.v[k], beta.v[k]);
      if (residual)
        for (int k = 0; k < V; ++k) v.v[k] += in.residual.v[k];
      if (apply_relu)
        for (int k = 0; k < V; ++k) v.v[k] = relu(v.v[k]);
      store_vec<V>(y, row * cols + col, v);
    }
    __device__ void operator()(int64_t row) const { store(row, load(row)); }
  };
  // Training, with the channels' mean and scale at hand (StatsEpilogue::coefficients).
  __device__ Column column_with(int col, const StatsEpilogue::Coefs* c) const {
    Column out{y, x, residual, cols, col, apply_relu, {}, {}, channel_values<V>(beta, col)};
    for (int k = 0; k < V; ++k) {
      out.mean.v[k] = c[k].mean;
      out.scale.v[k] = c[k].scale;
    }
    return out;
  }
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
    // A row's loads (the old outputs too, when accumulating) apart from its computation and
    // stores (as Normalize's).
    struct Loaded {
      Vec<float, V> x, dy, y, dx, dresidual;
    };
    __device__ Loaded load(int64_t row) const {
      const int64_t i = row * cols + col;
      return {load_vec<V>(x, i), load_vec<V>(this->dy, i), mask.load(i),
              accumulate_dx ? load_vec<V>(this->dx, i) : Vec<float, V>{},
              dresidual && accumulate_dresidual ? load_vec<V>(dresidual, i) : Vec<float, V>{}};
    }
    __device__ void store(int64_t row, const Loaded& in) const {
      const int64_t i = row * cols + col;
      Vec<float, V> centred;
      for (int k = 0; k < V; ++k) centred.v[k] = in.x.v[k] - mean.v[k];
      auto g = mask.apply(in.dy, centred, in.y);
      Vec<float, V> r;
      for (int k = 0; k < V; ++k) r.v[k] = a.v[k] * g.v[k] + b.v[k] * centred.v[k] + d.v[k];
      if (accumulate_dx)
        for (int k = 0; k < V; ++k) r.v[k] = in.dx.v[k] + r.v[k];
      store_vec<V>(this->dx, i, r);
      if (dresidual) {
        if (accumulate_dresidual)
          for (int k = 0; k < V; ++k) g.v[k] = in.dresidual.v[k] + g.v[k];
        store_vec<V>(dresidual, i, g);
      }
    }
    __device__ void operator()(int64_t row) const { store(row, load(row)); }
  };
  // With the channels' a, b and d at hand (GradEpilogue::coefficients).
  __device__ Column column_with(int col, const GradEpilogue::Coefs* k) const {
    Column out = column(col, false);
    for (int j = 0; j < V; ++j) {
      out.a.v[j] = k[j].a;
      out.b.v[j] = k[j].b;
      out.d.v[j] = k[j].d;
    }
    return out;
  }
  __device__ Column column(int col, bool load_coefs = true) const {
    Vec<float, V> a{}, b{}, d{};
    if (load_coefs) {
      a = channel_values<V>(coef, col);
      b = channel_values<V>(coef + c, col);
      d = channel_values<V>(coef + 2 * c, col);
    }
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
                  a,
                  b,
                  d};
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

// Workspace: [partials: 2 sums x channels x row blocks, double][coefficients: 3 x c float]
// [path timing's scratch: 2 x c float].
double* partials_of(void* workspace) { return static_cast<double*>(workspace); }
size_t partials_bytes(const BatchNormShape& sh) {
  size_t doubles = stats_tiling(sh).partial_count(2);
  // The two-kernel path's (partials_then_map): two sums a channel from each of its parts.
  const size_t two_kernels = 2 * size_t(sh.c) * size_t(detail::kMaxParts);
  if (two_kernels > doubles) doubles = two_kernels;
  return detail::align256(doubles * sizeof(double));
}

EnvSwitch g_cluster{"UNETCU_BN_CLUSTER", false};
EnvSwitch g_two_kernels{"UNETCU_BN_TWO_KERNELS", false};
// The largest cluster (batchnorm_cluster_max); 0: not read from the environment yet.
std::atomic<int> g_cluster_max{0};

bool valid_cluster_max(long blocks) {
  return blocks == long(kMaxClusterBlocks) || blocks == long(kMaxNonPortableClusterBlocks);
}
std::string cluster_max_expected() {
  return "expected " + std::to_string(kMaxClusterBlocks) + " or " +
         std::to_string(kMaxNonPortableClusterBlocks);
}
EnvSwitch g_relu_mask_from_input{"UNETCU_BN_RELU_MASK_FROM_INPUT", true};

float* coefs_of(void* workspace, const BatchNormShape& sh) {
  return reinterpret_cast<float*>(static_cast<char*>(workspace) + partials_bytes(sh));
}
// Takes the side effects of path timing's runs (train_forward_v, backward_v).
float* scratch_of(void* workspace, const BatchNormShape& sh) {
  return coefs_of(workspace, sh) + 3 * size_t(sh.c);
}

// The paths of a BatchNorm too large for reduce_then_map (kernels/path_timing.h names them in
// its report): reduce_rows then map_rows (three kernels, any shape); cluster_reduce_then_map in
// clusters of up to 8 or up to 16 blocks (one kernel); partials_then_map (two kernels). The
// last three need float4 columns enough (cluster_tiling), the clusters a device that places
// them.
enum Path : int { kThreeKernels, kCluster8, kCluster16, kTwoKernels, kPaths };
constexpr const char* kPathNames[kPaths] = {"three_kernels", "cluster8", "cluster16",
                                            "two_kernels"};

// `op` at `sh` with its paths; untimed, the first that applies as the settings say
// (kernels/batchnorm.h).
detail::PathOp path_op(const char* op, const BatchNormShape& sh) {
  detail::PathOp out(op, kPathNames, kPaths, {sh.rows, sh.c});
  if (batchnorm_cluster())
    out.then(batchnorm_cluster_max() == int(kMaxNonPortableClusterBlocks) ? kCluster16
                                                                          : kCluster8);
  if (batchnorm_two_kernels()) out.then(kTwoKernels);
  return out.then(kThreeKernels);
}

// The sums (Src<1>: one channel per thread; Src<V>: V channels per thread) with their
// epilogue, and the pass `map` after them over the same rows at vector width V.
template <int V, template <int> class Src, class Epilogue, class Map>
struct BnParts {
  Src<1> scalar_src;
  Src<V> vector_src;
  Epilogue epilogue;
  Map map;
};

// Launches path `path` of `parts`; false, launching nothing, where it does not apply.
template <int V, template <int> class Src, class Epilogue, class Map>
bool launch_path(int path, const BnParts<V, Src, Epilogue, Map>& parts, const BatchNormShape& sh,
                 void* workspace, cudaStream_t stream) {
  if (path == kThreeKernels) {
    detail::reduce_rows<2>(parts.scalar_src, parts.epilogue, stats_tiling(sh),
                           partials_of(workspace), stream);
    detail::map_rows(parts.map, sh.rows, sh.c / V, stream);
    return true;
  }
  if constexpr (V == 4) {
    const PerChannel<V, Epilogue> per_channel{parts.epilogue};
    detail::ClusterTiling t;
    const int elem = int(V * sizeof(float));
    if (path == kCluster8 || path == kCluster16)
      return detail::cluster_tiling(sh.rows, sh.c / V, elem, &t,
                                    int(path == kCluster16 ? kMaxNonPortableClusterBlocks
                                                           : kMaxClusterBlocks)) &&
             detail::cluster_reduce_then_map<2 * V>(parts.vector_src, per_channel, parts.map, t,
                                                    stream);
    if (path == kTwoKernels) {
      // As many parts a column as give about 256 blocks.
      if (!detail::cluster_tiling(sh.rows, sh.c / V, elem, &t, detail::kMaxParts,
                                  detail::kPartsTargetBlocks))
        return false;
      detail::partials_then_map<2 * V>(parts.vector_src, per_channel, parts.map, t,
                                       partials_of(workspace), stream);
      return true;
    }
  }
  return false;
}

// Runs the BatchNorm `op` whose parts make(timing) gives (with `timing`, its side effects sent
// to scratch: kernels/cuda/fastest_path.h): one kernel, reduce_then_map, when V == 4 and the
// rows fit one block per vector column; else the path run_fastest picks (the settings', or
// with path timing the fastest).
template <int V, class Make>
void reduce_then_apply(const char* op, const BatchNormShape& sh, bool repeatable,
                       void* workspace, cudaStream_t stream, const Make& make) {
  const auto parts = make(false);
  if constexpr (V == 4) {
    detail::SmallTiling small;
    if (detail::small_tiling(sh.rows, sh.c / V, int(V * sizeof(float)), &small)) {
      detail::reduce_then_map<2 * V>(parts.vector_src,
                                     PerChannel<V, decltype(parts.epilogue)>{parts.epilogue},
                                     parts.map, small, stream);
      return;
    }
    detail::run_fastest(path_op(op, sh), repeatable, stream, [&](int path, bool timing) {
      return timing ? launch_path(path, make(true), sh, workspace, stream)
                    : launch_path(path, parts, sh, workspace, stream);
    });
    return;
  }
  launch_path(kThreeKernels, parts, sh, workspace, stream);
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
  // A timing run updates running statistics of its own (the workspace's scratch), so the real
  // ones get the one update of the call. It may run again unless y overwrites an input.
  float* scratch = scratch_of(workspace, sh);
  const bool repeatable = y != x && y != residual;
  const char* op = residual ? "batchnorm.train_fwd_add_relu"
                            : (apply_relu ? "batchnorm.train_fwd_relu" : "batchnorm.train_fwd");
  reduce_then_apply<V>(op, sh, repeatable, workspace, stream, [&](bool timing) {
    StatsEpilogue e = stats;
    if (timing) {
      e.running_mean = scratch;
      e.running_var = scratch + sh.c;
    }
    return BnParts<V, StatsSrc, StatsEpilogue, Normalize<V>>{
        StatsSrc<1>{x, sh.c}, StatsSrc<V>{x, sh.c / V}, e,
        Normalize<V>{y, x, residual, save_mean, scale, nullptr, nullptr, beta, sh.c / V,
                     double(eps), apply_relu}};
  });
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
  // A timing run writes the parameter gradients to the workspace's scratch and an accumulated
  // residual gradient into dx (both are garbage then; the real run overwrites dx), so the
  // results are the one call's. It may run again unless it accumulates into dx or dx
  // overwrites an input.
  float* scratch = scratch_of(workspace, sh);
  auto reads = [&](const float* out) { return out && (out == dy || out == x || out == y); };
  const bool repeatable = !acc_dx && !reads(dx) && !reads(dresidual);
  const char* op = dresidual ? "batchnorm.bwd_add_relu"
                             : (y || beta ? "batchnorm.bwd_relu" : "batchnorm.bwd");
  reduce_then_apply<V>(op, sh, repeatable, workspace, stream, [&](bool timing) {
    GradEpilogue e{dgamma, dbeta, coef, gamma, save_invstd, sh.rows, sh.c, acc_params};
    float* res = dresidual;
    if (timing) {
      e.dgamma = scratch;
      e.dbeta = scratch + sh.c;
      if (acc_res) res = dx;
    }
    return BnParts<V, GradSrc, GradEpilogue, GradApply<V>>{
        GradSrc<1>{dy, x, save_mean, scalar_mask, sh.c},
        GradSrc<V>{dy, x, save_mean, vector_mask, sh.c / V}, e,
        GradApply<V>{dx, res, dy, vector_mask, x, save_mean, coef, sh.c / V, sh.c, acc_dx,
                     acc_res}};
  });
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

void set_batchnorm_cluster(bool on) { g_cluster.set(on); }
bool batchnorm_cluster() { return g_cluster.get(); }
void set_batchnorm_two_kernels(bool on) { g_two_kernels.set(on); }
bool batchnorm_two_kernels() { return g_two_kernels.get(); }
void set_batchnorm_cluster_max(int blocks) {
  if (!valid_cluster_max(blocks))
    throw std::invalid_argument("set_batchnorm_cluster_max(" + std::to_string(blocks) +
                                "): " + cluster_max_expected());
  g_cluster_max.store(blocks, std::memory_order_relaxed);
}
int batchnorm_cluster_max() {
  int blocks = g_cluster_max.load(std::memory_order_relaxed);
  if (blocks == 0) {
    const EnvInt n = read_env_int("UNETCU_BN_CLUSTER_MAX", 1, 1024);
    if (n.state == EnvInt::bad || (n.state == EnvInt::ok && !valid_cluster_max(n.value)))
      throw std::invalid_argument(std::string("UNETCU_BN_CLUSTER_MAX=") + n.text + ": " +
                                  cluster_max_expected());
    blocks = n.state == EnvInt::ok ? int(n.value) : int(kMaxClusterBlocks);
    g_cluster_max.store(blocks, std::memory_order_relaxed);
  }
  return blocks;
}
void set_batchnorm_relu_mask_from_input(bool on) { g_relu_mask_from_input.set(on); }
bool batchnorm_relu_mask_from_input() { return g_relu_mask_from_input.get(); }

size_t batchnorm_workspace_bytes(const BatchNormShape& sh) {
  return partials_bytes(sh) + detail::align256(5 * size_t(sh.c > 0 ? sh.c : 0) * sizeof(float));
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
