// kernels/cudnn/fusion_probe.h: a research probe, not part of training. Can cuDNN's graph API
// fuse, in float32, the BatchNorm passes that sit beside this network's convolutions into the
// convolutions themselves, and what would that cost?
//
// Why: on an H100 the step's compute stream spends about 1.4 ms of its 3.8 in BatchNorm
// kernels (bench/RESULTS.md, the seventh run's timeline): per BatchNorm a statistics pass that
// reads the convolution's output again, and in the backward a gradient-sums pass that reads the
// data gradient (masked by the ReLU) and the BatchNorm's input again. cuDNN's runtime fusion
// engines can add reductions to a convolution's epilogue (its output tile is still in
// registers), which would drop those passes (about 0.7 ms a step from the timeline), and
// apply a BatchNorm + ReLU as a convolution's input is read (the normalising pass, 0.1 ms a
// step, and the write of its output). Whether they do so in float32 with TF32 arithmetic,
// deterministically, and how fast, the documentation does not settle; this probe asks the
// library on the card.
//
// Variants, each one operation graph (NHWC float32, KRSC filters, tensors as conv_cudnn.cpp's):
//   forward, sh's output y as a BatchNorm's input:
//     conv             the convolution alone (the builder's baseline)
//     conv+sum         y, and sum(y) per channel (a reduction in the epilogue)
//     conv+sum+sumsq   y, sum(y), sum(y * y)
//     conv+genstats    y and both sums through cuDNN's GEN_STATS operation
//     bnrelu+conv      the input as relu(x * scale + bias), the BatchNorm + ReLU before the
//                      convolution applied as its input is read (a prologue: their output
//                      need not be written), then also with sum(y) and sum(y * y)
//   data gradient, sh's input x as the output of a BatchNorm + ReLU (r = relu(bn(z))):
//     dgrad            the data gradient alone
//     dgrad+relu       g = dgrad(dy) masked where r = 0 (RELU_BWD)
//     dgrad+relu+sum   g, and sum(g) per channel
//     dgrad+relu+sums  g, sum(g), sum(g * (z - mean)): the two sums of the BatchNorm backward
// The reductions are tried with cuDNN's deterministic flag and without. Heuristics modes A, B
// and FALLBACK are asked; up to `configs` configurations of each are built (runtime-compiled
// engines included: the build time is reported) and timed as captured CUDA graphs, like the
// runner's candidates; the fastest one's outputs are checked against the engine's own
// convolution (ConvRunner) and sums formed from it in double on the host.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "kernels/conv.h"

namespace unetcu::cudnn {

struct FusionProbeOptions {
  bool tf32 = true;     // as ConvOptions::tf32 (the baseline convolution too)
  int configs = 4;      // configurations built and timed per variant and heuristics mode
  uint64_t seed = 1;    // of the random inputs
  bool fused = true;    // false: only the two baselines (conv, dgrad), which build fast
};

// Runs every variant for shape `sh` on the current device and hands `emit` one line per
// variant as soon as it is done (a runtime-compiled engine can take seconds to build, so a
// caller under a time limit keeps what finished). Refusals and failures of cuDNN are reported
// in the lines, never thrown; a failing CUDA allocation or copy throws.
void probe_bn_fusions(const ConvShape& sh, const FusionProbeOptions& options,
                      const std::function<void(const std::string&)>& emit);

}  // namespace unetcu::cudnn
