#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "host/commands.h"
#include "host/serve.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::host {
namespace {

struct ServeArgs {
  ServeOptions options;
  std::string listen = "127.0.0.1:8080", api_key_file;
};

// HOST:PORT; a bare PORT listens on 127.0.0.1.
void parse_listen(const std::string& text, ServeOptions& o) {
  const size_t colon = text.rfind(':');
  const std::string port = colon == std::string::npos ? text : text.substr(colon + 1);
  if (colon != std::string::npos) o.host = text.substr(0, colon);
  try {
    size_t used = 0;
    o.port = std::stoi(port, &used);
    if (used != port.size() || o.port < 0 || o.port > 65535) throw std::out_of_range("port");
  } catch (const std::exception&) {
    throw Error(fmt::format("--listen '{}': expected HOST:PORT, e.g. 127.0.0.1:8080 (port 0: any free one)", text));
  }
  if (o.host.empty()) throw Error(fmt::format("--listen '{}': no host before the port", text));
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve",
                                 "Answer the service's runtime API over HTTP (recommendations, personalized ranking, events)");
  auto* model = cmd->add_option("--model", args->options.model, "Model directory written by `tastebud train`");
  auto* models = cmd->add_option("--models", args->options.models,
                                 "Retrain directory: serves its `current` and swaps to a new one when retrain promotes it");
  auto* recommenders = cmd->add_option("--recommenders", args->options.recommenders,
                                       "Directory written by `tastebud recommenders`: every use case it trained, each request "
                                       "naming its own by recommenderArn");
  model->excludes(models);
  model->excludes(recommenders);
  models->excludes(recommenders);
  cmd->add_option("--events", args->options.events,
                  "Directory of the event log (default: DATASET.events beside the model's dataset)");
  cmd->add_option("--listen", args->listen, "HOST:PORT to listen on (port 0: any free port)")->capture_default_str();
  cmd->add_option("--threads", args->options.threads, "Request threads, one per open connection (0: max(64, 8 x the cores))")->capture_default_str();
  cmd->add_option("--max-sessions", args->options.max_sessions,
                  "Users and sessions whose latest events are kept for their next answers (least recent dropped first)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_flag("--normalize-scores", args->options.normalize_scores,
                "User answers' scores as the service gives them: each item's share of the allowed catalog's scores (they sum to 1)");
  cmd->add_option("--filters", args->options.filters,
                  "JSON object of named filter expressions, which requests name by filterArn")
      ->check(CLI::ExistingFile);
  cmd->add_option("--api-key-file", args->api_key_file, "File holding the key requests must send (X-Api-Key or Authorization: Bearer)")
      ->check(CLI::ExistingFile);
  cmd->callback([args] {
    if (args->options.model.empty() && args->options.models.empty() && args->options.recommenders.empty())
      throw Error("serve: give --model DIR, --models DIR or --recommenders DIR");
    parse_listen(args->listen, args->options);
    if (!args->api_key_file.empty()) {
      std::string key = read_file(args->api_key_file);
      while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
      if (key.empty()) throw Error(fmt::format("--api-key-file {}: the file is empty", args->api_key_file));
      args->options.api_key = key;
    }
    serve(args->options, std::cout);
  });
}

}  // namespace tastebud::host
