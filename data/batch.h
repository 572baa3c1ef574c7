// data/batch.h: BatchIterator, which cuts an index list of a Dataset into batches and copies
// each batch into caller-provided buffers (so the caller can pass pinned host memory).
//
// The order of an epoch depends only on (seed, epoch) (and the index list): the list is
// shuffled with a generator seeded from derive_seed(seed, epoch), or kept as given when
// shuffle is off. The last batch may be smaller (no drop_last), so every index is visited
// exactly once per epoch. fill() is const and touches only the batch it is asked for, so
// worker threads may assemble different batches of the same epoch at the same time.
#pragma once

#include <cstdint>
#include <vector>

#include "data/dataset.h"

namespace unetcu::data {

class BatchIterator {
 public:
  // `data` must outlive the iterator. Throws unetcu::Error for batch_size < 1 or an index
  // outside [0, data.n).
  BatchIterator(const Dataset& data, std::vector<int> indices, int batch_size, uint64_t seed,
                bool shuffle, int epoch = 0);

  // Starts epoch `epoch`: recomputes the order and rewinds to the first batch.
  void set_epoch(int epoch);
  int epoch() const { return epoch_; }

  int batch_size() const { return batch_size_; }
  int num_batches() const;
  // Number of images in batch b (batch_size, or fewer for the last batch).
  int batch_count(int b) const;
  // Dataset indices of this epoch, in visiting order; batch b is order()[b * batch_size ...].
  const std::vector<int>& order() const { return order_; }

  // Copies batch b of the current epoch: images as count x size x size x 3 uint8 (NHWC) and
  // masks as count x size x size 0/1 bytes, contiguous from the start of each buffer. The
  // buffers must hold batch_size() images/masks. Returns the number of images in the batch.
  int fill(int b, uint8_t* images, uint8_t* masks) const;

  // Sequential use: copies the next batch and returns its size, or 0 when the epoch is done.
  int next(uint8_t* images, uint8_t* masks);

 private:
  const Dataset* data_;
  std::vector<int> indices_;  // as given
  std::vector<int> order_;    // this epoch's order
  int batch_size_;
  uint64_t seed_;
  bool shuffle_;
  int epoch_ = 0;
  int cursor_ = 0;  // next batch for next()
};

}  // namespace unetcu::data
