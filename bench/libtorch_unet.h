// bench/libtorch_unet.h: smp's Unet(resnet34) written with LibTorch ops (conv2d, batch_norm,
// max_pool2d, interpolate, cat) over a name -> tensor map in PyTorch layouts, and smp's binary
// DiceLoss. The benchmark's peer for the training step and the whole-model reference of the
// LibTorch comparison test; header-only so both use the same code.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "model/session.h"
#include "model/unet.h"

namespace unetcu::bench {

struct LibTorchUnet {
  std::map<std::string, torch::Tensor> p, buf;  // parameters; BatchNorm running statistics
  bool train = true;

  // From our model state: conv weights go from KRSC to OIHW; parameters require grad.
  static LibTorchUnet from_state(const ModelSpec& spec, const HostModelState& st) {
    LibTorchUnet u;
    std::vector<float> v;
    for (const auto& e : spec.params) {
      v.assign(st.params.begin() + e.offset, st.params.begin() + e.offset + e.count);
      if (e.kind == ParamKind::conv_weight)
        krsc_to_oihw(v.data(), st.params.data() + e.offset, e.torch_shape);
      u.p[e.name] = torch::from_blob(v.data(), e.torch_shape, torch::kFloat32).clone().requires_grad_(true);
    }
    for (const auto& bn : spec.bns) {
      u.buf[bn.prefix + ".running_mean"] = torch::from_blob(const_cast<float*>(st.running.data() + bn.running_mean), {bn.c}, torch::kFloat32).clone();
      u.buf[bn.prefix + ".running_var"] = torch::from_blob(const_cast<float*>(st.running.data() + bn.running_var), {bn.c}, torch::kFloat32).clone();
    }
    return u;
  }
  // Parameters in state_dict order (for an optimiser).
  std::vector<torch::Tensor> parameters(const ModelSpec& spec) {
    std::vector<torch::Tensor> out;
    for (const auto& e : spec.params) out.push_back(p[e.name]);
    return out;
  }

  torch::Tensor conv(const torch::Tensor& x, const std::string& name, int stride, int pad) {
    auto bias = p.count(name + ".bias") ? p[name + ".bias"] : torch::Tensor();
    return torch::conv2d(x, p[name + ".weight"], bias, stride, pad);
  }
  // cuDNN's BatchNorm where PyTorch would use it (torch.backends.cudnn.enabled; GPU only).
  torch::Tensor bn(const torch::Tensor& x, const std::string& pre) {
    return torch::batch_norm(x, p[pre + ".weight"], p[pre + ".bias"], buf[pre + ".running_mean"],
                             buf[pre + ".running_var"], train, 0.1, 1e-5,
                             at::globalContext().userEnabledCuDNN());
  }
  torch::Tensor block(const torch::Tensor& x, const std::string& pre, int stride) {
    auto y = torch::relu(bn(conv(x, pre + ".conv1", stride, 1), pre + ".bn1"));
    y = bn(conv(y, pre + ".conv2", 1, 1), pre + ".bn2");
    auto idn = p.count(pre + ".downsample.0.weight")
                   ? bn(conv(x, pre + ".downsample.0", stride, 0), pre + ".downsample.1")
                   : x;
    return torch::relu(y + idn);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    namespace F = torch::nn::functional;
    auto f1 = torch::relu(bn(conv(x, "encoder.conv1", 2, 3), "encoder.bn1"));
    auto y = torch::max_pool2d(f1, 3, 2, 1);
    std::vector<torch::Tensor> feats = {x, f1};
    const int blocks[4] = {3, 4, 6, 3};
    for (int l = 0; l < 4; ++l) {
      for (int i = 0; i < blocks[l]; ++i)
        y = block(y, "encoder.layer" + std::to_string(l + 1) + "." + std::to_string(i),
                  (i == 0 && l > 0) ? 2 : 1);
      feats.push_back(y);
    }
    const int skips[5] = {4, 3, 2, 1, -1};
    for (int i = 0; i < 5; ++i) {
      const std::string pre = "decoder.blocks." + std::to_string(i);
      y = F::interpolate(y, F::InterpolateFuncOptions()
                                .scale_factor(std::vector<double>{2, 2})
                                .mode(torch::kNearest));
      if (skips[i] >= 0) y = torch::cat({y, feats[size_t(skips[i])]}, 1);
      y = torch::relu(bn(conv(y, pre + ".conv1.0", 1, 1), pre + ".conv1.1"));
      y = torch::relu(bn(conv(y, pre + ".conv2.0", 1, 1), pre + ".conv2.1"));
    }
    return conv(y, "segmentation_head.0", 1, 1);
  }
};

// smp DiceLoss(mode="binary", from_logits=True): batch Dice over (N, H*W) together.
inline torch::Tensor libtorch_dice_loss(const torch::Tensor& logits, const torch::Tensor& target) {
  auto n = logits.size(0);
  auto prob = torch::log_sigmoid(logits).exp().reshape({n, 1, -1});
  auto t = target.reshape({n, 1, -1});
  auto inter = (prob * t).sum(std::vector<int64_t>{0, 2});
  auto card = (prob + t).sum(std::vector<int64_t>{0, 2});
  auto score = 2.0 * inter / card.clamp_min(1e-7);
  auto loss = (1 - score) * (t.sum(std::vector<int64_t>{0, 2}) > 0).to(torch::kFloat32);
  return loss.mean();
}

}  // namespace unetcu::bench
