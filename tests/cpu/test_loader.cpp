// tests/cpu/test_loader.cpp: the prefetching loader: batches independent of worker count and
// ring size, BatchIterator's bytes without augmentation, augmentation identical for image and
// mask with all 8 symmetries, seeded per epoch, clean shutdown mid-epoch, held-slot misuse
// reported rather than deadlocking, the host allocator used for every buffer, and an epoch
// started part way through (a resumed run).
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "data/batch.h"
#include "data/loader.h"
#include "engine/error.h"
#include "engine/rng.h"

using namespace unetcu;
using namespace unetcu::data;

namespace {

constexpr int kSize = 16;

// n images whose pixels say where they come from: R = row, G = column, B = image index; the
// mask byte is row * 16 + column (not 0/1: the loader moves bytes, it does not read them).
Dataset coordinate_dataset(int n) {
  Dataset ds;
  ds.n = n;
  ds.size = kSize;
  ds.allocate();
  for (int i = 0; i < n; ++i)
    for (int y = 0; y < kSize; ++y)
      for (int x = 0; x < kSize; ++x) {
        uint8_t* px = ds.writable_image(i) + (y * kSize + x) * 3;
        px[0] = uint8_t(y);
        px[1] = uint8_t(x);
        px[2] = uint8_t(i);
        ds.writable_mask(i)[y * kSize + x] = uint8_t(y * kSize + x);
      }
  return ds;
}

std::vector<int> all_indices(int n) {
  std::vector<int> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[size_t(i)] = i;
  return v;
}

// Every byte of every batch of the given epochs, in order, with the batch sizes.
std::vector<uint8_t> run(const Dataset& ds, const std::vector<int>& indices, LoaderOptions opt,
                         const std::vector<int>& epochs) {
  Loader loader(ds, indices, opt);
  std::vector<uint8_t> out;
  for (int e : epochs) {
    loader.start_epoch(e);
    int expected_index = 0;
    while (LoaderBatch b = loader.next()) {
      CHECK(b.index == expected_index++);
      out.push_back(uint8_t(b.n));
      out.insert(out.end(), b.images, b.images + size_t(b.n) * ds.image_bytes());
      out.insert(out.end(), b.masks, b.masks + size_t(b.n) * ds.mask_bytes());
      loader.release(b);
    }
    CHECK(expected_index == loader.num_batches());
  }
  return out;
}

// The 8 symmetries of the square written out as source coordinates, independently of
// dihedral_copy: the source row is y, S-1-y, x or S-1-x, and the source column is the other
// axis, either way round.
struct Symmetry {
  int row_axis_is_x, row_flip, col_flip;
};
std::vector<Symmetry> symmetries() {
  std::vector<Symmetry> s;
  for (int a = 0; a < 2; ++a)
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < 2; ++c) s.push_back({a, r, c});
  return s;
}
void source_of(const Symmetry& s, int y, int x, int& sy, int& sx) {
  sy = s.row_axis_is_x ? x : y;
  sx = s.row_axis_is_x ? y : x;
  if (s.row_flip) sy = kSize - 1 - sy;
  if (s.col_flip) sx = kSize - 1 - sx;
}

// Which symmetry maps the coordinate image to `image` (-1 if none), checking the mask agrees.
int symmetry_of(const uint8_t* image, const uint8_t* mask, int expected_index) {
  const auto all = symmetries();
  int found = -1;
  for (size_t k = 0; k < all.size(); ++k) {
    bool image_ok = true, mask_ok = true;
    for (int y = 0; y < kSize; ++y)
      for (int x = 0; x < kSize; ++x) {
        int sy, sx;
        source_of(all[k], y, x, sy, sx);
        const uint8_t* px = image + (y * kSize + x) * 3;
        image_ok &= px[0] == sy && px[1] == sx && px[2] == expected_index;
        mask_ok &= mask[y * kSize + x] == sy * kSize + sx;
      }
    if (image_ok) {
      CHECK(found == -1);
      CHECK(mask_ok);  // the mask moved exactly as its image did
      found = int(k);
    }
  }
  return found;
}

}  // namespace

TEST_CASE("dihedral_copy: mirror, then clockwise quarter turns") {
  const std::vector<uint8_t> in = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<std::vector<uint8_t>> expected = {
      {1, 2, 3, 4, 5, 6, 7, 8, 9},  // 0: as is
      {7, 4, 1, 8, 5, 2, 9, 6, 3},  // 1: one clockwise turn
      {9, 8, 7, 6, 5, 4, 3, 2, 1},  // 2: half turn
      {3, 6, 9, 2, 5, 8, 1, 4, 7},  // 3: three clockwise turns (one anticlockwise)
      {3, 2, 1, 6, 5, 4, 9, 8, 7},  // 4: mirrored left-right
      {9, 6, 3, 8, 5, 2, 7, 4, 1},  // 5: mirrored, then one clockwise turn
      {7, 8, 9, 4, 5, 6, 1, 2, 3},  // 6: mirrored, then half turn (= upside down)
      {1, 4, 7, 2, 5, 8, 3, 6, 9},  // 7: mirrored, then three turns (= transposed)
  };
  for (int t = 0; t < 8; ++t) {
    CAPTURE(t);
    std::vector<uint8_t> out(9, 0);
    dihedral_copy(out.data(), in.data(), 3, 1, t);
    CHECK(out == expected[size_t(t)]);
  }
  // Three channels move together.
  const std::vector<uint8_t> rgb = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // 2x2
  std::vector<uint8_t> out(12, 0);
  dihedral_copy(out.data(), rgb.data(), 2, 3, 1);
  CHECK(out == std::vector<uint8_t>{7, 8, 9, 1, 2, 3, 10, 11, 12, 4, 5, 6});
}

// The transform by its definition, one step at a time: mirror left-right when t >= 4, then
// (t & 3) clockwise quarter turns, each out(y, x) = in(S-1-x, y).
std::vector<uint8_t> reference_dihedral(std::vector<uint8_t> img, int S, int C, int t) {
  std::vector<uint8_t> tmp(img.size());
  auto at = [&](int y, int x, int c) { return (size_t(y) * S + x) * C + c; };
  if (t & 4) {
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x)
        for (int c = 0; c < C; ++c) tmp[at(y, x, c)] = img[at(y, S - 1 - x, c)];
    img.swap(tmp);
  }
  for (int k = 0; k < (t & 3); ++k) {
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x)
        for (int c = 0; c < C; ++c) tmp[at(y, x, c)] = img[at(S - 1 - x, y, c)];
    img.swap(tmp);
  }
  return img;
}

TEST_CASE("dihedral_copy: whole tiles, partial tiles and small images match the definition") {
  Rng rng(21);
  for (int size : {7, 16, 32, 40, 128})
    for (int channels : {1, 3}) {
      std::vector<uint8_t> in(size_t(size) * size * channels);
      for (auto& v : in) v = uint8_t(rng.next_u64());
      for (int t = 0; t < 8; ++t) {
        CAPTURE(size);
        CAPTURE(channels);
        CAPTURE(t);
        // Guard bytes after the output catch writes past its end.
        std::vector<uint8_t> out(in.size() + 64, 0xA5);
        dihedral_copy(out.data(), in.data(), size, channels, t);
        CHECK(std::vector<uint8_t>(out.begin(), out.begin() + in.size()) ==
              reference_dihedral(in, size, channels, t));
        CHECK(std::all_of(out.begin() + in.size(), out.end(), [](uint8_t v) { return v == 0xA5; }));
      }
    }
}

TEST_CASE("Loader: batches do not depend on the worker count or the ring size") {
  const Dataset ds = coordinate_dataset(37);
  const std::vector<int> indices = all_indices(37);
  for (bool augment : {false, true}) {
    CAPTURE(augment);
    LoaderOptions opt;
    opt.batch_size = 5;  // 8 batches, the last of 2
    opt.seed = 99;
    opt.augment = augment;
    opt.workers = 1;
    opt.ring = 2;
    const std::vector<uint8_t> reference = run(ds, indices, opt, {0, 1, 2});
    for (int workers : {2, 4})
      for (int ring : {1, 3, 8}) {
        CAPTURE(workers);
        CAPTURE(ring);
        opt.workers = workers;
        opt.ring = ring;
        CHECK(run(ds, indices, opt, {0, 1, 2}) == reference);
      }
  }
}

TEST_CASE("Loader: without augmentation, exactly BatchIterator's bytes; epochs reorder") {
  const Dataset ds = coordinate_dataset(23);
  const std::vector<int> indices = {3, 1, 4, 15, 9, 2, 6, 5, 22, 20, 8, 7, 11, 0};
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.seed = 5;
  opt.workers = 2;
  opt.ring = 3;
  Loader loader(ds, indices, opt);
  BatchIterator it(ds, indices, 4, 5, true);
  std::vector<uint8_t> images(4 * ds.image_bytes()), masks(4 * ds.mask_bytes());
  std::vector<std::vector<int>> orders;
  for (int e : {0, 1, 0}) {
    loader.start_epoch(e);
    it.set_epoch(e);
    CHECK(loader.num_batches() == it.num_batches());
    std::vector<int> order;
    for (int b = 0; b < it.num_batches(); ++b) {
      const LoaderBatch got = loader.next();
      const int n = it.fill(b, images.data(), masks.data());
      REQUIRE(got.n == n);
      CHECK(std::equal(got.images, got.images + n * ds.image_bytes(), images.data()));
      CHECK(std::equal(got.masks, got.masks + n * ds.mask_bytes(), masks.data()));
      for (int k = 0; k < n; ++k) order.push_back(got.images[k * ds.image_bytes() + 2]);
      loader.release(got);
    }
    CHECK(!loader.next());
    orders.push_back(order);
  }
  CHECK(orders[0] != orders[1]);  // another epoch, another order
  CHECK(orders[0] == orders[2]);  // and back again

  opt.shuffle = false;
  Loader in_order(ds, indices, opt);
  std::vector<int> seen;
  while (LoaderBatch b = in_order.next()) {
    for (int k = 0; k < b.n; ++k) seen.push_back(b.images[k * ds.image_bytes() + 2]);
    in_order.release(b);
  }
  CHECK(seen == indices);
}

TEST_CASE("Loader: augmentation moves image and mask together, all 8 symmetries, seeded") {
  const Dataset ds = coordinate_dataset(40);
  LoaderOptions opt;
  opt.batch_size = 8;
  opt.seed = 3;
  opt.augment = true;
  opt.workers = 2;
  Loader loader(ds, all_indices(40), opt);
  BatchIterator it(ds, all_indices(40), 8, 3, true);
  std::vector<int> counts(8, 0);
  std::vector<std::vector<int>> per_epoch;
  for (int e : {0, 1, 2}) {
    loader.start_epoch(e);
    it.set_epoch(e);
    std::vector<int> found;
    while (LoaderBatch b = loader.next()) {
      for (int k = 0; k < b.n; ++k) {
        const int position = b.index * 8 + k;
        const int s = symmetry_of(b.images + k * ds.image_bytes(), b.masks + k * ds.mask_bytes(),
                                  it.order()[size_t(position)]);
        REQUIRE(s >= 0);
        ++counts[size_t(s)];
        found.push_back(s);
      }
      loader.release(b);
    }
    per_epoch.push_back(found);
  }
  for (int s = 0; s < 8; ++s) CHECK(counts[size_t(s)] > 0);
  CHECK(per_epoch[0] != per_epoch[1]);  // drawn afresh each epoch
  // The identity appears about 1/8 of the time: not every image is transformed, not none.
  CHECK(counts[0] < 40);
}

TEST_CASE("Loader: stops cleanly mid-epoch; a held slot is an error, not a deadlock") {
  const Dataset ds = coordinate_dataset(50);
  LoaderOptions opt;
  opt.batch_size = 2;
  opt.workers = 4;
  opt.ring = 2;
  {
    Loader loader(ds, all_indices(50), opt);
    const LoaderBatch held = loader.next();  // never released: workers wait on its slot
    CHECK(held.n == 2);
  }  // the destructor must not hang
  {
    Loader untouched(ds, all_indices(50), opt);
  }
  Loader loader(ds, all_indices(50), opt);
  const LoaderBatch b0 = loader.next(), b1 = loader.next();
  CHECK(b1.index == 1);
  const std::string e = [&] {
    try {
      loader.next();
    } catch (const Error& err) {
      return std::string(err.what());
    }
    return std::string();
  }();
  CHECK(e.find("release") != std::string::npos);
  loader.release(b0);
  const LoaderBatch b2 = loader.next();
  CHECK(b2.index == 2);
  CHECK_THROWS_AS(loader.release(b0), Error);  // given back twice
  // A new epoch voids what is held; releasing those later is harmless.
  loader.start_epoch(1);
  loader.release(b1);
  loader.release(b2);
  CHECK(loader.next().index == 0);
}

TEST_CASE("Loader: every buffer comes from the given allocator and goes back to it") {
  const Dataset ds = coordinate_dataset(9);
  std::set<void*> live;
  int allocations = 0;
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.ring = 3;
  const HostAllocator base = aligned_host_allocator();
  opt.allocator.alloc = [&](size_t bytes) {
    CHECK(bytes >= 4 * (ds.image_bytes() + ds.mask_bytes()));
    void* p = base.alloc(bytes);
    live.insert(p);
    ++allocations;
    return p;
  };
  opt.allocator.free = [&](void* p) {
    CHECK(live.erase(p) == 1);
    base.free(p);
  };
  {
    Loader loader(ds, all_indices(9), opt);
    CHECK(allocations == 3);
    const LoaderBatch b = loader.next();
    CHECK(live.count(const_cast<uint8_t*>(b.images)) == 1);
    loader.release(b);
  }
  CHECK(live.empty());
  CHECK_THROWS_AS(Loader(ds, {0, 9}, opt), Error);  // index outside the data
  opt.workers = 0;
  CHECK_THROWS_AS(Loader(ds, {0}, opt), Error);
}

TEST_CASE("Loader: an epoch started at batch k gives the batches k.. of the whole epoch") {
  // What an interrupted training run relies on when it resumes in the middle of an epoch.
  const Dataset ds = coordinate_dataset(23);  // 6 batches of 4, the last of 3
  for (const bool augment : {false, true}) {
    for (const int workers : {1, 3}) {
      INFO("augment " << augment << ", workers " << workers);
      LoaderOptions opt;
      opt.batch_size = 4;
      opt.seed = 7;
      opt.augment = augment;
      opt.workers = workers;
      opt.ring = 3;
      auto batches = [&](Loader& loader) {
        std::vector<std::vector<uint8_t>> out;
        while (LoaderBatch b = loader.next()) {
          std::vector<uint8_t> bytes(b.images, b.images + size_t(b.n) * ds.image_bytes());
          bytes.insert(bytes.end(), b.masks, b.masks + size_t(b.n) * ds.mask_bytes());
          bytes.push_back(uint8_t(b.index));
          out.push_back(std::move(bytes));
          loader.release(b);
        }
        return out;
      };
      opt.epoch = 2;
      Loader whole(ds, all_indices(23), opt);
      const std::vector<std::vector<uint8_t>> all = batches(whole);
      REQUIRE(all.size() == 6);
      for (const int k : {1, 4, 6}) {
        const std::vector<std::vector<uint8_t>> tail(all.begin() + k, all.end());
        opt.first_batch = k;  // from the start
        Loader started(ds, all_indices(23), opt);
        CHECK(batches(started) == tail);
        opt.first_batch = 0;  // and by start_epoch, from another epoch and position
        Loader moved(ds, all_indices(23), opt);
        moved.start_epoch(0, 5);
        CHECK(moved.next().index == 5);
        moved.start_epoch(2, k);
        CHECK(batches(moved) == tail);
      }
    }
  }
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.first_batch = 7;
  CHECK_THROWS_WITH_AS(Loader(ds, all_indices(23), opt), doctest::Contains("batch 7"), Error);
  opt.first_batch = 0;
  Loader loader(ds, all_indices(23), opt);
  CHECK_THROWS_WITH_AS(loader.start_epoch(1, -1), doctest::Contains("6 batches"), Error);
}
