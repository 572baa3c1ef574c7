// tests/cpu/test_report.cpp: the run report (tools/unetcu/report.h) and its charts
// (tools/unetcu/charts.h) as functions: base64 against RFC 4648's vectors, the gallery's pick,
// the line chart's geometry, the page's parts before and after the test, and the gallery's
// images against the session's own predictions. The tool's writing of report.html is tested
// with the training run in test_cli.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <regex>
#include <sstream>

#include "cli_util.h"
#include "data/image.h"
#include "data/prediction.h"
#include "engine/cpu_backend.h"
#include "model/checkpoint.h"
#include "model/session.h"
#include "tools/unetcu/charts.h"
#include "tools/unetcu/report.h"

using namespace unetcu;
using namespace unetcu::cli;
using test::count_of;

namespace {

// The (x, y) points of each polyline of an SVG, in order.
std::vector<std::vector<std::pair<double, double>>> polylines(const std::string& svg) {
  std::vector<std::vector<std::pair<double, double>>> out;
  const std::regex line("<polyline[^>]* points=\"([^\"]*)\"");
  for (std::sregex_iterator it(svg.begin(), svg.end(), line), end; it != end; ++it) {
    out.emplace_back();
    std::istringstream in((*it)[1].str());
    std::string point;
    while (in >> point) {
      const size_t comma = point.find(',');
      out.back().emplace_back(std::stod(point.substr(0, comma)),
                              std::stod(point.substr(comma + 1)));
    }
  }
  return out;
}

// The inverse of base64(), for the test only: the page's images are read back with it.
std::string unbase64(const std::string& text) {
  const std::string digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t bits = 0;
  int n = 0;
  for (const char c : text) {
    if (c == '=') break;
    const size_t v = digits.find(c);
    REQUIRE(v != std::string::npos);
    bits = bits << 6 | uint32_t(v);
    if ((n += 6) >= 8) {
      n -= 8;
      out += char((bits >> n) & 0xff);
    }
  }
  return out;
}

json::Value epoch_line(int epoch, double val_iou) {
  json::Object m;
  m.emplace_back("epoch", epoch);
  m.emplace_back("train_loss", 0.5 - 0.1 * epoch);
  m.emplace_back("train_iou", 0.4 + 0.1 * epoch);
  m.emplace_back("val_loss", 0.6 - 0.1 * epoch);
  m.emplace_back("val_iou", val_iou);
  m.emplace_back("val_dice", val_iou + 0.05);
  m.emplace_back("images_per_sec", 12.5);
  m.emplace_back("epoch_seconds", 61.0);
  return json::Value(m);
}

}  // namespace

TEST_CASE("report: base64 is RFC 4648's") {
  // RFC 4648, section 10.
  CHECK(base64("") == "");
  CHECK(base64("f") == "Zg==");
  CHECK(base64("fo") == "Zm8=");
  CHECK(base64("foo") == "Zm9v");
  CHECK(base64("foob") == "Zm9vYg==");
  CHECK(base64("fooba") == "Zm9vYmE=");
  CHECK(base64("foobar") == "Zm9vYmFy");
  // Bytes above 127 (a PNG's are), and the last two digits of the alphabet.
  CHECK(base64(std::string("\xff\xfe\xfb", 3)) == "//77");
  CHECK(base64(std::string("\x00\x10\x83", 3)) == "ABCD");
}

TEST_CASE("report: the gallery shows the lowest and the highest IoUs, each image once") {
  const std::vector<double> ious = {0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8};
  GalleryPick p = pick_gallery(ious, 2);
  CHECK(p.worst == std::vector<int>{1, 5});
  CHECK(p.best == std::vector<int>{2, 6});
  p = pick_gallery(ious, 3);
  CHECK(p.worst == std::vector<int>{1, 5, 3});
  CHECK(p.best == std::vector<int>{2, 6, 4});
  // No more than twice per_side: all of them, lowest first, in one list.
  p = pick_gallery(ious, 4);
  CHECK(p.worst == std::vector<int>{1, 5, 3, 0, 4, 6, 2});
  CHECK(p.best.empty());
  // Ties keep the images' order on both sides.
  p = pick_gallery({1.0, 1.0, 1.0, 1.0, 1.0}, 2);
  CHECK(p.worst == std::vector<int>{0, 1});
  CHECK(p.best == std::vector<int>{3, 4});
  CHECK(pick_gallery({}, 6).worst.empty());
}

TEST_CASE("report: a line chart puts higher values higher and later epochs further right") {
  const std::string svg = line_chart_svg(
      "t", "epoch", {1, 2, 3, 4},
      {{"rising <a&b>", "#123456", {0.2, 0.5, NAN, 0.8}}, {"flat", "red", {0.4, 0.4, 0.4, 0.4}}});
  const auto lines = polylines(svg);
  REQUIRE(lines.size() == 2);
  REQUIRE(lines[0].size() == 3);  // the NaN is left out
  REQUIRE(lines[1].size() == 4);
  CHECK(lines[0][0].first < lines[0][1].first);
  CHECK(lines[0][1].first < lines[0][2].first);
  CHECK(lines[0][0].second > lines[0][1].second);  // SVG's y grows downwards
  CHECK(lines[0][1].second > lines[0][2].second);
  // The flat line lies at the same height throughout, between the other's ends (0.2 and 0.8).
  for (const auto& [x, y] : lines[1]) CHECK(y == doctest::Approx(lines[1][0].second));
  CHECK(lines[1][0].second < lines[0][0].second);
  CHECK(lines[1][0].second > lines[0][2].second);
  // Same x for the same epoch in both lines (epoch 4: the last point of each).
  CHECK(lines[0][2].first == doctest::Approx(lines[1][3].first));
  // Names are escaped; a dot per point says its value.
  CHECK(svg.find("rising &lt;a&amp;b&gt;") != std::string::npos);
  CHECK(svg.find("<a&b>") == std::string::npos);
  CHECK(count_of(svg, "<circle") == 7);
  CHECK(svg.find("epoch 4: 0.8000") != std::string::npos);
  CHECK(svg.find("nan") == std::string::npos);
  // The y ticks are round and span the values: 0.2 and 0.8 are among the labels.
  CHECK(svg.find(">0.2</text>") != std::string::npos);
  CHECK(svg.find(">0.8</text>") != std::string::npos);

  // One epoch only: one dot, no NaN anywhere, the point inside the plot.
  const std::string one = line_chart_svg("t", "epoch", {1}, {{"a", "blue", {0.3}}});
  CHECK(count_of(one, "<circle") == 1);
  CHECK(one.find("nan") == std::string::npos);
  CHECK(one.find("inf") == std::string::npos);
}

TEST_CASE("report: a scatter chart places each point by both values, clamped to the ranges") {
  const std::string svg = scatter_chart_svg(
      "t", "x", "y", {{0, 0, "origin"}, {50, 0.5, "a<b"}, {100, 1, "corner"}, {150, -1, "out"}},
      0, 100, 0, 1);
  const std::regex dot("<circle cx=\"([-0-9.e]+)\" cy=\"([-0-9.e]+)\"");
  std::vector<std::pair<double, double>> at;
  for (std::sregex_iterator it(svg.begin(), svg.end(), dot), end; it != end; ++it)
    at.emplace_back(std::stod((*it)[1].str()), std::stod((*it)[2].str()));
  REQUIRE(at.size() == 4);
  CHECK(at[0].first < at[1].first);
  CHECK(at[1].first < at[2].first);
  CHECK(at[0].second > at[1].second);
  CHECK(at[1].second > at[2].second);
  // The middle point is in the middle; the one outside sits on the edges (x 100, y 0).
  CHECK(at[1].first == doctest::Approx((at[0].first + at[2].first) / 2));
  CHECK(at[1].second == doctest::Approx((at[0].second + at[2].second) / 2));
  CHECK(at[3].first == doctest::Approx(at[2].first));
  CHECK(at[3].second == doctest::Approx(at[0].second));
  CHECK(svg.find("<title>a&lt;b</title>") != std::string::npos);
  for (const char* tick : {">0</text>", ">50</text>", ">100</text>", ">0.0</text>", ">1.0</text>"})
    CHECK_MESSAGE(svg.find(tick) != std::string::npos, tick);
}

TEST_CASE("report: the page before the test and after it") {
  ReportData r;
  r.title = "unetcu run runs/a<b";
  r.summary = "data data/HAM & co";
  r.config = {{"data", "data/HAM & co"}, {"n_train", 100}, {"epochs", "20"},
              {"image_size_used", 128}, {"epochs_used", 5}};
  r.epochs = {epoch_line(1, 0.61), epoch_line(2, 0.74), epoch_line(3, 0.70)};
  r.epochs_planned = 5;

  std::string page = render_report(r);
  CHECK(page.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(page.find("the test has not run yet") != std::string::npos);
  CHECK(page.find("3 of 5 epochs; best validation IoU 0.7400 at epoch 2") != std::string::npos);
  CHECK(page.find("<h1>unetcu run runs/a&lt;b</h1>") != std::string::npos);
  CHECK(page.find("1 class); data data/HAM &amp; co</p>") != std::string::npos);
  CHECK(page.find("<td class=\"val\">data/HAM &amp; co</td>") != std::string::npos);
  // An option the run used otherwise shows the value used, once; a used value without its
  // option shows as it is.
  CHECK(page.find("<td class=\"key\">epochs</td><td class=\"val\">5</td>") != std::string::npos);
  CHECK(page.find("epochs_used") == std::string::npos);
  CHECK(page.find("<td class=\"key\">image_size_used</td><td class=\"val\">128</td>") !=
        std::string::npos);
  CHECK(page.find("runs/a<b") == std::string::npos);
  CHECK(count_of(page, "<svg") == 2);        // the curves
  CHECK(count_of(page, "<tr><td>") == 2);    // the epochs' rows but the best one...
  CHECK(count_of(page, "<tr class=\"best\"><td>2</td>") == 1);  // ...which is epoch 2
  CHECK(count_of(page, "<polyline") == 5);   // train/val loss; train IoU, val IoU, val Dice
  CHECK(page.find("<img") == std::string::npos);
  CHECK(page.find("1:01") != std::string::npos);  // an epoch's 61 seconds

  // After the test: its result, the histogram, and the gallery's images readable back.
  cli::EvalResult result;
  result.iou = 0.7123;
  result.dice = 0.8;
  result.loss = 0.2;
  result.n_images = 4;
  r.result = result;
  r.best_epoch = 2;
  r.ious = {0.05, 0.55, 0.95, 1.0};
  r.lesion_shares = {0.25, 0.5, 0.1, 0.0};
  r.names = {"ISIC_a", "ISIC_b", "ISIC_c", "ISIC_d"};
  const uint8_t pixels[2 * 2 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  const std::string png = data::encode_png(2, 2, 3, pixels);
  r.worst = {{"ISIC_<1>", "mel", ConfusionCounts{1, 1, 0, 2}, png},
             {"ISIC_2", "", ConfusionCounts{0, 0, 0, 4}, png}};
  page = render_report(r);
  CHECK(page.find("By diagnosis") == std::string::npos);  // none known
  CHECK(page.find("has not run yet") == std::string::npos);
  CHECK(page.find("test IoU <b>0.7123</b>") != std::string::npos);
  CHECK(page.find("the weights of epoch 2") != std::string::npos);
  CHECK(page.find("IoU per image (4 test images)") != std::string::npos);
  CHECK(page.find("IoU against the lesion's size") != std::string::npos);
  CHECK(page.find("<title>ISIC_a: lesion 25.0%, IoU 0.050</title>") != std::string::npos);
  CHECK(page.find("<title>ISIC_d: lesion 0.0%, IoU 1.000</title>") != std::string::npos);
  CHECK(page.find("All 2 test images") != std::string::npos);
  CHECK(page.find("<b>ISIC_&lt;1&gt;</b> (mel)<br>") != std::string::npos);
  CHECK(page.find("<b>ISIC_2</b><br>") != std::string::npos);
  // The first image: IoU 1/2, Dice 2/3, true lesion 1 of 4 pixels, predicted 2 of 4.
  CHECK(page.find("IoU 0.500 &middot; Dice 0.667<br>lesion: true 25.0%, predicted 50.0%") !=
        std::string::npos);
  // An image with no lesion, true or predicted, counts 1.
  CHECK(page.find("IoU 1.000 &middot; Dice 1.000<br>lesion: true 0.0%, predicted 0.0%") !=
        std::string::npos);
  const std::regex uri("src=\"data:image/png;base64,([A-Za-z0-9+/=]*)\"");
  int images = 0;
  for (std::sregex_iterator it(page.begin(), page.end(), uri), end; it != end; ++it, ++images) {
    const std::string bytes = unbase64((*it)[1].str());
    const data::Image img = data::decode_image(reinterpret_cast<const uint8_t*>(bytes.data()),
                                               bytes.size(), "page", 3);
    REQUIRE(img.width == 2);
    CHECK(std::equal(img.pixels.begin(), img.pixels.end(), pixels));
  }
  CHECK(images == 2);
  // The histogram: 10 bins of 0.1, 1.0 in the last; the count is written above each bar.
  const size_t hist = page.find("IoU per image");
  const std::string bars = page.substr(hist, page.find("</svg>", hist) - hist);
  std::vector<int> counts;
  const std::regex count_text("font-size=\"10\">([0-9]+)</text>");
  for (std::sregex_iterator it(bars.begin(), bars.end(), count_text), end; it != end; ++it)
    counts.push_back(std::stoi((*it)[1].str()));
  CHECK(counts == std::vector<int>{1, 0, 0, 0, 0, 1, 0, 0, 0, 2});

  // With a best side too: two galleries. And with diagnoses: the IoU by diagnosis.
  r.best = {{"ISIC_3", "nv", ConfusionCounts{4, 0, 0, 0}, png}};
  r.dxs = {"mel", "nv", "mel", ""};
  page = render_report(r);
  CHECK(page.find("The 2 with the lowest IoU") != std::string::npos);
  CHECK(page.find("The 1 with the highest IoU") != std::string::npos);
  CHECK(page.find("<tr><td class=\"key\">mel</td><td>2</td><td>0.5000</td><td>0.0500</td></tr>") !=
        std::string::npos);
  CHECK(page.find("<tr><td class=\"key\">nv</td><td>1</td><td>0.5500</td><td>0.5500</td></tr>") !=
        std::string::npos);
  CHECK(page.find("<tr><td class=\"key\">unknown</td><td>1</td><td>1.0000</td>") !=
        std::string::npos);

  // An evaluation's page (eval --report): no epochs, no curves, the part it evaluated named.
  ReportData e;
  e.title = "unetcu eval w.safetensors";
  e.part = "validation";
  e.result = result;
  e.ious = r.ious;
  e.worst = r.worst;
  page = render_report(e);
  CHECK(page.find("validation IoU <b>0.7123</b>, Dice 0.8000, loss 0.2000 on 4 images</p>") !=
        std::string::npos);
  CHECK(page.find("epochs") == std::string::npos);
  CHECK(page.find("<polyline") == std::string::npos);
  CHECK(page.find("<h2>Validation images</h2>") != std::string::npos);
  CHECK(page.find("IoU per image (4 validation images)") != std::string::npos);
  CHECK(page.find("All 2 validation images, the lowest IoU first") != std::string::npos);
  e.part = "";  // eval --split all
  page = render_report(e);
  CHECK(page.find("<p class=\"big\">IoU <b>0.7123</b>") != std::string::npos);
  CHECK(page.find("<h2>Images</h2>") != std::string::npos);
}

TEST_CASE("report: the gallery draws each image's true and predicted outlines from the session") {
  // Three 32x32 images with a square lesion each; the model's head bias moved so that about
  // half of the pixels are predicted lesion (a fresh model predicts one class almost
  // everywhere, which would leave no predicted outline to check).
  const int size = 32;
  data::Dataset ds;
  ds.n = 3;
  ds.size = size;
  ds.stems = {"a", "b", "c"};
  ds.allocate();
  uint64_t state = 7;
  for (int i = 0; i < ds.n; ++i) {
    for (size_t k = 0; k < ds.image_bytes(); ++k) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      ds.writable_image(i)[k] = uint8_t(state >> 56);
    }
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x)
        ds.writable_mask(i)[y * size + x] = x >= 4 + 3 * i && x < 20 + 3 * i && y >= 6 && y < 24;
  }
  auto be = make_cpu_backend();
  ModelSession session(*be, size, size);
  HostModelState model = initial_state(session.spec(), 3);
  {
    session.set_state(model);
    std::vector<float> logits = session.predict(ds.image(0), 1);
    std::nth_element(logits.begin(), logits.begin() + ptrdiff_t(logits.size() / 2), logits.end());
    const ParamEntry* bias = session.spec().find("segmentation_head.0.bias");
    REQUIRE(bias != nullptr);
    model.params[size_t(bias->offset)] -= logits[logits.size() / 2];
    session.set_state(model);
  }
  // Images 2 and 0: the order differs from the dataset's. In batches of one, and in one batch
  // of 4 filled up with copies of the last image (the plan the evaluation used).
  const std::vector<int> indices = {2, 0};
  const std::vector<ConfusionCounts> counts = {{1, 2, 3, 4}, {5, 6, 7, 8}};
  std::vector<uint8_t> padded;
  for (const int index : {2, 0, 0, 0})
    padded.insert(padded.end(), ds.image(index), ds.image(index) + ds.image_bytes());
  const std::vector<float> padded_logits = session.predict(padded.data(), 4);
  for (const int batch_size : {1, 4}) {
    CAPTURE(batch_size);
    const std::vector<GalleryImage> g = gallery_images(session, ds, indices, counts, batch_size);
    REQUIRE(g.size() == 2);
    for (size_t j = 0; j < g.size(); ++j) {
      const int index = indices[j];
      CAPTURE(index);
      CHECK(g[j].stem == ds.stems[size_t(index)]);
      CHECK(g[j].counts.tp == counts[j].tp);
      CHECK(g[j].counts.tn == counts[j].tn);
      const data::Image img = data::decode_image(
          reinterpret_cast<const uint8_t*>(g[j].png.data()), g[j].png.size(), g[j].stem, 3);
      REQUIRE(img.width == size);
      REQUIRE(img.height == size);
      // The session's own prediction of this image, in a batch of the same size.
      const size_t pixels = ds.mask_bytes();
      const std::vector<float> logits =
          batch_size == 1 ? session.predict(ds.image(index), 1)
                          : std::vector<float>(padded_logits.begin() + ptrdiff_t(j * pixels),
                                               padded_logits.begin() + ptrdiff_t((j + 1) * pixels));
      std::vector<uint8_t> predicted(pixels);
      const std::vector<uint8_t> truth(ds.mask(index), ds.mask(index) + pixels);
      for (size_t k = 0; k < pixels; ++k) predicted[k] = predicted_positive(logits[k]);
      const auto predicted_edge = data::outline(predicted, size, size, 1);
      const auto true_edge = data::outline(truth, size, size, 1);
      int n_predicted_edge = 0, n_true_edge = 0, n_plain = 0;
      for (size_t k = 0; k < pixels; ++k) {
        const uint8_t* got = &img.pixels[3 * k];
        const uint8_t* want = predicted_edge[k] ? data::kPredictedOutlineRgb
                              : true_edge[k]    ? data::kTrueOutlineRgb
                                                : ds.image(index) + 3 * k;
        n_predicted_edge += predicted_edge[k];
        n_true_edge += true_edge[k] && !predicted_edge[k];
        n_plain += !predicted_edge[k] && !true_edge[k];
        CHECK_MESSAGE(std::equal(got, got + 3, want), "pixel ", k);
      }
      CHECK(n_predicted_edge > 0);
      CHECK(n_true_edge > 0);
      CHECK(n_plain > 0);
    }
  }
}
