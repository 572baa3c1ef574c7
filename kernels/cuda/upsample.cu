// kernels/cuda/upsample.cu: nearest-neighbour 2x upsampling over NHWC, forward and backward.
//
// map_rows (common.cuh) over input rows: a thread owns one (pixel column, channel group) pair,
// so an input row r maps to output rows 2r and 2r+1 (image boundaries line up because the
// output has exactly 2h rows per image) with no index division. Channel groups of 4 move as
// float4. The forward reads x once and writes y once; the backward reads dy once and writes dx
// once: both are copy-bandwidth kernels. y / dy may be the first channels of a wider tensor
// (UpsampleShape::pitch): then a pixel of it is `pitch` groups further than the last, not
// `groups`.
#include "kernels/upsample.h"

#include "kernels/cuda/common.cuh"

namespace unetcu::cuda {
namespace {

using detail::load_vec;
using detail::store_vec;

// V-groups a pixel of x / dx (groups) and of y / dy (pitch).
template <int V>
struct UpForward {
  float* y;
  const float* x;
  int w, groups, pitch;
  struct Column {
    float* y;
    const float* x;
    int64_t in_row, out_row;  // row lengths in V-groups: w*groups and 2*w*pitch
    int col, out_col;         // out_col: the left output pixel of this input pixel
    int pitch;
    __device__ void operator()(int64_t row) const {
      const auto v = load_vec<V>(x, row * in_row + col);
      const int64_t top = 2 * row * out_row + out_col;
      store_vec<V>(y, top, v);
      store_vec<V>(y, top + pitch, v);
      store_vec<V>(y, top + out_row, v);
      store_vec<V>(y, top + out_row + pitch, v);
    }
  };
  __device__ Column column(int col) const {
    const int iw = col / groups;
    return Column{y, x, int64_t(w) * groups, 2 * int64_t(w) * pitch, col,
                  2 * iw * pitch + col % groups, pitch};
  }
};

template <int V>
struct UpBackward {
  float* dx;
  const float* dy;
  int w, groups, pitch;
  bool accumulate;
  struct Column {
    float* dx;
    const float* dy;
    int64_t in_row, out_row;
    int col, out_col, pitch;
    bool accumulate;
    __device__ void operator()(int64_t row) const {
      const int64_t top = 2 * row * out_row + out_col;
      const auto tl = load_vec<V>(dy, top);
      const auto tr = load_vec<V>(dy, top + pitch);
      const auto bl = load_vec<V>(dy, top + out_row);
      const auto br = load_vec<V>(dy, top + out_row + pitch);
      const int64_t at = row * in_row + col;
      auto g = tl;
      // Row-major order within the 2x2 block, as the CPU reference (and PyTorch's CPU
      // backward) adds them.
      for (int k = 0; k < V; ++k) g.v[k] = tl.v[k] + tr.v[k] + bl.v[k] + br.v[k];
      if (accumulate) {
        const auto old = load_vec<V>(dx, at);
        for (int k = 0; k < V; ++k) g.v[k] = old.v[k] + g.v[k];
      }
      store_vec<V>(dx, at, g);
    }
  };
  __device__ Column column(int col) const {
    const int iw = col / groups;
    return Column{dx, dy, int64_t(w) * groups, 2 * int64_t(w) * pitch, col,
                  2 * iw * pitch + col % groups, pitch, accumulate};
  }
};

}  // namespace

void upsample2x_forward(float* y, const float* x, const UpsampleShape& sh, cudaStream_t stream) {
  const int64_t rows = int64_t(sh.n) * sh.h;
  const int pitch = sh.out_pitch();
  if (sh.c % 4 == 0 && pitch % 4 == 0 && detail::all_vec4(y, x)) {
    detail::map_rows(UpForward<4>{y, x, sh.w, sh.c / 4, pitch / 4}, rows, sh.w * (sh.c / 4),
                     stream);
  } else {
    detail::map_rows(UpForward<1>{y, x, sh.w, sh.c, pitch}, rows, sh.w * sh.c, stream);
  }
}

void upsample2x_backward(float* dx, const float* dy, const UpsampleShape& sh, GradMode mode,
                         cudaStream_t stream) {
  const int64_t rows = int64_t(sh.n) * sh.h;
  const bool acc = mode == GradMode::accumulate;
  const int pitch = sh.out_pitch();
  if (sh.c % 4 == 0 && pitch % 4 == 0 && detail::all_vec4(dx, dy)) {
    detail::map_rows(UpBackward<4>{dx, dy, sh.w, sh.c / 4, pitch / 4, acc}, rows,
                     sh.w * (sh.c / 4), stream);
  } else {
    detail::map_rows(UpBackward<1>{dx, dy, sh.w, sh.c, pitch, acc}, rows, sh.w * sh.c, stream);
  }
}

}  // namespace unetcu::cuda
