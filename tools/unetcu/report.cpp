// tools/unetcu/report.cpp: see report.h.
#include "tools/unetcu/report.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <sstream>

#include "data/prediction.h"
#include "engine/error.h"
#include "engine/fileio.h"
#include "tools/unetcu/charts.h"
#include "tools/unetcu/progress.h"

namespace unetcu::cli {
namespace {

double number(const json::Value& o, std::string_view key) {
  const json::Value* v = o.is_object() ? o.find(key) : nullptr;
  return v != nullptr && v->is_number() ? v->as_double() : NAN;
}

// The share of an image's pixels that `of` counts (0 for an image of no pixels).
double share(int64_t of, const ConfusionCounts& c) {
  const int64_t pixels = c.tp + c.fp + c.fn + c.tn;
  return pixels > 0 ? double(of) / double(pixels) : 0.0;
}

// An epoch's time as the progress lines print it; "-" where metrics.jsonl has none.
std::string duration(double seconds) {
  return std::isfinite(seconds) ? format_duration(seconds) : "-";
}

// A config value as a person reads it: strings without their quotes.
std::string plain(const json::Value& v) { return v.is_string() ? v.as_string() : json::dump(v); }

constexpr const char* kStyle = R"(body{font-family:sans-serif;margin:24px auto;max-width:1100px}
body{color:#222}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
.sub{color:#555;margin-top:0}.big{font-size:18px}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;text-align:right}
th{background:#f0f0f0}tr.best td{font-weight:bold}td.key{text-align:left;color:#555}
td.val{text-align:left}.gallery{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;width:256px;font-size:12px}figure img{width:256px;display:block}
figcaption{margin-top:4px;line-height:1.4}.note{color:#555;font-size:13px}
)";

void gallery_html(std::ostringstream& os, const std::vector<GalleryImage>& images) {
  os << "<div class=\"gallery\">\n";
  for (const GalleryImage& g : images) {
    const ConfusionCounts& c = g.counts;
    os << "<figure><img alt=\"" << xml_escape(g.stem) << "\" src=\"data:image/png;base64,"
       << base64(g.png) << "\"><figcaption><b>" << xml_escape(g.stem) << "</b>"
       << (g.dx.empty() ? std::string() : " (" + xml_escape(g.dx) + ")") << "<br>IoU "
       << fixed(image_iou(c), 3) << " &middot; Dice " << fixed(image_dice(c), 3)
       << "<br>lesion: true " << percent(share(c.tp + c.fn, c)) << ", predicted "
       << percent(share(c.tp + c.fp, c))
       << "</figcaption></figure>\n";
  }
  os << "</div>\n";
}

// The images' IoU by diagnosis (HAM10000's akiec, bcc, bkl, df, mel, nv, vasc): which kinds
// of lesion the model segments worse. Nothing where no image's diagnosis is known.
std::string by_diagnosis(const std::vector<double>& ious, const std::vector<std::string>& dxs) {
  if (std::all_of(dxs.begin(), dxs.end(), [](const std::string& d) { return d.empty(); }))
    return "";
  std::map<std::string, std::vector<double>> groups;
  for (size_t i = 0; i < ious.size() && i < dxs.size(); ++i)
    groups[dxs[i].empty() ? "unknown" : dxs[i]].push_back(ious[i]);
  std::ostringstream os;
  os << "<h3>By diagnosis</h3>\n<table>\n<tr><th>diagnosis</th><th>images</th>"
     << "<th>mean IoU</th><th>lowest IoU</th></tr>\n";
  for (const auto& [dx, values] : groups)
    os << "<tr><td class=\"key\">" << xml_escape(dx) << "</td><td>" << values.size() << "</td><td>"
       << fixed(std::accumulate(values.begin(), values.end(), 0.0) / double(values.size()), 4)
       << "</td><td>" << fixed(*std::min_element(values.begin(), values.end()), 4)
       << "</td></tr>\n";
  os << "</table>\n";
  return os.str();
}

// Each image's IoU against its lesion's share of the image: small lesions are where a
// segmentation model tends to fail, and this shows whether this one does.
std::string by_size(const ReportData& r) {
  if (r.lesion_shares.size() != r.ious.size()) return "";
  std::vector<ChartPoint> points;
  for (size_t i = 0; i < r.ious.size(); ++i) {
    const std::string name = i < r.names.size() ? r.names[i] + ": " : std::string();
    points.push_back({100.0 * r.lesion_shares[i], r.ious[i],
                      name + "lesion " + percent(r.lesion_shares[i]) + ", IoU " +
                          fixed(r.ious[i], 3)});
  }
  return scatter_chart_svg("IoU against the lesion's size", "true lesion, % of the image", "IoU",
                           points, 0, 100, 0, 1);
}

}  // namespace

std::string base64(std::string_view bytes) {
  static const char kDigits[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = 0;
    for (size_t k = 0; k < 3; ++k)
      v = v << 8 | (k < n ? uint32_t(uint8_t(bytes[i + k])) : 0u);
    for (size_t k = 0; k < 4; ++k)
      out += k <= n ? kDigits[(v >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

std::vector<json::Value> read_metrics(const std::string& path) {
  std::vector<json::Value> out;
  std::istringstream in(read_file(path));
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json::Value v = json::parse(line, path + " line " + std::to_string(line_no));
    if (!v.is_object()) fail(path, " line ", line_no, ": expected a JSON object per line");
    out.push_back(std::move(v));
  }
  return out;
}

GalleryPick pick_gallery(const std::vector<double>& ious, int per_side) {
  std::vector<int> order(ious.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return ious[size_t(a)] < ious[size_t(b)]; });
  GalleryPick pick;
  if (order.size() <= size_t(2 * per_side)) {
    pick.worst = order;
    return pick;
  }
  pick.worst.assign(order.begin(), order.begin() + per_side);
  // Highest first; among equal IoUs, the earlier image first (as in `worst`).
  std::vector<int> top(order.end() - per_side, order.end());
  std::stable_sort(top.begin(), top.end(),
                   [&](int a, int b) { return ious[size_t(a)] > ious[size_t(b)]; });
  pick.best = top;
  return pick;
}

std::vector<GalleryImage> gallery_images(ModelSession& session, const data::Dataset& ds,
                                         const std::vector<int>& indices,
                                         const std::vector<ConfusionCounts>& counts,
                                         int batch_size, bool tta) {
  const int size = ds.size;
  const size_t pixels = ds.mask_bytes();
  const int radius = std::max(1, size / 256);  // as predict --overlay
  std::vector<GalleryImage> out;
  // Whole batches of batch_size, the rest filled with copies of the last image: the session
  // already has the plan of that size (the pass over the images used it), and on a GPU a new
  // batch size would cost a new plan and its convolutions' algorithm timing. In eval mode
  // every image's logits are its own, whatever shares its batch.
  std::vector<uint8_t> batch(size_t(batch_size) * ds.image_bytes());
  for (size_t first = 0; first < indices.size(); first += size_t(batch_size)) {
    const int n = int(std::min(indices.size() - first, size_t(batch_size)));
    for (int i = 0; i < batch_size; ++i) {
      const uint8_t* image = ds.image(indices[first + size_t(std::min(i, n - 1))]);
      std::copy(image, image + ds.image_bytes(),
                batch.begin() + ptrdiff_t(size_t(i) * ds.image_bytes()));
    }
    const std::vector<float> probs = predict_probabilities(session, batch.data(), batch_size, tta);
    for (int i = 0; i < n; ++i) {
      const int index = indices[first + size_t(i)];
      std::vector<uint8_t> predicted(pixels), truth(ds.mask(index), ds.mask(index) + pixels);
      for (size_t k = 0; k < pixels; ++k)
        predicted[k] = probs[size_t(i) * pixels + k] > 0.5f;
      std::vector<uint8_t> view(ds.image(index), ds.image(index) + ds.image_bytes());
      data::paint(view, data::outline(truth, size, size, radius), data::kTrueOutlineRgb);
      data::paint(view, data::outline(predicted, size, size, radius), data::kPredictedOutlineRgb);
      out.push_back({ds.stems[size_t(index)],
                     size_t(index) < ds.dxs.size() ? ds.dxs[size_t(index)] : std::string(),
                     counts[first + size_t(i)], data::encode_png(size, size, 3, view.data())});
    }
  }
  return out;
}

void add_evaluated_images(ReportData& r, ModelSession& session, const data::Dataset& ds,
                          const std::vector<int>& indices,
                          const std::vector<ConfusionCounts>& counts, int batch_size, bool tta) {
  r.ious.clear();
  r.dxs.clear();
  r.lesion_shares.clear();
  r.names.clear();
  for (size_t k = 0; k < counts.size(); ++k) {
    const ConfusionCounts& c = counts[k];
    r.ious.push_back(image_iou(c));
    const size_t index = size_t(indices[k]);
    r.dxs.push_back(index < ds.dxs.size() ? ds.dxs[index] : std::string());
    r.lesion_shares.push_back(share(c.tp + c.fn, c));
    r.names.push_back(ds.stems[index]);
  }
  // A dozen images predicted again: a fraction of the pass's time.
  const GalleryPick pick = pick_gallery(r.ious, 6);
  auto images = [&](const std::vector<int>& positions) {
    std::vector<int> chosen;
    std::vector<ConfusionCounts> chosen_counts;
    for (const int p : positions) {
      chosen.push_back(indices[size_t(p)]);
      chosen_counts.push_back(counts[size_t(p)]);
    }
    return gallery_images(session, ds, chosen, chosen_counts, batch_size, tta);
  };
  r.worst = images(pick.worst);
  r.best = images(pick.best);
}

std::string render_report(const ReportData& r) {
  // "test images", "validation images", "images".
  const std::string images_of = r.part.empty() ? "images" : r.part + " images";
  std::ostringstream os;
  os << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>"
     << xml_escape(r.title) << "</title>\n<style>\n" << kStyle << "</style>\n</head>\n<body>\n"
     << "<h1>" << xml_escape(r.title) << "</h1>\n<p class=\"sub\">ResNet34-UNet (smp "
     << "Unet(&quot;resnet34&quot;), 1 class); " << xml_escape(r.summary) << "</p>\n";

  // The best epoch by validation IoU, as the run kept it (the first of equals).
  int best_row = -1;
  for (size_t k = 0; k < r.epochs.size(); ++k)
    if (best_row < 0 ||
        number(r.epochs[k], "val_iou") > number(r.epochs[size_t(best_row)], "val_iou"))
      best_row = int(k);

  os << "<h2>Result</h2>\n";
  if (r.result) {
    const EvalResult& e = *r.result;
    os << "<p class=\"big\">" << (r.part.empty() ? "" : r.part + " ") << "IoU <b>"
       << fixed(e.iou, 4) << "</b>, Dice " << fixed(e.dice, 4) << ", loss " << fixed(e.loss, 4)
       << " on " << e.n_images << " images";
    if (r.best_epoch > 0)
      os << ", with the weights of epoch " << r.best_epoch << " (the best validation IoU)";
    os << "</p>\n";
  } else if (r.epochs_planned > 0) {
    os << "<p class=\"big\">the " << xml_escape(r.part) << " has not run yet: it runs when the "
       << "last epoch ends, with the weights of the best validation IoU</p>\n";
  }
  os << "<p>";
  if (r.epochs_planned > 0) {
    os << r.epochs.size() << " of " << r.epochs_planned << " epochs";
    if (best_row >= 0)
      os << "; best validation IoU " << fixed(number(r.epochs[size_t(best_row)], "val_iou"), 4)
         << " at epoch " << fixed(number(r.epochs[size_t(best_row)], "epoch"), 0);
    os << ". ";
  }
  os << "IoU is the mean over images of tp/(tp+fp+fn) (an image with no lesion predicted and "
        "none true counts 1), the prediction sigmoid(logit) &gt; 0.5; the loss is one Dice over "
        "each whole batch (smp's DiceLoss).</p>\n";

  if (!r.epochs.empty()) {
    std::vector<double> x;
    std::vector<ChartSeries> loss = {{"train loss", "#4a78a8", {}}, {"val loss", "#d0652d", {}}};
    std::vector<ChartSeries> quality = {
        {"train IoU", "#4a78a8", {}}, {"val IoU", "#d0652d", {}}, {"val Dice", "#3a9a4a", {}}};
    for (const json::Value& e : r.epochs) {
      x.push_back(number(e, "epoch"));
      loss[0].y.push_back(number(e, "train_loss"));
      loss[1].y.push_back(number(e, "val_loss"));
      quality[0].y.push_back(number(e, "train_iou"));
      quality[1].y.push_back(number(e, "val_iou"));
      quality[2].y.push_back(number(e, "val_dice"));
    }
    os << "<h2>Curves</h2>\n"
       << line_chart_svg("Dice loss", "epoch", x, loss)
       << line_chart_svg("IoU and Dice (mean per image)", "epoch", x, quality);
    os << "<h2>Epochs</h2>\n<table>\n<tr><th>epoch</th><th>train loss</th><th>train IoU</th>"
       << "<th>val loss</th><th>val IoU</th><th>val Dice</th><th>images/s</th><th>time</th>"
       << "</tr>\n";
    for (size_t k = 0; k < r.epochs.size(); ++k) {
      const json::Value& e = r.epochs[k];
      os << "<tr" << (int(k) == best_row ? " class=\"best\"" : "") << "><td>"
         << fixed(number(e, "epoch"), 0) << "</td><td>" << fixed(number(e, "train_loss"), 4)
         << "</td><td>" << fixed(number(e, "train_iou"), 4) << "</td><td>"
         << fixed(number(e, "val_loss"), 4) << "</td><td>" << fixed(number(e, "val_iou"), 4)
         << "</td><td>" << fixed(number(e, "val_dice"), 4) << "</td><td>"
         << fixed(number(e, "images_per_sec"), 1) << "</td><td>"
         << duration(number(e, "epoch_seconds")) << "</td></tr>\n";
    }
    os << "</table>\n<p class=\"note\">In bold: the epoch whose weights are best.safetensors."
       << "</p>\n";
  }

  if (r.result && !r.ious.empty()) {
    const int bins = 10;
    std::vector<std::string> labels;
    std::vector<int> counts(bins, 0);
    for (int k = 0; k < bins; ++k)
      labels.push_back(fixed(k / 10.0, 1) + "-" + fixed((k + 1) / 10.0, 1));
    for (const double iou : r.ious) counts[size_t(std::clamp(int(iou * bins), 0, bins - 1))]++;
    std::string heading = images_of;
    heading[0] = char(std::toupper(static_cast<unsigned char>(heading[0])));
    os << "<h2>" << xml_escape(heading) << "</h2>\n"
       << bar_chart_svg("IoU per image (" + std::to_string(r.ious.size()) + " " + images_of + ")",
                        "IoU", labels, counts)
       << by_size(r)
       << by_diagnosis(r.ious, r.dxs)
       << "<p class=\"note\">Each image at the size the network was given it: the true lesion "
          "outlined in cyan, the predicted one in yellow.</p>\n";
    if (r.best.empty()) {
      os << "<h3>All " << r.worst.size() << " " << xml_escape(images_of)
         << ", the lowest IoU first</h3>\n";
      gallery_html(os, r.worst);
    } else {
      os << "<h3>The " << r.worst.size() << " with the lowest IoU</h3>\n";
      gallery_html(os, r.worst);
      os << "<h3>The " << r.best.size() << " with the highest IoU</h3>\n";
      gallery_html(os, r.best);
    }
  }

  // The settings as the run used them: config.json keeps each option as given (or its
  // default) and, where the tool decided otherwise (the demo's epochs, size and folder, the
  // device "auto" chose, the checkpoint's seed), what it used under a key of its own; the page
  // shows the option with the value used.
  static const std::map<std::string, std::string> kUsed = {
      {"epochs", "epochs_used"}, {"image-size", "image_size_used"}, {"out", "out_used"},
      {"device", "device_used"}, {"seed", "seed_used"}};
  const json::Value config(r.config);
  os << "<h2>Settings</h2>\n<table>\n";
  for (const auto& [key, value] : r.config) {
    const auto used = kUsed.find(key);
    const json::Value* shown = used == kUsed.end() ? &value : config.find(used->second);
    const bool in_options_row = std::any_of(kUsed.begin(), kUsed.end(), [&](const auto& u) {
      return u.second == key && config.find(u.first) != nullptr;
    });
    if (in_options_row) continue;
    os << "<tr><td class=\"key\">" << xml_escape(key) << "</td><td class=\"val\">"
       << xml_escape(plain(shown != nullptr ? *shown : value)) << "</td></tr>\n";
  }
  os << "</table>\n</body>\n</html>\n";
  return os.str();
}

}  // namespace unetcu::cli
