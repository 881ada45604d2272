#include <cstdio>
#include <string>
#include <exception>
#include <filesystem>

#include <CLI/CLI.hpp>

#include "host/commands.h"
#include "host/parameter_words.h"
#include "tastebud/engine/comm.h"
#include "tastebud/error.h"

namespace {

// One process prints and exits; a rank of several prints with its number and ends the whole job
// (MPI_Abort), so no other rank waits forever in a collective.
int fail(tastebud::Communicator* world, const char* prefix, const char* message) {
  const std::string text = std::string("tastebud: ") + prefix + message;
  if (world != nullptr && world->size() > 1) world->abort(text);
  std::fprintf(stderr, "%s\n", text.c_str());
  return 1;
}

// Several ranks run train, batch-infer and batch-segment together; any other command would run N
// times side by side (N imports into one directory), so it is refused.
void check_runs_on_ranks(const tastebud::Communicator& world, int argc, char** argv) {
  if (world.size() == 1 || argc < 2) return;
  const std::string command = argv[1];
  if (command == "train" || command == "batch-infer" || command == "batch-segment" || command.front() == '-') return;
  throw tastebud::Error("`tastebud " + command + "` runs as one process; under mpirun or srun only train, " +
                        "batch-infer and batch-segment run on several ranks");
}

}  // namespace

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
  tastebud::host::add_retrain_commands(app);
  tastebud::host::add_serve_command(app);
  tastebud::Communicator* world = nullptr;
  try {
    world = &tastebud::world_communicator();  // under mpirun: MPI starts here
    check_runs_on_ranks(*world, argc, argv);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (world != nullptr && world->size() > 1 && e.get_exit_code() != 0) world->abort(e.what());
    return app.exit(e);
  } catch (const tastebud::Error& e) {
    return fail(world, "error: ", tastebud::host::in_flag_words(e.what()).c_str());
  } catch (const std::filesystem::filesystem_error& e) {
    // An unwritable or missing directory: the message names the path and the system's reason.
    return fail(world, "error: ", e.what());
  } catch (const std::exception& e) {
    return fail(world, "internal error: ", e.what()) + 1;
  }
  return 0;
}
