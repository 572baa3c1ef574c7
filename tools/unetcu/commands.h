// tools/unetcu/commands.h: the subcommands of the unetcu tool, and helpers they share.
#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"
#include "model/session.h"

namespace unetcu::cli {

int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_init(int argc, char** argv);
int cmd_synth(int argc, char** argv);

// Metrics of one pass over a list of images with BatchNorm in eval mode.
struct EvalResult {
  double loss = 0;  // mean over batches of the batch Dice loss (as the recipe logs it)
  double iou = 0;   // micro-imagewise: mean over images of tp/(tp+fp+fn), empty/empty = 1
  double dice = 0;  // mean over images of 2tp/(2tp+fp+fn), empty/empty = 1
  int n_images = 0;
};
EvalResult evaluate(ModelSession& session, const data::Dataset& ds, const std::vector<int>& indices,
                    int batch_size, const std::string& label);

// Finds and decodes a dataset folder at `size`, printing what it found to stderr.
data::Dataset load_folder(const std::string& dir, int size, int limit);

// The source revision this binary was built from ("unknown" outside a git checkout).
const char* git_commit();

}  // namespace unetcu::cli
