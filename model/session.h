// model/session.h: the model living on one Backend: parameter, gradient, Adam and
// running-statistics arenas, one Executor per batch size (the last partial batch gets its
// own), and the steps the trainer calls: train_step (normalise -> forward -> Dice loss ->
// backward -> Adam -> confusion counts), eval_step (BatchNorm in eval mode, no gradients) and
// predict.
//
// On a backend with CUDA graphs, train_step runs the first step of each batch size eagerly
// (the backend chooses convolution algorithms and sizes its workspaces), captures the second
// as one graph (normalise through Adam and the counts) and replays that graph from then on;
// only the batch upload, before the launch, and the results copy, after it, stay outside.
//
// The loss and counts stay on the device and come back asynchronously: submit_train_step
// issues the step and a stream-ordered copy of its results into page-locked host memory, and
// returns without waiting for the device; next_train_result hands the results back in
// submission order once they have arrived (the trainer's progress bar reads them a step or two
// late). Up to kResultsInFlight steps may be in flight; submitting one more first waits for the
// oldest, whose results are kept until asked for. train_step is submit + wait, with nothing
// else pending. A backend serves
// one session at a time: it holds the Adam state this session sets.
//
// Step tuning: where the backend offers other schedules for a step (Backend::
// schedule_variants: which streams chain their launches, when Adam runs, ...) and its timings
// measure the device, the first captured step is also captured as each variant, every graph
// is timed on that batch (rounds of replays in turn, the median of each), the fastest kept if
// it beats the default by more than kTuneMargin, the others released, and the parameters,
// Adam's moments and step and the running statistics put back as they were before the timing
// replays: training then goes on as if they had not run, on the kept schedule. The best
// schedule depends on the card, so it is chosen where the training runs, in well under a
// second. UNETCU_TUNE_STEP=0 (or set_step_tuning(false)) keeps the default schedule.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
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
  // Step tuning (see the file comment): on or off whatever the environment and the backend say.
  void set_step_tuning(bool on) { tune_ = on ? 1 : 0; }
  // What the step tuning timed and kept; empty until it ran, or where it did not.
  const std::string& step_tuning_report() const { return tune_report_; }
  // Tests: each variant timed over `rounds` of `replays` replays, and the variant kept given by
  // `pick` (an index of Backend::schedule_variants, -1 the default) instead of by the times.
  void set_step_tuning_for_tests(int replays, int rounds, int pick) {
    tune_replays_ = replays;
    tune_rounds_ = rounds;
    tune_pick_ = pick;
  }
  // A variant is kept only if its median step is shorter than the default's by this share.
  static constexpr double kTuneMargin = 0.01;

  // images: n*h*w*3 uint8 RGB; masks: n*h*w uint8 0/1 (host memory, reusable on return).
  StepResult train_step(const uint8_t* images, const uint8_t* masks, int n);
  // The asynchronous form (see the file comment). next_train_result returns false when no
  // result is pending, or when `wait` is false and the oldest has not arrived yet.
  static constexpr int kResultsInFlight = 3;
  // With pinned_inputs, images and masks are Backend::alloc_host memory that the caller leaves
  // untouched until this step's result has come back from next_train_result; the device then
  // copies straight from them. Otherwise they may be reused on return.
  void submit_train_step(const uint8_t* images, const uint8_t* masks, int n,
                         bool pinned_inputs = false);
  bool next_train_result(StepResult& out, bool wait);
  int pending_train_results() const { return int(ready_.size()) + in_flight_; }
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
  void upload_inputs(PerBatch& pb, const uint8_t* images, const uint8_t* masks, int n,
                     bool pinned = false);
  void issue_train_step(PerBatch& pb, int n);
  bool step_tuning_wanted() const;
  int tune_step(PerBatch& pb, int n, int captured);
  double time_replays(int graph, int replays);
  void issue_eval_step(PerBatch& pb, int n);
  StepResult read_results(PerBatch& pb, int n);
  // Pinned host copies of in-flight steps' results, used as a ring.
  struct ResultSlot {
    unsigned char* host = nullptr;
    size_t capacity = 0;
    int marker = -1;
    int n = 0;
  };
  void collect_oldest(StepResult& out);  // waits for the oldest in-flight slot
  // Fails naming the buffer when a kernel wrote into the guard after it (Executor::
  // check_guards; a no-op without guards). state(), gradients() and predict() call it: the
  // points where the tests (and the CLI, at its checkpoints) read the device's results.
  void check_buffer_guards() const;
  static StepResult parse_results(const unsigned char* host, int n);

  Backend& be_;
  const ModelSpec& spec_;
  int h_, w_;
  AdamConfig adam_;
  int64_t adam_step_ = 0;     // mirrors the backend's counter (both advance once per step)
  bool adam_dirty_ = true;    // adam_ or adam_step_ changed since the backend was told
  bool use_graphs_ = true;
  int tune_ = -1;             // step tuning: -1 as the environment and backend say, 0 off, 1 on
  bool tuned_ = false;        // it ran (once a session, at its first capture)
  int tune_replays_ = 10, tune_rounds_ = 3;
  int tune_pick_ = -2;        // -2: by the times
  std::string tune_report_;
  std::vector<int64_t> num_batches_tracked_;
  float *params_ = nullptr, *grads_ = nullptr, *exp_avg_ = nullptr, *exp_avg_sq_ = nullptr,
        *running_ = nullptr;
  std::map<int, std::unique_ptr<PerBatch>> batches_;
  ResultSlot slots_[kResultsInFlight];
  int oldest_ = 0, in_flight_ = 0;   // ring position of the oldest in-flight slot, and count
  std::deque<StepResult> ready_;     // collected early (ring full), not yet handed back
};

}  // namespace unetcu
