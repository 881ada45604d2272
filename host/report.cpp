#include "host/report.h"

#include <cctype>
#include <cmath>
#include <sstream>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "host/dataset_shape.h"
#include "host/svg_chart.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"
#include "tastebud/json_input.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Every chart of the page, also kept apart for --svg-dir: (file name, markup).
using Charts = std::vector<std::pair<std::string, std::string>>;

const std::string& keep(Charts& charts, std::string name, std::string svg) {
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '-';
  charts.emplace_back(fmt::format("{:02d}-{}.svg", charts.size() + 1, name), std::move(svg));
  return charts.back().second;
}

constexpr const char* kModelColor = "#1f77b4";
constexpr const char* kBaselineColor = "#d62728";
constexpr const char* kValidationColor = "#2ca02c";

// The metrics a report charts and tables: the test metrics, not their interval bounds, their
// counts, nor the validation split's copies (drawn beside them).
bool charted(const std::string& key) {
  return key != "eval_users" && !key.starts_with("val.") && !key.ends_with(".lo") && !key.ends_with(".hi") &&
         !key.ends_with(".p");
}

json read_json(const fs::path& path) { return parse_json(read_file(path), path.string()); }

// What the charts read of a metrics.jsonl row: an epoch, a number loss when it has one, and
// metrics that are numbers (null, a value JSON cannot hold, is left out).
void check_row(json& row, const fs::path& path, int line) {
  const auto bad = [&](const std::string& what) {
    return Error(fmt::format("{}:{}: {}; a row needs an integer epoch, a number loss and an object "
                             "of number metrics",
                             path.string(), line, what));
  };
  if (!row.is_object()) throw bad("not a JSON object");
  for (const char* field : {"epoch", "metrics"}) {
    if (!row.contains(field)) throw bad(fmt::format("field '{}' is missing", field));
  }
  if (!row["epoch"].is_number_unsigned()) throw bad("field 'epoch' is not an epoch number");
  if (row.contains("loss") && !row["loss"].is_number()) throw bad("field 'loss' is not a number");
  json& metrics = row["metrics"];
  if (!metrics.is_object()) throw bad("field 'metrics' is not an object");
  for (auto it = metrics.begin(); it != metrics.end();) {
    if (!it.value().is_number() && !it.value().is_null())
      throw bad(fmt::format("metric '{}' is not a number", it.key()));
    it = it.value().is_null() ? metrics.erase(it) : std::next(it);
  }
}

std::vector<json> read_rows(const fs::path& path) {
  std::vector<json> rows;
  if (!fs::exists(path)) return rows;
  std::istringstream lines(read_file(path));
  std::string line;
  for (int n = 1; std::getline(lines, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    rows.push_back(parse_json(line, fmt::format("{}:{}", path.string(), n)));
    check_row(rows.back(), path, n);
  }
  return rows;
}

std::string value_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) return fmt::format("{:.6g}", v.get<double>());
  return v.dump();
}

std::string config_table(const json& config) {
  std::string s = "<table class=\"config\">\n";
  for (auto it = config.begin(); it != config.end(); ++it) {
    if (it.key() == "model_config") continue;
    s += fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", xml_escape(it.key()), xml_escape(value_text(it.value())));
  }
  return s + "</table>\n";
}

// The training loss, then one chart per metric: the test split's values, the validation split's
// (which chose the epoch) when the run had one, and the popularity baseline.
std::string training_charts(const std::vector<json>& rows, const json& baseline, Charts& charts) {
  std::string s;
  ChartSeries loss{"training loss", {}, {}, kModelColor};
  for (const json& r : rows) {
    if (!r.contains("loss")) continue;
    loss.x.push_back(r.at("epoch").get<double>());
    loss.y.push_back(r.at("loss").get<double>());
  }
  if (!loss.x.empty()) s += keep(charts, "loss", line_chart_svg({"Training loss per epoch", "epoch", "mean loss", {loss}}));
  if (rows.empty()) return s;
  for (auto it = rows.back().at("metrics").begin(); it != rows.back().at("metrics").end(); ++it) {
    const std::string& metric = it.key();
    if (!charted(metric)) continue;
    ChartSeries model{"test", {}, {}, kModelColor}, validation{"validation", {}, {}, kValidationColor};
    for (const json& r : rows) {
      const json& m = r.at("metrics");
      if (m.contains(metric)) {
        model.x.push_back(r.at("epoch").get<double>());
        model.y.push_back(m.at(metric).get<double>());
      }
      if (m.contains("val." + metric)) {
        validation.x.push_back(r.at("epoch").get<double>());
        validation.y.push_back(m.at("val." + metric).get<double>());
      }
    }
    LineChart chart{fmt::format("Evaluation {} per epoch", metric), "epoch", metric, {model}};
    if (!validation.x.empty()) chart.series.push_back(validation);
    if (baseline.contains(metric) && !model.x.empty()) {
      const double b = baseline.at(metric).get<double>();
      chart.series.push_back({"popularity baseline", {model.x.front(), model.x.back()}, {b, b}, kBaselineColor, true});
    }
    s += keep(charts, metric, line_chart_svg(chart));
  }
  return s;
}

// The run's own 95% bootstrap interval when metrics.jsonl has it, else the binomial one.
std::string interval(const json& metrics, const std::string& metric, double m, double n) {
  if (metrics.contains(metric + ".lo") && metrics.contains(metric + ".hi")) {
    return fmt::format("[{:.4f}, {:.4f}]", metrics.at(metric + ".lo").get<double>(), metrics.at(metric + ".hi").get<double>());
  }
  if (metric == "coverage" || n <= 0 || m < 0 || m > 1) return "";
  const double half = 1.96 * std::sqrt(m * (1 - m) / n);
  return fmt::format("[{:.4f}, {:.4f}]", std::max(0.0, m - half), std::min(1.0, m + half));
}

std::string metrics_table(const std::vector<json>& rows, const json& baseline, uint32_t best_epoch) {
  if (rows.empty()) return "<p>No epoch has finished: no metrics yet.</p>\n";
  const json* best = &rows.back();
  for (const json& r : rows)
    if (r.at("epoch").get<uint32_t>() == best_epoch) best = &r;
  const json& m = best->at("metrics");
  const double n = m.value("eval_users", 0.0);
  std::string s = fmt::format("<p>Epoch {} of {}, {} evaluated users. Intervals: 95%, the bootstrap over users "
                              "the run recorded, or for runs before it m &#177; 1.96&#8730;(m(1&#8722;m)/n).</p>\n",
                              best->at("epoch").get<uint32_t>(), rows.back().at("epoch").get<uint32_t>(),
                              static_cast<uint64_t>(n));
  s += "<table class=\"metrics\">\n<tr><th>metric</th><th>model</th><th>95% interval</th><th>popularity</th></tr>\n";
  for (auto it = m.begin(); it != m.end(); ++it) {
    if (!charted(it.key())) continue;
    const double v = it.value().get<double>();
    s += fmt::format("<tr><th>{}</th><td>{:.4f}</td><td>{}</td><td>{}</td></tr>\n", xml_escape(it.key()), v,
                     interval(m, it.key(), v, n),
                     baseline.contains(it.key()) ? fmt::format("{:.4f}", baseline.at(it.key()).get<double>()) : "");
  }
  return s + "</table>\n";
}

std::string dataset_section(const json& config, Charts& charts) {
  const fs::path data = config.value("data", std::string());
  if (data.empty() || !fs::is_directory(data)) {
    return fmt::format("<p>The dataset ({}) is gone: its charts are left out.</p>\n",
                       xml_escape(data.empty() ? "not recorded" : data.string()));
  }
  const DatasetShape shape = dataset_shape(datasets::Dataset::open(data));
  std::string s = fmt::format("<p>{}: {} interactions, {} users, {} items.</p>\n<div class=\"charts\">\n",
                              xml_escape(data.string()), shape.interactions, shape.users, shape.items);
  s += keep(charts, "interactions-per-user",
            bar_chart_svg({"Interactions per user", "interactions", "users", shape.per_user.labels, shape.per_user.counts}));
  s += keep(charts, "interactions-per-item",
            bar_chart_svg({"Interactions per item", "interactions", "items", shape.per_item.labels, shape.per_item.counts}));
  s += keep(charts, "events-over-time",
            bar_chart_svg({"Events over time", "period starting (UTC)", "interactions", shape.over_time.labels,
                           shape.over_time.counts, "#59a14f"}));
  s += keep(charts, "event-types",
            bar_chart_svg({"Event types", "EVENT_TYPE", "interactions", shape.event_types.labels,
                           shape.event_types.counts, "#f28e2b"}));
  return s + "</div>\n";
}

constexpr const char* kStyle = R"(body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #eee;background:#fff}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td{font-family:monospace})";

}  // namespace

ReportPage render_report(const fs::path& model_dir) {
  if (!fs::is_directory(model_dir)) throw Error(fmt::format("report: {} is not a model directory", model_dir.string()));
  const json config = read_json(model_dir / "config.json");
  const std::vector<json> rows = read_rows(model_dir / "metrics.jsonl");
  const json baseline = fs::exists(model_dir / "baseline.json")
                            ? read_json(model_dir / "baseline.json").value("popularity", json::object())
                            : json::object();
  // The best epoch as training chose it is in the checkpoint's history; the report takes the row
  // whose early-stopping metric is highest, which is the same choice.
  const std::string protocol = config.value("eval", std::string("loo"));
  const std::string test_metric = protocol == "holdout" || protocol == "personalize" ? "ndcg@10" : "hr@10";
  // A run with a validation split chose its epoch on it.
  const bool validated = !rows.empty() && rows.front().at("metrics").contains("val." + test_metric);
  const std::string metric = validated ? "val." + test_metric : test_metric;
  uint32_t best_epoch = rows.empty() ? 0 : rows.back().at("epoch").get<uint32_t>();
  double best = -1;
  for (const json& r : rows) {
    const double v = r.at("metrics").value(metric, -1.0);
    if (v > best) {
      best = v;
      best_epoch = r.at("epoch").get<uint32_t>();
    }
  }
  const std::string kind = config.value("model", std::string("?"));
  std::string html = fmt::format("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                                 "<title>tastebud report: {0}</title>\n<style>{1}</style>\n</head>\n<body>\n"
                                 "<h1>tastebud report: {2} model in {0}</h1>\n",
                                 xml_escape(model_dir.string()), kStyle, xml_escape(kind));
  html += "<h2>Final metrics</h2>\n" + metrics_table(rows, baseline, best_epoch);
  ReportPage page;
  html += "<h2>Training</h2>\n<div class=\"charts\">\n" + training_charts(rows, baseline, page.charts) + "</div>\n";
  html += "<h2>Dataset</h2>\n" + dataset_section(config, page.charts);
  html += "<h2>Configuration</h2>\n" + config_table(config);
  if (config.contains("model_config")) {
    html += "<pre>" + xml_escape(config.at("model_config").dump(2)) + "</pre>\n";
  }
  page.html = html + "</body>\n</html>\n";
  return page;
}

fs::path write_report(const fs::path& model_dir, const fs::path& out, const fs::path& svg_dir) {
  const fs::path path = out.empty() ? model_dir / "report.html" : out;
  const ReportPage page = render_report(model_dir);
  if (!svg_dir.empty()) {
    fs::create_directories(svg_dir);
    for (const auto& [name, svg] : page.charts) {
      write_file_atomically(svg_dir / name, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + svg);
    }
  }
  write_file_atomically(path, page.html);
  return path;
}

}  // namespace tastebud::host
