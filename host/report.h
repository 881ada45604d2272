// `tastebud report`: one self-contained HTML page about a trained model, charts drawn as inline
// SVG by host/svg_chart.h (no script, no network): the training loss and every validation metric
// per epoch with the popularity baseline as a dashed line, the dataset's shape (interactions per
// user and per item, events over time, event types; host/dataset_shape.h), the configuration, and
// the best epoch's metrics with 95% intervals.
//
// Intervals: m ± 1.96 sqrt(m (1 - m) / n) over the n evaluated users. A per-user hit is a
// Bernoulli variable, so this is the normal interval for hit rates; every other per-user metric
// here lies in [0, 1], whose variance is at most m (1 - m), so for them the interval is
// conservative. Coverage is not a mean over users and gets none.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace tastebud::host {

struct ReportPage {
  std::string html;
  std::vector<std::pair<std::string, std::string>> charts;  // (file name, SVG), in page order
};

// The page for a model directory (config.json, metrics.jsonl, baseline.json when training wrote
// it, and the dataset named in config.json when it is still there).
ReportPage render_report(const std::filesystem::path& model_dir);

// Writes the page to `out` (empty: MODEL_DIR/report.html) atomically, and with svg_dir each
// chart as its own SVG file there; returns the page's path.
std::filesystem::path write_report(const std::filesystem::path& model_dir, const std::filesystem::path& out,
                                   const std::filesystem::path& svg_dir = {});

}  // namespace tastebud::host
