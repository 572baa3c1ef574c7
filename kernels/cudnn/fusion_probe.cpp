// kernels/cudnn/fusion_probe.cpp: the BatchNorm-fusion probe (see fusion_probe.h).
#include "kernels/cudnn/fusion_probe.h"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <utility>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cudnn/conv_cudnn.h"
#include "kernels/cudnn/fusion_check.h"
#include "kernels/cudnn/graph_api.h"

namespace unetcu::cudnn {
namespace {

// As conv_cudnn.cpp times its candidates: 4 calls a captured graph, the median of 5 launches.
constexpr int kCallsPerGraph = 4;
constexpr int kTimedRuns = 5;
// Workspace offered to a configuration; one that needs more is counted and left out.
constexpr size_t kWorkspaceLimit = size_t(256) << 20;

// Tensor unique ids. 1, 2, 3 as conv_cudnn.cpp's (x or dx, w, y or dy); the rest the sums and
// the data-gradient variants' extra inputs; virtual tensors (inside a fused kernel) from 100.
enum Uid : int64_t {
  kX = 1, kW = 2, kY = 3, kSum = 4, kSqSum = 5,  // forward: y's per-channel sums
  kR = 6, kGSum = 7, kZ = 8, kMean = 9, kGzSum = 10,  // data gradient (x-shaped: dx, r, z)
  kScale = 11, kBias = 12,  // forward prologue: the BatchNorm's per-channel scale and shift
  kVirtual = 100,
};

// One float32 device buffer.
class Buffer {
 public:
  explicit Buffer(size_t count) : count_(count) {
    UNETCU_CUDA_CHECK_ALLOC(cudaMalloc(reinterpret_cast<void**>(&p_), bytes()), bytes());
  }
  ~Buffer() {
    if (p_) (void)cudaFree(p_);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  float* get() const { return p_; }
  size_t bytes() const { return count_ * sizeof(float); }
  void upload(const std::vector<float>& v) const {
    UNETCU_CUDA_CHECK(cudaMemcpy(p_, v.data(), bytes(), cudaMemcpyHostToDevice));
  }
  std::vector<float> download() const {
    std::vector<float> v(count_);
    UNETCU_CUDA_CHECK(cudaMemcpy(v.data(), p_, bytes(), cudaMemcpyDeviceToHost));
    return v;
  }
  // All bits set: NaN, so an output a plan does not write shows.
  void poison(cudaStream_t stream) const {
    UNETCU_CUDA_CHECK(cudaMemsetAsync(p_, 0xff, bytes(), stream));
  }

 private:
  float* p_ = nullptr;
  size_t count_;
};

struct Variant {
  const char* name;
  bool backward;       // a data gradient (else a forward convolution)
  bool relu;           // the data gradient masked where r = 0
  int sums;            // per-channel sums: forward sum(y)[, sum(y*y)]; backward sum(g)[, sum(g*zc)]
  bool genstats;       // the forward's two sums through GEN_STATS
  bool deterministic;  // the reductions ask for a deterministic order
  // Forward: the convolution's input is relu(x * scale + bias), the BatchNorm + ReLU before it
  // applied as the input is loaded (a prologue), so that their output need not be written.
  bool prologue = false;
};

const Variant kVariants[] = {
    {"conv", false, false, 0, false, false},
    {"conv+sum", false, false, 1, false, true},
    {"conv+sum", false, false, 1, false, false},
    {"conv+sum+sumsq", false, false, 2, false, true},
    {"conv+sum+sumsq", false, false, 2, false, false},
    {"conv+genstats", false, false, 2, true, false},
    {"bnrelu+conv", false, false, 0, false, false, true},
    {"bnrelu+conv+sum+sumsq", false, false, 2, false, true, true},
    {"bnrelu+conv+sum+sumsq", false, false, 2, false, false, true},
    {"dgrad", true, false, 0, false, false},
    {"dgrad+relu", true, true, 0, false, false},
    {"dgrad+relu+sum", true, true, 1, false, true},
    {"dgrad+relu+sum", true, true, 1, false, false},
    {"dgrad+relu+sums", true, true, 2, false, true},
    {"dgrad+relu+sums", true, true, 2, false, false},
};

// The operation graph of variant v for shape sh; returns the unique ids of its non-virtual
// tensors (the variant pack's).
std::vector<int64_t> build_variant(GraphBuilder& gb, cudnnHandle_t handle, const ConvShape& sh,
                                   const Variant& v) {
  const auto desc = CUDNN_TYPE_BACKEND_DESCRIPTOR;
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  std::vector<cudnnBackendDescriptor_t> ops;
  auto x_shaped = [&](int64_t id, bool is_virtual = false) {
    return gb.tensor(id, sh.n, sh.c, sh.h, sh.w, is_virtual);
  };
  auto y_shaped = [&](int64_t id, bool is_virtual = false) {
    return gb.tensor(id, sh.n, sh.k, sh.p, sh.q, is_virtual);
  };
  auto channels = [&](int64_t id, int64_t c) { return gb.tensor(id, 1, c, 1, 1); };
  auto pointwise = [&](cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t a,
                       cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t out) {
    cudnnBackendDescriptor_t pw = gb.make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    gb.set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
    gb.set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &f32, "pointwise prec");
    gb.finalize(pw, "pointwise finalize");
    cudnnBackendDescriptor_t op = gb.make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    gb.set(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, desc, 1, &pw, "pointwise op desc");
    if (mode == CUDNN_POINTWISE_RELU_BWD) {  // dx = dy where x > 0: a = dy, b = x
      gb.set(op, CUDNN_ATTR_OPERATION_POINTWISE_DYDESC, desc, 1, &a, "relu_bwd dy");
      gb.set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, desc, 1, &b, "relu_bwd x");
      gb.set(op, CUDNN_ATTR_OPERATION_POINTWISE_DXDESC, desc, 1, &out, "relu_bwd dx");
    } else {  // b null: a unary mode (RELU_FWD)
      gb.set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, desc, 1, &a, "pointwise x");
      if (b) gb.set(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, desc, 1, &b, "pointwise b");
      gb.set(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, desc, 1, &out, "pointwise y");
    }
    gb.finalize(op, "pointwise op finalize");
    ops.push_back(op);
  };
  auto reduce_sum = [&](cudnnBackendDescriptor_t in, cudnnBackendDescriptor_t out) {
    cudnnBackendDescriptor_t red = gb.make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnReduceTensorOp_t add = CUDNN_REDUCE_TENSOR_ADD;
    gb.set(red, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &add,
           "reduction operator");
    gb.set(red, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, "reduction type");
    if (v.deterministic) {
      const bool yes = true;
      gb.set(red, CUDNN_ATTR_REDUCTION_IS_DETERMINISTIC, CUDNN_TYPE_BOOLEAN, 1, &yes,
             "reduction deterministic");
    }
    gb.finalize(red, "reduction finalize");
    cudnnBackendDescriptor_t op = gb.make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    gb.set(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, desc, 1, &in, "reduction x");
    gb.set(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, desc, 1, &out, "reduction y");
    gb.set(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, desc, 1, &red, "reduction desc");
    gb.finalize(op, "reduction op finalize");
    ops.push_back(op);
  };
  // x is dx and y is dy for the data gradient.
  auto convolution = [&](cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t w,
                         cudnnBackendDescriptor_t y) {
    ops.push_back(gb.convolution_op(v.backward ? Dir::backward_data : Dir::forward, x, w, y,
                                    gb.convolution(sh), 0.0f));
  };

  std::vector<int64_t> uids = {kX, kW, kY};
  cudnnBackendDescriptor_t w = gb.tensor(kW, sh.k, sh.c, sh.r, sh.s);
  if (!v.backward) {
    cudnnBackendDescriptor_t x = x_shaped(kX), y = y_shaped(kY);
    if (v.prologue) {
      cudnnBackendDescriptor_t scaled = x_shaped(kVirtual + 3, true),
                               shifted = x_shaped(kVirtual + 4, true),
                               input = x_shaped(kVirtual + 5, true);
      pointwise(CUDNN_POINTWISE_MUL, x, channels(kScale, sh.c), scaled);
      pointwise(CUDNN_POINTWISE_ADD, scaled, channels(kBias, sh.c), shifted);
      pointwise(CUDNN_POINTWISE_RELU_FWD, shifted, nullptr, input);
      uids.push_back(kScale);
      uids.push_back(kBias);
      x = input;
    }
    convolution(x, w, y);
    if (v.sums > 0) {
      cudnnBackendDescriptor_t sum = channels(kSum, sh.k), sqsum = channels(kSqSum, sh.k);
      uids.push_back(kSum);
      uids.push_back(kSqSum);
      if (v.genstats) {
        const cudnnGenStatsMode_t mode = CUDNN_GENSTATS_SUM_SQSUM;
        cudnnBackendDescriptor_t op = gb.make(CUDNN_BACKEND_OPERATION_GEN_STATS_DESCRIPTOR);
        gb.set(op, CUDNN_ATTR_OPERATION_GENSTATS_MODE, CUDNN_TYPE_GENSTATS_MODE, 1, &mode,
               "genstats mode");
        gb.set(op, CUDNN_ATTR_OPERATION_GENSTATS_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &f32,
               "genstats prec");
        gb.set(op, CUDNN_ATTR_OPERATION_GENSTATS_XDESC, desc, 1, &y, "genstats x");
        gb.set(op, CUDNN_ATTR_OPERATION_GENSTATS_SUMDESC, desc, 1, &sum, "genstats sum");
        gb.set(op, CUDNN_ATTR_OPERATION_GENSTATS_SQSUMDESC, desc, 1, &sqsum, "genstats sqsum");
        gb.finalize(op, "genstats finalize");
        ops.push_back(op);
      } else {
        reduce_sum(y, sum);
        if (v.sums > 1) {
          cudnnBackendDescriptor_t yy = y_shaped(kVirtual, true);
          pointwise(CUDNN_POINTWISE_MUL, y, y, yy);
          reduce_sum(yy, sqsum);
        } else {
          uids.pop_back();
        }
      }
    }
  } else {
    cudnnBackendDescriptor_t dy = y_shaped(kY);
    if (!v.relu) {
      convolution(x_shaped(kX), w, dy);
    } else {
      cudnnBackendDescriptor_t raw = x_shaped(kVirtual, true), r = x_shaped(kR),
                               g = x_shaped(kX);
      convolution(raw, w, dy);
      pointwise(CUDNN_POINTWISE_RELU_BWD, raw, r, g);
      uids.push_back(kR);
      if (v.sums > 0) {
        reduce_sum(g, channels(kGSum, sh.c));
        uids.push_back(kGSum);
      }
      if (v.sums > 1) {
        cudnnBackendDescriptor_t z = x_shaped(kZ), mean = channels(kMean, sh.c),
                                 zc = x_shaped(kVirtual + 1, true),
                                 gz = x_shaped(kVirtual + 2, true);
        pointwise(CUDNN_POINTWISE_SUB, z, mean, zc);
        pointwise(CUDNN_POINTWISE_MUL, g, zc, gz);
        reduce_sum(gz, channels(kGzSum, sh.c));
        for (int64_t id : {int64_t(kZ), int64_t(kMean), int64_t(kGzSum)}) uids.push_back(id);
      }
    }
  }
  gb.graph(handle, ops);
  return uids;
}

std::string shape_text(const ConvShape& sh) {
  std::ostringstream os;
  os << sh.r << "x" << sh.s << "/" << sh.stride << " " << sh.c << "->" << sh.k << " at " << sh.h
     << "x" << sh.w << " (batch " << sh.n << ")";
  return os.str();
}

class Probe {
 public:
  Probe(const ConvShape& sh, const FusionProbeOptions& options)
      : sh_(sh), options_(options), x_(sh.x_size()), w_(sh.w_size()), y_(sh.y_size()),
        dy_(sh.y_size()), r_(sh.x_size()), z_(sh.x_size()), dx_(sh.x_size()), sum_(sh.k),
        sqsum_(sh.k), mean_(sh.c), gsum_(sh.c), gzsum_(sh.c), scale_(sh.c), bias_(sh.c),
        ws_(kWorkspaceLimit / sizeof(float)) {
    UNETCU_CUDA_CHECK(cudaStreamCreate(&stream_));
    UNETCU_CUDA_CHECK(cudaEventCreate(&start_));
    UNETCU_CUDA_CHECK(cudaEventCreate(&stop_));
    if (cudnnCreate(&handle_) != CUDNN_STATUS_SUCCESS || cudnnSetStream(handle_, stream_) !=
                                                             CUDNN_STATUS_SUCCESS)
      throw CudnnError("fusion probe: cudnnCreate / cudnnSetStream failed");
    fill();
    references();
  }
  ~Probe() {
    if (handle_) cudnnDestroy(handle_);
    (void)cudaEventDestroy(start_);
    (void)cudaEventDestroy(stop_);
    (void)cudaStreamDestroy(stream_);
  }
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;

  std::string run(const Variant& v) {
    std::ostringstream line;
    line << shape_text(sh_) << " " << v.name
         << (v.sums > 0 && !v.genstats ? (v.deterministic ? " (deterministic)" : " (any order)")
                                       : "")
         << ": ";
    GraphBuilder gb;
    const std::vector<int64_t> uids = build_variant(gb, handle_, sh_, v);
    if (!gb.steps().ok()) return line.str() + "graph refused at " + gb.steps().failed;
    const cudnnBackendDescriptor_t graph = gb.kept()->back().get();

    // The configurations the three heuristics modes offer, the first options_.configs of each,
    // each engine and knob setting once.
    struct Candidate {
      Candidate(Desc c, const EngineNotes& n, std::string k)
          : config(std::move(c)), notes(n), knobs(std::move(k)) {}
      Desc config;
      EngineNotes notes;
      std::string knobs;
      std::unique_ptr<Desc> exec, pack;
      double build_s = 0;
      float ms = -1;
    };
    std::vector<Candidate> cands;
    const std::pair<cudnnBackendHeurMode_t, const char*> modes[] = {
        {CUDNN_HEUR_MODE_A, "A"}, {CUDNN_HEUR_MODE_B, "B"}, {CUDNN_HEUR_MODE_FALLBACK, "fallback"}};
    line << "offered";
    for (const auto& [mode, name] : modes) {
      Steps hs;
      std::vector<Desc> configs = heuristic_configs(graph, mode, hs);
      line << " " << name << " ";
      if (!hs.ok()) {
        line << "(" << hs.failed << ")";
        continue;
      }
      line << configs.size();
      for (size_t i = 0; i < configs.size() && int(i) < options_.configs; ++i) {
        EngineNotes notes;
        Desc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
        if (!engine_notes(configs[i].get(), engine, &notes)) continue;
        std::string knobs = knob_text(configs[i].get());
        bool seen = false;
        for (const Candidate& o : cands)
          seen = seen || (o.notes.index == notes.index && o.knobs == knobs);
        if (!seen) cands.emplace_back(std::move(configs[i]), notes, std::move(knobs));
      }
    }

    // Build, time, keep the fastest.
    std::map<int64_t, void*> ptrs = pointers(v);
    std::vector<void*> pack_ptrs;
    for (int64_t id : uids) pack_ptrs.push_back(ptrs.at(id));
    int built = 0, ran = 0, compiled = 0, skipped_tf32 = 0, too_big = 0;
    double slowest_build = 0;
    std::string first_failure;
    Candidate* best = nullptr;
    for (Candidate& c : cands) {
      if (c.notes.tensor_core && !options_.tf32) {
        ++skipped_tf32;  // float32 on tensor cores is TF32
        continue;
      }
      c.exec = std::make_unique<Desc>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      int64_t ws = 0;
      const auto t0 = std::chrono::steady_clock::now();
      const cudnnStatus_t st = finalize_plan(handle_, c.config.get(), *c.exec, &ws);
      c.build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (st != CUDNN_STATUS_SUCCESS) {
        if (first_failure.empty()) first_failure = cudnnGetErrorString(st);
        continue;
      }
      if (ws < 0 || size_t(ws) > ws_.bytes()) {
        ++too_big;
        continue;
      }
      ++built;
      compiled += c.notes.runtime_compiled;
      slowest_build = std::max(slowest_build, c.build_s);
      c.pack = std::make_unique<Desc>(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
      if (make_variant_pack(*c.pack, uids, pack_ptrs, ws_.get()) != CUDNN_STATUS_SUCCESS) {
        if (first_failure.empty()) first_failure = "variant pack refused";
        continue;
      }
      c.ms = time_captured(stream_, start_, stop_, kCallsPerGraph, kTimedRuns, [&] {
        return cudnnBackendExecute(handle_, c.exec->get(), c.pack->get()) == CUDNN_STATUS_SUCCESS;
      });
      ran += c.ms >= 0;
      if (c.ms >= 0 && (!best || c.ms < best->ms)) best = &c;
    }
    line << "; built " << built << " of " << cands.size() << ", " << ran << " ran";
    if (compiled > 0)
      line << " (" << compiled << " runtime-compiled, slowest build " << slowest_build << " s)";
    if (skipped_tf32 > 0) line << ", " << skipped_tf32 << " left out (tensor cores, no TF32)";
    if (too_big > 0) line << ", " << too_big << " over " << (ws_.bytes() >> 20) << " MiB";
    if (!first_failure.empty()) line << ", first failure: " << first_failure;
    if (!best) return line.str() + "; none ran";

    const float base = v.backward ? engine_dgrad_ms_ : engine_fwd_ms_;
    line << "; fastest: engine " << best->notes.index
         << (best->knobs.empty() ? "" : " [" + best->knobs + "]") << " (" << best->notes.text()
         << ") " << best->ms << " ms, " << best->ms / base << "x the engine's "
         << (v.backward ? "data gradient " : "convolution ") << base << " ms";
    line << "; " << check(v, *best->exec, *best->pack);
    return line.str();
  }

 private:
  const ConvShape sh_;
  const FusionProbeOptions options_;
  Buffer x_, w_, y_, dy_, r_, z_, dx_, sum_, sqsum_, mean_, gsum_, gzsum_, scale_, bias_, ws_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  cudnnHandle_t handle_ = nullptr;
  // The engine's own results (ConvRunner, as training runs it) and their times.
  std::vector<double> y_ref_, dx_ref_;
  std::vector<double> y_prologue_ref_;  // the convolution of relu(x * scale + bias)
  float engine_fwd_ms_ = -1, engine_dgrad_ms_ = -1;
  std::vector<float> x_host_, r_host_, z_host_, mean_host_, scale_host_, bias_host_;

  // Random inputs: x, dy ~ N(0, 1); filters ~ N(0, 1 / fan-in) so y is O(1); r = relu of
  // N(0, 1) (half zeros, as a ReLU's output); z ~ N(0.3, 1) and the means near 0.3.
  void fill() {
    std::mt19937_64 rng(options_.seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto draw = [&](size_t n, float scale, float shift) {
      std::vector<float> v(n);
      for (float& e : v) e = normal(rng) * scale + shift;
      return v;
    };
    x_host_ = draw(size_t(sh_.x_size()), 1.0f, 0.0f);
    x_.upload(x_host_);
    scale_host_ = draw(size_t(sh_.c), 0.2f, 1.0f);
    scale_.upload(scale_host_);
    bias_host_ = draw(size_t(sh_.c), 0.2f, 0.0f);
    bias_.upload(bias_host_);
    w_.upload(draw(size_t(sh_.w_size()), 1.0f / std::sqrt(float(sh_.r * sh_.s * sh_.c)), 0.0f));
    dy_.upload(draw(size_t(sh_.y_size()), 1.0f, 0.0f));
    r_host_ = draw(size_t(sh_.x_size()), 1.0f, 0.0f);
    for (float& e : r_host_) e = e > 0 ? e : 0.0f;
    r_.upload(r_host_);
    z_host_ = draw(size_t(sh_.x_size()), 1.0f, 0.3f);
    z_.upload(z_host_);
    mean_host_ = draw(size_t(sh_.c), 0.05f, 0.3f);
    mean_.upload(mean_host_);
  }

  // The engine's forward and data gradient on these inputs, and their times.
  void references() {
    ConvOptions co;
    co.tf32 = options_.tf32;
    ConvRunner runner(stream_, co);
    const size_t fwd_ws = runner.prepare_forward(sh_, x_.get(), w_.get());
    const size_t dgrad_ws = runner.prepare_backward_data(sh_, dy_.get(), w_.get());
    if (std::max(fwd_ws, dgrad_ws) > ws_.bytes())
      throw CudnnError("fusion probe: the engine's convolution needs more workspace than " +
                       std::to_string(ws_.bytes()) + " bytes");
    auto succeeds = [](const std::function<void()>& call) {
      try {
        call();
        return true;
      } catch (const std::exception&) {
        return false;
      }
    };
    auto fwd = [&] { runner.forward(y_.get(), x_.get(), w_.get(), sh_, ws_.get(), fwd_ws); };
    auto dgrad = [&] {
      runner.backward_data(dx_.get(), dy_.get(), w_.get(), sh_, GradMode::overwrite, ws_.get(),
                           dgrad_ws);
    };
    engine_fwd_ms_ = time_captured(stream_, start_, stop_, kCallsPerGraph, kTimedRuns,
                                   [&] { return succeeds(fwd); });
    engine_dgrad_ms_ = time_captured(stream_, start_, stop_, kCallsPerGraph, kTimedRuns,
                                     [&] { return succeeds(dgrad); });
    fwd();
    dgrad();
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (float e : y_.download()) y_ref_.push_back(e);
    for (float e : dx_.download()) dx_ref_.push_back(e);
    // The prologue variants' reference: the engine's convolution of the normalised input.
    std::vector<float> normalised(x_host_.size());
    for (size_t i = 0; i < normalised.size(); ++i) {
      const size_t ch = i % size_t(sh_.c);
      normalised[i] = std::max(0.0f, x_host_[i] * scale_host_[ch] + bias_host_[ch]);
    }
    const Buffer xn(normalised.size());
    xn.upload(normalised);
    runner.forward(y_.get(), xn.get(), w_.get(), sh_, ws_.get(), fwd_ws);
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (float e : y_.download()) y_prologue_ref_.push_back(e);
  }

  std::map<int64_t, void*> pointers(const Variant& v) const {
    if (!v.backward)
      return {{kX, x_.get()},          {kW, w_.get()},         {kY, y_.get()},
              {kSum, sum_.get()},       {kSqSum, sqsum_.get()}, {kScale, scale_.get()},
              {kBias, bias_.get()}};
    return {{kX, dx_.get()}, {kW, w_.get()},    {kY, dy_.get()},      {kR, r_.get()},
            {kGSum, gsum_.get()}, {kZ, z_.get()}, {kMean, mean_.get()}, {kGzSum, gzsum_.get()}};
  }

  // Runs the plan once on poisoned outputs and compares them with the references.
  std::string check(const Variant& v, const Desc& exec, const Desc& pack) {
    for (const Buffer* b : {&y_, &dx_, &sum_, &sqsum_, &gsum_, &gzsum_}) b->poison(stream_);
    const cudnnStatus_t st = cudnnBackendExecute(handle_, exec.get(), pack.get());
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (st != CUDNN_STATUS_SUCCESS) return std::string("check run failed: ") +
                                           cudnnGetErrorString(st);
    std::ostringstream os;
    double worst = 0;
    auto note = [&](const char* what, double ratio) {
      os << (os.tellp() > 0 ? ", " : "") << what << " " << ratio;
      worst = std::max(worst, ratio);
    };
    const size_t rows = size_t(v.backward ? int64_t(sh_.n) * sh_.h * sh_.w
                                          : int64_t(sh_.n) * sh_.p * sh_.q);
    const size_t cols = size_t(v.backward ? sh_.c : sh_.k);
    if (!v.backward) {
      const std::vector<double>& ref = v.prologue ? y_prologue_ref_ : y_ref_;
      note("y", tensor_error(y_.download(), ref));
      if (v.sums > 0) {
        std::vector<std::vector<double>> s(cols), ss(cols);
        for (size_t i = 0; i < rows; ++i)
          for (size_t j = 0; j < cols; ++j) {
            const double e = ref[i * cols + j];
            s[j].push_back(e);
            ss[j].push_back(e * e);
          }
        note("sum", sums_error(sum_.download(), s));
        if (v.sums > 1) note("sumsq", sums_error(sqsum_.download(), ss));
      }
    } else {
      std::vector<double> g = dx_ref_;
      if (v.relu)
        for (size_t i = 0; i < g.size(); ++i) g[i] = r_host_[i] > 0 ? g[i] : 0.0;
      note(v.relu ? "g" : "dx", tensor_error(dx_.download(), g));
      if (v.sums > 0) {
        std::vector<std::vector<double>> s(cols), sz(cols);
        for (size_t i = 0; i < rows; ++i)
          for (size_t j = 0; j < cols; ++j) {
            const double e = g[i * cols + j];
            s[j].push_back(e);
            sz[j].push_back(e * (double(z_host_[i * cols + j]) - mean_host_[j]));
          }
        note("sum", sums_error(gsum_.download(), s));
        if (v.sums > 1) note("sum(g*zc)", sums_error(gzsum_.download(), sz));
      }
    }
    return std::string(worst <= 1 ? "outputs agree" : "outputs DISAGREE") +
           " (error / tolerance: " + os.str() + ")";
  }
};

}  // namespace

void probe_bn_fusions(const ConvShape& sh, const FusionProbeOptions& options,
                      const std::function<void(const std::string&)>& emit) {
  Probe probe(sh, options);
  for (const Variant& v : kVariants) {
    const bool baseline = !v.relu && !v.prologue && v.sums == 0;
    if (options.fused || baseline) emit(probe.run(v));
  }
}

}  // namespace unetcu::cudnn
