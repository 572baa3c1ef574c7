// tests/cpu/test_cli.cpp: the unetcu tool end to end: synth -> train -> eval on the CPU, the
// run folder's contents, reproducibility of metrics.jsonl, resume (also from a Ctrl-C in the
// middle of an epoch), init determinism, and the clear errors for bad input (non-zero exit,
// the file named, nothing half-written).
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/dataset.h"
#include "data/split.h"
#include "engine/fileio.h"
#include "engine/json.h"
#include "cli_util.h"

namespace fs = std::filesystem;
using namespace unetcu;

namespace {

using test::RunResult;
using test::run_tool;
using test::TempDir;

std::vector<json::Value> read_jsonl(const std::string& path) {
  std::vector<json::Value> out;
  std::istringstream in(read_file(path));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line, path));
  return out;
}

// metrics.jsonl without the timing fields, for bit-exact comparison between runs.
std::string metrics_without_timing(const std::string& path) {
  std::string out;
  for (auto v : read_jsonl(path)) {
    json::Object kept;
    for (const auto& [k, val] : v.as_object())
      if (k != "images_per_sec" && k != "epoch_seconds") kept.emplace_back(k, val);
    out += json::dump(json::Value(kept)) + "\n";
  }
  return out;
}

}  // namespace

TEST_CASE("train on generated data: loss falls, IoU beats trivial predictors, run folder complete") {
  TempDir t("train");
  REQUIRE(run_tool("synth " + t.str("data") + " --count 96 --seed 3").status == 0);
  // Few epochs of many small steps: every epoch writes ~400 MB of checkpoints.
  const std::string common = t.str("data") + " --device cpu --image-size 64 --batch-size 4 --lr 1e-3 "
                             "--val-frac 0.2 --test-frac 0.05 --seed 1 ";
  RunResult r = run_tool("train " + common + "--epochs 5 --out " + t.str("run"));
  INFO(r.output);
  REQUIRE(r.status == 0);
  for (const char* f : {"config.json", "metrics.jsonl", "last.safetensors", "best.safetensors", "test.json"})
    CHECK_MESSAGE(fs::exists(t.path / "run" / f), f);

  auto metrics = read_jsonl(t.str("run/metrics.jsonl"));
  REQUIRE(metrics.size() == 5);
  // Each epoch's summary says what the run has left, but the last one's.
  auto summary = [&](int epoch) {
    const size_t at = r.output.find("epoch " + std::to_string(epoch) + "/5: train loss");
    return at == std::string::npos ? std::string()
                                   : r.output.substr(at, r.output.find('\n', at) - at);
  };
  for (int e = 1; e <= 4; ++e) CHECK_MESSAGE(summary(e).find("; about ") != std::string::npos, e);
  CHECK(summary(4).find(" to go") != std::string::npos);
  CHECK(summary(5).find("train loss") != std::string::npos);
  CHECK(summary(5).find("to go") == std::string::npos);
  for (const char* k : {"epoch", "train_loss", "train_iou", "val_loss", "val_iou", "images_per_sec"})
    CHECK_MESSAGE(metrics[0].find(k) != nullptr, k);
  const double first_loss = metrics.front().at("train_loss").as_double();
  const double last_loss = metrics.back().at("train_loss").as_double();
  CHECK(last_loss < first_loss - 0.1);

  // Trivial predictors on the same validation images: all background scores 0 on every image
  // with a lesion (all generated images have one); all lesion scores the lesion's area
  // fraction. A model that learnt nothing but "lesion somewhere" sits at or below the better
  // of the two; require a margin of 0.1 IoU above it, well beyond the spread of the 19
  // validation images' mean.
  auto samples = data::find_pairs(t.str("data"));
  data::Dataset ds = data::load_dataset(samples, 64);
  data::Split split = data::split_random(ds.n, 1, 0.2, 0.05);
  double all_fg = 0;
  for (int i : split.val) {
    int64_t pos = 0;
    for (size_t p = 0; p < ds.mask_bytes(); ++p) pos += ds.mask(i)[p];
    all_fg += pos == 0 ? 0.0 : double(pos) / double(ds.mask_bytes());
  }
  all_fg /= double(split.val.size());
  double best_val = 0;
  for (auto& m : metrics) best_val = std::max(best_val, m.at("val_iou").as_double());
  MESSAGE("best val_iou " << best_val << ", all-lesion predictor " << all_fg << ", first loss "
          << first_loss << ", last loss " << last_loss);
  CHECK(best_val > all_fg + 0.1);

  json::Value test = json::parse(read_file(t.str("run/test.json")));
  CHECK(test.at("n_images").as_int64() == int64_t(split.test.size()));
  CHECK(test.at("test_iou").as_double() >= 0.0);

  // report.html: the test's result, the epochs' rows, and every test image (fewer than the
  // gallery's 12) with its own share of lesion, found from its mask here.
  const std::string page = read_file(t.str("run/report.html"));
  char line[96];
  std::snprintf(line, sizeof line, "test IoU <b>%.4f</b>", test.at("test_iou").as_double());
  CHECK(page.find(line) != std::string::npos);
  CHECK(page.find("5 of 5 epochs") != std::string::npos);
  CHECK(test::count_of(page, "<img") == int(split.test.size()));
  for (const int i : split.test) {
    int64_t lesion = 0;
    for (size_t p = 0; p < ds.mask_bytes(); ++p) lesion += ds.mask(i)[p];
    std::snprintf(line, sizeof line, "lesion: true %.1f%%",
                  100.0 * double(lesion) / double(ds.mask_bytes()));
    const size_t at = page.find("<b>" + ds.stems[size_t(i)] + "</b>");
    REQUIRE_MESSAGE(at != std::string::npos, ds.stems[size_t(i)]);
    CHECK(page.substr(at, page.find("</figcaption>", at) - at).find(line) != std::string::npos);
  }

  // eval prints one JSON object on stdout; on the validation split it reproduces the best
  // epoch's val_iou from best.safetensors. Its page (--report, into a folder it makes) shows
  // the 6 worst and the 6 best of the 19 images.
  RunResult e = run_tool("eval " + t.str("data") + " --weights " + t.str("run/best.safetensors") +
                         " --split val --val-frac 0.2 --test-frac 0.05 --device cpu --report " +
                         t.str("pages/val.html") + " 2>/dev/null");
  INFO(e.output);
  REQUIRE(e.status == 0);
  const size_t brace = e.output.find('{');
  json::Value ev = json::parse(e.output.substr(brace, e.output.find('\n', brace) - brace));
  CHECK(ev.at("iou").as_double() == doctest::Approx(best_val).epsilon(1e-12));
  CHECK(ev.at("n_images").as_int64() == int64_t(split.val.size()));
  const std::string val_page = read_file(t.str("pages/val.html"));
  std::snprintf(line, sizeof line, "validation IoU <b>%.4f</b>", ev.at("iou").as_double());
  CHECK(val_page.find(line) != std::string::npos);
  CHECK(val_page.find("The 6 with the lowest IoU") != std::string::npos);
  CHECK(val_page.find("The 6 with the highest IoU") != std::string::npos);
  CHECK(test::count_of(val_page, "<img") == 12);
}

TEST_CASE("same seed, same metrics whatever the loader's worker count; resume continues exactly, "
          "also after a stop in the middle of an epoch") {
  TempDir t("determinism");
  REQUIRE(run_tool("synth " + t.str("data") + " --count 24 --seed 5").status == 0);
  const std::string common = "train " + t.str("data") + " --device cpu --image-size 32 --batch-size 4 "
                             "--val-frac 0.2 --test-frac 0.1 --seed 2 --cache-dir " + t.str("cache") + " ";
  RunResult a = run_tool(common + "--epochs 2 --out " + t.str("a"));
  RunResult b = run_tool(common + "--epochs 2 --workers 1 --out " + t.str("b"));
  INFO(a.output);
  REQUIRE(a.status == 0);
  REQUIRE(b.status == 0);
  // The first run decoded into the cache; the second read it back.
  CHECK(a.output.find("cache: building") != std::string::npos);
  CHECK(b.output.find("cache: hit") != std::string::npos);
  const std::string ma = metrics_without_timing(t.str("a/metrics.jsonl"));
  CHECK(ma == metrics_without_timing(t.str("b/metrics.jsonl")));
  CHECK(read_file(t.str("a/last.safetensors")) == read_file(t.str("b/last.safetensors")));

  // Augmented batches depend on the seed alone too, and do change the training.
  RunResult g1 = run_tool(common + "--epochs 1 --augment --workers 1 --out " + t.str("g1"));
  RunResult g3 = run_tool(common + "--epochs 1 --augment --workers 3 --out " + t.str("g3"));
  REQUIRE(g1.status == 0);
  REQUIRE(g3.status == 0);
  CHECK(read_file(t.str("g1/last.safetensors")) == read_file(t.str("g3/last.safetensors")));
  CHECK(metrics_without_timing(t.str("g1/metrics.jsonl")) ==
        metrics_without_timing(t.str("g3/metrics.jsonl")));
  CHECK(read_jsonl(t.str("g1/metrics.jsonl"))[0].at("train_loss").as_double() !=
        read_jsonl(t.str("a/metrics.jsonl"))[0].at("train_loss").as_double());

  // 1 epoch, then --resume to 2: the same metrics and the same final checkpoint.
  REQUIRE(run_tool(common + "--epochs 1 --out " + t.str("c")).status == 0);
  RunResult c = run_tool(common + "--epochs 2 --resume --out " + t.str("c"));
  INFO(c.output);
  REQUIRE(c.status == 0);
  CHECK(metrics_without_timing(t.str("c/metrics.jsonl")) == ma);
  CHECK(read_file(t.str("c/last.safetensors")) == read_file(t.str("a/last.safetensors")));

  // Stopped as by Ctrl-C (the hook raises SIGINT once this many steps are done): in the middle
  // of epoch 1 (2 of its 5 batches), then resumed and stopped again in epoch 2 (its batch 2),
  // then resumed to the end: the same metrics and the same final checkpoint.
  auto run_stopping = [&](const std::string& args, int after_steps) {
    setenv("UNETCU_TEST_INTERRUPT_AFTER_STEPS", std::to_string(after_steps).c_str(), 1);
    RunResult r = run_tool(args);
    unsetenv("UNETCU_TEST_INTERRUPT_AFTER_STEPS");
    return r;
  };
  RunResult s1 = run_stopping(common + "--epochs 2 --out " + t.str("s"), 2);
  INFO(s1.output);
  CHECK(s1.status == 130);
  CHECK(s1.output.find("epoch 1/2: stopped after batch 2 of 5; saved " + t.str("s")) !=
        std::string::npos);
  CHECK(s1.output.find("to continue: " + std::string(UNETCU_TEST_BIN_DIR) + "/unetcu " + common +
                       "--epochs 2 --out " + t.str("s") + " --resume") != std::string::npos);
  CHECK_FALSE(fs::exists(t.path / "s" / "best.safetensors"));  // no epoch was finished
  CHECK(read_file(t.str("s/metrics.jsonl")).empty());
  CHECK_FALSE(fs::exists(t.path / "s" / "report.html"));  // written when an epoch ends
  // The batches left follow from the batch size: another one is refused.
  RunResult wrong = run_tool(common + "--epochs 2 --batch-size 2 --resume --out " + t.str("s"));
  CHECK(wrong.status != 0);
  CHECK(wrong.output.find(t.str("s/last.safetensors") + " stopped in the middle of epoch 1; "
                          "resume with its --batch-size 4 (given: 2)") != std::string::npos);
  RunResult s2 = run_stopping(common + "--epochs 2 --resume --out " + t.str("s"), 5);
  INFO(s2.output);
  CHECK(s2.status == 130);
  CHECK(s2.output.find("resume: " + t.str("s/last.safetensors") + " in epoch 1 after batch 2") !=
        std::string::npos);
  CHECK(s2.output.find("epoch 2/2: stopped after batch 2 of 5") != std::string::npos);
  const std::string page1 = read_file(t.str("s/report.html"));  // of epoch 1, before the test
  CHECK(page1.find("1 of 2 epochs") != std::string::npos);
  CHECK(page1.find("has not run yet") != std::string::npos);
  RunResult s3 = run_tool(common + "--epochs 2 --resume --out " + t.str("s"));
  INFO(s3.output);
  REQUIRE(s3.status == 0);
  CHECK(metrics_without_timing(t.str("s/metrics.jsonl")) == ma);
  CHECK(read_file(t.str("s/last.safetensors")) == read_file(t.str("a/last.safetensors")));
  const std::string page2 = read_file(t.str("s/report.html"));  // the runs' epochs, the test
  CHECK(page2.find("2 of 2 epochs") != std::string::npos);
  CHECK(page2.find("test IoU <b>") != std::string::npos);
  // Stopped after an epoch's last step: the epoch ends (validation, checkpoints) first.
  RunResult e1 = run_stopping(common + "--epochs 2 --out " + t.str("e"), 5);
  CHECK(e1.status == 130);
  CHECK(e1.output.find("stopped after epoch 1; saved " + t.str("e")) != std::string::npos);
  CHECK(read_jsonl(t.str("e/metrics.jsonl")).size() == 1);
  REQUIRE(run_tool(common + "--epochs 2 --resume --out " + t.str("e")).status == 0);
  CHECK(read_file(t.str("e/last.safetensors")) == read_file(t.str("a/last.safetensors")));
}

TEST_CASE("init: the same seed gives the same bytes") {
  TempDir t("init");
  REQUIRE(run_tool("init --seed 4 --out " + t.str("a.safetensors")).status == 0);
  REQUIRE(run_tool("init --seed 4 --out " + t.str("b.safetensors")).status == 0);
  REQUIRE(run_tool("init --seed 5 --out " + t.str("c.safetensors")).status == 0);
  CHECK(read_file(t.str("a.safetensors")) == read_file(t.str("b.safetensors")));
  CHECK(read_file(t.str("a.safetensors")) != read_file(t.str("c.safetensors")));
}

TEST_CASE("bad input: clear errors naming the file, non-zero exit, nothing half-written") {
  TempDir t("bad");
  auto expect_error = [&](const std::string& args, const std::string& must_contain,
                          const std::string& cwd = "") {
    RunResult r = run_tool(args, cwd);
    INFO(args << "\n" << r.output);
    CHECK(r.status != 0);
    CHECK(r.output.find("error") != std::string::npos);
    CHECK(r.output.find(must_contain) != std::string::npos);
  };
  const std::string train = " --device cpu --image-size 32 --epochs 1 --out " + t.str("run");

  expect_error("train " + t.str("nowhere") + train, t.str("nowhere"));
  fs::create_directories(t.path / "empty" / "images");
  fs::create_directories(t.path / "empty" / "masks");
  expect_error("train " + t.str("empty") + train, "empty");

  REQUIRE(run_tool("synth " + t.str("d") + " --count 4 --width 64 --height 48").status == 0);
  // An image without a mask.
  fs::copy_file(t.path / "d" / "images" / "ISIC_0000000.jpg", t.path / "d" / "images" / "ISIC_9999999.jpg");
  expect_error("train " + t.str("d") + train, "ISIC_9999999");
  fs::remove(t.path / "d" / "images" / "ISIC_9999999.jpg");
  // A corrupt image.
  {
    std::string bytes = read_file(t.str("d/images/ISIC_0000001.jpg"));
    write_file_atomic(t.str("d/images/ISIC_0000001.jpg"), bytes.substr(0, 40));
  }
  expect_error("train " + t.str("d") + train, "ISIC_0000001.jpg");
  REQUIRE(run_tool("synth " + t.str("d") + " --count 4 --width 64 --height 48").status == 0);
  // A mask whose size differs from its image.
  REQUIRE(run_tool("synth " + t.str("other") + " --count 1 --width 40 --height 40").status == 0);
  fs::copy_file(t.path / "other" / "masks" / "ISIC_0000000_segmentation.png",
                t.path / "d" / "masks" / "ISIC_0000002_segmentation.png", fs::copy_options::overwrite_existing);
  expect_error("train " + t.str("d") + train, "ISIC_0000002_segmentation.png");
  REQUIRE(run_tool("synth " + t.str("d") + " --count 4 --width 64 --height 48").status == 0);
  // Too few images for the split.
  REQUIRE(run_tool("synth " + t.str("two") + " --count 2 --width 64 --height 48").status == 0);
  expect_error("train " + t.str("two") + train, "too few images");
  // Options.
  expect_error("train " + t.str("d") + " --image-size 100 --device cpu", "multiple of 32");
  expect_error("train " + t.str("d") + " --bogus 1", "--bogus");
  expect_error("train " + t.str("d") + " --epochs many", "--epochs");
  // The demo (no DATA) checks its options before generating images into the working folder.
  for (const std::string bad :
       {"--image-size 100", "--batch-size 0", "--limit -1", "--split odd"}) {
    expect_error("train --device cpu " + bad, bad.substr(2, 5), t.str(""));
    CHECK_FALSE(fs::exists(t.path / "runs"));
  }
  expect_error("eval " + t.str("d") + " --weights " + t.str("missing.safetensors"), "missing.safetensors");
  // A report whose folder cannot be made fails before anything is loaded or evaluated.
  expect_error("eval " + t.str("d") + " --weights " + t.str("missing.safetensors") + " --report " +
                   t.str("d/images/ISIC_0000000.jpg/page.html"),
               "cannot create --report's folder " + t.str("d/images/ISIC_0000000.jpg"));
  // So does a run folder that cannot be made, before the images are decoded.
  const RunResult no_folder = run_tool("train " + t.str("d") + " --device cpu --out " +
                                       t.str("d/images/ISIC_0000000.jpg/run"));
  CHECK(no_folder.status == 1);
  CHECK(no_folder.output.find("unetcu: error: cannot create the run folder " +
                              t.str("d/images/ISIC_0000000.jpg/run")) != std::string::npos);
  CHECK(no_folder.output.find("decoding") == std::string::npos);
  // None of the failures above left a checkpoint behind.
  CHECK_FALSE(fs::exists(t.path / "run" / "last.safetensors"));
  CHECK_FALSE(fs::exists(t.path / "run" / "best.safetensors"));
}

TEST_CASE("cli: eval --report gives each image's diagnosis from the metadata, and the IoU by "
          "diagnosis") {
  TempDir t("eval_report");
  REQUIRE(run_tool("synth " + t.str("d") + " --count 5 --width 40 --height 32").status == 0);
  write_file_atomic(t.str("d/HAM10000_metadata.csv"),
                    "lesion_id,image_id,dx\nHAM_1,ISIC_0000000,nv\nHAM_1,ISIC_0000001,nv\n"
                    "HAM_2,ISIC_0000002,mel\nHAM_3,ISIC_0000003,bcc\nHAM_4,ISIC_0000004,nv\n");
  REQUIRE(run_tool("init --seed 1 --out " + t.str("w.safetensors")).status == 0);
  const RunResult r = run_tool("eval " + t.str("d") + " --weights " + t.str("w.safetensors") +
                               " --split all --image-size 32 --device cpu --no-cache --report " +
                               t.str("page.html"));
  INFO(r.output);
  REQUIRE(r.status == 0);
  const std::string page = read_file(t.str("page.html"));
  CHECK(page.find("All 5 images, the lowest IoU first") != std::string::npos);
  CHECK(page.find("<b>ISIC_0000002</b> (mel)<br>") != std::string::npos);
  CHECK(page.find("<b>ISIC_0000004</b> (nv)<br>") != std::string::npos);
  for (const char* row : {"<td class=\"key\">bcc</td><td>1</td>",
                          "<td class=\"key\">mel</td><td>1</td>",
                          "<td class=\"key\">nv</td><td>3</td>"})
    CHECK_MESSAGE(page.find(row) != std::string::npos, row);
}

TEST_CASE("cli: stats prints the table and writes stats.json and the SVG plots") {
  TempDir t("stats");
  REQUIRE(run_tool("synth " + t.str("d") + " --count 5 --width 40 --height 32").status == 0);
  write_file_atomic(t.str("d/HAM10000_metadata.csv"),
                    "lesion_id,image_id,dx\nHAM_1,ISIC_0000000,nv\nHAM_1,ISIC_0000001,nv\n"
                    "HAM_2,ISIC_0000002,mel\nHAM_3,ISIC_0000003,bcc\nHAM_4,ISIC_0000004,nv\n");
  const RunResult r = run_tool("stats " + t.str("d") + " --out " + t.str("out"));
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output.find("layout kaggle") != std::string::npos);
  CHECK(r.output.find("pairs                 5") != std::string::npos);
  CHECK(r.output.find("image sizes           40x32: 5") != std::string::npos);
  CHECK(r.output.find("diagnosis nv          3 (60.0%)") != std::string::npos);
  CHECK(r.output.find("lesions               4 (images per lesion: 3 with 1, 1 with 2)") !=
        std::string::npos);
  const json::Value s = json::parse(read_file(t.str("out/stats.json")), "stats.json");
  CHECK(s.at("n_pairs").as_int64() == 5);
  CHECK(s.at("diagnoses").at("mel").as_int64() == 1);
  CHECK(s.at("lesion_fraction_per_image").as_object().size() == 5);
  int64_t in_histogram = 0;
  for (const auto& v : s.at("lesion_fraction").at("histogram").as_array()) in_histogram += v.as_int64();
  CHECK(in_histogram == 5);
  for (const char* svg : {"out/lesion_fraction.svg", "out/diagnosis.svg"}) {
    const std::string text = read_file(t.str(svg));
    CHECK(text.rfind("<svg", 0) == 0);
    CHECK(text.find("</svg>") != std::string::npos);
  }

  // Unpaired and unreadable files are reported, not fatal.
  fs::copy_file(t.path / "d" / "images" / "ISIC_0000000.jpg", t.path / "d" / "images" / "ISIC_0000009.jpg");
  write_file_atomic(t.str("d/masks/ISIC_0000001_segmentation.png"), "");
  const RunResult bad = run_tool("stats " + t.str("d"));
  INFO(bad.output);
  REQUIRE(bad.status == 0);
  CHECK(bad.output.find("unpaired files        1") != std::string::npos);
  CHECK(bad.output.find("ISIC_0000009.jpg") != std::string::npos);
  CHECK(bad.output.find("unusable pairs        1") != std::string::npos);
  CHECK(bad.output.find("ISIC_0000001_segmentation.png: empty file") != std::string::npos);

  const RunResult missing = run_tool("stats " + t.str("nowhere"));
  CHECK(missing.status == 1);
  CHECK(missing.output.find("unetcu: error: data folder not found") != std::string::npos);
}

TEST_CASE("cli: train --skip-bad leaves out an unreadable pair and trains on the rest") {
  TempDir t("skipbad");
  REQUIRE(run_tool("synth " + t.str("d") + " --count 6 --width 48 --height 32").status == 0);
  write_file_atomic(t.str("d/images/ISIC_0000003.jpg"), "not a picture");
  const std::string train = "train " + t.str("d") +
                            " --device cpu --image-size 32 --epochs 1 --batch-size 2"
                            " --val-frac 0.2 --test-frac 0.2 --out " + t.str("run");
  const RunResult plain = run_tool(train);
  CHECK(plain.status == 1);
  CHECK(plain.output.find("ISIC_0000003.jpg") != std::string::npos);
  const RunResult skip = run_tool(train + " --skip-bad");
  INFO(skip.output);
  CHECK(skip.status == 0);
  CHECK(skip.output.find("warning: --skip-bad: left out 1 of 6 pairs") != std::string::npos);
  CHECK(skip.output.find("ISIC_0000003.jpg") != std::string::npos);
  CHECK(fs::exists(t.path / "run" / "test.json"));
}
