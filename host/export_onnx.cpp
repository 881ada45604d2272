#include "host/export_onnx.h"
#include "host/model_dir.h"

#include <cmath>
#include <cstdint>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "host/inference.h"
#include "host/protobuf_writer.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;

// Field numbers and enums of onnx/onnx.proto (stable since IR version 3).
namespace onnx {
enum ModelField : uint32_t { kIrVersion = 1, kProducerName = 2, kProducerVersion = 3, kGraph = 7,
                             kOpsetImport = 8, kMetadataProps = 14 };
enum GraphField : uint32_t { kNode = 1, kGraphName = 2, kInitializer = 5, kInput = 11, kOutput = 12 };
enum NodeField : uint32_t { kNodeInput = 1, kNodeOutput = 2, kNodeName = 3, kOpType = 4, kAttribute = 5 };
enum AttributeField : uint32_t { kAttrName = 1, kAttrFloat = 2, kAttrInt = 3, kAttrInts = 8, kAttrType = 20 };
enum TensorField : uint32_t { kDims = 1, kDataType = 2, kTensorName = 8, kRawData = 9 };
enum ValueInfoField : uint32_t { kValueName = 1, kValueType = 2 };
constexpr uint32_t kTypeTensor = 1, kTensorElemType = 1, kTensorShape = 2, kShapeDim = 1, kDimParam = 2;
constexpr uint32_t kOpsetVersion = 2, kEntryKey = 1, kEntryValue = 2;
constexpr int64_t kFloat = 1, kInt64 = 7;   // TensorProto.DataType
constexpr int64_t kAttributeFloat = 1, kAttributeInt = 2, kAttributeInts = 7;  // AttributeProto.AttributeType
}  // namespace onnx

ProtoWriter tensor(const std::string& name, const std::vector<int64_t>& dims, int64_t type, const void* data,
                   size_t bytes) {
  ProtoWriter t;
  t.packed_int64(onnx::kDims, dims).int64(onnx::kDataType, type).bytes(onnx::kTensorName, name);
  t.bytes(onnx::kRawData, std::string_view(static_cast<const char*>(data), bytes));
  return t;
}

ProtoWriter float_tensor(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& values) {
  return tensor(name, dims, onnx::kFloat, values.data(), values.size() * sizeof(float));
}

// A 1-D tensor input or output of unknown length N.
ProtoWriter vector_value(const std::string& name, int64_t type) {
  ProtoWriter dim, shape, tensor_type, type_proto, value;
  dim.bytes(onnx::kDimParam, "N");
  shape.message(onnx::kShapeDim, dim);
  tensor_type.int64(onnx::kTensorElemType, type).message(onnx::kTensorShape, shape);
  type_proto.message(onnx::kTypeTensor, tensor_type);
  value.bytes(onnx::kValueName, name).message(onnx::kValueType, type_proto);
  return value;
}

class Graph {
 public:
  void initializer(ProtoWriter t) { graph_.message(onnx::kInitializer, t); }
  // Adds a node; returns its output's name.
  std::string node(const std::string& op, const std::vector<std::string>& inputs, const std::string& output,
                   const std::vector<std::pair<std::string, int64_t>>& int_attributes = {},
                   const std::vector<std::pair<std::string, float>>& float_attributes = {},
                   const std::vector<std::pair<std::string, std::vector<int64_t>>>& ints_attributes = {}) {
    ProtoWriter n;
    for (const std::string& in : inputs) n.bytes(onnx::kNodeInput, in);
    n.bytes(onnx::kNodeOutput, output).bytes(onnx::kNodeName, output).bytes(onnx::kOpType, op);
    for (const auto& [name, value] : int_attributes) {
      ProtoWriter a;
      a.bytes(onnx::kAttrName, name).int64(onnx::kAttrInt, value).int64(onnx::kAttrType, onnx::kAttributeInt);
      n.message(onnx::kAttribute, a);
    }
    for (const auto& [name, value] : float_attributes) {
      ProtoWriter a;
      a.bytes(onnx::kAttrName, name).fixed32_float(onnx::kAttrFloat, value).int64(onnx::kAttrType, onnx::kAttributeFloat);
      n.message(onnx::kAttribute, a);
    }
    for (const auto& [name, values] : ints_attributes) {
      ProtoWriter a;
      a.bytes(onnx::kAttrName, name).packed_int64(onnx::kAttrInts, values).int64(onnx::kAttrType, onnx::kAttributeInts);
      n.message(onnx::kAttribute, a);
    }
    graph_.message(onnx::kNode, n);
    return output;
  }
  // A constant int64 vector.
  std::string ints(const std::string& name, const std::vector<int64_t>& values) {
    initializer(tensor(name, {static_cast<int64_t>(values.size())}, onnx::kInt64, values.data(), values.size() * sizeof(int64_t)));
    return name;
  }
  ProtoWriter& proto() { return graph_; }

 private:
  ProtoWriter graph_;
};

// {"users": {"u1": 0, ...}, "items": {...}}, one id a line, rows in order (written as text:
// a JSON object of a million keys built in memory would cost more than the model).
std::string ids_json(const std::vector<std::string>& users, const std::vector<std::string>& items) {
  std::string text = "{\n";
  auto map = [&](const char* name, const std::vector<std::string>& ids, bool last) {
    text += fmt::format(" \"{}\": {{", name);
    for (size_t r = 0; r < ids.size(); ++r) {
      text += fmt::format("{}\n  {}: {}", r == 0 ? "" : ",", nlohmann::json(ids[r]).dump(), r);
    }
    text += ids.empty() ? "}" : "\n }";
    text += last ? "\n" : ",\n";
  };
  map("users", users, false);
  map("items", items, true);
  return text + "}\n";
}

std::vector<int64_t> dims_of(const Tensor& t) { return std::vector<int64_t>(t.shape.begin(), t.shape.end()); }

// The ModelProto around a graph: IR version, opset, producer, metadata_props.
std::string model_bytes(Graph& g, const std::vector<std::pair<std::string, std::string>>& metadata);

std::string layer_norm(Graph& g, const std::string& x, const std::string& gamma, const std::string& beta,
                       const std::string& out) {
  return g.node("LayerNormalization", {x, gamma, beta}, out, {{"axis", -1}}, {{"epsilon", 1e-5f}});
}

// One pre-LN block of the sequence model (tastebud/engine/sequence_model.h) over rows x [n x d].
template <typename Weight>
std::string sequence_block(Graph& g, Weight& weight, const SequenceLayout::Block& w, size_t b, const std::string& x,
                           const std::string& mask, int64_t d) {
  const std::string k = fmt::format("block{}_", b);
  auto dense = [&](const std::string& in, size_t wo, size_t bo, const std::string& name) {
    return g.node("Add", {g.node("MatMul", {in, weight(k + name + "_weight", wo, {d, d})}, k + name + "_product"),
                          weight(k + name + "_bias", bo, {d})}, k + name);
  };
  auto split_heads = [&](const std::string& t, std::vector<int64_t> perm) {
    return g.node("Transpose", {g.node("Reshape", {t, "heads_shape"}, t + "_heads")}, t + "_t", {}, {}, {{"perm", perm}});
  };
  const std::string a1 = layer_norm(g, x, weight(k + "ln1_gamma", w.ln1_gamma, {d}), weight(k + "ln1_beta", w.ln1_beta, {d}), k + "a1");
  const std::string q = split_heads(dense(a1, w.wq, w.bq, "q"), {1, 0, 2});
  const std::string kt = split_heads(dense(a1, w.wk, w.bk, "k"), {1, 2, 0});
  const std::string v = split_heads(dense(a1, w.wv, w.bv, "v"), {1, 0, 2});
  const std::string scores = g.node("Add", {g.node("Mul", {g.node("MatMul", {q, kt}, k + "qk"), "inv_sqrt_dh"}, k + "qk_scaled"), mask}, k + "scores");
  const std::string att = g.node("MatMul", {g.node("Softmax", {scores}, k + "probs", {{"axis", -1}}), v}, k + "att_heads");
  const std::string merged = g.node("Reshape", {g.node("Transpose", {att}, k + "att_t", {}, {}, {{"perm", {1, 0, 2}}}), "rows_shape"}, k + "att");
  const std::string x1 = g.node("Add", {x, dense(merged, w.wo, w.bo, "o")}, k + "x1");
  const std::string a2 = layer_norm(g, x1, weight(k + "ln2_gamma", w.ln2_gamma, {d}), weight(k + "ln2_beta", w.ln2_beta, {d}), k + "a2");
  const std::string f1 = g.node("Relu", {dense(a2, w.w1, w.b1, "ff1")}, k + "f1");
  return g.node("Add", {x1, dense(f1, w.w2, w.b2, "ff2")}, k + "out");
}

}  // namespace

std::string onnx_model_bytes(const ModelParams& p, const std::vector<std::pair<std::string, std::string>>& metadata) {
  const ModelConfig& c = p.config;
  if (c.has_metadata()) throw Error("ONNX export takes an id-only model: fold the metadata in first (fold_features)");
  if (c.has_context()) {
    throw Error("ONNX export: this model was trained with --context, and the exported graph has no context "
                "input; export a model trained without --context");
  }
  Graph g;
  std::vector<std::string> head_inputs;
  if (c.has_gmf()) {
    g.initializer(float_tensor("user_gmf", dims_of(p.user_gmf), p.user_gmf.values));
    g.initializer(float_tensor("item_gmf", dims_of(p.item_gmf), p.item_gmf.values));
    const std::string u = g.node("Gather", {"user_gmf", "user"}, "user_gmf_rows", {{"axis", 0}});
    const std::string i = g.node("Gather", {"item_gmf", "item"}, "item_gmf_rows", {{"axis", 0}});
    head_inputs.push_back(g.node("Mul", {u, i}, "gmf"));
  }
  if (c.has_mlp()) {
    g.initializer(float_tensor("user_mlp", dims_of(p.user_mlp), p.user_mlp.values));
    g.initializer(float_tensor("item_mlp", dims_of(p.item_mlp), p.item_mlp.values));
    const std::string u = g.node("Gather", {"user_mlp", "user"}, "user_mlp_rows", {{"axis", 0}});
    const std::string i = g.node("Gather", {"item_mlp", "item"}, "item_mlp_rows", {{"axis", 0}});
    std::string x = g.node("Concat", {u, i}, "mlp_input", {{"axis", 1}});
    for (size_t j = 0; j < c.num_dense_layers(); ++j) {
      const std::string w = fmt::format("dense{}_weight", j), b = fmt::format("dense{}_bias", j);
      g.initializer(float_tensor(w, dims_of(p.weights[j]), p.weights[j].values));
      g.initializer(float_tensor(b, dims_of(p.biases[j]), p.biases[j].values));
      x = g.node("Relu", {g.node("Gemm", {x, w, b}, fmt::format("dense{}", j))}, fmt::format("relu{}", j));
    }
    head_inputs.push_back(x);
  }
  const std::string head_input = head_inputs.size() == 1 ? head_inputs[0]
                                 : g.node("Concat", head_inputs, "head_input", {{"axis", 1}});
  g.initializer(float_tensor("head_weight", {static_cast<int64_t>(c.head_inputs()), 1}, p.head_weight.values));
  g.initializer(float_tensor("head_bias", {1}, p.head_bias.values));
  const int64_t flat = -1;
  g.initializer(tensor("score_shape", {1}, onnx::kInt64, &flat, sizeof(flat)));
  const std::string logit = g.node("Gemm", {head_input, "head_weight", "head_bias"}, "logit");
  g.node("Reshape", {g.node("Sigmoid", {logit}, "probability"), "score_shape"}, "score");
  g.proto().bytes(onnx::kGraphName, "tastebud_" + to_string(c.kind));
  g.proto().message(onnx::kInput, vector_value("user", onnx::kInt64));
  g.proto().message(onnx::kInput, vector_value("item", onnx::kInt64));
  g.proto().message(onnx::kOutput, vector_value("score", onnx::kFloat));
  return model_bytes(g, metadata);
}

std::string onnx_sequence_bytes(const SequenceParams& p,
                                 const std::vector<std::pair<std::string, std::string>>& metadata) {
  const SequenceConfig& c = p.config;
  const SequenceLayout layout(c);
  const int64_t d = c.hidden, L = c.max_sequence, heads = c.heads;
  Graph g;
  auto weight = [&](const std::string& name, size_t offset, std::vector<int64_t> dims) {
    size_t n = 1;
    for (int64_t x : dims) n *= static_cast<size_t>(x);
    g.initializer(float_tensor(name, dims, std::vector<float>(p.values.begin() + static_cast<int64_t>(offset),
                                                              p.values.begin() + static_cast<int64_t>(offset + n))));
    return name;
  };
  auto scalar = [&](const std::string& name, float value) {
    g.initializer(float_tensor(name, {}, {value}));
    return name;
  };
  const std::string table = weight("item_table", layout.items, {c.num_items, d});
  weight("positions", layout.positions, {L, d});
  // The window's last n positions; the causal mask's top-left n x n corner.
  const std::string n = g.node("Shape", {"items"}, "n");
  g.ints("end", {INT64_MAX});
  g.ints("axis0", {0});
  std::vector<float> causal(static_cast<size_t>(L * L), 0.0f);
  for (int64_t i = 0; i < L; ++i)
    for (int64_t j = i + 1; j < L; ++j) causal[static_cast<size_t>(i * L + j)] = -1e9f;
  g.initializer(float_tensor("causal_mask", {L, L}, causal));
  const std::string mask = g.node("Slice", {"causal_mask", g.ints("zeros2", {0, 0}), g.node("Concat", {n, n}, "nn", {{"axis", 0}}),
                                            g.ints("axes01", {0, 1})}, "mask");
  const std::string rows = g.node("Mul", {g.node("Gather", {table, "items"}, "item_rows", {{"axis", 0}}),
                                          scalar("sqrt_d", std::sqrt(static_cast<float>(d)))}, "scaled_rows");
  std::string x = g.node("Add", {rows, g.node("Slice", {"positions", g.node("Neg", {n}, "minus_n"), "end", "axis0"}, "position_rows")}, "x0");
  g.ints("heads_shape", {0, heads, d / heads});
  g.ints("rows_shape", {0, d});
  scalar("inv_sqrt_dh", 1.0f / std::sqrt(static_cast<float>(d / heads)));
  for (size_t b = 0; b < layout.blocks.size(); ++b) x = sequence_block(g, weight, layout.blocks[b], b, x, mask, d);
  const std::string h = layer_norm(g, x, weight("final_gamma", layout.final_gamma, {d}), weight("final_beta", layout.final_beta, {d}), "h");
  const std::string last = g.node("Slice", {h, g.ints("minus_one", {-1}), "end", "axis0"}, "last");
  const std::string logits = g.node("Gemm", {last, table}, "logits", {{"transB", 1}});
  g.ints("score_shape", {-1});
  g.node("Reshape", {g.node("Sigmoid", {logits}, "probability"), "score_shape"}, "score");
  g.proto().bytes(onnx::kGraphName, "tastebud_sasrec");
  g.proto().message(onnx::kInput, vector_value("items", onnx::kInt64));
  g.proto().message(onnx::kOutput, vector_value("score", onnx::kFloat));
  return model_bytes(g, metadata);
}

namespace {

std::string model_bytes(Graph& g, const std::vector<std::pair<std::string, std::string>>& metadata) {
  ProtoWriter model, opset;
  opset.int64(onnx::kOpsetVersion, kOnnxOpset);
  model.int64(onnx::kIrVersion, kOnnxIrVersion)
      .bytes(onnx::kProducerName, "tastebud")
      .bytes(onnx::kProducerVersion, "0.1.0")
      .message(onnx::kGraph, g.proto())
      .message(onnx::kOpsetImport, opset);
  for (const auto& [key, value] : metadata) {
    ProtoWriter entry;
    entry.bytes(onnx::kEntryKey, key).bytes(onnx::kEntryValue, value);
    model.message(onnx::kMetadataProps, entry);
  }
  return model.str();
}

}  // namespace

OnnxExport export_onnx(const fs::path& model_dir, const fs::path& out) {
  check_output_apart(out, model_dir, {}, "--out");
  check_output_apart(out.string() + ".ids.json", model_dir, {}, "--out (its ids file)");
  // load_model_dir folds a metadata model into its id-only twin, as batch jobs serve it.
  const ModelData m = load_model_dir(model_dir);
  if (!m.params && !m.sequence) {
    throw Error(fmt::format("ONNX export is for the neural models (neumf, gmf, mlp, mf); {} is a {} recipe, "
                            "whose answers are tables, not a network",
                            model_dir.string(), to_string(m.kind)));
  }
  OnnxExport result;
  result.model = out;
  result.ids = out.string() + ".ids.json";
  result.users = static_cast<uint32_t>(m.user_ids.size());
  result.items = static_cast<uint32_t>(m.item_ids.size());
  const std::vector<std::pair<std::string, std::string>> metadata{
      {"tastebud.model", std::string(to_string(m.kind))},
      {"tastebud.ids", result.ids.filename().string()},
      {"tastebud.score", "probability: sigmoid of the logit"}};
  const std::string bytes = m.sequence ? onnx_sequence_bytes(*m.sequence, metadata) : onnx_model_bytes(*m.params, metadata);
  if (out.has_parent_path()) fs::create_directories(out.parent_path());
  write_file_atomically(result.ids, ids_json(m.user_ids, m.item_ids));
  write_file_atomically(out, bytes);
  result.bytes = bytes.size();
  return result;
}

}  // namespace tastebud::host
