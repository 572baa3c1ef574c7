// kernels/path_timing.h: our CUDA kernels' alternative paths timed per shape.
//
// Where a hand-written op can run in more than one way (the head's forward and data gradient: a
// thread per pixel or row sweeps), which is fastest depends on the shape and the card. With path
// timing on, the first call of each op and shape outside a CUDA graph capture runs every path that
// applies to it as the captured training step would (a few calls captured as one graph, replayed
// between two events: kernels/cuda/capture_timing.h, as cuDNN's candidates are timed), keeps the
// fastest, and later calls of that op and shape (captured ones included) run it. The timed ops
// write only their outputs and workspace, so the call's results are those of one call by the chosen
// path. A call that cannot be repeated (one that accumulates into its main output, or whose output
// overlaps an input) runs untimed by the settings below and leaves the shape to a later call.
//
// Off by default: on an H100 it kept the untimed choices everywhere but the head, whose row
// sweeps are now the untimed choice too (bench/RESULTS.md, "Eighth H100 run"; the BatchNorm
// and loss alternatives it also timed then, measured slower, were removed since).
// UNETCU_PATH_TIMING=1 in the environment turns it on, as does set_path_timing.
#pragma once

#include <string>

namespace unetcu::cuda {

void set_path_timing(bool on);
bool path_timing();

// One line per op and shape timed so far, in the order they were timed:
//   "conv.narrow_fwd 16x128x128x16: row_sweep (per_pixel 27.424 us, row_sweep 15.632 us)"
// Empty when nothing was timed.
std::string path_timing_report();

// Forgets every choice, so that each shape is timed again at its next call (tests).
void forget_path_choices();

// Tests: the time of path `path` of `op` at `shape` ("conv.narrow_fwd 2x16x16x16",
// "row_sweep") in microseconds, in place of the measured one (the paths still run); null puts
// the events back.
using PathCost = double (*)(const std::string& op_and_shape, const std::string& path);
void set_path_cost_for_tests(PathCost cost);

}  // namespace unetcu::cuda
