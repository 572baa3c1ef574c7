// engine/cpu_backend.h: the Backend that runs kernels/cpu on host memory.
#pragma once

#include <memory>

#include "engine/backend.h"

namespace unetcu {

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace unetcu
