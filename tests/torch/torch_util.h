// tests/torch/torch_util.h: moving data between our NHWC/KRSC buffers and LibTorch's
// NCHW/OIHW tensors, for the comparison tests.
#pragma once

#include <torch/torch.h>

// LibTorch pulls in glog, whose CHECK* macros replace doctest's (and abort on failure).
// Point them back at doctest's assertions.
#include <doctest/doctest.h>
#undef CHECK
#undef CHECK_EQ
#undef CHECK_NE
#undef CHECK_LT
#undef CHECK_LE
#undef CHECK_GT
#undef CHECK_GE
#define CHECK DOCTEST_CHECK
#define CHECK_EQ DOCTEST_CHECK_EQ
#define CHECK_NE DOCTEST_CHECK_NE
#define CHECK_LT DOCTEST_CHECK_LT
#define CHECK_LE DOCTEST_CHECK_LE
#define CHECK_GT DOCTEST_CHECK_GT
#define CHECK_GE DOCTEST_CHECK_GE

#include <cstdint>
#include <vector>

namespace unetcu::test {

// [n][h][w][c] buffer -> NCHW tensor (a copy), optionally requiring grad.
template <typename T>
torch::Tensor nhwc_to_torch(const std::vector<T>& v, int n, int h, int w, int c, bool grad = false) {
  auto dtype = std::is_same_v<T, double> ? torch::kFloat64 : torch::kFloat32;
  auto t = torch::from_blob(const_cast<T*>(v.data()), {n, h, w, c}, dtype)
               .permute({0, 3, 1, 2}).contiguous().clone();
  return grad ? t.requires_grad_(true) : t;
}

// NCHW tensor -> [n][h][w][c] buffer.
template <typename T = float>
std::vector<T> torch_to_nhwc(const torch::Tensor& t) {
  auto dtype = std::is_same_v<T, double> ? torch::kFloat64 : torch::kFloat32;
  auto c = t.detach().to(dtype).permute({0, 2, 3, 1}).contiguous();
  return std::vector<T>(c.template data_ptr<T>(), c.template data_ptr<T>() + c.numel());
}

// Any contiguous tensor -> flat buffer in its own order.
template <typename T = float>
std::vector<T> torch_to_vector(const torch::Tensor& t) {
  auto dtype = std::is_same_v<T, double> ? torch::kFloat64 : torch::kFloat32;
  auto c = t.detach().to(dtype).contiguous();
  return std::vector<T>(c.template data_ptr<T>(), c.template data_ptr<T>() + c.numel());
}

// KRSC filters <-> OIHW tensor.
template <typename T>
torch::Tensor krsc_to_torch(const std::vector<T>& v, int k, int r, int s, int c, bool grad = false) {
  return nhwc_to_torch(v, k, r, s, c, grad);
}
template <typename T = float>
std::vector<T> torch_to_krsc(const torch::Tensor& t) { return torch_to_nhwc<T>(t); }

}  // namespace unetcu::test
