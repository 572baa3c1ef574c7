// kernels/cudnn/conv_cudnn.h: the convolutions on a GPU, through cuDNN. The translation unit
// that runs them (conv_cudnn.cpp) sits behind this header, so nothing outside kernels/cudnn
// includes cudnn.h (the research probe fusion_probe.cpp shares its graph-API helpers,
// graph_api.h). GPU builds only: cuDNN is never faked, and under the SIMT emulator the engine
// runs the cpu:: reference behind the same Backend interface instead.
//
// Layouts are kernels/conv.h's: activations NHWC float32, filters KRSC, which is exactly cuDNN's
// NHWC filter format (K, R, S, C with C fastest), so no transposition happens anywhere.
//
// Algorithms are chosen once per (ConvShape, direction) and cached:
//   * measured: cudnnFind*AlgorithmEx runs every candidate on scratch buffers of the real shape
//     (the inputs are the real tensors, the output a temporary buffer, so an accumulating
//     gradient is never clobbered), with a search workspace of at most a quarter of the free
//     device memory (capped at 1 GiB); cuDNN times each candidate once, so the fastest four
//     are timed again, their calls captured as a CUDA graph as the training step runs them
//     (median of 5 launches; one that cannot be captured is dropped), and that order decides;
//   * among the candidates that succeeded, the fastest deterministic one is taken: a training
//     run should be repeatable bit for bit on one GPU (backward-data ALGO_0 and backward-filter
//     ALGO_0/ALGO_3 accumulate with atomics). Only when no deterministic candidate exists does
//     the fastest non-deterministic one serve, and report() says so. Candidates that would
//     convert float32 data to half precision are never taken;
//   * when the measured search itself fails (usually: not enough memory for its buffers),
//     cuDNN's heuristics (cudnnGet*Algorithm_v7) choose with the same preference;
//   * after a measured search, cuDNN's graph API (cudnnBackend*, the engines PyTorch runs)
//     builds plans for the best engines its heuristics rank, filtered by the same rules (and
//     no run-time compiled ones), and times them the same way; one serves when it is faster
//     and its output agrees with the descriptor-API algorithm's on the real inputs. Backward
//     directions get one such plan per output scale (overwrite, accumulate). Any failure on
//     the way keeps the descriptor-API algorithm; UNETCU_CUDNN_GRAPH=0 skips the graph API;
//   * a caller's own kernel for the shape and direction (a Rival: kernels/cuda's direct
//     convolutions) is timed the same way against the overwriting choice above and checked
//     against its output on the real inputs; the caller runs it instead of cuDNN where it won.
// The choice needs the stream to be idle of captures: the first call of a shape must come
// from an eager step (ModelSession runs the first step of each batch size eagerly).
//
// TF32: with ConvOptions::tf32 (the default, as PyTorch's allow_tf32 for cuDNN) the math type is
// CUDNN_DEFAULT_MATH, which lets cuDNN use TF32 tensor cores for float32 on sm_80 and newer;
// without it, CUDNN_FMA_MATH keeps every product in full float32 (and graph-API engines that
// use tensor cores are left out).
//
// Errors: every cuDNN call is checked; a failure throws CudnnError naming the call, file:line,
// cudnnGetErrorString's text, cuDNN's own last-error detail and a hint.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "kernels/conv.h"

namespace unetcu::cudnn {

class CudnnError : public std::runtime_error {
 public:
  explicit CudnnError(const std::string& message) : std::runtime_error(message) {}
};

struct ConvOptions {
  bool tf32 = true;  // float32 convolutions may use TF32 tensor cores
  // Graph-API engine configurations timed per shape and direction, from the top of cuDNN's
  // heuristics ranking; 0: UNETCU_CUDNN_CANDIDATES, else 12 (a value outside 1..64 there
  // throws, naming it).
  int graph_candidates = 0;
  // Knob variants of the best two of them also built and timed per shape and direction (each
  // one knob changed); -1: UNETCU_CUDNN_KNOB_VARIANTS, else none (a value outside 0..256 there
  // throws, naming it).
  int knob_variants = -1;
  // Heuristics mode B's best configurations (as many again) timed too, those mode A did not
  // offer (1) or not (0); -1: UNETCU_CUDNN_HEURISTICS_B, else 0.
  int heuristics_b = -1;
  // The weight gradients' graph-API plans asked of cuDNN for this many SMs (its SM carveout),
  // leaving the rest to the compute stream's kernels; 0: all SMs; -1: UNETCU_CUDNN_WGRAD_SMS,
  // else 0 (a value outside 0..1024 there throws, naming it). A carved-out plan serves when it
  // agrees and is no slower per SM than the full-card choice.
  int wgrad_sm_target = -1;
};

// "cuDNN 9.19.0 (headers 9.19.0)": the library loaded at run time and the one compiled against.
std::string version();

// One cuDNN handle bound to one stream at a time, and the algorithm cache. Not thread-safe: one
// per host thread. Every call is asynchronous on the current stream.
class ConvRunner {
 public:
  ConvRunner(cudaStream_t stream, const ConvOptions& options);
  ~ConvRunner();
  ConvRunner(const ConvRunner&) = delete;
  ConvRunner& operator=(const ConvRunner&) = delete;

  // Later calls run on `stream` (the cache of choices stays). For one handle that serves
  // several streams in turn, all from one host thread.
  void set_stream(cudaStream_t stream);

  // A kernel of the caller's for one direction of a shape, competing with cuDNN's choice:
  // run(out, workspace, stream, mode) writes the direction's result over `out` (overwrite) or
  // adds it there (accumulate, asked of the gradients only) on `stream`, with a workspace of
  // workspace_bytes. It must keep the inputs it was made for. Timed overwriting; checked
  // against cuDNN both ways it will run.
  struct Rival {
    std::string name;
    size_t workspace_bytes = 0;
    std::function<void(float* out, void* workspace, cudaStream_t stream, GradMode mode)> run;
  };

  // The workspace bytes the call with these arguments needs; the first call for a shape chooses
  // its algorithm (see the file comment), which runs convolutions on the given inputs, and
  // times `rival` against it when there is one.
  size_t prepare_forward(const ConvShape& sh, const float* x, const float* wt,
                         const Rival* rival = nullptr);
  size_t prepare_backward_data(const ConvShape& sh, const float* dy, const float* wt,
                               const Rival* rival = nullptr);
  size_t prepare_backward_filter(const ConvShape& sh, const float* dy, const float* x,
                                 const Rival* rival = nullptr);
  // True when the rival given to the first prepare_* of this shape and direction was faster
  // than cuDNN and agreed with it: the caller runs its kernel instead of cuDNN's.
  bool rival_serves_forward(const ConvShape& sh) const;
  bool rival_serves_backward_data(const ConvShape& sh) const;
  bool rival_serves_backward_filter(const ConvShape& sh) const;

  // y = conv(x, wt) (no bias: the engine adds it with cuda::conv2d_add_bias).
  void forward(float* y, const float* x, const float* wt, const ConvShape& sh, void* workspace,
               size_t workspace_bytes);
  // dx (+)= conv_transpose(dy, wt)
  void backward_data(float* dx, const float* dy, const float* wt, const ConvShape& sh,
                     GradMode mode, void* workspace, size_t workspace_bytes);
  // dwt (+)= correlation of x with dy, summed over the batch
  void backward_filter(float* dwt, const float* dy, const float* x, const ConvShape& sh,
                       GradMode mode, void* workspace, size_t workspace_bytes);

  // One line per chosen algorithm: shape, direction, algorithm, math, workspace, measured time,
  // the graph-API engines that replace it (or why none does), the rival's time and whether it
  // serves, and the other candidates timed.
  std::string report() const;
  // The settings that shape the choice: "12 graph-API configurations a shape", then the
  // opt-in ones that are on ("64 knob variants", ...), for the backend's description.
  std::string settings() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace unetcu::cudnn
