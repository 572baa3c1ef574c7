// model/unet.cpp: the ResNet34-UNet, built layer by layer exactly as smp registers it, so the
// parameter table comes out in state_dict order while the graph is built.
#include "model/unet.h"

#include <cmath>

#include "engine/error.h"
#include "engine/rng.h"

namespace unetcu {

const ParamEntry* ModelSpec::find(const std::string& name) const {
  for (const auto& p : params)
    if (p.name == name) return &p;
  return nullptr;
}

namespace {

class Builder {
 public:
  Builder(Unet& u) : s_(u.spec), g_(u.graph) {}

  int conv(const std::string& name, int x, int k, int r, int stride, int pad, InitKind init,
           bool bias = false) {
    const ActInfo a = g_.acts()[x];
    ConvShape sh = ConvShape::make(a.n, a.h, a.w, a.c, k, r, r, stride, pad);
    int64_t w = add_param(name + ".weight", ParamKind::conv_weight, init, {k, a.c, r, r});
    int64_t b = bias ? add_param(name + ".bias", ParamKind::conv_bias, InitKind::zeros, {k}) : -1;
    return g_.add_conv(name, x, sh, w, b);
  }
  int bn(const std::string& prefix, int x) {
    int c = g_.acts()[x].c;
    int64_t gamma = add_param(prefix + ".weight", ParamKind::bn_weight, InitKind::ones, {c});
    int64_t beta = add_param(prefix + ".bias", ParamKind::bn_bias, InitKind::zeros, {c});
    BatchNormEntry e{prefix, c, s_.running_count, s_.running_count + c};
    s_.running_count += 2 * c;
    s_.bns.push_back(e);
    return g_.add_batchnorm(prefix, x, gamma, beta, e.running_mean, e.running_var);
  }
  int relu(int x) { return g_.add_relu(x); }

  // torchvision BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + identity)
  int basic_block(const std::string& p, int x, int planes, int stride) {
    const InitKind enc = InitKind::kaiming_normal_fan_out;
    int y = relu(bn(p + ".bn1", conv(p + ".conv1", x, planes, 3, stride, 1, enc)));
    y = bn(p + ".bn2", conv(p + ".conv2", y, planes, 3, 1, 1, enc));
    int idn = x;
    if (stride != 1 || g_.acts()[x].c != planes)
      idn = bn(p + ".downsample.1", conv(p + ".downsample.0", x, planes, 1, stride, 0, enc));
    return g_.add_add_relu(p + ".out", y, idn);
  }

  // smp DecoderBlock: upsample, concat [up, skip], two Conv2dReLU (conv, BN, ReLU).
  int decoder_block(int i, int x, int skip, int out_ch) {
    const std::string p = "decoder.blocks." + std::to_string(i);
    const InitKind dec = InitKind::kaiming_uniform_fan_in;
    int y = g_.add_upsample(p + ".upsample", x);
    if (skip >= 0) y = g_.add_concat(p + ".concat", y, skip);
    y = relu(bn(p + ".conv1.1", conv(p + ".conv1.0", y, out_ch, 3, 1, 1, dec)));
    y = relu(bn(p + ".conv2.1", conv(p + ".conv2.0", y, out_ch, 3, 1, 1, dec)));
    return y;
  }

 private:
  int64_t add_param(const std::string& name, ParamKind kind, InitKind init,
                    std::vector<int64_t> shape) {
    ParamEntry e;
    e.name = name; e.kind = kind; e.init = init; e.torch_shape = std::move(shape);
    e.count = 1;
    for (int64_t d : e.torch_shape) e.count *= d;
    e.offset = s_.param_count;
    s_.param_count += e.count;
    s_.params.push_back(e);
    return e.offset;
  }
  ModelSpec& s_;
  Graph& g_;
};

}  // namespace

Unet build_unet(int n, int h, int w) {
  if (n < 1 || h < 32 || w < 32 || h % 32 != 0 || w % 32 != 0)
    fail("model: input ", n, "x", h, "x", w, " is not supported: height and width must be "
         "positive multiples of 32 (e.g. --image-size 128)");
  Unet u;
  Builder b(u);
  const InitKind enc = InitKind::kaiming_normal_fan_out;
  int x = u.graph.add_input("input", n, h, w, 3);
  // Encoder (features f1..f5; f0, the input, is not used by the decoder).
  int f1 = b.relu(b.bn("encoder.bn1", b.conv("encoder.conv1", x, 64, 7, 2, 3, enc)));
  int y = u.graph.add_maxpool("encoder.maxpool", f1);
  const int blocks[4] = {3, 4, 6, 3}, planes[4] = {64, 128, 256, 512};
  int feats[6] = {x, f1, -1, -1, -1, -1};
  for (int l = 0; l < 4; ++l) {
    for (int i = 0; i < blocks[l]; ++i) {
      std::string p = "encoder.layer" + std::to_string(l + 1) + "." + std::to_string(i);
      y = b.basic_block(p, y, planes[l], (i == 0 && l > 0) ? 2 : 1);
    }
    feats[l + 2] = y;
  }
  // Decoder: head is f5; skips f4, f3, f2, f1, then none.
  const int dec_ch[5] = {256, 128, 64, 32, 16};
  const int skips[5] = {feats[4], feats[3], feats[2], feats[1], -1};
  for (int i = 0; i < 5; ++i) y = b.decoder_block(i, y, skips[i], dec_ch[i]);
  // Segmentation head: 3x3 conv 16 -> 1 with bias, no activation (logits).
  int logits = b.conv("segmentation_head.0", y, 1, 3, 1, 1, InitKind::xavier_uniform, true);
  u.graph.set_output(logits);
  u.graph.finalize();
  return u;
}

const ModelSpec& unet_spec() {
  static const ModelSpec spec = build_unet(1, 32, 32).spec;
  return spec;
}

void init_unet(float* params, float* running, const ModelSpec& spec, uint64_t seed) {
  for (size_t i = 0; i < spec.params.size(); ++i) {
    const ParamEntry& e = spec.params[i];
    float* dst = params + e.offset;
    // Each tensor draws from its own stream, so adding a tensor never shifts the others.
    Rng rng(derive_seed(seed, i));
    switch (e.init) {
      case InitKind::ones:
        for (int64_t j = 0; j < e.count; ++j) dst[j] = 1.0f;
        break;
      case InitKind::zeros:
        for (int64_t j = 0; j < e.count; ++j) dst[j] = 0.0f;
        break;
      default: {
        const auto& s = e.torch_shape;  // OIHW
        const double receptive = double(s[2] * s[3]);
        const double fan_in = double(s[1]) * receptive, fan_out = double(s[0]) * receptive;
        // Values are drawn in PyTorch's OIHW order, then stored KRSC.
        std::vector<float> oihw(size_t(e.count));
        if (e.init == InitKind::kaiming_normal_fan_out) {
          const double std_dev = std::sqrt(2.0 / fan_out);
          for (auto& v : oihw) v = float(rng.normal() * std_dev);
        } else {
          const double bound = e.init == InitKind::kaiming_uniform_fan_in
                                   ? std::sqrt(6.0 / fan_in)
                                   : std::sqrt(6.0 / (fan_in + fan_out));
          for (auto& v : oihw) v = float(rng.uniform(-bound, bound));
        }
        oihw_to_krsc(dst, oihw.data(), s);
      }
    }
  }
  for (const auto& bn : spec.bns) {
    for (int c = 0; c < bn.c; ++c) {
      running[bn.running_mean + c] = 0.0f;
      running[bn.running_var + c] = 1.0f;
    }
  }
}

void krsc_to_oihw(float* oihw, const float* krsc, const std::vector<int64_t>& s) {
  const int64_t O = s[0], I = s[1], H = s[2], W = s[3];
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
          oihw[((o * I + i) * H + h) * W + w] = krsc[((o * H + h) * W + w) * I + i];
}

void oihw_to_krsc(float* krsc, const float* oihw, const std::vector<int64_t>& s) {
  const int64_t O = s[0], I = s[1], H = s[2], W = s[3];
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
          krsc[((o * H + h) * W + w) * I + i] = oihw[((o * I + i) * H + h) * W + w];
}

}  // namespace unetcu
