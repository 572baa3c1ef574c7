// engine/rng.h: the project's own random generator (splitmix64 seeding + xoshiro256**) and a
// Fisher-Yates shuffle built on it, used for initialisation, splits, batch order and
// synthetic data.
//
// Why not <random>: std::shuffle and the std distributions are implementation-defined, so the
// same seed gives different splits and batch orders under libstdc++, libc++ and MSVC. Everything
// here is integer arithmetic with fixed-width types, so a seed means the same thing on every
// platform. Floating-point helpers (uniform()) are exact conversions of the integer stream.
#pragma once

#include <cstddef>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace unetcu {

// One step of splitmix64: a strong 64-bit mixer, used to expand a seed into generator state and
// to derive independent seeds for sub-streams (one per image, one per epoch).
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A seed for sub-stream `stream` of `seed` (e.g. image k of a synthetic set, or epoch e of a
// loader). Mixing both through splitmix64 keeps neighbouring streams uncorrelated.
inline uint64_t derive_seed(uint64_t seed, uint64_t stream) {
  uint64_t s = seed;
  uint64_t a = splitmix64(s);
  uint64_t t = stream ^ a;
  return splitmix64(t);
}

// xoshiro256** (Blackman and Vigna): fast, 256-bit state, passes the usual statistical tests.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    uint64_t s = seed;
    for (auto& word : state_) word = splitmix64(s);  // never all zero: splitmix64 is a bijection
  }

  uint64_t next_u64() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform integer in [0, n), n > 0, without modulo bias: draws below the largest multiple of
  // n are accepted (rejection happens with probability < n / 2^64).
  uint64_t below(uint64_t n) {
    const uint64_t reject_under = (0 - n) % n;  // 2^64 mod n
    for (;;) {
      const uint64_t x = next_u64();
      if (x >= reject_under) return x % n;
    }
  }

  // Uniform double in [0, 1) with 53 random bits (exact, so identical everywhere).
  double uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

  // True with probability p.
  bool chance(double p) { return uniform() < p; }

  // Standard normal by Box-Muller; both values of a pair are used, in order, so the stream is
  // a pure function of the seed.
  double normal() {
    if (has_spare_) { has_spare_ = false; return spare_; }
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;  // log(0)
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 2.0 * M_PI * u2;
    spare_ = r * std::sin(a);
    has_spare_ = true;
    return r * std::cos(a);
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
  bool has_spare_ = false;
  double spare_ = 0;
};

// Fisher-Yates (Durstenfeld) shuffle: every permutation equally likely, same result for the
// same generator state on every platform.
template <typename T>
void shuffle(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = size_t(rng.below(i));
    std::swap(v[i - 1], v[j]);
  }
}

}  // namespace unetcu
