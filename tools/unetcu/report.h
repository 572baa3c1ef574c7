// tools/unetcu/report.h: runs/NAME/report.html, the page a person opens to see how a run went,
// one self-contained file (inline SVG and PNG, no script, nothing fetched) that can be mailed
// or archived with the run:
//   - the test result with the best weights, once the run has ended, and the run's settings;
//   - the loss and the IoU/Dice curves over the epochs, and the epochs' table;
//   - the test images' per-image IoU as a histogram, against the lesion's size and, where the
//     metadata gives diagnoses, by diagnosis; and a gallery of the worst and the best of
//     them: each image at the training size, as the network saw it, with the true lesion
//     outlined in cyan and the predicted one in yellow (the colours of predict --overlay).
// `unetcu train` writes it after every epoch (curves only) and once more at the end;
// `unetcu eval --report FILE` writes the same page for the images it evaluated (no curves).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/dataset.h"
#include "engine/json.h"
#include "kernels/loss.h"
#include "model/session.h"
#include "tools/unetcu/commands.h"

namespace unetcu::cli {

// One test image of the gallery.
struct GalleryImage {
  std::string stem;
  std::string dx;          // the diagnosis, where the metadata gives one
  ConfusionCounts counts;  // of the prediction, as the test counted them
  std::string png;         // the image with both outlines (PNG file bytes)
};

struct ReportData {
  std::string title;                 // the page's heading ("unetcu run runs/train")
  std::string summary;               // one line under it, after the model: data, images, device
  json::Object config;               // the settings table (config.json's members)
  // Training: metrics.jsonl's objects in order, and the epochs asked for (0: not a training
  // run; no curves, no epochs).
  std::vector<json::Value> epochs;
  int epochs_planned = 0;
  // What was evaluated, as a person says it: "test", "validation", or "" for all the images.
  std::string part = "test";
  std::optional<EvalResult> result;  // once evaluated
  int best_epoch = 0;                // training: the epoch whose weights were evaluated
  std::vector<double> ious;          // every evaluated image's IoU (the histogram)
  std::vector<std::string> dxs;      // their diagnoses ("" unknown; empty: none known)
  std::vector<double> lesion_shares; // their true lesion's share of the image (0..1; or empty)
  std::vector<std::string> names;    // their stems (the scatter's tooltips)
  std::vector<GalleryImage> worst;   // lowest IoU first
  std::vector<GalleryImage> best;    // highest IoU first
};

// The page.
std::string render_report(const ReportData& r);

// metrics.jsonl's objects, one per non-empty line; a line that is not a JSON object fails
// naming the file and the line.
std::vector<json::Value> read_metrics(const std::string& path);

// Which images the gallery shows, as positions in `ious`: the `per_side` lowest (lowest first)
// and the `per_side` highest (highest first), never one image twice. When there are no more
// than 2 * per_side, all of them, lowest first, and `best` is empty. Ties keep their order.
struct GalleryPick {
  std::vector<int> worst, best;
};
GalleryPick pick_gallery(const std::vector<double>& ious, int per_side);

// The gallery's images: `ds`'s images `indices` (dataset positions, each with the counts the
// test gave it) predicted in eval mode with the session's weights (predict_probabilities, with
// or without tta as the counts were), the predicted mask taken as the counts take it
// (p > 0.5), both outlines drawn.
std::vector<GalleryImage> gallery_images(ModelSession& session, const data::Dataset& ds,
                                         const std::vector<int>& indices,
                                         const std::vector<ConfusionCounts>& counts,
                                         int batch_size, bool tta = false);

// Fills r.ious, r.dxs, r.lesion_shares, r.names and the gallery (6 a side) from a pass over
// `ds`'s images `indices` that gave each the counts `counts` (evaluate(..., per_image, tta)).
void add_evaluated_images(ReportData& r, ModelSession& session, const data::Dataset& ds,
                          const std::vector<int>& indices,
                          const std::vector<ConfusionCounts>& counts, int batch_size,
                          bool tta = false);

// RFC 4648 base64 with padding (the page's data: URIs).
std::string base64(std::string_view bytes);

}  // namespace unetcu::cli
