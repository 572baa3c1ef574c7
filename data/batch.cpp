// data/batch.cpp: BatchIterator.
#include "data/batch.h"

#include <algorithm>
#include <cstring>

#include "engine/rng.h"
#include "engine/error.h"

namespace unetcu::data {

BatchIterator::BatchIterator(const Dataset& data, std::vector<int> indices, int batch_size,
                             uint64_t seed, bool shuffle, int epoch)
    : data_(&data),
      indices_(std::move(indices)),
      batch_size_(batch_size),
      seed_(seed),
      shuffle_(shuffle) {
  if (batch_size < 1) fail("batch size must be at least 1, got ", batch_size);
  for (int i : indices_)
    if (i < 0 || i >= data.n)
      fail("batch index ", i, " outside the dataset of ", data.n, " images");
  set_epoch(epoch);
}

void BatchIterator::set_epoch(int epoch) {
  epoch_ = epoch;
  cursor_ = 0;
  order_ = indices_;
  if (shuffle_) {
    Rng rng(derive_seed(seed_, uint64_t(epoch)));
    shuffle(order_, rng);
  }
}

int BatchIterator::num_batches() const {
  return int((order_.size() + size_t(batch_size_) - 1) / size_t(batch_size_));
}

int BatchIterator::batch_count(int b) const {
  if (b < 0 || b >= num_batches()) return 0;
  return std::min(batch_size_, int(order_.size()) - b * batch_size_);
}

int BatchIterator::fill(int b, uint8_t* images, uint8_t* masks) const {
  const int count = batch_count(b);
  const size_t image_bytes = data_->image_bytes(), mask_bytes = data_->mask_bytes();
  for (int k = 0; k < count; ++k) {
    const int i = order_[size_t(b) * batch_size_ + k];
    std::memcpy(images + k * image_bytes, data_->image(i), image_bytes);
    std::memcpy(masks + k * mask_bytes, data_->mask(i), mask_bytes);
  }
  return count;
}

int BatchIterator::next(uint8_t* images, uint8_t* masks) {
  if (cursor_ >= num_batches()) return 0;
  return fill(cursor_++, images, masks);
}

}  // namespace unetcu::data
