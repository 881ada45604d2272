#include "host/distributed_eval.h"

#include <cstring>
#include <memory>
#include <optional>
#include <unordered_map>

#include "tastebud/engine/scorer.h"

namespace tastebud::host {
namespace {

template <class T>
std::vector<T> gather_vector(Communicator& comm, const std::vector<T>& mine) {
  const std::vector<std::byte> all =
      comm.gather_to_root({reinterpret_cast<const std::byte*>(mine.data()), mine.size() * sizeof(T)});
  std::vector<T> out(all.size() / sizeof(T));
  if (!all.empty()) std::memcpy(out.data(), all.data(), all.size());
  return out;
}

}  // namespace

UserRange rank_share(size_t users, int rank, int ranks) {
  const auto n = static_cast<size_t>(ranks), r = static_cast<size_t>(rank);
  return {r * users / n, (r + 1) * users / n};
}

namespace {

// Rows [u * cols, (u + 1) * cols) of a sharded table for `users`, asked of their owners.
std::vector<float> fetch_rows(Communicator& comm, const Tensor& held, std::span<const uint32_t> users) {
  std::vector<float> out;
  fetch_sharded_rows(comm, held.values.data(), held.cols(), users, out);
  return out;
}

// The whole table from every rank's rows (u % N == rank, in order): all-gathered.
std::vector<float> whole_table(Communicator& comm, const Tensor& held) {
  const uint64_t n = static_cast<uint64_t>(comm.size()), rows = held.rows(), cols = held.cols();
  const auto local = [&](uint64_t rank) { return ModelParams::shard_rows(rows, rank, n); };
  std::vector<size_t> counts(n);
  size_t offset = 0;
  for (uint64_t r = 0; r < n; ++r) {
    counts[r] = local(r) * cols * sizeof(float);
    if (r < static_cast<uint64_t>(comm.rank())) offset += counts[r];
  }
  std::vector<float> blocks(rows * cols);
  std::copy(held.values.begin(), held.values.end(), blocks.begin() + static_cast<int64_t>(offset / sizeof(float)));
  comm.allgather_in_place({reinterpret_cast<std::byte*>(blocks.data()), blocks.size() * sizeof(float)}, counts);
  std::vector<float> whole(rows * cols);
  for (uint64_t r = 0, at = 0; r < n; ++r) {
    for (uint64_t u = r; u < rows; u += n, ++at) {
      std::copy_n(blocks.begin() + static_cast<int64_t>(at * cols), cols, whole.begin() + static_cast<int64_t>(u * cols));
    }
  }
  return whole;
}

// Users u (in split order) -> their index among users.
std::unordered_map<uint32_t, uint32_t> index_of(std::span<const uint32_t> users) {
  std::unordered_map<uint32_t, uint32_t> index;
  for (uint32_t k = 0; k < users.size(); ++k) index.emplace(users[k], k);
  return index;
}

}  // namespace

ModelParams share_model(Communicator& comm, const ModelParams& held, std::span<const uint32_t> users) {
  if (!held.sharded()) return held;
  // Everything but the id tables copied; those are filled below.
  ModelParams model;
  model.config = held.config;
  model.weights.resize(held.weights.size());
  model.biases.resize(held.biases.size());
  const std::vector<const Tensor*> from = held.tensors();
  const std::vector<Tensor*> to = model.tensors();
  for (size_t t = 0; t < from.size(); ++t) {
    *to[t] = t < ModelParams::kEmbeddingTables ? Tensor{from[t]->name, from[t]->shape, {}} : *from[t];
  }
  model.config.num_users = static_cast<uint32_t>(users.size());
  model.user_gmf.values = fetch_rows(comm, held.user_gmf, users);
  model.user_mlp.values = fetch_rows(comm, held.user_mlp, users);
  model.user_gmf.shape[0] = model.user_mlp.shape[0] = users.size();
  model.item_gmf.values = whole_table(comm, held.item_gmf);
  model.item_mlp.values = whole_table(comm, held.item_mlp);
  return model;
}

FeatureInputs subset_entities(const FeatureInputs& in, std::span<const uint32_t> ids) {
  FeatureInputs out;
  out.entities = static_cast<uint32_t>(ids.size());
  out.numeric = in.numeric;
  if (!in.offsets.empty()) out.offsets.push_back(0);
  for (const uint32_t x : ids) {
    if (!in.offsets.empty()) {
      out.rows.insert(out.rows.end(), in.rows.begin() + in.offsets[x], in.rows.begin() + in.offsets[x + 1]);
      out.weights.insert(out.weights.end(), in.weights.begin() + in.offsets[x], in.weights.begin() + in.offsets[x + 1]);
      out.offsets.push_back(out.rows.size());
    }
    const auto values = in.values.begin() + static_cast<int64_t>(x) * in.numeric;
    out.values.insert(out.values.end(), values, values + in.numeric);
  }
  return out;
}

Metrics evaluate_model(Communicator& comm, const Split& split, const ModelParams& held, const FeatureInputs& user_features,
                       const FeatureInputs& item_features, const FeatureInputs& context_rows, uint32_t threads) {
  if (split.protocol == EvalProtocol::kNone) return {};
  const UserRange share = rank_share(split.eval_users.size(), comm.rank(), comm.size());
  const std::span<const uint32_t> users(split.eval_users.data() + share.begin, share.end - share.begin);
  // Sharded: this rank's users become users 0, 1, ... of a model of its share.
  std::optional<ModelParams> shared;
  if (held.sharded()) shared = share_model(comm, held, users);
  const ModelParams& params = shared ? *shared : held;
  const std::unordered_map<uint32_t, uint32_t> index = shared ? index_of(users) : std::unordered_map<uint32_t, uint32_t>();
  const ModelConfig& config = params.config;
  std::unique_ptr<Scorer> scorer;
  if (!config.has_metadata()) {
    scorer = std::make_unique<Scorer>(params);
  } else if (shared) {
    scorer = std::make_unique<Scorer>(params, subset_entities(user_features, users), item_features);
  } else {
    scorer = std::make_unique<Scorer>(params, user_features, item_features);
  }
  // Each eval user ranked in the context of its held-out interaction (context_rows: one entity per
  // eval user), when the model has context.
  std::unordered_map<uint32_t, std::vector<float>> contexts;
  if (config.has_context()) {
    for (size_t k = share.begin; k < share.end; ++k) {
      contexts[split.eval_users[k]] = context_vector(params, context_rows, static_cast<uint32_t>(k));
    }
  }
  return evaluate_across_ranks(comm, split, [&](uint32_t u, std::span<const uint32_t> items, std::span<float> out) {
    const auto it = contexts.find(u);
    const std::span<const float> context = it == contexts.end() ? std::span<const float>() : it->second;
    const uint32_t row = shared ? index.at(u) : u;
    if (items.empty()) scorer->score_all(row, out, context); else scorer->score(row, items, out, context);
  }, threads);
}

UserValues gather_user_values(Communicator& comm, const UserValues& mine) {
  if (comm.size() == 1) return mine;
  UserValues all;
  all.values = gather_vector(comm, mine.values);
  all.lists = gather_vector(comm, mine.lists);
  if (!comm.root()) return {};
  all.names = mine.names;  // every rank measures the same metrics of the same split
  all.list_size = mine.list_size;
  all.num_items = mine.num_items;
  return all;
}

Metrics evaluate_across_ranks(Communicator& comm, const Split& split, const ScoreFn& score, uint32_t threads) {
  if (split.protocol == EvalProtocol::kNone) return {};
  const UserRange share = rank_share(split.eval_users.size(), comm.rank(), comm.size());
  const UserValues all = gather_user_values(comm, evaluate_users(split, score, threads, share));
  return comm.root() ? summarize(all) : Metrics{};
}

}  // namespace tastebud::host
