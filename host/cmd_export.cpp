#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "host/commands.h"
#include "host/export_onnx.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace {

struct ExportArgs {
  std::string model, format = "onnx", out;
};

void run_export(const ExportArgs& args) {
  if (args.format != "onnx") throw Error(fmt::format("export: unknown --format '{}': expected onnx", args.format));
  const OnnxExport e = export_onnx(args.model, args.out);
  std::cout << fmt::format("exported {} ({} users, {} items, {:.1f} MB, ONNX IR {} opset {}) -> {}, ids -> {}\n",
                           args.model, e.users, e.items, e.bytes / 1e6, kOnnxIrVersion, kOnnxOpset,
                           e.model.string(), e.ids.string());
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  auto* cmd = app.add_subcommand("export", "Export a neural model (neumf, gmf, mlp, mf, sasrec) for serving elsewhere");
  cmd->add_option("--model", args->model, "Model directory written by `tastebud train`")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--format", args->format,
                  "onnx: inputs user and item (int64 rows [N]), output score (probability [N]); ids in OUT.ids.json")
      ->capture_default_str();
  cmd->add_option("--out", args->out, "File to write (e.g. model.onnx), atomically")->required();
  cmd->callback([args] { run_export(*args); });
}

}  // namespace tastebud::host
