// engine/rng.h: the project's own random generator, so that initialisation, splits, shuffles
// and synthetic data are bit-identical on every machine and standard library (std::
// distributions are implementation-defined). splitmix64 seeds xoshiro256**.
#pragma once

#include <cmath>
#include <cstdint>

namespace unetcu {

inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  // Independent streams from one seed: Rng(seed, stream) for image i, parameter tensor k, ...
  Rng(uint64_t seed, uint64_t stream) { reseed(seed ^ (0xD1B54A32D192ED03ull * (stream + 1))); }

  void reseed(uint64_t seed) {
    uint64_t sm = seed;
    for (auto& w : s_) w = splitmix64(sm);
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0]; s_[3] ^= s_[1]; s_[1] ^= s_[2]; s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n) without modulo bias (Lemire's method).
  uint64_t below(uint64_t n) {
    unsigned __int128 m = (unsigned __int128)next() * n;
    uint64_t low = uint64_t(m);
    if (low < n) {
      uint64_t threshold = (0 - n) % n;
      while (low < threshold) { m = (unsigned __int128)next() * n; low = uint64_t(m); }
    }
    return uint64_t(m >> 64);
  }
  // Standard normal by Box-Muller (both values used, so the stream stays deterministic).
  double normal() {
    if (has_spare_) { has_spare_ = false; return spare_; }
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    double r = std::sqrt(-2.0 * std::log(u1)), a = 2.0 * M_PI * u2;
    spare_ = r * std::sin(a);
    has_spare_ = true;
    return r * std::cos(a);
  }
  // Whole state, so a training run can be checkpointed and resumed exactly.
  void get_state(uint64_t out[4]) const { for (int i = 0; i < 4; ++i) out[i] = s_[i]; }
  void set_state(const uint64_t in[4]) { for (int i = 0; i < 4; ++i) s_[i] = in[i]; has_spare_ = false; }

  template <typename T>
  void shuffle(T* first, int64_t n) {  // Fisher-Yates
    for (int64_t i = n - 1; i > 0; --i) {
      int64_t j = int64_t(below(uint64_t(i) + 1));
      T tmp = first[i]; first[i] = first[j]; first[j] = tmp;
    }
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0;
};

}  // namespace unetcu
