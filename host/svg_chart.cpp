#include "host/svg_chart.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace tastebud::host {
namespace {

constexpr double kWidth = 460, kHeight = 260;
constexpr double kLeft = 58, kRight = 14, kTop = 30, kBottom = 46;
constexpr double kPlotW = kWidth - kLeft - kRight, kPlotH = kHeight - kTop - kBottom;

// About five round tick values covering [lo, hi]; whole numbers only when `whole` (epochs).
std::vector<double> ticks(double lo, double hi, bool whole = false) {
  if (!(hi > lo)) hi = lo + 1;
  const double raw = whole ? std::max(1.0, (hi - lo) / 5) : (hi - lo) / 5;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (step >= raw) break;
  }
  // From the last tick at or below lo to the first at or above hi, so the ticks frame the data.
  std::vector<double> out;
  for (double t = std::floor(lo / step + 1e-9) * step; ; t += step) {
    out.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
    if (t >= hi - step * 1e-9) break;
  }
  return out;
}

std::string number(double v) {
  if (v == std::round(v) && std::abs(v) < 1e9) return fmt::format("{:.0f}", v);
  if (v != 0 && (std::abs(v) >= 1e6 || std::abs(v) < 1e-3)) return fmt::format("{:.2g}", v);
  return fmt::format("{:.4g}", v);
}

struct Frame {
  double x_lo, x_hi, y_lo, y_hi;
  double px(double x) const { return kLeft + (x_hi > x_lo ? (x - x_lo) / (x_hi - x_lo) : 0.5) * kPlotW; }
  double py(double y) const { return kTop + kPlotH - (y_hi > y_lo ? (y - y_lo) / (y_hi - y_lo) : 0.5) * kPlotH; }
};

std::string open_svg(const std::string& title) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "role=\"img\" aria-label=\"{2}\" font-family=\"sans-serif\" font-size=\"11\">\n"
      "<text x=\"{3}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{2}</text>\n",
      kWidth, kHeight, xml_escape(title), kLeft);
}

// Axes, grid lines and tick labels for the y axis; x labels are the caller's.
std::string y_axis(const Frame& f, const std::vector<double>& y_ticks, const std::string& x_label, const std::string& y_label) {
  std::string s;
  for (double t : y_ticks) {
    s += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e5e5e5\"/>"
                     "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n",
                     kLeft, kLeft + kPlotW, f.py(t), f.py(t), kLeft - 5, f.py(t) + 4, number(t));
  }
  s += fmt::format("<path class=\"axis\" d=\"M{:.1f},{:.1f}V{:.1f}H{:.1f}\" fill=\"none\" stroke=\"#333\"/>\n", kLeft, kTop,
                   kTop + kPlotH, kLeft + kPlotW);
  s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", kLeft + kPlotW / 2, kHeight - 6,
                   xml_escape(x_label));
  s += fmt::format("<text transform=\"translate(13,{:.1f}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                   kTop + kPlotH / 2, xml_escape(y_label));
  return s;
}

}  // namespace

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string line_chart_svg(const LineChart& chart) {
  Frame f{INFINITY, -INFINITY, INFINITY, -INFINITY};
  for (const ChartSeries& s : chart.series) {
    for (size_t k = 0; k < s.x.size(); ++k) {
      if (!std::isfinite(s.y[k])) continue;
      f.x_lo = std::min(f.x_lo, s.x[k]);
      f.x_hi = std::max(f.x_hi, s.x[k]);
      f.y_lo = std::min(f.y_lo, s.y[k]);
      f.y_hi = std::max(f.y_hi, s.y[k]);
    }
  }
  if (!std::isfinite(f.x_lo)) f = Frame{0, 1, 0, 1};
  const double pad = (f.y_hi - f.y_lo) * 0.08 + 1e-9;
  f.y_lo -= pad;
  f.y_hi += pad;
  const std::vector<double> y_ticks = ticks(f.y_lo, f.y_hi);
  f.y_lo = y_ticks.front();
  f.y_hi = y_ticks.back();
  std::string s = open_svg(chart.title) + y_axis(f, y_ticks, chart.x_label, chart.y_label);
  bool whole_x = true;
  for (const ChartSeries& series : chart.series)
    for (double x : series.x) whole_x = whole_x && x == std::round(x);
  for (double t : ticks(f.x_lo, f.x_hi, whole_x)) {
    if (t < f.x_lo || t > f.x_hi) continue;
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", f.px(t), kTop + kPlotH + 15, number(t));
  }
  double legend_x = kLeft + 8;
  for (const ChartSeries& series : chart.series) {
    std::string d;
    for (size_t k = 0; k < series.x.size(); ++k) {
      if (!std::isfinite(series.y[k])) continue;
      d += fmt::format("{}{:.1f},{:.1f}", d.empty() ? "M" : "L", f.px(series.x[k]), f.py(series.y[k]));
    }
    if (d.empty()) continue;
    s += fmt::format("<path class=\"series\" d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}><title>{}</title></path>\n", d,
                     series.color, series.dashed ? " stroke-dasharray=\"6 4\"" : "", xml_escape(series.name));
    if (!series.dashed) {
      for (size_t k = 0; k < series.x.size(); ++k) {
        if (!std::isfinite(series.y[k])) continue;
        s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"><title>{} {}: {}</title></circle>\n",
                         f.px(series.x[k]), f.py(series.y[k]), series.color, xml_escape(series.name), number(series.x[k]),
                         number(series.y[k]));
      }
    }
    s += fmt::format("<path d=\"M{:.1f},{:.1f}h18\" stroke=\"{}\" stroke-width=\"2\"{}/><text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n",
                     legend_x, kTop + 6, series.color, series.dashed ? " stroke-dasharray=\"6 4\"" : "", legend_x + 22,
                     kTop + 10, xml_escape(series.name));
    legend_x += 30 + 6.5 * series.name.size();
  }
  return s + "</svg>\n";
}

std::string bar_chart_svg(const BarChart& chart) {
  double top = 0;
  for (double v : chart.values) top = std::max(top, v);
  const std::vector<double> y_ticks = ticks(0, top > 0 ? top : 1);
  const Frame f{0, 1, 0, y_ticks.back()};
  std::string s = open_svg(chart.title) + y_axis(f, y_ticks, chart.x_label, chart.y_label);
  const size_t n = chart.values.size();
  const double slot = n > 0 ? kPlotW / n : kPlotW;
  size_t longest = 1;
  for (const std::string& label : chart.labels) longest = std::max(longest, label.size());
  const auto fits = static_cast<size_t>(std::max(1.0, kPlotW / (6.5 * longest + 12)));
  const size_t label_every = std::max<size_t>(1, (n + fits - 1) / fits);  // labels that do not overlap
  for (size_t k = 0; k < n; ++k) {
    const double x = kLeft + k * slot + slot * 0.1, w = slot * 0.8;
    const double y = f.py(chart.values[k]), h = kTop + kPlotH - y;
    s += fmt::format("<path class=\"bar\" d=\"M{:.1f},{:.1f}h{:.1f}v{:.1f}h{:.1f}Z\" fill=\"{}\"><title>{}: {}</title></path>\n", x,
                     kTop + kPlotH, w, -h, -w, chart.color, xml_escape(chart.labels[k]), number(chart.values[k]));
    if (k % label_every == 0) {
      s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", x + w / 2, kTop + kPlotH + 15,
                       xml_escape(chart.labels[k]));
    }
  }
  return s + "</svg>\n";
}

}  // namespace tastebud::host
