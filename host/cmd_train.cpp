#include "host/commands.h"

#include "tastebud/error.h"

namespace tastebud::host {

void add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a model on an imported dataset");
  cmd->callback([] { throw Error("train: not implemented yet"); });
}

}  // namespace tastebud::host
