// Small inline SVG charts for `tastebud report`: line charts (per-epoch curves, a baseline as a
// dashed line) and bar charts (histograms, counts per category). Self-contained markup, no script:
// every mark is a <path> (lines, bars) with a <title> tooltip.
#pragma once

#include <string>
#include <vector>

namespace tastebud::host {

struct ChartSeries {
  std::string name;
  std::vector<double> x, y;
  std::string color = "#1f77b4";
  bool dashed = false;  // a reference line (the popularity baseline)
};

struct LineChart {
  std::string title, x_label, y_label;
  std::vector<ChartSeries> series;
};

struct BarChart {
  std::string title, x_label, y_label;
  std::vector<std::string> labels;  // one per bar
  std::vector<double> values;
  std::string color = "#4c78a8";
};

std::string line_chart_svg(const LineChart& chart);
std::string bar_chart_svg(const BarChart& chart);

// Text safe inside XML/HTML elements and attributes.
std::string xml_escape(const std::string& text);

}  // namespace tastebud::host
