// bench/cudnn_fusion.cpp: runs the BatchNorm-fusion probe (kernels/cudnn/fusion_probe.h) at
// some of the network's convolution shapes and prints one line per shape and variant: what
// cuDNN's heuristics offer for a convolution with the BatchNorm's sums (or the ReLU mask and
// the BatchNorm backward's sums) in its epilogue, or the BatchNorm + ReLU before it as a
// prologue, in float32, what builds, the fastest one's time beside the engine's own
// convolution, and whether its outputs agree.
//
//   bench_cudnn_fusion [--batch N] [--size S] [--shapes a,b,...] [--configs K] [--no-tf32]
//
// Shapes by the layer they come from (at --size S, default 128, batch N, default 16):
//   stem      7x7/2 3 -> 64 at S          (its output feeds encoder.bn1)
//   layer1    3x3 64 -> 64 at S/4
//   layer2    3x3 128 -> 128 at S/8
//   layer3    3x3 256 -> 256 at S/16
//   decoder3  3x3 32 -> 32 at S/2
//   decoder4  3x3 16 -> 16 at S
// default layer1,layer3,decoder4. --configs: configurations built per heuristics mode (default
// 2; runtime-compiled ones take seconds each). Prints "SKIPPED: no GPU" without one.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cudnn/conv_cudnn.h"
#include "kernels/cudnn/fusion_probe.h"

using unetcu::ConvShape;

namespace {

int usage(const char* why) {
  std::fprintf(stderr,
               "bench_cudnn_fusion: %s\nusage: bench_cudnn_fusion [--batch N] [--size S] "
               "[--shapes stem,layer1,layer2,layer3,decoder3,decoder4] [--configs K] "
               "[--no-tf32]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int batch = 16, size = 128;
  std::string shapes = "layer1,layer3,decoder4";
  unetcu::cudnn::FusionProbeOptions options;
  options.configs = 2;
  for (int i = 1; i < argc; ++i) {
    const bool more = i + 1 < argc;
    if (!std::strcmp(argv[i], "--batch") && more) batch = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--size") && more) size = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--shapes") && more) shapes = argv[++i];
    else if (!std::strcmp(argv[i], "--configs") && more) options.configs = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--no-tf32")) options.tf32 = false;
    else return usage((std::string("unknown or incomplete argument ") + argv[i]).c_str());
  }
  if (batch < 1 || size < 16 || size % 16 != 0 || options.configs < 1)
    return usage("--batch must be at least 1, --size a multiple of 16, --configs at least 1");

  const int n = batch, s = size;
  const std::map<std::string, ConvShape> known = {
      {"stem", ConvShape::make(n, s, s, 3, 64, 7, 7, 2, 3)},
      {"layer1", ConvShape::make(n, s / 4, s / 4, 64, 64, 3, 3, 1, 1)},
      {"layer2", ConvShape::make(n, s / 8, s / 8, 128, 128, 3, 3, 1, 1)},
      {"layer3", ConvShape::make(n, s / 16, s / 16, 256, 256, 3, 3, 1, 1)},
      {"decoder3", ConvShape::make(n, s / 2, s / 2, 32, 32, 3, 3, 1, 1)},
      {"decoder4", ConvShape::make(n, s, s, 16, 16, 3, 3, 1, 1)},
  };
  std::vector<std::string> names;
  std::stringstream list(shapes);
  for (std::string name; std::getline(list, name, ',');) {
    if (!known.count(name)) return usage(("unknown shape '" + name + "'").c_str());
    names.push_back(name);
  }

  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no GPU\n");
    return 0;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return usage("no device properties");
  std::printf("cuDNN BatchNorm-fusion probe: %s, %s, fp32%s, %d configurations a heuristics "
              "mode\n",
              prop.name, unetcu::cudnn::version().c_str(),
              options.tf32 ? " (convolutions TF32)" : "", options.configs);
  std::fflush(stdout);
  try {
    for (const std::string& name : names) {
      const auto t0 = std::chrono::steady_clock::now();
      unetcu::cudnn::probe_bn_fusions(known.at(name), options, [&](const std::string& line) {
        std::printf("%s: %s\n", name.c_str(), line.c_str());
        std::fflush(stdout);
      });
      std::printf("%s: done in %.1f s\n", name.c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cudnn_fusion: %s\n", e.what());
    return 1;
  }
  return 0;
}
