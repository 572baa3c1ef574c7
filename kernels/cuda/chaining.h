// kernels/cuda/chaining.h: which UNETCU_LAUNCH_CHAINED launches (kernels/cuda/launch.h) go
// chained: the switch for all of them, and the side streams, where they do not (plain C++, no
// CUDA here: the CUDA backend marks its streams, the tests read the marks).
#pragma once

#include <algorithm>
#include <mutex>
#include <vector>

#include "kernels/common.h"
#include "kernels/cuda/env.h"

namespace unetcu {

// Whether UNETCU_LAUNCH_CHAINED launches overlap the previous kernel of their stream on a GPU
// that can (programmatic dependent launch). On unless UNETCU_PDL=0 or the switch is set off:
// the training step ran 3-4% faster with it on an H200 (bench/RESULTS.md). Read when a launch
// is issued, so a graph captured with it on replays chained.
inline EnvSwitch& chained_launch_switch() {
  static EnvSwitch on{"UNETCU_PDL", true};
  return on;
}
inline bool chained_launches() { return chained_launch_switch().get(); }

// Side streams: streams (the CUDA backend's weight-gradient and Adam streams) on which
// UNETCU_LAUNCH_CHAINED launches go unchained unless UNETCU_SIDE_PDL=1. A chained kernel's blocks
// are placed as soon as every block of the kernel before it has started, and then wait, holding
// their SM's registers and thread slots, until that kernel ends. On the compute stream (the
// step's critical path) that hides a launch; behind a long kernel of a side stream it keeps
// the compute stream's next kernel off those SMs for the whole length: the ninth H100 run's
// timeline had the compute stream waiting 168 us a step under the tensor-core weight
// gradient's final reduction, a kernel of 6 us under Nsight Compute, placed early behind its
// ~100-us first stage (bench/RESULTS.md).
inline EnvSwitch& side_stream_chaining_switch() {
  static EnvSwitch on{"UNETCU_SIDE_PDL", false};
  return on;
}

// The side streams marked so far (a backend marks its own: a few each), under a lock: a launch
// asks on every call, a cost only while issuing (a captured graph replays without asking).
struct SideStreams {
  std::mutex mutex;
  std::vector<cudaStream_t> streams;
};
inline SideStreams& side_streams() {
  static SideStreams marks;
  return marks;
}
inline bool is_side_stream(cudaStream_t stream) {
  if (stream == nullptr) return false;
  SideStreams& marks = side_streams();
  std::lock_guard<std::mutex> lock(marks.mutex);
  return std::find(marks.streams.begin(), marks.streams.end(), stream) != marks.streams.end();
}
// Marks `stream` as a side stream, or no longer one (before it is destroyed: a new stream may
// get its address). A null stream (the legacy default) is never one.
inline void set_side_stream(cudaStream_t stream, bool side) {
  if (stream == nullptr) return;
  SideStreams& marks = side_streams();
  std::lock_guard<std::mutex> lock(marks.mutex);
  auto it = std::find(marks.streams.begin(), marks.streams.end(), stream);
  if (side && it == marks.streams.end()) marks.streams.push_back(stream);
  if (!side && it != marks.streams.end()) marks.streams.erase(it);
}

// Whether a UNETCU_LAUNCH_CHAINED launch on `stream` is issued chained (on a GPU that can).
inline bool launch_chains_on(cudaStream_t stream) {
  return chained_launches() && (!is_side_stream(stream) || side_stream_chaining_switch().get());
}

}  // namespace unetcu
