// engine/graph.h: the static graph: activations with their NHWC shapes, and an ordered list
// of nodes. forward() runs the nodes in order, backward() in reverse (engine/executor.h).
// The graph is fixed when built: no dynamic tape. Parameters are referred to by their
// offsets in the flat parameter arena; BatchNorm running statistics by offsets in the
// running-statistics arena.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/batchnorm.h"
#include "kernels/concat.h"
#include "kernels/conv.h"
#include "kernels/pool.h"
#include "kernels/upsample.h"

namespace unetcu {

struct ActInfo {
  std::string name;
  int n = 0, h = 0, w = 0, c = 0;
  int64_t numel() const { return int64_t(n) * h * w * c; }
};

enum class OpKind { conv, batchnorm, relu, add_relu, maxpool, upsample, concat };

struct Node {
  OpKind op = OpKind::conv;
  std::string name;
  int in0 = -1, in1 = -1, out = -1;  // activation ids; relu is in place (in0 == out)
  // conv
  ConvShape conv{};
  int64_t weight = -1, bias = -1;  // parameter-arena offsets (bias -1: none)
  // batchnorm
  BatchNormShape bn{};
  int64_t gamma = -1, beta = -1;                 // parameter-arena offsets
  int64_t running_mean = -1, running_var = -1;   // running-arena offsets
  // maxpool / upsample / concat
  MaxPoolShape pool{};
  UpsampleShape up{};
  ConcatShape cat{};
  // Set by Graph::finalize(): how backward writes each input's gradient.
  GradMode mode0 = GradMode::overwrite, mode1 = GradMode::overwrite;
};

class Graph {
 public:
  int add_input(const std::string& name, int n, int h, int w, int c);
  int add_conv(const std::string& name, int x, const ConvShape& sh, int64_t weight, int64_t bias);
  int add_batchnorm(const std::string& name, int x, int64_t gamma, int64_t beta,
                    int64_t running_mean, int64_t running_var);
  int add_relu(int x);  // in place: returns x
  int add_add_relu(const std::string& name, int a, int b);
  int add_maxpool(const std::string& name, int x);
  int add_upsample(const std::string& name, int x);
  int add_concat(const std::string& name, int a, int b);
  void set_output(int act) { output_ = act; }
  // Decides overwrite/accumulate for every gradient write (first writer in backward order
  // overwrites, later writers accumulate: the fan-out points).
  void finalize();

  const std::vector<ActInfo>& acts() const { return acts_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  int input() const { return input_; }
  int output() const { return output_; }

 private:
  int new_act(const std::string& name, int n, int h, int w, int c);
  std::vector<ActInfo> acts_;
  std::vector<Node> nodes_;
  int input_ = -1, output_ = -1;
};

}  // namespace unetcu
