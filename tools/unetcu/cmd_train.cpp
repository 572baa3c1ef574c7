// tools/unetcu/cmd_train.cpp: `unetcu train [DATA]` and `unetcu eval DATA --weights CKPT`.
//
// train: split (seeded, kept in split.json and read back on --resume), then per epoch:
// shuffled training batches from the prefetching loader (data/loader.h; --augment), submitted
// without waiting for the device (BatchNorm in train mode), validation (eval mode), one line
// appended to metrics.jsonl, last.safetensors (with Adam state and the training position, for
// --resume) and best.safetensors (best val_iou, weights only);
// at the end the best weights are evaluated on the test split into test.json; report.html
// (report.h) is rewritten after every epoch and at the end. Ctrl-C (or SIGTERM) stops at the
// next step boundary and saves last.safetensors there, in the middle of an epoch if need be;
// --resume goes on from that batch as if never stopped.
//
// eval: one pass in eval mode over a split (or all images), JSON on stdout; --report FILE
// writes the same page as a run's, for those images.
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>

#include "data/loader.h"
#include "data/split.h"
#include "data/synth.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/fileio.h"
#include "engine/json.h"
#include "model/checkpoint.h"
#include "tools/unetcu/args.h"
#include "tools/unetcu/commands.h"
#include "tools/unetcu/interrupt.h"
#include "tools/unetcu/progress.h"
#include "tools/unetcu/report.h"

namespace fs = std::filesystem;

namespace unetcu::cli {
namespace {

// The demo: a small generated set and a short run at 64x64, minutes on a laptop CPU.
constexpr int kDemoImages = 160;
constexpr const char* kDemoDir = "runs/demo-data";

std::string ensure_demo_data() {
  bool present = false;
  try {
    present = data::find_pairs(kDemoDir).size() == size_t(kDemoImages);
  } catch (const Error&) {
  }
  if (!present) {
    std::fprintf(stderr, "demo: no DATA given; generating %d HAM10000-like images in %s ...\n",
                 kDemoImages, kDemoDir);
    data::synth_dataset(kDemoDir, kDemoImages, 0);
  } else {
    std::fprintf(stderr, "demo: no DATA given; using the generated images in %s\n", kDemoDir);
  }
  return kDemoDir;
}

void append_line(const std::string& path, const std::string& line) {
  std::ofstream f(path, std::ios::app);
  f << line << "\n";
  f.flush();
  if (!f) fail("cannot write ", path);
}

std::string state_path(const std::string& dir, const char* file) { return (fs::path(dir) / file).string(); }

// The command line that continues this run, to paste into the same shell: the one given (the
// program as it was called), with --resume.
std::string resume_command(int argc, char** argv) {
  std::string cmd;
  bool has_resume = false;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    has_resume = has_resume || arg == "--resume";
    const bool plain = arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                             "0123456789-_./=:+,") == std::string::npos;
    std::string quoted = "'";  // for the shell: a ' inside as '\''
    for (const char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    cmd += (i ? " " : "") + (plain && !arg.empty() ? arg : quoted + "'");
  }
  return has_resume ? cmd : cmd + " --resume";
}

// Where an interrupted epoch stood: kept in last.safetensors' metadata, so that --resume goes
// on from its next batch with the epoch's sums as they were (metrics.jsonl then reads as if the
// run had never stopped).
struct EpochSoFar {
  int batch = 0;        // batches done
  long images = 0;      // training images seen
  double loss_sum = 0;  // of the batches' losses
  double iou_sum = 0;   // of the images' IoUs
  double seconds = 0;   // training time
};

}  // namespace

int cmd_train(int argc, char** argv) {
  Args a("train", "train [DATA] [options]");
  a.option("epochs", "20", "number of epochs");
  a.option("batch-size", "16", "images per training step");
  a.option("image-size", "128", "training resolution (a multiple of 32)");
  a.option("lr", "1e-4", "Adam learning rate");
  a.option("device", "auto", "auto, cpu or cuda");
  a.option("seed", "0", "seed for initialisation, split and shuffling");
  a.option("out", "runs/train",
           "run folder (config.json, metrics.jsonl, report.html, checkpoints, test.json)");
  a.option("limit", "0", "use only the first N image/mask pairs (0: all)");
  a.option("val-frac", "0.025", "fraction of images for validation");
  a.option("test-frac", "0.025", "fraction of images for the final test");
  a.option("split", "random", "random (image by image) or lesion (no lesion_id in two parts)");
  a.option("weights", "", "start from these weights (safetensors) instead of a fresh init");
  a.option("encoder-weights", "", "torchvision ResNet-34 state_dict (safetensors) for the encoder");
  a.flag("augment", "random flips and quarter turns of the training images (and masks)");
  a.option("workers", "2", "threads assembling training batches");
  a.flag("resume", "continue the run in --out from its last.safetensors (also after Ctrl-C)");
  a.flag("no-tf32", "CUDA: full fp32 convolutions (no TF32 tensor cores)");
  add_data_options(a);
  if (!a.parse(argc, argv, 2)) return 0;
  if (a.positional().size() > 1) fail("unetcu train: expected at most one DATA folder");

  // Every option is checked, and the device opened, before the demo's images are generated:
  // a mistyped option fails at once rather than after seconds of generating.
  const bool demo = a.positional().empty();
  const int epochs = int(a.has("epochs") || !demo ? a.integer("epochs", 1, 100000) : 5);
  const int image_size = int(a.has("image-size") || !demo ? a.integer("image-size", 32, 4096) : 64);
  if (image_size % 32 != 0) fail("--image-size must be a multiple of 32, got ", image_size);
  const int batch_size = int(a.integer("batch-size", 1, 4096));
  const double lr = a.number("lr", 0.0, 1.0);
  const uint64_t seed = uint64_t(a.integer("seed", 0, INT64_MAX));
  const std::string out = demo && !a.has("out") ? std::string("runs/demo") : a.str("out");
  const double val_frac = a.number("val-frac", 0.0, 0.9), test_frac = a.number("test-frac", 0.0, 0.9);
  const bool augment = a.flag_set("augment");
  const int workers = int(a.integer("workers", 1, 64));
  const int limit = int(a.integer("limit", 0, INT32_MAX));
  if (a.str("split") != "random" && a.str("split") != "lesion")
    fail("--split must be random or lesion, got '", a.str("split"), "'");

  BackendOptions bopt;
  bopt.tf32 = !a.flag_set("no-tf32");
  auto backend = make_backend(a.str("device"), bopt);
  std::fprintf(stderr, "device: %s\n", backend->describe().c_str());
  // The first step of each batch size is slower by seconds, with the progress bar still at 0:
  // say why before it looks stuck.
  if (backend->kind() == DeviceKind::cuda)
    std::fprintf(stderr, "cuda: the first step of each batch size times cuDNN's algorithms and "
                         "unetcu's own kernels for every convolution and captures the step as a "
                         "CUDA graph (seconds)\n");
  make_folder(out, "the run folder");

  const std::string data_dir = demo ? ensure_demo_data() : a.positional()[0];
  data::Dataset ds = load_folder(data_dir, image_size, limit, data_options(a));
  // The split is made once and kept in the run folder as names; --resume reads it back, so a
  // run goes on with the images it started with.
  const std::string split_path = state_path(out, "split.json");
  const bool split_recorded = a.flag_set("resume") && fs::exists(split_path);
  const data::Split split =
      split_recorded ? data::split_from_json(read_file(split_path), split_path, ds.stems)
                     : make_split(a.str("split"), ds, seed, val_frac, test_frac);
  const std::string split_made = split_recorded ? "as recorded in " + split_path : a.str("split");
  if (!split_recorded)
    write_file_atomic(split_path, data::split_to_json(split, ds.stems,
                                                      {a.str("split"), seed, val_frac, test_frac}));
  std::fprintf(stderr, "split: %zu train, %zu val, %zu test (%s, seed %llu)\n", split.train.size(),
               split.val.size(), split.test.size(), split_made.c_str(), (unsigned long long)seed);

  const std::string last_path = state_path(out, "last.safetensors"),
                    best_path = state_path(out, "best.safetensors"),
                    metrics_path = state_path(out, "metrics.jsonl");

  AdamConfig adam;
  adam.lr = lr;
  ModelSession session(*backend, image_size, image_size, adam);
  const ModelSpec& spec = session.spec();
  int start_epoch = 0;
  EpochSoFar resumed;  // of epoch start_epoch + 1
  double best_iou = -1;
  int best_epoch = 0;
  if (a.flag_set("resume")) {
    if (!fs::exists(last_path)) fail("--resume: ", last_path, " does not exist");
    LoadedCheckpoint ck = load_checkpoint(last_path, spec);
    if (!ck.has_optimizer) fail("--resume: ", last_path, " has no optimizer state");
    session.set_state(ck.model);
    session.set_optimizer(ck.optimizer);
    start_epoch = std::stoi(ck.metadata_value("epoch", "0"));
    best_iou = std::stod(ck.metadata_value("best_val_iou", "-1"));
    best_epoch = std::stoi(ck.metadata_value("best_epoch", "0"));
    resumed.batch = std::stoi(ck.metadata_value("batch", "0"));
    if (resumed.batch > 0) {
      // The batches of an epoch follow from the seed and the batch size: with others, the
      // batches still to do would not be the ones the epoch had left.
      struct Kept {
        const char* option;  // and its metadata key
        const char* key;
        uint64_t now;
      };
      for (const Kept& k : {Kept{"seed", "seed", seed},
                            Kept{"batch-size", "batch_size", uint64_t(batch_size)}}) {
        const std::string then = ck.metadata_value(k.key, "");
        if (then != std::to_string(k.now))
          fail("--resume: ", last_path, " stopped in the middle of epoch ", start_epoch + 1,
               "; resume with its --", k.option, " ", then, " (given: ", k.now, ")");
      }
      resumed.images = std::stol(ck.metadata_value("epoch_images", "0"));
      resumed.loss_sum = std::stod(ck.metadata_value("epoch_loss_sum", "0"));
      resumed.iou_sum = std::stod(ck.metadata_value("epoch_iou_sum", "0"));
      resumed.seconds = std::stod(ck.metadata_value("epoch_seconds", "0"));
      std::fprintf(stderr, "resume: %s in epoch %d after batch %d\n", last_path.c_str(),
                   start_epoch + 1, resumed.batch);
    } else {
      std::fprintf(stderr, "resume: %s after epoch %d\n", last_path.c_str(), start_epoch);
    }
  } else {
    if (a.str("weights").empty()) {
      HostModelState init = initial_state(spec, seed);
      if (!a.str("encoder-weights").empty()) {
        load_encoder_weights(a.str("encoder-weights"), spec, init);
        std::fprintf(stderr, "encoder weights: %s\n", a.str("encoder-weights").c_str());
      }
      session.set_state(init);
    } else {
      session.set_state(load_checkpoint(a.str("weights"), spec).model);
      std::fprintf(stderr, "weights: %s\n", a.str("weights").c_str());
    }
    std::ofstream(metrics_path, std::ios::trunc);
  }

  // config.json: every option's value, plus what was derived from them.
  json::Object cfg;
  cfg.emplace_back("command", "train");
  cfg.emplace_back("data", data_dir);
  for (const auto& [k, v] : a.values()) cfg.emplace_back(k, v);
  cfg.emplace_back("epochs_used", epochs);
  cfg.emplace_back("image_size_used", image_size);
  cfg.emplace_back("out_used", out);
  cfg.emplace_back("device_used", backend->describe());
  cfg.emplace_back("git_commit", git_commit());
  cfg.emplace_back("n_images", ds.n);
  cfg.emplace_back("n_train", int64_t(split.train.size()));
  cfg.emplace_back("n_val", int64_t(split.val.size()));
  cfg.emplace_back("n_test", int64_t(split.test.size()));
  write_file_atomic(state_path(out, "config.json"), json::dump_pretty(cfg) + "\n");

  // report.html: rewritten after every epoch (the curves so far) and at the end (the test and
  // its gallery); `add` puts in what only the end has. A page that cannot be made costs the
  // run a warning, never its training.
  const std::string report_path = state_path(out, "report.html");
  auto write_report = [&](const std::function<void(ReportData&)>& add) -> bool {
    try {
      ReportData r;
      r.title = "unetcu run " + out;
      r.summary = "trained with the batch Dice loss and Adam; data " + data_dir + "; " +
                  std::to_string(split.train.size()) + " train, " +
                  std::to_string(split.val.size()) + " validation, " +
                  std::to_string(split.test.size()) + " test images at " +
                  std::to_string(image_size) + "x" + std::to_string(image_size) + "; " +
                  backend->describe();
      r.config = cfg;
      r.epochs = read_metrics(metrics_path);
      r.epochs_planned = epochs;
      if (add) add(r);
      write_file_atomic(report_path, render_report(r));
      return true;
    } catch (const Error& e) {
      std::fprintf(stderr, "warning: %s not written: %s\n", report_path.c_str(), e.what());
      return false;
    }
  };

  // Worker threads assemble the batches into page-locked buffers (on CUDA) that the device
  // copies straight from; a batch's buffer goes back to the loader when its step's results
  // have come back, so at most kResultsInFlight are held while the workers fill the rest.
  data::LoaderOptions lopt;
  lopt.batch_size = batch_size;
  lopt.seed = seed;
  lopt.augment = augment;
  lopt.workers = workers;
  lopt.ring = ModelSession::kResultsInFlight + workers + 1;
  lopt.epoch = start_epoch;
  lopt.first_batch = resumed.batch;
  Backend* const be = backend.get();
  lopt.allocator = {[be](size_t bytes) { return be->alloc_host(bytes); },
                    [be](void* p) { be->release_host(p); }};
  data::Loader loader(ds, split.train, lopt);
  if (resumed.batch > loader.num_batches())
    fail("--resume: ", last_path, " stopped after batch ", resumed.batch, " of an epoch of ",
         loader.num_batches(), " batches");
  // The run's metadata in last.safetensors; `so_far` where it stops inside an epoch.
  auto save_last = [&](const HostModelState& state, int epochs_done, const EpochSoFar* so_far) {
    HostOptimizerState opt = session.optimizer();
    Metadata meta = {
        {"epoch", std::to_string(epochs_done)}, {"step", std::to_string(opt.step)},
        {"seed", std::to_string(seed)}, {"image_size", std::to_string(image_size)},
        {"best_val_iou", json::format_double(best_iou)},
        {"best_epoch", std::to_string(best_epoch)}};
    if (so_far != nullptr) {
      meta.insert(meta.end(), {{"batch", std::to_string(so_far->batch)},
                               {"batch_size", std::to_string(batch_size)},
                               {"epoch_images", std::to_string(so_far->images)},
                               {"epoch_loss_sum", json::format_double(so_far->loss_sum)},
                               {"epoch_iou_sum", json::format_double(so_far->iou_sum)},
                               {"epoch_seconds", json::format_double(so_far->seconds)}});
    }
    save_checkpoint(last_path, spec, state, &opt, meta);
  };
  const std::string resume_with = resume_command(argc, argv);
  // Ctrl-C while training saves before it stops (interrupt.h); before and after, it quits.
  std::optional<StopRequests> stop;
  stop.emplace();
  long steps_run = 0;  // by this process, for the test hook
  int epochs_timed = 0;  // by this process, and their seconds
  double seconds_timed = 0;
  for (int epoch = start_epoch; epoch < epochs; ++epoch) {
    const EpochSoFar before = epoch == start_epoch ? resumed : EpochSoFar{};
    loader.start_epoch(epoch, before.batch);
    auto t0 = std::chrono::steady_clock::now();
    const int n_batches = loader.num_batches();
    Progress progress("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(epochs), n_batches);
    progress.resume_from(before.batch, before.images);
    double loss_sum = before.loss_sum, iou_sum = before.iou_sum;
    long seen = before.images;
    int done = before.batch;  // steps whose results have come back
    std::deque<data::LoaderBatch> held;  // batches of the steps still in flight, in order
    // Results arrive asynchronously (a step or two behind on a GPU), in order.
    auto collect = [&](bool wait) {
      StepResult r;
      while (session.next_train_result(r, wait)) {
        loader.release(held.front());
        held.pop_front();
        ++done;
        if (!std::isfinite(r.loss))
          fail("training diverged: the loss is ", r.loss, " at epoch ", epoch + 1, " batch ",
               done, "; try a smaller --lr");
        loss_sum += r.loss;
        for (const auto& c : r.counts) iou_sum += image_iou(c);
        seen += long(r.counts.size());
        progress.update(done, seen, loss_sum / done, iou_sum / double(seen));
        StopRequests::test_hook(++steps_run);
      }
    };
    while (!StopRequests::requested()) {
      const data::LoaderBatch b = loader.next();
      if (!b) break;
      session.submit_train_step(b.images, b.masks, b.n, true);
      held.push_back(b);
      collect(false);
    }
    collect(true);
    const double train_seconds =
        before.seconds +
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (done < n_batches) {  // stopped by a signal: save where the epoch stands
      const EpochSoFar so_far{done, seen, loss_sum, iou_sum, train_seconds};
      save_last(session.state(), epoch, &so_far);
      progress.finish("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(epochs) +
                      ": stopped after batch " + std::to_string(done) + " of " +
                      std::to_string(n_batches) + "; saved " + last_path);
      std::fprintf(stderr, "to continue: %s\n", resume_with.c_str());
      return 128 + StopRequests::signal_number();
    }
    EvalResult val = evaluate(session, ds, split.val, batch_size, "  validate");
    const double epoch_seconds =
        before.seconds +
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    json::Object m;
    m.emplace_back("epoch", epoch + 1);
    m.emplace_back("train_loss", loss_sum / n_batches);
    m.emplace_back("train_iou", iou_sum / double(seen));
    m.emplace_back("val_loss", val.loss);
    m.emplace_back("val_iou", val.iou);
    m.emplace_back("val_dice", val.dice);
    m.emplace_back("images_per_sec", double(seen) / train_seconds);
    m.emplace_back("epoch_seconds", epoch_seconds);
    append_line(metrics_path, json::dump(json::Value(m)));
    char summary[256];
    std::snprintf(summary, sizeof summary,
                  "epoch %d/%d: train loss %.4f iou %.4f | val loss %.4f iou %.4f dice %.4f | %.1f img/s (%s)",
                  epoch + 1, epochs, loss_sum / n_batches, iou_sum / double(seen), val.loss,
                  val.iou, val.dice, double(seen) / train_seconds, format_duration(epoch_seconds).c_str());
    // What the whole run has left, at the mean pace of its epochs so far (a CPU run of the
    // recipe takes hours: the epoch's own ETA says too little).
    epochs_timed += 1;
    seconds_timed += epoch_seconds;
    const std::string to_go =
        epoch + 1 < epochs
            ? "; about " + format_duration(seconds_timed / epochs_timed * (epochs - epoch - 1)) +
                  " to go"
            : "";
    progress.finish(summary + to_go);
    // The cuDNN algorithm of every convolution, chosen during the first step: where a GPU run's
    // time goes is then visible without a profiler. Empty on the CPU.
    // And the step schedule the session kept, timed on this card (ModelSession's step tuning).
    if (epoch == start_epoch) {
      const std::string tuning = session.step_tuning_report();
      if (!tuning.empty()) std::fprintf(stderr, "%s\n", tuning.c_str());
      const std::string choices =
          backend->choices() + (tuning.empty() ? std::string() : tuning + "\n");
      if (!choices.empty()) write_file_atomic(state_path(out, "algorithms.txt"), choices);
    }

    HostModelState state = session.state();
    if (val.iou > best_iou) {
      best_iou = val.iou;
      best_epoch = epoch + 1;
      save_checkpoint(best_path, spec, state, nullptr,
                      {{"epoch", std::to_string(epoch + 1)}, {"val_iou", json::format_double(val.iou)},
                       {"seed", std::to_string(seed)}, {"image_size", std::to_string(image_size)}});
    }
    save_last(state, epoch + 1, nullptr);
    write_report(nullptr);
    if (StopRequests::requested()) {  // during the validation or the saving
      std::fprintf(stderr, "stopped after epoch %d; saved %s\nto continue: %s\n", epoch + 1,
                   last_path.c_str(), resume_with.c_str());
      return 128 + StopRequests::signal_number();
    }
  }

  stop.reset();

  // Final test with the best weights.
  EvalResult test;
  std::vector<ConfusionCounts> test_counts;  // per image, in split.test's order
  const bool tested = fs::exists(best_path);
  if (tested) {
    session.set_state(load_checkpoint(best_path, spec).model);
    test = evaluate(session, ds, split.test, batch_size, "  test", &test_counts);
  }
  json::Object t;
  t.emplace_back("test_iou", test.iou);
  t.emplace_back("test_dice", test.dice);
  t.emplace_back("test_loss", test.loss);
  t.emplace_back("n_images", test.n_images);
  t.emplace_back("checkpoint", "best.safetensors");
  t.emplace_back("best_epoch", best_epoch);
  write_file_atomic(state_path(out, "test.json"), json::dump_pretty(t) + "\n");
  std::fprintf(stderr, "test: iou %.4f  dice %.4f  on %d images (best epoch %d); run folder %s\n",
               test.iou, test.dice, test.n_images, best_epoch, out.c_str());
  // The report's gallery: the test images with the lowest and the highest IoU, predicted
  // again with the best weights.
  const bool reported = write_report([&](ReportData& r) {
    if (!tested) return;
    r.result = test;
    r.best_epoch = best_epoch;
    add_evaluated_images(r, session, ds, split.test, test_counts, batch_size);
  });
  if (reported) std::fprintf(stderr, "report: %s\n", report_path.c_str());
  return 0;
}

int cmd_eval(int argc, char** argv) {
  Args a("eval", "eval DATA --weights CKPT [options]");
  a.option("weights", "", "checkpoint (safetensors) to evaluate");
  a.option("split", "test", "test, val or all");
  a.option("image-size", "", "resolution (default: the checkpoint's, else 128)");
  a.option("batch-size", "16", "images per step");
  a.option("seed", "", "split seed (default: the checkpoint's, else 0)");
  a.option("split-from", "", "a run's split.json: evaluate its test/val images (not --seed)");
  a.option("val-frac", "0.025", "validation fraction used at training");
  a.option("test-frac", "0.025", "test fraction used at training");
  a.option("limit", "0", "use only the first N pairs (as at training)");
  a.option("device", "auto", "auto, cpu or cuda");
  a.option("report", "", "also write this HTML page: the images' IoU histogram and a gallery of "
                         "the 6 worst and 6 best, outlined");
  add_tta_flag(a);
  add_data_options(a);
  if (!a.parse(argc, argv, 2)) return 0;
  if (a.positional().size() != 1) fail("unetcu eval: expected one DATA folder");
  if (a.str("weights").empty()) fail("unetcu eval: --weights CKPT is required");
  const std::string which = a.str("split");
  if (which != "test" && which != "val" && which != "all")
    fail("--split must be test, val or all, got '", which, "'");
  // The report's folder is made before the pass over the images, so that a path that cannot
  // be written fails at once rather than after minutes of evaluating.
  const std::string report_path = a.str("report");
  if (!report_path.empty()) {
    const std::string parent = fs::path(report_path).parent_path().string();
    if (!parent.empty()) make_folder(parent, "--report's folder");
    if (fs::is_directory(report_path)) fail("--report: ", report_path, " is a folder");
  }

  const ModelSpec& spec = unet_spec();
  LoadedCheckpoint ck = load_checkpoint(a.str("weights"), spec);
  const int image_size = a.str("image-size").empty()
                             ? std::stoi(ck.metadata_value("image_size", "128"))
                             : int(a.integer("image-size", 32, 4096));
  const uint64_t seed = a.str("seed").empty() ? std::stoull(ck.metadata_value("seed", "0"))
                                              : uint64_t(a.integer("seed", 0, INT64_MAX));
  auto backend = make_backend(a.str("device"));
  data::Dataset ds = load_folder(a.positional()[0], image_size, int(a.integer("limit", 0, INT32_MAX)), data_options(a));
  std::vector<int> indices;
  if (which == "all") {
    for (int i = 0; i < ds.n; ++i) indices.push_back(i);
  } else {
    const std::string from = a.str("split-from");
    data::Split split = from.empty() ? data::split_random(ds.n, seed, a.number("val-frac", 0, 0.9),
                                                          a.number("test-frac", 0, 0.9))
                                     : data::split_from_json(read_file(from), from, ds.stems);
    indices = which == "test" ? split.test : split.val;
  }
  ModelSession session(*backend, image_size, image_size);
  session.set_state(ck.model);
  const int batch_size = int(a.integer("batch-size", 1, 4096));
  std::vector<ConfusionCounts> counts;  // per image, in the order of `indices`
  const bool tta = a.flag_set("tta");
  if (tta)
    std::fprintf(stderr, "eval: test-time augmentation: each image predicted in its 8 flips and "
                         "quarter turns, the probabilities averaged\n");
  EvalResult r = evaluate(session, ds, indices, batch_size, "eval", &counts, tta);
  json::Object o;
  o.emplace_back("iou", r.iou);
  o.emplace_back("dice", r.dice);
  o.emplace_back("loss", r.loss);
  o.emplace_back("n_images", r.n_images);
  std::printf("%s\n", json::dump(json::Value(o)).c_str());
  std::fflush(stdout);

  if (!report_path.empty()) {
    ReportData page;
    page.title = "unetcu eval " + a.str("weights");
    page.part = which == "test" ? "test" : which == "val" ? "validation" : "";
    page.summary = "data " + a.positional()[0] + "; " + std::to_string(r.n_images) + " " +
                   (page.part.empty() ? "" : page.part + " ") + "images at " +
                   std::to_string(image_size) + "x" + std::to_string(image_size) +
                   (tta ? ", each the mean of its 8 flips and quarter turns" : "") + "; " +
                   backend->describe();
    page.config.emplace_back("command", "eval");
    page.config.emplace_back("data", a.positional()[0]);
    for (const auto& [k, v] : a.values()) page.config.emplace_back(k, v);
    page.config.emplace_back("image_size_used", image_size);
    page.config.emplace_back("seed_used", int64_t(seed));
    page.config.emplace_back("git_commit", git_commit());
    page.result = r;
    add_evaluated_images(page, session, ds, indices, counts, batch_size, tta);
    write_file_atomic(report_path, render_report(page));
    std::fprintf(stderr, "report: %s\n", report_path.c_str());
  }
  return 0;
}

}  // namespace unetcu::cli
