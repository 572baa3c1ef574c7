// tests/emu/gpu_main.cpp: the runner of the native GPU build of the kernel tests. Without a
// usable device it says so and exits 0; ctest matches the message and lists the test as
// skipped, so a machine without a GPU shows a skip, never a pass.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  int devices = 0;
  const cudaError_t error = cudaGetDeviceCount(&devices);
  if (error != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no GPU (%s)\n",
                error != cudaSuccess ? cudaGetErrorString(error) : "no CUDA device");
    return 0;
  }
  // One schedule for every training step, as the cases comparing graphs with eager steps bit
  // for bit need: the session's step tuning, on by default on a GPU, could keep another (its
  // own case turns it on). A setting from outside stays.
  setenv("UNETCU_TUNE_STEP", "0", 0);
  doctest::Context context(argc, argv);
  return context.run();
}
