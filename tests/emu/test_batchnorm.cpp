// tests/emu/test_batchnorm.cpp: the BatchNorm kernels (kernels/cuda/batchnorm.cu), plain and
// fused with ReLU / residual add + ReLU, against kernels/cpu (the fused ones against the
// composition of the reference ops).
//
// Tolerances. The per-channel sums are doubles in both implementations, added in different
// orders (CPU: 2048-row chunks; CUDA: row blocks and a tree), so mean, invstd, the running
// statistics, dgamma and dbeta agree to double precision before the one rounding to float:
// at most 1 float ulp apart (rtol 1e-6). y: the reference forms x*scale + shift with
// shift = beta - mean*scale, the kernel (x - mean)*scale + beta; each is within a few ulp of
// the largest intermediate (|x*scale|, |mean*scale| <= ~20 here), so 1e-5 absolute plus 1e-5
// relative. dx = a*dy + b*(x - mean) + d with float coefficients from the double sums: the
// same formula, so differences stay at the ulp level of the terms (<= ~10): 1e-5 absolute.

#include "kernel_test.h"
#include "kernels/batchnorm.h"
#include "kernels/elementwise.h"

namespace unetcu::test {
namespace {

struct BnCase {
  int n, h, w, c;
  size_t shift;  // misaligns the activations (scalar path)
};
// Smallest valid (2 rows), odd channel counts (scalar path), c > 256 (two channel tiles, the
// second partial), and the vectorised c % 4 == 0 shapes; misaligned activations (shift 1) take
// the scalar path. Vectorised shapes of at most 512 rows take the one-kernel reduce_then_map
// (one float4 column a block, at most 2 rows a thread; 512 rows of 20 channels is the edge),
// the rest the multi-block reduce_rows + map_rows: at width 4, 2,112 rows of 16 and 2,304 of 64
// channels; at width 1, all.
constexpr BnCase kCases[] = {{1, 1, 2, 3, 0},    {2, 5, 7, 3, 0},    {2, 9, 11, 16, 0},
                             {2, 33, 32, 16, 0}, {1, 8, 8, 64, 0},   {3, 4, 4, 300, 0},
                             {2, 16, 16, 20, 0}, {2, 9, 11, 16, 1},  {2, 20, 21, 3, 0},
                             {1, 48, 48, 64, 0}, {1, 20, 20, 300, 1}};

// The case in failure messages: n x h x w x c, and the misalignment when there is one.
std::string shape_name(const BnCase& bc) {
  std::string out = std::to_string(bc.n) + "x" + std::to_string(bc.h) + "x" +
                    std::to_string(bc.w) + "x" + std::to_string(bc.c);
  return bc.shift ? out + " shifted by " + std::to_string(bc.shift) : out;
}

constexpr float kMomentum = 0.1f, kEps = 1e-5f;

enum class Fusion { none, relu, add_relu };
std::string fusion_name(Fusion f) {
  return f == Fusion::none ? "none" : (f == Fusion::relu ? "relu" : "add_relu");
}

struct BnData {
  BatchNormShape sh;
  std::vector<float> x, residual, gamma, beta, running_mean, running_var;
};

BnData make_data(const BnCase& bc, uint64_t seed) {
  BnData d;
  d.sh.rows = int64_t(bc.n) * bc.h * bc.w;
  d.sh.c = bc.c;
  const size_t count = size_t(d.sh.rows) * size_t(bc.c);
  // An offset mean (about 3) makes the shifted-sum variance formula matter.
  d.x = random_vector<float>(count, seed, 2.0, 4.0);
  d.residual = random_vector<float>(count, seed + 1, -1.0, 1.0);
  d.gamma = random_vector<float>(size_t(bc.c), seed + 2, 0.5, 1.5);
  d.beta = random_vector<float>(size_t(bc.c), seed + 3, -0.5, 0.5);
  d.running_mean = random_vector<float>(size_t(bc.c), seed + 4, -0.5, 0.5);
  d.running_var = random_vector<float>(size_t(bc.c), seed + 5, 0.5, 1.5);
  return d;
}

// The reference composition for each fusion: bn, then relu or add+relu.
void reference_train_forward(std::vector<float>& y, std::vector<float>& mean,
                             std::vector<float>& invstd, std::vector<float>& rm,
                             std::vector<float>& rv, const BnData& d, Fusion f) {
  y.assign(d.x.size(), 0.0f);
  mean.assign(size_t(d.sh.c), 0.0f);
  invstd.assign(size_t(d.sh.c), 0.0f);
  rm = d.running_mean;
  rv = d.running_var;
  cpu::batchnorm_train_forward(y.data(), mean.data(), invstd.data(), rm.data(), rv.data(),
                               d.x.data(), d.gamma.data(), d.beta.data(), d.sh, kMomentum, kEps);
  const int64_t count = int64_t(y.size());
  if (f == Fusion::relu) cpu::relu_forward(y.data(), y.data(), count);
  if (f == Fusion::add_relu) cpu::add_relu_forward(y.data(), y.data(), d.residual.data(), count);
}

// Sets one of the BatchNorm's switches (kernels/batchnorm.h) for a scope, and puts it back.
struct Switched {
  void (*set)(bool);
  bool before;
  Switched(void (*setter)(bool), bool (*getter)(), bool on) : set(setter), before(getter()) {
    set(on);
  }
  Switched(const Switched&) = delete;  // one restore per scope
  ~Switched() { set(before); }
};
// The switch the tests below turn: where the BatchNorm + ReLU backward takes its mask from.
Switched relu_mask_from_input(bool on) {
  return {cuda::set_batchnorm_relu_mask_from_input, cuda::batchnorm_relu_mask_from_input, on};
}

// One shape, all three fusions, against the reference; both schedules bit-identical. Under the
// emulator, `launches` (when >= 0) is the number of kernels each call must take. Returns each
// fusion's outputs.
std::vector<Outputs> check_train_forward(const BnCase& bc, int launches = -1) {
  std::vector<Outputs> all;
  for (Fusion f : {Fusion::none, Fusion::relu, Fusion::add_relu}) {
    const std::string shape = shape_name(bc);
    CAPTURE(shape);
    CAPTURE(fusion_name(f));
    const BnData d = make_data(bc, 100 + uint64_t(bc.c));
    std::vector<float> y, mean, invstd, rm, rv;
    reference_train_forward(y, mean, invstd, rm, rv, d, f);

    const Outputs out = run_deterministic([&] {
      DeviceBuffer<float> dx(d.x, bc.shift), dres(d.residual, bc.shift), dy(d.x.size(), bc.shift);
      DeviceBuffer<float> dgamma(d.gamma), dbeta(d.beta), drm(d.running_mean), drv(d.running_var);
      DeviceBuffer<float> dmean(size_t(bc.c)), dinvstd(size_t(bc.c));
      DeviceBuffer<unsigned char> ws(cuda::batchnorm_workspace_bytes(d.sh));
      dy.poison();
      dmean.poison();
      dinvstd.poison();
      ws.poison();
#if defined(UNETCU_TEST_EMULATED)
      simt::reset_counters();
#endif
      if (f == Fusion::none) {
        cuda::batchnorm_train_forward(dy.get(), dmean.get(), dinvstd.get(), drm.get(), drv.get(),
                                      dx.get(), dgamma.get(), dbeta.get(), d.sh, kMomentum, kEps,
                                      ws.get(), nullptr);
      } else if (f == Fusion::relu) {
        cuda::batchnorm_relu_train_forward(dy.get(), dmean.get(), dinvstd.get(), drm.get(),
                                           drv.get(), dx.get(), dgamma.get(), dbeta.get(), d.sh,
                                           kMomentum, kEps, ws.get(), nullptr);
      } else {
        cuda::batchnorm_add_relu_train_forward(dy.get(), dmean.get(), dinvstd.get(), drm.get(),
                                               drv.get(), dx.get(), dres.get(), dgamma.get(),
                                               dbeta.get(), d.sh, kMomentum, kEps, ws.get(),
                                               nullptr);
      }
      sync_device();
#if defined(UNETCU_TEST_EMULATED)
      if (launches >= 0) CHECK(simt::counters().launches == uint64_t(launches));
#endif
      Outputs o;
      o.add("y", dy);
      o.add("save_mean", dmean);
      o.add("save_invstd", dinvstd);
      o.add("running_mean", drm);
      o.add("running_var", drv);
      // Only its guards matter; its bytes must be deterministic too.
      o.add("workspace", ws);
      return o;
    });
    check_close(out.get<float>("y"), y, 1e-5, 1e-5, "y");
    check_close(out.get<float>("save_mean"), mean, 1e-7, 1e-6, "save_mean");
    check_close(out.get<float>("save_invstd"), invstd, 0.0, 1e-6, "save_invstd");
    check_close(out.get<float>("running_mean"), rm, 1e-7, 1e-6, "running_mean");
    check_close(out.get<float>("running_var"), rv, 0.0, 1e-6, "running_var");
    all.push_back(out);
  }
  return all;
}

TEST_CASE("cuda batchnorm train forward (plain and fused) matches the reference") {
  for (const BnCase& bc : kCases) check_train_forward(bc);
}

TEST_CASE("cuda batchnorm eval forward (plain and fused) matches the reference") {
  for (const BnCase& bc : kCases) {
    for (Fusion f : {Fusion::none, Fusion::relu, Fusion::add_relu}) {
      const std::string shape = shape_name(bc);
      CAPTURE(shape);
      CAPTURE(fusion_name(f));
      const BnData d = make_data(bc, 200 + uint64_t(bc.c));
      std::vector<float> y(d.x.size());
      cpu::batchnorm_eval_forward(y.data(), d.x.data(), d.gamma.data(), d.beta.data(),
                                  d.running_mean.data(), d.running_var.data(), d.sh, kEps);
      if (f == Fusion::relu) cpu::relu_forward(y.data(), y.data(), int64_t(y.size()));
      if (f == Fusion::add_relu)
        cpu::add_relu_forward(y.data(), y.data(), d.residual.data(), int64_t(y.size()));

      const Outputs out = run_deterministic([&] {
        DeviceBuffer<float> dx(d.x, bc.shift), dres(d.residual, bc.shift), dy(d.x.size(), bc.shift);
        DeviceBuffer<float> dgamma(d.gamma), dbeta(d.beta), drm(d.running_mean), drv(d.running_var);
        dy.poison();
        if (f == Fusion::none) {
          cuda::batchnorm_eval_forward(dy.get(), dx.get(), dgamma.get(), dbeta.get(), drm.get(),
                                       drv.get(), d.sh, kEps, nullptr);
        } else if (f == Fusion::relu) {
          cuda::batchnorm_relu_eval_forward(dy.get(), dx.get(), dgamma.get(), dbeta.get(),
                                            drm.get(), drv.get(), d.sh, kEps, nullptr);
        } else {
          cuda::batchnorm_add_relu_eval_forward(dy.get(), dx.get(), dres.get(), dgamma.get(),
                                                dbeta.get(), drm.get(), drv.get(), d.sh, kEps,
                                                nullptr);
        }
        sync_device();
        Outputs o;
        o.add("y", dy);
        o.add("running_mean", drm);  // eval must leave the statistics alone
        o.add("running_var", drv);
        return o;
      });
      check_close(out.get<float>("y"), y, 1e-5, 1e-5, "y");
      check_same_bits(out.get<float>("running_mean"), d.running_mean, "running_mean untouched");
      check_same_bits(out.get<float>("running_var"), d.running_var, "running_var untouched");
    }
  }
}

// One shape, all three fusions and every grad mode, against the reference composition; both
// schedules bit-identical. Under the emulator, `launches` (when >= 0) is the number of kernels
// each call must take. y and the statistics here are the CPU reference's, so the mask is taken
// from y; the mask formed from x, which assumes our forward's y, has its own test below.
// Returns the outputs of each (fusion, mode).
std::vector<Outputs> check_backward(const BnCase& bc, int launches = -1) {
  const Switched from_y = relu_mask_from_input(false);
  std::vector<Outputs> all;
  {
    for (Fusion f : {Fusion::none, Fusion::relu, Fusion::add_relu}) {
      for (GradMode dx_mode : kGradModes) {
        // The parameter and residual modes cycle with the dx mode's opposite, so every mode of
        // every output is covered without a full product.
        const GradMode other = dx_mode == GradMode::overwrite ? GradMode::accumulate
                                                              : GradMode::overwrite;
        const GradMode param_mode = other, res_mode = other;
        const std::string shape = shape_name(bc);
        CAPTURE(shape);
        CAPTURE(fusion_name(f));
        CAPTURE(mode_name(dx_mode));
        const BnData d = make_data(bc, 300 + uint64_t(bc.c));
        // Forward reference: the saved statistics and the (fused) output whose mask backward uses.
        std::vector<float> y, mean, invstd, rm, rv;
        reference_train_forward(y, mean, invstd, rm, rv, d, f);
        const size_t count = d.x.size();
        const auto dy = random_vector<float>(count, 301);
        const auto dx0 = random_vector<float>(count, 302);
        const auto dres0 = random_vector<float>(count, 303);
        const auto dgamma0 = random_vector<float>(size_t(bc.c), 304);
        const auto dbeta0 = random_vector<float>(size_t(bc.c), 305);

        // Reference composition: mask dy by the relu output, then the plain backward; with the
        // residual fused, the masked gradient also flows into dresidual.
        std::vector<float> g = dy;
        if (f != Fusion::none) cpu::relu_backward(g.data(), dy.data(), y.data(), int64_t(count),
                                                  GradMode::overwrite);
        std::vector<float> want_dx = dx0, want_dgamma = dgamma0, want_dbeta = dbeta0;
        std::vector<float> want_dres = dres0;
        cpu::batchnorm_backward(want_dx.data(), want_dgamma.data(), want_dbeta.data(), g.data(),
                                d.x.data(), d.gamma.data(), mean.data(), invstd.data(), d.sh,
                                dx_mode, param_mode);
        if (f == Fusion::add_relu) {
          for (size_t i = 0; i < count; ++i)
            want_dres[i] = res_mode == GradMode::accumulate ? dres0[i] + g[i] : g[i];
        }

        const Outputs out = run_deterministic([&] {
          DeviceBuffer<float> ddy(dy, bc.shift), dyv(y, bc.shift), dx(d.x, bc.shift);
          DeviceBuffer<float> ddx(dx0, bc.shift), ddres(dres0, bc.shift);
          DeviceBuffer<float> dgamma(d.gamma), dmean(mean), dinvstd(invstd);
          DeviceBuffer<float> ddgamma(dgamma0), ddbeta(dbeta0);
          DeviceBuffer<unsigned char> ws(cuda::batchnorm_workspace_bytes(d.sh));
          ws.poison();
          if (dx_mode == GradMode::overwrite) ddx.poison();
          if (param_mode == GradMode::overwrite) {
            ddgamma.poison();
            ddbeta.poison();
          }
          if (res_mode == GradMode::overwrite) ddres.poison();
#if defined(UNETCU_TEST_EMULATED)
          simt::reset_counters();
#endif
          if (f == Fusion::none) {
            cuda::batchnorm_backward(ddx.get(), ddgamma.get(), ddbeta.get(), ddy.get(), dx.get(),
                                     dgamma.get(), dmean.get(), dinvstd.get(), d.sh, dx_mode,
                                     param_mode, ws.get(), nullptr);
          } else if (f == Fusion::relu) {
            cuda::batchnorm_relu_backward(ddx.get(), ddgamma.get(), ddbeta.get(), ddy.get(),
                                          dyv.get(), dx.get(), dgamma.get(), nullptr, dmean.get(),
                                          dinvstd.get(), d.sh, dx_mode, param_mode, ws.get(),
                                          nullptr);
          } else {
            cuda::batchnorm_add_relu_backward(ddx.get(), ddres.get(), ddgamma.get(), ddbeta.get(),
                                              ddy.get(), dyv.get(), dx.get(), dgamma.get(),
                                              dmean.get(), dinvstd.get(), d.sh, dx_mode, res_mode,
                                              param_mode, ws.get(), nullptr);
          }
          sync_device();
#if defined(UNETCU_TEST_EMULATED)
          if (launches >= 0) CHECK(simt::counters().launches == uint64_t(launches));
#endif
          Outputs o;
          o.add("dx", ddx);
          o.add("dgamma", ddgamma);
          o.add("dbeta", ddbeta);
          o.add("dresidual", ddres);
          return o;
        });
        check_close(out.get<float>("dx"), want_dx, 1e-5, 1e-5, "dx");
        check_close(out.get<float>("dgamma"), want_dgamma, 1e-6, 1e-6, "dgamma");
        check_close(out.get<float>("dbeta"), want_dbeta, 1e-6, 1e-6, "dbeta");
        if (f == Fusion::add_relu) {
          check_same_bits(out.get<float>("dresidual"), want_dres, "dresidual");
        } else {
          // Not written without the residual fusion: the poison (or the initial values) stays.
          const auto dres = out.get<float>("dresidual");
          if (res_mode == GradMode::accumulate) check_same_bits(dres, dres0, "dresidual untouched");
        }
        all.push_back(out);
      }
    }
  }
  return all;
}

TEST_CASE("cuda batchnorm backward (plain and fused) matches the reference in all grad modes") {
  for (const BnCase& bc : kCases) check_backward(bc);
}

// Where a block holds all the rows of its float4 columns (at most 512 rows), one kernel each
// way; larger tensors, and the scalar shapes (misaligned, or channels not a multiple of 4),
// three: the sums' partials, their final addition, the pass.
TEST_CASE("cuda batchnorm takes one kernel where a block holds the rows, three otherwise") {
#if defined(UNETCU_TEST_EMULATED)
  const int kOne = 1, kThree = 3;
#else
  const int kOne = -1, kThree = -1;  // counted by the emulator
#endif
  check_train_forward({1, 8, 8, 64, 0}, kOne);
  check_backward({1, 8, 8, 64, 0}, kOne);
  check_train_forward({1, 33, 33, 16, 0}, kThree);
  check_backward({1, 33, 33, 16, 0}, kThree);
  check_train_forward({2, 20, 21, 3, 0}, kThree);
  check_backward({2, 20, 21, 3, 0}, kThree);
  check_train_forward({1, 8, 8, 64, 1}, kThree);
  // What the library says of the aligned shapes above (bench_cuda_ops asks it).
  CHECK(cuda::batchnorm_kernel_count({64, 64}) == 1);
  CHECK(cuda::batchnorm_kernel_count({33 * 33, 16}) == 3);
  CHECK(cuda::batchnorm_kernel_count({2 * 20 * 21, 3}) == 3);
  CHECK(cuda::batchnorm_kernel_count({512, 20}) == 1);  // the edge: 512 rows
  CHECK(cuda::batchnorm_kernel_count({513, 20}) == 3);
  CHECK(cuda::batchnorm_kernel_count({0, 20}) == 0);
}

Switched pass_last_first(bool on) {
  return {cuda::set_batchnorm_pass_last_first, cuda::batchnorm_pass_last_first, on};
}

// Every output of `got` bit for bit equal to the same output of `want`.
void check_same_outputs(const std::vector<Outputs>& got, const std::vector<Outputs>& want,
                        std::initializer_list<const char*> names) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    for (const char* name : names)
      check_same_bits(got[i].get<float>(name), want[i].get<float>(name), name);
  }
}

// The second pass last rows first (UNETCU_BN_PASS_LAST_FIRST): against the reference, both
// schedules bit-identical and three kernels, as the default; and the default's bits, since only
// the order of an element-by-element pass changed. Multi-block shapes, vectorised and scalar
// (3 channels; 300 misaligned, two column tiles). Under the emulator, where a wave is 64 blocks:
// 10,000 rows of 16 channels (4 float4 columns, 64 rows a block) give the default pass
// ceil(10,000 / 64) = 157 blocks and this one 64, each thread 2 or 3 rows.
TEST_CASE("cuda batchnorm passes last rows first give the default's bits") {
#if defined(UNETCU_TEST_EMULATED)
  const int kThree = 3;
#else
  const int kThree = -1;  // counted by the emulator
#endif
  for (const BnCase& bc : {BnCase{4, 50, 50, 16, 0}, BnCase{2, 33, 32, 64, 0},
                           BnCase{1, 33, 33, 3, 0}, BnCase{1, 20, 30, 300, 1}}) {
    const std::string shape = shape_name(bc);
    CAPTURE(shape);
    std::vector<Outputs> forward[2], backward[2];
    for (bool last_first : {false, true}) {
      const Switched order = pass_last_first(last_first);
      forward[last_first] = check_train_forward(bc, last_first ? kThree : -1);
      backward[last_first] = check_backward(bc, last_first ? kThree : -1);
    }
    check_same_outputs(forward[1], forward[0],
                       {"y", "save_mean", "save_invstd", "running_mean", "running_var"});
    check_same_outputs(backward[1], backward[0], {"dx", "dgamma", "dbeta", "dresidual"});
  }
#if defined(UNETCU_TEST_EMULATED)
  // The pass in one wave: the blocks of one training forward, each way.
  const BnCase bc{4, 50, 50, 16, 0};
  const BnData d = make_data(bc, 116);
  uint64_t blocks[2] = {};
  for (bool last_first : {false, true}) {
    const Switched order = pass_last_first(last_first);
    DeviceBuffer<float> dx(d.x), dy(d.x.size()), dgamma(d.gamma), dbeta(d.beta);
    DeviceBuffer<float> drm(d.running_mean), drv(d.running_var), dmean(16), dinvstd(16);
    DeviceBuffer<unsigned char> ws(cuda::batchnorm_workspace_bytes(d.sh));
    simt::reset_counters();
    cuda::batchnorm_train_forward(dy.get(), dmean.get(), dinvstd.get(), drm.get(), drv.get(),
                                  dx.get(), dgamma.get(), dbeta.get(), d.sh, kMomentum, kEps,
                                  ws.get(), nullptr);
    sync_device();
    blocks[last_first] = simt::counters().blocks;
  }
  CHECK(blocks[0] - blocks[1] == 157 - 64);
#endif
}

// Our BatchNorm + ReLU training forward on the host's data: y and the saved statistics, as a
// training step leaves them for the backward.
void our_relu_forward(const BnCase& bc, const BnData& d, std::vector<float>& y,
                      std::vector<float>& mean, std::vector<float>& invstd) {
  const size_t c = size_t(bc.c);
  DeviceBuffer<float> dx(d.x, bc.shift), dyv(d.x.size(), bc.shift), dgamma(d.gamma), dbeta(d.beta);
  DeviceBuffer<float> drm(d.running_mean), drv(d.running_var), dmean(c), dinvstd(c);
  DeviceBuffer<unsigned char> ws(cuda::batchnorm_workspace_bytes(d.sh));
  cuda::batchnorm_relu_train_forward(dyv.get(), dmean.get(), dinvstd.get(), drm.get(), drv.get(),
                                     dx.get(), dgamma.get(), dbeta.get(), d.sh, kMomentum, kEps,
                                     ws.get(), nullptr);
  sync_device();
  y = dyv.download();
  mean = dmean.download();
  invstd = dinvstd.download();
}

// The data of a mask-from-x case:
//   random      make_data's;
//   zeros       x is 2, 3, 4 repeated down the rows (a multiple of 3 of them) and beta 0: every
//               channel's mean is exactly 3, so a third of the pre-activations are exactly 0
//               (y = 0, masked off; a mask of >= 0 would differ);
//   knife_edge  a third of each channel's rows hold one value p, and beta is set, after a
//               forward has given the statistics (which do not depend on beta), to
//               -((p - mean) * scale) rounded, with scale = gamma * invstd as the forward forms
//               it: those pre-activations are then the rounding error of the product, whose
//               sign flips with a scale one ulp off, so a backward that formed the scale, or
//               the normalisation, in any other way than the forward would mask them
//               differently in about half of the channels.
enum class MaskData { random, zeros, knife_edge };

void check_relu_mask_from_x(const BnCase& bc, MaskData kind) {
  BnData d = make_data(bc, 400 + uint64_t(bc.c));
  const size_t count = d.x.size(), c = size_t(bc.c);
  if (kind == MaskData::zeros) {
    for (size_t i = 0; i < count; ++i) d.x[i] = float(2 + (i / c) % 3);
    std::fill(d.beta.begin(), d.beta.end(), 0.0f);
  }
  if (kind == MaskData::knife_edge) {
    for (size_t i = 0; i < count; ++i)
      if ((i / c) % 3 == 0) d.x[i] = d.x[i % c];  // row 0's value, every third row
    std::vector<float> y0, mean0, invstd0;
    our_relu_forward(bc, d, y0, mean0, invstd0);
    for (size_t ch = 0; ch < c; ++ch) {
      const float scale = float(double(d.gamma[ch]) * double(invstd0[ch]));
      d.beta[ch] = -((d.x[ch] - mean0[ch]) * scale);
    }
  }
  const auto dy = random_vector<float>(count, 401);
  const auto dx0 = random_vector<float>(count, 402);
  const auto dgamma0 = random_vector<float>(c, 403);
  const auto dbeta0 = random_vector<float>(c, 404);
  std::vector<float> y, mean, invstd;
  our_relu_forward(bc, d, y, mean, invstd);
  if (kind == MaskData::zeros) {
    size_t zero = 0;
    for (float v : y) zero += v == 0.0f;
    REQUIRE(zero >= count / 3);  // the edge this data is for
  }

  for (GradMode mode : kGradModes) {
    const std::string shape = shape_name(bc);
    CAPTURE(shape);
    CAPTURE(int(kind));
    CAPTURE(mode_name(mode));
    std::vector<float> g(count), want_dx = dx0, want_dgamma = dgamma0, want_dbeta = dbeta0;
    cpu::relu_backward(g.data(), dy.data(), y.data(), int64_t(count), GradMode::overwrite);
    cpu::batchnorm_backward(want_dx.data(), want_dgamma.data(), want_dbeta.data(), g.data(),
                            d.x.data(), d.gamma.data(), mean.data(), invstd.data(), d.sh, mode,
                            mode);
    Outputs by_source[2];
    for (bool from_x : {false, true}) {
      const Switched source = relu_mask_from_input(from_x);
      by_source[from_x] = run_deterministic([&] {
        DeviceBuffer<float> ddy(dy, bc.shift), dyv(y, bc.shift), dx(d.x, bc.shift);
        DeviceBuffer<float> ddx(dx0, bc.shift), dgamma(d.gamma), dbeta(d.beta);
        DeviceBuffer<float> dmean(mean), dinvstd(invstd), ddgamma(dgamma0), ddbeta(dbeta0);
        DeviceBuffer<unsigned char> ws(cuda::batchnorm_workspace_bytes(d.sh));
        ws.poison();
        if (from_x) dyv.poison();  // must not be read
        if (mode == GradMode::overwrite) {
          ddx.poison();
          ddgamma.poison();
          ddbeta.poison();
        }
        cuda::batchnorm_relu_backward(ddx.get(), ddgamma.get(), ddbeta.get(), ddy.get(),
                                      dyv.get(), dx.get(), dgamma.get(), dbeta.get(), dmean.get(),
                                      dinvstd.get(), d.sh, mode, mode, ws.get(), nullptr);
        sync_device();
        Outputs o;
        o.add("dx", ddx);
        o.add("dgamma", ddgamma);
        o.add("dbeta", ddbeta);
        return o;
      });
    }
    for (const char* name : {"dx", "dgamma", "dbeta"})
      check_same_bits(by_source[1].get<float>(name), by_source[0].get<float>(name),
                      std::string(name) + ": mask from x vs from y");
    check_close(by_source[1].get<float>("dx"), want_dx, 1e-5, 1e-5, "dx");
    check_close(by_source[1].get<float>("dgamma"), want_dgamma, 1e-6, 1e-6, "dgamma");
    check_close(by_source[1].get<float>("dbeta"), want_dbeta, 1e-6, 1e-6, "dbeta");
  }
}

// The BatchNorm + ReLU backward's mask formed from x (the default) against the one read from y,
// with y and the statistics from our own forward, as in a training step: the same bits (y
// poisoned when it must not be read), and the reference composition's values. The special
// data in the one-kernel, the multi-block and the scalar paths.
TEST_CASE("cuda batchnorm + relu backward forms the mask from x with the bits of y > 0") {
  for (const BnCase& bc : kCases) check_relu_mask_from_x(bc, MaskData::random);
  for (const BnCase& bc : {BnCase{2, 9, 12, 16, 0}, BnCase{2, 33, 36, 16, 0},
                           BnCase{1, 9, 12, 20, 1}})
    check_relu_mask_from_x(bc, MaskData::zeros);
  for (const BnCase& bc : {BnCase{1, 12, 16, 64, 0}, BnCase{2, 24, 24, 64, 0},
                           BnCase{1, 12, 16, 63, 1}})
    check_relu_mask_from_x(bc, MaskData::knife_edge);
}

}  // namespace
}  // namespace unetcu::test
