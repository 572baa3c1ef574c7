// model/checkpoint.h: model and training state <-> safetensors.
//
// A checkpoint holds smp's state_dict exactly (278 entries, smp names and order, PyTorch
// layouts: conv weights OIHW, num_batches_tracked int64 scalars), so the weights load into
// smp with load_state_dict. A training checkpoint (last.safetensors) adds the Adam state as
// "optimizer.exp_avg.<name>" / "optimizer.exp_avg_sq.<name>" (same layouts) and
// "optimizer.step", and the training position in the metadata; loading into smp then filters
// out the "optimizer." keys. Files are written to a temporary name and renamed.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "engine/safetensors.h"
#include "model/session.h"
#include "model/unet.h"

namespace unetcu {

constexpr const char* kCheckpointFormat = "unetcu-checkpoint-1";

void save_checkpoint(const std::string& path, const ModelSpec& spec, const HostModelState& model,
                     const HostOptimizerState* optimizer, const Metadata& metadata);

struct LoadedCheckpoint {
  HostModelState model;
  bool has_optimizer = false;
  HostOptimizerState optimizer;
  Metadata metadata;
  std::string metadata_value(const std::string& key, const std::string& fallback = "") const;
};

// Loads a unetcu checkpoint or any smp/PyTorch state_dict saved as safetensors (a missing
// "optimizer." part just means no optimizer state). Missing, extra or mis-shaped tensors are
// all listed in one error naming the file. Float tensors may be F32, F16, BF16 or F64 (converted
// to float32); num_batches_tracked may be absent (taken as 0), as PyTorch allows.
LoadedCheckpoint load_checkpoint(const std::string& path, const ModelSpec& spec);

// Overwrites the encoder part of `model` (the 108 encoder parameters and 36 BatchNorms' running
// statistics) with a torchvision or timm ResNet-34 state_dict saved as safetensors: the keys
// are smp's encoder keys without "encoder." (conv1.weight, bn1.running_mean, layer1.0...), and
// the classifier fc.* is ignored. The decoder and head keep what `model` holds. Errors as
// load_checkpoint's.
void load_encoder_weights(const std::string& path, const ModelSpec& spec, HostModelState& model);

// A freshly initialised model state (init_unet with `seed`).
HostModelState initial_state(const ModelSpec& spec, uint64_t seed);

}  // namespace unetcu
