// tools/unetcu/main.cpp: `unetcu <command> ...`; every user-facing error ends here as one
// "unetcu: error: ..." line and exit status 1.
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>

#include "engine/error.h"
#include "tools/unetcu/commands.h"

namespace {

void usage() {
  std::printf(
      "unetcu: train and run smp's ResNet34-UNet for binary skin-lesion segmentation\n\n"
      "usage: unetcu <command> [options]   (unetcu <command> --help for its options)\n\n"
      "commands:\n"
      "  train [DATA]            train (no DATA: generate a small demo set and train briefly)\n"
      "  eval DATA --weights F   evaluate a checkpoint; prints JSON\n"
      "  predict --weights F INPUT... --out DIR   masks (and overlays, probabilities) for images\n"
      "  init --seed S --out F   write smp-initialised weights as safetensors\n"
      "  stats DATA [--out DIR]  what a dataset holds: sizes, diagnoses, lesion area, odd masks\n"
      "  synth OUT --count N     generate a HAM10000-like dataset\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
    usage();
    return argc < 2 ? 1 : 0;
  }
  const char* cmd = argv[1];
  try {
    if (!std::strcmp(cmd, "train")) return unetcu::cli::cmd_train(argc, argv);
    if (!std::strcmp(cmd, "eval")) return unetcu::cli::cmd_eval(argc, argv);
    if (!std::strcmp(cmd, "predict")) return unetcu::cli::cmd_predict(argc, argv);
    if (!std::strcmp(cmd, "init")) return unetcu::cli::cmd_init(argc, argv);
    if (!std::strcmp(cmd, "stats")) return unetcu::cli::cmd_stats(argc, argv);
    if (!std::strcmp(cmd, "synth")) return unetcu::cli::cmd_synth(argc, argv);
    std::fprintf(stderr, "unetcu: error: unknown command '%s'\n\n", cmd);
    usage();
    return 1;
  } catch (const unetcu::Error& e) {
    std::fprintf(stderr, "unetcu: error: %s\n", e.what());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "unetcu: error: out of memory; try a smaller --batch-size or --image-size\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unetcu: internal error: %s\n", e.what());
  }
  return 1;
}
