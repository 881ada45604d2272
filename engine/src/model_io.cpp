#include "tastebud/engine/model_io.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tastebud/checksum.h"
#include "tastebud/engine/train_options.h"  // parameter_floats
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud {
namespace {

constexpr char kMagic[8] = {'T', 'B', 'T', 'E', 'N', 'S', 'O', 'R'};

template <class T>
void put(std::string& out, const T& value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

void put_tensor(std::string& out, const Tensor& t) {
  put(out, static_cast<uint32_t>(t.name.size()));
  out += t.name;
  put(out, static_cast<uint32_t>(t.shape.size()));
  for (uint64_t d : t.shape) put(out, d);
  out.append(reinterpret_cast<const char*>(t.values.data()), t.values.size() * sizeof(float));
}

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

std::string encode(const std::string& header, const std::vector<const Tensor*>& tensors) {
  std::string out(kMagic, sizeof(kMagic));
  put(out, kTensorFileVersion);
  put(out, static_cast<uint64_t>(header.size()));
  out += header;
  put(out, static_cast<uint64_t>(tensors.size()));
  for (const Tensor* t : tensors) put_tensor(out, *t);
  append_checksum(out);
  return out;
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
  const nlohmann::json header{{"kind", "model"}, {"config", nlohmann::json::parse(config_to_json(params.config))}};
  write_file_atomically(path, encode(header.dump(), params.tensors()));
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
  nlohmann::json header{{"kind", "checkpoint"},
                        {"config", nlohmann::json::parse(config_to_json(state.params.config))},
                        {"step", state.step},
                        {"extra", nlohmann::json::parse(extra_json.empty() ? "{}" : extra_json)}};
  std::vector<const Tensor*> all = state.params.tensors();
  for (const Tensor& t : state.state0) all.push_back(&t);
  for (const Tensor& t : state.state1) all.push_back(&t);
  write_file_atomically(path, encode(header.dump(), all));
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
  try {
    state.step = header.at("step").get<uint64_t>();
    if (extra_json) *extra_json = header.at("extra").dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("corrupt: {}: the checkpoint header lacks its step or extra: {}", path.string(), e.what()));
  }
  return state;
}

}  // namespace tastebud
