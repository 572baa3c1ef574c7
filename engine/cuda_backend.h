// engine/cuda_backend.h: the Backend on a CUDA device (kernels/cuda on one compute stream,
// convolutions through cuDNN, CUDA-graph capture and replay). The same source builds natively
// (library unetcu_engine_cuda) and under the SIMT emulator (unetcu_engine_cuda_emu, where the
// kernels run on the CPU and the convolutions go through the cpu:: reference); an executable
// links one of the two.
#pragma once

#include <memory>

#include "engine/backend.h"
#include "engine/device.h"

namespace unetcu {

// The backend on the current CUDA device (CUDA_VISIBLE_DEVICES picks it). Throws CudaError
// (kernels/cuda/check.h) with a hint when the device cannot be used.
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opt);

// CUDA devices visible to this process; 0 when there is no driver or no device. The emulator
// reports one.
int cuda_device_count();

}  // namespace unetcu
