#include "tastebud/engine/model_io.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tastebud/checksum.h"
#include "tastebud/engine/comm.h"
#include "tastebud/engine/param_layout.h"
#include "tastebud/engine/train_options.h"  // parameter_floats
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud {
namespace {

constexpr char kMagic[8] = {'T', 'B', 'T', 'E', 'N', 'S', 'O', 'R'};

class Reader {
 public:
  Reader(std::string_view bytes, std::filesystem::path path) : bytes_(bytes), path_(std::move(path)) {}
  template <class T>
  T get() {
    T value;
    need(sizeof(T));
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::string get_string(uint64_t n) {
    need(n);
    std::string s(bytes_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  Tensor get_tensor() {
    Tensor t;
    t.name = get_string(get<uint32_t>());
    const uint32_t rank = get<uint32_t>();
    if (rank > 8) fail("a tensor of rank > 8");
    for (uint32_t r = 0; r < rank; ++r) t.shape.push_back(get<uint64_t>());
    // Dimensions are bounded by what is left of the file before they are multiplied, so that a
    // damaged one can neither wrap the count nor ask for more memory than the file holds. A zero
    // dimension (a GMF model's empty MLP tables) makes an empty tensor whatever the others are.
    uint64_t n = 1;
    if (std::find(t.shape.begin(), t.shape.end(), uint64_t{0}) != t.shape.end()) {
      n = 0;
    } else {
      for (uint64_t d : t.shape) {
        if (n > left() / sizeof(float) / d) fail("a tensor larger than the file");
        n *= d;
      }
    }
    need(n * sizeof(float));
    t.values.resize(n);
    if (n > 0) std::memcpy(t.values.data(), bytes_.data() + pos_, n * sizeof(float));
    pos_ += n * sizeof(float);
    return t;
  }
  uint64_t left() const { return bytes_.size() - pos_; }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("corrupt: {}: {} at byte {}", path_.string(), what, pos_));
  }

 private:
  void need(uint64_t n) const {
    if (n > left()) fail("truncated");
  }
  std::string_view bytes_;
  std::filesystem::path path_;
  size_t pos_ = 0;
};

// A tensor file written piece by piece on rank 0, its checksum computed as it goes; on the other
// ranks (no path) nothing is written and only the collectives of the id rows run.
class TensorFileWriter {
 public:
  explicit TensorFileWriter(const std::filesystem::path* path) {
    if (path != nullptr) file_.emplace(*path);
  }
  void write(std::string_view bytes) {
    if (!file_) return;
    crc_ = crc32_update(crc_, bytes);
    file_->write(bytes);
  }
  template <class T>
  void put_value(const T& value) {
    write({reinterpret_cast<const char*>(&value), sizeof(T)});
  }
  void put_floats(const float* values, size_t count) {
    write({reinterpret_cast<const char*>(values), count * sizeof(float)});
  }
  void commit() {
    if (!file_) return;
    file_->write(checksum_trailer(crc_));
    file_->commit();
  }

 private:
  std::optional<AtomicFile> file_;
  uint32_t crc_ = 0;
};

// Rows [begin, end) of a table of `cols` columns whose rows are sharded over comm (each rank holds
// its rows u % N == rank in order, `mine`): rank 0 gets them in row order, the others nothing.
std::vector<float> gather_row_block(Communicator& comm, const std::vector<float>& mine, uint64_t cols, uint64_t begin,
                                    uint64_t end) {
  const uint64_t n = static_cast<uint64_t>(comm.size()), r = static_cast<uint64_t>(comm.rank());
  const auto local = [&](uint64_t row, uint64_t rank) { return ModelParams::shard_rows(row, rank, n); };
  const uint64_t first = local(begin, r), last = local(end, r);  // this rank's rows of the block
  const std::vector<std::byte> all = comm.gather_to_root(
      {reinterpret_cast<const std::byte*>(mine.data() + first * cols), (last - first) * cols * sizeof(float)});
  if (!comm.root()) return {};
  const auto* from = reinterpret_cast<const float*>(all.data());
  std::vector<uint64_t> start(n);  // where each rank's rows begin in all
  for (uint64_t k = 0, at = 0; k < n; ++k) {
    start[k] = at;
    at += local(end, k) - local(begin, k);
  }
  std::vector<float> block((end - begin) * cols);
  for (uint64_t row = begin; row < end; ++row) {
    const uint64_t k = row % n;
    std::copy_n(from + (start[k] + row / n - local(begin, k)) * cols, cols, block.data() + (row - begin) * cols);
  }
  return block;
}

// Writes t: its header, then its values, whole or (a sharded id table) gathered in blocks of rows.
void write_tensor(Communicator& comm, TensorFileWriter& out, const Tensor& t, bool sharded, size_t block_bytes) {
  out.put_value(static_cast<uint32_t>(t.name.size()));
  out.write(t.name);
  out.put_value(static_cast<uint32_t>(t.shape.size()));
  for (uint64_t d : t.shape) out.put_value(d);
  const uint64_t cols = t.cols();
  if (!sharded || cols == 0) {
    out.put_floats(t.values.data(), t.values.size());
    return;
  }
  const uint64_t rows_per_block = std::max<uint64_t>(1, block_bytes / sizeof(float) / cols);
  for (uint64_t begin = 0; begin < t.rows(); begin += rows_per_block) {
    const std::vector<float> block = gather_row_block(comm, t.values, cols, begin, std::min(t.rows(), begin + rows_per_block));
    out.put_floats(block.data(), block.size());
  }
}

// The whole file: magic, version, header, the tensors (the first `id_tables` of each group of
// `group` are sharded when `sharded`), the checksum. Collective when sharded; rank 0 writes.
void write_tensor_file(Communicator& comm, const std::string& header, const std::vector<const Tensor*>& tensors,
                       bool sharded, size_t group, const std::filesystem::path& path, size_t block_bytes) {
  TensorFileWriter out(comm.root() ? &path : nullptr);
  out.write({kMagic, sizeof(kMagic)});
  out.put_value(kTensorFileVersion);
  out.put_value(static_cast<uint64_t>(header.size()));
  out.write(header);
  out.put_value(static_cast<uint64_t>(tensors.size()));
  for (size_t k = 0; k < tensors.size(); ++k) {
    write_tensor(comm, out, *tensors[k], sharded && k % group < ModelParams::kEmbeddingTables, block_bytes);
  }
  out.commit();
}

// Reads the header JSON and the tensors of a file. Version 2 files end in a CRC-32, checked
// before anything else is read; version 1 files (no checksum) still load.
std::vector<Tensor> decode(const std::filesystem::path& path, nlohmann::json* header) {
  const std::string bytes = read_file(path);
  std::string_view payload = bytes;
  uint32_t version = 0;
  if (bytes.size() >= sizeof(kMagic) + sizeof(version)) std::memcpy(&version, bytes.data() + sizeof(kMagic), sizeof(version));
  if (version >= 2) payload = checked_payload(bytes, path);
  Reader r(payload, path);
  if (r.get_string(sizeof(kMagic)) != std::string(kMagic, sizeof(kMagic))) r.fail("not a tastebud tensor file");
  version = r.get<uint32_t>();
  if (version != kTensorFileVersion && version != 1) {
    throw Error(fmt::format("{}: file version {} is not supported (this build reads 1 and {})",
                            path.string(), version, kTensorFileVersion));
  }
  const std::string text = r.get_string(r.get<uint64_t>());
  try {
    *header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    r.fail(std::string("bad header: ") + e.what());
  }
  if (!header->is_object() || !header->contains("config") || !header->at("config").is_object())
    r.fail("a header without its \"config\" object");
  const uint64_t count = r.get<uint64_t>();
  // Each tensor takes at least its name length and rank.
  if (count > r.left() / 8) r.fail(fmt::format("a tensor count ({}) larger than the file", count));
  std::vector<Tensor> tensors;
  for (uint64_t i = 0; i < count; ++i) tensors.push_back(r.get_tensor());
  if (r.left() != 0) r.fail("bytes after the last tensor");
  return tensors;
}

// A header whose counts ask for more parameters than the file could hold is refused before
// anything that large is allocated.
ModelConfig checked_config(const nlohmann::json& header, const std::filesystem::path& path) {
  const ModelConfig config = config_from_json(header.at("config").dump(), path.string());
  const long double bytes = static_cast<long double>(parameter_floats(config)) * sizeof(float);
  const uintmax_t size = std::filesystem::file_size(path);
  if (bytes > static_cast<long double>(size))
    throw Error(fmt::format("corrupt: {}: the header's configuration ({} users, {} items) needs {:.0Lf} bytes of "
                            "parameters but the file holds {}", path.string(), config.num_users, config.num_items,
                            bytes, size));
  return config;
}

// Moves tensors into params in tensors() order, checking names and shapes.
void assign_params(ModelParams& params, std::vector<Tensor>& tensors, size_t first,
                   const std::filesystem::path& path) {
  auto slots = params.tensors();
  if (tensors.size() < first + slots.size()) {
    throw Error(fmt::format("{}: has {} tensors, the model needs {}", path.string(),
                            tensors.size() - first, slots.size()));
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    Tensor& t = tensors[first + i];
    if (t.name != slots[i]->name || t.shape != slots[i]->shape) {
      throw Error(fmt::format("{}: tensor {} is '{}', expected '{}' of the configured shape",
                              path.string(), i, t.name, slots[i]->name));
    }
    *slots[i] = std::move(t);
  }
}

}  // namespace

namespace {

nlohmann::json features_to_json(const FeatureSpec& s) {
  return nlohmann::json{{"categorical", s.categorical},
                        {"categorical_rows", s.categorical_rows},
                        {"textual", s.textual},
                        {"text_buckets", s.text_buckets},
                        {"numerical", s.numerical},
                        {"numerical_mean", s.numerical_mean},
                        {"numerical_stddev", s.numerical_stddev}};
}

FeatureSpec features_from_json(const nlohmann::json& j) {
  FeatureSpec s;
  s.categorical = j.at("categorical").get<std::vector<std::string>>();
  s.categorical_rows = j.at("categorical_rows").get<std::vector<uint32_t>>();
  s.textual = j.at("textual").get<std::string>();
  s.text_buckets = j.at("text_buckets").get<uint32_t>();
  s.numerical = j.at("numerical").get<std::vector<std::string>>();
  s.numerical_mean = j.at("numerical_mean").get<std::vector<float>>();
  s.numerical_stddev = j.at("numerical_stddev").get<std::vector<float>>();
  return s;
}

}  // namespace

// Metadata keys are written only when a side uses metadata, so id-only files are as before and
// files written before metadata existed still load.
std::string config_to_json(const ModelConfig& c) {
  nlohmann::json j{{"model", to_string(c.kind)}, {"num_users", c.num_users},
                   {"num_items", c.num_items}, {"factors", c.factors}, {"layers", c.layers}};
  if (c.user_features.enabled()) j["user_features"] = features_to_json(c.user_features);
  if (c.item_features.enabled()) j["item_features"] = features_to_json(c.item_features);
  if (c.has_context()) j["context"] = features_to_json(c.context);
  return j.dump();
}

ModelConfig config_from_json(const std::string& text, const std::string& what) {
  try {
    const auto j = nlohmann::json::parse(text);
    ModelConfig c;
    c.kind = parse_model_kind(j.at("model").get<std::string>());
    c.num_users = j.at("num_users").get<uint32_t>();
    c.num_items = j.at("num_items").get<uint32_t>();
    c.factors = j.at("factors").get<uint32_t>();
    c.layers = j.at("layers").get<std::vector<uint32_t>>();
    if (j.contains("user_features")) c.user_features = features_from_json(j.at("user_features"));
    if (j.contains("item_features")) c.item_features = features_from_json(j.at("item_features"));
    if (j.contains("context")) c.context = features_from_json(j.at("context"));
    c.validate();
    return c;
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: bad model config: {}", what, e.what()));
  }
}

void save_model(const ModelParams& params, const std::filesystem::path& path) {
  save_model(*make_single_communicator(), params, path);
}

void save_model(Communicator& comm, const ModelParams& held, const std::filesystem::path& path, size_t block_bytes) {
  TB_CHECK(!held.sharded() || held.shard_ranks == static_cast<uint32_t>(comm.size()),
           "save_model: the parameters are sharded over another number of ranks");
  const nlohmann::json header{{"kind", "model"}, {"config", nlohmann::json::parse(config_to_json(held.config))}};
  const std::vector<const Tensor*> tensors = held.tensors();
  write_tensor_file(comm, header.dump(), tensors, held.sharded(), tensors.size(), path, block_bytes);
}

ModelParams load_model(const std::filesystem::path& path) {
  nlohmann::json header;
  auto tensors = decode(path, &header);
  ModelParams params = ModelParams::initialize(checked_config(header, path), 0);  // shapes and names; values replaced below
  assign_params(params, tensors, 0, path);
  return params;
}

void save_checkpoint(const TrainState& state, const std::string& extra_json,
                     const std::filesystem::path& path) {
  save_checkpoint(*make_single_communicator(), state, extra_json, path);
}

void save_checkpoint(Communicator& comm, const TrainState& held, const std::string& extra_json,
                     const std::filesystem::path& path, size_t block_bytes) {
  TB_CHECK(!held.params.sharded() || held.params.shard_ranks == static_cast<uint32_t>(comm.size()),
           "save_checkpoint: the state is sharded over another number of ranks");
  nlohmann::json header{{"kind", "checkpoint"},
                        {"config", nlohmann::json::parse(config_to_json(held.params.config))},
                        {"step", held.step},
                        {"extra", nlohmann::json::parse(extra_json.empty() ? "{}" : extra_json)}};
  std::vector<const Tensor*> all = held.params.tensors();
  const size_t group = all.size();
  for (const Tensor& t : held.state0) all.push_back(&t);
  for (const Tensor& t : held.state1) all.push_back(&t);
  write_tensor_file(comm, header.dump(), all, held.params.sharded(), group, path, block_bytes);
}

namespace {

// Reads a tensor file front to back in pieces, its checksum computed as it goes.
class StreamReader {
 public:
  explicit StreamReader(const std::filesystem::path& path)
      : in_(path, std::ios::binary), path_(path), end_(std::filesystem::file_size(path)) {
    if (!in_) throw Error(fmt::format("cannot open {}", path.string()));
  }
  void read(void* out, uint64_t n) {
    if (n > left()) fail("truncated");
    in_.read(static_cast<char*>(out), static_cast<std::streamsize>(n));
    if (!in_) fail("a read error");
    crc_ = crc32_update(crc_, {static_cast<const char*>(out), n});
    pos_ += n;
  }
  template <class T>
  T get() {
    T value;
    read(&value, sizeof(T));
    return value;
  }
  std::string get_string(uint64_t n) {
    if (n > left()) fail("truncated");
    std::string s(n, '\0');
    read(s.data(), n);
    return s;
  }
  // Version 2 files: the payload ends before the checksum trailer.
  void expect_trailer() {
    if (end_ < pos_ + kChecksumTrailerBytes) fail("truncated");
    end_ -= kChecksumTrailerBytes;
    trailer_ = true;
  }
  void check_trailer() {
    if (!trailer_) return;
    std::string stored(kChecksumTrailerBytes, '\0');
    in_.read(stored.data(), static_cast<std::streamsize>(stored.size()));
    if (!in_ || stored != checksum_trailer(crc_))
      throw Error(fmt::format("corrupt: {}: the checksum does not match; the file was damaged after it was written",
                              path_.string()));
  }
  uint64_t left() const { return end_ - pos_; }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("corrupt: {}: {} at byte {}", path_.string(), what, pos_));
  }

 private:
  std::ifstream in_;
  std::filesystem::path path_;
  uint64_t end_ = 0, pos_ = 0;
  uint32_t crc_ = 0;
  bool trailer_ = false;
};

// Names and shapes of every tensor of config, no values (the id tables are far too large to
// allocate whole here).
ModelParams empty_params(const ModelConfig& config) {
  ModelParams p;
  p.config = config;
  p.weights.resize(config.num_dense_layers());
  p.biases.resize(config.num_dense_layers());
  const ParamLayout layout(config);
  for (const TensorSlot& slot : layout.slots()) p.tensor(slot.role, slot.layer) = Tensor{slot.name, slot.shape, {}};
  return p;
}

// The rows of the id tables a reader keeps: every `ranks`-th from `rank` (a rank's shard), or
// (rows set) the listed rows of each side.
struct RowKeep {
  uint32_t rank = 0, ranks = 1;
  const RowSelection* rows = nullptr;
  bool whole() const { return ranks == 1 && rows == nullptr; }
};

// The rows of a block [begin, end) of an id table that keep names, each with where it goes:
// calls put(row, local index).
template <class Put>
void kept_rows_of_block(const RowKeep& keep, bool item_table, uint64_t begin, uint64_t end, Put put) {
  if (keep.rows == nullptr) {
    for (uint64_t u = begin + (keep.rank + keep.ranks - begin % keep.ranks) % keep.ranks; u < end; u += keep.ranks) {
      put(u, u / keep.ranks);
    }
    return;
  }
  const std::vector<uint64_t>& list = item_table ? keep.rows->items : keep.rows->users;
  for (auto it = std::lower_bound(list.begin(), list.end(), begin); it != list.end() && *it < end; ++it) {
    put(*it, static_cast<uint64_t>(it - list.begin()));
  }
}

// Reads tensor `expected`'s values into it: all of them, or of an id table the rows keep names,
// read in blocks.
void read_tensor(StreamReader& in, Tensor& expected, bool id_table, bool item_table, const RowKeep& keep) {
  const std::string name = in.get_string(in.get<uint32_t>());
  if (expected.name.empty()) expected.name = name;  // optimizer state: its shape is what must match
  const uint32_t dims = in.get<uint32_t>();
  if (dims > 8) in.fail("a tensor of rank > 8");
  std::vector<uint64_t> shape(dims);
  for (uint64_t& d : shape) d = in.get<uint64_t>();
  if (name != expected.name || shape != expected.shape) {
    in.fail(fmt::format("tensor '{}' where '{}' of the configured shape belongs", name, expected.name));
  }
  uint64_t count = 1;
  for (uint64_t d : shape) count *= d;  // the shape is the configuration's, bounded by the file's size
  if (count > in.left() / sizeof(float)) in.fail("a tensor larger than the file");
  if (!id_table || keep.whole() || count == 0) {
    expected.values.resize(count);
    in.read(expected.values.data(), count * sizeof(float));
    return;
  }
  const uint64_t rows = expected.rows(), cols = expected.cols();
  const uint64_t held = keep.rows == nullptr ? ModelParams::shard_rows(rows, keep.rank, keep.ranks)
                                             : (item_table ? keep.rows->items : keep.rows->users).size();
  expected.values.assign(held * cols, 0.0f);
  const uint64_t rows_per_block = std::max<uint64_t>(1, kRowBlockBytes / sizeof(float) / cols);
  std::vector<float> block;
  for (uint64_t begin = 0; begin < rows; begin += rows_per_block) {
    const uint64_t end = std::min(rows, begin + rows_per_block);
    block.resize((end - begin) * cols);
    in.read(block.data(), block.size() * sizeof(float));
    kept_rows_of_block(keep, item_table, begin, end, [&](uint64_t u, uint64_t local) {
      std::copy_n(block.data() + (u - begin) * cols, cols, expected.values.data() + local * cols);
    });
  }
}

// A checkpoint header's step and its caller's JSON.
void read_step_and_extra(const nlohmann::json& header, const std::filesystem::path& path, TrainState& state,
                         std::string* extra_json) {
  try {
    state.step = header.at("step").get<uint64_t>();
    if (extra_json) *extra_json = header.at("extra").dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("corrupt: {}: the checkpoint header lacks its step or extra: {}", path.string(), e.what()));
  }
}

// A model (`checkpoint` false: the parameters) or checkpoint file read front to back in pieces,
// the id tables' rows keep names kept, everything else whole; the checksum checked at the end.
TrainState read_tensor_file_rows(const std::filesystem::path& path, bool checkpoint, const RowKeep& keep,
                                 std::string* extra_json) {
  StreamReader in(path);
  if (in.get_string(sizeof(kMagic)) != std::string(kMagic, sizeof(kMagic))) in.fail("not a tastebud tensor file");
  const uint32_t version = in.get<uint32_t>();
  if (version != kTensorFileVersion && version != 1) {
    throw Error(fmt::format("{}: file version {} is not supported (this build reads 1 and {})", path.string(), version,
                            kTensorFileVersion));
  }
  if (version >= 2) in.expect_trailer();
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(in.get_string(in.get<uint64_t>()));
  } catch (const nlohmann::json::exception& e) {
    in.fail(std::string("bad header: ") + e.what());
  }
  if (!header.is_object() || !header.contains("config") || (checkpoint && header.value("kind", "") != "checkpoint"))
    throw Error(fmt::format("{}: not a {}", path.string(), checkpoint ? "checkpoint" : "model file"));
  TrainState state;
  state.params = empty_params(checked_config(header, path));
  std::vector<Tensor*> slots = state.params.tensors();
  const size_t n = slots.size();
  const ParamLayout layout(state.params.config);
  const auto read = [&](Tensor& t, size_t k) {
    read_tensor(in, t, k < ModelParams::kEmbeddingTables, layout[k].item_id_table(), keep);
  };
  if (in.get<uint64_t>() != (checkpoint ? 3 : 1) * n)
    throw Error(fmt::format("{}: {}", path.string(), checkpoint ? "optimizer state is incomplete" : "not the model's tensors"));
  for (size_t k = 0; k < n; ++k) read(*slots[k], k);
  for (auto* states : {&state.state0, &state.state1}) {
    for (size_t k = 0; checkpoint && k < n; ++k) {
      Tensor t{"", slots[k]->shape, {}};
      read(t, k);
      states->push_back(std::move(t));
    }
  }
  if (in.left() != 0) in.fail("bytes after the last tensor");
  in.check_trailer();
  if (!checkpoint) return state;
  read_step_and_extra(header, path, state, extra_json);
  return state;
}

}  // namespace

TrainState load_checkpoint_shard(const std::filesystem::path& path, std::string* extra_json, uint32_t rank,
                                 uint32_t ranks) {
  TB_CHECK(ranks > 0 && rank < ranks, fmt::format("load_checkpoint_shard: rank {} of {}", rank, ranks));
  TrainState state = read_tensor_file_rows(path, true, RowKeep{rank, ranks, nullptr}, extra_json);
  state.params.shard_rank = ranks > 1 ? rank : 0;
  state.params.shard_ranks = ranks;
  return state;
}

ModelParams load_model_rows(const std::filesystem::path& path, const RowSelection& rows) {
  return read_tensor_file_rows(path, false, RowKeep{0, 1, &rows}, nullptr).params;
}

TrainState load_checkpoint_rows(const std::filesystem::path& path, std::string* extra_json, const RowSelection& rows) {
  return read_tensor_file_rows(path, true, RowKeep{0, 1, &rows}, extra_json);
}

TrainState load_checkpoint(const std::filesystem::path& path, std::string* extra_json) {
  nlohmann::json header;
  auto tensors = decode(path, &header);
  if (header.value("kind", "") != "checkpoint") throw Error(fmt::format("{}: not a checkpoint", path.string()));
  TrainState state;
  state.params = ModelParams::initialize(checked_config(header, path), 0);
  assign_params(state.params, tensors, 0, path);
  const size_t n = state.params.tensors().size();
  if (tensors.size() != 3 * n) throw Error(fmt::format("{}: optimizer state is incomplete", path.string()));
  for (size_t i = 0; i < n; ++i) {
    state.state0.push_back(std::move(tensors[n + i]));
    state.state1.push_back(std::move(tensors[2 * n + i]));
  }
  read_step_and_extra(header, path, state, extra_json);
  return state;
}

}  // namespace tastebud
