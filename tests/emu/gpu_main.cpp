// tests/emu/gpu_main.cpp: the runner of the native GPU build of the kernel tests. Without a
// usable device it says so and exits 0; ctest matches the message and lists the test as
// skipped, so a machine without a GPU shows a skip, never a pass.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cstdio>

int main(int argc, char** argv) {
  int devices = 0;
  const cudaError_t error = cudaGetDeviceCount(&devices);
  if (error != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no GPU (%s)\n",
                error != cudaSuccess ? cudaGetErrorString(error) : "no CUDA device");
    return 0;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
