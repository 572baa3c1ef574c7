// tests/cpu/test_tta.cpp: test-time augmentation (predict_probabilities with tta, eval and
// predict --tta) and the host metrics it is scored with: the way back from a transformed map,
// the averaged prediction's symmetry, the plain prediction's bits, and the host metrics
// against the session's own eval_step.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cli_util.h"
#include "data/image.h"
#include "data/loader.h"
#include "engine/cpu_backend.h"
#include "engine/fileio.h"
#include "engine/json.h"
#include "model/checkpoint.h"
#include "model/session.h"
#include "tools/unetcu/commands.h"

using namespace unetcu;

namespace {

// n size x size RGB images and masks of a fixed pseudo-random pattern; each mask a rectangle
// off the image's centre (so that no symmetry of the square maps it onto itself).
struct Batch {
  int n, size;
  std::vector<uint8_t> images, masks;
  Batch(int n_, int size_) : n(n_), size(size_) {
    uint64_t state = 11;
    for (int i = 0; i < n * size * size * 3; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      images.push_back(uint8_t(state >> 56));
    }
    for (int i = 0; i < n; ++i)
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x)
          masks.push_back(x >= 3 + i && x < size / 2 + 5 && y >= 2 && y < size / 2);
  }
};

}  // namespace

TEST_CASE("tta: dihedral_add_back takes every transformed pixel back to where it came from") {
  const int S = 5;
  std::vector<uint8_t> img(S * S);
  for (int i = 0; i < S * S; ++i) img[size_t(i)] = uint8_t(i + 1);
  for (int t = 0; t < 8; ++t) {
    CAPTURE(t);
    std::vector<uint8_t> turned(S * S);
    data::dihedral_copy(turned.data(), img.data(), S, 1, t);
    std::vector<float> seen(turned.begin(), turned.end()), acc(S * S, 0.5f);
    data::dihedral_add_back(acc.data(), seen.data(), S, t);
    for (int i = 0; i < S * S; ++i) CHECK(acc[size_t(i)] == float(img[size_t(i)]) + 0.5f);
  }
}

TEST_CASE("tta: plain probabilities are the logits' mask_sigmoid; averaged ones are symmetric") {
  const int size = 32;
  const Batch b(2, size);
  auto be = make_cpu_backend();
  ModelSession session(*be, size, size);
  session.set_state(initial_state(session.spec(), 4));
  const size_t pixels = size_t(size) * size;

  const std::vector<float> logits = session.predict(b.images.data(), b.n);
  const std::vector<float> plain = cli::predict_probabilities(session, b.images.data(), b.n, false);
  REQUIRE(plain.size() == logits.size());
  for (size_t k = 0; k < plain.size(); ++k) {
    CHECK(plain[k] == mask_sigmoid(logits[k]));
    CHECK((plain[k] > 0.5f) == predicted_positive(logits[k]));
  }

  // The mean over the 8 symmetries of the images turned by any symmetry u is the mean for the
  // images themselves turned by u: the same 8 predictions, summed in another order.
  const std::vector<float> mean = cli::predict_probabilities(session, b.images.data(), b.n, true);
  REQUIRE(mean.size() == plain.size());
  double differs_from_plain = 0;
  for (size_t k = 0; k < mean.size(); ++k) differs_from_plain += std::abs(mean[k] - plain[k]);
  CHECK(differs_from_plain > 1e-3);  // a fresh model is far from symmetric
  // Its total is the mean of the 8 predictions' totals (where each pixel goes aside): all 8
  // symmetries, each counted once, divided by 8.
  double total_of_mean = 0, total_of_eight = 0;
  for (const float v : mean) total_of_mean += v;
  for (int t = 0; t < 8; ++t) {
    std::vector<uint8_t> turned(b.images.size());
    for (int i = 0; i < b.n; ++i)
      data::dihedral_copy(turned.data() + size_t(i) * pixels * 3,
                          b.images.data() + size_t(i) * pixels * 3, size, 3, t);
    for (const float v : cli::predict_probabilities(session, turned.data(), b.n, false))
      total_of_eight += v;
  }
  CHECK(total_of_mean == doctest::Approx(total_of_eight / 8).epsilon(1e-5));
  for (const int u : {1, 4, 6}) {
    CAPTURE(u);
    std::vector<uint8_t> turned(b.images.size());
    for (int i = 0; i < b.n; ++i)
      data::dihedral_copy(turned.data() + size_t(i) * pixels * 3,
                          b.images.data() + size_t(i) * pixels * 3, size, 3, u);
    const std::vector<float> of_turned =
        cli::predict_probabilities(session, turned.data(), b.n, true);
    for (int i = 0; i < b.n; ++i) {
      // Turn the mean of the originals by u (as floats: the way back's inverse, pixel by pixel).
      std::vector<float> expect(pixels, 0.0f), got(of_turned.begin() + ptrdiff_t(i * pixels),
                                                   of_turned.begin() + ptrdiff_t((i + 1) * pixels));
      std::vector<float> back(pixels, 0.0f);
      data::dihedral_add_back(back.data(), got.data(), size, u);  // of_turned, turned back
      for (size_t k = 0; k < pixels; ++k)
        CHECK(back[k] == doctest::Approx(mean[size_t(i) * pixels + k]).epsilon(1e-5));
    }
  }
}

TEST_CASE("tta: host metrics of the network's own probabilities are eval_step's") {
  const int size = 32;
  const Batch b(3, size);
  auto be = make_cpu_backend();
  ModelSession session(*be, size, size);
  HostModelState model = initial_state(session.spec(), 2);
  // The head's bias moved so that some pixels of each image are predicted lesion and some not.
  const ParamEntry* bias = session.spec().find("segmentation_head.0.bias");
  REQUIRE(bias != nullptr);
  session.set_state(model);
  std::vector<float> logits = session.predict(b.images.data(), b.n);
  std::nth_element(logits.begin(), logits.begin() + ptrdiff_t(logits.size() / 2), logits.end());
  model.params[size_t(bias->offset)] -= logits[logits.size() / 2];
  session.set_state(model);

  const StepResult device = session.eval_step(b.images.data(), b.masks.data(), b.n);
  const std::vector<float> p = cli::predict_probabilities(session, b.images.data(), b.n, false);
  const StepResult host =
      cli::metrics_from_probabilities(p.data(), b.masks.data(), b.n, int64_t(size) * size);
  REQUIRE(host.counts.size() == device.counts.size());
  for (size_t i = 0; i < host.counts.size(); ++i) {
    CAPTURE(i);
    CHECK(host.counts[i].tp == device.counts[i].tp);
    CHECK(host.counts[i].fp == device.counts[i].fp);
    CHECK(host.counts[i].fn == device.counts[i].fn);
    CHECK(host.counts[i].tn == device.counts[i].tn);
    CHECK(host.counts[i].tp > 0);
    CHECK(host.counts[i].fp + host.counts[i].tn > 0);
  }
  CHECK(host.loss == doctest::Approx(device.loss).epsilon(1e-6));
  CHECK(host.loss > 0.01f);
}

TEST_CASE("tta: eval --tta and predict --tta") {
  test::TempDir t("tta");
  REQUIRE(test::run_tool("synth " + t.str("d") + " --count 5 --width 40 --height 32").status == 0);
  REQUIRE(test::run_tool("init --seed 1 --out " + t.str("w.safetensors")).status == 0);
  const std::string eval = "eval " + t.str("d") + " --weights " + t.str("w.safetensors") +
                           " --split all --image-size 32 --device cpu --no-cache";
  auto loss_of = [](const test::RunResult& r) {
    const size_t brace = r.output.find('{');
    REQUIRE(brace != std::string::npos);
    return json::parse(r.output.substr(brace, r.output.find('\n', brace) - brace))
        .at("loss")
        .as_double();
  };
  const test::RunResult plain = test::run_tool(eval + " 2>/dev/null");
  const test::RunResult tta = test::run_tool(eval + " --tta --report " + t.str("page.html"));
  INFO(tta.output);
  REQUIRE(plain.status == 0);
  REQUIRE(tta.status == 0);
  CHECK(tta.output.find("test-time augmentation") != std::string::npos);
  // Another prediction (a fresh model is far from symmetric), so another loss; its IoU is 0
  // either way, the model predicting no lesion anywhere.
  CHECK(std::abs(loss_of(tta) - loss_of(plain)) > 1e-6);
  CHECK(read_file(t.str("page.html")).find("each the mean of its 8 flips and quarter turns") !=
        std::string::npos);

  // predict --tta: its probabilities are predict_probabilities' with tta, at the same size.
  const test::RunResult pr =
      test::run_tool("predict --weights " + t.str("w.safetensors") + " --image-size 32 " +
                     "--device cpu --tta --probs --out " + t.str("out") + " " + t.str("d"));
  INFO(pr.output);
  REQUIRE(pr.status == 0);
  const std::string npy = read_file(t.str("out/ISIC_0000000_probs.npy"));
  REQUIRE(npy.size() == 128 + 32 * 32 * 4);
  std::vector<float> written(32 * 32);
  std::memcpy(written.data(), npy.data() + 128, written.size() * 4);
  auto be = make_cpu_backend();
  ModelSession session(*be, 32, 32);
  session.set_state(load_checkpoint(t.str("w.safetensors"), unet_spec()).model);
  std::vector<uint8_t> image(32 * 32 * 3);
  const data::Image original = data::read_image(t.str("d/images/ISIC_0000000.jpg"), 3);
  data::resize_image(image.data(), 32, 32, original.pixels.data(), original.width,
                     original.height, 3);
  const std::vector<float> expect = cli::predict_probabilities(session, image.data(), 1, true);
  double max_diff = 0;
  for (size_t k = 0; k < expect.size(); ++k)
    max_diff = std::max(max_diff, double(std::abs(expect[k] - written[k])));
  CHECK(max_diff < 1e-5);  // a batch of 5 there, of 1 here: the GEMMs' shapes differ
}
