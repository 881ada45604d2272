// Each file host/cmd_*.cpp adds its subcommands to the one CLI11 app.
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

namespace tastebud::host {

// Whether the TrainJob field `name` (snake_case, as apply_model_defaults asks) was given on cmd's
// command line; false for a field without a flag of its own.
std::function<bool(const std::string&)> given_on(const CLI::App* cmd);

void add_data_commands(CLI::App& app);      // import, info    (cmd_data.cpp)
void add_generate_command(CLI::App& app);   // generate        (cmd_generate.cpp)
void add_train_command(CLI::App& app);   // train, recommenders         (cmd_train.cpp)
void add_infer_commands(CLI::App& app);  // batch-infer, batch-segment   (cmd_infer.cpp)
void add_evaluate_command(CLI::App& app);  // evaluate                  (cmd_evaluate.cpp)
void add_tune_command(CLI::App& app);      // tune                      (cmd_tune.cpp)
void add_export_command(CLI::App& app);  // export --format onnx         (cmd_export.cpp)
void add_report_command(CLI::App& app);  // report                       (cmd_report.cpp)
void add_retrain_commands(CLI::App& app);  // retrain, delete-users     (cmd_retrain.cpp)
void add_serve_command(CLI::App& app);     // serve                     (cmd_serve.cpp)

}  // namespace tastebud::host
