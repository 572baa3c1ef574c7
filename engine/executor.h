// engine/executor.h: runs a Graph on a Backend with a static memory plan.
//
// At construction every activation, activation gradient and saved buffer (BatchNorm mean and
// invstd, maxpool argmax) gets an offset in one device allocation, except the tensors that
// fused steps keep elsewhere (below); nothing is allocated while running. forward() runs the
// nodes in order; backward() in reverse, starting from the output gradient that the loss wrote
// into grad(graph.output()). Parameter gradients are written in overwrite mode: every
// parameter is used exactly once in this network, so no zeroing pass is needed. Each
// convolution's weight gradient is forked beside the rest (Backend::fork_weight_grads) and
// joined right after its data gradient, or once at the end of backward() when the backend asks
// for it (Backend::late_weight_grad_join).
//
// On a backend that fuses BatchNorm with ReLU (Backend::fuses_batchnorm_relu), a BatchNorm
// followed directly by the ReLU on its output, or by the add_relu that ends a residual block
// when the BatchNorm's output feeds nothing else, runs as one fused op forward and backward.
// The gradient writes keep their overwrite/accumulate modes: the two nodes are adjacent, so no
// other write falls between them in either order. On a backend that offers it
// (Backend::fuses_upsample_concat), a decoder's upsampling writes straight into the first
// channels of the concatenation after it, and reads its gradient from there: that tensor has
// no buffer of its own.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/graph.h"

namespace unetcu {

class Executor {
 public:
  Executor(Backend& backend, const Graph& graph);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // params: parameter arena; running: running-statistics arena (updated in train mode).
  void forward(const float* params, float* running, bool train);
  // grads: parameter-gradient arena (same offsets as params). `ready`, when given, is called as
  // the walk goes down with an offset below which no gradient is still to be issued: every
  // parameter at or above it has its gradient issued (forked weight gradients included, so a
  // consumer must order itself after the weight-gradient stream too). The offsets fall
  // monotonically; none is reported when the arena is not laid out in node order.
  using ParamsReady = std::function<void(int64_t first_final)>;
  void backward(const float* params, float* grads, const ParamsReady& ready = nullptr);

  // Null for a tensor with no buffer: the input's gradient, an upsampling written in place
  // into its concatenation (its value and gradient are the concatenation's first channels).
  float* value(int act) const { return at(value_off_[size_t(act)]); }
  float* grad(int act) const { return at(grad_off_[size_t(act)]); }
  const Graph& graph() const { return graph_; }
  // Steps of two nodes: BatchNorms fused with the ReLU or add_relu after them, upsamplings
  // written into the concatenation after them (for tests and logs).
  int fused_ops() const {
    int count = 0;
    for (const Step& st : steps_) count += st.fusion != Fusion::none;
    return count;
  }
  size_t bytes() const { return bytes_; }
  // Of bytes(), what the guards after the buffers take (Backend::buffer_guard_bytes).
  size_t guard_bytes() const { return guards_.size() * guard_bytes_; }
  // Empty when every guard still holds what it was filled with; else whose guards were
  // written (the first three in plan order, and how many more): the writer of that buffer,
  // or of the next, went past its end or start. Downloads the guards, so it waits for the
  // work issued before it.
  std::string check_guards() const;

 private:
  Backend& be_;
  const Graph& graph_;
  float* base_ = nullptr;
  size_t bytes_ = 0;
  std::vector<int64_t> value_off_, grad_off_;  // per activation, in floats; -1: no buffer
  float* at(int64_t off) const { return off < 0 ? nullptr : base_ + off; }
  std::vector<int64_t> save_off_;              // per node: BN mean/invstd or maxpool argmax
  // The guards after the buffers: where each starts (floats) and whose buffer it follows.
  struct Guard {
    int64_t off;
    std::string after;
  };
  std::vector<Guard> guards_;
  size_t guard_bytes_ = 0;
  std::vector<uint32_t> guard_words(size_t i) const;
  // What forward/backward run: one node, or a BatchNorm (node) fused with the next node, or an
  // upsampling (node) written in place into the concatenation that is the next node.
  enum class Fusion { none, bn_relu, bn_add_relu, upsample_concat };
  struct Step {
    int node;
    Fusion fusion = Fusion::none;
  };
  std::vector<Step> steps_;
  // Per step: the lowest parameter offset of its nodes, where those offsets rise with the steps
  // (so the parameters of steps >= i start at step i's lowest); -1 for a step without
  // parameters, and for every step when the arena is not in step order.
  std::vector<int64_t> step_param_start_;
  void run_fused_forward(const Step& st, const float* params, float* running, bool train);
  void run_fused_backward(const Step& st, const float* params, float* grads);
  // The upsampling `up`'s shape writing into the first channels of the concatenation `cat`.
  static UpsampleShape in_place_upsample(const Node& up, const Node& cat);
};

// BatchNorm constants from the spec (PyTorch defaults).
constexpr float kBatchNormMomentum = 0.1f;
constexpr float kBatchNormEps = 1e-5f;

}  // namespace unetcu
