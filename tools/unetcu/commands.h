// tools/unetcu/commands.h: the subcommands of the unetcu tool, and helpers they share.
#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/split.h"
#include "model/session.h"

namespace unetcu::cli {

int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_predict(int argc, char** argv);
int cmd_init(int argc, char** argv);
int cmd_synth(int argc, char** argv);
int cmd_stats(int argc, char** argv);

class Args;

// Metrics of one pass over a list of images with BatchNorm in eval mode.
struct EvalResult {
  double loss = 0;  // mean over batches of the batch Dice loss (as the recipe logs it)
  double iou = 0;   // micro-imagewise: mean over images of tp/(tp+fp+fn), empty/empty = 1
  double dice = 0;  // mean over images of 2tp/(2tp+fp+fn), empty/empty = 1
  int n_images = 0;
};
// per_image, when given, receives each image's counts in the order of `indices`. With tta,
// each image's prediction is predict_probabilities' mean over the 8 symmetries of the square,
// and the loss and counts are taken from it on the host (StepResult::from_probabilities).
EvalResult evaluate(ModelSession& session, const data::Dataset& ds, const std::vector<int>& indices,
                    int batch_size, const std::string& label,
                    std::vector<ConfusionCounts>* per_image = nullptr, bool tta = false);

// Sigmoid probabilities (n x h x w floats) of n images (n x h x w x 3 uint8) with BatchNorm in
// eval mode: sigmoid(logit) formed as the metrics form it (kernels/loss.h), so p > 0.5 is
// their mask. With tta (test-time augmentation), the mean of the probabilities predicted for
// each of the 8 symmetries of the square of the images (those --augment trains with), each
// turned back onto the original's pixels: 8 forward passes.
std::vector<float> predict_probabilities(ModelSession& session, const uint8_t* images, int n,
                                         bool tta);
void add_tta_flag(Args& a);  // --tta, for the commands that offer it (eval, predict)

// The batch Dice loss and the per-image counts of n images' probabilities against their 0/1
// masks, on the host (p > 0.5 a lesion pixel): what eval_step gives for the network's own
// probabilities, for probabilities it did not make (tta's means).
StepResult metrics_from_probabilities(const float* probs, const uint8_t* masks, int n,
                                      int64_t pixels);

// Where the data is and what to do with bad files: --images, --masks, --mask-suffix (every
// command that reads a dataset) and --skip-bad, --fix-inverted-masks, --cache-dir, --no-cache
// (train, eval).
struct DataOptions {
  data::SourceOptions source;
  bool skip_bad = false;
  bool fix_inverted = false;
  std::string cache_dir;  // decoded-image cache folder (--cache-dir); "" with --no-cache
};
void add_source_options(Args& a);
void add_data_options(Args& a);  // the source options plus the two flags
data::SourceOptions source_options(const Args& a);
DataOptions data_options(const Args& a);

// Detects the layout of a dataset folder and pairs its files, printing the layout, notes and
// metadata to stderr. With skip_unpaired, unpaired files are left out with one warning.
data::Pairing find_folder_pairs(const std::string& dir, const data::SourceOptions& source,
                                bool skip_unpaired);

// Finds and decodes a dataset folder at `size`, printing what it found to stderr.
// Decoding goes through the cache in opt.cache_dir (data/cache.h) unless that is empty.
data::Dataset load_folder(const std::string& dir, int size, int limit, const DataOptions& opt);

// The train/val/test split of `method` ("random" or "lesion", data/split.h) for ds.
data::Split make_split(const std::string& method, const data::Dataset& ds, uint64_t seed,
                       double val_frac, double test_frac);

// Makes folder `dir` (and its parents) or fails with one line naming it: "cannot create
// <what> <dir>: <reason>". Commands make their output folders before the long work.
void make_folder(const std::string& dir, const std::string& what);

// The source revision this binary was built from ("unknown" outside a git checkout).
const char* git_commit();

}  // namespace unetcu::cli
