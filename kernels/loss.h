// kernels/loss.h: sigmoid + batch Dice loss from logits (smp DiceLoss, mode="binary",
// from_logits=True, smooth=0, eps=1e-7), and per-image confusion counts for the IoU metric.
//
// Dice is a *batch* Dice: the sums run over every image and pixel together.
//   p = sigmoid(x); Sp = sum p; St = sum t; I = sum p*t; den = (Sp + St)/2
//   loss = (1 - I / max(den, 1e-7)) * (St > 0)
// targets are uint8 0/1 of the same count as the logits (one channel).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/common.h"

namespace unetcu {

// The three sums the loss and its gradient need, accumulated in double.
struct DiceSums {
  double sum_p = 0, sum_t = 0, intersection = 0;
};

// smp's eps: the Dice denominator is clamped to at least this.
constexpr double kDiceEps = 1e-7;

// The loss value from the sums (host and device code alike).
UNETCU_HOST_DEVICE inline double dice_loss_from_sums(const DiceSums& s) {
  if (!(s.sum_t > 0)) return 0.0;
  double den = 0.5 * (s.sum_p + s.sum_t);
  return 1.0 - s.intersection / (den > kDiceEps ? den : kDiceEps);
}

// Per-image confusion counts, prediction = sigmoid(logit) > 0.5 (strict, as smp's example).
struct ConfusionCounts {
  int64_t tp = 0, fp = 0, fn = 0, tn = 0;
};

// The predicted mask the counts are taken from: smp's example's logits.sigmoid() > 0.5 in
// float32, a strict comparison, with the sigmoid formed as PyTorch forms it. Logits in
// (0, ~1.2e-7) round to exactly 0.5 and count as negative, so this is not x > 0. Every
// backend's counts use this one test, and every probability the tool computes on the host
// (predict's, the run report's masks, test-time augmentation's) is mask_sigmoid, so that its
// p > 0.5 is this mask.
UNETCU_HOST_DEVICE inline float mask_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
UNETCU_HOST_DEVICE inline bool predicted_positive(float x) { return mask_sigmoid(x) > 0.5f; }

namespace cpu {

// loss: one float; sums: the DiceSums used (needed by backward).
void dice_loss_forward(float* loss, DiceSums* sums, const float* logits, const uint8_t* target,
                       int64_t count);
// dlogits (+)= dloss * dL/dx. dloss is the upstream gradient of the scalar loss (1 in training).
void dice_loss_backward(float* dlogits, const float* logits, const uint8_t* target,
                        const DiceSums& sums, int64_t count, float dloss, GradMode mode);

// Double versions, for finite-difference gradient checks.
void dice_loss_forward(double* loss, DiceSums* sums, const double* logits, const uint8_t* target,
                       int64_t count);
void dice_loss_backward(double* dlogits, const double* logits, const uint8_t* target,
                        const DiceSums& sums, int64_t count, double dloss, GradMode mode);

// counts: [n_images]; each image has `pixels` logits and targets.
void confusion_counts(ConfusionCounts* counts, const float* logits, const uint8_t* target,
                      int n_images, int64_t pixels);

}  // namespace cpu

// micro-imagewise IoU of one image: tp/(tp+fp+fn), 1.0 when the denominator is 0.
UNETCU_HOST_DEVICE inline double image_iou(const ConfusionCounts& c) {
  int64_t den = c.tp + c.fp + c.fn;
  return den == 0 ? 1.0 : double(c.tp) / double(den);
}
// Dice of one image: 2tp/(2tp+fp+fn), 1.0 when the denominator is 0.
UNETCU_HOST_DEVICE inline double image_dice(const ConfusionCounts& c) {
  int64_t den = 2 * c.tp + c.fp + c.fn;
  return den == 0 ? 1.0 : 2.0 * double(c.tp) / double(den);
}


// CUDA kernels (kernels/cuda/loss.cu), asynchronous on `stream`. Every pointer is device
// memory, the DiceSums included: the forward leaves the sums and the loss on the device and
// the backward reads the sums from there, so a captured step never waits for the host. The
// sums are deterministic two-stage reductions through `workspace` (at least the matching
// *_workspace_bytes, 8-byte aligned, scratch).
namespace cuda {

// Where the values are whole float4 runs (see loss_and_counts_applies), the Dice forward and
// the counts alone run as loss_and_counts does, the Dice forward over one "image" of all the
// values; elsewhere as reduce_rows over single values.
size_t dice_loss_workspace_bytes(int64_t count);
void dice_loss_forward(float* loss, DiceSums* sums, const float* logits, const uint8_t* target,
                       int64_t count, void* workspace, cudaStream_t stream);
void dice_loss_backward(float* dlogits, const float* logits, const uint8_t* target,
                        const DiceSums* sums, int64_t count, float dloss, GradMode mode,
                        cudaStream_t stream);

size_t confusion_counts_workspace_bytes(int n_images, int64_t pixels);
void confusion_counts(ConfusionCounts* counts, const float* logits, const uint8_t* target,
                      int n_images, int64_t pixels, void* workspace, cudaStream_t stream);

// The Dice forward and the confusion counts of one batch in one pass over the logits, with the
// outputs of dice_loss_forward and confusion_counts (the sums in another order of addition).
// Two launches where the separate ops take four, the logits read once: blocks of 512 float4s
// of one image (8 an image at 128 x 128) write their sums, then one block adds each image's
// parts in order and the images' Dice sums in image order. It applies where every image is
// whole float4 runs (pixels a multiple of 4, 16-byte aligned logits, 4-byte aligned targets)
// and there are at most 65,535 images (the launch's grid.y).
bool loss_and_counts_applies(const float* logits, const uint8_t* target, int n_images,
                             int64_t pixels);
// Only where loss_and_counts_applies; workspace: loss_and_counts_workspace_bytes, 8-byte aligned.
// `loss` and `sums` may be null (the counts alone), or `counts` (the Dice forward alone).
size_t loss_and_counts_workspace_bytes(int n_images, int64_t pixels);
void loss_and_counts(float* loss, DiceSums* sums, ConfusionCounts* counts, const float* logits,
                     const uint8_t* target, int n_images, int64_t pixels, void* workspace,
                     cudaStream_t stream);

// Running sums over an epoch, kept on the device; zero it (all bytes 0) at the start of an
// epoch. Micro-imagewise IoU = iou_sum / images; micro IoU = tp / (tp + fp + fn).
struct EpochTotals {
  double loss_sum = 0;  // sum of batch losses
  int64_t batches = 0;  // batches whose loss was added
  double iou_sum = 0;   // sum of image_iou over the images
  double dice_sum = 0;  // sum of image_dice over the images
  int64_t images = 0;
  int64_t tp = 0, fp = 0, fn = 0, tn = 0;
};
// Adds one batch: its loss (may be null: not counted) and its per-image counts, in image
// order, so the totals are the same on every run.
void epoch_totals_accumulate(EpochTotals* totals, const float* loss,
                             const ConfusionCounts* counts, int n_images, cudaStream_t stream);

}  // namespace cuda
}  // namespace unetcu
