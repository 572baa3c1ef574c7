// model/session.h: the model living on one Backend: parameter, gradient, Adam and
// running-statistics arenas, one Executor per batch size (the last partial batch gets its
// own), and the steps the trainer calls: train_step (normalise -> forward -> Dice loss ->
// backward -> Adam -> confusion counts), eval_step (BatchNorm in eval mode, no gradients) and
// predict.
//
// On a backend with CUDA graphs, train_step runs the first step of each batch size eagerly
// (the backend chooses convolution algorithms and sizes its workspaces), captures the second
// as one graph (normalise through Adam and the counts) and replays that graph from then on;
// only the batch upload, before the launch, and the results download, after it, stay outside.
// The loss and counts are downloaded at the end of every step, which waits for the step (one
// host synchronisation per step). A backend serves one session at a time: it holds the Adam
// state this session sets.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "engine/backend.h"
#include "engine/executor.h"
#include "kernels/adam.h"
#include "kernels/loss.h"
#include "model/unet.h"

namespace unetcu {

// Host copy of everything a checkpoint holds about the model and the optimiser.
struct HostModelState {
  std::vector<float> params;                // parameter arena (conv weights KRSC)
  std::vector<float> running;               // running-statistics arena
  std::vector<int64_t> num_batches_tracked; // one per BatchNorm, spec order
};
struct HostOptimizerState {
  std::vector<float> exp_avg, exp_avg_sq;   // same layout as the parameter arena
  int64_t step = 0;                          // Adam's t (number of updates done)
};

struct StepResult {
  float loss = 0;
  std::vector<ConfusionCounts> counts;       // one per image
};

class ModelSession {
 public:
  ModelSession(Backend& backend, int image_h, int image_w, const AdamConfig& adam = {});
  ~ModelSession();
  ModelSession(const ModelSession&) = delete;
  ModelSession& operator=(const ModelSession&) = delete;

  void set_state(const HostModelState& s);
  HostModelState state() const;
  void set_optimizer(const HostOptimizerState& s);
  HostOptimizerState optimizer() const;
  void set_learning_rate(double lr) {
    adam_.lr = lr;
    adam_dirty_ = true;
  }
  // CUDA graphs for train_step where the backend has them (default on); off, every step runs
  // eagerly. Results are the same bit for bit either way.
  void set_cuda_graphs(bool on) { use_graphs_ = on; }
  // Training steps captured as CUDA graphs so far (one per batch size); for tests and logs.
  int captured_graphs() const;

  // images: n*h*w*3 uint8 RGB; masks: n*h*w uint8 0/1 (host memory).
  StepResult train_step(const uint8_t* images, const uint8_t* masks, int n);
  StepResult eval_step(const uint8_t* images, const uint8_t* masks, int n);
  // Logits (n*h*w floats, host) with BatchNorm in eval mode.
  std::vector<float> predict(const uint8_t* images, int n);

  // Parameter gradients of the last train_step (host copy; for tests).
  std::vector<float> gradients() const;
  const ModelSpec& spec() const { return spec_; }
  Backend& backend() { return be_; }
  int image_h() const { return h_; }
  int image_w() const { return w_; }

 private:
  struct PerBatch;
  PerBatch& batch(int n);
  void upload_inputs(PerBatch& pb, const uint8_t* images, const uint8_t* masks, int n);
  void issue_train_step(PerBatch& pb, int n);
  void issue_eval_step(PerBatch& pb, int n);
  StepResult read_results(PerBatch& pb, int n);

  Backend& be_;
  const ModelSpec& spec_;
  int h_, w_;
  AdamConfig adam_;
  int64_t adam_step_ = 0;     // mirrors the backend's counter (both advance once per step)
  bool adam_dirty_ = true;    // adam_ or adam_step_ changed since the backend was told
  bool use_graphs_ = true;
  std::vector<int64_t> num_batches_tracked_;
  float *params_ = nullptr, *grads_ = nullptr, *exp_avg_ = nullptr, *exp_avg_sq_ = nullptr,
        *running_ = nullptr;
  std::map<int, std::unique_ptr<PerBatch>> batches_;
};

}  // namespace unetcu
