// tests/test_util.h: helpers shared by the tests: seeded random fills, a comparison that
// reports the worst elements when it fails, and the message of a unetcu::Error.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/error.h"

namespace unetcu::test {

// The message of the unetcu::Error that f throws ("" when it throws nothing; any other
// exception escapes and fails the test).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const unetcu::Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

template <typename T>
std::vector<T> random_vector(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = T(dist(gen));
  return v;
}

inline std::vector<uint8_t> random_binary(size_t n, uint64_t seed, double p_one = 0.5) {
  std::mt19937_64 gen(seed);
  std::bernoulli_distribution dist(p_one);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = dist(gen) ? 1 : 0;
  return v;
}

// Mixed tolerance: |got - want| <= atol + rtol * |want|. On failure the message lists the
// worst elements (index, got, want) so a broken kernel shows where it breaks.
struct CompareResult {
  bool ok = true;
  double max_abs = 0;
  std::string report;
};

template <typename A, typename B>
CompareResult compare(const A* got, const B* want, size_t n, double atol, double rtol,
                      const std::string& what = "") {
  struct Bad { size_t i; double got, want, excess; };
  std::vector<Bad> bad;
  CompareResult r;
  for (size_t i = 0; i < n; ++i) {
    double g = double(got[i]), w = double(want[i]);
    double err = std::fabs(g - w);
    if (!(err <= atol + rtol * std::fabs(w))) bad.push_back({i, g, w, err - atol - rtol * std::fabs(w)});
    if (err > r.max_abs || std::isnan(err)) r.max_abs = std::isnan(err) ? INFINITY : err;
  }
  if (!bad.empty()) {
    r.ok = false;
    std::partial_sort(bad.begin(), bad.begin() + std::min<size_t>(8, bad.size()), bad.end(),
                      [](const Bad& a, const Bad& b) { return a.excess > b.excess || std::isnan(a.excess); });
    std::ostringstream os;
    os << what << ": " << bad.size() << " of " << n << " elements out of tolerance (atol " << atol
       << ", rtol " << rtol << "), max |err| " << r.max_abs << "; worst:";
    for (size_t k = 0; k < std::min<size_t>(8, bad.size()); ++k)
      os << "\n  [" << bad[k].i << "] got " << bad[k].got << " want " << bad[k].want;
    r.report = os.str();
  }
  return r;
}

template <typename A, typename B>
void check_close(const std::vector<A>& got, const std::vector<B>& want, double atol, double rtol,
                 const std::string& what = "") {
  REQUIRE_MESSAGE(got.size() == want.size(), what << ": size " << got.size() << " vs " << want.size());
  auto r = compare(got.data(), want.data(), got.size(), atol, rtol, what);
  CHECK_MESSAGE(r.ok, r.report);
}

}  // namespace unetcu::test
