// data/synth.cpp: the synthetic dermoscopy generator (see synth.h for what a picture contains).
//
// Conventions: colours are floats in 0..255 until the final rounding; every random choice comes
// from one Rng per picture, drawn in a fixed order, so a picture depends only on its seed and
// size. Distances are in pixels; "half_diag" is half the image diagonal.
#include "data/synth.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "data/image.h"
#include "engine/rng.h"
#include "engine/error.h"

namespace unetcu::data {

namespace {

constexpr float kPi = 3.14159265358979f;

struct Rgb {
  float r, g, b;
};

Rgb mix(Rgb a, Rgb b, float t) {
  return {a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t};
}
Rgb scale(Rgb a, float s) { return {a.r * s, a.g * s, a.b * s}; }

float smoothstep(float edge0, float edge1, float x) {
  const float t = std::clamp((x - edge0) / (edge1 - edge0), 0.0f, 1.0f);
  return t * t * (3 - 2 * t);
}

Rgb jitter(Rgb c, float amount, Rng& rng) {
  return {c.r + float(rng.uniform(-amount, amount)), c.g + float(rng.uniform(-amount, amount)),
          c.b + float(rng.uniform(-amount, amount))};
}

// One octave of value noise in [-1, 1]: random values on a grid of `cell`-pixel cells,
// blended with smoothstep weights.
class ValueGrid {
 public:
  ValueGrid(Rng& rng, int width, int height, float cell)
      : cell_(cell), grid_w_(int(width / cell) + 2), grid_h_(int(height / cell) + 2) {
    values_.resize(size_t(grid_w_) * grid_h_);
    for (auto& v : values_) v = float(rng.uniform(-1, 1));
  }

  float at(float x, float y) const {
    const float fx = std::clamp(x / cell_, 0.0f, float(grid_w_ - 1) - 1e-3f);
    const float fy = std::clamp(y / cell_, 0.0f, float(grid_h_ - 1) - 1e-3f);
    const int ix = int(fx), iy = int(fy);
    const float tx = smoothstep(0, 1, fx - ix), ty = smoothstep(0, 1, fy - iy);
    const float* row0 = &values_[size_t(iy) * grid_w_ + ix];
    const float* row1 = row0 + grid_w_;
    const float top = row0[0] + (row0[1] - row0[0]) * tx;
    const float bottom = row1[0] + (row1[1] - row1[0]) * tx;
    return top + (bottom - top) * ty;
  }

 private:
  float cell_;
  int grid_w_, grid_h_;
  std::vector<float> values_;
};

// A smooth random field in [-1, 1] for skin mottling and lesion blotches: two octaves, because
// the square grid of a single octave of value noise is visible.
class SmoothNoise {
 public:
  SmoothNoise(Rng& rng, int width, int height, float cell)
      : coarse_(rng, width, height, cell), fine_(rng, width, height, cell * 0.4f) {}
  float at(float x, float y) const { return 0.65f * coarse_.at(x, y) + 0.35f * fine_.at(x, y); }

 private:
  ValueGrid coarse_, fine_;
};

// The lesion outline: a rotated, stretched star-shaped region whose boundary radius is
// r0 * (1 + sum_k a_k sin(k * angle + phase_k)) for a few low harmonics. relative_radius()
// is < 1 inside, 1 on the boundary; the radius is tabulated over the angle so the per-pixel cost
// is one atan2.
class LesionShape {
 public:
  LesionShape(Rng& rng, int width, int height) {
    cx_ = float(width * (0.5 + rng.uniform(-0.15, 0.15)));
    cy_ = float(height * (0.5 + rng.uniform(-0.15, 0.15)));
    // Area fraction log-uniform in [2%, 70%]: small naevi are as common as large lesions.
    const double area = std::exp(rng.uniform(std::log(0.02), std::log(0.7))) * width * height;
    const double r0 = std::sqrt(area / kPi);
    stretch_ = float(rng.uniform(0.75, 1.3));
    const double rotation = rng.uniform(0, 2 * kPi);
    cos_ = float(std::cos(rotation));
    sin_ = float(std::sin(rotation));

    const double irregularity = rng.uniform(0.08, 0.45);
    constexpr int kHarmonics = 10;  // k = 2 .. 11; k = 1 would only shift the centre
    double amplitude[kHarmonics], phase[kHarmonics];
    for (int h = 0; h < kHarmonics; ++h) {
      amplitude[h] = irregularity * rng.uniform(0, 1) / (h + 2);
      phase[h] = rng.uniform(0, 2 * kPi);
    }
    max_radius_ = 0;
    for (int i = 0; i <= kAngles; ++i) {
      const double angle = -kPi + 2 * kPi * i / kAngles;
      double r = 1;
      for (int h = 0; h < kHarmonics; ++h) r += amplitude[h] * std::sin((h + 2) * angle + phase[h]);
      radius_[i] = float(r0 * std::max(r, 0.35));
      max_radius_ = std::max(max_radius_, radius_[i]);
    }
    // The stretch can push the outline out by a factor max(stretch, 1/stretch) in image space.
    max_radius_ *= std::max(stretch_, 1 / stretch_);
  }

  float relative_radius(float x, float y) const {
    const float dx = x - cx_, dy = y - cy_;
    const float u = (dx * cos_ + dy * sin_) / stretch_;
    const float v = (-dx * sin_ + dy * cos_) * stretch_;
    const float pos = (std::atan2(v, u) + kPi) / (2 * kPi) * kAngles;
    const int i = std::clamp(int(pos), 0, kAngles - 1);
    const float r = radius_[i] + (radius_[i + 1] - radius_[i]) * (pos - i);
    return std::sqrt(u * u + v * v) / r;
  }

  float cx() const { return cx_; }
  float cy() const { return cy_; }
  float max_radius() const { return max_radius_; }

 private:
  static constexpr int kAngles = 1024;
  float cx_, cy_, stretch_, cos_, sin_, max_radius_;
  float radius_[kAngles + 1];
};

// Soft round stamps (hairs are chains of stamps, globules single ones) accumulate into a
// coverage map with max(), so overlapping stamps do not darken twice.
void stamp_disc(std::vector<float>& coverage, int width, int height, float x, float y,
                float radius) {
  const int x0 = std::max(0, int(std::floor(x - radius - 1)));
  const int x1 = std::min(width - 1, int(std::ceil(x + radius + 1)));
  const int y0 = std::max(0, int(std::floor(y - radius - 1)));
  const int y1 = std::min(height - 1, int(std::ceil(y + radius + 1)));
  for (int py = y0; py <= y1; ++py)
    for (int px = x0; px <= x1; ++px) {
      const float ex = px + 0.5f - x, ey = py + 0.5f - y;
      const float d = std::sqrt(ex * ex + ey * ey);
      const float c = std::clamp(radius + 0.5f - d, 0.0f, 1.0f);  // one-pixel anti-aliased edge
      float& cell = coverage[size_t(py) * width + px];
      cell = std::max(cell, c);
    }
}

void draw_hairs(std::vector<float>& coverage, int width, int height, Rng& rng) {
  const int n_hairs = 1 + int(rng.below(18));
  for (int h = 0; h < n_hairs; ++h) {
    float x = float(rng.uniform(-0.1, 1.1) * width), y = float(rng.uniform(-0.1, 1.1) * height);
    float angle = float(rng.uniform(0, 2 * kPi));
    const float curvature = float(rng.uniform(-0.003, 0.003));  // radians per pixel
    const float half_width = float(rng.uniform(0.5, 2.2));
    const int length = int(rng.uniform(0.15, 0.8) * width);
    for (int step = 0; step < length; ++step) {
      stamp_disc(coverage, width, height, x, y, half_width);
      x += std::cos(angle);
      y += std::sin(angle);
      angle += curvature;
    }
  }
}

// Approximately normal noise with unit standard deviation: the mean of four 16-bit uniforms
// (Irwin-Hall, variance 4/12) from one 64-bit draw, shifted and scaled.
float unit_noise(Rng& rng) {
  const uint64_t bits = rng.next_u64();
  float sum = 0;
  for (int k = 0; k < 4; ++k) sum += float((bits >> (16 * k)) & 0xFFFF) * (1.0f / 65536.0f);
  return (sum - 2.0f) * 1.7320508f;  // 1 / sqrt(4/12)
}

uint8_t to_u8(float v) { return uint8_t(std::clamp(std::floor(v + 0.5f), 0.0f, 255.0f)); }

}  // namespace

void synth_image(uint8_t* rgb, uint8_t* mask, int width, int height, uint64_t image_seed) {
  if (width < 16 || height < 16)
    fail("synthetic images must be at least 16x16, got ", width, "x", height);
  Rng rng(image_seed);
  const float half_diag = 0.5f * std::hypot(float(width), float(height));
  const float mid_x = 0.5f * width, mid_y = 0.5f * height;

  // Skin: tone between fair and brown, lighting gradient, mottling.
  const Rgb skin = jitter(mix({235, 190, 172}, {172, 118, 92}, float(rng.uniform())), 10, rng);
  const float light_angle = float(rng.uniform(0, 2 * kPi));
  const float light_slope = float(rng.uniform(0, 0.18)) / half_diag;
  const float light_x = light_slope * std::cos(light_angle),
              light_y = light_slope * std::sin(light_angle);
  const float mottle_amount = float(rng.uniform(0.015, 0.05));
  const SmoothNoise mottle(rng, width, height, float(rng.uniform(40, 120)));

  // Lesion: outline, colour family, contrast, border softness, texture.
  const LesionShape shape(rng, width, height);
  static const Rgb kLesionColours[] = {
      {150, 95, 65},    // brown
      {85, 55, 40},     // dark brown
      {165, 90, 80},    // reddish
      {115, 112, 122},  // bluish grey
  };
  static const double kColourOdds[] = {0.5, 0.25, 0.15, 0.10};
  double pick = rng.uniform();
  int family = 0;
  while (family < 3 && pick >= kColourOdds[family]) pick -= kColourOdds[family++];
  const Rgb lesion_colour = jitter(kLesionColours[family], 10, rng);
  const float contrast = float(rng.uniform(0.3, 0.95));
  const float border = float(rng.uniform(0.02, 0.15));  // half-width of the fuzzy rim, relative
  const float blotch_amount = float(rng.uniform(0, 0.45));
  const SmoothNoise blotches(rng, width, height,
                             std::max(6.0f, float(shape.max_radius() * rng.uniform(0.1, 0.35))));

  // Dermoscope field of view: half the pictures have a dark circular border, all some fall-off.
  const bool circular_field = rng.chance(0.5);
  const float field_radius = float(rng.uniform(0.62, 0.95)) * half_diag;
  const float field_soft = float(rng.uniform(0.02, 0.08)) * half_diag;
  const float falloff = float(rng.uniform(0.05, 0.35));
  const Rgb outside_colour = jitter({15, 12, 12}, 8, rng);

  // Hairs and globules as coverage maps, composited after the lesion.
  std::vector<float> hair(size_t(width) * height, 0.0f);
  const bool hairy = rng.chance(0.4);
  if (hairy) draw_hairs(hair, width, height, rng);
  const Rgb hair_colour = jitter({40, 30, 25}, 15, rng);
  const float hair_opacity = float(rng.uniform(0.7, 0.95));

  std::vector<float> dots(size_t(width) * height, 0.0f);
  const int n_dots = rng.chance(0.5) ? int(rng.below(60)) : 0;
  for (int d = 0; d < n_dots; ++d) {
    // Globules sit inside the lesion: rejection-sample a point well inside the outline.
    for (int attempt = 0; attempt < 20; ++attempt) {
      const float x = shape.cx() + float(rng.uniform(-1, 1)) * shape.max_radius();
      const float y = shape.cy() + float(rng.uniform(-1, 1)) * shape.max_radius();
      if (shape.relative_radius(x, y) < 0.85f) {
        stamp_disc(dots, width, height, x, y, float(rng.uniform(1.0, 4.5)));
        break;
      }
    }
  }
  const Rgb dot_colour = scale(lesion_colour, 0.55f);
  const float dot_opacity = float(rng.uniform(0.4, 0.85));
  const float noise_sigma = float(rng.uniform(1.5, 5.0));

  const float reach = shape.max_radius() * (1 + border) + 1;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const float px = x + 0.5f, py = y + 0.5f;
      const float dx = px - mid_x, dy = py - mid_y;
      const float light = 1 + light_x * dx + light_y * dy;
      Rgb c = scale(skin, light * (1 + mottle_amount * mottle.at(px, py)));

      bool lesion = false;
      if (std::abs(px - shape.cx()) < reach && std::abs(py - shape.cy()) < reach) {
        const float s = shape.relative_radius(px, py);
        lesion = s < 1;
        if (s < 1 + border) {
          // Pigment: half strength on the outline, denser towards the centre, blotchy.
          const float rim = 1 - smoothstep(1 - border, 1 + border, s);
          const float core = 0.8f + 0.2f * (1 - std::min(s * s, 1.0f));
          const float texture = 1 + blotch_amount * blotches.at(px, py);
          const float w = std::clamp(contrast * rim * core * texture, 0.0f, 1.0f);
          c = mix(c, lesion_colour, w);
        }
      }
      const size_t i = size_t(y) * width + x;
      c = mix(c, dot_colour, dots[i] * dot_opacity);
      c = mix(c, hair_colour, hair[i] * hair_opacity);

      const float r = std::sqrt(dx * dx + dy * dy);
      c = scale(c, 1 - falloff * (r / half_diag) * (r / half_diag));
      if (circular_field) {
        c = mix(c, outside_colour,
                smoothstep(field_radius - field_soft, field_radius + field_soft, r));
        lesion = lesion && r < field_radius;
      }

      rgb[3 * i + 0] = to_u8(c.r + noise_sigma * unit_noise(rng));
      rgb[3 * i + 1] = to_u8(c.g + noise_sigma * unit_noise(rng));
      rgb[3 * i + 2] = to_u8(c.b + noise_sigma * unit_noise(rng));
      mask[i] = lesion ? 255 : 0;
    }
  }
}

void synth_dataset(const std::string& out_dir, int count, uint64_t seed, int width, int height) {
  namespace fs = std::filesystem;
  if (count < 0) fail("synthetic image count must not be negative, got ", count);
  const fs::path image_dir = fs::path(out_dir) / "images", mask_dir = fs::path(out_dir) / "masks";
  for (const auto& dir : {image_dir, mask_dir}) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail("cannot create ", dir.string(), ": ", ec.message());
  }

  // As in load_dataset: errors are kept per picture and the first one is thrown after the loop.
  std::vector<std::string> errors(size_t(std::max(count, 0)));
#pragma omp parallel
  {
    std::vector<uint8_t> rgb(size_t(width) * height * 3), mask(size_t(width) * height);
#pragma omp for schedule(dynamic, 1)
    for (int k = 0; k < count; ++k) {
      try {
        synth_image(rgb.data(), mask.data(), width, height, derive_seed(seed, uint64_t(k)));
        char stem[32];
        std::snprintf(stem, sizeof stem, "ISIC_%07d", k);
        write_jpeg((image_dir / (std::string(stem) + ".jpg")).string(), width, height, rgb.data(),
                   90);
        write_png_gray((mask_dir / (std::string(stem) + "_segmentation.png")).string(), width,
                       height, mask.data());
      } catch (const std::exception& e) {
        errors[size_t(k)] = e.what();
      }
    }
  }
  for (const auto& e : errors)
    if (!e.empty()) fail(e);
}

}  // namespace unetcu::data
