#include <iostream>
#include <memory>
#include <string>

#include "host/commands.h"
#include "host/report.h"

namespace tastebud::host {
namespace {

struct ReportArgs {
  std::string model_dir, out, svg_dir;
};

}  // namespace

void add_report_command(CLI::App& app) {
  auto args = std::make_shared<ReportArgs>();
  auto* cmd = app.add_subcommand(
      "report", "Write one self-contained HTML page with charts about a trained model: curves, dataset, metrics");
  cmd->add_option("MODEL_DIR", args->model_dir, "Model directory written by `tastebud train`")
      ->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--out", args->out, "HTML file to write (default MODEL_DIR/report.html)");
  cmd->add_option("--svg-dir", args->svg_dir, "Also write each chart as its own SVG file into this directory");
  cmd->callback([args] {
    const std::filesystem::path written = write_report(args->model_dir, args->out, args->svg_dir);
    std::cout << "report -> " << written.string() << "\n";
  });
}

}  // namespace tastebud::host
