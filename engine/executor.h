// engine/executor.h: runs a Graph on a Backend with a static memory plan.
//
// At construction every activation, activation gradient and saved buffer (BatchNorm mean and
// invstd, maxpool argmax) gets an offset in one device allocation; nothing is allocated while
// running. forward() runs the nodes in order; backward() in reverse, starting from the output
// gradient that the loss wrote into grad(graph.output()). Parameter gradients are written in
// overwrite mode: every parameter is used exactly once in this network, so no zeroing pass is
// needed.
#pragma once

#include <cstdint>
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
  // grads: parameter-gradient arena (same offsets as params).
  void backward(const float* params, float* grads);

  float* value(int act) const { return base_ + value_off_[act]; }
  float* grad(int act) const { return base_ + grad_off_[act]; }
  const Graph& graph() const { return graph_; }
  size_t bytes() const { return bytes_; }

 private:
  Backend& be_;
  const Graph& graph_;
  float* base_ = nullptr;
  size_t bytes_ = 0;
  std::vector<int64_t> value_off_, grad_off_;  // per activation, in floats
  std::vector<int64_t> save_off_;              // per node: BN mean/invstd or maxpool argmax
};

// BatchNorm constants from the spec (PyTorch defaults).
constexpr float kBatchNormMomentum = 0.1f;
constexpr float kBatchNormEps = 1e-5f;

}  // namespace unetcu
