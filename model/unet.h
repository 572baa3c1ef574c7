// model/unet.h: smp's Unet(encoder_name="resnet34", classes=1) as a parameter table and a
// static graph (see the spec: 140 parameter tensors, 24,436,369 trainable values, 46
// BatchNorms, state_dict names exactly as smp's).
//
// In memory the parameters live in one flat float arena in state_dict order; conv weights are
// stored KRSC (out, kh, kw, in), everything else as in PyTorch. torch_shape is the PyTorch
// shape (OIHW for conv weights), used on disk.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/graph.h"

namespace unetcu {

enum class ParamKind { conv_weight, conv_bias, bn_weight, bn_bias };
enum class InitKind { kaiming_normal_fan_out, kaiming_uniform_fan_in, xavier_uniform, ones, zeros };

struct ParamEntry {
  std::string name;                 // smp state_dict key
  ParamKind kind = ParamKind::conv_weight;
  InitKind init = InitKind::zeros;
  std::vector<int64_t> torch_shape;
  int64_t offset = 0, count = 0;    // in the parameter arena
};

struct BatchNormEntry {
  std::string prefix;               // e.g. "encoder.layer1.0.bn1"
  int c = 0;
  int64_t running_mean = 0, running_var = 0;  // offsets in the running-statistics arena
};

struct ModelSpec {
  std::vector<ParamEntry> params;   // state_dict order
  std::vector<BatchNormEntry> bns;  // state_dict order
  int64_t param_count = 0;          // floats in the parameter arena
  int64_t running_count = 0;        // floats in the running-statistics arena

  const ParamEntry* find(const std::string& name) const;
};

// The model: its parameter table and its graph for input batches of n x h x w RGB images.
// h and w must be multiples of 32 (the five stride-2 stages must halve evenly).
struct Unet {
  ModelSpec spec;
  Graph graph;
};
Unet build_unet(int n, int h, int w);

// The parameter table alone (the same for every input size).
const ModelSpec& unet_spec();

// smp's initialisation from our own seeded generator (spec §6): encoder convs kaiming-normal
// fan-out, decoder convs kaiming-uniform fan-in, head xavier-uniform, biases 0, BN 1/0,
// running mean 0 / var 1. params and running are host arrays of the spec's sizes.
void init_unet(float* params, float* running, const ModelSpec& spec, uint64_t seed);

// KRSC <-> OIHW for one conv weight (host arrays).
void krsc_to_oihw(float* oihw, const float* krsc, const std::vector<int64_t>& torch_shape);
void oihw_to_krsc(float* krsc, const float* oihw, const std::vector<int64_t>& torch_shape);

}  // namespace unetcu
