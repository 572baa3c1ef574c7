// engine/graph.cpp: building the static graph and planning gradient modes.
#include "engine/graph.h"

#include "engine/error.h"

namespace unetcu {

int Graph::new_act(const std::string& name, int n, int h, int w, int c) {
  acts_.push_back({name, n, h, w, c});
  return int(acts_.size()) - 1;
}

int Graph::add_input(const std::string& name, int n, int h, int w, int c) {
  input_ = new_act(name, n, h, w, c);
  return input_;
}

int Graph::add_conv(const std::string& name, int x, const ConvShape& sh, int64_t weight,
                    int64_t bias) {
  const ActInfo& a = acts_.at(x);
  if (a.n != sh.n || a.h != sh.h || a.w != sh.w || a.c != sh.c)
    fail("graph: conv ", name, " shape does not match its input ", a.name);
  Node nd;
  nd.op = OpKind::conv; nd.name = name; nd.in0 = x;
  nd.conv = sh; nd.weight = weight; nd.bias = bias;
  nd.out = new_act(name, sh.n, sh.p, sh.q, sh.k);
  nodes_.push_back(nd);
  return nd.out;
}

int Graph::add_batchnorm(const std::string& name, int x, int64_t gamma, int64_t beta,
                         int64_t running_mean, int64_t running_var) {
  const ActInfo a = acts_.at(x);
  Node nd;
  nd.op = OpKind::batchnorm; nd.name = name; nd.in0 = x;
  nd.bn.rows = int64_t(a.n) * a.h * a.w; nd.bn.c = a.c;
  nd.gamma = gamma; nd.beta = beta; nd.running_mean = running_mean; nd.running_var = running_var;
  nd.out = new_act(name, a.n, a.h, a.w, a.c);
  nodes_.push_back(nd);
  return nd.out;
}

int Graph::add_relu(int x) {
  Node nd;
  nd.op = OpKind::relu; nd.name = acts_.at(x).name + ".relu"; nd.in0 = x; nd.out = x;
  nodes_.push_back(nd);
  return x;
}

int Graph::add_add_relu(const std::string& name, int a, int b) {
  const ActInfo A = acts_.at(a), B = acts_.at(b);
  if (A.n != B.n || A.h != B.h || A.w != B.w || A.c != B.c)
    fail("graph: add ", name, " of different shapes");
  Node nd;
  nd.op = OpKind::add_relu; nd.name = name; nd.in0 = a; nd.in1 = b;
  nd.out = new_act(name, A.n, A.h, A.w, A.c);
  nodes_.push_back(nd);
  return nd.out;
}

int Graph::add_maxpool(const std::string& name, int x) {
  const ActInfo a = acts_.at(x);
  Node nd;
  nd.op = OpKind::maxpool; nd.name = name; nd.in0 = x;
  nd.pool = MaxPoolShape::make(a.n, a.h, a.w, a.c);
  nd.out = new_act(name, a.n, nd.pool.p, nd.pool.q, a.c);
  nodes_.push_back(nd);
  return nd.out;
}

int Graph::add_upsample(const std::string& name, int x) {
  const ActInfo a = acts_.at(x);
  Node nd;
  nd.op = OpKind::upsample; nd.name = name; nd.in0 = x;
  nd.up = {a.n, a.h, a.w, a.c};
  nd.out = new_act(name, a.n, 2 * a.h, 2 * a.w, a.c);
  nodes_.push_back(nd);
  return nd.out;
}

int Graph::add_concat(const std::string& name, int a, int b) {
  const ActInfo A = acts_.at(a), B = acts_.at(b);
  if (A.n != B.n || A.h != B.h || A.w != B.w)
    fail("graph: concat ", name, ": ", A.name, " is ", A.h, "x", A.w, " but ", B.name, " is ",
         B.h, "x", B.w, " (input height and width must be multiples of 32)");
  Node nd;
  nd.op = OpKind::concat; nd.name = name; nd.in0 = a; nd.in1 = b;
  nd.cat = {int64_t(A.n) * A.h * A.w, A.c, B.c};
  nd.out = new_act(name, A.n, A.h, A.w, A.c + B.c);
  nodes_.push_back(nd);
  return nd.out;
}

void Graph::finalize() {
  if (input_ < 0 || output_ < 0) fail("graph: input or output not set");
  std::vector<bool> written(acts_.size(), false);
  written[output_] = true;  // the loss writes the output gradient
  auto mode_for = [&](int act) {
    GradMode m = written[act] ? GradMode::accumulate : GradMode::overwrite;
    written[act] = true;
    return m;
  };
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
    Node& nd = *it;
    if (nd.op == OpKind::relu) {
      if (!written[nd.in0]) fail("graph: relu ", nd.name, " output has no consumer");
      continue;
    }
    nd.mode0 = mode_for(nd.in0);
    if (nd.in1 >= 0) nd.mode1 = mode_for(nd.in1);
  }
}

}  // namespace unetcu
