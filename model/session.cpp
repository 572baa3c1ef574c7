// model/session.cpp: ModelSession (see session.h).
#include "model/session.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "engine/error.h"

namespace unetcu {

// Where the step's results sit in PerBatch::results: the loss at 0, the per-image counts from
// here on, so that one download brings both back.
constexpr size_t kCountsOffset = 64;

struct ModelSession::PerBatch {
  Unet unet;
  std::unique_ptr<Executor> exec;
  uint8_t* images = nullptr;  // device staging for the uint8 batch
  uint8_t* masks = nullptr;
  DiceSums* sums = nullptr;
  unsigned char* results = nullptr;
  int train_steps = 0;        // train steps run at this batch size
  int graph = -1;             // the captured train step (-1: none yet, -2: capture failed)

  float* loss() const { return reinterpret_cast<float*>(results); }
  ConfusionCounts* counts() const {
    return reinterpret_cast<ConfusionCounts*>(results + kCountsOffset);
  }
};

ModelSession::ModelSession(Backend& backend, int image_h, int image_w, const AdamConfig& adam)
    : be_(backend), spec_(unet_spec()), h_(image_h), w_(image_w), adam_(adam) {
  build_unet(1, h_, w_);  // validates the input size before anything is allocated
  const size_t pbytes = size_t(spec_.param_count) * sizeof(float);
  params_ = static_cast<float*>(be_.alloc(pbytes));
  grads_ = static_cast<float*>(be_.alloc(pbytes));
  exp_avg_ = static_cast<float*>(be_.alloc(pbytes));
  exp_avg_sq_ = static_cast<float*>(be_.alloc(pbytes));
  running_ = static_cast<float*>(be_.alloc(size_t(spec_.running_count) * sizeof(float)));
  be_.zero(grads_, pbytes);
  be_.zero(exp_avg_, pbytes);
  be_.zero(exp_avg_sq_, pbytes);
  num_batches_tracked_.assign(spec_.bns.size(), 0);
}

ModelSession::~ModelSession() {
  // In-flight copies may still target the result slots: let them land before freeing.
  try {
    be_.synchronize();
  } catch (const std::exception&) {
  }
  for (ResultSlot& slot : slots_) be_.release_host(slot.host);
  for (auto& [n, pb] : batches_) {
    pb->exec.reset();
    for (void* p : {(void*)pb->images, (void*)pb->masks, (void*)pb->sums, (void*)pb->results})
      be_.release(p);
  }
  for (float* p : {params_, grads_, exp_avg_, exp_avg_sq_, running_}) be_.release(p);
}

void ModelSession::set_state(const HostModelState& s) {
  if (int64_t(s.params.size()) != spec_.param_count ||
      int64_t(s.running.size()) != spec_.running_count ||
      s.num_batches_tracked.size() != spec_.bns.size())
    fail("model state has the wrong size");
  be_.upload(params_, s.params.data(), s.params.size() * sizeof(float));
  be_.upload(running_, s.running.data(), s.running.size() * sizeof(float));
  num_batches_tracked_ = s.num_batches_tracked;
}

void ModelSession::check_buffer_guards() const {
  for (const auto& [n, pb] : batches_) {
    const std::string problem = pb->exec->check_guards();
    if (!problem.empty())
      fail("after a step of ", n, n == 1 ? " image: " : " images: ", problem);
  }
}

HostModelState ModelSession::state() const {
  check_buffer_guards();
  HostModelState s;
  s.params.resize(size_t(spec_.param_count));
  s.running.resize(size_t(spec_.running_count));
  be_.download(s.params.data(), params_, s.params.size() * sizeof(float));
  be_.download(s.running.data(), running_, s.running.size() * sizeof(float));
  s.num_batches_tracked = num_batches_tracked_;
  return s;
}

void ModelSession::set_optimizer(const HostOptimizerState& s) {
  if (int64_t(s.exp_avg.size()) != spec_.param_count ||
      int64_t(s.exp_avg_sq.size()) != spec_.param_count)
    fail("optimizer state has the wrong size");
  be_.upload(exp_avg_, s.exp_avg.data(), s.exp_avg.size() * sizeof(float));
  be_.upload(exp_avg_sq_, s.exp_avg_sq.data(), s.exp_avg_sq.size() * sizeof(float));
  // The backend already counts this session's steps; it is told only when the count changes
  // (a resumed run), so replayed graphs keep advancing t on the device by themselves.
  if (s.step != adam_step_) adam_dirty_ = true;
  adam_step_ = s.step;
}

HostOptimizerState ModelSession::optimizer() const {
  HostOptimizerState s;
  s.exp_avg.resize(size_t(spec_.param_count));
  s.exp_avg_sq.resize(size_t(spec_.param_count));
  be_.download(s.exp_avg.data(), exp_avg_, s.exp_avg.size() * sizeof(float));
  be_.download(s.exp_avg_sq.data(), exp_avg_sq_, s.exp_avg_sq.size() * sizeof(float));
  s.step = adam_step_;
  return s;
}

std::vector<float> ModelSession::gradients() const {
  check_buffer_guards();
  std::vector<float> g(size_t(spec_.param_count));
  be_.download(g.data(), grads_, g.size() * sizeof(float));
  return g;
}

ModelSession::PerBatch& ModelSession::batch(int n) {
  auto it = batches_.find(n);
  if (it != batches_.end()) return *it->second;
  auto pb = std::make_unique<PerBatch>();
  pb->unet = build_unet(n, h_, w_);
  pb->exec = std::make_unique<Executor>(be_, pb->unet.graph);
  const size_t pixels = size_t(n) * h_ * w_;
  pb->images = static_cast<uint8_t*>(be_.alloc(pixels * 3));
  pb->masks = static_cast<uint8_t*>(be_.alloc(pixels));
  pb->sums = static_cast<DiceSums*>(be_.alloc(sizeof(DiceSums)));
  pb->results =
      static_cast<unsigned char*>(be_.alloc(kCountsOffset + sizeof(ConfusionCounts) * n));
  auto& ref = *pb;
  batches_[n] = std::move(pb);
  return ref;
}

int ModelSession::captured_graphs() const {
  int count = 0;
  for (const auto& [n, pb] : batches_) count += pb->graph >= 0;
  return count;
}

void ModelSession::upload_inputs(PerBatch& pb, const uint8_t* images, const uint8_t* masks,
                                 int n, bool pinned) {
  const size_t pixels = size_t(n) * h_ * w_;
  const Backend::HostToDevice parts[2] = {{pb.images, images, pixels * 3},
                                          {pb.masks, masks, pixels}};
  be_.upload_batch(parts, masks ? 2 : 1, pinned);
}

// Everything of a training step after the upload, issued to the backend: run now, or recorded
// into a CUDA graph. Nothing here may touch the host.
void ModelSession::issue_train_step(PerBatch& pb, int n) {
  const Graph& g = pb.unet.graph;
  const int64_t pixels = int64_t(n) * h_ * w_;
  be_.normalize_input(pb.exec->value(g.input()), pb.images, pixels, NormalizeParams{});
  pb.exec->forward(params_, running_, true);
  const float* logits = pb.exec->value(g.output());
  be_.loss_and_counts(pb.loss(), pb.sums, pb.counts(), logits, pb.masks, n, int64_t(h_) * w_);
  be_.dice_loss_backward(pb.exec->grad(g.output()), logits, pb.masks, pb.sums, pixels);
  if (!be_.early_adam()) {
    pb.exec->backward(params_, grads_);
    be_.adam_step(params_, exp_avg_, exp_avg_sq_, grads_, spec_.param_count);
    return;
  }
  // Early Adam (Backend::early_adam): the backward walk reports, going down, the offset above
  // which every gradient is issued; once a part of at least kAdamPart parameters is final its
  // update is forked beside the rest of the walk, which never touches those parameters again
  // (each is used once, by a node already done). The rest is updated after the walk.
  constexpr int64_t kAdamPart = int64_t(1) << 20;
  be_.adam_advance();
  int64_t updated_from = spec_.param_count;  // [updated_from, param_count) is issued
  auto update_down_to = [&](int64_t lo) {
    be_.adam_update(params_ + lo, exp_avg_ + lo, exp_avg_sq_ + lo, grads_ + lo,
                    updated_from - lo);
    updated_from = lo;
  };
  bool forked = false;
  pb.exec->backward(params_, grads_, [&](int64_t first_final) {
    const int64_t lo = (first_final + 3) / 4 * 4;  // parts start 16-byte aligned (float4)
    if (updated_from - lo < kAdamPart) return;
    be_.fork_optimizer();
    forked = true;
    update_down_to(lo);
  });
  if (forked) be_.join_optimizer();
  update_down_to(0);
}

void ModelSession::issue_eval_step(PerBatch& pb, int n) {
  const Graph& g = pb.unet.graph;
  const int64_t pixels = int64_t(n) * h_ * w_;
  be_.normalize_input(pb.exec->value(g.input()), pb.images, pixels, NormalizeParams{});
  pb.exec->forward(params_, running_, false);
}

StepResult ModelSession::read_results(PerBatch& pb, int n) {
  std::vector<unsigned char> host(kCountsOffset + sizeof(ConfusionCounts) * size_t(n));
  be_.download(host.data(), pb.results, host.size());
  return parse_results(host.data(), n);
}

StepResult ModelSession::train_step(const uint8_t* images, const uint8_t* masks, int n) {
  if (pending_train_results() > 0)
    fail("train_step: ", pending_train_results(), " submitted steps' results are still "
         "pending (a bug in the caller: collect them with next_train_result first)");
  submit_train_step(images, masks, n);
  StepResult r;
  next_train_result(r, true);
  return r;
}

StepResult ModelSession::parse_results(const unsigned char* host, int n) {
  StepResult r;
  std::memcpy(&r.loss, host, sizeof(float));
  r.counts.resize(size_t(n));
  std::memcpy(r.counts.data(), host + kCountsOffset, sizeof(ConfusionCounts) * size_t(n));
  return r;
}

void ModelSession::collect_oldest(StepResult& out) {
  ResultSlot& slot = slots_[oldest_];
  be_.wait_marker(slot.marker);
  out = parse_results(slot.host, slot.n);
  oldest_ = (oldest_ + 1) % kResultsInFlight;
  --in_flight_;
}

bool ModelSession::next_train_result(StepResult& out, bool wait) {
  if (!ready_.empty()) {
    out = std::move(ready_.front());
    ready_.pop_front();
    return true;
  }
  if (in_flight_ == 0) return false;
  if (!wait && !be_.marker_reached(slots_[oldest_].marker)) return false;
  collect_oldest(out);
  return true;
}

void ModelSession::submit_train_step(const uint8_t* images, const uint8_t* masks, int n,
                                     bool pinned_inputs) {
  if (in_flight_ == kResultsInFlight) {  // the ring is full: keep the oldest results aside
    ready_.emplace_back();
    collect_oldest(ready_.back());
  }
  ResultSlot& slot = slots_[(oldest_ + in_flight_) % kResultsInFlight];
  const size_t result_bytes = kCountsOffset + sizeof(ConfusionCounts) * size_t(n);
  if (slot.capacity < result_bytes) {
    be_.release_host(slot.host);
    slot.host = nullptr;
    slot.capacity = 0;
    slot.host = static_cast<unsigned char*>(be_.alloc_host(result_bytes));
    slot.capacity = result_bytes;
  }
  if (slot.marker < 0) slot.marker = be_.create_marker();

  PerBatch& pb = batch(n);
  if (adam_dirty_) {
    be_.set_adam(adam_, adam_step_);
    adam_dirty_ = false;
  }
  upload_inputs(pb, images, masks, n, pinned_inputs);
  if (pb.graph >= 0) {
    be_.launch_graph(pb.graph);
  } else if (pb.graph == -1 && pb.train_steps > 0 && use_graphs_ && be_.supports_graphs()) {
    // The eager first step chose the algorithms and sized the workspaces; this one records.
    // Nothing runs during a capture, so a capture that fails leaves the state untouched and
    // this batch size simply stays eager.
    bool captured = false;
    be_.begin_capture();
    try {
      issue_train_step(pb, n);
      pb.graph = be_.end_capture();
      captured = true;
    } catch (const std::exception& e) {
      be_.abort_capture();
      pb.graph = -2;
      std::cerr << "warning: capturing the training step (batch " << n
                << ") as a CUDA graph failed, it runs eagerly: " << e.what() << "\n";
    }
    if (captured) {
      if (!tuned_ && step_tuning_wanted()) pb.graph = tune_step(pb, n, pb.graph);
      be_.launch_graph(pb.graph);
    } else {
      issue_train_step(pb, n);
    }
  } else {
    issue_train_step(pb, n);
  }
  ++pb.train_steps;
  ++adam_step_;
  for (auto& t : num_batches_tracked_) ++t;
  be_.download_async(slot.host, pb.results, result_bytes);
  be_.record_marker(slot.marker);
  slot.n = n;
  ++in_flight_;
}

bool ModelSession::step_tuning_wanted() const {
  if (tune_ >= 0) return tune_ == 1;
  const char* setting = std::getenv("UNETCU_TUNE_STEP");
  if (setting != nullptr && setting[0] == '0') return false;
  return be_.timings_measure_device();
}

// The mean time of one replay of `graph` over `replays` launched back to back (as training
// issues its steps), after one untimed.
double ModelSession::time_replays(int graph, int replays) {
  be_.launch_graph(graph);
  be_.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < replays; ++i) be_.launch_graph(graph);
  be_.synchronize();
  const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - t0;
  return took.count() / replays;
}

// Step tuning (see session.h): `captured` is this batch's step as issued so far, its inputs
// uploaded. Returns the graph to keep.
int ModelSession::tune_step(PerBatch& pb, int n, int captured) {
  tuned_ = true;
  const std::vector<std::string> names = be_.schedule_variants();
  if (names.empty()) return captured;

  // What a replay changes besides the buffers every step overwrites (gradients, activations,
  // results): the parameters, Adam's moments, the running statistics, and Adam's step on the
  // device, which set_adam puts back.
  const size_t pbytes = size_t(spec_.param_count) * sizeof(float);
  struct Saved {
    float* live;
    size_t bytes;
    void* copy = nullptr;
  } saved[] = {{params_, pbytes},
               {exp_avg_, pbytes},
               {exp_avg_sq_, pbytes},
               {running_, size_t(spec_.running_count) * sizeof(float)}};
  auto release_saved = [&] {
    for (Saved& a : saved) {
      be_.release(a.copy);
      a.copy = nullptr;
    }
  };
  try {
    for (Saved& a : saved) {
      a.copy = be_.alloc(a.bytes);
      be_.copy(a.copy, a.live, a.bytes);
    }
  } catch (const std::exception& e) {
    release_saved();
    tune_report_ = std::string("step tuning skipped: ") + e.what();
    return captured;
  }

  std::vector<int> graphs{captured}, variant{-1};
  std::string notes;
  auto put_back = [&] {
    be_.use_schedule_variant(-1);
    for (Saved& a : saved) be_.copy(a.live, a.copy, a.bytes);
    be_.synchronize();
    release_saved();
    be_.set_adam(adam_, adam_step_);
  };
  std::vector<double> median;
  try {
    for (size_t v = 0; v < names.size(); ++v) {
      be_.use_schedule_variant(int(v));
      be_.begin_capture();
      try {
        issue_train_step(pb, n);
        graphs.push_back(be_.end_capture());
        variant.push_back(int(v));
      } catch (const std::exception& e) {
        be_.abort_capture();
        notes += "; " + names[v] + " not captured (" + e.what() + ")";
      }
    }
    be_.use_schedule_variant(-1);
    // Rounds of every graph in turn, so a drift of the clocks falls on all alike.
    std::vector<std::vector<double>> ms(graphs.size());
    for (int r = 0; r < tune_rounds_; ++r)
      for (size_t g = 0; g < graphs.size(); ++g)
        ms[g].push_back(time_replays(graphs[g], tune_replays_));
    median.assign(graphs.size(), 0.0);
    for (size_t g = 0; g < graphs.size(); ++g) {
      std::vector<double>& t = ms[g];
      std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
      median[g] = t[t.size() / 2];
    }
  } catch (...) {
    for (size_t g = 1; g < graphs.size(); ++g) be_.release_graph(graphs[g]);
    put_back();
    throw;
  }

  size_t kept = 0;
  if (tune_pick_ >= -1) {
    for (size_t g = 0; g < graphs.size(); ++g)
      if (variant[g] == tune_pick_) kept = g;
  } else {
    for (size_t g = 1; g < graphs.size(); ++g)
      if (median[g] < median[kept]) kept = g;
    if (median[kept] > median[0] * (1.0 - kTuneMargin)) kept = 0;
  }
  for (size_t g = 0; g < graphs.size(); ++g)
    if (g != kept) be_.release_graph(graphs[g]);
  put_back();
  be_.use_schedule_variant(variant[kept]);

  std::ostringstream os;
  os << std::fixed << std::setprecision(3) << "step tuning at batch " << n << " (median of "
     << tune_rounds_ << " x " << tune_replays_ << " replays): as first issued " << median[0]
     << " ms";
  for (size_t g = 1; g < graphs.size(); ++g)
    os << "; " << names[size_t(variant[g])] << " " << median[g] << " ms ("
       << std::showpos << std::setprecision(1) << 100.0 * (median[g] / median[0] - 1.0)
       << std::noshowpos << std::setprecision(3) << "%)";
  os << notes << "; kept: " << (kept == 0 ? "as first issued" : names[size_t(variant[kept])]);
  if (tune_pick_ >= -1) os << " (chosen by a test, not by the times)";
  tune_report_ = os.str();
  return graphs[kept];
}

StepResult ModelSession::eval_step(const uint8_t* images, const uint8_t* masks, int n) {
  PerBatch& pb = batch(n);
  const Graph& g = pb.unet.graph;
  upload_inputs(pb, images, masks, n);
  issue_eval_step(pb, n);
  const float* logits = pb.exec->value(g.output());
  be_.loss_and_counts(pb.loss(), pb.sums, pb.counts(), logits, pb.masks, n, int64_t(h_) * w_);
  return read_results(pb, n);
}

std::vector<float> ModelSession::predict(const uint8_t* images, int n) {
  PerBatch& pb = batch(n);
  upload_inputs(pb, images, nullptr, n);
  issue_eval_step(pb, n);
  std::vector<float> logits(size_t(n) * h_ * w_);
  be_.download(logits.data(), pb.exec->value(pb.unet.graph.output()), logits.size() * sizeof(float));
  check_buffer_guards();
  return logits;
}

}  // namespace unetcu
