// model/checkpoint.cpp: see checkpoint.h.
#include "model/checkpoint.h"

#include <cstring>
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

namespace {

bool is_float(DType d) {
  return d == DType::F32 || d == DType::F16 || d == DType::BF16 || d == DType::F64;
}

// IEEE binary16 -> binary32 (exact: every half value is a float value).
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal half: normalise
    exp = 113;
    while (!(mant & 0x400)) { mant <<= 1; --exp; }
    bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// A floating-point tensor of any width as float32, so that a state_dict saved after
// model.half(), bfloat16 or double() loads like an fp32 one. The file's bytes need not be
// aligned, hence memcpy per element.
std::vector<float> read_as_f32(const SafetensorsFile& f, const std::string& key) {
  const TensorInfo& t = f.info(key);
  const auto* src = static_cast<const unsigned char*>(f.data(key));
  std::vector<float> out(size_t(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    switch (t.dtype) {
      case DType::F32: std::memcpy(&out[i], src + 4 * i, 4); break;
      case DType::F64: { double v; std::memcpy(&v, src + 8 * i, 8); out[i] = float(v); break; }
      case DType::F16: { uint16_t v; std::memcpy(&v, src + 2 * i, 2); out[i] = half_to_float(v); break; }
      case DType::BF16: {
        uint16_t v;
        std::memcpy(&v, src + 2 * i, 2);
        const uint32_t bits = uint32_t(v) << 16;
        std::memcpy(&out[i], &bits, 4);
        break;
      }
      default: fail(f.path(), ": tensor '", key, "' is ", dtype_name(t.dtype), ", not floating point");
    }
  }
  return out;
}

// Checks a file against the tensors it should hold before anything is read, collecting every
// problem so that the user sees them all in one error.
struct StateCheck {
  const SafetensorsFile& f;
  std::set<std::string> known;
  std::vector<std::string> missing, misshaped, extra;

  void mismatch(const std::string& key, const char* want_dtype, const std::vector<int64_t>& shape) {
    const TensorInfo& t = f.info(key);
    misshaped.push_back(key + " is " + dtype_name(t.dtype) + " " + shape_string(t.shape) +
                        ", expected " + want_dtype + " " + shape_string(shape));
  }
  // A float tensor (F32; F16, BF16 and F64 are converted when read).
  void want_float(const std::string& key, const std::vector<int64_t>& shape) {
    known.insert(key);
    if (!f.contains(key)) { missing.push_back(key); return; }
    const TensorInfo& t = f.info(key);
    if (t.shape != shape || !is_float(t.dtype)) mismatch(key, "F32", shape);
  }
  // An int64 scalar; `optional` for num_batches_tracked, which PyTorch itself may omit.
  void want_count(const std::string& key, bool optional) {
    known.insert(key);
    if (!f.contains(key)) {
      if (!optional) missing.push_back(key);
      return;
    }
    const TensorInfo& t = f.info(key);
    if (!t.shape.empty() || t.dtype != DType::I64) mismatch(key, "I64", {});
  }
  // Every name not asked for is extra, except those `ignore` accepts.
  template <typename Pred>
  void find_extra(Pred ignore) {
    for (const auto& name : f.names())
      if (!known.count(name) && !ignore(name)) extra.push_back(name);
  }
  void throw_if_any(const std::string& what) const {
    if (missing.empty() && misshaped.empty() && extra.empty()) return;
    std::ostringstream os;
    os << f.path() << ": " << what;
    auto list = [&](const char* title, const std::vector<std::string>& v) {
      if (v.empty()) return;
      os << "\n  " << v.size() << " " << title << ":";
      for (size_t i = 0; i < v.size() && i < 20; ++i) os << "\n    " << v[i];
      if (v.size() > 20) os << "\n    ... and " << v.size() - 20 << " more";
    };
    list("missing tensors", missing);
    list("tensors with the wrong shape or dtype", misshaped);
    list("unexpected tensors", extra);
    throw Error(os.str());
  }
};

// Copies one checked state_dict entry (file key `key`) into `s`: parameters into the arena in
// our layout (conv weights OIHW -> KRSC), BN buffers into the running arena; an absent
// num_batches_tracked leaves the value already in `s`.
void read_entry(const SafetensorsFile& f, const std::string& key, const ModelSpec& spec,
                const Entry& e, HostModelState& s) {
  if (e.param >= 0) {
    const ParamEntry& p = spec.params[size_t(e.param)];
    const std::vector<float> v = read_as_f32(f, key);
    if (p.kind == ParamKind::conv_weight) oihw_to_krsc(s.params.data() + p.offset, v.data(), p.torch_shape);
    else std::copy(v.begin(), v.end(), s.params.begin() + p.offset);
    return;
  }
  const BatchNormEntry& bn = spec.bns[size_t(e.bn)];
  if (e.buffer == Entry::num_batches_tracked) {
    if (f.contains(key)) f.copy_to(key, DType::I64, {}, &s.num_batches_tracked[size_t(e.bn)]);
    return;
  }
  const std::vector<float> v = read_as_f32(f, key);
  std::copy(v.begin(), v.end(),
            s.running.begin() + (e.buffer == Entry::running_mean ? bn.running_mean : bn.running_var));
}

void check_entry(StateCheck& c, const std::string& key, const ModelSpec& spec, const Entry& e) {
  if (e.param >= 0) c.want_float(key, spec.params[size_t(e.param)].torch_shape);
  else if (e.buffer == Entry::num_batches_tracked) c.want_count(key, true);
  else c.want_float(key, {spec.bns[size_t(e.bn)].c});
}

const std::string kEncoderPrefix = "encoder.";

}  // namespace

LoadedCheckpoint load_checkpoint(const std::string& path, const ModelSpec& spec) {
  SafetensorsFile f(path);
  LoadedCheckpoint ck;
  ck.metadata = f.metadata();
  const auto entries = state_dict_entries(spec);

  StateCheck c{f, {}, {}, {}, {}};
  for (const Entry& e : entries) check_entry(c, e.name, spec, e);
  ck.has_optimizer = f.contains(kStep);
  if (ck.has_optimizer) {
    c.want_count(kStep, false);
    for (const auto& p : spec.params) c.want_float(kExpAvg + p.name, p.torch_shape);
    for (const auto& p : spec.params) c.want_float(kExpAvgSq + p.name, p.torch_shape);
  }
  c.find_extra([](const std::string&) { return false; });
  c.throw_if_any("not a ResNet34-UNet checkpoint matching smp's Unet(resnet34, classes=1)");

  HostModelState& s = ck.model;
  s.params.resize(size_t(spec.param_count));
  s.running.resize(size_t(spec.running_count));
  s.num_batches_tracked.assign(spec.bns.size(), 0);
  for (const Entry& e : entries) read_entry(f, e.name, spec, e, s);
  if (ck.has_optimizer) {
    auto& o = ck.optimizer;
    o.exp_avg.resize(size_t(spec.param_count));
    o.exp_avg_sq.resize(size_t(spec.param_count));
    for (const auto& p : spec.params) {
      const std::vector<float> m = read_as_f32(f, kExpAvg + p.name);
      const std::vector<float> v = read_as_f32(f, kExpAvgSq + p.name);
      std::copy(m.begin(), m.end(), o.exp_avg.begin() + p.offset);
      std::copy(v.begin(), v.end(), o.exp_avg_sq.begin() + p.offset);
    }
    f.copy_to(kStep, DType::I64, {}, &o.step);
    from_torch_layout(spec, o.exp_avg);
    from_torch_layout(spec, o.exp_avg_sq);
  }
  return ck;
}

void load_encoder_weights(const std::string& path, const ModelSpec& spec, HostModelState& model) {
  SafetensorsFile f(path);
  std::vector<std::pair<std::string, Entry>> wanted;  // file key, state_dict entry
  for (const Entry& e : state_dict_entries(spec))
    if (e.name.compare(0, kEncoderPrefix.size(), kEncoderPrefix) == 0)
      wanted.emplace_back(e.name.substr(kEncoderPrefix.size()), e);

  StateCheck c{f, {}, {}, {}, {}};
  for (const auto& [key, e] : wanted) check_entry(c, key, spec, e);
  // The classifier is the one part of torchvision's ResNet that smp's encoder drops.
  c.find_extra([](const std::string& name) { return name.compare(0, 3, "fc.") == 0; });
  c.throw_if_any("not a torchvision ResNet-34 state_dict (conv1.weight, bn1.*, layer1-4.*; fc.* "
                 "is ignored)");
  for (const auto& [key, e] : wanted) read_entry(f, key, spec, e, model);
}

}  // namespace unetcu
