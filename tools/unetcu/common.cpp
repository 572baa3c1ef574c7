// tools/unetcu/common.cpp: helpers shared by the subcommands (evaluation, loading a folder).
#include <chrono>
#include <cstdio>

#include "data/batch.h"
#include "tools/unetcu/commands.h"
#include "tools/unetcu/progress.h"

namespace unetcu::cli {

const char* git_commit() {
#ifdef UNETCU_GIT_COMMIT
  return UNETCU_GIT_COMMIT;
#else
  return "unknown";
#endif
}

data::Dataset load_folder(const std::string& dir, int size, int limit) {
  auto samples = data::find_pairs(dir);
  const size_t found = samples.size();
  if (limit > 0 && size_t(limit) < samples.size()) samples.resize(size_t(limit));
  std::fprintf(stderr, "data: %zu image/mask pairs in %s%s; decoding at %dx%d...\n", found,
               dir.c_str(), samples.size() < found ? (" (using the first " + std::to_string(samples.size()) + ")").c_str() : "",
               size, size);
  auto t0 = std::chrono::steady_clock::now();
  data::LoadOptions opt;
  opt.warn = [](const std::string& msg) { std::fprintf(stderr, "warning: %s\n", msg.c_str()); };
  data::Dataset ds = data::load_dataset(samples, size, opt);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "data: decoded %d images in %.1f s\n", ds.n, s);
  return ds;
}

EvalResult evaluate(ModelSession& session, const data::Dataset& ds, const std::vector<int>& indices,
                    int batch_size, const std::string& label) {
  EvalResult r;
  if (indices.empty()) return r;
  data::BatchIterator it(ds, indices, batch_size, 0, false);
  std::vector<uint8_t> images(size_t(batch_size) * ds.image_bytes()), masks(size_t(batch_size) * ds.mask_bytes());
  Progress progress(label, it.num_batches());
  double loss_sum = 0, iou_sum = 0, dice_sum = 0;
  for (int b = 0; b < it.num_batches(); ++b) {
    int n = it.fill(b, images.data(), masks.data());
    StepResult s = session.eval_step(images.data(), masks.data(), n);
    loss_sum += s.loss;
    for (const auto& c : s.counts) { iou_sum += image_iou(c); dice_sum += image_dice(c); }
    r.n_images += n;
    progress.update(b + 1, r.n_images, loss_sum / (b + 1), iou_sum / r.n_images);
  }
  r.loss = loss_sum / it.num_batches();
  r.iou = iou_sum / r.n_images;
  r.dice = dice_sum / r.n_images;
  return r;
}

}  // namespace unetcu::cli
