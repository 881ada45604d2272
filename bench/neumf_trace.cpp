// Writes what the PyTorch peer needs to retrace a tastebud NeuMF run step by step (issue 13): the
// initial parameters of a seed, the (user, item, label) rows of the first epochs in batch order as
// the engine's own fill_sample produces them, and the CPU backend's parameters after steps 1, 65,
// 257 and 1025 and after its first epoch (DIR/stepN), all as raw little-endian float32 / uint32 arrays.
//   neumf_trace DATASET_DIR OUT_DIR SEED SAMPLE_EPOCHS [lazy|dense]
// The model is the paper's NeuMF (8 factors, layers 64,32,16,8, 4 negatives, Adam 0.001, batch
// 256, no L2, ids only) on the split bench/export_split writes, trained on one thread, with lazy
// (the default) or dense embedding updates (compare with the peer's --lazy-embeddings or without).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cpu/sampler.h"
#include "host/split.h"
#include "tastebud/batch_rows.h"
#include "tastebud/engine/trainer.h"
#include "tastebud/error.h"

namespace fs = std::filesystem;
using namespace tastebud;

namespace {

template <class T>
void write_array(const fs::path& path, const std::vector<T>& values) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
  if (!out) throw Error("cannot write " + path.string());
}

// Every tensor as DIR/NAME.f32, with DIR/tensors.json naming them and their shapes in layout order.
void write_params(const fs::path& dir, const ModelParams& params) {
  fs::create_directories(dir);
  nlohmann::json index = nlohmann::json::array();
  for (const Tensor* t : params.tensors()) {
    write_array(dir / (t->name + ".f32"), t->values);
    index.push_back({{"name", t->name}, {"shape", t->shape}});
  }
  std::ofstream(dir / "tensors.json") << index.dump() << "\n";
}

// Epoch `epoch` (0-based, as the backend numbers it) in batch order, row s = epoch position s.
void write_samples(const fs::path& dir, const TrainingSet& train, const TrainOptions& options, uint32_t epoch) {
  const uint64_t total = samples_per_epoch(train.size(), options.negatives, false);
  std::vector<uint64_t> order(train.size());
  cpu::shuffle_order(options.seed, epoch, train.size(), order);
  std::vector<uint32_t> users(total), items(total);
  std::vector<float> labels(total), weights(total);
  const BatchRowsOut out{users.data(), items.data(), labels.data(), weights.data(), nullptr};
  const SampleSpec spec{options.seed, epoch, options.negatives, false};
  const PositivesView view = train.view(0.0f);
  for (uint64_t s = 0; s < total; ++s) fill_sample(spec, view, order.data(), 0, s, out);
  const std::string name = "epoch" + std::to_string(epoch + 1);
  write_array(dir / (name + "_user.u32"), users);
  write_array(dir / (name + "_item.u32"), items);
  write_array(dir / (name + "_label.f32"), labels);
}

// The CPU backend's first epoch on one thread, its parameters written as DIR/stepN after step N for
// N = 1, 65, 129, 193, 257, 513, 1025 (its progress callback fires after step 1 and then every 64 steps, between
// batches) and after its last step (DIR/step1935 on the synthetic ML-100K).
void write_trained(const fs::path& dir, const TrainingSet& train, const TrainOptions& options,
                   const ModelParams& init) {
  auto backend = make_cpu_backend(train, options, TrainState::fresh(init, options.optimizer));
  const EpochStats stats = backend->train_epoch(0, [&](uint64_t done, uint64_t, double) {
    for (const uint64_t steps : {1, 65, 129, 193, 257, 513, 1025}) {
      if (done == steps * options.batch_size) write_params(dir / ("step" + std::to_string(steps)), backend->state().params);
    }
  });
  const fs::path last = dir / ("step" + std::to_string(backend->state().step));
  write_params(last, backend->state().params);
  std::ofstream(last / "stats.json") << nlohmann::json{{"epoch1_loss", stats.mean_loss}}.dump() << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    std::fprintf(stderr, "usage: neumf_trace DATASET_DIR OUT_DIR SEED SAMPLE_EPOCHS [lazy|dense]\n");
    return 2;
  }
  try {
    const auto dataset = datasets::Dataset::open(argv[1]);
    const host::Split split = host::make_split(dataset, host::SplitOptions{});
    const fs::path out = argv[2];
    fs::create_directories(out);
    TrainOptions options;
    options.seed = std::stoull(argv[3]);
    options.threads = 1;
    const std::string updates = argc == 6 ? argv[5] : "lazy";
    TB_CHECK(updates == "lazy" || updates == "dense", "embedding updates: expected lazy or dense, got '" + updates + "'");
    options.embedding_updates = updates == "dense" ? EmbeddingUpdates::kDense : EmbeddingUpdates::kLazy;
    ModelConfig config;
    config.num_users = split.train.num_users;
    config.num_items = split.train.num_items;
    ModelParams init = ModelParams::initialize(config, options.seed);
    zero_untrained_rows(init, split.train);  // what host/training.cpp does (nothing without metadata)
    write_params(out / "init", init);
    for (uint32_t e = 0; e < static_cast<uint32_t>(std::stoul(argv[4])); ++e) write_samples(out, split.train, options, e);
    write_trained(out, split.train, options, init);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "neumf_trace: %s\n", e.what());
    return 1;
  }
  return 0;
}
