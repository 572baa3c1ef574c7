// data/loader.cpp: Loader (worker threads over a ring of slots) and the dihedral augmentation.
//
// Scheduling: workers take batches strictly in order (claim_), and batch b may only go into
// slot b % ring once batch b - ring has been released. The consumer takes batches in the same
// order, so whichever worker finishes first, next() hands out batch 0, 1, 2, ... and the bytes
// of each depend only on its index.
#include "data/loader.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "engine/error.h"
#include "engine/rng.h"

namespace unetcu::data {

namespace {

constexpr size_t kHostAlign = 4096;
constexpr uint64_t kAugmentStream = 0x6175676d656e74ull;  // "augment": apart from other streams

// Source pixel index (row * size + col) of output pixel (y, x) under `transform`.
int64_t source_pixel(int transform, int64_t y, int64_t x, int64_t size) {
  int64_t u = y, v = x;
  for (int k = 0; k < (transform & 3); ++k) {  // one clockwise turn: out(y, x) = in(S-1-x, y)
    const int64_t t = u;
    u = size - 1 - v;
    v = t;
  }
  if (transform & 4) v = size - 1 - v;
  return u * size + v;
}

constexpr int kTile = 16;  // pixels; tiles keep a transposing walk's source rows in cache

#if defined(__x86_64__)
// 16x16-pixel tiles in SSE registers, for the transforms that do not keep rows in order (see
// dihedral_copy_c). RGB pixels are widened to 32 bits so that a 4x4 block of pixels is a 4x4
// block of lanes; masks are transposed as 16x16 bytes.
#define UNETCU_SSSE3 __attribute__((target("ssse3")))

// 16 RGB pixels (48 bytes at src) as four vectors of four 32-bit pixels (R, G, B, 0). Every
// load stays inside the 48 bytes.
UNETCU_SSSE3 inline void widen_rgb(const uint8_t* src, __m128i q[4]) {
  const __m128i lo = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1);
  const __m128i hi = _mm_setr_epi8(4, 5, 6, -1, 7, 8, 9, -1, 10, 11, 12, -1, 13, 14, 15, -1);
  q[0] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)), lo);
  q[1] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 12)), lo);
  q[2] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 24)), lo);
  q[3] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32)), hi);
}

// The inverse of widen_rgb: four vectors of 32-bit pixels as 48 bytes at dst.
UNETCU_SSSE3 inline void narrow_rgb(const __m128i q[4], uint8_t* dst) {
  const __m128i pack = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
  const __m128i c0 = _mm_shuffle_epi8(q[0], pack), c1 = _mm_shuffle_epi8(q[1], pack);
  const __m128i c2 = _mm_shuffle_epi8(q[2], pack), c3 = _mm_shuffle_epi8(q[3], pack);
  auto* d = reinterpret_cast<__m128i*>(dst);
  _mm_storeu_si128(d, _mm_or_si128(c0, _mm_slli_si128(c1, 12)));
  _mm_storeu_si128(d + 1, _mm_or_si128(_mm_srli_si128(c1, 4), _mm_slli_si128(c2, 8)));
  _mm_storeu_si128(d + 2, _mm_or_si128(_mm_srli_si128(c2, 8), _mm_slli_si128(c3, 4)));
}

// Transposes 16 rows of 16 bytes in place: four rounds of interleaving row i with row i + 8
// each rotate the 8-bit (row, column) index by one bit, so four swap row and column.
UNETCU_SSSE3 inline void transpose16_u8(__m128i x[16]) {
  for (int round = 0; round < 4; ++round) {
    __m128i n[16];
    for (int i = 0; i < 8; ++i) {
      n[2 * i] = _mm_unpacklo_epi8(x[i], x[i + 8]);
      n[2 * i + 1] = _mm_unpackhi_epi8(x[i], x[i + 8]);
    }
    for (int i = 0; i < 16; ++i) x[i] = n[i];
  }
}

// Output tile rows ty..ty+15, columns tx..tx+15; output pixel (y, x) is source pixel
// origin + y * step_y + x * step_x, with step_x = -1 (rows read backwards) or +-size (columns
// read as rows, step_y = +-1).
template <int C>
UNETCU_SSSE3 void tile_ssse3(uint8_t* out, const uint8_t* in, int size, int64_t origin,
                             int64_t step_x, int64_t step_y, int ty, int tx) {
  auto src_at = [&](int64_t y, int64_t x) { return in + (origin + y * step_y + x * step_x) * C; };
  auto dst_at = [&](int y) { return out + (int64_t(y) * size + tx) * C; };
  if (step_x == -1) {
    const __m128i reverse_bytes =
        _mm_setr_epi8(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int j = 0; j < kTile; ++j) {
      const uint8_t* src = src_at(ty + j, tx + kTile - 1);  // the lowest address of the run
      if constexpr (C == 1) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst_at(ty + j)),
                         _mm_shuffle_epi8(v, reverse_bytes));
      } else {
        __m128i q[4], r[4];
        widen_rgb(src, q);
        for (int m = 0; m < 4; ++m) r[m] = _mm_shuffle_epi32(q[3 - m], 0x1B);
        narrow_rgb(r, dst_at(ty + j));
      }
    }
    return;
  }
  // Column tx + i of the tile reads source run i: 16 pixels at consecutive addresses, which
  // output rows ty..ty+15 visit forwards (step_y = 1) or backwards (step_y = -1).
  const int lowest = step_y > 0 ? 0 : kTile - 1;  // the output row reading a run's first pixel
  auto run_index = [&](int j) { return step_y > 0 ? j : kTile - 1 - j; };
  if constexpr (C == 1) {
    __m128i x[kTile];
    for (int i = 0; i < kTile; ++i)
      x[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src_at(ty + lowest, tx + i)));
    transpose16_u8(x);
    for (int j = 0; j < kTile; ++j)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst_at(ty + j)), x[run_index(j)]);
  } else {
    __m128i v[kTile][4], t[kTile][4];  // v[run][4 pixels], t[position in run][4 runs]
    for (int i = 0; i < kTile; ++i) widen_rgb(src_at(ty + lowest, tx + i), v[i]);
    for (int m = 0; m < 4; ++m)
      for (int g = 0; g < 4; ++g) {  // 4x4 block: runs 4m..4m+3, positions 4g..4g+3
        const __m128i a = v[4 * m][g], b = v[4 * m + 1][g], c = v[4 * m + 2][g],
                      d = v[4 * m + 3][g];
        const __m128i ab_lo = _mm_unpacklo_epi32(a, b), cd_lo = _mm_unpacklo_epi32(c, d);
        const __m128i ab_hi = _mm_unpackhi_epi32(a, b), cd_hi = _mm_unpackhi_epi32(c, d);
        t[4 * g][m] = _mm_unpacklo_epi64(ab_lo, cd_lo);
        t[4 * g + 1][m] = _mm_unpackhi_epi64(ab_lo, cd_lo);
        t[4 * g + 2][m] = _mm_unpacklo_epi64(ab_hi, cd_hi);
        t[4 * g + 3][m] = _mm_unpackhi_epi64(ab_hi, cd_hi);
      }
    for (int j = 0; j < kTile; ++j) narrow_rgb(t[run_index(j)], dst_at(ty + j));
  }
}

bool have_ssse3() {
  static const bool yes = __builtin_cpu_supports("ssse3");
  return yes;
}
#endif

template <int C>
void dihedral_copy_c(uint8_t* out, const uint8_t* in, int size, int transform) {
  // The map is affine in (y, x): output row y starts at source pixel origin + y * step_y and
  // advances by step_x per pixel.
  const int64_t origin = source_pixel(transform, 0, 0, size);
  const int64_t step_x = source_pixel(transform, 0, 1, size) - origin;
  const int64_t step_y = source_pixel(transform, 1, 0, size) - origin;
  const size_t row_bytes = size_t(size) * C;
  if (step_x == 1) {  // rows stay rows, in order: whole-row copies
    for (int y = 0; y < size; ++y)
      std::memcpy(out + y * row_bytes, in + (origin + y * step_y) * C, row_bytes);
    return;
  }
  // Otherwise a row is read backwards or down a column, tile by tile: whole tiles in SSE
  // registers where the CPU has SSSE3, the rest pixel by pixel.
  const int64_t step = step_x * C;
  for (int ty = 0; ty < size; ty += kTile)
    for (int tx = 0; tx < size; tx += kTile) {
      const int y_end = std::min(size, ty + kTile), x_end = std::min(size, tx + kTile);
#if defined(__x86_64__)
      if (y_end - ty == kTile && x_end - tx == kTile && have_ssse3()) {
        tile_ssse3<C>(out, in, size, origin, step_x, step_y, ty, tx);
        continue;
      }
#endif
      for (int y = ty; y < y_end; ++y) {
        const uint8_t* __restrict src = in + (origin + y * step_y + tx * step_x) * C;
        uint8_t* __restrict dst = out + y * row_bytes + size_t(tx) * C;
        for (int x = tx; x < x_end; ++x, src += step, dst += C) std::memcpy(dst, src, C);
      }
    }
}

}  // namespace

HostAllocator aligned_host_allocator() {
  return {[](size_t bytes) -> void* {
            void* p =
                std::aligned_alloc(kHostAlign, (bytes + kHostAlign - 1) / kHostAlign * kHostAlign);
            if (!p) fail("out of host memory allocating ", bytes, " bytes for the batch loader");
            return p;
          },
          [](void* p) { std::free(p); }};
}

uint64_t augment_seed(uint64_t seed, int epoch, int position) {
  return derive_seed(derive_seed(derive_seed(seed, kAugmentStream), uint64_t(epoch)),
                     uint64_t(position));
}

int augment_transform(uint64_t seed, int epoch, int position) {
  Rng rng(augment_seed(seed, epoch, position));
  return int(rng.below(8));
}

void dihedral_copy(uint8_t* out, const uint8_t* in, int size, int channels, int transform) {
  switch (channels) {
    case 1:
      return dihedral_copy_c<1>(out, in, size, transform);
    case 3:
      return dihedral_copy_c<3>(out, in, size, transform);
    default:
      fail("dihedral_copy: ", channels, " channels (1 or 3 supported)");
  }
}

void dihedral_add_back(float* acc, const float* seen, int size, int transform) {
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x)
      acc[source_pixel(transform, y, x, size)] += seen[int64_t(y) * size + x];
}

Loader::Loader(const Dataset& data, std::vector<int> indices, const LoaderOptions& opt)
    : data_(data),
      it_(data, std::move(indices), opt.batch_size, opt.seed, opt.shuffle, opt.epoch),
      opt_(opt) {
  check_first_batch(opt.first_batch);
  claim_ = cursor_ = first_ = opt.first_batch;
  if (opt.workers < 1) fail("the batch loader needs at least 1 worker, got ", opt.workers);
  if (opt.ring < 1) fail("the batch loader needs at least 1 buffer, got ", opt.ring);
  if (!opt_.allocator.alloc || !opt_.allocator.free) opt_.allocator = aligned_host_allocator();
  const size_t image_block = size_t(opt.batch_size) * data.image_bytes();
  const size_t slot_bytes = image_block + size_t(opt.batch_size) * data.mask_bytes();
  slots_.resize(size_t(opt.ring));
  try {
    for (Slot& s : slots_) {
      s.images = static_cast<uint8_t*>(opt_.allocator.alloc(slot_bytes));
      s.masks = s.images + image_block;
    }
  } catch (...) {
    for (Slot& s : slots_)
      if (s.images) opt_.allocator.free(s.images);
    throw;
  }
  for (int w = 0; w < opt.workers; ++w) workers_.emplace_back([this] { work(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
  for (Slot& s : slots_) opt_.allocator.free(s.images);
}

void Loader::work() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    work_cv_.wait(lk, [this] {
      return stop_ || (claim_ < it_.num_batches() &&
                       slots_[size_t(claim_ % opt_.ring)].state == SlotState::kFree);
    });
    if (stop_) return;
    const int b = claim_++;
    Slot& s = slots_[size_t(b % opt_.ring)];
    s.state = SlotState::kFilling;
    s.batch = b;
    ++filling_;
    lk.unlock();
    std::exception_ptr failure;
    int n = 0;
    try {
      n = assemble(b, s.images, s.masks);
    } catch (...) {
      failure = std::current_exception();
    }
    lk.lock();
    s.n = n;
    s.state = SlotState::kReady;
    --filling_;
    if (failure && !error_) error_ = failure;
    ready_cv_.notify_all();
  }
}

int Loader::assemble(int b, uint8_t* images, uint8_t* masks) const {
  if (!opt_.augment) return it_.fill(b, images, masks);
  const int count = it_.batch_count(b);
  const size_t image_bytes = data_.image_bytes(), mask_bytes = data_.mask_bytes();
  // A turned image is read down its columns, which from main memory costs a cache miss per
  // row of a tile; a sequential copy first (which the prefetchers stream) makes the transform
  // read from cache instead, several times faster for a data set larger than the caches.
  thread_local std::vector<uint8_t> staged;
  staged.resize(image_bytes + mask_bytes);
  for (int k = 0; k < count; ++k) {
    const int position = b * it_.batch_size() + k;
    const int i = it_.order()[size_t(position)];
    const int t = augment_transform(opt_.seed, it_.epoch(), position);
    std::memcpy(staged.data(), data_.image(i), image_bytes);
    std::memcpy(staged.data() + image_bytes, data_.mask(i), mask_bytes);
    dihedral_copy(images + k * image_bytes, staged.data(), data_.size, 3, t);
    dihedral_copy(masks + k * mask_bytes, staged.data() + image_bytes, data_.size, 1, t);
  }
  return count;
}

void Loader::check_first_batch(int first_batch) const {
  if (first_batch < 0 || first_batch > it_.num_batches())
    fail("the batch loader cannot start at batch ", first_batch, ": the epoch has ",
         it_.num_batches(), " batches");
}

void Loader::rewind(int epoch, int first_batch) {
  it_.set_epoch(epoch);
  for (Slot& s : slots_) {
    s.state = SlotState::kFree;
    s.batch = -1;
  }
  claim_ = cursor_ = first_ = first_batch;
  ++generation_;
}

void Loader::start_epoch(int epoch, int first_batch) {
  {
    std::unique_lock<std::mutex> lk(mu_);
    check_first_batch(first_batch);  // every epoch has the same number of batches
    // Already preparing exactly this, nothing handed out since.
    if (epoch == it_.epoch() && first_batch == first_ && cursor_ == first_) return;
    claim_ = it_.num_batches();                            // no new claims ...
    ready_cv_.wait(lk, [this] { return filling_ == 0; });  // ... and none in flight
    rewind(epoch, first_batch);
  }
  work_cv_.notify_all();
}

LoaderBatch Loader::next() {
  std::unique_lock<std::mutex> lk(mu_);
  if (error_) std::rethrow_exception(error_);
  if (cursor_ >= it_.num_batches()) return {};
  Slot& s = slots_[size_t(cursor_ % opt_.ring)];
  const int b = cursor_;
  if (s.state == SlotState::kHeld)
    fail("the batch loader cannot prepare batch ", b, ": its buffer still holds batch ", s.batch,
         " (", opt_.ring, " buffers); release that first");
  ready_cv_.wait(lk, [&] { return error_ || (s.batch == b && s.state == SlotState::kReady); });
  if (error_) std::rethrow_exception(error_);
  s.state = SlotState::kHeld;
  ++cursor_;
  return {s.images, s.masks, s.n, b, generation_};
}

void Loader::release(const LoaderBatch& batch) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (batch.index < 0 || batch.generation != generation_) return;
    Slot& s = slots_[size_t(batch.index % opt_.ring)];
    if (s.state != SlotState::kHeld || s.batch != batch.index)
      fail("the batch loader was given back batch ", batch.index, ", which it did not hand out");
    s.state = SlotState::kFree;
  }
  work_cv_.notify_all();
}

}  // namespace unetcu::data
