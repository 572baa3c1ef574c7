// bench/cpu_ops.cpp: every op family of the training step on the CPU, forward and backward, at
// the UNet's real shapes (batch 16, 128x128 by default), ours (kernels/cpu) beside the LibTorch
// call that computes the same thing, on the same threads; and the machine's limits (memory copy
// bandwidth, OpenBLAS sgemm) that the rates are measured against.
//
//   bench_cpu_ops [--batch N] [--size S] [--threads T] [benchmark flags...]
//
// Shapes come from the graph itself (build_unet): each distinct shape of an op once, with the
// number of layers that share it. Before a pair is timed, both sides run once on the same
// inputs and our output is compared with the reference; a pair that disagrees is skipped with
// the reason, and the program exits 1 after printing the table.
//
// Peers and layouts. LibTorch runs in its default NCHW layout (OIHW filters); ours is NHWC
// (KRSC). The peers are what a PyTorch training step calls: at::conv2d and
// at::convolution_backward (one direction per benchmark, output_mask), at::native_batch_norm and
// native_batch_norm_backward, at::batch_norm (eval), relu_ / threshold_backward, add_ + relu_
// (torchvision's BasicBlock end), max_pool2d_with_indices (+ backward), upsample_nearest2d
// (+ backward), at::cat, smp's Dice formula in ATen ops with autograd, torch::optim::Adam over
// the model's 140 parameter tensors, and the normalisation formula. Concat's backward in
// PyTorch returns views into dy that the consumer reads later; here both sides copy dy into
// two tensors, the work our backward does.
//
// Tolerances (worst element, scaled as bench_util.h's compare()): they are the LibTorch
// comparison tests' (tests/torch/*), where each is derived; BatchNorm is compared with LibTorch
// in float64, since LibTorch's float32 backward is the less accurate of the two.
//
// Work counters: convolutions 2*N*K*C*R*S*P*Q FLOP in every direction; everything else the
// bytes that must move (each input read once, each output written once).
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>
#include <torch/torch.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "bench/libtorch_unet.h"
#include "bench/torch_util.h"
#include "kernels/adam.h"
#include "kernels/batchnorm.h"
#include "kernels/concat.h"
#include "kernels/conv.h"
#include "kernels/elementwise.h"
#include "kernels/loss.h"
#include "kernels/normalize.h"
#include "kernels/pool.h"
#include "kernels/upsample.h"
#include "model/unet.h"

using namespace unetcu;
using namespace unetcu::bench;

namespace {

constexpr double kEps = FLT_EPSILON;
constexpr float kMomentum = 0.1f, kBnEps = 1e-5f;

// Wall-clock time of each run, as many runs as Google Benchmark asks for.
void time_on_cpu(benchmark::State& state, const std::function<void()>& run) {
  for (auto _ : state) run();
}
void register_pair(PairInfo info, Factory make) {
  bench::register_pair(std::move(info), std::move(make), time_on_cpu, true, false);
}

// ---- convolution --------------------------------------------------------------------------


struct ConvCase : OpCase {
  ConvShape sh;
  bool has_bias;
  ConvDir dir;
  std::vector<float> x, wt, bias, dy, out, dbias;
  torch::Tensor tx, tw, tb, tdy, result, result_bias;
  std::vector<int64_t> bias_sizes;

  ConvCase(const ConvShape& s, bool b, ConvDir d, uint64_t seed) : sh(s), has_bias(b), dir(d) {
    x = random_floats(size_t(sh.x_size()), seed);
    wt = random_floats(size_t(sh.w_size()), seed + 1);
    bias = random_floats(size_t(sh.k), seed + 2);
    dy = random_floats(size_t(sh.y_size()), seed + 3);
    out.resize(size_t(dir == ConvDir::forward         ? sh.y_size()
                      : dir == ConvDir::backward_data ? sh.x_size()
                                                      : sh.w_size()));
    dbias.resize(size_t(sh.k));
    tx = to_nchw(x, sh.n, sh.h, sh.w, sh.c);
    tw = to_nchw(wt, sh.k, sh.r, sh.s, sh.c);
    tb = to_flat(bias);
    tdy = to_nchw(dy, sh.n, sh.p, sh.q, sh.k);
    bias_sizes = {sh.k};
  }
  void ours() override {
    switch (dir) {
      case ConvDir::forward:
        cpu::conv2d_forward(out.data(), x.data(), wt.data(), has_bias ? bias.data() : nullptr, sh);
        break;
      case ConvDir::backward_data:
        cpu::conv2d_backward_data(out.data(), dy.data(), wt.data(), sh, GradMode::overwrite);
        break;
      case ConvDir::backward_filter:
        cpu::conv2d_backward_filter(out.data(), dy.data(), x.data(), sh, GradMode::overwrite);
        if (has_bias) cpu::conv2d_backward_bias(dbias.data(), dy.data(), sh, GradMode::overwrite);
        break;
    }
  }
  void torch() override {
    const std::vector<int64_t> stride{sh.stride, sh.stride}, pad{sh.pad, sh.pad};
    if (dir == ConvDir::forward) {
      result = at::conv2d(tx, tw, has_bias ? tb : torch::Tensor(), stride, pad);
      return;
    }
    const bool data = dir == ConvDir::backward_data;
    at::OptionalIntArrayRef bias_opt;
    if (has_bias) bias_opt = bias_sizes;
    auto grads = at::convolution_backward(tdy, tx, tw, bias_opt, stride, pad, {1, 1}, false, {0, 0},
                                          1, {data, !data, !data && has_bias});
    result = data ? std::get<0>(grads) : std::get<1>(grads);
    result_bias = std::get<2>(grads);
  }
  Check check() override {
    ours();
    torch();
    // A GEMM-type sum of L products errs by about eps * sqrt(L) on both sides.
    const double L = dir == ConvDir::forward         ? double(sh.r) * sh.s * sh.c
                     : dir == ConvDir::backward_data ? double(sh.k) * sh.r * sh.s
                                                     : double(sh.n) * sh.p * sh.q;
    const double tol = 8 * kEps * std::sqrt(L);
    const auto want = to_nhwc(result);
    Check c = compare(out.data(), want.data(), want.size(), tol, "output");
    if (dir == ConvDir::backward_filter && has_bias) {
      const auto want_bias = to_vector(result_bias);
      c = combine(
          {c, compare(dbias.data(), want_bias.data(), want_bias.size(), tol, "bias gradient")});
    }
    return c;
  }
};

void register_convs(const Graph& g) {
  for_each_conv_pair(g, [](const PairInfo& p, ConvShape sh, bool bias, ConvDir dir, uint64_t s) {
    register_pair(p, [sh, bias, dir, s] { return std::make_unique<ConvCase>(sh, bias, dir, s); });
  });
}

// ---- BatchNorm ----------------------------------------------------------------------------


struct BnCase : OpCase {
  BatchNormShape sh;
  int n, h, w;
  BnOp op;
  std::vector<float> x, gamma, beta, rm, rv, dy, y, mean, invstd, dx, dgamma, dbeta;
  torch::Tensor tx, tg, tb, trm, trv, tdy, tmean, tinvstd, result;

  BnCase(const ActInfo& a, BnOp o, uint64_t seed) : n(a.n), h(a.h), w(a.w), op(o) {
    sh.rows = int64_t(a.n) * a.h * a.w;
    sh.c = a.c;
    const size_t count = size_t(sh.rows) * size_t(sh.c), c = size_t(sh.c);
    x = random_floats(count, seed);
    gamma = random_floats(c, seed + 1, 0.5, 1.5);
    beta = random_floats(c, seed + 2);
    rm = random_floats(c, seed + 3);
    rv = random_floats(c, seed + 4, 0.5, 2.0);
    dy = random_floats(count, seed + 5);
    y.resize(count);
    dx.resize(count);
    mean.resize(c);
    invstd.resize(c);
    dgamma.resize(c);
    dbeta.resize(c);
    tx = to_nchw(x, n, h, w, sh.c);
    tdy = to_nchw(dy, n, h, w, sh.c);
    tg = to_flat(gamma);
    tb = to_flat(beta);
    trm = to_flat(rm);
    trv = to_flat(rv);
    // The backward needs the saved statistics of a forward, on each side.
    auto saved =
        at::native_batch_norm(tx, tg, tb, trm.clone(), trv.clone(), true, kMomentum, kBnEps);
    tmean = std::get<1>(saved);
    tinvstd = std::get<2>(saved);
    auto rm_copy = rm, rv_copy = rv;
    cpu::batchnorm_train_forward(y.data(), mean.data(), invstd.data(), rm_copy.data(),
                                 rv_copy.data(), x.data(), gamma.data(), beta.data(), sh, kMomentum,
                                 kBnEps);
  }
  void ours() override {
    switch (op) {
      case BnOp::train_forward:
        cpu::batchnorm_train_forward(y.data(), mean.data(), invstd.data(), rm.data(), rv.data(),
                                     x.data(), gamma.data(), beta.data(), sh, kMomentum, kBnEps);
        break;
      case BnOp::backward:
        cpu::batchnorm_backward(dx.data(), dgamma.data(), dbeta.data(), dy.data(), x.data(),
                                gamma.data(), mean.data(), invstd.data(), sh, GradMode::overwrite,
                                GradMode::overwrite);
        break;
      case BnOp::eval_forward:
        cpu::batchnorm_eval_forward(y.data(), x.data(), gamma.data(), beta.data(), rm.data(),
                                    rv.data(), sh, kBnEps);
        break;
    }
  }
  void torch() override {
    switch (op) {
      case BnOp::train_forward:
        result = std::get<0>(at::native_batch_norm(tx, tg, tb, trm, trv, true, kMomentum, kBnEps));
        break;
      case BnOp::backward:
        result = std::get<0>(at::native_batch_norm_backward(tdy, tx, tg, trm, trv, tmean, tinvstd,
                                                            true, kBnEps, {true, true, true}));
        break;
      case BnOp::eval_forward:
        result = at::batch_norm(tx, tg, tb, trm, trv, false, kMomentum, kBnEps, false);
        break;
    }
  }
  // Against LibTorch in float64 on the same inputs, with the tests' tolerances: a few float
  // roundings of values that are up to |mean| * invstd larger than the normalised output.
  Check check() override {
    // The running statistics as they are before any timed run (the timed runs update them).
    auto drm = to_flat(rm).to(torch::kFloat64), drv = to_flat(rv).to(torch::kFloat64);
    ours();
    torch();
    auto dx64 = tx.to(torch::kFloat64), dg64 = tg.to(torch::kFloat64),
         db64 = tb.to(torch::kFloat64);
    if (op == BnOp::eval_forward) {
      double spread = 0;
      for (float v : rv) spread = std::max(spread, 1.0 / std::sqrt(double(v)));
      const auto want =
          to_nhwc(at::batch_norm(dx64, dg64, db64, drm, drv, false, kMomentum, kBnEps, false));
      return compare(y.data(), want.data(), want.size(), 16 * kEps * (1 + spread), "y");
    }
    auto [y64, mean64, invstd64] =
        at::native_batch_norm(dx64, dg64, db64, drm, drv, true, kMomentum, kBnEps);
    double spread = 0;
    for (int64_t c = 0; c < sh.c; ++c)
      spread = std::max(spread, std::fabs(mean64[c].item<double>()) * invstd64[c].item<double>());
    const double tol = 16 * kEps * (1 + spread);
    if (op == BnOp::train_forward) {
      const auto want = to_nhwc(y64), want_mean = to_vector(mean64),
                 want_invstd = to_vector(invstd64);
      return combine(
          {compare(y.data(), want.data(), want.size(), tol, "y"),
           compare(mean.data(), want_mean.data(), want_mean.size(), tol, "saved mean"),
           compare(invstd.data(), want_invstd.data(), want_invstd.size(), tol, "saved invstd")});
    }
    auto grads = at::native_batch_norm_backward(tdy.to(torch::kFloat64), dx64, dg64, drm, drv,
                                                mean64, invstd64, true, kBnEps, {true, true, true});
    const auto want_dx = to_nhwc(std::get<0>(grads));
    const auto want_dg = to_vector(std::get<1>(grads)), want_db = to_vector(std::get<2>(grads));
    const double tol_param = 8 * kEps * (1 + spread);
    return combine({compare(dx.data(), want_dx.data(), want_dx.size(), tol, "dx"),
                    compare(dgamma.data(), want_dg.data(), want_dg.size(), tol_param, "dgamma"),
                    compare(dbeta.data(), want_db.data(), want_db.size(), tol_param, "dbeta")});
  }
};

void register_batchnorms(const Graph& g) {
  for_each_batchnorm_pair(g, [](const PairInfo& p, ActInfo a, BnOp op, uint64_t s) {
    register_pair(p, [a, op, s] { return std::make_unique<BnCase>(a, op, s); });
  });
}

// ---- elementwise: relu, add + relu --------------------------------------------------------


// Elementwise ops do not care about the layout: both sides get the same flat arrays. Every
// result is one IEEE operation or a selection per element, so it must match exactly.
struct EltCase : OpCase {
  EltOp op;
  int64_t count;
  std::vector<float> a, b, out;
  torch::Tensor ta, tb, result;

  EltCase(EltOp o, int64_t n, uint64_t seed) : op(o), count(n) {
    a = random_floats(size_t(n), seed);
    b = random_floats(size_t(n), seed + 1);
    if (op == EltOp::relu_backward) cpu::relu_forward(b.data(), b.data(), n);  // b: the relu output
    out.resize(size_t(n));
    ta = to_flat(a);
    tb = to_flat(b);
  }
  void ours() override {
    switch (op) {
      case EltOp::relu_forward: cpu::relu_forward(a.data(), a.data(), count); break;
      case EltOp::relu_backward:
        cpu::relu_backward(out.data(), a.data(), b.data(), count, GradMode::overwrite);
        break;
      case EltOp::add_relu_forward:
        cpu::add_relu_forward(a.data(), a.data(), b.data(), count);
        break;
    }
  }
  void torch() override {
    switch (op) {
      case EltOp::relu_forward: result = at::relu_(ta); break;
      case EltOp::relu_backward: result = at::threshold_backward(ta, tb, 0); break;
      case EltOp::add_relu_forward: result = ta.add_(tb).relu_(); break;
    }
  }
  Check check() override {
    ours();
    torch();
    const auto want = to_vector(result);
    const float* got = op == EltOp::relu_backward ? out.data() : a.data();
    return compare(got, want.data(), want.size(), 0.0, "output");
  }
};

void register_elementwise(const Graph& g) {
  for_each_elementwise_pair(g, [](const PairInfo& p, EltOp op, int64_t n, uint64_t s) {
    register_pair(p, [op, n, s] { return std::make_unique<EltCase>(op, n, s); });
  });
}

// ---- max-pool -----------------------------------------------------------------------------

struct PoolCase : OpCase {
  MaxPoolShape sh;
  bool backward;
  std::vector<float> x, y, dy, dx;
  std::vector<int32_t> argmax;
  torch::Tensor tx, tdy, tidx, result, result_idx;

  PoolCase(const MaxPoolShape& s, bool bwd, uint64_t seed) : sh(s), backward(bwd) {
    const size_t out_count = size_t(sh.n) * sh.p * sh.q * sh.c;
    x = random_floats(size_t(sh.n) * sh.h * sh.w * sh.c, seed);
    dy = random_floats(out_count, seed + 1);
    y.resize(out_count);
    argmax.resize(out_count);
    dx.resize(x.size());
    tx = to_nchw(x, sh.n, sh.h, sh.w, sh.c);
    tdy = to_nchw(dy, sh.n, sh.p, sh.q, sh.c);
    cpu::maxpool_forward(y.data(), argmax.data(), x.data(), sh);
    tidx = std::get<1>(at::max_pool2d_with_indices(tx, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false));
  }
  void ours() override {
    if (backward)
      cpu::maxpool_backward(dx.data(), dy.data(), argmax.data(), sh, GradMode::overwrite);
    else
      cpu::maxpool_forward(y.data(), argmax.data(), x.data(), sh);
  }
  void torch() override {
    if (backward) {
      result = at::max_pool2d_with_indices_backward(tdy, tx, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false,
                                                    tidx);
    } else {
      std::tie(result, result_idx) =
          at::max_pool2d_with_indices(tx, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false);
    }
  }
  // Forward moves values: y and the argmax must be identical (PyTorch's first-maximum rule).
  // Backward adds at most four values per element: 4 eps.
  Check check() override {
    ours();
    torch();
    const auto want = to_nhwc(result);
    if (backward) return compare(dx.data(), want.data(), want.size(), 4 * kEps, "dx");
    auto idx = result_idx.permute({0, 2, 3, 1}).contiguous();
    return combine(
        {compare(y.data(), want.data(), want.size(), 0.0, "y"),
         compare(argmax.data(), idx.data_ptr<int64_t>(), size_t(idx.numel()), 0.0, "argmax")});
  }
};

// ---- upsample, concat ---------------------------------------------------------------------

struct UpsampleCase : OpCase {
  UpsampleShape sh;
  bool backward;
  std::vector<float> x, y, dy, dx;
  torch::Tensor tx, tdy, result;

  UpsampleCase(const UpsampleShape& s, bool bwd, uint64_t seed) : sh(s), backward(bwd) {
    const size_t in_count = size_t(sh.n) * sh.h * sh.w * sh.c;
    x = random_floats(in_count, seed);
    dy = random_floats(4 * in_count, seed + 1);
    y.resize(4 * in_count);
    dx.resize(in_count);
    tx = to_nchw(x, sh.n, sh.h, sh.w, sh.c);
    tdy = to_nchw(dy, sh.n, 2 * sh.h, 2 * sh.w, sh.c);
  }
  void ours() override {
    if (backward)
      cpu::upsample2x_backward(dx.data(), dy.data(), sh, GradMode::overwrite);
    else
      cpu::upsample2x_forward(y.data(), x.data(), sh);
  }
  void torch() override {
    const std::vector<int64_t> out_size{2 * sh.h, 2 * sh.w};
    if (backward) {
      const std::vector<int64_t> in_size{sh.n, sh.c, sh.h, sh.w};
      result = at::upsample_nearest2d_backward(tdy, out_size, in_size, 2.0, 2.0);
    } else {
      result = at::upsample_nearest2d(tx, out_size, 2.0, 2.0);
    }
  }
  // Forward copies: exact. Backward sums 4 values in [-1, 1]: at most 3 roundings of partial
  // sums below 4, i.e. 12 eps absolute, and the scale rms(ref) + |ref| is above 1.
  Check check() override {
    ours();
    torch();
    const auto want = to_nhwc(result);
    return backward ? compare(dx.data(), want.data(), want.size(), 12 * kEps, "dx")
                    : compare(y.data(), want.data(), want.size(), 0.0, "y");
  }
};

struct ConcatCase : OpCase {
  ConcatShape sh;
  int n, h, w;
  bool backward;
  std::vector<float> a, b, y, dy, da, db;
  torch::Tensor ta, tb, tdy, result, result_b;

  ConcatCase(const ActInfo& out, const ConcatShape& s, bool bwd, uint64_t seed)
      : sh(s), n(out.n), h(out.h), w(out.w), backward(bwd) {
    const size_t rows = size_t(sh.rows);
    a = random_floats(rows * size_t(sh.ca), seed);
    b = random_floats(rows * size_t(sh.cb), seed + 1);
    dy = random_floats(rows * size_t(sh.ca + sh.cb), seed + 2);
    y.resize(dy.size());
    da.resize(a.size());
    db.resize(b.size());
    ta = to_nchw(a, n, h, w, sh.ca);
    tb = to_nchw(b, n, h, w, sh.cb);
    tdy = to_nchw(dy, n, h, w, sh.ca + sh.cb);
  }
  void ours() override {
    if (backward) {
      cpu::concat_backward(da.data(), db.data(), dy.data(), sh, GradMode::overwrite,
                           GradMode::overwrite);
    } else {
      cpu::concat_forward(y.data(), a.data(), b.data(), sh);
    }
  }
  void torch() override {
    if (backward) {
      result = tdy.narrow(1, 0, sh.ca).contiguous();
      result_b = tdy.narrow(1, sh.ca, sh.cb).contiguous();
    } else {
      result = at::cat({ta, tb}, 1);
    }
  }
  Check check() override {  // copies: exact
    ours();
    torch();
    const auto want = to_nhwc(result);
    if (!backward) return compare(y.data(), want.data(), want.size(), 0.0, "y");
    const auto want_b = to_nhwc(result_b);
    return combine({compare(da.data(), want.data(), want.size(), 0.0, "da"),
                    compare(db.data(), want_b.data(), want_b.size(), 0.0, "db")});
  }
};

void register_spatial(const Graph& g) {
  uint64_t seed = 9000;
  for (bool bwd : {false, true}) {
    for (const LayerShape& ls : distinct_shapes(g, OpKind::maxpool)) {
      const MaxPoolShape sh = ls.node.pool;
      PairInfo p;
      p.key = std::string(bwd ? "maxpool.bwd/" : "maxpool.fwd/") + ls.node.name;
      p.shape = std::to_string(sh.n) + "x" + std::to_string(sh.h) + "x" + std::to_string(sh.w) +
                "x" + std::to_string(sh.c) + " 3x3/2";
      p.count = ls.count;
      const double in = double(sh.n) * sh.h * sh.w * sh.c, out = double(sh.n) * sh.p * sh.q * sh.c;
      p.work = bwd ? 4 * (2 * out + in) : 4 * (in + 2 * out);  // values and int32 argmax
      const uint64_t s = seed += 10;
      register_pair(p, [sh, bwd, s] { return std::make_unique<PoolCase>(sh, bwd, s); });
    }
  }
  for (bool bwd : {false, true}) {
    for (const LayerShape& ls : distinct_shapes(g, OpKind::upsample)) {
      const UpsampleShape sh = ls.node.up;
      PairInfo p;
      p.key = std::string(bwd ? "upsample.bwd/" : "upsample.fwd/") + ls.node.name;
      p.shape = std::to_string(sh.n) + "x" + std::to_string(sh.h) + "x" + std::to_string(sh.w) +
                "x" + std::to_string(sh.c) + " x2";
      p.count = ls.count;
      p.work = 4.0 * 5 * double(sh.n) * sh.h * sh.w * sh.c;
      const uint64_t s = seed += 10;
      register_pair(p, [sh, bwd, s] { return std::make_unique<UpsampleCase>(sh, bwd, s); });
    }
  }
  for (bool bwd : {false, true}) {
    for (const LayerShape& ls : distinct_shapes(g, OpKind::concat)) {
      const ConcatShape sh = ls.node.cat;
      const ActInfo out = g.acts()[size_t(ls.node.out)];
      PairInfo p;
      p.key = std::string(bwd ? "concat.bwd/" : "concat.fwd/") + ls.node.name;
      p.shape = std::to_string(out.n) + "x" + std::to_string(out.h) + "x" + std::to_string(out.w) +
                "x(" + std::to_string(sh.ca) + "+" + std::to_string(sh.cb) + ")";
      p.count = ls.count;
      p.work = 4.0 * 2 * double(sh.rows) * (sh.ca + sh.cb);
      const uint64_t s = seed += 10;
      register_pair(p, [out, sh, bwd, s] { return std::make_unique<ConcatCase>(out, sh, bwd, s); });
    }
  }
}

// ---- loss, metrics, normalisation, Adam ---------------------------------------------------

enum class LossOp { dice_forward, dice_forward_backward, confusion };

struct LossCase : OpCase {
  LossOp op;
  int n;
  int64_t pixels, count;
  std::vector<float> logits, dlogits;
  std::vector<uint8_t> target;
  std::vector<ConfusionCounts> counts;
  float loss = 0;
  DiceSums sums;
  torch::Tensor tl, tt, tt_u8, result, result_grad;
  std::vector<torch::Tensor> result_counts;

  LossCase(LossOp o, int n_images, int64_t px, uint64_t seed)
      : op(o), n(n_images), pixels(px), count(n_images * px) {
    logits = random_floats(size_t(count), seed, -4.0, 4.0);
    target = random_mask(size_t(count), seed + 1, 0.3);
    dlogits.resize(size_t(count));
    counts.resize(size_t(n));
    const int64_t side = int64_t(std::lround(std::sqrt(double(pixels))));
    tl = to_flat(logits).reshape({n, 1, side, pixels / side});
    tt_u8 = torch::from_blob(target.data(), {n, 1, side, pixels / side}, torch::kUInt8).clone();
    tt = tt_u8.to(torch::kFloat32);
  }
  void ours() override {
    switch (op) {
      case LossOp::dice_forward:
        cpu::dice_loss_forward(&loss, &sums, logits.data(), target.data(), count);
        break;
      case LossOp::dice_forward_backward:
        cpu::dice_loss_forward(&loss, &sums, logits.data(), target.data(), count);
        cpu::dice_loss_backward(dlogits.data(), logits.data(), target.data(), sums, count, 1.0f,
                                GradMode::overwrite);
        break;
      case LossOp::confusion:
        cpu::confusion_counts(counts.data(), logits.data(), target.data(), n, pixels);
        break;
    }
  }
  void torch() override {
    switch (op) {
      case LossOp::dice_forward: result = libtorch_dice_loss(tl, tt); break;
      case LossOp::dice_forward_backward: {
        auto x = tl.detach().requires_grad_(true);
        result = libtorch_dice_loss(x, tt);
        result_grad = torch::autograd::grad({result}, {x})[0];
        break;
      }
      case LossOp::confusion: {
        // smp's get_stats on sigmoid(logits) > 0.5, per image.
        auto pred = (tl.sigmoid() > 0.5).to(torch::kLong).reshape({n, -1});
        auto truth = tt_u8.to(torch::kLong).reshape({n, -1});
        auto tp = (pred * truth).sum(1);
        auto fp = pred.sum(1) - tp;
        auto fn = truth.sum(1) - tp;
        result_counts = {tp, fp, fn, pixels - (tp + fp + fn)};
        break;
      }
    }
  }
  Check check() override {
    ours();
    torch();
    if (op == LossOp::confusion) {
      std::vector<int64_t> got[4];
      for (const auto& c : counts) {
        got[0].push_back(c.tp);
        got[1].push_back(c.fp);
        got[2].push_back(c.fn);
        got[3].push_back(c.tn);
      }
      const char* names[4] = {"tp", "fp", "fn", "tn"};
      Check all;
      for (int k = 0; k < 4; ++k) {
        auto want = result_counts[size_t(k)].contiguous();
        all = combine(
            {all, compare(got[k].data(), want.data_ptr<int64_t>(), got[k].size(), 0.0, names[k])});
      }
      return all;
    }
    // The loss: float32 LibTorch's sums err by up to 5e-6 on a loss near 0.5 (the tests'
    // derivation); the scale of a scalar is 2|loss|, so 5e-6 relative.
    const float want_loss = result.item<float>();
    Check c = compare(&loss, &want_loss, 1, 5e-6, "loss");
    if (op == LossOp::dice_forward_backward) {
      // Per pixel a few roundings plus LibTorch's float32 sums: 2e-5 relative.
      const auto want = to_vector(result_grad);
      c = combine({c, compare(dlogits.data(), want.data(), want.size(), 2e-5, "dlogits")});
    }
    return c;
  }
};

struct NormalizeCase : OpCase {
  int64_t pixels;
  std::vector<uint8_t> img;
  std::vector<float> x;
  torch::Tensor timg, tmean, tstd, result;
  NormalizeParams prm;

  NormalizeCase(int64_t px, uint64_t seed) : pixels(px) {
    Rng rng(seed);
    img.resize(size_t(px) * 3);
    for (auto& v : img) v = uint8_t(rng.below(256));
    x.resize(img.size());
    timg = torch::from_blob(img.data(), {px, 3}, torch::kUInt8).clone();
    tmean = torch::tensor({prm.mean[0], prm.mean[1], prm.mean[2]});
    tstd = torch::tensor({prm.std[0], prm.std[1], prm.std[2]});
  }
  void ours() override { cpu::normalize_input(x.data(), img.data(), pixels, prm); }
  void torch() override { result = (timg.to(torch::kFloat32) / 255.0f - tmean) / tstd; }
  Check check() override {  // the same three correctly rounded operations: exact
    ours();
    torch();
    const auto want = to_vector(result);
    return compare(x.data(), want.data(), want.size(), 0.0, "x");
  }
};

// Adam over the whole model: ours one pass over the flat arenas, LibTorch's optimiser over the
// 140 parameter tensors of their real shapes, as a PyTorch training step has them.
struct AdamCase : OpCase {
  int64_t count;
  std::vector<float> param, grad, exp_avg, exp_avg_sq;
  std::vector<torch::Tensor> tparams;
  std::unique_ptr<torch::optim::Adam> opt;
  AdamConfig cfg;
  int64_t step = 0;

  explicit AdamCase(uint64_t seed) {
    const ModelSpec& spec = unet_spec();
    count = spec.param_count;
    param = random_floats(size_t(count), seed, -0.1, 0.1);
    grad = random_floats(size_t(count), seed + 1, -1e-2, 1e-2);
    exp_avg.assign(size_t(count), 0.0f);
    exp_avg_sq.assign(size_t(count), 0.0f);
    for (const ParamEntry& e : spec.params) {
      auto p = torch::from_blob(param.data() + e.offset, e.torch_shape, torch::kFloat32).clone();
      p.requires_grad_(true);
      p.mutable_grad() =
          torch::from_blob(grad.data() + e.offset, e.torch_shape, torch::kFloat32).clone();
      tparams.push_back(p);
    }
    opt = std::make_unique<torch::optim::Adam>(tparams, torch::optim::AdamOptions(cfg.lr));
  }
  void ours() override {
    cpu::adam_step(param.data(), exp_avg.data(), exp_avg_sq.data(), grad.data(), count, cfg,
                   ++step);
  }
  void torch() override {
    torch::NoGradGuard no_grad;
    opt->step();
  }
  // Two steps from the same state on each side (the second reads both moments): our step is
  // LibTorch's sequence of float32 operations on the same scalars, so the parameters must be
  // identical (the Adam test's reasoning).
  Check check() override {
    for (int i = 0; i < 2; ++i) {
      ours();
      torch();
    }
    std::vector<float> want;
    want.reserve(size_t(count));
    for (const auto& p : tparams) {
      const auto v = to_vector(p);
      want.insert(want.end(), v.begin(), v.end());
    }
    return compare(param.data(), want.data(), want.size(), 0.0, "parameters after 2 steps");
  }
};

void register_loss_and_optimizer(const Options& o) {
  const int64_t pixels = int64_t(o.size) * o.size, count = o.batch * pixels;
  const struct {
    LossOp op;
    const char* key;
    double bytes;
  } losses[] = {{LossOp::dice_forward, "dice.fwd", 5.0 * count},
                {LossOp::dice_forward_backward, "dice.fwd_bwd", 14.0 * count},
                {LossOp::confusion, "confusion_counts", 5.0 * count}};
  uint64_t seed = 11000;
  const std::string shape =
      std::to_string(o.batch) + "x" + std::to_string(o.size) + "x" + std::to_string(o.size);
  for (const auto& l : losses) {
    PairInfo p;
    p.key = std::string(l.key) + "/logits";
    p.shape = shape;
    p.work = l.bytes;
    const LossOp op = l.op;
    const int n = o.batch;
    const uint64_t s = seed += 10;
    register_pair(p, [op, n, pixels, s] { return std::make_unique<LossCase>(op, n, pixels, s); });
  }
  {
    PairInfo p;
    p.key = "normalize/input";
    p.shape = shape + "x3 uint8";
    p.work = 15.0 * count;
    register_pair(p, [count] { return std::make_unique<NormalizeCase>(count, 12000); });
  }
  {
    PairInfo p;
    p.key = "adam.step/all_parameters";
    p.shape = std::to_string(unet_spec().param_count) + " values";
    p.work = 28.0 * double(unet_spec().param_count);  // read p, m, v, g; write p, m, v
    register_pair(p, [] { return std::make_unique<AdamCase>(13000); });
  }
}

// ---- the machine's limits -----------------------------------------------------------------

constexpr size_t kCopyBytes = size_t(256) << 20;
constexpr int kGemmSize = 2048;

// A STREAM-style copy: each thread copies its own contiguous part, with the pages touched
// beforehand, so the figure is the memory system's read + write bandwidth.
void BM_copy(benchmark::State& state) {
  const size_t n = kCopyBytes / sizeof(float);
  std::vector<float> src(n, 1.0f), dst(n, 0.0f);
  for (auto _ : state) {
#pragma omp parallel
    {
      const size_t t = size_t(omp_get_thread_num()), nt = size_t(omp_get_num_threads());
      const size_t begin = n * t / nt, end = n * (t + 1) / nt;
      std::memcpy(dst.data() + begin, src.data() + begin, (end - begin) * sizeof(float));
    }
    benchmark::DoNotOptimize(dst.data());
  }
  state.counters["B/s"] =
      benchmark::Counter(2.0 * kCopyBytes, benchmark::Counter::kIsIterationInvariantRate);
}

// What OpenBLAS's sgemm reaches on a large square product: the attainable FLOP/s that our
// im2col + GEMM convolutions stand on.
void BM_sgemm(benchmark::State& state) {
  const int n = kGemmSize;
  const auto a = random_floats(size_t(n) * n, 1), b = random_floats(size_t(n) * n, 2);
  std::vector<float> c(size_t(n) * n);
  for (auto _ : state)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  std::printf("CPU ops: batch %d, %dx%d, fp32, %d threads; LibTorch %s (NCHW), ours NHWC\n",
              o.batch, o.size, o.size, omp_get_max_threads(), TORCH_VERSION);

  benchmark::RegisterBenchmark("limits/copy_256MiB", BM_copy)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("limits/sgemm_2048", BM_sgemm)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  const Unet net = build_unet(o.batch, o.size, o.size);
  register_convs(net.graph);
  register_batchnorms(net.graph);
  register_elementwise(net.graph);
  register_spatial(net.graph);
  register_loss_and_optimizer(o);

  RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  current_case().op.reset();

  std::printf("\nmachine limits (measured)\n");
  if (reporter.ms.count("limits/copy_256MiB"))
    std::printf(
        "  memory copy      %s (read + write, 256 MiB)\n",
        rate_text(Work::bytes, 2.0 * kCopyBytes, reporter.ms["limits/copy_256MiB"]).c_str());
  if (reporter.ms.count("limits/sgemm_2048"))
    std::printf("  OpenBLAS sgemm   %s (2048^3)\n",
                rate_text(Work::flop, 2.0 * kGemmSize * kGemmSize * kGemmSize,
                          reporter.ms["limits/sgemm_2048"])
                    .c_str());
  const bool ok = print_table(
      reporter, "ours vs LibTorch, per op (ratio = time ours / time LibTorch; < 1: ours faster)");
  return ok ? 0 : 1;
}
