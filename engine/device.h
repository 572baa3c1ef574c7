// engine/device.h: choosing the backend for --device auto|cpu|cuda.
#pragma once

#include <memory>
#include <string>

#include "engine/backend.h"

namespace unetcu {

struct BackendOptions {
  bool tf32 = true;  // cuDNN convolutions may use TF32 tensor cores (--no-tf32 turns it off)
};

// "cpu", "cuda" or "auto" (cuda when this build has the CUDA backend and a GPU is present).
// Throws unetcu::Error with a hint when cuda is asked for and not available.
std::unique_ptr<Backend> make_backend(const std::string& device, const BackendOptions& opt = {});

// True when this build has a CUDA backend and a GPU is visible.
bool cuda_available(std::string* why_not = nullptr);

}  // namespace unetcu
