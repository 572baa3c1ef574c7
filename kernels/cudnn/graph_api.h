// kernels/cudnn/graph_api.h: helpers for cuDNN's graph API (cudnnBackend*) shared by the
// translation units of kernels/cudnn (conv_cudnn.cpp, fusion_probe.cpp); nothing outside
// kernels/cudnn includes it, so cudnn.h stays behind conv_cudnn.h and fusion_probe.h.
#pragma once

#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernels/conv.h"
#include "kernels/cuda/capture_timing.h"

namespace unetcu::cudnn {

// Tensors are declared 16-byte aligned (what vectorised engines need); a call whose pointers
// are not runs the descriptor-API algorithm instead.
constexpr int64_t kGraphAlignment = 16;

// One owned backend descriptor.
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type) {
    status_ = cudnnBackendCreateDescriptor(type, &d_);
    if (status_ != CUDNN_STATUS_SUCCESS) d_ = nullptr;
  }
  ~Desc() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  Desc(Desc&& o) noexcept : d_(o.d_), status_(o.status_) { o.d_ = nullptr; }
  Desc& operator=(Desc&& o) noexcept {
    std::swap(d_, o.d_);
    std::swap(status_, o.status_);
    return *this;
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }
  cudnnBackendDescriptor_t* addr() { return &d_; }
  cudnnStatus_t created() const { return status_; }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
  cudnnStatus_t status_ = CUDNN_STATUS_SUCCESS;
};

// Remembers the first failing call of a graph-API build; later calls are skipped.
struct Steps {
  std::string failed;
  bool ok() const { return failed.empty(); }
  bool operator()(cudnnStatus_t status, const char* what) {
    if (ok() && status != CUDNN_STATUS_SUCCESS)
      failed = std::string(what) + ": " + cudnnGetErrorString(status);
    return ok();
  }
};

// The descriptors of the array attribute `name` of `owner`, each made as `type` and filled in
// by cuDNN; empty when there are none or cuDNN does not say.
inline std::vector<Desc> descriptors_of(cudnnBackendDescriptor_t owner,
                                        cudnnBackendAttributeName_t name,
                                        cudnnBackendDescriptorType_t type) {
  std::vector<Desc> out;
  int64_t count = 0, returned = 0;
  if (cudnnBackendGetAttribute(owner, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr) !=
          CUDNN_STATUS_SUCCESS ||
      count <= 0)
    return out;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    out.emplace_back(type);
    if (out.back().created() != CUDNN_STATUS_SUCCESS) return {};
    raw.push_back(out.back().get());
  }
  if (cudnnBackendGetAttribute(owner, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &returned,
                               raw.data()) != CUDNN_STATUS_SUCCESS)
    return {};
  out.erase(out.begin() + std::clamp<int64_t>(returned, 0, count), out.end());
  return out;
}

// The knob settings of a configuration, by knob type (those cuDNN reports).
inline std::map<int, int64_t> knob_choices(cudnnBackendDescriptor_t config) {
  std::map<int, int64_t> out;
  for (const Desc& choice : descriptors_of(config, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES,
                                           CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR)) {
    cudnnBackendKnobType_t type;
    int64_t value = 0, n = 0;
    if (cudnnBackendGetAttribute(choice.get(), CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE,
                                 CUDNN_TYPE_KNOB_TYPE, 1, &n, &type) == CUDNN_STATUS_SUCCESS &&
        cudnnBackendGetAttribute(choice.get(), CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE,
                                 CUDNN_TYPE_INT64, 1, &n, &value) == CUDNN_STATUS_SUCCESS)
      out[int(type)] = value;
  }
  return out;
}

// The knob settings of an engine configuration, "TILE_SIZE=3 SPLIT_K_SLC=2", so that a report
// tells two configurations of one engine apart; empty when cuDNN does not say.
inline std::string knob_text(cudnnBackendDescriptor_t config) {
  // The knobs cuDNN 9 does not mark deprecated; another prints as KNOB<number>.
#define UNETCU_KNOB(name) {CUDNN_KNOB_TYPE_##name, #name}
  static const std::map<int, const char*> kNames = {
      UNETCU_KNOB(SWIZZLE), UNETCU_KNOB(TILE_SIZE), UNETCU_KNOB(EDGE), UNETCU_KNOB(MULTIPLY),
      UNETCU_KNOB(SPLIT_K_BUF), UNETCU_KNOB(TILEK), UNETCU_KNOB(STAGES),
      UNETCU_KNOB(REDUCTION_MODE), UNETCU_KNOB(SPLIT_K_SLC), UNETCU_KNOB(IDX_MODE),
      UNETCU_KNOB(SPECFILT), UNETCU_KNOB(KERNEL_CFG), UNETCU_KNOB(WORKSPACE),
      UNETCU_KNOB(TILE_CGA_M), UNETCU_KNOB(TILE_CGA_N), UNETCU_KNOB(BLOCK_SIZE),
      UNETCU_KNOB(OCCUPANCY), UNETCU_KNOB(CTA_COUNT), UNETCU_KNOB(STREAM_K),
      UNETCU_KNOB(SPLIT_P_SLC), UNETCU_KNOB(TILE_M), UNETCU_KNOB(TILE_N),
      UNETCU_KNOB(WARP_SPEC_CFG), UNETCU_KNOB(SWAP_AB),
  };
#undef UNETCU_KNOB
  std::ostringstream os;
  for (const auto& [type, value] : knob_choices(config)) {
    const auto name = kNames.find(type);
    os << (os.tellp() > 0 ? " " : "");
    if (name != kNames.end()) os << name->second;
    else os << "KNOB" << type;
    os << "=" << value;
  }
  return os.str();
}

// A convolution's three directions, as cuDNN's graph API names them.
enum class Dir { forward, backward_data, backward_filter };

// Builds the descriptors of one operation graph, keeps them (an execution plan refers to its
// configuration, that to the graph, the graph to its operations and tensors: kept() is shared
// by every plan made from the graph) and remembers the first failing call; later calls are
// skipped and return null.
class GraphBuilder {
 public:
  GraphBuilder() : keep_(std::make_shared<std::vector<Desc>>()) {}
  const Steps& steps() const { return st_; }
  std::shared_ptr<std::vector<Desc>> kept() const { return keep_; }

  cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type) {
    if (!st_.ok()) return nullptr;
    keep_->emplace_back(type);
    st_(keep_->back().created(), "cudnnBackendCreateDescriptor");
    return keep_->back().get();
  }
  void set(cudnnBackendDescriptor_t desc, cudnnBackendAttributeName_t name,
           cudnnBackendAttributeType_t type, int64_t count, const void* values, const char* what) {
    if (st_.ok()) st_(cudnnBackendSetAttribute(desc, name, type, count, values), what);
  }
  void finalize(cudnnBackendDescriptor_t desc, const char* what) {
    if (st_.ok()) st_(cudnnBackendFinalize(desc), what);
  }
  // A float32 tensor of dims (n, c, h, w) in that order, strides NHWC; a virtual one lives
  // only inside a fused kernel (no pointer in the variant pack).
  cudnnBackendDescriptor_t tensor(int64_t id, int64_t n, int64_t c, int64_t h, int64_t w,
                                  bool is_virtual = false) {
    cudnnBackendDescriptor_t t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const cudnnDataType_t type = CUDNN_DATA_FLOAT;
    const int64_t dims[4] = {n, c, h, w}, strides[4] = {h * w * c, 1, w * c, c};
    set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor data type");
    set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims, "tensor dimensions");
    set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides, "tensor strides");
    set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &id, "tensor id");
    set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &kGraphAlignment,
        "tensor alignment");
    if (is_virtual) set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual,
                        "tensor virtual");
    finalize(t, "tensor finalize");
    return t;
  }
  // sh's convolution (padding, stride, no dilation), float32 arithmetic, as cross-correlation
  // (what the network means by a convolution: the filter not flipped).
  cudnnBackendDescriptor_t convolution(const ConvShape& sh) {
    cudnnBackendDescriptor_t conv = make(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
    const cudnnDataType_t type = CUDNN_DATA_FLOAT;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    const int64_t spatial = 2, pad[2] = {sh.pad, sh.pad}, dilation[2] = {1, 1},
                  stride[2] = {sh.stride, sh.stride};
    set(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial, "spatial dims");
    set(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "compute type");
    set(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode, "mode");
    set(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad, "pre-padding");
    set(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad, "post-padding");
    set(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dilation, "dilations");
    set(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride, "strides");
    finalize(conv, "convolution finalize");
    return conv;
  }
  // The convolution operation of direction d over `conv`: out = conv + beta * out, where
  // x, w, y are the direction's tensors x or dx, w or dw, y or dy (in that order whatever the
  // direction computes).
  cudnnBackendDescriptor_t convolution_op(Dir d, cudnnBackendDescriptor_t x,
                                          cudnnBackendDescriptor_t w, cudnnBackendDescriptor_t y,
                                          cudnnBackendDescriptor_t conv, float beta) {
    struct OpAttrs {
      cudnnBackendDescriptorType_t type;
      cudnnBackendAttributeName_t x, w, y, conv, alpha, beta;
    };
    static const OpAttrs kForward{CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA};
    static const OpAttrs kBackwardData{CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA};
    static const OpAttrs kBackwardFilter{
        CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
        CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
        CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
        CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
        CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
        CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
        CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA};
    const OpAttrs& at = d == Dir::forward         ? kForward
                        : d == Dir::backward_data ? kBackwardData
                                                  : kBackwardFilter;
    const auto desc = CUDNN_TYPE_BACKEND_DESCRIPTOR;
    const float alpha = 1.0f;
    cudnnBackendDescriptor_t op = make(at.type);
    set(op, at.x, desc, 1, &x, "operation x / dx");
    set(op, at.w, desc, 1, &w, "operation w / dw");
    set(op, at.y, desc, 1, &y, "operation y / dy");
    set(op, at.conv, desc, 1, &conv, "operation convolution");
    set(op, at.alpha, CUDNN_TYPE_FLOAT, 1, &alpha, "operation alpha");
    set(op, at.beta, CUDNN_TYPE_FLOAT, 1, &beta, "operation beta");
    finalize(op, "operation finalize");
    return op;
  }
  // The operation graph of `ops`, finalized.
  cudnnBackendDescriptor_t graph(cudnnHandle_t handle,
                                 const std::vector<cudnnBackendDescriptor_t>& ops) {
    cudnnBackendDescriptor_t graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(ops.size()),
        ops.data(), "graph ops");
    // The handle attribute is deprecated in recent cuDNN 9 releases (it may be refused there,
    // which is harmless) but required by earlier ones.
    if (st_.ok())
      (void)cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1,
                                     &handle);
    finalize(graph, "operation graph finalize");
    return graph;
  }

 private:
  std::shared_ptr<std::vector<Desc>> keep_;
  Steps st_;
};

// The engine configurations cuDNN's heuristics in `mode` offer for `op_graph`, best first,
// planned for `sm_target` SMs when it is positive (cuDNN's SM carveout: the plans leave the
// other SMs to kernels on other streams); empty, with the failing call in `st`, when the query
// fails.
inline std::vector<Desc> heuristic_configs(cudnnBackendDescriptor_t op_graph,
                                           cudnnBackendHeurMode_t mode, Steps& st,
                                           int32_t sm_target = 0) {
  Desc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  st(heur.created(), "create heuristics");
  if (st.ok())
    st(cudnnBackendSetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                                CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op_graph),
       "heuristics graph");
  if (st.ok())
    st(cudnnBackendSetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1,
                                &mode),
       "heuristics mode");
  if (st.ok() && sm_target > 0)
    st(cudnnBackendSetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_SM_COUNT_TARGET,
                                CUDNN_TYPE_INT32, 1, &sm_target),
       "heuristics SM count target");
  if (st.ok()) st(cudnnBackendFinalize(heur.get()), "heuristics finalize");
  if (!st.ok()) return {};
  return descriptors_of(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                        CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
}

// `exec`: the execution plan of configuration `config`, finalized, and the workspace it needs.
inline cudnnStatus_t finalize_plan(cudnnHandle_t handle, cudnnBackendDescriptor_t config,
                                   Desc& exec, int64_t* workspace) {
  int64_t n = 0;
  if (exec.created() != CUDNN_STATUS_SUCCESS) return exec.created();
  (void)cudnnBackendSetAttribute(exec.get(), CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE,
                                 1, &handle);  // as the graph's handle
  cudnnStatus_t st = cudnnBackendSetAttribute(exec.get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &config);
  if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(exec.get());
  if (st == CUDNN_STATUS_SUCCESS)
    st = cudnnBackendGetAttribute(exec.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                  CUDNN_TYPE_INT64, 1, &n, workspace);
  return st;
}

// `pack`: a variant pack of these tensors (unique ids and device pointers, in the same order)
// and workspace, finalized.
inline cudnnStatus_t make_variant_pack(Desc& pack, const std::vector<int64_t>& uids,
                                       const std::vector<void*>& ptrs, void* workspace) {
  cudnnStatus_t st = pack.created();
  if (st == CUDNN_STATUS_SUCCESS && uids.size() != ptrs.size()) st = CUDNN_STATUS_BAD_PARAM;
  if (st == CUDNN_STATUS_SUCCESS)
    st = cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
                                  CUDNN_TYPE_INT64, int64_t(uids.size()), uids.data());
  if (st == CUDNN_STATUS_SUCCESS)
    st = cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                  CUDNN_TYPE_VOID_PTR, int64_t(ptrs.size()), ptrs.data());
  if (st == CUDNN_STATUS_SUCCESS)
    st = cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
                                  CUDNN_TYPE_VOID_PTR, 1, &workspace);
  if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(pack.get());
  return st;
}

// What cuDNN says of the engine of configuration `config` (read into `engine`): its global
// index and the notes that decide whether it may serve here.
struct EngineNotes {
  int64_t index = -1;
  bool tensor_core = false;        // float32 on tensor cores is TF32
  bool nondeterministic = false;   // e.g. atomics in a reduction
  bool down_convert = false;       // converts float32 inputs to a narrower type
  bool reduced_precision = false;  // reduces in a narrower type
  bool runtime_compiled = false;   // compiles its kernel when its plan is finalized
  // "tensor cores, runtime-compiled", or "no notes".
  std::string text() const {
    std::string out;
    const std::pair<bool, const char*> notes[] = {
        {tensor_core, "tensor cores"}, {nondeterministic, "non-deterministic"},
        {down_convert, "down-converts inputs"}, {reduced_precision, "reduced-precision sums"},
        {runtime_compiled, "runtime-compiled"}};
    for (const auto& [on, name] : notes)
      if (on) out += (out.empty() ? "" : ", ") + std::string(name);
    return out.empty() ? "no notes" : out;
  }
};
// False when cuDNN does not say.
inline bool engine_notes(cudnnBackendDescriptor_t config, Desc& engine, EngineNotes* out) {
  int64_t n = 0, n_notes = 0, n_behavior = 0;
  cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  cudnnBackendBehaviorNote_t behavior[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
  if (engine.created() != CUDNN_STATUS_SUCCESS ||
      cudnnBackendGetAttribute(config, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                               1, &n, engine.addr()) != CUDNN_STATUS_SUCCESS ||
      cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1,
                               &n, &out->index) != CUDNN_STATUS_SUCCESS ||
      cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                               CUDNN_TYPE_NUMERICAL_NOTE, CUDNN_NUMERICAL_NOTE_TYPE_COUNT,
                               &n_notes, notes) != CUDNN_STATUS_SUCCESS ||
      cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE,
                               CUDNN_TYPE_BEHAVIOR_NOTE, CUDNN_BEHAVIOR_NOTE_TYPE_COUNT,
                               &n_behavior, behavior) != CUDNN_STATUS_SUCCESS)
    return false;
  // The counts cuDNN reports may exceed what it wrote (a library newer than these headers,
  // with more notes): read only what the arrays hold.
  n_notes = std::min<int64_t>(n_notes, CUDNN_NUMERICAL_NOTE_TYPE_COUNT);
  n_behavior = std::min<int64_t>(n_behavior, CUDNN_BEHAVIOR_NOTE_TYPE_COUNT);
  for (int64_t k = 0; k < n_notes; ++k) {
    switch (notes[k]) {
      case CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC: out->nondeterministic = true; break;
      case CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS: out->down_convert = true; break;
      case CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION: out->reduced_precision = true; break;
      case CUDNN_NUMERICAL_NOTE_TENSOR_CORE: out->tensor_core = true; break;
      default: break;
    }
  }
  for (int64_t k = 0; k < n_behavior; ++k)
    if (behavior[k] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) out->runtime_compiled = true;
  return true;
}

}  // namespace unetcu::cudnn
