// bench/torch_util.h: moving benchmark inputs between our NHWC/KRSC buffers and LibTorch's
// NCHW/OIHW tensors (on the CPU; .to(torch::kCUDA) moves them on).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "bench/bench_util.h"

namespace unetcu::bench {

// [n][h][w][c] -> an NCHW tensor (a copy); KRSC filters -> OIHW likewise.
inline torch::Tensor to_nchw(const std::vector<float>& v, int n, int h, int w, int c) {
  return torch::from_blob(const_cast<float*>(v.data()), {n, h, w, c}, torch::kFloat32)
      .permute({0, 3, 1, 2})
      .contiguous();
}
// An NCHW (or OIHW) tensor of any float type, on any device -> [n][h][w][c] (or KRSC) floats.
inline std::vector<float> to_nhwc(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU, torch::kFloat32).permute({0, 2, 3, 1}).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}
inline torch::Tensor to_flat(const std::vector<float>& v) {
  return torch::from_blob(const_cast<float*>(v.data()), {int64_t(v.size())}, torch::kFloat32)
      .clone();
}
inline std::vector<float> to_vector(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

}  // namespace unetcu::bench
