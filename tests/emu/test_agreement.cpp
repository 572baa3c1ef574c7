// tests/emu/test_agreement.cpp: how a candidate way of making a convolution or GEMM call (a
// cuDNN plan, a rival kernel, a cuBLASLt algorithm) is checked against the reference way
// before it may serve (kernels/cudnn/agreement.h, check_candidate). The calls here are host
// stand-ins that write a chosen result through the device memory the check hands them, so the
// cases can say exactly what a candidate does wrong. The values are a data gradient's scale
// (rms 2e-6), where the accumulating check once passed anything.
#include <cmath>
#include <random>
#include <vector>

#include "kernel_test.h"
#include "kernels/cudnn/agreement.h"

namespace unetcu::test {
namespace {

constexpr size_t kCount = 4096;

std::vector<float> gradient_like(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2e-6f);
  std::vector<float> v(kCount);
  for (float& x : v) x = normal(rng);
  return v;
}

// `result` with each element's last bits changed, as another algorithm's rounding would.
std::vector<float> rounded_otherwise(const std::vector<float>& result) {
  std::vector<float> v(result);
  for (size_t i = 0; i < v.size(); ++i) v[i] *= i % 2 ? 1.0f + 1e-3f : 1.0f - 1e-3f;
  return v;
}

// A stand-in call: dst = result + beta * dst on `stream`'s device memory, the elements from
// `skip` on left as they were; overwrites (beta ignored) when `adds` is false.
struct Call {
  cudaStream_t stream = nullptr;
  std::vector<float> result;
  bool adds = true;
  size_t skip = kCount;
  bool issued = true;  // false: the call fails (writes nothing)
  int calls = 0;
  bool run(float beta, void* dst) {
    ++calls;
    if (!issued) return false;
    UNETCU_CUDA_CHECK(cudaStreamSynchronize(stream));  // the check's own writes come first
    std::vector<float> host(kCount);
    UNETCU_CUDA_CHECK(cudaMemcpy(host.data(), dst, kCount * sizeof(float),
                                 cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < skip; ++i) host[i] = result[i] + (adds ? beta * host[i] : 0.0f);
    UNETCU_CUDA_CHECK(cudaMemcpy(dst, host.data(), kCount * sizeof(float),
                                 cudaMemcpyHostToDevice));
    return true;
  }
};

struct Check {
  cudaStream_t stream = nullptr;
  DeviceBuffer<float> out{kCount}, ref{kCount};
  Check() { UNETCU_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)); }
  ~Check() {
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
  }
  Call call(const std::vector<float>& result) {
    Call c;
    c.stream = stream;
    c.result = result;
    return c;
  }
  cudnn::Checked run(float beta, Call& reference, Call& candidate) {
    return cudnn::check_candidate(
        beta, out.get(), ref.get(), kCount * sizeof(float), stream,
        [&](float b, void* dst) { return reference.run(b, dst); },
        [&](void* dst) { return candidate.run(beta, dst); });
  }
};

TEST_CASE("a candidate agrees when it writes or adds the result, rounded otherwise or not") {
  Check check;
  const std::vector<float> result = gradient_like(1);
  for (float beta : {0.0f, 1.0f}) {
    CAPTURE(beta);
    Call reference = check.call(result);
    for (const std::vector<float>& got : {result, rounded_otherwise(result)}) {
      Call candidate = check.call(got);
      const cudnn::Checked c = check.run(beta, reference, candidate);
      CHECK(c.ran);
      CHECK(c.agreement.agree);
    }
    // Accumulating, the reference runs overwriting first (the start), then accumulating.
    CHECK(reference.calls == (beta == 0.0f ? 2 : 4));
  }
}

// Whether `candidate` ran, was checked, and disagreed.
bool disagrees(Check& check, float beta, Call& reference, Call& candidate) {
  const cudnn::Checked c = check.run(beta, reference, candidate);
  return c.ran && !c.agreement.agree;
}

TEST_CASE("an overwriting candidate that leaves elements unwritten disagrees") {
  Check check;
  const std::vector<float> result = gradient_like(2);
  Call reference = check.call(result), candidate = check.call(result);
  candidate.skip = kCount - 1;  // the last element keeps the check's starting values
  CHECK(disagrees(check, 0.0f, reference, candidate));
}

TEST_CASE("an accumulating candidate that overwrites, or adds another result, disagrees") {
  // What the check must see at a data gradient's scale: the ninth H100 run's forward-form data
  // gradients (bench/RESULTS.md) were off by 8x the result's rms and served accumulating.
  Check check;
  const std::vector<float> result = gradient_like(4);
  Call reference = check.call(result);
  Call overwrites = check.call(result), another = check.call(gradient_like(5)),
       half = check.call(result);
  overwrites.adds = false;
  half.skip = kCount / 2;  // the rest left as they were
  CHECK(disagrees(check, 1.0f, reference, overwrites));
  CHECK(disagrees(check, 1.0f, reference, another));
  CHECK(disagrees(check, 1.0f, reference, half));
}

TEST_CASE("a call that fails leaves the candidate unchecked and not agreeing") {
  Check check;
  const std::vector<float> result = gradient_like(6);
  for (float beta : {0.0f, 1.0f})
    for (bool reference_fails : {false, true}) {
      CAPTURE(beta);
      CAPTURE(reference_fails);
      Call reference = check.call(result), candidate = check.call(result);
      (reference_fails ? reference : candidate).issued = false;
      const cudnn::Checked c = check.run(beta, reference, candidate);
      CHECK_FALSE(c.ran);
      CHECK_FALSE(c.agreement.agree);
    }
}

}  // namespace
}  // namespace unetcu::test
