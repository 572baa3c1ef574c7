// tools/unetcu/charts.h: small standalone SVG charts for the files the tool writes for people
// to look at (stats' histograms, the run report's curves), with no script and no dependency:
// they open in any browser and sit inline in an HTML page as they are.
#pragma once

#include <string>
#include <vector>

namespace unetcu::cli {

// Text made safe for XML and HTML content and attribute values (< > & ").
std::string xml_escape(const std::string& s);

// Numbers as the tool's pages and tables print them: `decimals` after the point ("0.7123"),
// a fraction as a percentage ("23.1%"); "-" for NaN and infinities (a value not there).
std::string fixed(double v, int decimals);
std::string percent(double fraction, int decimals = 1);

// A vertical bar chart: one bar per label, count axis from 0 with about five round ticks, the
// count written above each bar.
std::string bar_chart_svg(const std::string& title, const std::string& x_title,
                          const std::vector<std::string>& labels, const std::vector<int>& counts);

// One line of a line chart: a value per x (non-finite values are left out), drawn as a
// polyline with a dot at each point whose tooltip gives the value.
struct ChartSeries {
  std::string name;   // in the legend
  std::string color;  // any SVG colour
  std::vector<double> y;
};

// A line chart over shared x values (e.g. epochs 1..N, ascending). The y axis spans the values
// with round ticks (it does not start at 0: late epochs' small changes stay visible); the x
// axis has at most about ten integer ticks.
std::string line_chart_svg(const std::string& title, const std::string& x_title,
                           const std::vector<double>& x, const std::vector<ChartSeries>& series);

// A point of a scatter chart; `label` is its tooltip.
struct ChartPoint {
  double x = 0, y = 0;
  std::string label;
};

// A scatter chart over fixed ranges [x_lo, x_hi] x [y_lo, y_hi] (values outside are drawn at
// the edge), round ticks on both axes, one translucent dot per point so that crowds show.
std::string scatter_chart_svg(const std::string& title, const std::string& x_title,
                              const std::string& y_title, const std::vector<ChartPoint>& points,
                              double x_lo, double x_hi, double y_lo, double y_hi);

}  // namespace unetcu::cli
