// tools/unetcu/charts.cpp: see charts.h.
#include "tools/unetcu/charts.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace unetcu::cli {
namespace {

// The round step (1, 2 or 5 times a power of ten) that cuts `span` into at most about
// `parts` parts.
double round_step(double span, int parts) {
  const double raw = span / parts;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0})
    if (m * power >= raw * (1 - 1e-9)) return m * power;
  return 10 * power;
}

}  // namespace

std::string fixed(double v, int decimals) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string percent(double fraction, int decimals) {
  return std::isfinite(fraction) ? fixed(100.0 * fraction, decimals) + "%" : "-";
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

std::string bar_chart_svg(const std::string& title, const std::string& x_title,
                          const std::vector<std::string>& labels, const std::vector<int>& counts) {
  const int width = 760, height = 420, left = 60, right = 20, top = 40, bottom = 80;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  const int peak =
      std::max(1, counts.empty() ? 1 : *std::max_element(counts.begin(), counts.end()));
  int step = 1;  // 1, 2, 5, 10, 20, 50, ... so that there are at most 5 ticks
  for (int mult = 0; peak / step > 5; ++mult) step = (mult % 3 == 1 ? step * 5 / 2 : step * 2);
  const double y_max = double((peak + step - 1) / step * step);
  auto y_of = [&](double v) { return top + plot_h * (1.0 - v / y_max); };

  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
     << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
     << "<text x=\"" << width / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">"
     << xml_escape(title) << "</text>\n";
  for (int v = 0; v <= int(y_max); v += step) {
    const double y = y_of(v);
    os << "<line x1=\"" << left << "\" x2=\"" << width - right << "\" y1=\"" << y << "\" y2=\""
       << y << "\" stroke=\"#ddd\"/>\n"
       << "<text x=\"" << left - 6 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">" << v
       << "</text>\n";
  }
  const double slot = labels.empty() ? plot_w : plot_w / double(labels.size());
  for (size_t k = 0; k < labels.size(); ++k) {
    const double x = left + slot * double(k), y = y_of(counts[k]);
    os << "<rect x=\"" << x + slot * 0.1 << "\" y=\"" << y << "\" width=\"" << slot * 0.8
       << "\" height=\"" << top + plot_h - y << "\" fill=\"#4a78a8\"/>\n"
       << "<text x=\"" << x + slot / 2 << "\" y=\"" << y - 3 << "\" text-anchor=\"middle\" "
       << "font-size=\"10\">" << counts[k] << "</text>\n"
       << "<text transform=\"translate(" << x + slot / 2 << "," << top + plot_h + 10
       << ") rotate(45)\" font-size=\"10\">" << xml_escape(labels[k]) << "</text>\n";
  }
  os << "<line x1=\"" << left << "\" x2=\"" << width - right << "\" y1=\"" << top + plot_h
     << "\" y2=\"" << top + plot_h << "\" stroke=\"black\"/>\n"
     << "<text x=\"" << width / 2 << "\" y=\"" << height - 8 << "\" text-anchor=\"middle\">"
     << xml_escape(x_title) << "</text>\n"
     << "<text transform=\"translate(16," << top + plot_h / 2
     << ") rotate(-90)\" text-anchor=\"middle\">images</text>\n</svg>\n";
  return os.str();
}

namespace {

// The frame the line and scatter charts share: a white sheet with the title over the plot,
// horizontal grid lines with their labels, ticks under the x axis, the axis and its title.
struct Frame {
  int width, height, left, right, top, bottom;
  double plot_w() const { return width - left - right; }
  double plot_h() const { return height - top - bottom; }
};

void open_svg(std::ostringstream& os, const Frame& f, const std::string& title) {
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << f.width << "\" height=\""
     << f.height << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
     << "<text x=\"" << f.left + f.plot_w() / 2 << "\" y=\"24\" text-anchor=\"middle\" "
     << "font-size=\"15\">" << xml_escape(title) << "</text>\n";
}

int decimals_of(double step) { return std::max(0, int(std::ceil(-std::log10(step) - 1e-9))); }

// Ticks at lo, lo + step, ... up to hi; `at` maps a value to its pixel.
template <class Map>
void y_grid(std::ostringstream& os, const Frame& f, double lo, double hi, double step, Map at) {
  for (int k = 0; lo + k * step <= hi + 1e-9 * step; ++k) {
    const double v = lo + k * step, y = at(v);
    os << "<line x1=\"" << f.left << "\" x2=\"" << f.left + f.plot_w() << "\" y1=\"" << y
       << "\" y2=\"" << y << "\" stroke=\"#ddd\"/>\n"
       << "<text x=\"" << f.left - 6 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">"
       << fixed(v, decimals_of(step)) << "</text>\n";
  }
}

template <class Map>
void x_axis(std::ostringstream& os, const Frame& f, double lo, double hi, double step, Map at,
            const std::string& x_title) {
  const double base = f.top + f.plot_h();
  for (int k = 0; lo + k * step <= hi + 1e-9 * step; ++k) {
    const double v = lo + k * step, px = at(v);
    os << "<line x1=\"" << px << "\" x2=\"" << px << "\" y1=\"" << base << "\" y2=\""
       << base + 4 << "\" stroke=\"black\"/>\n"
       << "<text x=\"" << px << "\" y=\"" << base + 17 << "\" text-anchor=\"middle\">"
       << fixed(v, decimals_of(step)) << "</text>\n";
  }
  os << "<line x1=\"" << f.left << "\" x2=\"" << f.left + f.plot_w() << "\" y1=\"" << base
     << "\" y2=\"" << base << "\" stroke=\"black\"/>\n"
     << "<text x=\"" << f.left + f.plot_w() / 2 << "\" y=\"" << f.height - 8
     << "\" text-anchor=\"middle\">" << xml_escape(x_title) << "</text>\n";
}

}  // namespace

std::string line_chart_svg(const std::string& title, const std::string& x_title,
                           const std::vector<double>& x, const std::vector<ChartSeries>& series) {
  const Frame f{760, 340, 60, 150, 40, 50};

  // The y range: every finite value, widened to round ticks; a flat line gets some room.
  double lo = INFINITY, hi = -INFINITY;
  for (const ChartSeries& s : series)
    for (size_t i = 0; i < s.y.size() && i < x.size(); ++i)
      if (std::isfinite(s.y[i])) {
        lo = std::min(lo, s.y[i]);
        hi = std::max(hi, s.y[i]);
      }
  if (!(lo <= hi)) lo = 0, hi = 1;
  if (hi - lo < 1e-12) {
    const double pad = std::max(std::abs(hi) * 0.05, 0.01);
    lo -= pad;
    hi += pad;
  }
  const double y_step = round_step(hi - lo, 5);
  const double y_lo = std::floor(lo / y_step + 1e-9) * y_step;
  const double y_hi = y_lo + std::ceil((hi - y_lo) / y_step - 1e-9) * y_step;
  auto y_of = [&](double v) { return f.top + f.plot_h() * (y_hi - v) / (y_hi - y_lo); };

  // The x range: first to last value; one point sits in the middle. Integer ticks (epochs).
  double x_lo = x.empty() ? 0 : x.front(), x_hi = x.empty() ? 1 : x.back();
  if (x_hi - x_lo < 1e-12) {
    x_lo -= 1;
    x_hi += 1;
  }
  auto x_of = [&](double v) { return f.left + f.plot_w() * (v - x_lo) / (x_hi - x_lo); };
  const double x_step = std::max(1.0, std::ceil(round_step(x_hi - x_lo, 10)));

  std::ostringstream os;
  open_svg(os, f, title);
  y_grid(os, f, y_lo, y_hi, y_step, y_of);
  x_axis(os, f, std::ceil(x_lo / x_step) * x_step, x_hi, x_step, x_of, x_title);
  for (size_t k = 0; k < series.size(); ++k) {
    const ChartSeries& s = series[k];
    const std::string name = xml_escape(s.name), color = xml_escape(s.color);
    std::ostringstream points, dots;
    int n_points = 0;
    for (size_t i = 0; i < s.y.size() && i < x.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      const double px = x_of(x[i]), py = y_of(s.y[i]);
      points << (n_points++ ? " " : "") << px << "," << py;
      dots << "<circle cx=\"" << px << "\" cy=\"" << py << "\" r=\"3\" fill=\"" << color
           << "\"><title>" << name << ", " << xml_escape(x_title) << " " << fixed(x[i], 0)
           << ": " << fixed(s.y[i], 4) << "</title></circle>\n";
    }
    os << "<polyline class=\"series\" data-name=\"" << name << "\" fill=\"none\" stroke=\""
       << color << "\" stroke-width=\"2\" points=\"" << points.str() << "\"/>\n"
       << dots.str();
    const double lx = f.left + f.plot_w(), ly = f.top + 10 + 20.0 * double(k);
    os << "<line x1=\"" << lx + 15 << "\" x2=\"" << lx + 35 << "\" y1=\"" << ly << "\" y2=\""
       << ly << "\" stroke=\"" << color << "\" stroke-width=\"2\"/>\n"
       << "<text x=\"" << lx + 40 << "\" y=\"" << ly + 4 << "\">" << name << "</text>\n";
  }
  os << "</svg>\n";
  return os.str();
}

std::string scatter_chart_svg(const std::string& title, const std::string& x_title,
                              const std::string& y_title, const std::vector<ChartPoint>& points,
                              double x_lo, double x_hi, double y_lo, double y_hi) {
  const Frame f{760, 420, 60, 20, 40, 50};
  auto x_of = [&](double v) {
    return f.left + f.plot_w() * (std::clamp(v, x_lo, x_hi) - x_lo) / (x_hi - x_lo);
  };
  auto y_of = [&](double v) {
    return f.top + f.plot_h() * (y_hi - std::clamp(v, y_lo, y_hi)) / (y_hi - y_lo);
  };
  std::ostringstream os;
  open_svg(os, f, title);
  y_grid(os, f, y_lo, y_hi, round_step(y_hi - y_lo, 5), y_of);
  x_axis(os, f, x_lo, x_hi, round_step(x_hi - x_lo, 10), x_of, x_title);
  os << "<text transform=\"translate(16," << f.top + f.plot_h() / 2
     << ") rotate(-90)\" text-anchor=\"middle\">" << xml_escape(y_title) << "</text>\n";
  for (const ChartPoint& p : points)
    os << "<circle cx=\"" << x_of(p.x) << "\" cy=\"" << y_of(p.y)
       << "\" r=\"3.5\" fill=\"#4a78a8\" fill-opacity=\"0.45\"><title>" << xml_escape(p.label)
       << "</title></circle>\n";
  os << "</svg>\n";
  return os.str();
}

}  // namespace unetcu::cli
