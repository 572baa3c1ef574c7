// kernels/path_timing.h: our CUDA kernels' alternative paths timed per shape.
//
// Where a hand-written op can run in more than one way (a BatchNorm too large for one block a
// column: three kernels, a cluster of up to 8 or of up to 16 blocks, or two kernels; the Dice
// and count reductions: two launches or one; the head's forward and data gradient: a thread
// per pixel or row sweeps), which is fastest depends on the shape and the
// card, and so far only Nsight Compute and the benchmarks' probes said so, one setting at a
// time. With path timing on, the first call of each op and shape outside a CUDA graph capture
// runs every path that applies to it as the captured training step would (a few calls captured
// as one graph, replayed between two events: kernels/cuda/capture_timing.h, as cuDNN's
// candidates are timed), keeps the fastest, and later calls of that op and shape (captured ones
// included) run it. The timing runs write their side effects (running statistics, parameter
// gradients, an accumulated residual gradient) to scratch, so the call's results are those of
// one call by the chosen path. A call that cannot be repeated (one that accumulates into its
// main output, or whose output overlaps an input) runs untimed by the settings below and
// leaves the shape to a later call.
//
// Off by default until measured on a GPU; UNETCU_PATH_TIMING=1 in the environment turns it on,
// as does set_path_timing. While it is on, the shapes it has timed ignore UNETCU_BN_CLUSTER,
// UNETCU_BN_CLUSTER_MAX, UNETCU_BN_TWO_KERNELS and UNETCU_LOSS_CLUSTER.
#pragma once

#include <string>

namespace unetcu::cuda {

void set_path_timing(bool on);
bool path_timing();

// One line per op and shape timed so far, in the order they were timed:
//   "batchnorm.train_fwd_relu 65536x64: cluster16 (three_kernels 23.300 us, cluster8 not
//   applicable, cluster16 12.100 us, two_kernels 15.000 us)"
// Empty when nothing was timed.
std::string path_timing_report();

// Forgets every choice, so that each shape is timed again at its next call (tests).
void forget_path_choices();

// Tests: the time of path `path` of `op` at `shape` ("batchnorm.train_fwd 5000x64",
// "cluster16") in microseconds, in place of the measured one (the paths still run); null puts
// the events back.
using PathCost = double (*)(const std::string& op_and_shape, const std::string& path);
void set_path_cost_for_tests(PathCost cost);

}  // namespace unetcu::cuda
