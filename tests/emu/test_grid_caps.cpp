// tests/emu/test_grid_caps.cpp: shapes big enough to reach the launch-geometry caps of
// kernels/cuda/common.cuh, the paths that only full-size training tensors take: grid-stride
// loops at the 2048-block cap, reductions at the 1024-block cap, and a stage 2 that loops over
// more partials than it has threads. They cost about 2M emulated elements each, so there is
// one case per skeleton; tolerances as in the per-op tests.
#include "kernel_test.h"
#include "kernels/batchnorm.h"
#include "kernels/elementwise.h"
#include "kernels/loss.h"

namespace unetcu::test {
namespace {

TEST_CASE("cuda relu_backward past the grid-stride cap") {
  // 2048 blocks x 256 threads x 4 floats = 2,097,152 per sweep; a bit more makes threads loop.
  const int64_t count = 2 * 1024 * 1024 + 4 * 1000 + 3;
  const auto y = random_vector<float>(size_t(count), 1001);
  const auto dy = random_vector<float>(size_t(count), 1002);
  std::vector<float> want(static_cast<size_t>(count));
  cpu::relu_backward(want.data(), dy.data(), y.data(), count, GradMode::overwrite);
  const Outputs out = run_deterministic([&] {
    DeviceBuffer<float> ddy(dy), dyv(y), ddx(static_cast<size_t>(count));
    ddx.poison();
    cuda::relu_backward(ddx.get(), ddy.get(), dyv.get(), count, GradMode::overwrite, nullptr);
    sync_device();
    Outputs o;
    o.add("dx", ddx);
    return o;
  });
  check_same_bits(out.get<float>("dx"), want, "relu dx");
}

TEST_CASE("cuda dice loss sums past the reduction block cap") {
  // One column: 256 rows per block sweep, 8 rows per thread: 1024 blocks cover 2,097,152
  // elements, so this count loops in stage 1 and gives stage 2 1024 partials for 256 threads.
  const int64_t count = 2 * 1024 * 1024 + 12345;
  const auto x = random_vector<float>(size_t(count), 1011, -6.0, 6.0);
  const auto t = random_binary(size_t(count), 1012, 0.3);
  float want_loss = 0;
  DiceSums want;
  cpu::dice_loss_forward(&want_loss, &want, x.data(), t.data(), count);
  const Outputs out = run_deterministic([&] {
    DeviceBuffer<float> dx(x), dloss(1);
    DeviceBuffer<uint8_t> dt(t);
    DeviceBuffer<DiceSums> dsums(1);
    DeviceBuffer<unsigned char> ws(cuda::dice_loss_workspace_bytes(count));
    cuda::dice_loss_forward(dloss.get(), dsums.get(), dx.get(), dt.get(), count, ws.get(), nullptr);
    sync_device();
    Outputs o;
    o.add("loss", dloss);
    o.add("sums", dsums);
    return o;
  });
  const DiceSums got = out.get<DiceSums>("sums").at(0);
  check_close(std::vector<double>{got.sum_p, got.sum_t, got.intersection},
              std::vector<double>{want.sum_p, want.sum_t, want.intersection}, 1e-9, 1e-6,
              "dice sums");
  check_close(out.get<float>("loss"), std::vector<float>{want_loss}, 1e-6, 0.0, "dice loss");
}

TEST_CASE("cuda batchnorm train forward and backward past the reduction block cap") {
  // 16 channels: 16 row lanes x 8 rows per thread per block; 147456 rows need 1152 blocks,
  // capped at 1024. The normalising passes (4 channels per float4) hit the 2048-block cap.
  BatchNormShape sh;
  sh.rows = 384 * 384;
  sh.c = 16;
  const size_t count = size_t(sh.rows) * size_t(sh.c);
  const auto x = random_vector<float>(count, 1021, 2.0, 4.0);
  const auto gamma = random_vector<float>(16, 1022, 0.5, 1.5);
  const auto beta = random_vector<float>(16, 1023, -0.5, 0.5);
  const auto dy = random_vector<float>(count, 1024);
  std::vector<float> y(count), mean(16), invstd(16), rm(16, 0.0f), rv(16, 1.0f);
  cpu::batchnorm_train_forward(y.data(), mean.data(), invstd.data(), rm.data(), rv.data(),
                               x.data(), gamma.data(), beta.data(), sh, 0.1f, 1e-5f);
  std::vector<float> dx(count), dgamma(16), dbeta(16);
  cpu::batchnorm_backward(dx.data(), dgamma.data(), dbeta.data(), dy.data(), x.data(),
                          gamma.data(), mean.data(), invstd.data(), sh, GradMode::overwrite,
                          GradMode::overwrite);
  const Outputs out = run_deterministic([&] {
    DeviceBuffer<float> dxin(x), dyout(count), dgam(gamma), dbet(beta);
    DeviceBuffer<float> drm(std::vector<float>(16, 0.0f)), drv(std::vector<float>(16, 1.0f));
    DeviceBuffer<float> dmean(16), dinv(16), ddy(dy), ddx(count), ddgamma(16), ddbeta(16);
    DeviceBuffer<unsigned char> ws(cuda::batchnorm_workspace_bytes(sh));
    ddx.poison();
    cuda::batchnorm_train_forward(dyout.get(), dmean.get(), dinv.get(), drm.get(), drv.get(),
                                  dxin.get(), dgam.get(), dbet.get(), sh, 0.1f, 1e-5f, ws.get(),
                                  nullptr);
    cuda::batchnorm_backward(ddx.get(), ddgamma.get(), ddbeta.get(), ddy.get(), dxin.get(),
                             dgam.get(), dmean.get(), dinv.get(), sh, GradMode::overwrite,
                             GradMode::overwrite, ws.get(), nullptr);
    sync_device();
    Outputs o;
    o.add("y", dyout);
    o.add("save_mean", dmean);
    o.add("save_invstd", dinv);
    o.add("running_var", drv);
    o.add("dx", ddx);
    o.add("dgamma", ddgamma);
    o.add("dbeta", ddbeta);
    return o;
  });
  check_close(out.get<float>("y"), y, 1e-5, 1e-5, "y");
  check_close(out.get<float>("save_mean"), mean, 1e-7, 1e-6, "save_mean");
  check_close(out.get<float>("save_invstd"), invstd, 0.0, 1e-6, "save_invstd");
  check_close(out.get<float>("running_var"), rv, 0.0, 1e-6, "running_var");
  // The backward here starts from the kernel's own saved statistics, which may differ from the
  // reference's by one ulp: dx's coefficients inherit that (relative 1e-6 of terms <= ~10), and
  // dgamma = invstd * sum dy*(x - mean) moves by about ulp(mean) * |sum dy| ~ 1e-4 here.
  check_close(out.get<float>("dx"), dx, 2e-5, 1e-5, "dx");
  check_close(out.get<float>("dgamma"), dgamma, 1e-3, 1e-5, "dgamma");
  check_close(out.get<float>("dbeta"), dbeta, 1e-6, 1e-6, "dbeta");
}

}  // namespace
}  // namespace unetcu::test
