// model/checkpoint.cpp: see checkpoint.h.
#include "model/checkpoint.h"

#include <set>
#include <sstream>

#include "engine/error.h"

namespace unetcu {
namespace {

// One state_dict entry: a parameter (index into spec.params) or a BatchNorm buffer.
struct Entry {
  std::string name;
  int param = -1;           // >= 0: parameter
  int bn = -1;              // >= 0: BatchNorm index, with `buffer` saying which
  enum { none, running_mean, running_var, num_batches_tracked } buffer = none;
};

// The 278 entries in smp's order: BN buffers follow the BN's bias.
std::vector<Entry> state_dict_entries(const ModelSpec& spec) {
  std::vector<Entry> out;
  size_t bn = 0;
  for (size_t i = 0; i < spec.params.size(); ++i) {
    const ParamEntry& p = spec.params[i];
    out.push_back({p.name, int(i), -1, Entry::none});
    if (p.kind == ParamKind::bn_bias) {
      const std::string& pre = spec.bns[bn].prefix;
      out.push_back({pre + ".running_mean", -1, int(bn), Entry::running_mean});
      out.push_back({pre + ".running_var", -1, int(bn), Entry::running_var});
      out.push_back({pre + ".num_batches_tracked", -1, int(bn), Entry::num_batches_tracked});
      ++bn;
    }
  }
  return out;
}

// Parameters in PyTorch layout (conv weights OIHW), from an arena in ours.
std::vector<float> to_torch_layout(const ModelSpec& spec, const std::vector<float>& arena) {
  std::vector<float> out(arena.size());
  for (const auto& p : spec.params) {
    if (p.kind == ParamKind::conv_weight)
      krsc_to_oihw(out.data() + p.offset, arena.data() + p.offset, p.torch_shape);
    else
      std::copy(arena.begin() + p.offset, arena.begin() + p.offset + p.count,
                out.begin() + p.offset);
  }
  return out;
}

void from_torch_layout(const ModelSpec& spec, std::vector<float>& arena) {
  std::vector<float> tmp;
  for (const auto& p : spec.params) {
    if (p.kind != ParamKind::conv_weight) continue;
    tmp.assign(arena.begin() + p.offset, arena.begin() + p.offset + p.count);
    oihw_to_krsc(arena.data() + p.offset, tmp.data(), p.torch_shape);
  }
}

const std::string kExpAvg = "optimizer.exp_avg.", kExpAvgSq = "optimizer.exp_avg_sq.",
                  kStep = "optimizer.step";

}  // namespace

std::string LoadedCheckpoint::metadata_value(const std::string& key,
                                             const std::string& fallback) const {
  for (const auto& [k, v] : metadata)
    if (k == key) return v;
  return fallback;
}

HostModelState initial_state(const ModelSpec& spec, uint64_t seed) {
  HostModelState s;
  s.params.resize(size_t(spec.param_count));
  s.running.resize(size_t(spec.running_count));
  s.num_batches_tracked.assign(spec.bns.size(), 0);
  init_unet(s.params.data(), s.running.data(), spec, seed);
  return s;
}

void save_checkpoint(const std::string& path, const ModelSpec& spec, const HostModelState& model,
                     const HostOptimizerState* optimizer, const Metadata& metadata) {
  const std::vector<float> params = to_torch_layout(spec, model.params);
  std::vector<TensorView> views;
  for (const Entry& e : state_dict_entries(spec)) {
    if (e.param >= 0) {
      const ParamEntry& p = spec.params[size_t(e.param)];
      views.push_back({e.name, DType::F32, p.torch_shape, params.data() + p.offset});
      continue;
    }
    const BatchNormEntry& bn = spec.bns[size_t(e.bn)];
    if (e.buffer == Entry::num_batches_tracked)
      views.push_back({e.name, DType::I64, {}, &model.num_batches_tracked[size_t(e.bn)]});
    else
      views.push_back({e.name, DType::F32, {bn.c},
                       model.running.data() + (e.buffer == Entry::running_mean ? bn.running_mean
                                                                               : bn.running_var)});
  }
  std::vector<float> m, v;
  if (optimizer) {
    m = to_torch_layout(spec, optimizer->exp_avg);
    v = to_torch_layout(spec, optimizer->exp_avg_sq);
    for (const auto& p : spec.params)
      views.push_back({kExpAvg + p.name, DType::F32, p.torch_shape, m.data() + p.offset});
    for (const auto& p : spec.params)
      views.push_back({kExpAvgSq + p.name, DType::F32, p.torch_shape, v.data() + p.offset});
    views.push_back({kStep, DType::I64, {}, &optimizer->step});
  }
  Metadata md = {{"format", kCheckpointFormat}};
  md.insert(md.end(), metadata.begin(), metadata.end());
  save_safetensors(path, views, md);
}

LoadedCheckpoint load_checkpoint(const std::string& path, const ModelSpec& spec) {
  SafetensorsFile f(path);
  LoadedCheckpoint ck;
  ck.metadata = f.metadata();
  const auto entries = state_dict_entries(spec);

  // Collect every problem first so the user sees them all at once.
  std::vector<std::string> missing, misshaped, extra;
  std::set<std::string> known;
  auto check = [&](const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
    known.insert(name);
    if (!f.contains(name)) { missing.push_back(name); return; }
    const TensorInfo& info = f.info(name);
    if (info.shape != shape || info.dtype != dtype)
      misshaped.push_back(name + " is " + dtype_name(info.dtype) + " " + shape_string(info.shape) +
                          ", expected " + dtype_name(dtype) + " " + shape_string(shape));
  };
  for (const Entry& e : entries) {
    if (e.param >= 0) check(e.name, DType::F32, spec.params[size_t(e.param)].torch_shape);
    else if (e.buffer == Entry::num_batches_tracked) check(e.name, DType::I64, {});
    else check(e.name, DType::F32, {spec.bns[size_t(e.bn)].c});
  }
  ck.has_optimizer = f.contains(kStep);
  if (ck.has_optimizer) {
    check(kStep, DType::I64, {});
    for (const auto& p : spec.params) check(kExpAvg + p.name, DType::F32, p.torch_shape);
    for (const auto& p : spec.params) check(kExpAvgSq + p.name, DType::F32, p.torch_shape);
  }
  for (const auto& name : f.names())
    if (!known.count(name)) extra.push_back(name);
  if (!missing.empty() || !misshaped.empty() || !extra.empty()) {
    std::ostringstream os;
    os << path << ": not a ResNet34-UNet checkpoint matching smp's Unet(resnet34, classes=1)";
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      os << "\n  " << v.size() << " " << what << ":";
      for (size_t i = 0; i < v.size() && i < 20; ++i) os << "\n    " << v[i];
      if (v.size() > 20) os << "\n    ... and " << v.size() - 20 << " more";
    };
    list("missing tensors", missing);
    list("tensors with the wrong shape or dtype", misshaped);
    list("unexpected tensors", extra);
    throw Error(os.str());
  }

  HostModelState& s = ck.model;
  s.params.resize(size_t(spec.param_count));
  s.running.resize(size_t(spec.running_count));
  s.num_batches_tracked.resize(spec.bns.size());
  for (const Entry& e : entries) {
    if (e.param >= 0) {
      const ParamEntry& p = spec.params[size_t(e.param)];
      f.copy_to(e.name, DType::F32, p.torch_shape, s.params.data() + p.offset);
      continue;
    }
    const BatchNormEntry& bn = spec.bns[size_t(e.bn)];
    if (e.buffer == Entry::num_batches_tracked)
      f.copy_to(e.name, DType::I64, {}, &s.num_batches_tracked[size_t(e.bn)]);
    else
      f.copy_to(e.name, DType::F32, {bn.c},
                s.running.data() + (e.buffer == Entry::running_mean ? bn.running_mean : bn.running_var));
  }
  from_torch_layout(spec, s.params);
  if (ck.has_optimizer) {
    auto& o = ck.optimizer;
    o.exp_avg.resize(size_t(spec.param_count));
    o.exp_avg_sq.resize(size_t(spec.param_count));
    for (const auto& p : spec.params) {
      f.copy_to(kExpAvg + p.name, DType::F32, p.torch_shape, o.exp_avg.data() + p.offset);
      f.copy_to(kExpAvgSq + p.name, DType::F32, p.torch_shape, o.exp_avg_sq.data() + p.offset);
    }
    f.copy_to(kStep, DType::I64, {}, &o.step);
    from_torch_layout(spec, o.exp_avg);
    from_torch_layout(spec, o.exp_avg_sq);
  }
  return ck;
}

}  // namespace unetcu
