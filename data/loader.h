// data/loader.h: Loader, the prefetching batch loader. Worker threads assemble the batches of
// an epoch, optionally augmented, into a ring of host buffers ahead of the training loop, so
// that the loop only waits for a batch when the workers fall behind.
//
// What a batch holds depends only on (seed, epoch, index list), never on the worker count or
// on timing: the order is BatchIterator's (shuffled with derive_seed(seed, epoch)), and the
// augmentation of the image at position p of an epoch's order is drawn from its own generator,
// seeded with augment_seed(seed, epoch, p). Without augmentation a batch is byte for byte what
// BatchIterator::fill gives.
//
// Buffers come from a HostAllocator, so a CUDA build can hand in page-locked memory
// (cudaHostAlloc) and upload a batch with an asynchronous copy straight from its slot; the
// default is 4096-byte aligned ordinary memory.
//
// Use:
//   Loader loader(ds, split.train, opt);     // workers start on epoch opt.epoch at once
//   for (int e = first; e < epochs; ++e) {
//     loader.start_epoch(e);
//     while (LoaderBatch b = loader.next()) { step(b.images, b.masks, b.n); loader.release(b); }
//   }
// A batch from next() stays valid, and its slot untouched, until release(batch) (or the next
// start_epoch or the destructor). Up to `ring` batches may be held at once (e.g. one being
// uploaded while the next is prepared); next() while the slot it needs is still held (by the
// batch `ring` places earlier) is an error rather than a deadlock.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "data/batch.h"
#include "data/dataset.h"

namespace unetcu::data {

struct HostAllocator {
  std::function<void*(size_t bytes)> alloc;  // must not return nullptr (throw instead)
  std::function<void(void*)> free;
};

// 4096-byte aligned memory from the C++ runtime (the default).
HostAllocator aligned_host_allocator();

struct LoaderOptions {
  int batch_size = 16;
  uint64_t seed = 0;
  bool shuffle = true;
  bool augment = false;     // random flips and quarter turns, the same for an image and its mask
  int workers = 2;          // threads assembling batches, >= 1
  int ring = 4;             // host buffers (batches prepared ahead plus those held), >= 1
  int epoch = 0;            // the epoch the workers begin with
  int first_batch = 0;      // ... and its batch they begin at (an interrupted epoch resumed)
  HostAllocator allocator;  // left empty: aligned_host_allocator()
};

struct LoaderBatch {
  const uint8_t* images = nullptr;  // n x size x size x 3, RGB (NHWC)
  const uint8_t* masks = nullptr;   // n x size x size, 0/1
  int n = 0;                        // images in the batch; 0 once the epoch is over
  int index = -1;                   // batch number within the epoch
  uint64_t generation = 0;          // which start_epoch it came from (release() skips older)
  explicit operator bool() const { return n > 0; }
};

class Loader {
 public:
  // `data` must outlive the loader. Throws unetcu::Error for a bad batch size, worker count,
  // ring size or index (as BatchIterator).
  Loader(const Dataset& data, std::vector<int> indices, const LoaderOptions& opt);
  ~Loader();  // stops and joins the workers, also in the middle of an epoch
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Switches to `epoch` and rewinds to its batch `first_batch` (0 to num_batches(); a resumed
  // epoch skips the batches it had done, which are the same batches whatever the start);
  // batches held from before are void. Calling it with the current epoch and the first batch
  // of the last rewind before any next() keeps what is already prepared.
  void start_epoch(int epoch, int first_batch = 0);
  int epoch() const { return it_.epoch(); }
  int num_batches() const { return it_.num_batches(); }
  int batch_size() const { return it_.batch_size(); }

  // The next batch of the epoch (waiting for it if need be), or an empty batch at the end.
  // Rethrows an exception a worker hit.
  LoaderBatch next();
  // Gives the batch's slot back to the workers. Batches from before the last start_epoch are
  // ignored (their slots were reclaimed then).
  void release(const LoaderBatch& batch);

 private:
  enum class SlotState { kFree, kFilling, kReady, kHeld };
  struct Slot {
    uint8_t* images = nullptr;
    uint8_t* masks = nullptr;
    SlotState state = SlotState::kFree;
    int batch = -1;
    int n = 0;
  };

  void work();
  int assemble(int b, uint8_t* images, uint8_t* masks) const;
  void check_first_batch(int first_batch) const;  // 0 to num_batches(), else throws
  void rewind(int epoch, int first_batch);        // with mu_ held and no slot filling

  const Dataset& data_;
  BatchIterator it_;  // the epoch's order; fill() is used when not augmenting
  LoaderOptions opt_;
  std::vector<Slot> slots_;

  std::mutex mu_;
  std::condition_variable work_cv_;   // workers: a slot became free, or stop
  std::condition_variable ready_cv_;  // consumer: a batch is ready, or no slot is filling
  int claim_ = 0;                     // next batch a worker takes
  int cursor_ = 0;                    // next batch next() hands out
  int first_ = 0;                     // the batch the last rewind started at
  int filling_ = 0;                   // slots being filled
  uint64_t generation_ = 0;           // counts rewinds, so release() can skip batches of before
  bool stop_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> workers_;
};

// ---- augmentation ---------------------------------------------------------------------------

// The seed of the augmentation of position `position` of epoch `epoch`'s order.
uint64_t augment_seed(uint64_t seed, int epoch, int position);

// The transform for an image: one of the 8 symmetries of the square, uniformly (the same
// distribution as independent horizontal flip, vertical flip and quarter turns).
// transform = quarter_turns + 4 * mirrored, quarter_turns in 0..3.
int augment_transform(uint64_t seed, int epoch, int position);

// out = the size x size image `in` (channels interleaved) mirrored left-right when transform
// >= 4, then turned clockwise by (transform & 3) quarter turns.
void dihedral_copy(uint8_t* out, const uint8_t* in, int size, int channels, int transform);

// The way back, for one channel of floats: acc[p] += seen[q] for every pixel q of a
// `transform`ed image and the pixel p of the original it came from (dihedral_copy's map), so
// that a map predicted on a transformed image adds onto the original's pixels (test-time
// augmentation).
void dihedral_add_back(float* acc, const float* seen, int size, int transform);

}  // namespace unetcu::data
