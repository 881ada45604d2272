// What a model directory turns into besides answers: the protobuf wire format under the ONNX
// export, and the dataset histograms and charts of the report. (The ONNX file itself is checked by
// onnx.checker and onnxruntime in python/tests/test_onnx.py; the page in Chromium in test_report.py.)
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <unistd.h>
#include <string>
#include <vector>

#include "host/dataset_shape.h"
#include "host/protobuf_writer.h"
#include "host/report.h"
#include "run_cli.h"
#include "tastebud/error.h"
#include "host/svg_chart.h"

namespace tastebud::host {
namespace {

std::string bytes(std::initializer_list<int> values) {
  std::string s;
  for (int v : values) s += static_cast<char>(v);
  return s;
}

TEST(ProtoWriter, EncodesTheDocumentedExamples) {
  // protobuf.dev's encoding guide: field 1 = 150 is 08 96 01; field 2 = "testing" is 12 07 ...
  EXPECT_EQ(ProtoWriter().varint(1, 150).str(), bytes({0x08, 0x96, 0x01}));
  EXPECT_EQ(ProtoWriter().bytes(2, "testing").str(), bytes({0x12, 0x07}) + "testing");
  // A negative int64 takes ten bytes (two's complement as uint64).
  EXPECT_EQ(ProtoWriter().int64(1, -1).str(), bytes({0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}));
  // Packed repeated field 4 = [3, 270, 86942] is 22 06 03 8E 02 9E A7 05.
  const std::vector<int64_t> packed{3, 270, 86942};
  EXPECT_EQ(ProtoWriter().packed_int64(4, packed).str(), bytes({0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05}));
  // Field 2 float 1.0f: tag 0x15, then 00 00 80 3F little-endian.
  EXPECT_EQ(ProtoWriter().fixed32_float(2, 1.0f).str(), bytes({0x15, 0x00, 0x00, 0x80, 0x3f}));
  // Field 3 holding a message {1: 150}: 1A 03 08 96 01.
  ProtoWriter inner;
  inner.varint(1, 150);
  EXPECT_EQ(ProtoWriter().message(3, inner).str(), bytes({0x1a, 0x03, 0x08, 0x96, 0x01}));
  // Field numbers past 15 take a two-byte tag: field 20 varint is A0 01.
  EXPECT_EQ(ProtoWriter().varint(20, 2).str(), bytes({0xa0, 0x01, 0x02}));
}

TEST(DatasetShape, BucketsCountsByPowersOfTwo) {
  const Histogram h = log2_histogram({1, 1, 2, 3, 4, 7, 8, 0});
  EXPECT_EQ(h.labels, (std::vector<std::string>{"0", "1", "2-3", "4-7", "8-15"}));
  EXPECT_EQ(h.counts, (std::vector<double>{1, 2, 2, 2, 1}));
  const Histogram no_zero = log2_histogram({5, 1});
  EXPECT_EQ(no_zero.labels, (std::vector<std::string>{"1", "2-3", "4-7"}));
  EXPECT_EQ(no_zero.counts, (std::vector<double>{1, 0, 1}));
}

TEST(DatasetShape, SpreadsEventsOverEqualPeriods) {
  const int64_t day = 86400;
  const std::vector<int64_t> times{0, 1, day, 2 * day, 4 * day - 1};
  const Histogram h = time_histogram(times, 4);
  EXPECT_EQ(h.counts, (std::vector<double>{2, 1, 1, 1}));
  EXPECT_EQ(h.labels.front(), "1970-01-01");
  EXPECT_EQ(h.labels.back(), "1970-01-04");
}

TEST(SvgChart, DrawsOnePathPerSeriesAndBar) {
  LineChart line{"loss <per> epoch", "epoch", "loss", {{"model", {1, 2, 3}, {0.7, 0.5, 0.4}}}};
  line.series.push_back({"baseline", {1, 3}, {0.6, 0.6}, "#d62728", true});
  const std::string svg = line_chart_svg(line);
  EXPECT_NE(svg.find("loss &lt;per&gt; epoch"), std::string::npos);
  size_t series = 0;
  for (size_t at = svg.find("class=\"series\""); at != std::string::npos; at = svg.find("class=\"series\"", at + 1)) ++series;
  EXPECT_EQ(series, 2u);
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);
  const std::string bars = bar_chart_svg({"types", "type", "n", {"view", "cart"}, {10, 3}});
  size_t count = 0;
  for (size_t at = bars.find("class=\"bar\""); at != std::string::npos; at = bars.find("class=\"bar\"", at + 1)) ++count;
  EXPECT_EQ(count, 2u);
}

// A metrics.jsonl row the report cannot chart is refused naming the file, the line and the field,
// and the command prints no "report ->" line.
TEST(Report, RefusesAMetricsRowItCannotChart) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("tastebud_test_report_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"eval": "loo", "model": "neumf"})";
  const std::string good = R"({"epoch": 1, "loss": 0.5, "metrics": {"hr@10": 0.4, "auc": null}})";
  std::ofstream(dir / "metrics.jsonl") << good << "\n";
  EXPECT_NE(render_report(dir).html.find("hr@10"), std::string::npos);
  const std::pair<const char*, const char*> cases[] = {
      {R"({"epoch": 2, "loss": 0.4})", ":2: field 'metrics' is missing"},
      {R"({"epoch": 2, "loss": "low", "metrics": {}})", ":2: field 'loss' is not a number"},
      {R"({"epoch": 2, "loss": 0.4, "metrics": {"hr@10": "high"}})", ":2: metric 'hr@10' is not a number"}};
  for (const auto& [row, message] : cases) {
    std::ofstream(dir / "metrics.jsonl") << good << "\n" << row << "\n";
    try {
      render_report(dir);
      ADD_FAILURE() << row;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find((dir / "metrics.jsonl").string() + message), std::string::npos)
          << e.what();
    }
  }
  std::string out;
  EXPECT_EQ(testing_cli::run_cli("report " + dir.string(), &out), 1);
  EXPECT_EQ(out.find("report ->"), std::string::npos) << out;
  EXPECT_EQ(out.find("internal error"), std::string::npos) << out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tastebud::host
