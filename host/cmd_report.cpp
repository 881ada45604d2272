#include <iostream>
#include <memory>
#include <string>

#include "host/commands.h"
#include "host/report.h"

namespace tastebud::host {

void add_report_command(CLI::App& app) {
  auto args = std::make_shared<std::pair<std::string, std::string>>();
  auto* cmd = app.add_subcommand(
      "report", "Write one self-contained HTML page with charts about a trained model: curves, dataset, metrics");
  cmd->add_option("MODEL_DIR", args->first, "Model directory written by `tastebud train`")
      ->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--out", args->second, "HTML file to write (default MODEL_DIR/report.html)");
  cmd->callback([args] { std::cout << "report -> " << write_report(args->first, args->second).string() << "\n"; });
}

}  // namespace tastebud::host
