// engine/device.cpp: see device.h. The CUDA backend is linked in only by CUDA builds, which
// define UNETCU_WITH_CUDA_BACKEND and provide make_cuda_backend / cuda_device_count.
#include "engine/device.h"

#include "engine/cpu_backend.h"
#include "engine/error.h"

namespace unetcu {

#ifdef UNETCU_WITH_CUDA_BACKEND
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opt);
int cuda_device_count();
#endif

bool cuda_available(std::string* why_not) {
#ifdef UNETCU_WITH_CUDA_BACKEND
  if (cuda_device_count() > 0) return true;
  if (why_not) *why_not = "no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)";
  return false;
#else
  if (why_not)
    *why_not = "this unetcu was built without the CUDA backend (configure with nvcc on the PATH, "
               "or -DUNETCU_CUDA=ON)";
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& device, const BackendOptions& opt) {
  if (device == "cpu") return make_cpu_backend();
  if (device == "cuda" || device == "auto") {
    std::string why;
    if (cuda_available(&why)) {
#ifdef UNETCU_WITH_CUDA_BACKEND
      return make_cuda_backend(opt);
#endif
    }
    if (device == "cuda") fail("--device cuda: ", why, "; use --device cpu");
    return make_cpu_backend();
  }
  fail("--device must be auto, cpu or cuda, got '", device, "'");
}

}  // namespace unetcu
