// kernels/cuda/loss.cu: sigmoid + batch Dice loss (forward, backward), per-image confusion
// counts and on-device epoch totals; the math is spec sections 7 and 8.
//
// Nothing here needs the host between kernels, so a captured CUDA graph replays a whole step:
// the forward leaves the DiceSums and the loss in device memory, the backward reads the sums
// from there, and the metrics accumulate on the device.
//
//   dice forward     reduce_rows (common.cuh) over the flat logits: sums of p, t and p*t in
//                    double, stage-1 partials in the workspace, a fixed-order stage 2 whose
//                    epilogue writes the sums and the loss. Reads 5 bytes per pixel once.
//   dice backward    one streaming pass (float4 logits + 4 target bytes per step); each thread
//                    forms the two gradient coefficients from the device sums once.
//   confusion counts reduce_rows with one batch per image; 0/1 counts are exact in double.
//   both at once     (loss_and_counts, the training step's call where images are small): one
//                    block of 1024 threads per image sums the Dice terms and the counts from
//                    one read of its logits (four float4s a thread at a time), warp
//                    trees then a tree over the warps; one thread adds the images' Dice sums,
//                    in a second kernel or (opt-in) in the same one, its blocks a cluster.
#include "kernels/loss.h"

#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/fastest_path.h"

namespace unetcu::cuda {
namespace {

using detail::load_vec;
using detail::store_vec;
using detail::warp_tree_sum;
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

// The smp example's mask, logits.sigmoid() > 0.5 in float32 with a strict comparison and the
// sigmoid formed as PyTorch forms it: logits in (0, ~1.2e-7) round to exactly 0.5 and count as
// negative, so this is not x > 0.
__device__ inline bool predicted_positive(float x) { return 1.0f / (1.0f + expf(-x)) > 0.5f; }

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

// ---- the fused Dice forward and counts ----

// Threads of a fused block, and the float4s of its image each thread takes at most.
constexpr int kFusedThreads = 1024;
constexpr int kFusedVecsPerThread = int(kFusedLossMaxPixels / 4 / kFusedThreads);
constexpr int kFusedBatch = 4;
// The per-image sums: sigmoid, target, their product (Dice), tp, fp, fn (counts).
constexpr int kFusedSums = 6;

// Block b sums image b: each thread its float4s j = threadIdx.x + k * kFusedThreads in order,
// then the warps' trees, then warp 0's tree over the 32 warp totals. Thread 0 writes the
// image's counts (unless `counts` is null) and its three Dice sums: to the workspace
// (image_sums[b][3], unless null) for dice_from_image_sums_kernel, or, kClustered (one cluster
// of all the images' blocks, rank b = image b), to its dynamic shared memory, where after the
// cluster barrier thread 0 of rank 0 adds them in image order, as that kernel does (the same
// bits), and writes the loss.
template <bool kClustered>
__global__ void __launch_bounds__(kFusedThreads)
    image_sums_kernel(ConfusionCounts* counts, double* image_sums, float* loss, DiceSums* sums,
                      const float* logits, const uint8_t* target, int64_t pixels) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  UNETCU_STATIC_SHARED(double, warp_totals, [kFusedSums][kFusedThreads / 32]);
  const int64_t base = int64_t(blockIdx.x) * pixels;
  const int64_t vecs = pixels / 4;
  const int tid = int(threadIdx.x);
  double acc[kFusedSums] = {};
  // Four float4s at a time: their loads are issued before their sums (one round trip for a
  // 128 x 128 image), and the registers of eight would not fit the 64 a thread of a
  // 1024-thread block has (ptxas spilled).
  for (int k0 = 0; k0 < kFusedVecsPerThread; k0 += kFusedBatch) {
    Vec<float, 4> x[kFusedBatch];
    Vec<uint8_t, 4> t[kFusedBatch];
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int k = 0; k < kFusedBatch; ++k) {
      const int64_t j = tid + int64_t(k0 + k) * kFusedThreads;
      if (j < vecs) {
        x[k] = load_vec<4>(logits + base, j);
        t[k] = load_vec<4>(target + base, j);
      }
    }
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int k = 0; k < kFusedBatch; ++k) {
      if (tid + int64_t(k0 + k) * kFusedThreads >= vecs) break;
      for (int m = 0; m < 4; ++m) {
        const double p = double(sigmoid_pair(x[k].v[m]).p);
        const bool truth = t[k].v[m] != 0;
        const bool pred = predicted_positive(x[k].v[m]);
        acc[0] += p;
        acc[1] += truth ? 1.0 : 0.0;
        acc[2] += truth ? p : 0.0;
        acc[3] += (pred && truth) ? 1.0 : 0.0;
        acc[4] += (pred && !truth) ? 1.0 : 0.0;
        acc[5] += (!pred && truth) ? 1.0 : 0.0;
      }
    }
  }
  const int lane = tid % 32, warp = tid / 32;
  for (int v = 0; v < kFusedSums; ++v) {
    const double w = warp_tree_sum(acc[v]);
    if (lane == 0) warp_totals[v][warp] = w;
  }
  __syncthreads();
  if (warp == 0) {
    double total[kFusedSums];
    for (int v = 0; v < kFusedSums; ++v) total[v] = warp_tree_sum(warp_totals[v][lane]);
    if (lane == 0) {
      ConfusionCounts c;
      c.tp = int64_t(total[3]);
      c.fp = int64_t(total[4]);
      c.fn = int64_t(total[5]);
      c.tn = pixels - c.tp - c.fp - c.fn;
      if (counts) counts[blockIdx.x] = c;
      if constexpr (kClustered) {
        UNETCU_DYNAMIC_SHARED(double, image_total);  // [3]
        for (int v = 0; v < 3; ++v) image_total[v] = total[v];
      } else if (image_sums) {
        for (int v = 0; v < 3; ++v) image_sums[int64_t(blockIdx.x) * 3 + v] = total[v];
      }
    }
  }
  if constexpr (kClustered) {
    UNETCU_CLUSTER_SYNC();
    if (tid == 0 && UNETCU_CLUSTER_RANK() == 0) {
      UNETCU_DYNAMIC_SHARED(double, image_total);
      DiceSums s;
      for (int i = 0; i < int(gridDim.x); ++i) {
        const double* t = UNETCU_CLUSTER_SHARED(image_total, i);
        s.sum_p += t[0];
        s.sum_t += t[1];
        s.intersection += t[2];
      }
      *sums = s;
      *loss = float(dice_loss_from_sums(s));
    }
    UNETCU_CLUSTER_SYNC();  // every block's sums stay until rank 0 has read them
  }
}

// One thread: the batch's Dice sums as the images' sums added in image order, and the loss.
__global__ void dice_from_image_sums_kernel(float* loss, DiceSums* sums, const double* image_sums,
                                            int n_images) {
  UNETCU_GRID_DEPENDENCY_SYNC();
  DiceSums s;
  for (int i = 0; i < n_images; ++i) {
    s.sum_p += image_sums[3 * i];
    s.sum_t += image_sums[3 * i + 1];
    s.intersection += image_sums[3 * i + 2];
  }
  *sums = s;
  *loss = float(dice_loss_from_sums(s));
}

EnvSwitch g_loss_cluster{"UNETCU_LOSS_CLUSTER", false};

}  // namespace

bool loss_and_counts_applies(const float* logits, const uint8_t* target, int n_images,
                             int64_t pixels) {
  return n_images > 0 && pixels > 0 && pixels <= kFusedLossMaxPixels && pixels % 4 == 0 &&
         detail::all_vec4(logits, target);
}

size_t loss_and_counts_workspace_bytes(int n_images) {
  return size_t(n_images > 0 ? n_images : 0) * 3 * sizeof(double);
}

void set_loss_cluster(bool on) { g_loss_cluster.set(on); }
bool loss_cluster() { return g_loss_cluster.get(); }

namespace {

// The one-launch forms over `blocks` blocks of `pixels` values each: with the loss, the
// blocks as one cluster whose rank 0 adds their Dice sums; counts alone (loss and sums null),
// one block an image and nothing to add. False, launching nothing, where they do not apply
// (more than 16 blocks for the loss, or a device that cannot place the cluster).
bool one_launch_sums(float* loss, DiceSums* sums, ConfusionCounts* counts, const float* logits,
                     const uint8_t* target, int blocks, int64_t pixels, cudaStream_t stream) {
  if (!loss_and_counts_applies(logits, target, blocks, pixels)) return false;
  if (loss == nullptr) {
    UNETCU_LAUNCH_CHAINED(image_sums_kernel<false>, blocks, kFusedThreads, 0, stream)(
        counts, nullptr, nullptr, nullptr, logits, target, pixels);
    return true;
  }
  const size_t smem = 3 * sizeof(double);
  if (blocks > int(kMaxNonPortableClusterBlocks) ||
      !cluster_fits(image_sums_kernel<true>, kFusedThreads, smem, unsigned(blocks)))
    return false;
  UNETCU_LAUNCH_CLUSTER(image_sums_kernel<true>, blocks, kFusedThreads, smem, stream, blocks)(
      counts, nullptr, loss, sums, logits, target, pixels);
  return true;
}

// The reductions' paths (kernels/path_timing.h names them in its report): two launches (any
// shape), or one (one_launch_sums, where it applies). Untimed, one launch comes first when
// set_loss_cluster is on.
enum Path : int { kTwoLaunches, kOneLaunch, kPaths };
constexpr const char* kPathNames[kPaths] = {"two_launches", "one_launch"};

// Runs `op` over `images` x `pixels` values by the path run_fastest picks; launch(path) as
// there. Every path writes only the op's outputs and workspace, so any call may be timed.
template <class Launch>
void run_loss_path(const char* op, int images, int64_t pixels, cudaStream_t stream,
                   const Launch& launch) {
  detail::PathOp path_op(op, kPathNames, kPaths, {images, pixels});
  if (loss_cluster()) path_op.then(kOneLaunch);
  path_op.then(kTwoLaunches);
  detail::run_fastest(path_op, true, stream, launch);
}

}  // namespace

void loss_and_counts(float* loss, DiceSums* sums, ConfusionCounts* counts, const float* logits,
                     const uint8_t* target, int n_images, int64_t pixels, void* workspace,
                     cudaStream_t stream) {
  run_loss_path("loss_and_counts", n_images, pixels, stream, [&](int path) {
    if (path == kOneLaunch)
      return one_launch_sums(loss, sums, counts, logits, target, n_images, pixels, stream);
    double* image_sums = static_cast<double*>(workspace);
    UNETCU_LAUNCH_CHAINED(image_sums_kernel<false>, n_images, kFusedThreads, 0, stream)(
        counts, image_sums, nullptr, nullptr, logits, target, pixels);
    UNETCU_LAUNCH_CHAINED(dice_from_image_sums_kernel, 1, 1, 0, stream)(loss, sums, image_sums,
                                                                         n_images);
    return true;
  });
}

size_t dice_loss_workspace_bytes(int64_t count) {
  return detail::reduce_tiling(count, 1).partial_count(3) * sizeof(double);
}

void dice_loss_forward(float* loss, DiceSums* sums, const float* logits, const uint8_t* target,
                       int64_t count, void* workspace, cudaStream_t stream) {
  run_loss_path("dice_loss_forward", 1, count, stream, [&](int path) {
    if (path == kOneLaunch) {
      // The values cut into the most blocks, up to a cluster's 16, that take equal whole
      // float4 runs a block can hold.
      for (int blocks = int(kMaxNonPortableClusterBlocks); blocks >= 1; --blocks) {
        if (count % (4 * blocks) != 0 || count / blocks > kFusedLossMaxPixels) continue;
        return one_launch_sums(loss, sums, nullptr, logits, target, blocks, count / blocks,
                               stream);
      }
      return false;
    }
    detail::reduce_rows<3>(DiceSrc{logits, target}, DiceEpilogue{loss, sums},
                           detail::reduce_tiling(count, 1), static_cast<double*>(workspace),
                           stream);
    return true;
  });
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

size_t confusion_counts_workspace_bytes(int n_images, int64_t pixels) {
  return detail::reduce_tiling(pixels, 1, n_images).partial_count(3) * sizeof(double);
}

void confusion_counts(ConfusionCounts* counts, const float* logits, const uint8_t* target,
                      int n_images, int64_t pixels, void* workspace, cudaStream_t stream) {
  if (n_images <= 0) return;
  run_loss_path("confusion_counts", n_images, pixels, stream, [&](int path) {
    if (path == kOneLaunch)
      return one_launch_sums(nullptr, nullptr, counts, logits, target, n_images, pixels, stream);
    detail::reduce_rows<3>(ConfusionSrc{logits, target, pixels},
                           ConfusionEpilogue{counts, pixels},
                           detail::reduce_tiling(pixels, 1, n_images),
                           static_cast<double*>(workspace), stream);
    return true;
  });
}

void epoch_totals_accumulate(EpochTotals* totals, const float* loss,
                             const ConfusionCounts* counts, int n_images, cudaStream_t stream) {
  UNETCU_LAUNCH_CHAINED(epoch_totals_kernel, 1, 1, 0, stream)(totals, loss, counts, n_images);
}

}  // namespace unetcu::cuda
