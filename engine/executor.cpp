// engine/executor.cpp: static memory plan and the forward/backward walk over the graph.
#include "engine/executor.h"

#include "engine/error.h"

namespace unetcu {
namespace {
// Offsets are kept 64-float (256-byte) aligned so every buffer suits vector loads on a GPU.
int64_t round_up(int64_t v) { return (v + 63) / 64 * 64; }
}  // namespace

Executor::Executor(Backend& backend, const Graph& graph) : be_(backend), graph_(graph) {
  const auto& acts = graph.acts();
  const auto& nodes = graph.nodes();
  // Consumers per activation, to fuse a BatchNorm into an add_relu only when nothing else
  // reads the BatchNorm's output (the fused op never writes it).
  std::vector<int> readers(acts.size(), 0);
  for (const Node& nd : nodes) {
    if (nd.op == OpKind::relu) continue;  // in place: same tensor, not another reader
    if (nd.in0 >= 0) ++readers[size_t(nd.in0)];
    if (nd.in1 >= 0) ++readers[size_t(nd.in1)];
  }
  const bool fuse = be_.fuses_batchnorm_relu();
  const bool fuse_concat = be_.fuses_upsample_concat();
  for (size_t i = 0; i < nodes.size(); ++i) {
    Step st{int(i)};
    if (fuse && nodes[i].op == OpKind::batchnorm && i + 1 < nodes.size()) {
      const Node& next = nodes[i + 1];
      const int out = nodes[i].out;
      if (next.op == OpKind::relu && next.in0 == out) st.fusion = Fusion::bn_relu;
      else if (next.op == OpKind::add_relu && (next.in0 == out) != (next.in1 == out) &&
               readers[size_t(out)] == 1)
        st.fusion = Fusion::bn_add_relu;
    }
    // The upsampled tensor as the concatenation's first part and read by nothing else (smp's
    // [upsampled, skip] order): written there directly, with no buffer of its own.
    if (fuse_concat && nodes[i].op == OpKind::upsample && i + 1 < nodes.size()) {
      const Node& next = nodes[i + 1];
      const int out = nodes[i].out;
      // (readers == 1 also rules out the concatenation reading it twice.)
      if (next.op == OpKind::concat && next.in0 == out && readers[size_t(out)] == 1 &&
          next.cat.ca == nodes[i].up.c)
        st.fusion = Fusion::upsample_concat;
    }
    steps_.push_back(st);
    if (st.fusion != Fusion::none) ++i;  // the next node is part of this step
  }

  // Buffers no step touches: the upsampled tensor of an upsample_concat step lives in the
  // first channels of the concatenation's buffer, its gradient likewise.
  std::vector<bool> planned(acts.size(), true);
  for (const Step& st : steps_)
    if (st.fusion == Fusion::upsample_concat) planned[size_t(nodes[size_t(st.node)].out)] = false;
  guard_bytes_ = be_.buffer_guard_bytes();
  if (guard_bytes_ % 256 != 0)
    fail("buffer guards of ", guard_bytes_, " bytes: not a multiple of 256");
  int64_t cursor = 0;
  // A buffer of `floats` at the cursor, then its guard when there are guards.
  const auto place = [&](int64_t floats, const std::string& what) {
    const int64_t off = cursor;
    cursor += round_up(floats);
    if (guard_bytes_ > 0) {
      guards_.push_back({cursor, what});
      cursor += int64_t(guard_bytes_ / sizeof(float));
    }
    return off;
  };
  value_off_.assign(acts.size(), -1);
  grad_off_.assign(acts.size(), -1);
  save_off_.assign(nodes.size(), -1);
  for (size_t a = 0; a < acts.size(); ++a) {
    if (!planned[a]) continue;
    value_off_[a] = place(acts[a].numel(), "the value of " + acts[a].name);
    if (int(a) != graph.input())  // the image needs no gradient
      grad_off_[a] = place(acts[a].numel(), "the gradient of " + acts[a].name);
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& nd = nodes[i];
    if (nd.op == OpKind::batchnorm)
      save_off_[i] = place(2 * int64_t(nd.bn.c), "the saved statistics of " + nd.name);
    else if (nd.op == OpKind::maxpool)  // int32 argmax, same size as a float
      save_off_[i] = place(acts[nd.out].numel(), "the argmax of " + nd.name);
  }
  bytes_ = size_t(cursor) * sizeof(float);
  base_ = static_cast<float*>(be_.alloc(bytes_));
  for (size_t i = 0; i < guards_.size(); ++i) {
    const std::vector<uint32_t> words = guard_words(i);
    be_.upload(base_ + guards_[i].off, words.data(), guard_bytes_);
  }

  bool in_order = true;
  int64_t last = -1;
  for (const Step& st : steps_) {
    int64_t lo = -1, hi = -1;
    const int count = st.fusion != Fusion::none ? 2 : 1;
    for (int k = 0; k < count; ++k) {
      const Node& nd = nodes[size_t(st.node + k)];
      for (int64_t off : {nd.weight, nd.bias, nd.gamma, nd.beta}) {
        if (off < 0) continue;
        if (off <= hi) in_order = false;  // within a step, in order too
        if (lo < 0) lo = off;
        hi = off;
      }
    }
    if (lo >= 0 && lo <= last) in_order = false;
    if (hi >= 0) last = hi;
    step_param_start_.push_back(lo);
  }
  if (!in_order) step_param_start_.assign(steps_.size(), -1);  // nothing to report
}

// Guard i's words: quiet NaNs (a read of one past a buffer gives NaN) whose payload is the
// guard's number and the word's place in it, so a kernel that copies a guard it read past its
// input into the guard past its output changes that guard too (one fill for all would not).
std::vector<uint32_t> Executor::guard_words(size_t i) const {
  std::vector<uint32_t> words(guard_bytes_ / 4);
  for (size_t k = 0; k < words.size(); ++k)
    words[k] = 0x7fc00000u | uint32_t((i * words.size() + k) & 0x3fffffu);
  return words;
}

std::string Executor::check_guards() const {
  if (guards_.empty()) return std::string();
  be_.synchronize();
  std::vector<uint32_t> got(guard_bytes_ / 4);
  std::string report;
  int hit = 0;
  for (size_t i = 0; i < guards_.size(); ++i) {
    const Guard& g = guards_[i];
    be_.download(got.data(), base_ + g.off, guard_bytes_);
    const std::vector<uint32_t> want = guard_words(i);
    size_t k = 0;
    while (k < want.size() && got[k] == want[k]) ++k;
    if (k == want.size()) continue;
    if (++hit <= 3) {
      report += (hit > 1 ? "; " : "") + std::string("the ") + std::to_string(guard_bytes_) +
                " guard bytes after " + g.after + " were overwritten (byte " +
                std::to_string(4 * k) + " of them first)";
    }
  }
  if (hit == 0) return std::string();
  if (hit > 3) report += "; and " + std::to_string(hit - 3) + " more guards";
  return report + ": a kernel wrote past the end of that buffer, or before the start of the next";
}

UpsampleShape Executor::in_place_upsample(const Node& up, const Node& cat) {
  UpsampleShape sh = up.up;
  sh.pitch = cat.cat.ca + cat.cat.cb;
  return sh;
}

void Executor::run_fused_forward(const Step& st, const float* params, float* running,
                                 bool train) {
  if (st.fusion == Fusion::upsample_concat) {
    const Node& up = graph_.nodes()[size_t(st.node)];
    const Node& cat = graph_.nodes()[size_t(st.node) + 1];
    be_.upsample2x_forward(value(cat.out), value(up.in0), in_place_upsample(up, cat));
    be_.concat_forward(value(cat.out), nullptr, value(cat.in1), cat.cat);
    return;
  }
  const Node& bn = graph_.nodes()[size_t(st.node)];
  const Node& next = graph_.nodes()[size_t(st.node) + 1];
  float* save = base_ + save_off_[size_t(st.node)];
  const float *x = value(bn.in0), *gamma = params + bn.gamma, *beta = params + bn.beta;
  float *rm = running + bn.running_mean, *rv = running + bn.running_var;
  if (st.fusion == Fusion::bn_relu) {
    float* y = value(bn.out);  // the ReLU is in place on the BatchNorm's output
    if (train)
      be_.batchnorm_relu_train_forward(y, save, save + bn.bn.c, rm, rv, x, gamma, beta, bn.bn,
                                       kBatchNormMomentum, kBatchNormEps);
    else
      be_.batchnorm_relu_eval_forward(y, x, gamma, beta, rm, rv, bn.bn, kBatchNormEps);
    return;
  }
  const float* residual = value(next.in0 == bn.out ? next.in1 : next.in0);
  float* y = value(next.out);
  if (train)
    be_.batchnorm_add_relu_train_forward(y, save, save + bn.bn.c, rm, rv, x, residual, gamma,
                                         beta, bn.bn, kBatchNormMomentum, kBatchNormEps);
  else
    be_.batchnorm_add_relu_eval_forward(y, x, residual, gamma, beta, rm, rv, bn.bn, kBatchNormEps);
}

void Executor::run_fused_backward(const Step& st, const float* params, float* grads) {
  if (st.fusion == Fusion::upsample_concat) {
    const Node& up = graph_.nodes()[size_t(st.node)];
    const Node& cat = graph_.nodes()[size_t(st.node) + 1];
    const float* dy = grad(cat.out);
    be_.concat_backward(nullptr, grad(cat.in1), dy, cat.cat, cat.mode0, cat.mode1);
    be_.upsample2x_backward(grad(up.in0), dy, in_place_upsample(up, cat), up.mode0);
    return;
  }
  const Node& bn = graph_.nodes()[size_t(st.node)];
  const Node& next = graph_.nodes()[size_t(st.node) + 1];
  const float* save = base_ + save_off_[size_t(st.node)];
  const float *x = value(bn.in0), *gamma = params + bn.gamma;
  if (st.fusion == Fusion::bn_relu) {
    be_.batchnorm_relu_backward(grad(bn.in0), grads + bn.gamma, grads + bn.beta, grad(bn.out),
                                value(bn.out), x, gamma, params + bn.beta, save, save + bn.bn.c,
                                bn.bn, bn.mode0, GradMode::overwrite);
    return;
  }
  const bool bn_first = next.in0 == bn.out;
  const int residual = bn_first ? next.in1 : next.in0;
  be_.batchnorm_add_relu_backward(grad(bn.in0), grad(residual), grads + bn.gamma, grads + bn.beta,
                                  grad(next.out), value(next.out), x, gamma, save,
                                  save + bn.bn.c, bn.bn, bn.mode0,
                                  bn_first ? next.mode1 : next.mode0, GradMode::overwrite);
}

Executor::~Executor() { be_.release(base_); }

void Executor::forward(const float* params, float* running, bool train) {
  const auto& acts = graph_.acts();
  const auto& nodes = graph_.nodes();
  for (const Step& st : steps_) {
    if (st.fusion != Fusion::none) {
      run_fused_forward(st, params, running, train);
      continue;
    }
    const size_t i = size_t(st.node);
    const Node& nd = nodes[i];
    float* y = value(nd.out);
    switch (nd.op) {
      case OpKind::conv:
        be_.conv_forward(y, value(nd.in0), params + nd.weight,
                         nd.bias >= 0 ? params + nd.bias : nullptr, nd.conv);
        break;
      case OpKind::batchnorm: {
        float* save = base_ + save_off_[i];
        if (train)
          be_.batchnorm_train_forward(y, save, save + nd.bn.c, running + nd.running_mean,
                                      running + nd.running_var, value(nd.in0), params + nd.gamma,
                                      params + nd.beta, nd.bn, kBatchNormMomentum, kBatchNormEps);
        else
          be_.batchnorm_eval_forward(y, value(nd.in0), params + nd.gamma, params + nd.beta,
                                     running + nd.running_mean, running + nd.running_var, nd.bn,
                                     kBatchNormEps);
        break;
      }
      case OpKind::relu:
        be_.relu_forward(y, y, acts[nd.out].numel());
        break;
      case OpKind::add_relu:
        be_.add_relu_forward(y, value(nd.in0), value(nd.in1), acts[nd.out].numel());
        break;
      case OpKind::maxpool:
        be_.maxpool_forward(y, reinterpret_cast<int32_t*>(base_ + save_off_[i]), value(nd.in0),
                            nd.pool);
        break;
      case OpKind::upsample:
        be_.upsample2x_forward(y, value(nd.in0), nd.up);
        break;
      case OpKind::concat:
        be_.concat_forward(y, value(nd.in0), value(nd.in1), nd.cat);
        break;
    }
  }
}

void Executor::backward(const float* params, float* grads, const ParamsReady& ready) {
  const auto& acts = graph_.acts();
  const auto& nodes = graph_.nodes();
  const int input = graph_.input();
  // A late join is safe because nothing later in this walk touches a forked convolution's
  // buffers: it reads its input's value (the walk writes only gradients) and dy, the gradient
  // of its output, whose writers all consume that output, so come earlier in the reverse walk;
  // it writes its own parameters' gradients, which no other op touches (each parameter is used
  // once).
  const bool join_late = be_.late_weight_grad_join();
  bool forked = false;
  // The parameters of steps si.. start at step si's lowest offset (see step_param_start_).
  auto report = [&](size_t si) {
    if (ready && step_param_start_[si] >= 0) ready(step_param_start_[si]);
  };
  for (size_t si = steps_.size(); si-- > 0;) {
    const Step& st = steps_[si];
    if (st.fusion != Fusion::none) {
      run_fused_backward(st, params, grads);
      report(si);
      continue;
    }
    const size_t ii = size_t(st.node);
    const Node& nd = nodes[ii];
    const float* dy = grad(nd.out);
    switch (nd.op) {
      case OpKind::conv:
        // The weight gradients may run beside the data gradient (Backend::fork_weight_grads):
        // neither writes what the other reads. The fork orders them after the op that wrote dy.
        be_.fork_weight_grads();
        forked = true;
        be_.conv_backward_filter(grads + nd.weight, dy, value(nd.in0), nd.conv, GradMode::overwrite);
        if (nd.bias >= 0) be_.conv_backward_bias(grads + nd.bias, dy, nd.conv, GradMode::overwrite);
        if (nd.in0 != input)
          be_.conv_backward_data(grad(nd.in0), dy, params + nd.weight, nd.conv, nd.mode0);
        if (!join_late) {
          be_.join_weight_grads();
          forked = false;
        }
        break;
      case OpKind::batchnorm: {
        const float* save = base_ + save_off_[ii];
        be_.batchnorm_backward(grad(nd.in0), grads + nd.gamma, grads + nd.beta, dy, value(nd.in0),
                               params + nd.gamma, save, save + nd.bn.c, nd.bn, nd.mode0,
                               GradMode::overwrite);
        break;
      }
      case OpKind::relu:
        be_.relu_backward(grad(nd.out), dy, value(nd.out), acts[nd.out].numel(), GradMode::overwrite);
        break;
      case OpKind::add_relu:
        be_.relu_backward(grad(nd.in0), dy, value(nd.out), acts[nd.out].numel(), nd.mode0);
        be_.relu_backward(grad(nd.in1), dy, value(nd.out), acts[nd.out].numel(), nd.mode1);
        break;
      case OpKind::maxpool:
        be_.maxpool_backward(grad(nd.in0), dy, reinterpret_cast<const int32_t*>(base_ + save_off_[ii]),
                             nd.pool, nd.mode0);
        break;
      case OpKind::upsample:
        be_.upsample2x_backward(grad(nd.in0), dy, nd.up, nd.mode0);
        break;
      case OpKind::concat:
        be_.concat_backward(grad(nd.in0), grad(nd.in1), dy, nd.cat, nd.mode0, nd.mode1);
        break;
    }
    report(si);
  }
  if (forked) be_.join_weight_grads();  // the optimizer reads every gradient next
}

}  // namespace unetcu
