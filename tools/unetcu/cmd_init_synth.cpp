// tools/unetcu/cmd_init_synth.cpp: `unetcu init` (smp-initialised weights from a seed) and
// `unetcu synth` (a generated HAM10000-like dataset).
#include <chrono>
#include <cstdio>

#include "data/synth.h"
#include "engine/error.h"
#include "model/checkpoint.h"
#include "tools/unetcu/args.h"
#include "tools/unetcu/commands.h"

namespace unetcu::cli {

int cmd_init(int argc, char** argv) {
  Args a("init", "init --seed S --out FILE.safetensors");
  a.option("seed", "0", "seed of the initialisation");
  a.option("out", "", "output file (safetensors, smp state_dict names and layouts)");
  if (!a.parse(argc, argv, 2)) return 0;
  if (a.str("out").empty()) fail("unetcu init: --out FILE is required");
  if (!a.positional().empty()) fail("unetcu init: unexpected argument '", a.positional()[0], "'");
  const uint64_t seed = uint64_t(a.integer("seed", 0, INT64_MAX));
  const ModelSpec& spec = unet_spec();
  save_checkpoint(a.str("out"), spec, initial_state(spec, seed), nullptr,
                  {{"seed", std::to_string(seed)}, {"init", "smp"}});
  std::fprintf(stderr, "init: wrote %s (%zu parameter tensors, %lld values, seed %llu)\n",
               a.str("out").c_str(), spec.params.size(), (long long)spec.param_count,
               (unsigned long long)seed);
  return 0;
}

int cmd_synth(int argc, char** argv) {
  Args a("synth", "synth OUT --count N [--seed S]");
  a.option("count", "100", "number of image/mask pairs");
  a.option("seed", "0", "seed (same seed, same bytes)");
  a.option("width", "600", "image width (HAM10000: 600)");
  a.option("height", "450", "image height (HAM10000: 450)");
  if (!a.parse(argc, argv, 2)) return 0;
  if (a.positional().size() != 1) fail("unetcu synth: expected one OUT folder");
  const int count = int(a.integer("count", 1, 10000000));
  auto t0 = std::chrono::steady_clock::now();
  data::synth_dataset(a.positional()[0], count, uint64_t(a.integer("seed", 0, INT64_MAX)),
                      int(a.integer("width", 32, 8192)), int(a.integer("height", 32, 8192)));
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "synth: wrote %d image/mask pairs to %s in %.1f s\n", count,
               a.positional()[0].c_str(), s);
  return 0;
}

}  // namespace unetcu::cli
