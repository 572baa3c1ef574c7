// kernels/cuda/loss.cu: sigmoid + batch Dice loss (forward, backward), per-image confusion
// counts and on-device epoch totals; the math is spec sections 7 and 8.
//
// Nothing here needs the host between kernels, so a captured CUDA graph replays a whole step:
// the forward leaves the DiceSums and the loss in device memory, the backward reads the sums
// from there, and the metrics accumulate on the device.
//
//   sums in parts    the Dice forward and the confusion counts from one read of the logits,
//                    where they are float4 runs (loss_and_counts, the training step's call;
//                    also the Dice forward alone and the counts alone): blocks of 512 float4s
//                    of one image write their six sums, then one block, a warp an image,
//                    adds each image's parts (its counts) and then the images' Dice sums
//                    (the loss), each over fixed trees. Sums in double; 0/1 counts exact.
//   dice forward,    elsewhere (unaligned, or not whole float4s): reduce_rows (common.cuh) over
//   counts           the flat logits, or with one batch per image; stage-1 partials in the
//                    workspace, a fixed-order stage 2 whose epilogue writes the outputs.
//   dice backward    one streaming pass (float4 logits + 4 target bytes per step); each thread
//                    forms the two gradient coefficients from the device sums once.
#include "kernels/loss.h"

#include <cmath>

#include "kernels/cuda/common.cuh"

namespace unetcu::cuda {
namespace {

using detail::load_vec;
using detail::store_vec;
using detail::Vec;

// sigmoid(x) and sigmoid(-x) without cancellation: from e = exp(-|x|) <= 1, sigmoid(|x|) =
// 1/(1+e) and sigmoid(-|x|) = e/(1+e). 1 - p would round to 0 for large logits; this does not,
// matching the derivative smp's exp(logsigmoid(x)) gets from autograd.
struct SigmoidPair {
  float p, q;  // sigmoid(x), sigmoid(-x)
};
__device__ inline SigmoidPair sigmoid_pair(float x) {
  const float e = expf(-fabsf(x));
  const float big = 1.0f / (1.0f + e);
  const float small = e * big;
  return x >= 0.0f ? SigmoidPair{big, small} : SigmoidPair{small, big};
}

struct DiceSrc {
  const float* logits;
  const uint8_t* target;
  struct Column {
    const float* logits;
    const uint8_t* target;
    __device__ void add(double (&acc)[3], int64_t i) const {
      const double p = double(sigmoid_pair(logits[i]).p);
      const double t = target[i] ? 1.0 : 0.0;
      acc[0] += p;
      acc[1] += t;
      acc[2] += p * t;
    }
  };
  __device__ Column column(int, int) const { return Column{logits, target}; }
};

struct DiceEpilogue {
  float* loss;
  DiceSums* sums;
  __device__ void operator()(int, int, const double (&acc)[3]) const {
    DiceSums s;
    s.sum_p = acc[0];
    s.sum_t = acc[1];
    s.intersection = acc[2];
    *sums = s;
    *loss = float(dice_loss_from_sums(s));
  }
};

// score = I / max(den, eps), den = (Sp + St)/2, differentiated as autograd does smp's form:
// dL/dp_i = coef_t * t_i + coef_1 with coef_t = -1/den and coef_1 = I/(2 den^2); a clamped den
// passes no gradient through den; no positive pixel in the batch means a zero gradient.
__global__ void __launch_bounds__(detail::kThreads)
    dice_backward_kernel(float* dlogits, const float* logits, const uint8_t* target,
                         const DiceSums* sums, int64_t count, float dloss, bool accumulate,
                         bool vec4) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  const DiceSums s = *sums;
  double coef_t = 0.0, coef_1 = 0.0;
  if (s.sum_t > 0) {
    const double den = 0.5 * (s.sum_p + s.sum_t);
    if (den >= kDiceEps) {
      coef_t = -1.0 / den;
      coef_1 = 0.5 * s.intersection / (den * den);
    } else {
      coef_t = -1.0 / kDiceEps;
    }
  }
  coef_t *= double(dloss);
  coef_1 *= double(dloss);
  detail::grid_stride(count, vec4, [&](auto width, int64_t i) {
    constexpr int V = decltype(width)::value;
    const auto x = load_vec<V>(logits, i);
    const auto t = load_vec<V>(target, i);
    Vec<float, V> g;
    for (int k = 0; k < V; ++k) {
      const SigmoidPair sp = sigmoid_pair(x.v[k]);
      const double dl_dp = t.v[k] ? coef_t + coef_1 : coef_1;
      g.v[k] = float(dl_dp * (double(sp.p) * double(sp.q)));
    }
    if (accumulate) {
      const auto old = load_vec<V>(dlogits, i);
      for (int k = 0; k < V; ++k) g.v[k] = old.v[k] + g.v[k];
    }
    store_vec<V>(dlogits, i, g);
  });
}

struct ConfusionSrc {
  const float* logits;
  const uint8_t* target;
  int64_t pixels;
  struct Column {
    const float* logits;
    const uint8_t* target;
    __device__ void add(double (&acc)[3], int64_t i) const {
      const bool pred = predicted_positive(logits[i]);
      const bool truth = target[i] != 0;
      acc[0] += (pred && truth) ? 1.0 : 0.0;
      acc[1] += (pred && !truth) ? 1.0 : 0.0;
      acc[2] += (!pred && truth) ? 1.0 : 0.0;
    }
  };
  __device__ Column column(int image, int) const {
    return Column{logits + image * pixels, target + image * pixels};
  }
};

struct ConfusionEpilogue {
  ConfusionCounts* counts;
  int64_t pixels;
  __device__ void operator()(int image, int, const double (&acc)[3]) const {
    ConfusionCounts c;
    c.tp = int64_t(acc[0]);
    c.fp = int64_t(acc[1]);
    c.fn = int64_t(acc[2]);
    c.tn = pixels - c.tp - c.fp - c.fn;
    counts[image] = c;
  }
};

// One thread, images in order: the totals are the same on every run.
__global__ void epoch_totals_kernel(EpochTotals* totals, const float* loss,
                                    const ConfusionCounts* counts, int n_images) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  EpochTotals t = *totals;
  if (loss) {
    t.loss_sum += double(*loss);
    t.batches += 1;
  }
  for (int i = 0; i < n_images; ++i) {
    const ConfusionCounts c = counts[i];
    t.iou_sum += image_iou(c);
    t.dice_sum += image_dice(c);
    t.tp += c.tp;
    t.fp += c.fp;
    t.fn += c.fn;
    t.tn += c.tn;
  }
  t.images += n_images;
  *totals = t;
}

// ---- the Dice and count sums in parts ----

// A block sums kPartSpan float4s of one image (kPartVecs a thread, their loads issued before
// their sums), so an image of 128 x 128 is 8 blocks and the training batch 128, about one per
// SM of an H100. Each pixel costs an exp, a division, a float-to-double conversion and
// several additions: as one 1024-thread block an image (16 blocks for the batch, the form
// before this one) that arithmetic ran on 16 SMs and held the reduction at a third of the
// copy rate (bench/RESULTS.md).
constexpr int kPartThreads = detail::kThreads;
constexpr int kPartVecs = 2;
constexpr int64_t kPartSpan = int64_t(kPartThreads) * kPartVecs;
// A part's sums: sigmoid, target, their product (Dice), tp, fp, fn (counts).
constexpr int kPartSums = 6;
// Launch limits: the images are grid.y, the parts grid.x (counted in an int here).
constexpr int kMaxLossImages = 65535;
constexpr int64_t kMaxLossParts = 0x7fffffff;

int64_t parts_of(int64_t pixels) { return (pixels / 4 + kPartSpan - 1) / kPartSpan; }

// Block (part, image) sums its float4s j = part * kPartSpan + threadIdx.x + k * kPartThreads,
// k in order, then reduce_block's fixed tree; thread 0 writes partials[image][part][0..5].
__global__ void __launch_bounds__(kPartThreads)
    loss_parts_kernel(double* partials, const float* logits, const uint8_t* target,
                      int64_t pixels) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  const int64_t image = blockIdx.y;
  const int64_t base = image * pixels;
  const int64_t vecs = pixels / 4;
  const int64_t first = int64_t(blockIdx.x) * kPartSpan + threadIdx.x;
  Vec<float, 4> x[kPartVecs];
  Vec<uint8_t, 4> t[kPartVecs];
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int k = 0; k < kPartVecs; ++k) {
    const int64_t j = first + int64_t(k) * kPartThreads;
    if (j < vecs) {
      x[k] = load_vec<4>(logits + base, j);
      t[k] = load_vec<4>(target + base, j);
    }
  }
  double sum_p = 0, sum_pt = 0;
  int n_t = 0, tp = 0, fp = 0, fn = 0;  // at most kPartSpan * 4 each: exact
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int k = 0; k < kPartVecs; ++k) {
    if (first + int64_t(k) * kPartThreads >= vecs) break;
    for (int m = 0; m < 4; ++m) {
      const float v = x[k].v[m];
      const SigmoidPair sp = sigmoid_pair(v);
      const double p = double(sp.p);
      const bool truth = t[k].v[m] != 0;
      // predicted_positive(v) from the sigmoid already formed: for v >= 0, sp.p is the same
      // expression on the same operand (exp(-|v|) = exp(-v)), so the same bits; for v < 0,
      // 1 + exp(-v) >= 2 and the sigmoid is at most 0.5, never positive. NaN: neither.
      const bool pred = v >= 0.0f && sp.p > 0.5f;
      sum_p += p;
      sum_pt += truth ? p : 0.0;
      n_t += truth;
      tp += pred && truth;
      fp += pred && !truth;
      fn += !pred && truth;
    }
  }
  double sums[kPartSums] = {sum_p, double(n_t), sum_pt, double(tp), double(fp), double(fn)};
  detail::reduce_block<double, kPartSums>(sums);
  if (threadIdx.x == 0) {
    double* out = partials + (image * gridDim.x + blockIdx.x) * kPartSums;
    for (int v = 0; v < kPartSums; ++v) out[v] = sums[v];
  }
}

// One block of whole warps: warp w takes images w, w + warps, ...; its lane l adds the image's
// parts l, l + 32, ... in order, then warp_tree_sum's fixed tree, and lane 0 writes the
// image's counts (unless `counts` is null) and Dice sums (image_sums[image][3]). Then warp 0
// adds the images' Dice sums the same way (lane l: images l, l + 32, ...) and writes the sums
// and the loss (unless `loss` is null). The order depends on the image and part counts alone:
// the same bits on every run. A thread an image, adding its parts one after another, was a
// chain of dependent loads: 5.6 us for the training batch (16 images of 8 parts), 35.7 us for
// the Dice forward alone (one image of 128 parts; bench/RESULTS.md, ninth H100 run).
constexpr int kTotalsThreads = 512;  // 16 warps: a warp an image of the training batch
__global__ void __launch_bounds__(kTotalsThreads)
    loss_totals_kernel(float* loss, DiceSums* sums, ConfusionCounts* counts,
                       const double* partials, double* image_sums, int n_images, int parts,
                       int64_t pixels) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  const int warps = int(blockDim.x) / 32;
  for (int i = warp; i < n_images; i += warps) {  // the whole warp alike: shuffles below
    double total[kPartSums] = {};
    const double* in = partials + int64_t(i) * parts * kPartSums;
    // Unrolled so that several parts' loads are in flight before their additions (in order).
    UNETCU_UNROLL_4
    for (int part = lane; part < parts; part += 32)
      for (int v = 0; v < kPartSums; ++v) total[v] += in[int64_t(part) * kPartSums + v];
    for (int v = 0; v < kPartSums; ++v) total[v] = detail::warp_tree_sum(total[v]);
    if (lane != 0) continue;
    if (counts) {
      ConfusionCounts c;
      c.tp = int64_t(total[3]);
      c.fp = int64_t(total[4]);
      c.fn = int64_t(total[5]);
      c.tn = pixels - c.tp - c.fp - c.fn;
      counts[i] = c;
    }
    for (int v = 0; v < 3; ++v) image_sums[int64_t(i) * 3 + v] = total[v];
  }
  if (loss == nullptr) return;  // the whole block alike: no thread waits at the barrier
  __syncthreads();  // the images' sums, written to global memory, visible to warp 0
  if (warp != 0) return;
  double s[3] = {};
  UNETCU_UNROLL_4
  for (int i = lane; i < n_images; i += 32)
    for (int v = 0; v < 3; ++v) s[v] += image_sums[3 * int64_t(i) + v];
  for (int v = 0; v < 3; ++v) s[v] = detail::warp_tree_sum(s[v]);
  if (lane != 0) return;
  DiceSums d;
  d.sum_p = s[0];
  d.sum_t = s[1];
  d.intersection = s[2];
  *sums = d;
  *loss = float(dice_loss_from_sums(d));
}

// The bytes of the parts' sums at the workspace's start, rounded up to 256 (the images' Dice
// sums follow).
size_t part_sums_bytes(int n_images, int64_t parts) {
  return detail::align256(size_t(n_images) * size_t(parts) * kPartSums * sizeof(double));
}

}  // namespace

bool loss_and_counts_applies(const float* logits, const uint8_t* target, int n_images,
                             int64_t pixels) {
  return n_images > 0 && n_images <= kMaxLossImages && pixels > 0 && pixels % 4 == 0 &&
         parts_of(pixels) <= kMaxLossParts && detail::all_vec4(logits, target);
}

// The workspace: the parts' sums (part_sums_bytes), then the images' Dice sums.
size_t loss_and_counts_workspace_bytes(int n_images, int64_t pixels) {
  const int images = n_images > 0 ? n_images : 0;
  return part_sums_bytes(images, parts_of(pixels)) + size_t(images) * 3 * sizeof(double);
}

void loss_and_counts(float* loss, DiceSums* sums, ConfusionCounts* counts, const float* logits,
                     const uint8_t* target, int n_images, int64_t pixels, void* workspace,
                     cudaStream_t stream) {
  const int64_t parts = parts_of(pixels);
  double* partials = static_cast<double*>(workspace);
  double* image_sums = reinterpret_cast<double*>(static_cast<char*>(workspace) +
                                                 part_sums_bytes(n_images, parts));
  UNETCU_LAUNCH_CHAINED(loss_parts_kernel, dim3(unsigned(parts), unsigned(n_images)),
                        kPartThreads, 0, stream)(partials, logits, target, pixels);
  const int threads = n_images < kTotalsThreads / 32 ? n_images * 32 : kTotalsThreads;
  UNETCU_LAUNCH_CHAINED(loss_totals_kernel, 1, threads, 0, stream)(
      loss, sums, counts, partials, image_sums, n_images, int(parts), pixels);
}

// Where the values are float4 runs, the Dice forward alone is loss_and_counts over one
// "image" of all of them, without counts; elsewhere reduce_rows, a value at a time.
size_t dice_loss_workspace_bytes(int64_t count) {
  const size_t rows = detail::reduce_tiling(count, 1).partial_count(3) * sizeof(double);
  const size_t parts = loss_and_counts_workspace_bytes(1, count);
  return rows > parts ? rows : parts;
}

void dice_loss_forward(float* loss, DiceSums* sums, const float* logits, const uint8_t* target,
                       int64_t count, void* workspace, cudaStream_t stream) {
  if (loss_and_counts_applies(logits, target, 1, count)) {
    loss_and_counts(loss, sums, nullptr, logits, target, 1, count, workspace, stream);
    return;
  }
  detail::reduce_rows<3>(DiceSrc{logits, target}, DiceEpilogue{loss, sums},
                         detail::reduce_tiling(count, 1), static_cast<double*>(workspace), stream);
}

void dice_loss_backward(float* dlogits, const float* logits, const uint8_t* target,
                        const DiceSums* sums, int64_t count, float dloss, GradMode mode,
                        cudaStream_t stream) {
  if (count <= 0) return;
  const bool vec4 = detail::all_vec4(dlogits, logits, target);
  UNETCU_LAUNCH_CHAINED(dice_backward_kernel, detail::flat_blocks(count, vec4), detail::kThreads, 0,
                        stream)(
      dlogits, logits, target, sums, count, dloss, mode == GradMode::accumulate, vec4);
}

// The counts alone: loss_and_counts without the loss where the images are float4 runs, else
// reduce_rows.
size_t confusion_counts_workspace_bytes(int n_images, int64_t pixels) {
  const size_t rows = detail::reduce_tiling(pixels, 1, n_images).partial_count(3) * sizeof(double);
  const size_t parts = loss_and_counts_workspace_bytes(n_images, pixels);
  return rows > parts ? rows : parts;
}

void confusion_counts(ConfusionCounts* counts, const float* logits, const uint8_t* target,
                      int n_images, int64_t pixels, void* workspace, cudaStream_t stream) {
  if (n_images <= 0) return;
  if (loss_and_counts_applies(logits, target, n_images, pixels)) {
    loss_and_counts(nullptr, nullptr, counts, logits, target, n_images, pixels, workspace,
                    stream);
    return;
  }
  detail::reduce_rows<3>(ConfusionSrc{logits, target, pixels}, ConfusionEpilogue{counts, pixels},
                         detail::reduce_tiling(pixels, 1, n_images),
                         static_cast<double*>(workspace), stream);
}

void epoch_totals_accumulate(EpochTotals* totals, const float* loss,
                             const ConfusionCounts* counts, int n_images, cudaStream_t stream) {
  UNETCU_LAUNCH_CHAINED(epoch_totals_kernel, 1, 1, 0, stream)(totals, loss, counts, n_images);
}

}  // namespace unetcu::cuda
