#include <cstdio>
#include <exception>
#include <filesystem>

#include <CLI/CLI.hpp>

#include "host/commands.h"
#include "tastebud/error.h"

int main(int argc, char** argv) {
  CLI::App app{"tastebud: train neural collaborative filtering models on your own exports"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tastebud 0.1.0");
  tastebud::host::add_generate_command(app);
  tastebud::host::add_data_commands(app);
  tastebud::host::add_train_command(app);
  tastebud::host::add_infer_commands(app);
  tastebud::host::add_evaluate_command(app);
  tastebud::host::add_tune_command(app);
  tastebud::host::add_export_command(app);
  tastebud::host::add_report_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const tastebud::Error& e) {
    std::fprintf(stderr, "tastebud: error: %s\n", e.what());
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {
    // An unwritable or missing directory: the message names the path and the system's reason.
    std::fprintf(stderr, "tastebud: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tastebud: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
