// bench/stream_hold.h: keeps a stream's work from starting until the host has issued all of
// it, so that an interval timed with events on that stream is the GPU's time alone.
//
// Why: bench_cuda_ops times each op between two events after an L2 flush (a ~100 MB memset,
// some 35 us on an H100). Whatever the host takes to issue the op beyond that flush, the GPU
// sits idle inside the timed interval, so an op whose issue is slow on the host (a cuDNN call
// that does host work each time, a LibTorch op's dispatch) measured host time, not its kernels.
// The training step replays a CUDA graph, where the host's issue costs nothing per kernel, so
// the per-op table should compare GPU times.
//
// How: hold() puts a host function on the stream that waits until release() (or a time limit);
// the work issued after it cannot start before it returns. The limit guards against an issue
// that itself waits for the stream (a synchronising call inside it would otherwise wait forever
// on the hold): the function then gives up, the round counts as expired, and the work ran as the
// host issued it, as it would have unheld. CUDA runtime only: the SIMT emulator runs it too.
#pragma once

#include <cuda_runtime.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "kernels/cuda/check.h"

namespace unetcu::bench {

class StreamHold {
 public:
  explicit StreamHold(std::chrono::milliseconds limit) : limit_(limit) {}

  // From now on, `stream`'s work waits for release(). One round at a time: the stream must
  // have passed the previous round's hold (a synchronisation after it does that).
  void hold(cudaStream_t stream) {
    round_ = std::make_shared<Round>();
    round_->limit = limit_;
    // The host function owns one reference: the round outlives it whatever the caller does.
    auto* owner = new std::shared_ptr<Round>(round_);
    const cudaError_t e = cudaLaunchHostFunc(stream, &StreamHold::wait_for_release, owner);
    if (e != cudaSuccess) delete owner;
    UNETCU_CUDA_CHECK(e);
  }

  // Lets the held work run.
  void release() {
    if (!round_) return;
    {
      std::lock_guard<std::mutex> lock(round_->m);
      round_->released = true;
    }
    round_->cv.notify_all();
  }

  // Whether this round's hold gave up before release(): the issue took longer than the limit or
  // waited for the stream. Known once the stream has passed the hold.
  bool expired() const {
    if (!round_) return false;
    std::lock_guard<std::mutex> lock(round_->m);
    return round_->expired;
  }

 private:
  struct Round {
    std::mutex m;
    std::condition_variable cv;
    bool released = false;
    bool expired = false;
    std::chrono::milliseconds limit{0};
  };

  static void CUDART_CB wait_for_release(void* user) {
    std::unique_ptr<std::shared_ptr<Round>> owner(static_cast<std::shared_ptr<Round>*>(user));
    Round& r = **owner;
    std::unique_lock<std::mutex> lock(r.m);
    if (!r.cv.wait_for(lock, r.limit, [&r] { return r.released; })) r.expired = true;
  }

  std::chrono::milliseconds limit_;
  std::shared_ptr<Round> round_;
};

}  // namespace unetcu::bench
