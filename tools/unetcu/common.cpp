// tools/unetcu/common.cpp: helpers shared by the subcommands (evaluation, probabilities,
// loading a folder).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "data/batch.h"
#include "data/cache.h"
#include "data/loader.h"
#include "tools/unetcu/args.h"
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

void make_folder(const std::string& dir, const std::string& what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail("cannot create ", what, " ", dir, ": ", ec.message());
  if (!std::filesystem::is_directory(dir)) fail("cannot create ", what, " ", dir, ": not a folder");
}

void add_tta_flag(Args& a) {
  a.flag("tta", "test-time augmentation: the mean over the 8 flips and quarter turns "
                "(8x the time)");
}

void add_source_options(Args& a) {
  a.option("images", "", "image folder, instead of detecting the layout (relative to DATA)");
  a.option("masks", "", "mask folder, with --images (relative to DATA)");
  a.option("mask-suffix", "_segmentation",
           "a mask is <stem><suffix>.png|.jpg|.bmp ('' when named like its image)");
}

void add_data_options(Args& a) {
  add_source_options(a);
  a.flag("skip-bad", "leave out unreadable, corrupt or unpaired files with a warning");
  a.flag("fix-inverted-masks", "flip masks whose four corners are all lesion");
  a.option("cache-dir", "", "cache of decoded images (default $XDG_CACHE_HOME/unetcu, else ~/.cache/unetcu)");
  a.flag("no-cache", "decode every image, neither reading nor writing the cache");
}

data::SourceOptions source_options(const Args& a) {
  data::SourceOptions opt;
  opt.images = a.str("images");
  opt.masks = a.str("masks");
  if (a.has("mask-suffix")) opt.mask_suffix = a.str("mask-suffix");
  return opt;
}

DataOptions data_options(const Args& a) {
  DataOptions opt;
  opt.source = source_options(a);
  opt.skip_bad = a.flag_set("skip-bad");
  opt.fix_inverted = a.flag_set("fix-inverted-masks");
  if (!a.flag_set("no-cache"))
    opt.cache_dir = a.str("cache-dir").empty() ? data::default_cache_dir() : a.str("cache-dir");
  return opt;
}

namespace {

void warn(const std::string& msg) { std::fprintf(stderr, "warning: %s\n", msg.c_str()); }

}  // namespace

data::Pairing find_folder_pairs(const std::string& dir, const data::SourceOptions& source,
                                bool skip_unpaired) {
  const data::DataSource src = data::detect_source(dir, source);
  std::fprintf(stderr, "data: layout %s: %s in %s\n", src.layout.c_str(), src.description.c_str(),
               src.root.c_str());
  for (const auto& note : src.notes) std::fprintf(stderr, "data: note: %s\n", note.c_str());
  data::Pairing pairs = data::pair_files(src, skip_unpaired);
  for (const auto* csv : {&src.metadata_csv, &src.groundtruth_csv})
    if (!csv->empty()) std::fprintf(stderr, "data: metadata from %s\n", csv->c_str());
  if (pairs.n_without_metadata > 0)
    warn(std::to_string(pairs.n_without_metadata) + " of " + std::to_string(pairs.samples.size()) +
         " images have no row in the metadata (no lesion id or diagnosis for them)");
  if (!pairs.unpaired.empty()) {
    warn("left out " + std::to_string(pairs.unpaired.size()) +
         " files without a partner (image without mask or mask without image): " +
         data::list_names(pairs.unpaired));
  }
  return pairs;
}

data::Dataset load_folder(const std::string& dir, int size, int limit, const DataOptions& opt) {
  auto samples = find_folder_pairs(dir, opt.source, opt.skip_bad).samples;
  const size_t found = samples.size();
  if (limit > 0 && size_t(limit) < samples.size()) samples.resize(size_t(limit));
  std::fprintf(stderr, "data: %zu image/mask pairs%s; decoding at %dx%d...\n", found,
               samples.size() < found ? (" (using the first " + std::to_string(samples.size()) + ")").c_str() : "",
               size, size);
  auto t0 = std::chrono::steady_clock::now();
  data::LoadOptions lopt;
  lopt.warn = warn;
  lopt.skip_bad = opt.skip_bad;
  lopt.fix_inverted = opt.fix_inverted;
  if (opt.cache_dir.empty()) {
    data::Dataset ds = data::load_dataset(samples, size, lopt);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "data: decoded %d images in %.1f s\n", ds.n, s);
    return ds;
  }
  data::CacheReport report;
  data::Dataset ds = data::load_cached(
      samples, size, opt.cache_dir, lopt, &report, [](const data::CacheReport& r) {
        std::fprintf(stderr, "cache: building %s (%s)\n", r.path.c_str(), r.reason.c_str());
      });
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  using Outcome = data::CacheReport::Outcome;
  if (report.outcome == Outcome::kHit) {
    std::fprintf(stderr, "cache: hit %s (%d images in %.2f s)\n", report.path.c_str(), ds.n, s);
  } else {
    if (report.outcome == Outcome::kNotWritten) warn("cache not written: " + report.reason);
    std::fprintf(stderr, "data: decoded %d images in %.1f s\n", ds.n, s);
  }
  return ds;
}

data::Split make_split(const std::string& method, const data::Dataset& ds, uint64_t seed,
                       double val_frac, double test_frac) {
  if (method == "random") return data::split_random(ds.n, seed, val_frac, test_frac);
  if (method == "lesion") return data::split_lesion(ds.lesion_ids, seed, val_frac, test_frac);
  fail("--split must be random or lesion, got '", method, "'");
}

std::vector<float> predict_probabilities(ModelSession& session, const uint8_t* images, int n,
                                         bool tta) {
  const int size = session.image_h();
  const size_t pixels = size_t(size) * size, image_bytes = pixels * 3;
  if (!tta) {
    std::vector<float> p = session.predict(images, n);
    for (float& v : p) v = mask_sigmoid(v);
    return p;
  }
  if (session.image_w() != size) fail("test-time augmentation needs square images");
  std::vector<float> sum(size_t(n) * pixels, 0.0f), seen(pixels);
  std::vector<uint8_t> turned(size_t(n) * image_bytes);
  for (int t = 0; t < 8; ++t) {
    for (int i = 0; i < n; ++i)
      data::dihedral_copy(turned.data() + size_t(i) * image_bytes, images + size_t(i) * image_bytes,
                          size, 3, t);
    const std::vector<float> logits = session.predict(turned.data(), n);
    for (int i = 0; i < n; ++i) {
      for (size_t k = 0; k < pixels; ++k) seen[k] = mask_sigmoid(logits[size_t(i) * pixels + k]);
      data::dihedral_add_back(sum.data() + size_t(i) * pixels, seen.data(), size, t);
    }
  }
  for (float& v : sum) v /= 8.0f;
  return sum;
}

StepResult metrics_from_probabilities(const float* probs, const uint8_t* masks, int n,
                                      int64_t pixels) {
  StepResult r;
  DiceSums sums;
  for (int i = 0; i < n; ++i) {
    ConfusionCounts c;
    for (int64_t k = 0; k < pixels; ++k) {
      const float p = probs[int64_t(i) * pixels + k];
      const bool truth = masks[int64_t(i) * pixels + k] != 0, pred = p > 0.5f;
      c.tp += pred && truth;
      c.fp += pred && !truth;
      c.fn += !pred && truth;
      sums.sum_p += p;
      sums.sum_t += truth;
      sums.intersection += truth ? p : 0.0f;
    }
    c.tn = pixels - c.tp - c.fp - c.fn;
    r.counts.push_back(c);
  }
  r.loss = float(dice_loss_from_sums(sums));
  return r;
}

EvalResult evaluate(ModelSession& session, const data::Dataset& ds, const std::vector<int>& indices,
                    int batch_size, const std::string& label,
                    std::vector<ConfusionCounts>* per_image, bool tta) {
  EvalResult r;
  if (per_image != nullptr) per_image->clear();
  if (indices.empty()) return r;
  data::BatchIterator it(ds, indices, batch_size, 0, false);
  std::vector<uint8_t> images(size_t(batch_size) * ds.image_bytes()), masks(size_t(batch_size) * ds.mask_bytes());
  Progress progress(label, it.num_batches());
  double loss_sum = 0, iou_sum = 0, dice_sum = 0;
  for (int b = 0; b < it.num_batches(); ++b) {
    int n = it.fill(b, images.data(), masks.data());
    StepResult s;
    if (tta) {
      const std::vector<float> p = predict_probabilities(session, images.data(), n, true);
      s = metrics_from_probabilities(p.data(), masks.data(), n, int64_t(ds.mask_bytes()));
    } else {
      s = session.eval_step(images.data(), masks.data(), n);
    }
    loss_sum += s.loss;
    for (const auto& c : s.counts) { iou_sum += image_iou(c); dice_sum += image_dice(c); }
    if (per_image != nullptr) per_image->insert(per_image->end(), s.counts.begin(), s.counts.end());
    r.n_images += n;
    progress.update(b + 1, r.n_images, loss_sum / (b + 1), iou_sum / r.n_images);
  }
  r.loss = loss_sum / it.num_batches();
  r.iou = iou_sum / r.n_images;
  r.dice = dice_sum / r.n_images;
  return r;
}

}  // namespace unetcu::cli
