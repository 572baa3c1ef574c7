// tools/unetcu/cmd_predict.cpp: `unetcu predict --weights CKPT INPUT... --out DIR`.
//
// Each INPUT is an image or a folder of images (DIR/images when DIR has one, so a dataset folder
// works as it is). Images are resized to the network's input size the way training resizes
// them, run in batches with BatchNorm in eval mode, and for each <stem> the command writes
//   <stem>_mask.png      0/255 at the image's original size: the sigmoid probabilities are
//                        resized back bilinearly, then thresholded (p > --threshold)
//   <stem>_overlay.png   --overlay: the image with the predicted outline (yellow) and, when a
//                        mask is found beside the image, the ground-truth outline (cyan)
//   <stem>_probs.npy     --probs: float32 sigmoid probabilities, H x W at the input size, so
//                        they compare one to one with PyTorch on the same input
//   <stem>_input.npy     --save-inputs: the uint8 H x W x 3 image the network saw (and
//                        <stem>_target.npy, the 0/1 mask as training resizes it, when a mask is
//                        found), so a PyTorch run can be fed exactly the same bytes
// A mask "beside" DIR/images/<stem>.jpg is DIR/masks/<stem>_segmentation.png, or
// <stem>_segmentation.png next to the image. Every file is written whole or not at all.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "data/dataset.h"
#include "data/image.h"
#include "data/prediction.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/fileio.h"
#include "model/checkpoint.h"
#include "tools/unetcu/args.h"
#include "tools/unetcu/commands.h"

namespace unetcu::cli {
namespace {

namespace fs = std::filesystem;

struct Input {
  std::string path, stem, mask_path;  // mask_path empty when no mask was found
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_image_name(const std::string& name) {
  if (!data::has_image_extension(name)) return false;
  // Masks and this command's own outputs are not inputs.
  const std::string l = lower(name);
  const std::string stem = l.substr(0, l.rfind('.'));
  return !ends_with(stem, "_segmentation") && !ends_with(stem, "_mask") && !ends_with(stem, "_overlay");
}

std::string find_mask(const fs::path& image) {
  const std::string name = image.stem().string() + "_segmentation.png";
  for (const fs::path& p : {image.parent_path().parent_path() / "masks" / name, image.parent_path() / name})
    if (fs::is_regular_file(p)) return p.string();
  return "";
}

// Every image named by the arguments, in argument order (a folder's images sorted by name).
std::vector<Input> list_inputs(const std::vector<std::string>& args) {
  std::vector<Input> inputs;
  for (const std::string& arg : args) {
    fs::path p(arg);
    if (fs::is_directory(p)) {
      if (fs::is_directory(p / "images")) p /= "images";
      std::vector<fs::path> found;
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file() && is_image_name(e.path().filename().string())) found.push_back(e.path());
      if (found.empty()) fail(p.string(), ": no images (.jpg, .jpeg, .png, .bmp) in this folder");
      std::sort(found.begin(), found.end());
      for (const auto& f : found) inputs.push_back({f.string(), f.stem().string(), find_mask(f)});
    } else if (fs::exists(p)) {
      inputs.push_back({p.string(), p.stem().string(), find_mask(p)});
    } else {
      fail(arg, ": no such file or folder");
    }
  }
  // Outputs are named by stem: two inputs with one stem would overwrite each other.
  std::map<std::string, std::string> seen;
  for (const Input& in : inputs) {
    auto [it, fresh] = seen.emplace(in.stem, in.path);
    if (!fresh) fail("two inputs would write the same outputs '", in.stem, "_*': ", it->second, " and ", in.path);
  }
  return inputs;
}

// A ground-truth mask at its own size as 0/1 (0/1 masks as they are, others at 128, as
// training reads them).
std::vector<uint8_t> binary_mask(const data::Image& m) {
  const uint8_t top = m.pixels.empty() ? 0 : *std::max_element(m.pixels.begin(), m.pixels.end());
  std::vector<uint8_t> out(m.pixels.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = top <= 1 ? m.pixels[i] : m.pixels[i] >= 128;
  return out;
}

void write(const fs::path& dir, const std::string& name, const std::string& bytes) {
  write_file_atomic((dir / name).string(), bytes);
}

}  // namespace

int cmd_predict(int argc, char** argv) {
  Args a("predict", "predict --weights CKPT INPUT... --out DIR [options]");
  a.option("weights", "", "checkpoint or smp state_dict (safetensors)");
  a.option("out", "", "output folder (created if missing)");
  a.option("threshold", "0.5", "a pixel is lesion when sigmoid(logit) > threshold");
  a.option("image-size", "", "network input size (default: the checkpoint's, else 128)");
  a.option("batch-size", "8", "images per forward pass");
  a.option("device", "auto", "auto, cpu or cuda");
  a.flag("overlay", "write <stem>_overlay.png: predicted (yellow) and true (cyan) outlines");
  a.flag("probs", "write <stem>_probs.npy: float32 probabilities at the input size");
  a.flag("save-inputs", "write <stem>_input.npy (and _target.npy): the uint8 input fed");
  a.flag("no-tf32", "CUDA: full fp32 convolutions (no TF32 tensor cores)");
  add_tta_flag(a);
  if (!a.parse(argc, argv, 2)) return 0;
  if (a.str("weights").empty()) fail("unetcu predict: --weights CKPT is required");
  if (a.str("out").empty()) fail("unetcu predict: --out DIR is required");
  if (a.positional().empty()) fail("unetcu predict: expected at least one INPUT image or folder");
  const double threshold = a.number("threshold", 0.0, 1.0);
  const int batch_size = int(a.integer("batch-size", 1, 4096));

  const std::vector<Input> inputs = list_inputs(a.positional());
  make_folder(a.str("out"), "the output folder");
  const ModelSpec& spec = unet_spec();
  LoadedCheckpoint ck = load_checkpoint(a.str("weights"), spec);
  int size = 0;
  if (a.str("image-size").empty()) {
    const std::string v = ck.metadata_value("image_size", "128");
    size = std::atoi(v.c_str());
    if (size < 32 || size > 4096)
      fail(a.str("weights"), ": metadata image_size '", v, "' is not a size; give --image-size");
  } else {
    size = int(a.integer("image-size", 32, 4096));
  }
  if (size % 32 != 0) fail("--image-size must be a multiple of 32, got ", size);

  BackendOptions bopt;
  bopt.tf32 = !a.flag_set("no-tf32");
  auto backend = make_backend(a.str("device"), bopt);
  std::fprintf(stderr, "device: %s\npredict: %zu images at %dx%d\n", backend->describe().c_str(),
               inputs.size(), size, size);
  ModelSession session(*backend, size, size);
  session.set_state(ck.model);

  const fs::path out(a.str("out"));
  const size_t pixels = size_t(size) * size;
  const int n_batches = int((inputs.size() + size_t(batch_size) - 1) / size_t(batch_size));
  for (int b = 0; b < n_batches; ++b) {
    const size_t first = size_t(b) * size_t(batch_size);
    const int n = int(std::min(inputs.size() - first, size_t(batch_size)));
    std::vector<data::Image> originals(static_cast<size_t>(n));
    std::vector<uint8_t> batch(size_t(n) * pixels * 3), targets(size_t(n) * pixels);
    for (int i = 0; i < n; ++i) {
      const Input& in = inputs[first + size_t(i)];
      originals[size_t(i)] = data::read_image(in.path, 3);
      const data::Image& img = originals[size_t(i)];
      if (!in.mask_path.empty() && a.flag_set("save-inputs")) {
        // Through the training loader, so that image and mask bytes are exactly training's.
        data::Sample s;
        s.stem = in.stem;
        s.image_path = in.path;
        s.mask_path = in.mask_path;
        data::Dataset one = data::load_dataset({s}, size);
        std::copy(one.image(0), one.image(0) + pixels * 3, batch.begin() + long(size_t(i) * pixels * 3));
        std::copy(one.mask(0), one.mask(0) + pixels, targets.begin() + long(size_t(i) * pixels));
      } else {
        data::resize_image(batch.data() + size_t(i) * pixels * 3, size, size, img.pixels.data(),
                           img.width, img.height, 3);
      }
    }
    const std::vector<float> batch_probs =
        predict_probabilities(session, batch.data(), n, a.flag_set("tta"));

    for (int i = 0; i < n; ++i) {
      const Input& in = inputs[first + size_t(i)];
      const data::Image& img = originals[size_t(i)];
      const std::vector<float> probs(batch_probs.begin() + ptrdiff_t(size_t(i) * pixels),
                                     batch_probs.begin() + ptrdiff_t(size_t(i + 1) * pixels));
      const std::vector<float> full = data::resize_probs(probs.data(), size, size, img.width, img.height);
      std::vector<uint8_t> mask(full.size());
      for (size_t k = 0; k < full.size(); ++k) mask[k] = full[k] > threshold;

      std::vector<uint8_t> png(mask.size());
      for (size_t k = 0; k < mask.size(); ++k) png[k] = mask[k] ? 255 : 0;
      write(out, in.stem + "_mask.png", data::encode_png(img.width, img.height, 1, png.data()));
      if (a.flag_set("probs"))
        write(out, in.stem + "_probs.npy",
              data::encode_npy("<f4", 4, {size, size}, probs.data()));
      if (a.flag_set("save-inputs")) {
        write(out, in.stem + "_input.npy",
              data::encode_npy("|u1", 1, {size, size, 3}, batch.data() + size_t(i) * pixels * 3));
        if (!in.mask_path.empty())
          write(out, in.stem + "_target.npy",
                data::encode_npy("|u1", 1, {size, size}, targets.data() + size_t(i) * pixels));
      }
      if (a.flag_set("overlay")) {
        const int radius = std::max(1, std::min(img.width, img.height) / 256);
        std::vector<uint8_t> view = img.pixels;
        if (!in.mask_path.empty()) {
          const data::Image truth = data::read_image(in.mask_path, 1);
          if (truth.width == img.width && truth.height == img.height)
            data::paint(view, data::outline(binary_mask(truth), img.width, img.height, radius),
                        data::kTrueOutlineRgb);
          else
            std::fprintf(stderr, "warning: %s is %dx%d but its image is %dx%d; no true outline drawn\n",
                         in.mask_path.c_str(), truth.width, truth.height, img.width, img.height);
        }
        data::paint(view, data::outline(mask, img.width, img.height, radius),
                    data::kPredictedOutlineRgb);
        write(out, in.stem + "_overlay.png", data::encode_png(img.width, img.height, 3, view.data()));
      }
    }
  }
  std::fprintf(stderr, "predict: wrote the outputs of %zu images to %s\n", inputs.size(),
               out.string().c_str());
  return 0;
}

}  // namespace unetcu::cli
