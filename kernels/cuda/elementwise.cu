// kernels/cuda/elementwise.cu: relu forward/backward, add and add+relu over flat float arrays.
// Streaming kernels (map_flat): each thread moves one float4 per step, so they run at copy
// bandwidth; in-place use (y == x, y == a) is allowed, hence no __restrict__.
#include "kernels/elementwise.h"

#include "kernels/cuda/common.cuh"

namespace unetcu::cuda {
namespace {

using detail::load_vec;
using detail::relu;
using detail::store_vec;
using detail::Width;

struct ReluForward {
  float* y;
  const float* x;
  template <int V>
  __device__ void operator()(Width<V>, int64_t i) const {
    auto v = load_vec<V>(x, i);
    for (int k = 0; k < V; ++k) v.v[k] = relu(v.v[k]);
    store_vec<V>(y, i, v);
  }
};

// The mask is the forward output: PyTorch's in-place relu keeps no input, and a zero output
// passes no gradient.
struct ReluBackward {
  float* dx;
  const float* dy;
  const float* y;
  bool accumulate;
  template <int V>
  __device__ void operator()(Width<V>, int64_t i) const {
    auto g = load_vec<V>(dy, i);
    const auto out = load_vec<V>(y, i);
    for (int k = 0; k < V; ++k) g.v[k] = out.v[k] > 0.0f ? g.v[k] : 0.0f;
    if (accumulate) {
      const auto old = load_vec<V>(dx, i);
      for (int k = 0; k < V; ++k) g.v[k] = old.v[k] + g.v[k];
    }
    store_vec<V>(dx, i, g);
  }
};

template <bool kRelu>
struct Add {
  float* y;
  const float* a;
  const float* b;
  template <int V>
  __device__ void operator()(Width<V>, int64_t i) const {
    auto s = load_vec<V>(a, i);
    const auto t = load_vec<V>(b, i);
    for (int k = 0; k < V; ++k) s.v[k] = kRelu ? relu(s.v[k] + t.v[k]) : s.v[k] + t.v[k];
    store_vec<V>(y, i, s);
  }
};

}  // namespace

void relu_forward(float* y, const float* x, int64_t count, cudaStream_t stream) {
  detail::map_flat(ReluForward{y, x}, count, detail::all_vec4(y, x), stream);
}

void relu_backward(float* dx, const float* dy, const float* y, int64_t count, GradMode mode,
                   cudaStream_t stream) {
  detail::map_flat(ReluBackward{dx, dy, y, mode == GradMode::accumulate}, count,
                   detail::all_vec4(dx, dy, y), stream);
}

void add_forward(float* y, const float* a, const float* b, int64_t count, cudaStream_t stream) {
  detail::map_flat(Add<false>{y, a, b}, count, detail::all_vec4(y, a, b), stream);
}

void add_relu_forward(float* y, const float* a, const float* b, int64_t count,
                      cudaStream_t stream) {
  detail::map_flat(Add<true>{y, a, b}, count, detail::all_vec4(y, a, b), stream);
}

}  // namespace unetcu::cuda
